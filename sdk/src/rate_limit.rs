//! Pacing with the connection's named rate-limit buckets, for work the
//! host does not pace on its own (it already paces outbound HTTP).

use crate::Error;
use crate::bindings::switchyard::connector::rate_limit as wit;

/// Waits for one permit of `bucket`, up to the host's wait bound. When none
/// comes in time the error is [`Error::RateLimited`] with the host's
/// retry-after, so `?` makes the host pause the work; a bucket that is not
/// granted is [`Error::Permanent`].
pub fn acquire(bucket: &str) -> Result<(), Error> {
    wit::acquire(bucket).map_err(|error| match error {
        wit::AcquireError::NotGranted(text) => {
            Error::permanent(format!("rate limit `{bucket}` is not granted: {text}"))
        }
        wit::AcquireError::Exhausted(retry_after_ms) => Error::rate_limited(
            format!("rate limit `{bucket}` exhausted"),
            Some(retry_after_ms),
        ),
    })
}
