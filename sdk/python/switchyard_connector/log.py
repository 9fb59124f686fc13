"""Structured logs into the host's log pipeline (the host adds plugin,
connection and invocation, escapes control characters and caps size and
rate). Fields are keyword arguments."""

from wit_world.imports import log as _log


def _emit(level, message, fields):
    _log.log(level, str(message), [(str(k), str(v)) for k, v in fields.items()])


def trace(message, **fields):
    _emit(_log.Level.TRACE, message, fields)


def debug(message, **fields):
    _emit(_log.Level.DEBUG, message, fields)


def info(message, **fields):
    _emit(_log.Level.INFO, message, fields)


def warn(message, **fields):
    _emit(_log.Level.WARN, message, fields)


def error(message, **fields):
    _emit(_log.Level.ERROR, message, fields)
