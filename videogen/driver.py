"""The engine: runs many clips' plans on one shared pool of denoiser actors.

`Engine` is the Python API behind the CLI, the job service, storyboards and ad batches::

    from videogen import Engine

    with Engine(workers=2) as engine:
        jobs = [engine.submit({"prompt": p, "seed": 1}, output=f"{i}.mp4") for i, p in enumerate(prompts)]
        for job in engine.as_completed(jobs):
            print(job.result().path)

For each clip, in order:
1. ``submit`` validates the request (`RequestError` on bad input) and plans it (`plan.make_plan`).
2. Keyframe tasks run first; each window task becomes ready as soon as the keyframes inside it
   exist, so windows of one clip (and of many clips) run in parallel on every free actor.
3. When a clip's keyframes are done, a preview task decodes them to images (``job.preview``), so
   boards and previews appear long before the clip.
4. When all windows are done, one decode task blends them in latent space and decodes to frames.
5. The frames are encoded to MP4 beside the driver (in a thread, so scheduling goes on).

With a ``cache_dir``, every task's result is stored under a key made from what it depends on
(`cache.py`); a task whose result is already there is read back instead of run.

A dispatch thread hands ready tasks to idle actors: higher ``priority`` first, then first submitted,
then keyframes before windows before decodes. Noise is keyed by position, so which actor runs what,
and in which order tasks finish, never changes the frames. A task whose actor dies is run again on a
fresh actor.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from . import __version__
from .actors import make_actor
from .cache import cache_path, load_payload, task_key
from .encode import check_output_path, write_mp4
from .plan import KeyframeTask, Plan, WindowTask, make_plan
from .presets import resolve_model
from .request import ClipRequest, ClipSpec, resolve

STAGES = ("keyframes", "windows", "decode", "encode")


class JobCanceled(Exception):
    """The clip was canceled before it finished."""


@dataclass(frozen=True)
class Progress:
    """Where a clip is: ``done`` of ``total`` steps (tasks, then encoding), in ``stage``."""

    job_id: str
    stage: str
    done: int
    total: int

    @property
    def fraction(self) -> float:
        return self.done / self.total


@dataclass
class ClipResult:
    """A finished clip.

    ``frames`` is uint8 (F, H, W, 3); ``path`` is None when no output was asked for.
    ``stage_seconds`` is wall time per stage from submission; ``actor_seconds`` the actors' time.
    """

    job_id: str
    spec: ClipSpec
    frames: np.ndarray
    path: Path | None
    stage_seconds: dict
    actor_seconds: float
    windows: int
    keyframes: int
    cached_tasks: int = 0
    preview: np.ndarray | None = None  # keyframe images (K, H, W, 3), when the clip has keyframes

    def summary(self) -> dict:
        """The JSON the CLI prints with ``--json``."""
        return dict(
            output=str(self.path) if self.path else None,
            frames=int(self.frames.shape[0]),
            fps=self.spec.fps,
            width=self.spec.width,
            height=self.spec.height,
            seconds=self.stage_seconds,
            actor_seconds=round(self.actor_seconds, 3),
            windows=self.windows,
            keyframes=self.keyframes,
            cached_tasks=self.cached_tasks,
            seed=self.spec.seed,
            model=self.spec.model,
        )


@dataclass(eq=False)
class ClipJob:
    """A submitted clip: its plan, its progress, and a future for its `ClipResult`."""

    id: str
    spec: ClipSpec
    plan: Plan
    output: Path | None
    priority: int
    seq: int
    on_progress: Callable[[Progress], None] | None
    keyframes_only: bool = False
    future: Future = field(default_factory=Future)
    keys: dict = field(default_factory=dict)  # (kind, index) -> cache key
    preview: np.ndarray | None = None  # keyframe images (K, H, W, 3) once the preview task is done
    cached_tasks: int = 0
    keyframe_refs: dict = field(default_factory=dict)  # KeyframeTask index -> ObjectRef of {pos: latent}
    window_refs: dict = field(default_factory=dict)  # WindowTask index -> ObjectRef of latents
    stage: str = "queued"
    done: int = 0
    actor_seconds: float = 0.0
    submitted: float = field(default_factory=time.perf_counter)
    stage_seconds: dict = field(default_factory=dict)
    canceled: bool = False

    @property
    def total(self) -> int:
        previews = 1 if self.plan.keyframe_tasks else 0
        if self.keyframes_only:
            return len(self.plan.keyframe_tasks) + previews
        return self.plan.num_tasks + previews + 2  # + decode + encode

    def result(self, timeout: float | None = None) -> ClipResult:
        """Wait for the clip; raises its error, or `JobCanceled`."""
        return self.future.result(timeout)

    def cancel(self) -> None:
        """Stop the clip: its pending tasks never run; a running task's result is dropped."""
        self.canceled = True

    def progress(self) -> Progress:
        return Progress(self.id, self.stage, self.done, self.total)


