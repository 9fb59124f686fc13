"""Outbound HTTP over `wasi:http`: every request takes the host's egress
path (grants, SSRF rules, TLS, rate limits, secret placeholders).

    response = http.get(url, headers={"accept": "application/json"},
                        bearer_secret="api-token")
    response.raise_for_status()
    data = response.json()

Redirects are followed for GET and HEAD (and 303 turns into GET), at most
`max_redirects` (default 5); the host checks every hop's destination.
"""

import json as _json
from urllib.parse import urljoin, urlsplit

from componentize_py_types import Err as _Err, Ok as _Ok

from . import secrets as _secrets
from .errors import ConnectorError, Permanent, RateLimited, Retryable, not_in_manifest

try:
    from wit_world.imports import outgoing_handler as _handler
    from wit_world.imports import streams as _streams
    from wit_world.imports import wasi_http_types as _t
except ImportError:  # built without `http` in the manifest
    _t = None

_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
# Timeouts and connection failures may pass; denials, limits, TLS and
# protocol errors will repeat.
_TRANSIENT = {
    "DnsTimeout", "DnsError", "DestinationUnavailable", "ConnectionRefused",
    "ConnectionTerminated", "ConnectionTimeout", "ConnectionReadTimeout",
    "ConnectionWriteTimeout", "ConnectionLimitReached", "HttpResponseIncomplete",
    "HttpResponseTimeout", "InternalError",
}
_WORDS = {"Dns": "DNS", "Ip": "IP", "Tls": "TLS", "Http": "HTTP", "Uri": "URI"}
_CHUNK = 4096


def _code_name(code):
    """The wasi:http error-code case name as the WIT spells it."""
    words, word = [], ""
    for ch in type(code).__name__.split("_", 1)[1]:
        if ch.isupper() and word:
            words.append(word)
            word = ""
        word += ch
    words.append(word)
    return "-".join(_WORDS.get(w, w.lower()) for w in words)


class TransportError(ConnectorError):
    """The host or the network refused the request (`code`: the wasi:http
    case name, e.g. `HTTP-request-denied`, `destination-IP-prohibited`)."""

    def __init__(self, code):
        self.code = _code_name(code)
        detail = getattr(code, "value", None)
        message = f"HTTP request failed: {self.code}"
        if isinstance(detail, str) and detail:
            message += f": {detail}"
        super().__init__(message)
        self.transient = type(code).__name__.split("_", 1)[1] in _TRANSIENT

    def to_wit(self):
        kind = Retryable if self.transient else Permanent
        return kind(self.message).to_wit()


class StatusError(ConnectorError):
    """`raise_for_status` rejected the response (kept as `response`)."""

    def __init__(self, response):
        self.response = response
        super().__init__(f"upstream answered status {response.status}")

    def to_wit(self):
        r = self.response
        if r.status == 429:
            after = (r.header("retry-after") or "").strip()
            bucket = r.header("x-switchyard-rate-limited")
            who = f"the host's rate limit `{bucket}`" if bucket else "the upstream"
            retry_after_ms = int(after) * 1000 if after.isdigit() else None
            return RateLimited(f"throttled by {who} (429)", retry_after_ms).to_wit()
        kind = Retryable if r.status >= 500 else Permanent
        return kind(self.message).to_wit()


