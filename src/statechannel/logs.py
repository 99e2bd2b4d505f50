"""Log setup for the daemons: human lines, or one JSON object per line (`--log-format json`).

A JSON line carries `ts`, `level`, `logger`, `msg`, and `channel`, `peer`, `event` and `reason` when a
record has them (as `extra=` fields, else the channel and peer read from the message). `event` is the
message's template, so lines of one kind group together whatever their arguments.

Secrets never reach the output: the daemon registers its API token and the keystore password with
`redact`, and every formatted line (tracebacks included) has them replaced before it is written."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = ("channel", "peer", "event", "reason")
_CHANNEL = re.compile(r"channel (0x[0-9a-fA-F]{8,64})|(?:for|of) (0x[0-9a-fA-F]{12,64})\b")
_PEER = re.compile(r"peer (0x[0-9a-fA-F]{40})\b")
_secrets: set[str] = set()
_lock = threading.Lock()
REDACTED = "[redacted]"
MIN_SECRET = 4
"""Shorter strings are not redacted: replacing every 'a' would wreck the log and hide nothing."""


def redact(secret: str) -> None:
    """From now on, write `secret` as [redacted] wherever it would appear in a log line."""
    if len(secret) >= MIN_SECRET:
        with _lock:
            _secrets.add(secret)


def scrub(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
            "event": str(getattr(record, "event", record.msg)),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value if isinstance(value, str | int) else str(value)
        if "channel" not in line and (found := _CHANNEL.search(message)):
            line["channel"] = (found.group(1) or found.group(2)).lower()
        if "peer" not in line and (found := _PEER.search(message)):
            line["peer"] = found.group(1)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(line, ensure_ascii=False, default=str))


def setup(level: str = "info", fmt: str = "text") -> None:
    """Send every log record of the process to stderr in `fmt` ('text' or 'json'), from `level` up."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
