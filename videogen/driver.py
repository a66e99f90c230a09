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
4. Decode tasks blend the windows in latent space and decode them to frames, one chunk per
   window, in order, each as soon as the windows it needs are done (so decoding follows the
   windows rather than waiting for the last one); a clip's chunks go to one actor, which keeps the
   VAE's causal cache between them, so the pieces equal one decode of the whole clip.
5. The frames are encoded to MP4 beside the driver (in a thread, so scheduling goes on).

With a ``cache_dir``, every task's result is stored under a key made from what it depends on
(`cache.py`); a task whose result is already there is read back instead of run.

A dispatch thread hands ready tasks to idle actors: higher ``priority`` first, then first submitted,
then keyframes, previews, decode chunks, windows. Noise is keyed by position, so which actor runs what,
and in which order tasks finish, never changes the frames. A task whose actor dies is run again on a
fresh actor, and so is every finished task whose result was held by that actor's node and is still
needed (``redone_tasks`` counts them); nothing else is recomputed.
"""

from __future__ import annotations

import bisect
import itertools
import math
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
from ray.exceptions import ObjectLostError, RayActorError

from . import __version__
from .actors import encode_task, make_actor, make_decoder
from .cache import cache_path, load_payload, payload_nbytes, task_key
from .encode import check_output_path, write_mp4
from .plan import Plan, make_plan
from .presets import default_model, resolve_model
from .request import ClipRequest, ClipSpec, resolve

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
    redone_tasks: int = 0  # tasks run again because their result was lost with an actor or node
    bytes_moved: int = 0  # task results passed between tasks and to the driver

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
            redone_tasks=self.redone_tasks,
            bytes_moved=self.bytes_moved,
            seed=self.spec.seed,
            model=self.spec.model,
        )


MAX_ATTEMPTS = 3  # a task whose inputs are lost more often than this fails its clip
TaskKey = tuple  # (kind, index): ("keyframes", i), ("preview", 0), ("window", i), ("decode", chunk)


@dataclass(eq=False)
class ClipJob:
    """A submitted clip: its plan, its progress, and a future for its `ClipResult`.

    Tasks are named by `TaskKey`; ``deps`` says which results each one consumes. A task is queued
    when all its dependencies have results, and a result lost with its node is made again.
    """

    id: str
    spec: ClipSpec
    plan: Plan
    output: Path | str | None
    priority: int
    seq: int
    on_progress: Callable[[Progress], None] | None
    keyframes_only: bool = False
    future: Future = field(default_factory=Future)
    tasks: dict = field(default_factory=dict)  # TaskKey -> KeyframeTask | WindowTask | None
    deps: dict = field(default_factory=dict)  # TaskKey -> tuple of TaskKeys it consumes
    keys: dict = field(default_factory=dict)  # TaskKey -> cache key
    refs: dict = field(default_factory=dict)  # TaskKey -> ObjectRef of its result
    sizes: dict = field(default_factory=dict)  # TaskKey -> bytes of its result
    producers: dict = field(default_factory=dict)  # TaskKey -> the actor holding its result (None: read from cache)
    queued: set = field(default_factory=set)  # TaskKeys waiting for or running on an actor
    lost: set = field(default_factory=set)  # TaskKeys whose result was lost and is being made again
    attempts: dict = field(default_factory=dict)  # TaskKey -> times its inputs were lost
    preview: np.ndarray | None = None  # keyframe images (K, H, W, 3) once the preview task is done
    cached_tasks: int = 0
    redone_tasks: int = 0
    bytes_moved: int = 0
    encoded: bool = False
    stage: str = "queued"
    actor_seconds: float = 0.0
    submitted: float = field(default_factory=time.perf_counter)
    stage_seconds: dict = field(default_factory=dict)
    canceled: bool = False

    @property
    def needed(self) -> list:
        """The tasks this job runs, in plan order."""
        keep = ("keyframes", "preview") if self.keyframes_only else ("keyframes", "preview", "window", "decode")
        return [k for k in self.tasks if k[0] in keep]

    @property
    def done(self) -> int:
        return sum(k in self.refs for k in self.needed) + int(self.encoded)

    @property
    def total(self) -> int:
        return len(self.needed) + (0 if self.keyframes_only else 1)  # + encode

    def result(self, timeout: float | None = None) -> ClipResult:
        """Wait for the clip; raises its error, or `JobCanceled`."""
        return self.future.result(timeout)

    def cancel(self) -> None:
        """Stop the clip: its pending tasks never run; a running task's result is dropped."""
        self.canceled = True

    def progress(self) -> Progress:
        return Progress(self.id, self.stage, self.done, self.total)


