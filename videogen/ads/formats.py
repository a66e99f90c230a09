"""Platform formats and the negative-prompt library: typed schemas for ``configs/formats/`` and
``configs/negatives/``, and how a generated clip becomes a format's delivery frames.

A clip is generated at a model-friendly size with the format's shape (`generation_size`), then
scaled to cover the delivery size and centre-cropped (`fit_frames`): a video model cannot make
1080x1920 directly, and platform sizes are not multiples of its size step.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image
from pydantic import Field, model_validator

from ..presets import ModelPreset, Strict, load_presets


class SafeArea(Strict):
    """Margins the platform's UI covers, as fractions of the frame's width (left, right) and height (top, bottom)."""

    top: float = Field(ge=0, lt=1)
    bottom: float = Field(ge=0, lt=1)
    left: float = Field(ge=0, lt=1)
    right: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _leaves_room(self) -> "SafeArea":
        if self.top + self.bottom >= 1 or self.left + self.right >= 1:
            raise ValueError("margins leave no safe area")
        return self


class FormatPreset(Strict):
    """A platform's delivery shape: size in pixels, allowed length in seconds, text safe area."""

    name: str
    description: str = ""
    width: int = Field(gt=0, multiple_of=2)  # even: H.264 with yuv420p
    height: int = Field(gt=0, multiple_of=2)
    min_seconds: float = Field(gt=0)
    max_seconds: float = Field(gt=0)
    safe: SafeArea

    def safe_box(self) -> tuple[int, int, int, int]:
        """The safe area in delivery pixels: (left, top, right, bottom), right and bottom exclusive."""
        s = self.safe
        return (
            math.ceil(s.left * self.width),
            math.ceil(s.top * self.height),
            math.floor((1 - s.right) * self.width),
            math.floor((1 - s.bottom) * self.height),
        )


class NegativePreset(Strict):
    """A named negative prompt: terms joined with commas."""

    name: str
    description: str = ""
    terms: list[str] = Field(min_length=1)


@lru_cache(maxsize=None)
def format_presets() -> dict[str, FormatPreset]:
    return load_presets("formats", FormatPreset)


@lru_cache(maxsize=None)
def negative_presets() -> dict[str, NegativePreset]:
    return load_presets("negatives", NegativePreset)


def generation_size(fmt: FormatPreset, pixels: int, model: ModelPreset) -> tuple[int, int]:
    """The (width, height) to generate a format's clip at: its shape, about ``pixels`` in area.

    Both sides are multiples of the model's size step (at least one step) and the area stays within
    the model's limit, so formats of the same shape share one generated clip. The shape wins over
    the area: the closest shape on the grid, then the largest area with it.

    Args:
        fmt: the delivery format.
        pixels: wanted width * height of the generated clip.
        model: the model preset (size step and pixel limit).
    """
    m = model.size_multiple
    aspect = fmt.width / fmt.height
    area = max(m * m, min(pixels, model.max_pixels))
    # Every size on the model's grid within the area; the closest shape wins, then the larger one.
    sizes = [(w, h) for h in range(m, area // m + 1, m) for w in range(m, area // h + 1, m)]
    return min(sizes, key=lambda s: (round(abs(math.log(s[0] / s[1] / aspect)), 2), -s[0] * s[1]))


def fit_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale frames to cover ``width`` x ``height`` and crop the centre: uint8 (F, height, width, 3)."""
    f, h, w, _ = frames.shape
    scale = max(width / w, height / h)
    sw, sh = max(width, round(w * scale)), max(height, round(h * scale))
    left, top = (sw - width) // 2, (sh - height) // 2
    out = np.empty((f, height, width, 3), np.uint8)
    for i, frame in enumerate(frames):
        img = Image.fromarray(frame).resize((sw, sh), Image.Resampling.BICUBIC)
        out[i] = np.asarray(img.crop((left, top, left + width, top + height)))
    return out
