"""The connection's non-secret settings, as the operator set them."""

from wit_world.imports import config as _config


def get(key, default=None):
    """The value of setting `key`, or `default`."""
    value = _config.get(key)
    return default if value is None else value


def require(key, example=""):
    """The value of setting `key`; `Permanent` naming the setting if unset."""
    from .errors import Permanent

    value = _config.get(key)
    if value is None:
        hint = f", e.g. {example}" if example else ""
        raise Permanent(f"setting `{key}` is required{hint}")
    return value


def all():
    """Every setting, as a dict."""
    return dict(_config.get_all())
