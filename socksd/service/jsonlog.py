"""
socksd's diagnostic log as JSON, one object per line, for C{twistd
--logger}::

    twistd -n --logger=socksd.service.jsonlog.jsonLogger socksd ...

Each event becomes one line that C{json.loads} reads (no RS prefix, unlike
Twisted's JSON-seq C{jsonFileLogObserver}), written to the standard output
(the journal, under systemd):

    {"time": "2026-01-31T12:00:00.123Z", "level": "info",
     "namespace": "socksd.connection", "text": "127.0.0.1:50000 socks5 ...",
     "client": "127.0.0.1:50000", "user": null, "version": 5, ...}

C{time} (ISO 8601 UTC), C{level}, C{namespace} and C{text} (the event's
formatted message) come first, then the event's own fields, by name (those
Twisted keeps for itself, C{log_*}, are left out; so is a field the text
is exactly, such as the connection event's C{summary}); values JSON has no
type for are written as their C{str}; a failure's traceback is C{failure}.

With C{--workers}, each worker writes its events to its parent in this
form (L{EVENT_LINE}); the parent logs them again as events with the same
fields and namespace, plus C{worker} and C{pid}, so that they keep their
fields in this log (and any other observer) and their text is
C{worker N (pid P): [namespace] text} as before (L{eventFromWorker}).
"""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import datetime
from typing import Any

from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

from socksd.server._log import isoTime

__all__ = [
    "JSONLineObserver",
    "jsonLogger",
    "eventAsJSON",
    "jsonLine",
    "eventFromWorker",
    "EVENT_LINE",
    "RESERVED",
]

#: How a worker's output line that carries a log event begins; the rest is
#: the event as L{jsonLine} writes it.
EVENT_LINE = b"%socksd-event "

#: The keys every line has (before the event's fields); a field with one
#: of these names is left out.
RESERVED = ("time", "level", "namespace", "text", "failure")

#: The keys of events from Twisted's legacy log (C{log.msg}) that are
#: its machinery, not fields.
_LEGACY = frozenset(
    {"message", "system", "isError", "format", "time", "printed", "why", "failure"}
)

_NATIVE = (str, int, bool, type(None))


def _jsonValue(value: Any) -> Any:
    """C{value} if JSON can hold it as it is, else its C{str}."""
    if isinstance(value, _NATIVE):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple, dict)):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            return str(value)
        return value
    return str(value)


def eventAsJSON(event: dict[str, Any]) -> dict[str, Any]:
    """
    The mapping of JSON values a line holds for C{event}: see the module
    docstring.
    """
    level = event.get("log_level")
    namespace = event.get("log_namespace")
    try:
        text = formatEvent(event)
    except Exception:  # formatEvent reports its own errors in the text
        text = repr(event.get("log_format"))
    when = event.get("log_time")
    result: dict[str, Any] = {
        "time": isoTime(when) if isinstance(when, (int, float)) else None,
        "level": level.name if isinstance(level, type(LogLevel.info)) else None,
        "namespace": namespace,
        "text": text,
    }
    # A format that is one field and nothing else: the text is that field.
    textField = None
    logFormat = event.get("log_format")
    if (
        isinstance(logFormat, str)
        and logFormat.startswith("{")
        and logFormat.endswith("}")
        and logFormat.count("{") == 1
    ):
        textField = logFormat[1:-1]
    legacy = namespace == "log_legacy"
    for key, value in event.items():
        if key.startswith("log_") or key in RESERVED or key == textField:
            continue
        if legacy and key in _LEGACY:
            continue
        result[key] = _jsonValue(value)
    failure = event.get("log_failure")
    if failure is not None:
        try:
            result["failure"] = failure.getTraceback()
        except Exception:
            result["failure"] = str(failure)
    return result


def jsonLine(event: dict[str, Any]) -> str:
    """C{event} as one line of JSON (no newline)."""
    return json.dumps(eventAsJSON(event))


@implementer(ILogObserver)
class JSONLineObserver:
    """
    A log observer that writes each event as one line of JSON
    (L{jsonLine}) to a text stream.

    While the reactor runs, the lines of one reactor iteration are flushed
    together (one write for many events); otherwise each line is flushed at
    once.
    """

    def __init__(self, stream: Any, reactor: Any = None, prefix: str = "") -> None:
        """
        @param stream: a text stream.
        @param reactor: the reactor (the global one, imported when the
            first event comes, by default).
        @param prefix: written before each line (a worker's L{EVENT_LINE}).
        """
        self._stream = stream
        self._reactor = reactor
        self._prefix = prefix
        self._pending = False

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            line = jsonLine(event)
        except Exception as error:
            line = json.dumps(
                {
                    "time": None,
                    "level": "error",
                    "namespace": "socksd.service.jsonlog",
                    "text": f"an event could not be written as JSON: {error!r}",
                }
            )
        self._stream.write(self._prefix + line + "\n")
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor as installed

            reactor = self._reactor = installed
        if getattr(reactor, "running", False):
            if not self._pending:
                self._pending = True
                reactor.callLater(0, self._flush)
        else:
            self._stream.flush()

    def _flush(self) -> None:
        self._pending = False
        self._stream.flush()


def jsonLogger() -> JSONLineObserver:
    """
    The observer C{twistd --logger=socksd.service.jsonlog.jsonLogger}
    makes: JSON lines on the standard output.
    """
    return JSONLineObserver(sys.stdout)


def eventFromWorker(
    fields: dict[str, Any], worker: int, pid: int | None
) -> dict[str, Any]:
    """
    The event the parent logs for an event a worker sent as JSON (the
    mapping L{eventAsJSON} made): the worker's fields, namespace, level and
    time, plus C{worker} and C{pid}, with the text C{worker N (pid P):
    [namespace] text}.
    """
    event = dict(fields)
    when = event.pop("time", None)
    levelName = event.pop("level", None)
    namespace = event.pop("namespace", None)
    text = event.pop("text", "")
    failure = event.get("failure")
    if isinstance(failure, str) and failure:
        text = f"{text}\n{failure}"
    try:
        level = LogLevel.levelWithName(levelName)
    except Exception:
        level = LogLevel.info
    try:
        seconds = datetime.fromisoformat(when).timestamp()
    except Exception:
        seconds = None
    event.update(
        log_namespace=namespace if isinstance(namespace, str) else "socksd.worker",
        log_level=level,
        log_format="worker {worker} (pid {pid}): [{log_namespace}] {log_workerText}",
        log_workerText=str(text).replace("\n", "\n    "),
        worker=worker,
        pid=pid,
    )
    event["log_time"] = seconds if seconds is not None else time.time()
    return event
