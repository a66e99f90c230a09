"""A content-addressed cache of task results, shared by every clip an engine runs.

A task's key is a hash of everything its result depends on: the model, the prompt, the seed, the
sizes and steps, the task's own frames, and the keys of the tasks it depends on (so an edited
keyframe changes the key of every window that uses it). Re-running a clip therefore recomputes
only what changed; a clip that was interrupted resumes with its finished tasks read back; ad
variants that share a prompt, seed and size share keyframes.

Results are written by the actor that computed them (the folder may be shared storage on a
cluster), atomically: a reader sees a whole file or none.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from . import __version__
from .encode import atomic_path

# The spec fields a denoising task's result depends on (not fps, output, blend, or the clip's length).
DENOISE_FIELDS = ("model_source", "prompt", "negative", "seed", "steps", "guidance", "width", "height", "lora_digest", "lora_scale",
                 "keyframe_release")


def task_key(spec, kind: str, task: dict, deps: tuple[str, ...] = ()) -> str:
    """A hex digest naming one task's result.

    Args:
        spec: the clip's `ClipSpec`.
        kind: ``keyframes``, ``window``, ``decode`` or ``preview``.
        task: the task's own parameters (positions, span...), JSON-serialisable.
        deps: keys of the tasks whose results this one consumes.
    """
    fields = {f: getattr(spec, f) for f in DENOISE_FIELDS}
    if kind == "decode":
        fields.update(blend=spec.blend, frames=spec.frames)
    blob = json.dumps([__version__, kind, fields, task, list(deps)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.npz"


def payload_nbytes(payload) -> int:
    """Bytes of an array, or of a dict of position -> array."""
    return sum(v.nbytes for v in payload.values()) if isinstance(payload, dict) else payload.nbytes


def save_payload(path: str | os.PathLike, payload) -> None:
    """Write an array, or a dict of position -> array, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"p{k}": v for k, v in payload.items()} if isinstance(payload, dict) else {"array": payload}
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_payload(path: str | os.PathLike):
    """Read what `save_payload` wrote."""
    with np.load(path) as data:
        if "array" in data.files:
            return data["array"]
        return {int(k[1:]): data[k] for k in data.files}
