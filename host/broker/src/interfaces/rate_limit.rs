//! `switchyard:connector/rate-limit`: explicit pacing for non-HTTP work.

use crate::bindings::switchyard::connector::rate_limit::{self, AcquireError};
use crate::observe::{BrokerUse, ObserveCtx};
use crate::rate::ConnectionRateLimits;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasData, Linker};

/// The buckets of one connection and how long `acquire` may wait.
/// Default: no buckets.
#[derive(Debug, Clone, Default)]
pub struct RateLimitCtx {
    pub(crate) connection: Arc<str>,
    pub(crate) buckets: Arc<ConnectionRateLimits>,
    /// `limits.rate_limit_wait_ms`.
    pub(crate) max_wait: Duration,
    /// Where waits and refusals are reported.
    pub(crate) observe: ObserveCtx,
}

/// Borrowed view handed to the generated `Host` impl.
#[derive(Debug)]
pub struct RateLimitCtxView<'a> {
    pub ctx: &'a RateLimitCtx,
}

/// Implemented by store data that offers `rate-limit`.
pub trait RateLimitView: Send {
    fn rate_limit(&mut self) -> RateLimitCtxView<'_>;
}

impl rate_limit::Host for RateLimitCtxView<'_> {
    async fn acquire(&mut self, name: String) -> wasmtime::Result<Result<(), AcquireError>> {
        let Some(bucket) = self.ctx.buckets.bucket(&name) else {
            return Ok(Err(AcquireError::NotGranted(format!(
                "no rate limit `{name}` is granted to connection `{conn}`; add [connections.{conn}.grants.rate_limits.{name}] and list `{name}` in the plugin manifest's `rate_limits`",
                conn = self.ctx.connection
            ))));
        };
        let started = std::time::Instant::now();
        let result = bucket.acquire(self.ctx.max_wait).await;
        let (waited, refused) = match &result {
            Ok(waited) => (*waited, false),
            Err(_) => (started.elapsed(), true),
        };
        if refused || !waited.is_zero() {
            self.ctx.observe.broker(BrokerUse::RateLimitWait {
                bucket: &name,
                waited,
                refused,
            });
        }
        Ok(result
            .map(|_| ())
            .map_err(|limited| AcquireError::Exhausted(limited.retry_after.as_millis() as u64)))
    }
}

struct HasRateLimit;

impl HasData for HasRateLimit {
    type Data<'a> = RateLimitCtxView<'a>;
}

/// Adds `switchyard:connector/rate-limit` to `linker`.
pub fn add_to_linker<T: RateLimitView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    rate_limit::add_to_linker::<T, HasRateLimit>(linker, T::rate_limit)
}