@dataclass(order=True)
class _Task:
    sort_key: tuple
    job: ClipJob = field(compare=False)
    kind: str = field(compare=False)  # "keyframes" | "preview" | "window" | "decode"
    task: KeyframeTask | WindowTask | None = field(compare=False, default=None)


class Engine:
    """A pool of denoiser actors shared by every clip submitted to it.

    Args:
        workers: denoiser actors per model (the output does not depend on it).
        address: a Ray cluster to join; default ``$RAY_ADDRESS``, else a local Ray started here.
        gpu_fraction: share of a GPU each actor asks for when the cluster has GPUs.
        threads_per_worker: torch threads per actor (default: this machine's cores / workers).
        cpus_per_worker: Ray CPUs each actor reserves.
        cache_dir: where task results are cached by content (None: no cache). On a cluster, a
            folder every node can reach.
    """

    def __init__(
        self,
        workers: int = 1,
        address: str | None = None,
        gpu_fraction: float = 1.0,
        threads_per_worker: int | None = None,
        cpus_per_worker: float = 1.0,
        cache_dir: str | os.PathLike | None = None,
    ):
        if workers < 1:
            raise ValueError(f"workers={workers}: must be at least 1")
        if not 0 < gpu_fraction <= 1:
            raise ValueError(f"gpu_fraction={gpu_fraction}: must be in (0, 1]")
        self.workers = workers
        self.gpu_fraction = gpu_fraction
        self.cpus_per_worker = cpus_per_worker
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
        self.ray_start_seconds = 0.0
        self._owns_ray = False
        if not ray.is_initialized():
            start = time.perf_counter()
            address = address or os.environ.get("RAY_ADDRESS")
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=max(os.cpu_count() or 1, int(workers * cpus_per_worker + 0.999)), log_to_driver=False)
                self._owns_ray = True
            self.ray_start_seconds = time.perf_counter() - start
        self._pools: dict[str, list] = {}  # model source -> idle actors
        self._actors: dict[str, list] = {}  # model source -> all actors
        self._ready: list[_Task] = []
        self._inflight: dict = {}  # info ObjectRef -> (_Task, actor, payload ref)
        self._lock = threading.Condition()
        self._seq = itertools.count()
        self._encoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="videogen-encode")
        self._closed = False
        self._thread = threading.Thread(target=self._dispatch_loop, name="videogen-dispatch", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- public API

    def submit(
        self,
        request: ClipRequest | dict,
        output: str | os.PathLike | None = None,
        priority: int = 0,
        on_progress: Callable[[Progress], None] | None = None,
        keyframes_only: bool = False,
    ) -> ClipJob:
        """Validate, plan and queue one clip; returns at once.

        Args:
            request: a `ClipRequest` or a dict of its fields.
            output: where to write the MP4 (and its ``.json`` sidecar); None keeps frames in memory only.
            priority: higher runs first.
            on_progress: called from the dispatch thread with a `Progress` after every step.
            keyframes_only: run the keyframe stage alone (a one-window clip gets its first and
                last frame as keyframes); the result's ``frames`` are the keyframe images.
        Raises:
            RequestError: on bad input, before anything is queued or written.
        """
        model = resolve_model(request.model if isinstance(request, ClipRequest) else request.get("model", "tiny-random"))
        spec = resolve(request, model)
        if keyframes_only and output is not None:
            raise ValueError("a keyframes-only run writes no MP4: pass output=None")
        out = check_output_path(output) if output is not None else None
        plan = make_plan(spec.latent_frames, spec.latent_window, spec.latent_overlap, spec.latent_keyframe_every,
                         always_keyframes=keyframes_only)
        job = ClipJob(uuid.uuid4().hex[:12], spec, plan, out, priority, next(self._seq), on_progress, keyframes_only)
        job.keys = self._task_keys(spec, plan)
        with self._lock:
            if self._closed:
                raise RuntimeError("engine is shut down")
            self._ensure_pool(spec.model_source, model.gpu_dtype)
            job.stage = "keyframes" if plan.keyframe_tasks else "windows"
            for t in plan.keyframe_tasks:
                if not t.depends_on:
                    self._push(job, "keyframes", t)
            if not keyframes_only:
                for w in plan.windows:
                    if not w.depends_on:
                        self._push(job, "window", w)
            self._lock.notify_all()
        return job

    def generate(self, request: ClipRequest | dict, output=None, on_progress=None) -> ClipResult:
        """Submit one clip and wait for it."""
        return self.submit(request, output, on_progress=on_progress).result()

    def as_completed(self, jobs: Iterable[ClipJob]) -> Iterator[ClipJob]:
        """Yield jobs as they finish (successfully or not), in finishing order."""
        pending = {job.future: job for job in jobs}
        for future in as_completed(pending):
            yield pending[future]

    def actor_info(self) -> list[dict]:
        """Each actor's device, threads and peak memory."""
        actors = [a for pool in self._actors.values() for a in pool]
        return ray.get([a.info.remote() for a in actors])

    def shutdown(self) -> None:
        """Stop dispatching, cancel what is queued, and release the actors (and Ray, if started here)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join()
        self._encoder.shutdown(wait=True)
        for pool in self._actors.values():
            for actor in pool:
                ray.kill(actor)
        self._actors.clear()
        if self._owns_ray:
            ray.shutdown()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # ---------------------------------------------------------------- scheduling

    def _ensure_pool(self, source: str, gpu_dtype: str) -> None:
        if source not in self._actors:
            actors = [self._new_actor(source, gpu_dtype) for _ in range(self.workers)]
            self._actors[source] = actors
            self._pools[source] = list(actors)

    def _new_actor(self, source: str, gpu_dtype: str):
        return make_actor(source, gpu_dtype, self.threads, self.gpu_fraction, self.cpus_per_worker)

    @staticmethod
    def _task_keys(spec: ClipSpec, plan: Plan) -> dict:
        """Cache keys of every task of a plan, each from its inputs and its dependencies' keys."""
        keys = {}
        for t in plan.keyframe_tasks:
            deps = tuple(keys[("keyframes", d)] for d in t.depends_on)
            keys[("keyframes", t.index)] = task_key(spec, "keyframes", dict(positions=t.positions, known=t.known), deps)
        all_keyframes = tuple(keys[("keyframes", t.index)] for t in plan.keyframe_tasks)
        keys[("preview", 0)] = task_key(spec, "preview", {}, all_keyframes)
        for w in plan.windows:
            deps = tuple(keys[("keyframes", d)] for d in w.depends_on)
            keys[("window", w.index)] = task_key(spec, "window", dict(start=w.start, stop=w.stop, keyframes=w.keyframes), deps)
        keys[("decode", 0)] = task_key(spec, "decode", {}, tuple(keys[("window", w.index)] for w in plan.windows))
        return keys

    def _push(self, job: ClipJob, kind: str, task=None) -> None:
        order = {"keyframes": 0, "preview": 1, "window": 2, "decode": 3}[kind]
        index = task.index if task is not None else 0
        self._ready.append(_Task((-job.priority, job.seq, order, index), job, kind, task))
        self._ready.sort()

    def _cache_file(self, item: _Task) -> Path | None:
        if self.cache_dir is None:
            return None
        index = item.task.index if item.task is not None else 0
        return cache_path(self.cache_dir, item.job.keys[(item.kind, index)])

    def _launch(self, item: _Task, actor) -> None:
        job, spec = item.job, item.job.spec
        cache = str(self._cache_file(item)) if self.cache_dir is not None else None
        if item.kind == "keyframes":
            deps = [job.keyframe_refs[d] for d in item.task.depends_on]
            info, payload = actor.keyframes.options(num_returns=2).remote(spec, item.task, cache, *deps)
        elif item.kind == "window":
            deps = [job.keyframe_refs[d] for d in item.task.depends_on]
            info, payload = actor.window.options(num_returns=2).remote(spec, item.task, cache, *deps)
        elif item.kind == "preview":
            deps = [job.keyframe_refs[t.index] for t in job.plan.keyframe_tasks]
            info, payload = actor.preview.options(num_returns=2).remote(spec, cache, *deps)
        else:
            windows = [job.window_refs[w.index] for w in job.plan.windows]
            info, payload = actor.decode.options(num_returns=2).remote(spec, job.plan, cache, *windows)
        self._inflight[info] = (item, actor, payload)

    def _dispatch_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    break
                self._assign()
                if not self._inflight:
                    self._lock.wait(timeout=0.5)
                    continue
                refs = list(self._inflight)
            done, _ = ray.wait(refs, num_returns=1, timeout=0.05)
            for ref in done:
                with self._lock:
                    self._finish(ref)
        with self._lock:
            for item in self._ready:
                self._fail(item.job, JobCanceled("engine shut down"))
            self._ready.clear()
            for item, _, _ in self._inflight.values():
                self._fail(item.job, JobCanceled("engine shut down"))

    def _assign(self) -> None:
        """Give ready tasks to idle actors of their model, best first; drop canceled jobs' tasks.

        A task whose result is in the cache completes at once, which can make others ready: pass
        again until a pass reads nothing from the cache.
        """
        progressed = True
        while progressed:
            progressed = False
            ready, self._ready = self._ready, []
            still_ready = []
            for item in ready:
                job = item.job
                if job.canceled or job.future.done():  # canceled, or failed in another task
                    self._fail(job, JobCanceled(f"job {job.id} canceled"))
                    continue
                cached = self._cache_file(item)
                if cached is not None and cached.exists():
                    job.cached_tasks += 1
                    self._complete(item, ray.put(load_payload(cached)), 0.0)
                    progressed = True
                    continue
                pool = self._pools[job.spec.model_source]
                if pool:
                    self._launch(item, pool.pop(0))
                else:
                    still_ready.append(item)
            self._ready = sorted(still_ready + self._ready)

    def _finish(self, ref) -> None:
        item, actor, payload = self._inflight.pop(ref)
        job = item.job
        source = job.spec.model_source
        try:
            info = ray.get(ref)
        except (ActorDiedError, ActorUnavailableError, RayActorError):
            # The actor is gone: replace it and run the task again; the result will be the same.
            self._actors[source].remove(actor)
            replacement = self._new_actor(source, resolve_model(job.spec.model).gpu_dtype)
            self._actors[source].append(replacement)
            self._pools[source].append(replacement)
            self._ready.append(item)
            self._ready.sort()
            return
        except Exception as e:  # the task itself failed: the clip fails with its error
            self._pools[source].append(actor)
            self._fail(job, e)
            return
        self._pools[source].append(actor)
        if job.canceled or job.future.done():
            self._fail(job, JobCanceled(f"job {job.id} canceled"))
            return
        self._complete(item, payload, info["seconds"])

    def _complete(self, item: _Task, payload, seconds: float) -> None:
        """Record a finished (or cache-read) task and queue what it unblocks."""
        job, plan = item.job, item.job.plan
        job.actor_seconds += seconds
        job.done += 1
        if item.kind == "keyframes":
            job.keyframe_refs[item.task.index] = payload
            for t in plan.keyframe_tasks:
                if item.task.index in t.depends_on and all(d in job.keyframe_refs for d in t.depends_on):
                    self._push(job, "keyframes", t)
            if not job.keyframes_only:
                for w in plan.windows:
                    if item.task.index in w.depends_on and all(d in job.keyframe_refs for d in w.depends_on):
                        self._push(job, "window", w)
            if len(job.keyframe_refs) == len(plan.keyframe_tasks):
                self._push(job, "preview")
                if not job.keyframes_only:
                    self._enter_stage(job, "windows")
        elif item.kind == "preview":
            job.preview = ray.get(payload)
            if job.keyframes_only:
                self._enter_stage(job, "done")
                self._report(job)
                job.future.set_result(self._result(job, job.preview))
                return
            self._report(job, stage="preview")
            return
        elif item.kind == "window":
            job.window_refs[item.task.index] = payload
            if len(job.window_refs) == len(plan.windows):
                self._enter_stage(job, "decode")
                self._push(job, "decode")
        else:
            self._enter_stage(job, "encode")
            self._encoder.submit(self._encode, job, payload)
        self._report(job)

    def _enter_stage(self, job: ClipJob, stage: str) -> None:
        job.stage_seconds[job.stage] = round(time.perf_counter() - job.submitted - sum(job.stage_seconds.values()), 4)
        job.stage = stage

    def _encode(self, job: ClipJob, frames_ref) -> None:
        try:
            frames = ray.get(frames_ref)
            if job.output is not None:
                write_mp4(frames, job.output, job.spec.fps, self.metadata(job))
            with self._lock:
                job.done += 1
                self._enter_stage(job, "done")
                self._report(job)
            job.future.set_result(self._result(job, frames))
        except Exception as e:
            self._fail(job, e)

    @staticmethod
    def _result(job: ClipJob, frames: np.ndarray) -> ClipResult:
        return ClipResult(
            job.id,
            job.spec,
            frames,
            job.output,
            dict(job.stage_seconds),
            job.actor_seconds,
            0 if job.keyframes_only else len(job.plan.windows),
            len(job.plan.keyframes),
            job.cached_tasks,
            job.preview,
        )

    @staticmethod
    def metadata(job: ClipJob) -> dict:
        """What the MP4 and its sidecar record: enough to make the clip again."""
        spec = job.spec
        return dict(
            prompt=spec.prompt,
            negative=spec.negative,
            seed=spec.seed,
            model=spec.model,
            videogen_version=__version__,
            frames=spec.frames,
            fps=spec.fps,
            width=spec.width,
            height=spec.height,
            steps=spec.steps,
            guidance=spec.guidance,
            window=spec.window,
            overlap=spec.overlap,
            keyframe_every=spec.keyframe_every,
            blend=spec.blend,
        )

    def _report(self, job: ClipJob, stage: str | None = None) -> None:
        """Tell the job's callback where it is; ``stage`` names a one-off event such as ``preview``."""
        if job.on_progress is not None:
            try:
                progress = job.progress()
                job.on_progress(Progress(job.id, stage, progress.done, progress.total) if stage else progress)
            except Exception:  # a broken progress callback must not stop the engine
                pass

    @staticmethod
    def _fail(job: ClipJob, error: BaseException) -> None:
        if not job.future.done():
            job.stage = "canceled" if isinstance(error, JobCanceled) else "failed"
            job.future.set_exception(error)
