"""The durable, append-only log of events received over HTTP, beside the data (``<data>/live_events``).

One JSON line per accepted request — ``{"user_id", "received_at", "events": [...]}`` — written in one
``write`` and ``fsync``'d (file, and the folder when the file is new) before the request is acknowledged.
A request is therefore all-or-nothing: a server killed mid-append leaves at most a torn line, which was
never acknowledged; reading skips any line that is not JSON (and warns), and the next append starts on a
fresh line. Nothing
ever rewrites or truncates the log or the data folder's own files.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from data_pipelines.atomic import fsync_folder
from user_embed.errors import UserError

LOG_NAME = "events.jsonl"
log = logging.getLogger("user_embed.serving")


class EventLog:
    """Appends event batches to ``folder/events.jsonl`` and reads them back."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOG_NAME
        self._lock = threading.Lock()
        self.torn_lines = 0

    def read(self) -> list[dict]:
        """Every acknowledged record, in append order; a torn last line is skipped, any other bad line refused."""
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:  # only ever a torn write: complete lines are fsync'd before the acknowledgement
                self.torn_lines += 1
                log.warning("%s: line %d skipped: a torn append that was never acknowledged", self.path, number)
                continue
            if not isinstance(record, dict) or not isinstance(record.get("events"), list) or "user_id" not in record:
                raise UserError(f"{self.path}: line {number} is JSON but not an event record (user_id, events); "
                                "the log was changed by hand: fix or move that line")
            records.append(record)
        return records

    def append(self, user_id: str, events: list[dict]) -> dict:
        """Write one record durably; returns it. Raises UserError when the folder cannot be written."""
        record = {"user_id": user_id, "received_at": int(time.time()), "events": events}
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            try:
                new = not self.path.exists()
                self.folder.mkdir(parents=True, exist_ok=True)
                with open(self.path, "ab") as handle:
                    if not new and handle.tell() and not self._ends_with_newline():
                        line = b"\n" + line  # after a torn line: start a fresh one
                    handle.write(line)
                    handle.flush()
                    os.fsync(handle.fileno())
                if new:
                    fsync_folder(self.folder)
            except OSError as exc:
                raise UserError(f"cannot append to the events log {self.path}: {exc.strerror or exc}") from exc
        return record

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
