"""The durable job store: one SQLite table of jobs.

Every state change is one transaction, so a job read back after a crash is a whole record in
one state: queued, running, succeeded, failed or canceled. WAL mode lets the API read while the
runner writes. Times are Unix seconds.

A job's ``kind`` is ``clip`` (``request`` holds the clip request), ``storyboard`` or ``batch``
(``request`` holds the submitted document verbatim: the script or spec text and its options).
``output`` is the MP4 of a clip, or the folder of a storyboard or batch.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
FINAL = ("succeeded", "failed", "canceled")
KINDS = ("clip", "storyboard", "batch")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    client          TEXT NOT NULL,
    request         TEXT NOT NULL,
    priority        INTEGER NOT NULL DEFAULT 0,
    webhook_url     TEXT,
    idempotency_key TEXT,
    status          TEXT NOT NULL,
    stage           TEXT,
    progress        REAL NOT NULL DEFAULT 0,
    created         REAL NOT NULL,
    started         REAL,
    finished        REAL,
    actor_seconds   REAL NOT NULL DEFAULT 0,
    cached_tasks    INTEGER NOT NULL DEFAULT 0,
    error           TEXT,
    output          TEXT,
    preview         TEXT,
    kind            TEXT NOT NULL DEFAULT 'clip',
    title           TEXT,
    UNIQUE (client, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, priority, seq);
CREATE INDEX IF NOT EXISTS jobs_client ON jobs (client, seq);
"""
# Columns added since the first schema, with their definitions: a database file written before
# them gets them at open, every old row a clip job.
_ADDED = {
    "kind": "TEXT NOT NULL DEFAULT 'clip'",
    "title": "TEXT",
}


@dataclass(frozen=True)
class JobRecord:
    """One row of the jobs table."""

    seq: int
    id: str
    client: str
    request: dict
    priority: int
    webhook_url: str | None
    idempotency_key: str | None
    status: str
    stage: str | None
    progress: float
    created: float
    started: float | None
    finished: float | None
    actor_seconds: float
    cached_tasks: int
    error: str | None
    output: str | None
    preview: str | None
    kind: str = "clip"
    title: str | None = None  # a storyboard's or batch's one-line description (a clip shows its prompt)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "JobRecord":
        d = dict(row)
        d["request"] = json.loads(d["request"])
        return cls(**d)


class JobStore:
    """Jobs in one SQLite file, safe to use from many threads.

    Args:
        path: the database file (created with its folder if missing).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable at each checkpoint, never corrupt
        with self._lock:
            self._db.executescript(_SCHEMA)
            have = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for name, definition in _ADDED.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = self._db.execute(sql, args).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return n

    def _read(self, sql: str, args: tuple = ()) -> list[JobRecord]:
        with self._lock:
            return [JobRecord.from_row(r) for r in self._db.execute(sql, args).fetchall()]

    # ---------------------------------------------------------------- writes

    def add(self, client: str, request: dict, priority: int = 0, webhook_url: str | None = None,
            idempotency_key: str | None = None, kind: str = "clip", title: str | None = None) -> tuple[JobRecord, bool]:
        """Queue a job; with an idempotency key the client already used, return that job instead.

        Args:
            request: a clip request, or a storyboard's or batch's document (see the module docstring).
            kind: one of `KINDS`.
            title: a one-line description for job lists.
        Returns:
            (the job, True if it was created now).
        """
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: must be one of {KINDS}")
        job_id = uuid.uuid4().hex[:16]
        try:
            self._write(
                "INSERT INTO jobs (id, client, request, priority, webhook_url, idempotency_key, status, stage, created, kind, title)"
                " VALUES (?, ?, ?, ?, ?, ?, 'queued', 'queued', ?, ?, ?)",
                (job_id, client, json.dumps(request), priority, webhook_url, idempotency_key, time.time(), kind, title),
            )
        except sqlite3.IntegrityError:
            if idempotency_key is None:
                raise
            return self.by_key(client, idempotency_key), False
        return self.get(job_id), True

    def start(self, job_id: str) -> bool:
        """queued -> running; False if the job is no longer queued (canceled meanwhile)."""
        return self._write("UPDATE jobs SET status = 'running', stage = 'starting', started = ? WHERE id = ? AND status = 'queued'",
                           (time.time(), job_id)) == 1

    def progress(self, job_id: str, stage: str, fraction: float) -> None:
        self._write("UPDATE jobs SET stage = ?, progress = ? WHERE id = ? AND status = 'running'", (stage, fraction, job_id))

    def set_preview(self, job_id: str, path: str) -> None:
        self._write("UPDATE jobs SET preview = ? WHERE id = ?", (path, job_id))

    def finish(self, job_id: str, status: str, *, actor_seconds: float = 0.0, cached_tasks: int = 0,
               error: str | None = None, output: str | None = None) -> bool:
        """running -> a final status, with what the run cost; False if the job was not running."""
        if status not in FINAL:
            raise ValueError(f"status={status!r}: must be one of {FINAL}")
        progress = 1.0 if status == "succeeded" else None
        return self._write(
            "UPDATE jobs SET status = ?, stage = ?, progress = COALESCE(?, progress), finished = ?, actor_seconds = ?,"
            " cached_tasks = ?, error = ?, output = ? WHERE id = ? AND status = 'running'",
            (status, status, progress, time.time(), actor_seconds, cached_tasks, error, output, job_id),
        ) == 1

    def cancel(self, job_id: str) -> bool:
        """queued or running -> canceled; False if the job had already ended."""
        return self._write("UPDATE jobs SET status = 'canceled', stage = 'canceled', finished = ? WHERE id = ?"
                           " AND status IN ('queued', 'running')", (time.time(), job_id)) == 1

    def requeue_running(self) -> int:
        """After a restart: jobs left running go back to the queue, in their old order."""
        return self._write("UPDATE jobs SET status = 'queued', stage = 'queued' WHERE status = 'running'")

    # ---------------------------------------------------------------- reads

    def get(self, job_id: str) -> JobRecord | None:
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    def by_key(self, client: str, idempotency_key: str) -> JobRecord | None:
        rows = self._read("SELECT * FROM jobs WHERE client = ? AND idempotency_key = ?", (client, idempotency_key))
        return rows[0] if rows else None

    def with_status(self, *statuses: str) -> list[JobRecord]:
        """Jobs in any of ``statuses``, oldest first."""
        marks = ",".join("?" * len(statuses))
        return self._read(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY seq", statuses)

    def count(self, status: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0]

    def list(self, client: str, status: str | None = None, limit: int = 20, offset: int = 0) -> list[JobRecord]:
        """A client's jobs, newest first."""
        if status is None:
            return self._read("SELECT * FROM jobs WHERE client = ? ORDER BY seq DESC LIMIT ? OFFSET ?", (client, limit, offset))
        return self._read("SELECT * FROM jobs WHERE client = ? AND status = ? ORDER BY seq DESC LIMIT ? OFFSET ?",
                          (client, status, limit, offset))
