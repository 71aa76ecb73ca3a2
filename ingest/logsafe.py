"""Text from events made safe for the worker's own log and for metric labels.

An event is written by whoever can put a line in a log file (a user name an SSH client sent, a
command). Quoted raw into our log, its newline starts a line of its own, so a queued event could
forge a whole record (``2099-01-01 00:00:00 CRITICAL ingest.worker: ...``); ``\\r``, escape
sequences (``\\x1b[31m``) and NUL bytes reach terminals and log collectors; a lone surrogate
makes the log handler itself fail. :func:`escape` writes every such character as a visible escape
(``\\n``, ``\\x1b``, ``\\u2028``); :func:`label` keeps a metric label value to a small alphabet;
:class:`SafeFormatter` applies :func:`escape` to every log message, whatever path it took, and
indents the lines of a traceback so that none can pass for a record of its own.
"""

from __future__ import annotations

import logging
import re

#: C0 and C1 controls, DEL, the Unicode line and paragraph separators, lone surrogates (what
#: ``surrogateescape`` makes of bytes that are not UTF-8)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_UNSAFE_IN_TRACEBACK = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.:\-]")
LABEL_LIMIT = 60


def _escape_one(match: re.Match[str]) -> str:
    c = match.group()
    named = _NAMED.get(c)
    if named is not None:
        return named
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def escape(text: str) -> str:
    """``text`` with control characters, line separators and lone surrogates as visible escapes."""
    if _UNSAFE.search(text) is None:  # the common case: nothing to do
        return text
    return _UNSAFE.sub(_escape_one, text)


def label(value: object) -> str:
    """A metric label value from text that may come from outside (an Elasticsearch error type):
    letters, digits and ``_.:-`` only, at most 60 characters."""
    text = _LABEL_UNSAFE.sub("_", str(value))
    return text[:LABEL_LIMIT]


class SafeFormatter(logging.Formatter):
    """A formatter whose message part is :func:`escape`-d, whatever called the logger with what;
    the lines of a traceback or stack are escaped alike (newlines kept) and indented by four
    spaces, so a newline in an exception's message cannot start a record."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: object) -> str:  # noqa: N802
        return _indent(super().formatException(ei))  # type: ignore[arg-type]

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    text = _UNSAFE_IN_TRACEBACK.sub(_escape_one, text)
    return "    " + text.replace("\n", "\n    ")


def install(fmt: str, level: int = logging.INFO) -> None:
    """``logging.basicConfig`` on stderr with :class:`SafeFormatter` (``audit-ingest`` and the tests' workers)."""
    logging.basicConfig(level=level, format=fmt)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(SafeFormatter(fmt))
