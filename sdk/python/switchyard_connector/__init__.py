"""Write a Switchyard connector in Python.

A connector is a class with the same roles as the Rust SDK's `Connector`
trait. Subclass `Connector`, declare actions with `@action`, override the
roles you implement, and bind the name `Connector` in your main module to
`export(YourClass)`; `switchyard plugin build <dir>` turns the folder into
a component with componentize-py.

    import switchyard_connector as sy

    class Hello(sy.Connector):
        name = "hello"
        version = "0.1.0"
        description = "Says hello"

        @sy.action("greet", "{name} -> {greeting}")
        def greet(self, input):
            return {"greeting": f"hello {input['name']}"}

    Connector = sy.export(Hello)

Errors: raise `Retryable`, `Permanent`, `RateLimited` or `InvalidInput`;
the host acts on the kind (retry with backoff, dead letter, pause). Any
other exception becomes `Permanent` with its type and message: a bug fails
the same way again.

Everything outside the sandbox goes through the host: `http` (over
wasi:http, so every request takes the host's egress path), `secrets`
(placeholders, never values), `state`, `config`, `log` and `rate_limit`.
"""

import json as _json
import traceback as _traceback

from wit_world import exports as _exports
try:
    from wit_world.imports import switchyard_connector_types as _types
except ImportError:  # built without wasi:http, whose `types` it would clash with
    from wit_world.imports import types as _types
from componentize_py_types import Err as _Err, Ok as _Ok

from .errors import ConnectorError, InvalidInput, Permanent, RateLimited, Retryable
from . import config, http, log, rate_limit, secrets, state

Message = _types.Message
Page = _types.Page
ReadRequest = _types.ReadRequest
WebhookRequest = _types.WebhookRequest

__all__ = [
    "Connector", "action", "export", "Message", "Page", "ReadRequest", "WebhookRequest",
    "ConnectorError", "Retryable", "Permanent", "RateLimited", "InvalidInput",
    "config", "http", "log", "rate_limit", "secrets", "state", "message", "written", "failed",
    "json_text", "json_loads",
]


def action(name, description=""):
    """Marks a method as action `name`. It takes the parsed JSON input and
    returns something JSON can encode (or `bytes`, sent as they are)."""

    def mark(method):
        method._switchyard_action = (name, description)
        return method

    return mark


class Connector:
    """Base class of a connector. Set `name`, `version` and `description`;
    list `streams` as `(name, description)` pairs for a source or sink.
    Override the roles you implement; the others answer `Permanent`."""

    name = "connector"
    version = "0.1.0"
    description = ""
    streams = ()

    def handle_webhook(self, request):
        """One inbound webhook (a `WebhookRequest`) -> a list of `Message`."""
        raise Permanent("this connector takes no webhooks")

    def transform(self, messages):
        """A batch of `Message` -> the transformed batch."""
        raise Permanent("this connector does not transform")

    def read(self, request):
        """A `ReadRequest` -> a `Page`."""
        raise Permanent("this connector is not a source")

    def write(self, messages):
        """A batch of `Message` -> one outcome per message: `written(id)`
        or `failed(id, error)`."""
        raise Permanent("this connector is not a sink")


def message(id, stream, payload, key=None, headers=(), timestamp_ms=0):
    """A `Message`; a `payload` that is not bytes is sent as JSON."""
    if not isinstance(payload, (bytes, bytearray)):
        payload = _json.dumps(payload, separators=(",", ":")).encode()
        headers = list(headers) or [("content-type", "application/json")]
    return _types.Message(id, stream, key, list(headers), bytes(payload), timestamp_ms)


def json_loads(payload):
    """A JSON payload (bytes or str) as Python values."""
    return _json.loads(payload)


def json_text(value):
    """`value` as compact JSON text."""
    return _json.dumps(value, separators=(",", ":"))


def written(id):
    """A write outcome: message `id` was written."""
    return _types.WriteOutcome(id, _Ok(None))


def failed(id, error):
    """A write outcome: message `id` failed with `error` (a ConnectorError)."""
    return _types.WriteOutcome(id, _Err(_to_wit(error)))


def _to_wit(error):
    if isinstance(error, ConnectorError):
        return error.to_wit()
    # A bug fails the same way again: permanent, with what went wrong.
    return _types.ConnectorError_Permanent(
        f"unhandled {type(error).__name__}: {error}".strip()
    )


def _guard(call):
    """Runs `call`, turning exceptions into the connector-error result."""
    try:
        return call()
    except _Err:
        raise
    except Exception as error:  # noqa: BLE001 - every error must reach the host
        if not isinstance(error, ConnectorError):
            log.error("unhandled exception", traceback=_traceback.format_exc()[-2000:])
        raise _Err(_to_wit(error))


def _actions(cls):
    found = {}
    for attr in dir(cls):
        marked = getattr(getattr(cls, attr), "_switchyard_action", None)
        if marked:
            found[marked[0]] = (attr, marked[1])
    return found


def _overrides(cls, method):
    return getattr(cls, method) is not getattr(Connector, method)


def export(cls):
    """The class componentize-py exports for `cls`: bind it to the name
    `Connector` in your main module."""
    actions = _actions(cls)
    instance = []

    def connector():
        if not instance:
            instance.append(cls())
        return instance[0]

    def call_action(action_name, input):
        found = actions.get(action_name)
        if found is None:
            raise Permanent(f"unknown action `{action_name}`; this connector has: "
                            + ", ".join(sorted(actions)) or "none")
        try:
            parsed = _json.loads(input) if input else None
        except ValueError as error:
            raise InvalidInput(f"input is not JSON: {error}")
        out = getattr(connector(), found[0])(parsed)
        if isinstance(out, (bytes, bytearray)):
            return bytes(out)
        return _json.dumps(out, separators=(",", ":")).encode()

    class Exported(_exports.Connector):
        def describe(self):
            roles = []
            if actions:
                roles.append(_types.Role.ACTION)
            for method, role in (("handle_webhook", _types.Role.WEBHOOK),
                                 ("transform", _types.Role.TRANSFORM),
                                 ("read", _types.Role.SOURCE),
                                 ("write", _types.Role.SINK)):
                if _overrides(cls, method):
                    roles.append(role)
            return _types.ConnectorInfo(
                cls.name, cls.version, cls.description, roles,
                [_types.ActionInfo(n, d) for n, (_, d) in sorted(actions.items())],
                [_types.StreamInfo(n, d) for n, d in cls.streams],
            )

        def call_action(self, action_name, input):
            return _guard(lambda: call_action(action_name, input))

        def handle_webhook(self, request):
            return _guard(lambda: list(connector().handle_webhook(request)))

        def transform(self, messages):
            return _guard(lambda: list(connector().transform(messages)))

        def read(self, request):
            return _guard(lambda: connector().read(request))

        def write(self, messages):
            return _guard(lambda: list(connector().write(messages)))

    Exported.__name__ = "Connector"
    return Exported
