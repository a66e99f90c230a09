"""A small client for the job API (the stdlib's urllib; what the CLI's job commands use)."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from ..encode import atomic_path
from ..errors import RequestError

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
        """Queue a job; returns it.

        Args:
            request: a clip request (the engine's fields), or a storyboard's or batch's document
                with its ``kind`` (see `app.StoryboardBody` and `app.BatchBody`).
        """
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

    def files(self, job_id: str) -> list[dict]:
        """A finished job's files: ``[{path, bytes, url}]``."""
        return self._json("GET", f"/v1/jobs/{urllib.parse.quote(job_id)}/files")["files"]

    def fetch_files(self, job_id: str, output: str | os.PathLike) -> Path:
        """Download every file of a finished storyboard or batch into the folder ``output``.

        The folder is filled under a hidden name beside it and renamed into place at the end, so
        an interrupted download never leaves a folder that looks complete.

        Raises:
            RequestError: ``output`` exists and is not an empty folder.
        """
        out = Path(output)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise RequestError("output", str(out), "exists and is not an empty folder; give a new one")
        staging = out.absolute().parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir()
            for entry in self.files(job_id):
                name = PurePosixPath(entry["path"])
                if name.is_absolute() or ".." in name.parts:  # never write outside the folder, whatever a server says
                    raise ApiClientError(0, f"the server named a file outside the job's folder: {entry['path']!r}")
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with self._open("GET", urllib.parse.quote(entry["url"])) as response, open(target, "wb") as f:
                    shutil.copyfileobj(response, f)
            if out.exists():
                out.rmdir()
            os.replace(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return out
