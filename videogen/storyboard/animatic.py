"""The animatic: every shot in order, its dialogue burned in as captions, with an ``.srt`` beside it."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from ..contact import font, wrap
from .shots import Shot

MIN_WIDTH = 480  # small clips are blown up (nearest neighbour) so captions stay readable


def scale_for(width: int) -> int:
    """Whole-number upscale that makes a ``width``-pixel clip at least `MIN_WIDTH` wide."""
    return max(1, math.ceil(MIN_WIDTH / width))


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """(F, H, W, 3) -> (F, H*factor, W*factor, 3), each pixel repeated."""
    if factor == 1:
        return frames
    return frames.repeat(factor, axis=1).repeat(factor, axis=2)


def caption_overlay(width: int, height: int, text: str) -> Image.Image:
    """An RGBA layer with ``text`` centred in a dark band along the bottom of a ``width`` x ``height`` frame."""
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    if not text.strip():
        return layer
    size = max(12, height // 20)
    face = font(size)
    line_height = round(size * 1.25)
    lines = wrap(text, int(width * 0.9), face, max_lines=4)
    band = len(lines) * line_height + size
    draw = ImageDraw.Draw(layer)
    draw.rectangle((0, height - band, width, height), fill=(0, 0, 0, 170))
    y = height - band + size // 2
    for line in lines:
        draw.text(((width - face.getlength(line)) / 2, y), line, fill=(255, 255, 255, 255), font=face)
        y += line_height
    return layer


def burn_captions(frames: np.ndarray, text: str) -> np.ndarray:
    """Draw ``text`` over every frame (uint8 (F, H, W, 3)); frames without text are returned unchanged."""
    if not text.strip():
        return frames
    f, h, w, _ = frames.shape
    overlay = np.asarray(caption_overlay(w, h, text), dtype=np.float32)
    top = int(np.argmax(overlay[..., 3].any(axis=1)))  # the band's first row: blend only below it
    alpha = overlay[top:, :, 3:] / 255.0  # (band rows, W, 1)
    out = frames.copy()
    out[:, top:] = np.round(frames[:, top:] * (1 - alpha) + overlay[top:, :, :3] * alpha).astype(np.uint8)
    return out


def animatic_frames(shots: list[Shot], clips: dict[str, np.ndarray]) -> np.ndarray:
    """Every shot's frames in order, upscaled for legibility, captions burned in.

    Args:
        shots: the shot list, in order.
        clips: shot id -> uint8 (F, H, W, 3) frames; a single frame (1, H, W, 3) is held for the
            whole shot (a boards-only animatic).
    Returns:
        uint8 (sum of shot frames, H*k, W*k, 3).
    """
    parts = []
    for shot in shots:
        frames = clips[shot.id]
        held = len(frames) == 1
        if not held and len(frames) != shot.frames:
            raise ValueError(f"shot {shot.id}: got {len(frames)} frames, the shot list says {shot.frames}")
        frames = burn_captions(upscale(frames, scale_for(frames.shape[2])), shot.caption)
        parts.append(np.repeat(frames, shot.frames, axis=0) if held else frames)
    return np.concatenate(parts)


def srt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def srt(shots: list[Shot]) -> str:
    """SubRip subtitles of the shots' dialogue, timed to where each shot sits in the animatic."""
    entries, frame = [], 0  # counted in frames, so times do not drift over a long animatic
    for shot in shots:
        if shot.dialogue:
            start, end = frame / shot.fps, (frame + shot.frames) / shot.fps
            entries.append(f"{len(entries) + 1}\n{srt_time(start)} --> {srt_time(end)}\n{shot.caption}\n")
        frame += shot.frames
    return "\n".join(entries)
