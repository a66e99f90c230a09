"""A model of a job's makespan against the number of GPUs (the formulas of ``cluster/SCALING.md``).

Pure: no Ray, no torch. A clip is its task counts (from `videogen.plan.make_plan`) and the wall
seconds of one task of each kind; the engine runs one denoiser actor per GPU. For one clip::

    T_clip(G) = K t_k + max(R(W, G) + t_d / D,  t_w + t_d,  (W t_w + t_p + t_d) / G) + t_e

The K keyframe tasks run one after another (each chunk continues from the last). Then three bounds:
the W windows in rounds on G actors, R(W, G) ~ ceil(W / G) t_w (one actor first decodes the
preview, t_p), followed by the last of the D decode chunks; the decode chain itself, which follows
the windows chunk by chunk and cannot start before the first window is done; and all that work
spread over G actors. The encode (t_e) runs on the driver at the end. R is computed as the
dispatcher hands out tasks: each to the first idle actor.

For N clips submitted together, the first clip fills the pipeline and each further one adds its
share of the tightest of three resources::

    T_batch(G) = T_clip(G) + (N - 1) max(A / G, t_e / E, n d),   A = K t_k + W t_w + t_p + t_d

the G actors (A actor-seconds a clip), the driver's E encoder threads, and the driver's dispatch
(d seconds for each of a clip's n tasks).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from .plan import Plan

ENCODER_THREADS = 2  # the engine encodes MP4s in a pool of two threads on the driver


@dataclass(frozen=True)
class TaskSeconds:
    """Wall seconds of one task of each kind on one actor (measured, or assumed for a GPU).

    Args:
        keyframes: one keyframe task (a chunk of at most one window of keyframes), seconds.
        window: one window task, seconds.
        decode: one clip's blend and VAE decode, all its decode chunks together, seconds.
        encode: one clip's MP4 encode on the driver, seconds.
        preview: decoding one clip's keyframes to images, seconds (0 for a clip without keyframes).
        dispatch: driver seconds per task (scheduling, waiting, passing references); it caps the
            whole cluster at ``1 / dispatch`` tasks a second.
    """

    keyframes: float
    window: float
    decode: float
    encode: float
    preview: float = 0.0
    dispatch: float = 0.0


@dataclass(frozen=True)
class TaskCounts:
    """What a job is made of: ``clips`` identical clips of so many keyframe, window and decode tasks."""

    keyframe_tasks: int
    windows: int
    decode_chunks: int = 1
    clips: int = 1

    @classmethod
    def of(cls, plan: Plan, clips: int = 1) -> "TaskCounts":
        return cls(len(plan.keyframe_tasks), len(plan.windows), len(plan.decode_chunks), clips)


def windows_stage(windows: int, window: float, preview: float, gpus: int) -> float:
    """R(W, G): seconds until the last of ``windows`` equal tasks is done on ``gpus`` actors, one of
    which starts ``preview`` seconds late; each window goes to the first idle actor."""
    free = [0.0] * (gpus - 1) + [preview]  # when each actor is next idle: a heap, smallest first
    for _ in range(windows):
        heapq.heappush(free, heapq.heappop(free) + window)
    return max(free)


def clip_makespan(counts: TaskCounts, t: TaskSeconds, gpus: int) -> float:
    """Seconds from submit to MP4 for one clip of ``counts`` on ``gpus`` actors."""
    k, w = counts.keyframe_tasks, counts.windows
    preview = t.preview if k else 0.0
    after_keyframes = max(
        windows_stage(w, t.window, preview, gpus) + t.decode / counts.decode_chunks,
        t.window + t.decode,
        (w * t.window + preview + t.decode) / gpus,
    )
    return k * t.keyframes + after_keyframes + t.encode


def predict_makespan(plan_or_counts: Plan | TaskCounts, task_seconds: TaskSeconds, gpus: int,
                     encoders: int = ENCODER_THREADS) -> float:
    """Predicted wall seconds of a job on ``gpus`` GPUs (one denoiser actor each).

    Args:
        plan_or_counts: one clip's `Plan`, or `TaskCounts` (``clips`` > 1 for a batch).
        task_seconds: wall seconds of one task of each kind.
        gpus: GPUs, one actor each (>= 1).
        encoders: encoder threads on the driver.
    Raises:
        ValueError: on ``gpus`` or ``encoders`` below 1, naming the value.
    """
    if gpus < 1:
        raise ValueError(f"gpus={gpus}: must be at least 1")
    if encoders < 1:
        raise ValueError(f"encoders={encoders}: must be at least 1")
    counts = TaskCounts.of(plan_or_counts) if isinstance(plan_or_counts, Plan) else plan_or_counts
    t = task_seconds
    first = clip_makespan(counts, t, gpus)
    k, w = counts.keyframe_tasks, counts.windows
    preview = t.preview if k else 0.0
    actor_seconds = k * t.keyframes + w * t.window + preview + t.decode
    tasks = k + w + (1 if k else 0) + counts.decode_chunks
    per_clip = max(actor_seconds / gpus, t.encode / encoders, tasks * t.dispatch)
    return first + (counts.clips - 1) * per_clip
