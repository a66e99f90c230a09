"""A small client for the job API (the stdlib's urllib; what the CLI's job commands use)."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..encode import atomic_path

FINAL = ("succeeded", "failed", "canceled")


class ApiClientError(Exception):
    """The server said no (``status`` is the HTTP status; 0 when it could not be reached)."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


class JobClient:
    """Calls one videogen service.

    Args:
        server: its base URL (default ``$VIDEOGEN_SERVER``, else http://127.0.0.1:8000).
        token: a bearer token (default ``$VIDEOGEN_TOKEN``).
        timeout: seconds per HTTP call.
    """

    def __init__(self, server: str | None = None, token: str | None = None, timeout: float = 30.0):
        self.server = (server or os.environ.get("VIDEOGEN_SERVER") or "http://127.0.0.1:8000").rstrip("/")
        self.token = token or os.environ.get("VIDEOGEN_TOKEN")
        self.timeout = timeout

    def _open(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for k, v in (headers or {}).items():
            request.add_header(k, v)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", e.reason)
            except ValueError:
                message = e.reason
            raise ApiClientError(e.code, f"HTTP {e.code}: {message}") from None
        except urllib.error.URLError as e:
            raise ApiClientError(0, f"cannot reach {self.server}: {e.reason}") from None

    def _json(self, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> dict:
        with self._open(method, path, body, headers) as response:
            return json.loads(response.read())

    def submit(self, request: dict, priority: int = 0, webhook_url: str | None = None,
               idempotency_key: str | None = None) -> dict:
        """Queue a clip request (the engine's fields); returns the job."""
        body = dict(request, priority=priority)
        if webhook_url:
            body["webhook_url"] = webhook_url
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._json("POST", "/v1/jobs", body, headers)

    def status(self, job_id: str) -> dict:
        return self._json("GET", f"/v1/jobs/{urllib.parse.quote(job_id)}")

    def jobs(self, status: str | None = None, limit: int = 20, offset: int = 0) -> dict:
        query = {"limit": limit, "offset": offset} | ({"status": status} if status else {})
        return self._json("GET", f"/v1/jobs?{urllib.parse.urlencode(query)}")

    def cancel(self, job_id: str) -> dict:
        return self._json("POST", f"/v1/jobs/{urllib.parse.quote(job_id)}/cancel")

    def wait(self, job_id: str, poll: float = 0.5, on_update=None) -> dict:
        """Poll until the job ends; ``on_update(job)`` is called after each poll."""
        while True:
            job = self.status(job_id)
            if on_update is not None:
                on_update(job)
            if job["status"] in FINAL:
                return job
            time.sleep(poll)

    def fetch(self, job_id: str, output: str | os.PathLike) -> Path:
        """Download a finished job's MP4 to ``output`` (atomically)."""
        out = Path(output)
        with self._open("GET", f"/v1/jobs/{urllib.parse.quote(job_id)}/video") as response, atomic_path(out, ".mp4") as tmp:
            with open(tmp, "wb") as f:
                shutil.copyfileobj(response, f)
        return out
