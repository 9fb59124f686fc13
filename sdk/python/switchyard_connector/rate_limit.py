"""Pacing for work that is not outbound HTTP (the host paces HTTP on its
own, per destination and per granted bucket)."""

from componentize_py_types import Err as _Err

from .errors import Permanent, RateLimited, not_in_manifest

try:
    from wit_world.imports import rate_limit as _rate_limit
except ImportError:  # built without `rate_limits` in the manifest
    _rate_limit = None


def acquire(bucket):
    """Waits for one permit of `bucket`, up to the host's bound; raises
    `RateLimited` (with the wait) when none came in time."""
    if _rate_limit is None:
        raise not_in_manifest("rate limits", 'rate_limits = ["NAME"]')
    try:
        _rate_limit.acquire(bucket)
    except _Err as error:
        if isinstance(error.value, _rate_limit.AcquireError_Exhausted):
            raise RateLimited(
                f"rate limit `{bucket}` exhausted", retry_after_ms=error.value.value
            ) from None
        raise Permanent(error.value.value) from None
