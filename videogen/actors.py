"""The only module that knows Ray actors: a `Denoiser` inside a Ray actor, and how a pool is made.

An actor loads its model once in ``__init__`` and then serves tasks from any number of clips. It
asks Ray for a GPU (or a configurable fraction of one) when the cluster has GPUs, and runs on the
CPU otherwise. Each task returns two objects: a small ``info`` dict the driver reads (seconds
spent) and the payload, which the driver passes on by reference to the tasks that need it. Given a
cache path, the actor also writes the payload there (see `cache.py`).
"""

from __future__ import annotations

import os
import resource

import ray
import torch

from .cache import save_payload
from .denoise import Denoiser

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class DenoiserWorker:
    """A `Denoiser` for one actor: picks the device and dtype, and splits results into info + payload.

    Args:
        source: model source.
        gpu_dtype: dtype name on a GPU; CPUs always use float32.
        threads: torch threads for this actor (None: torch's default).
    """

    def __init__(self, source: str, gpu_dtype: str = "bfloat16", threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        on_gpu = torch.cuda.is_available() and bool(ray.get_gpu_ids())
        self.device = "cuda" if on_gpu else "cpu"
        self.dtype = DTYPES[gpu_dtype] if on_gpu else torch.float32
        self.denoiser = Denoiser(source, self.device, self.dtype)

    def info(self) -> dict:
        """Where this actor runs, and its peak resident memory so far (bytes)."""
        return dict(
            node=ray.get_runtime_context().get_node_id(),
            pid=os.getpid(),
            device=self.device,
            gpu_ids=[str(g) for g in ray.get_gpu_ids()],
            dtype=str(self.dtype),
            threads=torch.get_num_threads(),
            peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        )

    @staticmethod
    def _reply(out: dict, payload: str, cache: str | None):
        if cache:
            save_payload(cache, out[payload])
        return {"seconds": out["seconds"]}, out[payload]

    def keyframes(self, spec, task, cache, *known_chunks):
        known = {p: v for chunk in known_chunks for p, v in chunk.items()}
        return self._reply(self.denoiser.keyframes(spec, task, known), "latents", cache)

    def window(self, spec, task, cache, *keyframe_chunks):
        keyframes = {p: v for chunk in keyframe_chunks for p, v in chunk.items()}
        return self._reply(self.denoiser.window(spec, task, keyframes), "latents", cache)

    def decode(self, spec, plan, cache, *windows):
        return self._reply(self.denoiser.decode(spec, plan, list(windows)), "frames", cache)

    def preview(self, spec, cache, *keyframe_chunks):
        keyframes = {p: v for chunk in keyframe_chunks for p, v in chunk.items()}
        return self._reply(self.denoiser.preview(spec, keyframes), "frames", cache)


def make_actor(source: str, gpu_dtype: str, threads: int | None, gpu_fraction: float, cpus: float):
    """Start one denoiser actor; it takes ``gpu_fraction`` of a GPU when the cluster has any."""
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    actor_cls = ray.remote(DenoiserWorker).options(
        num_cpus=cpus,
        num_gpus=gpu_fraction if has_gpus else 0,
        max_concurrency=1,
    )
    handle = actor_cls.remote(source, gpu_dtype, threads)
    return handle
