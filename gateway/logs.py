"""Logging: structlog configured once, with stdlib logging routed through the same renderer.

Every line, from our structlog loggers and from stdlib loggers such as `aiohttp.access`, goes
through one `ProcessorFormatter` on one root handler, so the output has one format:

* JSON lines (`timestamp` ISO-8601 UTC, `level`, `event`, `logger`, then the bound keys) when
  `log.format` is `json`, or `auto` and the stream is not a terminal;
* structlog's `ConsoleRenderer` when `log.format` is `console`, or `auto` and the stream is a
  terminal.

The request id bound with `bind_request_id` lives in a contextvar of its own, so it appears on
every line logged while that request is handled (the task serving the connection owns the
context; `clear_request_context` unsets it when the request ends). It is one `ContextVar.set`
per request: structlog's `bind_contextvars` and `clear_contextvars` (which copies the whole
context) cost a few microseconds of every request, logged or not, for a key that only the few
lines actually logged need. `merge_contextvars` still adds anything bound through structlog.

Values under keys that look like secrets (token, password, secret, authorization) are replaced by
`***`, and passwords inside URLs are masked, before anything is rendered.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, Final, TextIO
from urllib.parse import unquote_plus

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from gateway.settings import MASK, LogSettings, mask_url

__all__ = [
    "SENSITIVE_KEY_WORDS",
    "bind_request_id",
    "clear_request_context",
    "configure_logging",
    "get_logger",
    "mask_query",
    "mask_secrets",
]

# A key is sensitive when one of its words (split on `_`, `-`, `.` and camelCase) is one of these.
# Whole words, so `tokensUsed` (a count in the DO API) stays visible while `admin_token` does not.
SENSITIVE_KEY_WORDS: Final = frozenset(
    {"token", "password", "passwd", "secret", "authorization", "cookie", "apikey"}
)

_WORD_SPLIT: Final = re.compile(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])")
_URL_WITH_USERINFO: Final = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://[^/@\s]*@")

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _is_sensitive(key: str) -> bool:
    words = {word.lower() for word in _WORD_SPLIT.split(key) if word}
    return bool(words & SENSITIVE_KEY_WORDS) or key.lower().replace("_", "") in SENSITIVE_KEY_WORDS


def _mask_value(key: str, value: object) -> object:
    if _is_sensitive(key):
        return value if value is None or value == "" else MASK  # "unset" is worth seeing
    if isinstance(value, Mapping):
        return {k: _mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, str) and _URL_WITH_USERINFO.match(value):
        return mask_url(value)
    return value


def mask_secrets(_logger: WrappedLogger, _method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask values of secret-looking keys (nested too) and URL passwords."""
    for key, value in event_dict.items():
        if key != "event":
            event_dict[key] = _mask_value(key, value)
    return event_dict


_LEADING_KEYS: Final = ("timestamp", "level", "logger", "event")


def _leading_keys_first(_logger: WrappedLogger, _method_name: str, event_dict: EventDict) -> EventDict:
    """Put timestamp, level, logger and event first in each JSON line, for people reading them."""
    leading = {key: event_dict.pop(key) for key in _LEADING_KEYS if key in event_dict}
    leading.update(event_dict)
    return leading


def _orjson_dumps(obj: object, *, default: Callable[[Any], object] | None = None, **_kwargs: object) -> str:
    """JSONRenderer serializer: orjson keeps key order and writes UTF-8 as is."""
    return orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


_REQUEST_ID: Final[ContextVar[str | None]] = ContextVar("gateway_request_id", default=None)


def _add_request_id(_logger: WrappedLogger, _method_name: str, event_dict: EventDict) -> EventDict:
    """The request being handled, first among the bound keys (as `merge_contextvars` put it)."""
    request_id = _REQUEST_ID.get()
    if request_id is None or "request_id" in event_dict:
        return event_dict
    return {"request_id": request_id, **event_dict}


def _shared_processors() -> list[Processor]:
    """What every line gets, whether it came from structlog or from stdlib logging."""
    return [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
        mask_secrets,
    ]


def _use_json(settings: LogSettings, stream: TextIO) -> bool:
    if settings.format == "json":
        return True
    if settings.format == "console":
        return False
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


class _GatewayHandler(logging.StreamHandler[TextIO]):
    """The root handler this module installs; its own class so reconfiguring replaces only it."""


# Tracebacks as data, WITHOUT local variables: a frame's locals can hold request bytes with an
# Authorization header, a Redis URL with its password or the admin token (secrets never logged).
_TRACEBACKS: Final = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


# Loggers are built once, on first use, for speed. Tests turn this off (tests/conftest.py): a
# logger cached under one test's configuration would keep its processors, and a later test's
# `structlog.testing.capture_logs` would not see its events.
CACHE_LOGGERS_ON_FIRST_USE: bool = True


def configure_logging(settings: LogSettings, *, stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger to write `settings`' format to `stream`.

    `stream` defaults to stderr. Calling it again replaces the previous configuration (handlers
    that others put on the root logger, such as pytest's, are left alone).
    """
    out = sys.stderr if stream is None else stream
    renderer: Processor
    if _use_json(settings, out):
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        final: list[Processor] = [_TRACEBACKS, _leading_keys_first, renderer]
    else:
        isatty = getattr(out, "isatty", None)
        renderer = structlog.dev.ConsoleRenderer(
            colors=callable(isatty) and bool(isatty()), exception_formatter=structlog.dev.plain_traceback
        )
        final = [renderer]

    shared = _shared_processors()
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        cache_logger_on_first_use=CACHE_LOGGERS_ON_FIRST_USE,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = _GatewayHandler(out)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _GatewayHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(settings.level, logging.INFO))


def mask_query(target: str) -> str:
    """A request target with the values of secret-looking query parameters (`token`,
    `access_token`, `password`, `apiKey` ...) replaced by `***`, for the access log."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    parts = []
    for part in query.split("&"):
        key, eq, _value = part.partition("=")
        parts.append(f"{key}={MASK}" if eq and _is_sensitive(unquote_plus(key)) else part)
    return f"{path}?{'&'.join(parts)}"


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A typed structlog logger named `name` (usually `__name__`)."""
    return structlog.stdlib.get_logger(name)


def bind_request_id(request_id: str) -> None:
    """Attach `request_id` to every line logged from the current context (one request's task)."""
    _REQUEST_ID.set(request_id)


def clear_request_context() -> None:
    """Forget the request id of the current context (call when a request ends)."""
    _REQUEST_ID.set(None)
