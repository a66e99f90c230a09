"""Feeds queued jobs from the store into one shared `videogen.Engine` and records how they go.

A background thread starts jobs in `queue.next_jobs` order whenever a slot is free. The engine
gets a few more jobs than it has actors (``slots``), so one clip's encode or preview never leaves
an actor idle. Progress, the keyframe preview and the end of each job are written to the store
as they happen; a webhook, when given, is called when the job ends.

A storyboard or batch job takes one slot: its builder runs in a thread of its own
(`documents.DocumentRun`) and sends all its clips to the same engine, so they share the actor pool
with every other job. Its folder appears whole at ``data_dir/outputs/<id>``.

The engine's task cache lives under the data folder: a job that was running when the service
stopped is queued again at start-up and resumes with its finished tasks read back, so its output
equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..encode import atomic_path
from .documents import DocumentRun
from .queue import next_jobs
from .store import JobRecord, JobStore

WEBHOOK_TRIES = 4
WEBHOOK_TIMEOUT = 5.0  # seconds per try


@dataclass
class RunnerConfig:
    """How the runner uses the cluster.

    Args:
        workers: denoiser actors in the shared pool.
        slots: jobs in the engine at once (default: twice the actors).
        per_client: the most jobs one client may have running.
        address: a Ray cluster to join (None: the one this process is in, else a local one).
        gpu_fraction: share of a GPU per actor.
        threads: torch CPU threads per actor, each reserving as many Ray CPUs (None: 1).
        webhook_backoff: seconds before the first webhook retry; doubles each retry.
    """

    workers: int = 1
    slots: int | None = None
    per_client: int = 4
    address: str | None = None
    gpu_fraction: float = 1.0
    threads: int | None = None
    webhook_backoff: float = 1.0


def preview_strip(images: np.ndarray) -> Image.Image:
    """Keyframe images (K, H, W, 3) uint8 side by side as one (H, K*W) RGB image."""
    k, h, w, _ = images.shape
    return Image.fromarray(np.ascontiguousarray(images.transpose(1, 0, 2, 3).reshape(h, k * w, 3)))


class Runner:
    """Runs the store's jobs on an engine.

    Args:
        store: the job store.
        data_dir: videos, previews, storyboard and batch folders, and the task cache go under it.
        config: a `RunnerConfig`.
    """

    def __init__(self, store: JobStore, data_dir: Path, config: RunnerConfig):
        self.store = store
        self.config = config
        self.cache = Path(data_dir) / "cache"
        self.videos = Path(data_dir) / "videos"
        self.previews = Path(data_dir) / "previews"
        self.outputs = Path(data_dir) / "outputs"  # a storyboard's or batch's folder, by job id
        self.inputs = Path(data_dir) / "inputs"  # its document, written out to be read as the CLI reads files
        for folder in (self.videos, self.previews, self.outputs, self.inputs):
            folder.mkdir(parents=True, exist_ok=True)
        self.slots = config.slots or 2 * config.workers
        self.engine = None
        self._active: dict[str, object] = {}  # store job id -> ClipJob or DocumentRun
        self._documents: list[threading.Thread] = []  # their builders' threads, joined by `stop`
        self._lock = threading.Condition()
        self._stopped = False
        self._woken = False
        self._webhooks = ThreadPoolExecutor(max_workers=4, thread_name_prefix="videogen-webhook")
        self._thread = threading.Thread(target=self._loop, name="videogen-runner", daemon=True)

    def start(self) -> "Runner":
        """Start the engine and the feeding thread; jobs left running by a stopped service are queued again."""
        from ..driver import Engine

        self.store.requeue_running()
        self.engine = Engine(workers=self.config.workers, address=self.config.address,
                             gpu_fraction=self.config.gpu_fraction, cpus_per_worker=float(self.config.threads or 1),
                             cache_dir=self.cache)
        self._thread.start()
        return self

    def wake(self) -> None:
        """A job was queued or canceled: look at the queue now."""
        with self._lock:
            self._woken = True
            self._lock.notify_all()

    def cancel(self, job_id: str) -> None:
        """Stop a job the store already says is canceled: in the engine if it runs there, else call its webhook now."""
        with self._lock:
            clip = self._active.get(job_id)
        if clip is not None:
            clip.cancel()  # the engine fails the clip (or a document's clips) with JobCanceled; `_end` calls the webhook
        else:
            self._notify(job_id)
        self.wake()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        if self.engine is not None:
            self.engine.shutdown()
        # A document's builder fails fast once the engine is gone, or finishes what it was writing;
        # either way it is done before the store closes, so a job that ended is recorded as ended.
        for thread in self._documents:
            thread.join()
        self._webhooks.shutdown(wait=True)

    # ---------------------------------------------------------------- the loop

    def _loop(self) -> None:
        # The runner's lock is never held while calling into the engine: the engine calls back
        # into the runner (progress, completion) while holding its own lock.
        while True:
            with self._lock:
                if self._stopped:
                    return
                free = self.slots - len(self._active)
                self._woken = False
            if free > 0:
                running = self.store.with_status("running")
                for job in next_jobs(self.store.with_status("queued"), running, free, self.config.per_client):
                    self._start(job)
            with self._lock:
                if not self._woken and not self._stopped:
                    self._lock.wait(timeout=0.5)

    def _start(self, job: JobRecord) -> None:
        if not self.store.start(job.id):
            return
        if job.kind != "clip":
            self._start_document(job)
            return
        output = self.videos / f"{job.id}.mp4"
        submitted = []  # the engine's job, once submit returns; the preview may come after the clip ends

        def on_progress(p, job_id=job.id):
            if p.stage == "preview":
                if submitted:
                    self._save_preview(job_id, submitted[0])
            else:
                self.store.progress(job_id, p.stage, p.fraction)

        try:
            clip = self.engine.submit(job.request, output=output, priority=job.priority, on_progress=on_progress)
        except Exception as e:  # checked at the API, but presets on disk may have changed since
            self._end(job.id, "failed", error=str(e))
            return
        submitted.append(clip)
        with self._lock:
            self._active[job.id] = clip
        clip.future.add_done_callback(lambda _f, job_id=job.id: self._done(job_id))

    def _start_document(self, job: JobRecord) -> None:
        run = DocumentRun(job, self.engine, self.inputs / job.id, self.outputs / job.id,
                          on_progress=lambda stage, fraction: self.store.progress(job.id, stage, fraction))
        with self._lock:
            self._active[job.id] = run
        thread = threading.Thread(target=self._run_document, args=(job.id, run), name=f"videogen-{job.kind}", daemon=True)
        self._documents = [t for t in self._documents if t.is_alive()] + [thread]
        thread.start()

    def _run_document(self, job_id: str, run: DocumentRun) -> None:
        try:
            result = run.run()
        except Exception as e:
            with self._lock:
                if self._stopped:  # shutting down: the job stays running in the store and resumes at restart
                    return
            run.discard()
            if run.canceled:
                self._end(job_id, "canceled", actor_seconds=run.engine.actor_seconds)
            else:
                self._end(job_id, "failed", actor_seconds=run.engine.actor_seconds, error=f"{type(e).__name__}: {e}")
            return
        if result.preview is not None:
            self.store.set_preview(job_id, str(result.preview))
        self._end(job_id, "succeeded", actor_seconds=result.actor_seconds, cached_tasks=result.cached_tasks,
                  output=str(result.folder))

    def _save_preview(self, job_id: str, clip) -> None:
        if clip.preview is None:
            return
        path = self.previews / f"{job_id}.png"
        with atomic_path(path, ".png") as tmp:
            preview_strip(clip.preview).save(tmp, format="PNG")
        self.store.set_preview(job_id, str(path))

    def _done(self, job_id: str) -> None:
        with self._lock:
            if self._stopped:  # shutting down: the job stays running in the store and resumes at restart
                return
            clip = self._active.get(job_id)
        error = clip.future.exception()
        if error is None:
            result = clip.future.result()
            if self.store.get(job_id).preview is None:
                self._save_preview(job_id, clip)
            self._end(job_id, "succeeded", actor_seconds=result.actor_seconds, cached_tasks=result.cached_tasks,
                      output=str(result.path))
        elif clip.canceled:
            self._end(job_id, "canceled", actor_seconds=clip.actor_seconds)
        else:
            self._end(job_id, "failed", actor_seconds=clip.actor_seconds, error=f"{type(error).__name__}: {error}")

    def _end(self, job_id: str, status: str, **fields) -> None:
        if status == "canceled":
            self.store.cancel(job_id)
        else:
            self.store.finish(job_id, status, **fields)
        with self._lock:
            self._active.pop(job_id, None)
            self._woken = True
            self._lock.notify_all()
        self._notify(job_id)

    def _notify(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job.webhook_url:
            self._webhooks.submit(self._call_webhook, job)

    def _call_webhook(self, job: JobRecord) -> None:
        """POST the job's final state; retry on failure with doubling waits, at most `WEBHOOK_TRIES` times."""
        from .app import job_view

        body = json.dumps(job_view(job, queue_position=None)).encode()
        wait = self.config.webhook_backoff
        for attempt in range(WEBHOOK_TRIES):
            request = urllib.request.Request(job.webhook_url, data=body, method="POST",
                                             headers={"Content-Type": "application/json", "X-Videogen-Job": job.id})
            try:
                with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
                    if response.status < 300:
                        return
            except OSError:
                pass
            if attempt + 1 < WEBHOOK_TRIES:
                time.sleep(wait)
                wait *= 2
