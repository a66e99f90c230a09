"""Frames to an MP4 that plays everywhere, written atomically, with a JSON sidecar."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np

from .errors import RequestError


def is_url(path) -> bool:
    """A shared-storage URL (``s3://``, ``gs://``, ``memory://``...) rather than a local path."""
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def check_output_path(path: str | os.PathLike) -> Path | str:
    """Fail before any work if ``path`` cannot be written; creates nothing.

    A URL is checked for its ending and for a filesystem that fsspec knows (its credentials are
    the filesystem's business); a local path for a writable folder.

    Raises:
        RequestError: naming ``output`` and the path.
    """
    if is_url(path):
        import fsspec

        protocol = path.split("://", 1)[0]
        try:
            fsspec.get_filesystem_class(protocol)
        except (ValueError, ImportError) as e:
            raise RequestError("output", path, f"no filesystem for {protocol}:// ({e})") from None
        if not path.lower().endswith(".mp4"):
            raise RequestError("output", path, "must end in .mp4")
        return path
    p = Path(str(path).removeprefix("file://"))
    if p.suffix.lower() != ".mp4":
        raise RequestError("output", str(path), "must end in .mp4")
    if p.is_dir():
        raise RequestError("output", str(path), "is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise RequestError("output", str(path), f"folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RequestError("output", str(path), f"folder {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise RequestError("output", str(path), "exists and is not writable")
    return p


def check_png_path(field: str, path: Path) -> None:
    """Refuse a PNG output path that does not end in .png or whose folder does not exist."""
    if path.suffix.lower() != ".png":
        raise RequestError(field, str(path), "must end in .png")
    if not path.parent.is_dir():
        raise RequestError(field, str(path), "its folder does not exist")


@contextmanager
def atomic_path(path: Path, suffix: str):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The file is created as any new file is (mode 0666 less the umask, so 0644 with the usual
    umask): `tempfile.mkstemp` makes it 0600, and the rename would leave a team's clips on a
    shared folder readable by their owner alone.
    """
    path = Path(path)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sidecar_path(path: str | os.PathLike) -> Path | str:
    if is_url(path):
        return str(path)[: -len(".mp4")] + ".json"
    return Path(path).with_suffix(".json")


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: int, metadata: dict | None = None,
              view: tuple[int, int, str] | None = None) -> Path:
    """Encode frames to H.264/yuv420p MP4 at a constant frame rate, with a faststart index.

    Nothing appears at ``path`` until the file is complete. ``metadata`` is stored in the file
    (the prompt as ``title``, the rest as JSON in ``comment``) and in ``<path>.json`` beside it.
    A URL is written locally first and then uploaded whole with fsspec.

    Args:
        frames: uint8 array (F, H, W, 3), RGB; H and W must be even (yuv420p).
        path: output ``.mp4`` path, or an fsspec URL.
        fps: frames per second.
        metadata: JSON-serialisable facts about the clip (prompt, seed, model, version...).
        view: ``(width, height, filter)``: enlarge every frame to this size with this swscale
            filter (``lanczos``, ``bicubic``, ...) while encoding; recorded in the metadata.
    """
    if is_url(path):
        import fsspec

        with tempfile.TemporaryDirectory() as tmp:
            local = write_mp4(frames, Path(tmp) / "clip.mp4", fps, metadata, view)
            fs, remote = fsspec.core.url_to_fs(str(path))
            fs.put_file(str(sidecar_path(local)), remote[: -len(".mp4")] + ".json")
            fs.put_file(str(local), remote)  # the video last: its presence means both are there
        return path
    path = Path(str(path).removeprefix("file://"))
    f, h, w, c = frames.shape
    if c != 3 or h % 2 or w % 2 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (F, H, W, 3) with even H and W, got {frames.dtype} {frames.shape}")
    metadata = dict(metadata or {})
    out_w, out_h, interpolation = w, h, None
    if view is not None:
        out_w, out_h, name = view
        interpolation = name.upper()
        metadata["view"] = dict(width=out_w, height=out_h, filter=name)
    with atomic_path(path, ".mp4") as tmp:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as container:
            container.metadata["title"] = str(metadata.get("prompt", ""))
            container.metadata["comment"] = json.dumps(metadata, sort_keys=True)
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = out_w, out_h
            stream.pix_fmt = "yuv420p"
            # A keyframe about every 2 s so players can seek; crf 18 is visually lossless.
            stream.codec_context.gop_size = max(1, 2 * fps)
            # No macroblock tree, and one encoder thread, so the same frames always encode to the same
            # MP4. Measured on 81 blocky 64x64 frames: with x264's macroblock tree, repeated encodes in
            # one process differed by up to 19 levels inside one GOP in most runs (also with one
            # thread; not with x264's SIMD turned off); with x264's thread count left to the machine,
            # 832x832 frames encode differently on 2, 4 or 8 threads.
            stream.options = {"crf": "18", "preset": "medium", "x264-params": "mbtree=0"}
            stream.codec_context.thread_count = 1
            for frame in frames:
                picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
                if interpolation:
                    picture = picture.reformat(out_w, out_h, "yuv420p", interpolation=interpolation)
                for packet in stream.encode(picture):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    write_json(sidecar_path(path), metadata)
    return path


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically."""
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_mp4(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Decode an MP4 back to uint8 RGB frames (F, H, W, 3) and its stream facts."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([fr.to_ndarray(format="rgb24") for fr in container.decode(stream)])
        info = dict(
            codec=stream.codec_context.name,
            pix_fmt=stream.codec_context.pix_fmt,
            fps=float(stream.average_rate),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            metadata=dict(container.metadata),
        )
    return frames, info
