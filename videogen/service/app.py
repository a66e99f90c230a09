"""The job API: a FastAPI app over the job store and the runner.

Endpoints (JSON; every one under /v1 needs ``Authorization: Bearer TOKEN``)::

    POST /v1/jobs                 a clip, storyboard or batch job -> 202 {id, status}; Idempotency-Key header honoured
    GET  /v1/jobs                 the caller's jobs, newest first (?status=&limit=&offset=)
    GET  /v1/jobs/{id}            kind, status, progress, stage, queue position, times, actor-seconds, error
    GET  /v1/jobs/{id}/video      the MP4, or a storyboard's animatic (HTTP Range supported)
    GET  /v1/jobs/{id}/preview    a clip's keyframes as one PNG strip; a storyboard's boards; a batch's contact sheet
    GET  /v1/jobs/{id}/files      the files a finished job made: [{path, bytes, url}]
    GET  /v1/jobs/{id}/files/{p}  one of them
    POST /v1/jobs/{id}/cancel     stop the job
    GET  /healthz                 liveness, no token
    GET  /                        the web page (it asks for a token)

A job body's ``kind`` says what it is: ``clip`` (the default: the clip request's fields),
``storyboard`` (``script``: a Fountain screenplay or YAML shot list as text, with ``format``,
``style``, ``boards_only``, ``timing`` and the shots' shared ``clip`` fields) or ``batch``
(``spec``: an ad spec as text, and ``files``: the feed, logo or font it names, base64, under the
names it uses; the service opens no path of its own, so a spec path not sent is refused). A
document is checked at submit with the CLI's own parsers: one that does not read gets 400 naming
its line, and no job.

`deploy.py` serves this app with Ray Serve. A job another client owns answers 404, as if it did not
exist. Errors are ``{"error": message}``, plus ``field`` when one request field is at fault.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal, Union

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from ..errors import RequestError
from ..policy import PromptPolicy
from ..presets import resolve_model
from ..request import ClipRequest, resolve
from ..storyboard.shots import Timing
from .documents import SPEC_NAME, DocumentError, check_submitted
from .queue import queue_order
from .runner import Runner, RunnerConfig
from .store import KINDS, STATUSES, JobRecord, JobStore

WEB_PAGE = Path(__file__).parent / "web" / "index.html"
QUEUEING = {"kind", "priority", "webhook_url"}  # body fields that say how to run a job, not what it makes
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")  # relative, no '..', nothing hidden


class Queueing(BaseModel):
    """How to queue a job, whatever its kind."""

    priority: int = Field(default=0, ge=-100, le=100, description="higher runs first")
    webhook_url: str | None = Field(default=None, max_length=2048, description="POSTed the job's final state")

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v


class JobBody(ClipRequest, Queueing):
    """A clip job: the clip request (the CLI's flags as fields) plus how to queue it."""

    kind: Literal["clip"] = "clip"

    @field_validator("prompt", "negative")
    @classmethod
    def _short_text(cls, v: str) -> str:
        if len(v) > 2000:
            raise ValueError(f"is {len(v)} characters long; the limit is 2000")
        return v


class StoryboardBody(Queueing):
    """A storyboard job: ``videogen storyboard``'s script and options as fields."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["storyboard"]
    script: str = Field(min_length=1, description="a Fountain screenplay or a YAML shot list, as text")
    format: Literal["fountain", "yaml"] = Field(default="fountain", description="what the script is written in")
    style: str | None = Field(default=None, max_length=2000, description="prefixed to every prompt (default: the script's Style)")
    boards_only: bool = Field(default=False, description="keyframes only: boards, sheet and a held-boards animatic")
    timing: Timing | None = Field(default=None, description="shot lengths: words_per_second, min_seconds, max_seconds, max_action_words")
    clip: dict = Field(default={}, description="clip request fields every shot shares (model, width, steps, seed...); lengths come from the script")


class BatchBody(Queueing):
    """A batch job: ``videogen batch``'s spec, with the files it names sent inline."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["batch"]
    spec: str = Field(min_length=1, description="the ad batch spec (YAML), as text")
    files: dict[str, str] = Field(default={}, description="the files the spec names (feed, logo, font): relative name -> base64 content")

    @field_validator("files")
    @classmethod
    def _names_and_base64(cls, files: dict[str, str]) -> dict[str, str]:
        for name, data in files.items():
            if name == SPEC_NAME:
                raise ValueError(f"{name!r} is the spec's own name")
            if not FILE_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a relative file name (letters, digits, '.', '_', '-', '/'; no '..', nothing hidden)")
            try:
                base64.b64decode(data, validate=True)
            except binascii.Error:
                raise ValueError(f"{name!r} is not base64") from None
        return files


def _kind(body) -> str:
    return body.get("kind", "clip") if isinstance(body, dict) else getattr(body, "kind", "clip")


AnyJobBody = Annotated[
    Union[Annotated[JobBody, Tag("clip")], Annotated[StoryboardBody, Tag("storyboard")], Annotated[BatchBody, Tag("batch")]],
    Discriminator(_kind, custom_error_type="kind", custom_error_message=f"must be one of {', '.join(KINDS)}"),
]


@dataclass
class ServiceConfig:
    """Everything the service is started with.

    Args:
        data_dir: the job database's default home; videos, previews and the task cache go here.
        tokens_file: lines of ``TOKEN [CLIENT]``; a token without a name is its own client.
        db: the SQLite file (default ``data_dir/jobs.db``).
        blocklist: the prompt policy file (default: ``$VIDEOGEN_BLOCKLIST`` or the built-in one).
        max_body: largest request body, bytes.
        max_queued: queued jobs beyond which submits get 429.
        retry_after: seconds a 429 asks the client to wait.
        runner: how jobs use the cluster (actors, slots, the per-client cap): a `RunnerConfig`.
        start_runner: False accepts jobs but runs none (no engine, no Ray): for checking the API alone.
    """

    data_dir: Path
    tokens_file: Path
    db: Path | None = None
    blocklist: Path | None = None
    max_body: int = 64 * 1024
    max_queued: int = 1000
    retry_after: int = 10
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    start_runner: bool = True


def read_tokens(path: str | os.PathLike) -> dict[str, str]:
    """Token -> client name from a tokens file (blank lines and ``#`` comments skipped).

    Raises:
        ValueError: naming the file when it holds no token.
    """
    tokens = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split("#", 1)[0].split()
        if parts:
            tokens[parts[0]] = parts[1] if len(parts) > 1 else parts[0]
    if not tokens:
        raise ValueError(f"tokens file {path}: holds no token")
    return tokens


class Service:
    """The store, the runner, the tokens and the policy that the app serves.

    Args:
        config: a `ServiceConfig`.
    """

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.tokens = read_tokens(config.tokens_file)
        self.policy = PromptPolicy.load(config.blocklist)
        self.store = JobStore(config.db or Path(config.data_dir) / "jobs.db")
        self.runner = Runner(self.store, Path(config.data_dir), config.runner)
        if config.start_runner:
            self.runner.start()

    def client(self, token: str | None) -> str | None:
        """The client a token belongs to, or None; compares in constant time."""
        if not token:
            return None
        found = None
        for known, name in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = name
        return found

    def stop(self) -> None:
        if self.config.start_runner:
            self.runner.stop()
        self.store.close()


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def job_view(job: JobRecord, queue_position: int | None) -> dict:
    """A job as the API shows it."""
    done = job.status == "succeeded"
    return dict(
        id=job.id,
        kind=job.kind,
        title=job.title or job.request.get("prompt"),
        status=job.status,
        stage=job.stage,
        progress=round(job.progress, 4),
        queue_position=queue_position,
        priority=job.priority,
        created_at=_iso(job.created),
        started_at=_iso(job.started),
        finished_at=_iso(job.finished),
        actor_seconds=round(job.actor_seconds, 3),
        cached_tasks=job.cached_tasks,
        error=job.error,
        request=job.request,
        video_url=f"/v1/jobs/{job.id}/video" if done and job.kind != "batch" else None,
        preview_url=f"/v1/jobs/{job.id}/preview" if job.preview else None,
        files_url=f"/v1/jobs/{job.id}/files" if done else None,
    )


def output_files(job: JobRecord) -> dict[str, Path]:
    """A finished job's files by their path under its output (hidden records and caches left out)."""
    root = Path(job.output)
    if root.is_file():
        return {root.name: root}
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def error(status: int, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None, **extra):
        self.response = error(status, message, headers, **extra)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before it is parsed.

    The body is read here (it is small by definition) and replayed to the app, so a body sent
    without a Content-Length is held to the same limit.
    """

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        too_big = error(413, f"request body exceeds {self.limit} bytes")
        if length.isdigit() and int(length) > self.limit:
            return await too_big(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                return await too_big(scope, receive, send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def create_app(service: Service) -> FastAPI:
    """The FastAPI app for one `Service` (Ray Serve's ingress, or any ASGI server)."""
    app = FastAPI(title="videogen job API", version="1", description="Submit clip, storyboard and batch jobs, follow them, fetch what they made.")
    store, runner, config = service.store, service.runner, service.config

    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return exc.response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            return error(400, f"malformed JSON: {err.get('ctx', {}).get('error', err['msg'])}")
        if err["type"] == "kind":
            return error(422, f"kind={_kind(err['input'])!r}: {err['msg']}", field="kind")
        where = err["loc"]
        if where[:1] == ("body",) and len(where) > 1 and where[1] in KINDS:  # the tag of the body's kind
            where = where[:1] + where[2:]
        loc = [str(p) for p in where if p not in ("body", "query", "header", "path")]
        name = ".".join(loc) or "body"
        reason = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        value = err.get("input") if loc else None
        return error(422, f"{name}={value!r}: {reason}" if loc else f"{name}: {reason}", field=name)

    def client(request: Request, access_token: str | None = Query(None, description="for <video src>; prefer the header")) -> str:
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else access_token
        name = service.client(token)
        if name is None:
            raise ApiError(401, "missing or unknown bearer token", headers={"WWW-Authenticate": "Bearer"})
        return name

    def own_job(job_id: str, who: str = Depends(client)) -> JobRecord:
        job = store.get(job_id)
        if job is None or job.client != who:
            raise ApiError(404, f"job {job_id} not found")
        return job

    def positions() -> dict[str, int]:
        order = queue_order(store.with_status("queued"), store.with_status("running"))
        return {job.id: i + 1 for i, job in enumerate(order)}

    @app.get("/healthz", include_in_schema=False)
    def healthz():
        return {"status": "ok", "queued": store.count("queued"), "running": store.count("running")}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return HTMLResponse(WEB_PAGE.read_text())

    @app.post("/v1/jobs", status_code=202)
    def submit(body: AnyJobBody, who: str = Depends(client),
               idempotency_key: str | None = Header(None, max_length=200)):
        if idempotency_key is not None and (existing := store.by_key(who, idempotency_key)) is not None:
            return JSONResponse(job_view(existing, positions().get(existing.id)), status_code=202)
        title = None
        try:
            if body.kind == "clip":
                request = body.model_dump(exclude_none=True, exclude=QUEUEING)
                service.policy.check(request)
                resolve(ClipRequest.parse(request), resolve_model(body.model))  # the engine's own limits, before queueing
            else:
                request = body.model_dump(mode="json", exclude_unset=True, exclude=QUEUEING)  # the document as sent
                title = check_submitted(body.kind, request, service.policy).title
        except RequestError as e:
            extra = {"category": e.category} if getattr(e, "category", None) else {}
            status = 400 if isinstance(e, DocumentError) and e.line is not None else 422  # a document that does not read
            raise ApiError(status, str(e), field=e.field, **extra) from None
        if store.count("queued") >= config.max_queued:
            raise ApiError(429, f"the queue is full ({config.max_queued} jobs)", headers={"Retry-After": str(config.retry_after)})
        job, _ = store.add(who, request, body.priority, body.webhook_url, idempotency_key, kind=body.kind, title=title)
        runner.wake()
        return JSONResponse(job_view(job, positions().get(job.id)), status_code=202)

    @app.get("/v1/jobs")
    def list_jobs(who: str = Depends(client), status: Literal[STATUSES] | None = None,
                  limit: int = Query(20, ge=1, le=100), offset: int = Query(0, ge=0)):
        jobs = store.list(who, status, limit, offset)
        where = positions()
        return {
            "jobs": [job_view(j, where.get(j.id)) for j in jobs],
            "limit": limit,
            "offset": offset,
            "next_offset": offset + limit if len(jobs) == limit else None,
        }

    @app.get("/v1/jobs/{job_id}")
    def get_job(job: JobRecord = Depends(own_job)):
        return job_view(job, positions().get(job.id))

    @app.post("/v1/jobs/{job_id}/cancel")
    def cancel(job: JobRecord = Depends(own_job)):
        if not store.cancel(job.id):
            raise ApiError(409, f"job {job.id} already {job.status}")
        runner.cancel(job.id)
        return job_view(store.get(job.id), None)

    def finished(job: JobRecord, what: str) -> None:
        if job.status != "succeeded":
            raise ApiError(409, f"job {job.id} is {job.status}; its {what} exist once it has succeeded")

    @app.get("/v1/jobs/{job_id}/video", response_class=FileResponse)
    def video(job: JobRecord = Depends(own_job)):
        finished(job, "video and files")
        if job.kind == "batch":
            raise ApiError(409, f"job {job.id} is a batch of many MP4s; list them at /v1/jobs/{job.id}/files")
        path = Path(job.output) / "animatic.mp4" if job.kind == "storyboard" else job.output
        return FileResponse(path, media_type="video/mp4", filename=f"{job.id}.mp4", content_disposition_type="inline")

    @app.get("/v1/jobs/{job_id}/preview", response_class=FileResponse)
    def preview(job: JobRecord = Depends(own_job)):
        if not job.preview:
            raise ApiError(409, f"job {job.id} has no preview yet (stage: {job.stage}); one-window clips have none")
        return FileResponse(job.preview, media_type="image/png")

    @app.get("/v1/jobs/{job_id}/files")
    def files(job: JobRecord = Depends(own_job)):
        finished(job, "files")
        return {"files": [{"path": name, "bytes": path.stat().st_size, "url": f"/v1/jobs/{job.id}/files/{name}"}
                          for name, path in output_files(job).items()]}

    @app.get("/v1/jobs/{job_id}/files/{path:path}", response_class=FileResponse)
    def one_file(path: str, job: JobRecord = Depends(own_job)):
        finished(job, "files")
        # Only names the listing holds are served: '..', absolute paths and hidden files never match one.
        found = output_files(job).get(path)
        if found is None:
            raise ApiError(404, f"job {job.id} has no file {path!r}; GET /v1/jobs/{job.id}/files lists them")
        return FileResponse(found, filename=found.name, content_disposition_type="inline")

    app.add_middleware(BodyLimit, limit=config.max_body)
    return app