class Response:
    """A response: `status`, `headers` (a list of (name, value)), `body`
    (bytes)."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        """The first value of header `name` (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return _json.loads(self.body)

    def raise_for_status(self):
        """Raises `StatusError` for 4xx and 5xx: 429 becomes `RateLimited`
        (with `retry-after`), 5xx `Retryable`, other 4xx `Permanent`."""
        if self.status >= 400:
            raise StatusError(self)
        return self


def _method(method):
    if method in _METHODS:
        return getattr(_t, "Method_" + method.capitalize())()
    return _t.Method_Other(method)


def _send_once(method, url, headers, body, timeout_ms):
    if _t is None:
        raise not_in_manifest("outbound HTTP", 'http = ["https://api.example.com"]')
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Permanent(f"`{url}` is not an http(s) URL")
    fields = _t.Fields.from_list([(k, v.encode()) for k, v in headers])
    request = _t.OutgoingRequest(fields)
    request.set_method(_method(method))
    request.set_scheme(_t.Scheme_Https() if parts.scheme == "https" else _t.Scheme_Http())
    request.set_authority(parts.netloc.rsplit("@", 1)[-1])
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    outgoing = request.body()
    options = None
    if timeout_ms is not None:
        options = _t.RequestOptions()
        nanos = int(timeout_ms) * 1_000_000
        options.set_connect_timeout(nanos)
        options.set_first_byte_timeout(nanos)
        options.set_between_bytes_timeout(nanos)
    try:
        future = _handler.handle(request, options)
    except _Err as error:
        raise TransportError(error.value) from None
    with outgoing.write() as stream:
        for start in range(0, len(body), _CHUNK):
            stream.blocking_write_and_flush(body[start:start + _CHUNK])
    _t.OutgoingBody.finish(outgoing, None)
    with future:
        with future.subscribe() as ready:
            ready.block()
        answer = future.get()
    # option<result<result<incoming-response, error-code>>>
    if isinstance(answer, _Err):
        raise Permanent("the HTTP response was already taken")
    inner = answer.value if isinstance(answer, _Ok) else answer
    if isinstance(inner, _Err):
        raise TransportError(inner.value)
    response = inner.value if isinstance(inner, _Ok) else inner
    with response:
        status = response.status()
        with response.headers() as fields:
            got = [(k, v.decode("latin-1")) for k, v in fields.entries()]
        incoming = response.consume()
        chunks = []
        with incoming.stream() as stream:
            while True:
                try:
                    chunks.append(stream.blocking_read(65536))
                except _Err as error:
                    if isinstance(error.value, _streams.StreamError_Closed):
                        break
                    raise Retryable("HTTP response body: the connection failed") from None
        _t.IncomingBody.finish(incoming).__exit__(None, None, None)
    return Response(status, got, b"".join(chunks))


def request(method, url, headers=None, body=None, json=None, bearer_secret=None,
            timeout_ms=None, max_redirects=5, bearer_oauth=None):
    """Sends one request and returns its `Response` (any status).

    `headers`: a dict or a list of pairs. `json`: sent as a JSON body with
    `content-type: application/json`. `bearer_secret`: the name of a secret
    sent as `Authorization: Bearer <placeholder>`; the host puts the value
    in on the way out, only for destinations the secret is bound to.
    `bearer_oauth`: the name of an OAuth grant (listed under `oauth` in the
    manifest); the host puts a current access token in on the way out, only
    for destinations the grant is bound to, and refreshes it itself.
    `timeout_ms`: connect, first byte and between bytes (default: the
    host's). Raises `TransportError` when the host or network refuses it.
    """
    method = method.upper()
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if json is not None:
        body = _json.dumps(json, separators=(",", ":")).encode()
        if not any(k.lower() == "content-type" for k, _ in pairs):
            pairs.append(("content-type", "application/json"))
    if isinstance(body, str):
        body = body.encode()
    body = bytes(body or b"")
    if bearer_secret is not None:
        pairs = [(k, v) for k, v in pairs if k.lower() != "authorization"]
        pairs.append(("authorization", f"Bearer {_secrets.placeholder(bearer_secret)}"))
    if bearer_oauth is not None:
        pairs = [(k, v) for k, v in pairs if k.lower() != "authorization"]
        pairs.append(("authorization", "Bearer {{oauth:%s}}" % bearer_oauth))
    for _ in range(max_redirects + 1):
        response = _send_once(method, url, pairs, body, timeout_ms)
        location = response.header("location")
        if response.status not in (301, 302, 303, 307, 308) or not location:
            return response
        if response.status == 303:
            method, body = "GET", b""
        elif method not in ("GET", "HEAD"):
            return response
        url = urljoin(url, location)
    return response


def get(url, **options):
    return request("GET", url, **options)


def post(url, **options):
    return request("POST", url, **options)


def put(url, **options):
    return request("PUT", url, **options)


def delete(url, **options):
    return request("DELETE", url, **options)
