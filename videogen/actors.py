"""The only module that knows Ray actors: a `Denoiser` (or a VAE-only `Decoder`) inside a Ray
actor, and how actors are made.

A denoiser actor loads its model once in ``__init__`` and then serves tasks from any number of
clips. It asks Ray for a GPU (or a configurable fraction of one) when the cluster has GPUs, so it
is placed only on GPU nodes, and runs on the CPU otherwise. A decoder actor holds only the VAE and
asks for no GPU, so blending and decoding can run on CPU nodes while GPUs denoise; so can MP4
encoding, as a plain one-CPU task.

Each task returns two objects: a small ``info`` dict the driver reads (seconds spent, payload
bytes) and the payload, which the driver passes on by reference to the tasks that need it. Given a
cache path, the actor also writes the payload there (see `cache.py`).
"""

from __future__ import annotations

import os
import resource

import ray
import torch

from .cache import payload_nbytes, save_payload
from .denoise import Decoder, Denoiser

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _merge(chunks) -> dict:
    return {p: v for chunk in chunks for p, v in chunk.items()}


class _Worker:
    """What denoiser and decoder actors share: threads, device, info, replies."""

    def _setup(self, threads: int | None, use_gpu: bool) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = "cuda" if use_gpu and torch.cuda.is_available() and bool(ray.get_gpu_ids()) else "cpu"

    def info(self) -> dict:
        """Where this actor runs, and its peak resident memory so far (bytes)."""
        return dict(
            node=ray.get_runtime_context().get_node_id(),
            pid=os.getpid(),
            device=self.device,
            gpu_ids=[str(g) for g in ray.get_gpu_ids()],
            threads=torch.get_num_threads(),
            peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            **self._describe(),
        )

    @staticmethod
    def _reply(out: dict, payload: str, cache: str | None):
        if cache:
            save_payload(cache, out[payload])
        return {"seconds": out["seconds"], "bytes": payload_nbytes(out[payload])}, out[payload]

    def preview(self, spec, cache, *keyframe_chunks):
        return self._reply(self.decoder.preview(spec, _merge(keyframe_chunks)), "frames", cache)

    def decode_chunk(self, spec, plan, clip, chunk, indices, cache, *windows):
        out = self.decoder.decode_chunk(spec, plan, clip, chunk, dict(zip(indices, windows)))
        return self._reply(out, "frames", cache)


class DenoiserWorker(_Worker):
    """A `Denoiser` for one actor: picks the device and dtype.

    Args:
        source: model source.
        gpu_dtype: dtype name on a GPU; CPUs always use float32.
        threads: torch threads for this actor (None: torch's default).
    """

    def __init__(self, source: str, gpu_dtype: str = "bfloat16", threads: int | None = None):
        self._setup(threads, use_gpu=True)
        self.dtype = DTYPES[gpu_dtype] if self.device == "cuda" else torch.float32
        self.denoiser = Denoiser(source, self.device, self.dtype)
        self.decoder = self.denoiser.decoder

    def _describe(self) -> dict:
        return dict(role="denoiser", dtype=str(self.dtype))

    def keyframes(self, spec, task, cache, *known_chunks):
        return self._reply(self.denoiser.keyframes(spec, task, _merge(known_chunks)), "latents", cache)

    def window(self, spec, task, cache, *keyframe_chunks):
        return self._reply(self.denoiser.window(spec, task, _merge(keyframe_chunks)), "latents", cache)


class DecoderWorker(_Worker):
    """The VAE alone, on a CPU: blends and decodes, never loads the transformer."""

    def __init__(self, source: str, threads: int | None = None):
        self._setup(threads, use_gpu=False)
        self.decoder = Decoder.load(source, self.device)

    def _describe(self) -> dict:
        return dict(role="decoder", dtype="torch.float32")


def make_actor(source: str, gpu_dtype: str, threads: int | None, gpu_fraction: float, cpus: float):
    """Start one denoiser actor; it takes ``gpu_fraction`` of a GPU when the cluster has any."""
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    actor_cls = ray.remote(DenoiserWorker).options(num_cpus=cpus, num_gpus=gpu_fraction if has_gpus else 0)
    return actor_cls.remote(source, gpu_dtype, threads)


def make_decoder(source: str, threads: int | None, cpus: float):
    """Start one CPU decoder actor (no GPU asked for)."""
    return ray.remote(DecoderWorker).options(num_cpus=cpus, num_gpus=0).remote(source, threads)


def _encode_chunks(output: str, fps: int, metadata: dict, view, *chunks) -> str:
    import numpy as np

    from .encode import write_mp4

    return str(write_mp4(np.concatenate(chunks), output, fps, metadata, view))


def encode_task(output: str, fps: int, metadata: dict, view, *chunk_refs):
    """Encode a clip's decoded chunks to MP4 in a one-CPU Ray task that asks for no GPU."""
    return ray.remote(num_cpus=1, num_gpus=0)(_encode_chunks).remote(output, fps, metadata, view, *chunk_refs)
