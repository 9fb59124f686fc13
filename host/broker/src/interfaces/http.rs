//! `wasi:http/outgoing-handler`: the standard outbound HTTP interface, so
//! any guest language's HTTP client works. wasmtime-wasi-http implements
//! the interface; every request it would send is handed to the
//! connection's [`Egress`], which applies the policy.

use crate::egress::Egress;
use std::sync::Arc;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi_http::p2::bindings::http::types::Method;
use wasmtime_wasi_http::p2::types::HostOutgoingRequest;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks,
};

/// Per-invocation outbound HTTP state.
pub struct HttpCtx {
    pub(crate) wasi: WasiHttpCtx,
    pub(crate) hooks: EgressHooks,
}

impl std::fmt::Debug for HttpCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCtx")
            .field("requests", &self.hooks.started)
            .finish_non_exhaustive()
    }
}

impl HttpCtx {
    /// Outbound HTTP through `egress`, at most `max_requests` per
    /// invocation (`limits.http_requests_per_invocation`).
    pub fn new(egress: Arc<Egress>, invocation: u64, max_requests: u32) -> Self {
        HttpCtx {
            wasi: WasiHttpCtx::new(),
            hooks: EgressHooks {
                egress,
                invocation,
                started: 0,
                max_requests,
                spent: Arc::default(),
            },
        }
    }
}

/// Routes wasmtime-wasi-http's sends into the egress path and counts them.
pub(crate) struct EgressHooks {
    egress: Arc<Egress>,
    invocation: u64,
    started: u32,
    max_requests: u32,
    /// Body bytes this invocation's requests moved so far.
    spent: Arc<std::sync::atomic::AtomicU64>,
}

impl EgressHooks {
    /// Reports a request part refused before any request exists.
    fn refuse_malformed(&self, method: &str, part: &'static str, text: &str, reason: &str) {
        (self.egress).refuse_malformed(self.invocation, method, part, text, reason);
    }
}

fn method_name(method: &Method) -> std::borrow::Cow<'static, str> {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => format!("{other:?}").into(),
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for EgressHooks {
    /// Every scheme reaches [`Egress::send`], whose policy refuses what is
    /// not granted (anything but `http` and `https` included) with a
    /// logged, audited reason and `HTTP-request-denied`, instead of
    /// wasmtime-wasi-http's silent `HTTP-protocol-error`.
    fn is_supported_scheme(&mut self, _scheme: &http::uri::Scheme) -> bool {
        true
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        self.started += 1;
        let over_cap = self.started > self.max_requests;
        let (egress, invocation, max) = (self.egress.clone(), self.invocation, self.max_requests);
        let spent = self.spent.clone();
        let future = async move {
            if over_cap {
                tracing::warn!(
                    target: "switchyard::egress",
                    invocation,
                    url = %egress.redacted(&request.uri().to_string()),
                    "outbound request refused: over {max} requests in one invocation (limits.http_requests_per_invocation)"
                );
                return Err(HttpError::ConnectionLimitReached);
            }
            let response = egress.send(request, options, invocation, &spent).await?;
            // The body is already read in full, so nothing can fail later.
            let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        };
        // wasmtime-wasi-http runs this on a task of its own; carry the
        // invocation's span there so egress log lines name the invocation.
        Box::new(tracing::Instrument::instrument(
            future,
            tracing::Span::current(),
        ))
    }
}

/// A store that holds an [`HttpCtx`] beside wasmtime-wasi-http's view.
pub trait HttpView: wasmtime_wasi_http::WasiHttpView {
    fn http_ctx(&mut self) -> &mut HttpCtx;
}

/// The `wasi:http/types` version wasmtime-wasi-http registers (guests
/// importing any 0.2.x resolve to it).
const TYPES: &str = "wasi:http/types@0.2.12";

/// Adds `wasi:http/outgoing-handler` and `wasi:http/types` to `linker`,
/// with the host's own `outgoing-request.set-authority`: wasmtime-wasi-http
/// refuses a malformed authority there, before any request reaches the
/// egress path, silently; this one refuses it the same way (the WIT gives
/// `set-authority` no error code) but logs and reports the refusal with
/// its reason, like every egress refusal.
pub fn add_to_linker<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: HttpView + 'static,
{
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    linker.allow_shadowing(true);
    let added = linker.instance(TYPES)?.func_wrap(
        "[method]outgoing-request.set-authority",
        |mut store: wasmtime::StoreContextMut<'_, T>,
         (request, authority): (
            wasmtime::component::Resource<HostOutgoingRequest>,
            Option<String>,
        )| {
            if let Some(text) = &authority
                && let Err(e) = text.parse::<http::uri::Authority>()
            {
                let method = method_name(&store.data_mut().http().table.get(&request)?.method);
                store.data_mut().http_ctx().hooks.refuse_malformed(
                    &method,
                    "authority",
                    text,
                    &e.to_string(),
                );
                return Ok((Err(()),));
            }
            let view = store.data_mut().http();
            view.table.get_mut(&request)?.authority = authority;
            Ok((Ok(()),))
        },
    );
    linker.allow_shadowing(false);
    added
}

/// Builds the view wasmtime-wasi-http works on from the store's parts.
pub fn view<'a>(
    ctx: &'a mut HttpCtx,
    table: &'a mut ResourceTable,
) -> wasmtime_wasi_http::WasiHttpCtxView<'a> {
    wasmtime_wasi_http::WasiHttpCtxView {
        ctx: &mut ctx.wasi,
        table,
        hooks: &mut ctx.hooks,
    }
}
