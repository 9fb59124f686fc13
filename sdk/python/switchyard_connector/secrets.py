"""Secrets by name, never by value: a placeholder the host swaps for the
value on the way out, only to destinations the secret is bound to, and
HMAC signing and verification done by the host."""

from componentize_py_types import Err as _Err

from .errors import Permanent, not_in_manifest

try:
    from wit_world.imports import secrets as _secrets
except ImportError:  # built without `secrets` in the manifest
    _secrets = None


def _call(name, *args):
    if _secrets is None:
        raise not_in_manifest("secrets", 'secrets = ["NAME"]')
    function = getattr(_secrets, name)
    try:
        return function(*args)
    except _Err as error:
        raise Permanent(error.value.value) from None


def placeholder(name):
    """The placeholder of secret `name`, e.g. for `Authorization: Bearer …`."""
    return _call("placeholder", name)


def sign_hmac_sha256(name, message):
    """HMAC-SHA256 of `message` (bytes or str) keyed by secret `name`, as hex."""
    if isinstance(message, str):
        message = message.encode()
    return _call("sign_hmac_sha256", name, bytes(message))


def verify_hmac_sha256(name, message, signature_hex):
    """Whether `signature_hex` signs `message` with secret `name`
    (compared in constant time by the host)."""
    if isinstance(message, str):
        message = message.encode()
    return _call("verify_hmac_sha256", name, bytes(message), signature_hex)
