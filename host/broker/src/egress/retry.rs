//! Host-level retries of idempotent requests, and reading an upstream's
//! `Retry-After`.

use super::*;

/// Host-level retries for idempotent requests (GET, HEAD, PUT, DELETE,
/// OPTIONS) after connect errors, 429 and 5xx, per connection grant.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryGrant {
    /// Attempts in all, the first included. Default: 3.
    pub attempts: u32,
    /// Delay before the first retry; doubles each time, with full jitter.
    /// Default: 100 ms.
    pub base_delay_ms: u64,
    /// Longest delay between attempts. Default: 2000 ms.
    pub max_delay_ms: u64,
}

impl Default for RetryGrant {
    fn default() -> Self {
        RetryGrant {
            attempts: 3,
            base_delay_ms: 100,
            max_delay_ms: 2_000,
        }
    }
}

impl RetryGrant {
    /// The wait before retry number `retry` (1-based): exponential, capped,
    /// and uniformly jittered so clients do not retry in lockstep.
    pub(super) fn delay(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay_ms
            .saturating_mul(1 << retry.saturating_sub(1).min(20));
        Duration::from_millis(fastrand::u64(0..=exp.min(self.max_delay_ms)))
    }
}

pub(super) fn is_idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
    ]
    .contains(method)
}

/// `Retry-After` in seconds (the HTTP-date form is rare from APIs and is
/// treated as absent).
pub(super) fn retry_after<B>(response: &Response<B>) -> Option<Duration> {
    let value = response.headers().get(http::header::RETRY_AFTER)?;
    let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(3_600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let retry = RetryGrant {
            attempts: 5,
            base_delay_ms: 100,
            max_delay_ms: 300,
        };
        for _ in 0..100 {
            assert!(retry.delay(1) <= Duration::from_millis(100));
            assert!(retry.delay(2) <= Duration::from_millis(200));
            assert!(retry.delay(9) <= Duration::from_millis(300));
        }
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| retry.delay(3)).collect();
        assert!(distinct.len() > 5, "jitter spreads retries: {distinct:?}");
    }

    #[test]
    fn only_idempotent_methods_are_retried() {
        assert!(is_idempotent(&Method::GET) && is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST) && !is_idempotent(&Method::PATCH));
    }

    #[test]
    fn retry_after_reads_seconds_and_caps_them() {
        let with = |v: &str| {
            Response::builder()
                .header("retry-after", v)
                .body(())
                .unwrap()
        };
        assert_eq!(retry_after(&with("7")), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&with("99999")),
            Some(Duration::from_secs(3_600))
        );
        assert_eq!(retry_after(&with("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }
}