def task_graph(plan: Plan) -> tuple[dict, dict]:
    """Every task of a plan and the tasks whose results it consumes."""
    tasks, deps = {}, {}
    for t in plan.keyframe_tasks:
        tasks[("keyframes", t.index)] = t
        deps[("keyframes", t.index)] = tuple(("keyframes", d) for d in t.depends_on)
    if plan.keyframe_tasks:
        tasks[("preview", 0)] = None
        deps[("preview", 0)] = tuple(("keyframes", t.index) for t in plan.keyframe_tasks)
    for w in plan.windows:
        tasks[("window", w.index)] = w
        deps[("window", w.index)] = tuple(("keyframes", d) for d in w.depends_on)
    for c, (start, stop) in enumerate(plan.decode_chunks):
        tasks[("decode", c)] = (start, stop)
        # Chunk 0 waits for the preview too, so a clip's keyframe images always come before its frames.
        previous = (("decode", c - 1),) if c else ((("preview", 0),) if plan.keyframe_tasks else ())
        deps[("decode", c)] = tuple(("window", w) for w in plan.windows_touching(start, stop)) + previous
    return tasks, deps


@dataclass(order=True)
class _Task:
    sort_key: tuple
    job: ClipJob = field(compare=False)
    key: TaskKey = field(compare=False)
    cache_checked: bool = field(default=False, compare=False)

    @property
    def kind(self) -> str:
        return self.key[0]


