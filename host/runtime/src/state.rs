//! The data each store holds: one per invocation, dropped with it.

use crate::limits::Limits;
use switchyard_broker::BrokerCtx;
use switchyard_broker::bindings::switchyard::connector::log::Level;
use switchyard_broker::interfaces::config::{ConfigCtx, ConfigCtxView, ConfigView};
use switchyard_broker::interfaces::http::HttpCtx;
use switchyard_broker::interfaces::log::{LogBudget, LogCtx, LogCtxView, LogView};
use switchyard_broker::interfaces::rate_limit::{RateLimitCtx, RateLimitCtxView, RateLimitView};
use switchyard_broker::interfaces::secrets::{SecretsCtx, SecretsCtxView, SecretsView};
use switchyard_broker::interfaces::state::{StateCtx, StateCtxView, StateView};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Store data for one invocation: WASI with nothing granted, the brokered
/// interfaces, and the limiter.
pub struct InvocationState {
    wasi: WasiCtx,
    table: ResourceTable,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    pub(crate) log: LogCtx,
    log_budget: LogBudget,
    config: ConfigCtx,
    secrets: SecretsCtx,
    state: StateCtx,
    rate_limit: RateLimitCtx,
    http: HttpCtx,
    pub(crate) limiter: InvocationLimiter,
    /// When the current call must stop; checked on every epoch tick.
    pub(crate) deadline_at: std::time::Instant,
    /// Epoch ticks the current call has run through.
    pub(crate) ticks: u32,
    /// The plugin's hot slot the current call holds, if it is CPU-bound
    /// (see `invoke::new_store`); shared with the tick's yield future.
    pub(crate) hot_slot: HotSlot,
}

/// A hot slot held across a yield, or none.
pub(crate) type HotSlot =
    std::sync::Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>;

impl std::fmt::Debug for InvocationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationState")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

/// Most bytes one `wasi:random` call may ask for (wasmtime's default is
/// 64 MiB, allocated at once): past it the call is refused and the
/// invocation ends as a resource limit.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

impl InvocationState {
    /// A fresh state: no files, no sockets, no environment, no arguments;
    /// stdin closed; stdout and stderr captured up to `limits.stdio_bytes`.
    /// The brokered interfaces reach what `broker` (the connection's
    /// rights) allows.
    pub fn new(log: LogCtx, broker: &BrokerCtx, limits: &Limits) -> Self {
        let broker = broker.for_invocation(log.invocation_id);
        let stdout = MemoryOutputPipe::new(limits.stdio_bytes);
        let stderr = MemoryOutputPipe::new(limits.stdio_bytes);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(MAX_RANDOM_BYTES)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.resource_handles);
        InvocationState {
            wasi,
            table,
            stdout,
            stderr,
            http: HttpCtx::new(
                broker.egress,
                log.invocation_id,
                limits.http_requests_per_invocation,
            ),
            log_budget: LogBudget::default(),
            log,
            config: broker.config,
            secrets: broker.secrets,
            state: broker.state,
            rate_limit: broker.rate_limit,
            limiter: InvocationLimiter::new(limits),
            deadline_at: std::time::Instant::now() + limits.deadline(),
            ticks: 0,
            hot_slot: HotSlot::default(),
        }
    }

    /// Gives up the hot slot, if held, and restarts the tick count: after
    /// every call of a long-lived session, so it holds none between calls
    /// (a one-call store drops it with the store).
    pub(crate) fn release_hot_slot(&mut self) {
        self.ticks = 0;
        drop(self.hot_slot.lock().unwrap().take());
    }

    /// The panic message the guest reported during this invocation, if any.
    pub(crate) fn panic_message(&self) -> Option<&str> {
        self.log_budget.panic.as_deref()
    }

    /// Copies captured stdout/stderr into the log and reports dropped events.
    pub(crate) fn flush_output(&mut self) {
        for stream in ["stdout", "stderr"] {
            let pipe = if stream == "stdout" {
                &self.stdout
            } else {
                &self.stderr
            };
            let bytes = pipe.contents();
            if bytes.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let level = if stream == "stderr" {
                    Level::Warn
                } else {
                    Level::Info
                };
                self.log()
                    .emit(level, line, &[("stream".into(), stream.into())]);
            }
        }
        if self.log_budget.dropped > 0 {
            tracing::warn!(
                target: "switchyard::guest",
                plugin = &*self.log.plugin,
                connection = &*self.log.connection,
                invocation = self.log.invocation_id,
                dropped = self.log_budget.dropped,
                "guest log events dropped over the per-invocation budget"
            );
        }
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl LogView for InvocationState {
    fn log(&mut self) -> LogCtxView<'_> {
        LogCtxView {
            ctx: &self.log,
            budget: &mut self.log_budget,
        }
    }
}

impl ConfigView for InvocationState {
    fn config(&mut self) -> ConfigCtxView<'_> {
        ConfigCtxView { ctx: &self.config }
    }
}

impl SecretsView for InvocationState {
    fn secrets(&mut self) -> SecretsCtxView<'_> {
        SecretsCtxView { ctx: &self.secrets }
    }
}

impl StateView for InvocationState {
    fn state(&mut self) -> StateCtxView<'_> {
        StateCtxView { ctx: &self.state }
    }
}

impl RateLimitView for InvocationState {
    fn rate_limit(&mut self) -> RateLimitCtxView<'_> {
        RateLimitCtxView {
            ctx: &self.rate_limit,
        }
    }
}

impl switchyard_broker::interfaces::http::HttpView for InvocationState {
    fn http_ctx(&mut self) -> &mut HttpCtx {
        &mut self.http
    }
}

impl wasmtime_wasi_http::WasiHttpView for InvocationState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        switchyard_broker::interfaces::http::view(&mut self.http, &mut self.table)
    }
}

/// Enforces memory and table limits and remembers which one was hit, so the
/// caller can report "memory limit" rather than a bare trap.
#[derive(Debug)]
pub(crate) struct InvocationLimiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    tables: usize,
    memories: usize,
    pub(crate) exceeded: Option<String>,
}

impl InvocationLimiter {
    fn new(limits: &Limits) -> Self {
        InvocationLimiter {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            instances: limits.instances,
            tables: limits.tables,
            memories: limits.memories,
            exceeded: None,
        }
    }
}

impl wasmtime::ResourceLimiter for InvocationLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            let msg = format!(
                "memory: guest asked for {desired} bytes, limit is {} (limits.memory_bytes)",
                self.memory_bytes
            );
            self.exceeded = Some(msg.clone());
            return Err(wasmtime::Error::msg(msg));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            let msg = format!(
                "table: guest asked for {desired} elements, limit is {} (limits.table_elements)",
                self.table_elements
            );
            self.exceeded = Some(msg.clone());
            return Err(wasmtime::Error::msg(msg));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}
