"""Storyboard and batch jobs: the submitted document read with the CLI's own parsers, then run on
the runner's shared engine.

A storyboard job's document is a script as text (Fountain or a YAML shot list) with the storyboard
options; a batch job's is an ad spec as text with the files it names (a CSV feed, a logo, a font)
sent inline, base64-encoded, under the names the spec uses. The service reads no file a client did
not send: a spec path that names no inline file is refused, so a spec never reaches the server's own
files.

A document is written into a folder of its own (`write_document`) and read back with `load_script`
or `load_spec`, exactly as the CLI reads files, so a job checks at submit what the CLI checks before
Ray starts, and its errors name the document's line (``script.fountain:3: ...``).

`DocumentRun` runs one job in a thread of its own: the builder (`make_storyboard`, `run_batch`) gets a
`JobEngine`, which passes every clip to the shared engine at the job's priority, adds its clips'
progress up for the store, and cancels them all at once.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import yaml

from ..ads.batch import run_batch
from ..ads.spec import Batch, SpecError, load_spec, yaml_line
from ..errors import RequestError
from ..policy import PolicyError, PromptPolicy
from ..storyboard.build import load_script, make_storyboard, plan_shots
from ..storyboard.shots import Script, ScriptError, Shot

DOCUMENT_FIELD = {"storyboard": "script", "batch": "spec"}  # the body field that holds each kind's document
SPEC_NAME = "spec.yaml"
# Keys of an ad spec that name a file, relative to the spec.
SPEC_FILES = (("feed",), ("overlay", "font"), ("overlay", "logo", "path"), ("lora", "path"))
CLIPS_SHARE = 0.95  # of a job's progress; the rest is the sheet, animatic and manifest written after the clips


class DocumentError(RequestError):
    """A document that does not check: the message as the CLI prints it, with the job's folder left out.

    Attributes:
        field: the body field at fault (``script``, ``spec``, ``clip.steps``...).
        line: the document's line (0: the whole document), or None when the fault is not in its text.
        category: the prompt policy's category, when the policy refused a prompt.
    """

    def __init__(self, error: RequestError, folder: Path, kind: str, clip: dict):
        self.field = f"clip.{error.field}" if error.field in clip else DOCUMENT_FIELD[kind]
        self.value, self.reason = error.value, error.reason
        self.line = error.line if isinstance(error, (ScriptError, SpecError)) else None
        self.category = error.category if isinstance(error, PolicyError) else None
        ValueError.__init__(self, str(error).replace(f"{folder}{os.sep}", ""))


@dataclass
class Checked:
    """A document read and checked: what its builder runs.

    Attributes:
        title: one line for job lists.
        clips: how many clips it submits (a batch's shared prompts counted once).
        script, shots, requests: a storyboard's, from `load_script` and `plan_shots`.
        batch: a batch's, from `load_spec`.
    """

    title: str
    clips: int
    script: Script | None = None
    shots: list[Shot] | None = None
    requests: list[dict] | None = None
    batch: Batch | None = None


def write_document(kind: str, document: dict, folder: Path) -> Path:
    """Write a document (and a spec's inline files) into ``folder``; returns the script's or spec's path."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "storyboard":
        path = folder / f"script.{document.get('format', 'fountain')}"
        path.write_text(document["script"], encoding="utf-8")
        return path
    path = folder / SPEC_NAME
    path.write_text(document["spec"], encoding="utf-8")
    for name, data in document.get("files", {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(base64.b64decode(data))
    return path


def _check_spec_paths(path: Path, text: str, files: dict) -> None:
    """Refuse a spec path that names no inline file, before `load_spec` opens it."""
    try:
        data, root = yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError:
        return  # load_spec reports it, with its line
    for loc in SPEC_FILES:
        value = data
        for key in loc:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and PurePosixPath(value).as_posix() not in files:
            raise SpecError(path, yaml_line(root, loc), ".".join(loc), value,
                            f"names no file sent with the job; the service reads no file of its own "
                            f"(send it in files, under this name; sent: {', '.join(sorted(files)) or 'none'})")


def check_document(kind: str, document: dict, folder: Path, policy: PromptPolicy | None = None) -> Checked:
    """Write a document into ``folder`` and read it back as the CLI would.

    Args:
        kind: ``storyboard`` or ``batch``.
        document: the submitted fields (see `app.StoryboardBody` and `app.BatchBody`).
        folder: where the document is written; relative paths in a spec resolve inside it.
        policy: the service's prompt policy, checked on every clip's prompt beside the CLI's.
    Raises:
        DocumentError: the first problem; its message names the document's line where it has one.
    """
    clip = document.get("clip", {})
    try:
        path = write_document(kind, document, folder)
        if kind == "storyboard":
            script = load_script(path, document.get("timing"))
            shots, requests = plan_shots(script, dict(clip), document.get("style"))
            for shot, request in zip(shots, requests):
                if policy is not None and (category := policy.category(request["prompt"])) is not None:
                    raise PolicyError("prompt", f"{request['prompt']} (shot {shot.id})", category)
            boards = ", boards only" if document.get("boards_only") else ""
            return Checked(f"{script.title or 'storyboard'}: {len(shots)} shots{boards}", len(shots),
                           script=script, shots=shots, requests=requests)
        _check_spec_paths(path, document["spec"], document.get("files", {}))
        batch = load_spec(path)
        for request in batch.unique_requests().values() if policy is not None else ():
            policy.check(request)
        clips = len(batch.unique_requests())
        return Checked(f"{batch.spec.name}: {len(batch.variants)} variants, {clips} clips", clips, batch=batch)
    except RequestError as e:
        raise DocumentError(e, folder, kind, clip) from None


def check_submitted(kind: str, document: dict, policy: PromptPolicy) -> Checked:
    """`check_document` in a scratch folder that is gone when it returns: a refused document leaves nothing."""
    with tempfile.TemporaryDirectory(prefix="videogen-document-") as scratch:
        return check_document(kind, document, Path(scratch), policy)


class JobEngine:
    """The shared engine as one storyboard's or batch's builder sees it.

    Every clip goes to the shared engine at the job's priority; the clips' progress is added up
    into the job's (one share per clip, of ``expected`` clips when known); `cancel` stops every clip
    and refuses new ones.

    Args:
        engine: the runner's `videogen.Engine`.
        priority: the job's priority, given to each of its clips.
        stage: the stage name progress is reported under (``shots``, ``clips``).
        on_progress: ``(stage, fraction)``, called with the job's progress as it rises.
        expected: how many clips the job will submit, if known.
    """

    def __init__(self, engine, priority: int, stage: str, on_progress: Callable[[str, float], None],
                 expected: int | None = None):
        self.engine = engine
        self.workers = engine.workers
        self.priority = priority
        self.stage = stage
        self.expected = expected
        self.canceled = False
        self._on_progress = on_progress
        self._clips = []
        self._fractions: dict[str, float] = {}  # clip id -> fraction done
        self._reported = 0.0
        # Taken inside the engine's lock (progress comes from its dispatch thread) and never held
        # while calling into the engine.
        self._lock = threading.Lock()

    def submit(self, request, output=None, priority: int = 0, on_progress=None, keyframes_only: bool = False):
        """`Engine.submit` at the job's priority (``priority`` is ignored); raises `JobCanceled` once canceled."""
        from ..driver import JobCanceled  # here, so the API alone never imports Ray

        with self._lock:
            if self.canceled:
                raise JobCanceled("the job was canceled")

        def progress(p):
            if on_progress is not None:
                on_progress(p)
            if p.stage != "preview":
                self._update(p.job_id, p.fraction)

        clip = self.engine.submit(request, output, priority=self.priority, on_progress=progress, keyframes_only=keyframes_only)
        with self._lock:
            self._clips.append(clip)
            canceled = self.canceled
        if canceled:  # canceled while the engine was taking it
            clip.cancel()
        clip.future.add_done_callback(lambda _f, clip_id=clip.id: self._update(clip_id, 1.0))
        return clip

    def as_completed(self, jobs):
        """`Engine.as_completed`; once the last clip is in, the job's stage becomes ``writing``."""
        yield from self.engine.as_completed(jobs)
        with self._lock:
            self.stage = "writing"
            self._reported = max(self._reported, CLIPS_SHARE)
            self._on_progress(self.stage, self._reported)

    def cancel(self) -> None:
        with self._lock:
            self.canceled = True
            clips = list(self._clips)
        for clip in clips:
            clip.cancel()

    @property
    def actor_seconds(self) -> float:
        with self._lock:
            return sum(c.actor_seconds for c in self._clips)

    @property
    def cached_tasks(self) -> int:
        with self._lock:
            return sum(c.cached_tasks for c in self._clips)

    def _update(self, clip_id: str, fraction: float) -> None:
        with self._lock:
            self._fractions[clip_id] = max(fraction, self._fractions.get(clip_id, 0.0))
            share = sum(self._fractions.values()) / max(self.expected or 0, len(self._fractions))
            value = round(CLIPS_SHARE * share, 4)
            if value > self._reported and self.stage != "writing":
                self._reported = value  # reported under the lock, so the store never sees it go back
                self._on_progress(self.stage, value)


@dataclass
class DocumentResult:
    """A finished storyboard or batch: its folder, the image to preview, and what it cost."""

    folder: Path
    preview: Path | None
    actor_seconds: float
    cached_tasks: int


class DocumentRun:
    """One storyboard or batch job, run by `run` in a thread of the runner's.

    The storyboard builder stages its folder beside ``out`` and renames it into place. A batch is
    built in ``.<id>.partial`` beside ``out`` and renamed into place when every variant is written;
    that folder outlives a stopped service, so a restarted job skips the variants already written
    (and the engine's task cache gives back the clips already made).

    Args:
        job: the store's record (``kind``, ``request`` (the document), ``priority``).
        engine: the runner's shared engine.
        inputs: the folder the document is written into.
        out: the job's output folder, ``data_dir/outputs/<id>``.
        on_progress: ``(stage, fraction)``.
    """

    def __init__(self, job, engine, inputs: Path, out: Path, on_progress: Callable[[str, float], None]):
        self.job = job
        self.inputs = inputs
        self.out = out
        self.partial = out.parent / f".{out.name}.partial"
        self.engine = JobEngine(engine, job.priority, "shots" if job.kind == "storyboard" else "clips", on_progress)

    @property
    def canceled(self) -> bool:
        return self.engine.canceled

    def cancel(self) -> None:
        self.engine.cancel()

    def run(self) -> DocumentResult:
        """Build the job's folder; raises the builder's error (`JobCanceled` when canceled)."""
        # 1. The document, read back as at submit.
        shutil.rmtree(self.inputs, ignore_errors=True)
        checked = check_document(self.job.kind, self.job.request, self.inputs)
        # 2. The builder, on the shared engine.
        if self.job.kind == "storyboard":
            self.engine.expected = checked.clips
            for stale in self.out.parent.glob(f".{self.out.name}.partial-*"):  # left by a stopped service
                shutil.rmtree(stale, ignore_errors=True)
            make_storyboard(checked.script, checked.shots, checked.requests, self.out, self.engine,
                            bool(self.job.request.get("boards_only")))
            preview = self.out / "boards.png"
        else:
            # Variants an earlier run finished are skipped, so progress counts the clips submitted.
            if self.out.is_dir() and not self.partial.exists():  # renamed into place, but the job not recorded
                os.replace(self.out, self.partial)
            run_batch(checked.batch, self.partial, self.engine)
            shutil.rmtree(self.out, ignore_errors=True)
            os.replace(self.partial, self.out)
            preview = self.out / "contact_sheet.png"
        return DocumentResult(self.out, preview if preview.exists() else None, self.engine.actor_seconds,
                              self.engine.cached_tasks)

    def discard(self) -> None:
        """After a cancel or a failure: remove what the job half made (the job cannot run again)."""
        shutil.rmtree(self.partial, ignore_errors=True)
        shutil.rmtree(self.inputs, ignore_errors=True)
