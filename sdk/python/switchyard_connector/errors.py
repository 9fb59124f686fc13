"""The errors a connector raises; the host acts on the kind."""

try:
    from wit_world.imports import switchyard_connector_types as _types
except ImportError:  # built without wasi:http, whose `types` it would clash with
    from wit_world.imports import types as _types


class ConnectorError(Exception):
    """Base of the four kinds."""

    def __init__(self, message):
        super().__init__(message)
        self.message = str(message)

    def to_wit(self):
        raise NotImplementedError


class Retryable(ConnectorError):
    """Transient (timeout, 5xx, connection reset): the host retries with
    backoff, up to the pipeline's `max_attempts`."""

    def to_wit(self):
        return _types.ConnectorError_Retryable(self.message)


class Permanent(ConnectorError):
    """Will fail the same way again: dead-lettered at once, never retried."""

    def to_wit(self):
        return _types.ConnectorError_Permanent(self.message)


class InvalidInput(ConnectorError):
    """The caller's input is malformed; the message says what to fix."""

    def to_wit(self):
        return _types.ConnectorError_InvalidInput(self.message)


class RateLimited(ConnectorError):
    """The upstream throttled the call; the host pauses for
    `retry_after_ms` when given."""

    def __init__(self, message, retry_after_ms=None):
        super().__init__(message)
        self.retry_after_ms = retry_after_ms

    def to_wit(self):
        return _types.ConnectorError_RateLimited(
            _types.RateLimit(self.message, self.retry_after_ms)
        )


def not_in_manifest(what, line):
    """The error for a capability the connector was built without."""
    return Permanent(
        f"{what} is not in this connector's manifest, so the build left it out: "
        f"add `{line}` to <name>.manifest.toml and build again"
    )
