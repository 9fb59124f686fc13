//! `switchyard:connector/log`: guest logging into `tracing`.

use crate::bindings::switchyard::connector::log::{self, Level};
use crate::secrets::Redactor;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// Longest message or field value kept; the rest is cut. Default: 4 KiB.
pub const MAX_LOG_TEXT: usize = 4 << 10;
/// Most fields kept per event. Default: 32.
pub const MAX_LOG_FIELDS: usize = 32;
/// Most events one invocation may log; later ones are counted and dropped.
/// Default: 1000.
pub const MAX_LOG_EVENTS: u32 = 1_000;

/// Sustained events per second one connection may log across all its
/// invocations; a burst of [`MAX_LOG_EVENTS`] is allowed. Default: 200.
pub const LOG_EVENTS_PER_SECOND: u32 = 200;

/// Who is logging: attached to every event of an invocation.
#[derive(Debug, Clone)]
pub struct LogCtx {
    pub plugin: Arc<str>,
    pub plugin_version: Arc<str>,
    pub connection: Arc<str>,
    pub invocation_id: u64,
    /// Scrubs the connection's secret values from everything logged.
    pub redactor: Arc<Redactor>,
    /// The connection's log rate, shared by its invocations.
    pub rate: Arc<LogRate>,
}

/// A connection's log rate: many short invocations cannot flood the log
/// any more than one long one. Events over it are dropped and counted.
#[derive(Debug)]
pub struct LogRate(governor::DefaultDirectRateLimiter);

impl Default for LogRate {
    fn default() -> Self {
        let quota = governor::Quota::per_second(
            std::num::NonZeroU32::new(LOG_EVENTS_PER_SECOND).expect("non-zero"),
        )
        .allow_burst(std::num::NonZeroU32::new(MAX_LOG_EVENTS).expect("non-zero"));
        LogRate(governor::DefaultDirectRateLimiter::direct(quota))
    }
}

/// Per-invocation log budget, kept in the store.
#[derive(Debug, Default)]
pub struct LogBudget {
    pub emitted: u32,
    pub dropped: u32,
    /// The message of a panic the guest reported (an error event with the
    /// field `panic=true`, as the Rust SDK's panic hook sends).
    pub panic: Option<String>,
}

/// Borrowed view handed to the generated `Host` impl.
#[derive(Debug)]
pub struct LogCtxView<'a> {
    pub ctx: &'a LogCtx,
    pub budget: &'a mut LogBudget,
}

/// Implemented by store data that offers `log`.
pub trait LogView: Send {
    fn log(&mut self) -> LogCtxView<'_>;
}

impl LogCtxView<'_> {
    /// Emits one event on behalf of the guest, within budget.
    pub fn emit(&mut self, level: Level, message: &str, fields: &[(String, String)]) {
        if matches!(level, Level::Error) && fields.iter().any(|(k, v)| k == "panic" && v == "true")
        {
            let message = self.ctx.redactor.redact(message);
            self.budget.panic = Some(super::sanitize(&message, MAX_LOG_TEXT));
        }
        if self.budget.emitted >= MAX_LOG_EVENTS || self.ctx.rate.0.check().is_err() {
            self.budget.dropped += 1;
            return;
        }
        self.budget.emitted += 1;
        let redactor = &self.ctx.redactor;
        let message = super::sanitize(&redactor.redact(message), MAX_LOG_TEXT);
        let fields = fields
            .iter()
            .take(MAX_LOG_FIELDS)
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    super::sanitize(&redactor.redact(k), 64),
                    super::sanitize(&redactor.redact(v), MAX_LOG_TEXT)
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        let ctx = self.ctx;
        macro_rules! event {
            ($lvl:expr) => {
                tracing::event!(
                    target: "switchyard::guest",
                    $lvl,
                    plugin = &*ctx.plugin,
                    plugin_version = &*ctx.plugin_version,
                    connection = &*ctx.connection,
                    invocation = ctx.invocation_id,
                    fields = fields,
                    "{message}"
                )
            };
        }
        match level {
            Level::Trace => event!(tracing::Level::TRACE),
            Level::Debug => event!(tracing::Level::DEBUG),
            Level::Info => event!(tracing::Level::INFO),
            Level::Warn => event!(tracing::Level::WARN),
            Level::Error => event!(tracing::Level::ERROR),
        }
    }
}

impl log::Host for LogCtxView<'_> {
    async fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.emit(level, &message, &fields);
        Ok(())
    }
}

struct HasLog;

impl HasData for HasLog {
    type Data<'a> = LogCtxView<'a>;
}

/// Adds `switchyard:connector/log` to `linker`.
pub fn add_to_linker<T: LogView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    log::add_to_linker::<T, HasLog>(linker, T::log)
}
