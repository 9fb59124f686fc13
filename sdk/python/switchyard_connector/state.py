"""The connection's durable key-value state. Values are bytes; `str`
values are stored as UTF-8. No connection sees another's keys."""

from componentize_py_types import Err as _Err

from .errors import Permanent, Retryable, not_in_manifest

try:
    from wit_world.imports import state as _state
except ImportError:  # built without `state = true` in the manifest
    _state = None


def _call(function, *args):
    if _state is None:
        raise not_in_manifest("state", "state = true")
    try:
        return function(*args)
    except _Err as error:
        if isinstance(error.value, _state.StateError_Unavailable):
            raise Retryable(error.value.value) from None
        raise Permanent(error.value.value) from None


def _bytes(value):
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else bytes(value)


def get(key):
    """The value of `key` (bytes), or None."""
    return _call(lambda k: _state.get(k), key)


def set(key, value):
    """Sets `key` to `value`."""
    _call(lambda k, v: _state.set(k, v), key, _bytes(value))


def delete(key):
    """Removes `key`; True if it existed."""
    return _call(lambda k: _state.delete(k), key)


def compare_and_swap(key, expected, new):
    """Sets `key` to `new` (None: removes it) only if its value is
    `expected` (None: absent); True if it swapped."""
    return _call(lambda *a: _state.compare_and_swap(*a), key, _bytes(expected), _bytes(new))


def keys(prefix="", limit=100):
    """Keys starting with `prefix`, sorted, at most `limit`."""
    return _call(lambda p, n: _state.keys(p, n), prefix, limit)