class Engine:
    """A pool of denoiser actors shared by every clip submitted to it.

    Args:
        workers: denoiser actors per model (the output does not depend on it).
        address: a Ray cluster to join; default ``$RAY_ADDRESS``, else a local Ray started here.
        gpu_fraction: share of a GPU each actor asks for when the cluster has GPUs.
        threads_per_worker: torch threads per actor (default: its reserved CPUs, rounded up).
            Not derived from ``workers``: on a CPU a matrix product's sums are split by thread,
            so the thread count changes the last bits, and 40 steps grow them to a few levels.
        cpus_per_worker: Ray CPUs each actor reserves.
        cache_dir: where task results are cached by content (None: no cache). On a cluster, a
            folder every node can reach.
        decode_on: ``denoisers`` (blend and decode on the denoiser actors) or ``cpu`` (on
            separate VAE-only actors that ask for no GPU).
        decoders: how many VAE-only actors per model, with ``decode_on="cpu"``.
        encode_on: ``driver`` (MP4s are encoded in this process) or ``cluster`` (in a one-CPU,
            no-GPU Ray task on any node; the output must then be a path or URL that node can write).
    """

    def __init__(
        self,
        workers: int = 1,
        address: str | None = None,
        gpu_fraction: float = 1.0,
        threads_per_worker: int | None = None,
        cpus_per_worker: float = 1.0,
        cache_dir: str | os.PathLike | None = None,
        decode_on: str = "denoisers",
        decoders: int = 1,
        encode_on: str = "driver",
    ):
        if workers < 1:
            raise ValueError(f"workers={workers}: must be at least 1")
        if threads_per_worker is not None and threads_per_worker < 1:
            raise ValueError(f"threads_per_worker={threads_per_worker}: must be at least 1")
        if not 0 < gpu_fraction <= 1:
            raise ValueError(f"gpu_fraction={gpu_fraction}: must be in (0, 1]")
        if decode_on not in ("denoisers", "cpu"):
            raise ValueError(f"decode_on={decode_on!r}: choose 'denoisers' or 'cpu'")
        if encode_on not in ("driver", "cluster"):
            raise ValueError(f"encode_on={encode_on!r}: choose 'driver' or 'cluster'")
        self.encode_on = encode_on
        self.workers = workers
        self.gpu_fraction = gpu_fraction
        self.cpus_per_worker = cpus_per_worker
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.decode_on = decode_on
        self.decoders = decoders
        self.threads = threads_per_worker or max(1, math.ceil(cpus_per_worker))
        self.ray_start_seconds = 0.0
        self._owns_ray = False
        if not ray.is_initialized():
            start = time.perf_counter()
            address = address or os.environ.get("RAY_ADDRESS")
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                actors = workers + (decoders if decode_on == "cpu" else 0)
                # address="local": always a new embedded Ray, never one a `ray start` left running.
                ray.init(address="local", num_cpus=max(os.cpu_count() or 1, int(actors * cpus_per_worker + 0.999)),
                         log_to_driver=False)
                self._owns_ray = True
            self.ray_start_seconds = time.perf_counter() - start
        self._idle: dict[tuple, list] = {}  # pool -> idle actors; a pool is ("denoise" | "decode", source)
        self._actors: dict[tuple, list] = {}  # pool -> all its actors
        self._gpu_dtype: dict[str, str] = {}  # source -> dtype name its denoisers use on GPUs
        self._jobs: set[ClipJob] = set()  # submitted and not finished
        self._decoding: dict[ClipJob, object] = {}  # clip -> the actor holding its VAE cache, until encoded
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
            output: where to write the MP4 (and its ``.json`` sidecar): a local path or an fsspec
                URL (``s3://...``, ``gs://...``); None keeps the frames in memory only.
            priority: higher runs first.
            on_progress: called from the dispatch thread with a `Progress` after every step.
            keyframes_only: run the keyframe stage alone (a one-window clip gets its first and
                last frame as keyframes); the result's ``frames`` are the keyframe images.
        Raises:
            RequestError: on bad input, before anything is queued or written.
        """
        model = resolve_model(request.model if isinstance(request, ClipRequest) else request.get("model") or default_model())
        spec = resolve(request, model)
        if keyframes_only and output is not None:
            raise ValueError("a keyframes-only run writes no MP4: pass output=None")
        out = check_output_path(output) if output is not None else None
        plan = make_plan(spec.latent_frames, spec.latent_window, spec.latent_overlap, spec.latent_keyframe_every,
                         always_keyframes=keyframes_only)
        job = ClipJob(uuid.uuid4().hex[:12], spec, plan, out, priority, next(self._seq), on_progress, keyframes_only)
        job.tasks, job.deps = task_graph(plan)
        job.keys = self._task_keys(job)
        with self._lock:
            if self._closed:
                raise RuntimeError("engine is shut down")
            self._gpu_dtype[spec.model_source] = model.gpu_dtype
            self._ensure_pools(spec.model_source)
            self._jobs.add(job)
            job.stage = "keyframes" if plan.keyframe_tasks else "windows"
            for key in job.needed:
                self._maybe_push(job, key)
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
        """Each actor's role, node, device, threads and peak memory."""
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

    # ---------------------------------------------------------------- actors

    def _pool(self, job: ClipJob, kind: str) -> tuple:
        role = "decode" if kind in ("preview", "decode") and self.decode_on == "cpu" else "denoise"
        return (role, job.spec.model_source)

    def _ensure_pools(self, source: str) -> None:
        pools = [("denoise", source)] + ([("decode", source)] if self.decode_on == "cpu" else [])
        for pool in pools:
            if pool not in self._actors:
                count = self.workers if pool[0] == "denoise" else self.decoders
                actors = [self._new_actor(pool) for _ in range(count)]
                self._actors[pool] = actors
                self._idle[pool] = list(actors)

    def _new_actor(self, pool: tuple):
        role, source = pool
        if role == "decode":
            return make_decoder(source, self.threads, self.cpus_per_worker)
        return make_actor(source, self._gpu_dtype[source], self.threads, self.gpu_fraction, self.cpus_per_worker)

    def _replace(self, actor) -> None:
        """Swap a dead actor for a fresh one, and make again the results it held."""
        for pool, actors in self._actors.items():
            if actor in actors:
                actors.remove(actor)
                if actor in self._idle[pool]:
                    self._idle[pool].remove(actor)
                fresh = self._new_actor(pool)
                actors.append(fresh)
                self._idle[pool].append(fresh)
        for job in list(self._jobs):
            for key, producer in list(job.producers.items()):
                if producer is actor and key in job.refs and self._still_needed(job, key):
                    del job.refs[key], job.producers[key]
                    job.lost.add(key)
                    self._maybe_push(job, key)

    @staticmethod
    def _still_needed(job: ClipJob, key: TaskKey) -> bool:
        """A result matters while some task that consumes it has not finished (decoded frames: until encoded)."""
        if key[0] == "decode":
            return not job.encoded
        return any(key in deps and k not in job.refs for k, deps in job.deps.items() if k in job.needed)

    def _dead_actors(self, timeout: float = 10.0) -> list:
        """Actors that no longer answer; a busy actor answers late and counts as alive."""
        actors = [a for pool in self._actors.values() for a in pool]
        pings = {a.info.remote(): a for a in actors}
        ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=timeout)
        dead = []
        for ref in ready:
            try:
                ray.get(ref)
            except RayActorError:
                dead.append(pings[ref])
        return dead

    # ---------------------------------------------------------------- scheduling

    def _task_keys(self, job: ClipJob) -> dict:
        """Cache keys of every task, each from its inputs and its dependencies' keys."""
        keys = {}
        for key, task in job.tasks.items():  # in plan order: dependencies come first
            kind = key[0]
            if kind == "keyframes":
                params = dict(positions=task.positions, known=task.known)
            elif kind == "window":
                params = dict(start=task.start, stop=task.stop, keyframes=task.keyframes)
            elif kind == "decode":
                params = dict(chunk=key[1], span=task)
            else:
                params = {}
            keys[key] = task_key(job.spec, kind, params, tuple(keys[d] for d in job.deps[key]))
        return keys

    def _maybe_push(self, job: ClipJob, key: TaskKey) -> None:
        """Queue a task if the job needs it, it has no result yet, and its inputs all exist."""
        if key in job.refs or key in job.queued or key not in job.needed:
            return
        if all(d in job.refs for d in job.deps[key]):
            # Decode chunks before windows: decoding then keeps pace with the windows instead of
            # queueing up behind them for one actor at the end.
            order = {"keyframes": 0, "preview": 1, "decode": 2, "window": 3}[key[0]]
            job.queued.add(key)
            bisect.insort(self._ready, _Task((-job.priority, job.seq, order, key[1]), job, key))

    def _cache_file(self, item: _Task) -> Path | None:
        return None if self.cache_dir is None else cache_path(self.cache_dir, item.job.keys[item.key])

    def _launch(self, item: _Task, actor) -> None:
        job, spec, key = item.job, item.job.spec, item.key
        cache = str(self._cache_file(item)) if self.cache_dir is not None else None
        deps = [job.refs[d] for d in job.deps[key]]
        # Decode chunks wait for the previous chunk (and the preview) only for their order, not their data.
        job.bytes_moved += sum(job.sizes[d] for d in job.deps[key] if item.kind != "decode" or d[0] == "window")
        if item.kind == "keyframes":
            call = actor.keyframes.options(num_returns=2).remote(spec, job.tasks[key], cache, *deps)
        elif item.kind == "window":
            call = actor.window.options(num_returns=2).remote(spec, job.tasks[key], cache, *deps)
        elif item.kind == "preview":
            call = actor.preview.options(num_returns=2).remote(spec, cache, *deps)
        else:
            windows = [d[1] for d in job.deps[key] if d[0] == "window"]
            call = actor.decode_chunk.options(num_returns=2).remote(
                spec, job.plan, job.id, key[1], windows, cache, *deps[: len(windows)]
            )
        info, payload = call
        self._inflight[info] = (item, actor, payload)

    def _dispatch_loop(self) -> None:
        try:
            self._dispatch()
        except BaseException as e:  # never leave callers waiting on a dead scheduler
            with self._lock:
                self._closed = True
                for job in list(self._jobs):
                    self._fail(job, RuntimeError(f"videogen scheduler stopped: {e!r}"))
            raise

    def _dispatch(self) -> None:
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
            for job in list(self._jobs):
                self._fail(job, JobCanceled("engine shut down"))

    def _assign(self) -> None:
        """Give ready tasks to idle actors of their pool, best first; drop canceled jobs' tasks.

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
                if not all(d in job.refs for d in job.deps[item.key]):
                    # An input was lost since this task was queued; it is queued again once the
                    # input is made again.
                    job.queued.discard(item.key)
                    continue
                cached = None if item.cache_checked else self._cache_file(item)
                item.cache_checked = True  # look in the cache once per queued task, not on every pass
                if cached is not None and cached.exists() and self._readable(item):
                    job.cached_tasks += 1
                    payload = load_payload(cached)
                    self._complete(item, ray.put(payload), None, dict(seconds=0.0, bytes=payload_nbytes(payload)))
                    progressed = True
                    continue
                idle = self._idle[self._pool(job, item.kind)]
                actor = self._pick(item, idle)
                if actor is not None:
                    idle.remove(actor)
                    self._launch(item, actor)
                else:
                    still_ready.append(item)
            self._ready = sorted(still_ready + self._ready)

    def _readable(self, item: _Task) -> bool:
        """Whether a cached result may be used. A clip's decode chunks share the VAE's causal cache,
        so they come from the task cache all together or not at all."""
        if item.kind != "decode":
            return True
        chunks = [k for k in item.job.tasks if k[0] == "decode"]
        return all(cache_path(self.cache_dir, item.job.keys[k]).exists() for k in chunks)

    def _pick(self, item: _Task, idle: list):
        """An idle actor for the task. A clip's decode chunks after the first go to the actor holding
        the clip's VAE cache; other tasks prefer actors that hold no unfinished decode, which keeps
        those free for their next chunk."""
        if item.kind == "decode" and item.key[1] > 0:
            holder = item.job.producers.get(("decode", item.key[1] - 1))
            return holder if holder in idle else None
        holders = set(self._decoding.values())
        free = [a for a in idle if a not in holders]
        return (free or idle or [None])[0]

    def _finish(self, ref) -> None:
        item, actor, payload = self._inflight.pop(ref)
        job, key = item.job, item.key
        job.queued.discard(key)
        try:
            info = ray.get(ref)
        except RayActorError:
            # The actor is gone: replace it, make again what it held, and run this task again.
            self._replace(actor)
            self._maybe_push(job, key)
            return
        except ObjectLostError as e:
            # An input was lost with its node: replace the actors that went with it, whose results
            # are then made again; this task runs once its inputs exist again.
            self._idle[self._pool(job, item.kind)].append(actor)
            for gone in self._dead_actors():
                self._replace(gone)
            job.attempts[key] = job.attempts.get(key, 0) + 1
            if job.attempts[key] > MAX_ATTEMPTS:
                self._fail(job, RuntimeError(f"job {job.id}: task {key} lost its inputs {MAX_ATTEMPTS} times: {e}"))
                return
            self._maybe_push(job, key)
            return
        except Exception as e:  # the task itself failed: the clip fails with its error
            self._idle[self._pool(job, item.kind)].append(actor)
            self._fail(job, e)
            return
        self._idle[self._pool(job, item.kind)].append(actor)
        if job.canceled or job.future.done():
            self._fail(job, JobCanceled(f"job {job.id} canceled"))
            return
        self._complete(item, payload, actor, info)

    def _complete(self, item: _Task, payload, actor, info: dict) -> None:
        """Record a finished (or cache-read) task and queue what it unblocks."""
        job, key, plan = item.job, item.key, item.job.plan
        job.queued.discard(key)
        job.refs[key], job.producers[key], job.sizes[key] = payload, actor, info["bytes"]
        job.actor_seconds += info["seconds"]
        if key in job.lost:
            job.lost.discard(key)
            job.redone_tasks += 1
        if item.kind == "keyframes" and job.stage == "keyframes" and all(
            ("keyframes", t.index) in job.refs for t in plan.keyframe_tasks
        ):
            if not job.keyframes_only:
                self._enter_stage(job, "windows")
        elif item.kind == "preview":
            job.preview = ray.get(payload)
            job.bytes_moved += info["bytes"]
            if job.keyframes_only:
                self._enter_stage(job, "done")
                self._report(job)
                self._succeed(job, job.preview)
                return
            self._report(job, stage="preview")
        elif item.kind == "window" and all(("window", w.index) in job.refs for w in plan.windows):
            if job.stage != "decode":
                self._enter_stage(job, "decode")
        elif item.kind == "decode":
            job.bytes_moved += info["bytes"]
            if actor is not None:
                self._decoding[job] = actor
            chunks = [k for k in job.tasks if k[0] == "decode"]
            if all(k in job.refs for k in chunks):
                if job.stage != "decode":
                    self._enter_stage(job, "decode")
                self._enter_stage(job, "encode")
                self._encoder.submit(self._encode, job, [job.refs[k] for k in chunks])
        for k, deps in job.deps.items():
            if key in deps:
                self._maybe_push(job, k)
        if item.kind != "preview":
            self._report(job)

    def _enter_stage(self, job: ClipJob, stage: str) -> None:
        job.stage_seconds[job.stage] = round(time.perf_counter() - job.submitted - sum(job.stage_seconds.values()), 4)
        job.stage = stage

    def _encode(self, job: ClipJob, chunk_refs: list) -> None:
        try:
            if job.output is not None and self.encode_on == "cluster":
                ray.get(encode_task(str(job.output), job.spec.fps, self.metadata(job), job.spec.view, *chunk_refs))
            frames = np.concatenate(ray.get(chunk_refs))
            if job.output is not None and self.encode_on == "driver":
                write_mp4(frames, job.output, job.spec.fps, self.metadata(job), job.spec.view)
            with self._lock:
                job.encoded = True
                self._enter_stage(job, "done")
                self._report(job)
                self._succeed(job, frames)
        except Exception as e:
            with self._lock:
                self._fail(job, e)

    def _succeed(self, job: ClipJob, frames: np.ndarray) -> None:
        self._jobs.discard(job)
        self._decoding.pop(job, None)
        job.future.set_result(
            ClipResult(
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
                job.redone_tasks,
                job.bytes_moved,
            )
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
            keyframe_release=spec.keyframe_release,
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

    def _fail(self, job: ClipJob, error: BaseException) -> None:
        self._jobs.discard(job)
        self._decoding.pop(job, None)
        if not job.future.done():
            job.stage = "canceled" if isinstance(error, JobCanceled) else "failed"
            job.future.set_exception(error)
