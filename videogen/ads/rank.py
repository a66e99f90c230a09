"""Scoring candidates from their pixels, so the best seeds of each variant are kept.

A scorer is any callable ``(frames, prompt) -> float`` where higher is better; ``frames`` is uint8
(F, H, W, 3) at the generated size. `SCORERS` holds the built-in ones by the name a spec uses; the
Python API takes any callable.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

Scorer = Callable[[np.ndarray, str], float]

# Hue ranges in Pillow's 0-255 HSV scale for the colour words a prompt may name.
HUES = {
    "red": [(0, 11), (236, 256)], "orange": [(11, 28)], "yellow": [(28, 50)], "green": [(50, 110)],
    "cyan": [(110, 135)], "blue": [(135, 185)], "purple": [(185, 215)], "pink": [(215, 236)],
}


def smoothness(frames: np.ndarray, prompt: str = "") -> float:
    """1 minus the mean absolute change between consecutive frames, as a fraction of full scale.

    Flicker and frame-to-frame noise, the commonest defects of a generated clip, lower it; a
    one-frame clip scores 1.
    """
    if len(frames) < 2:
        return 1.0
    return 1.0 - float(np.abs(np.diff(frames.astype(np.int16), axis=0)).mean()) / 255.0


def colour_match(frames: np.ndarray, prompt: str) -> float:
    """A prompt-adherence proxy needing no model: the share of saturated pixels in the colours the prompt names.

    A "red sneaker on a blue court" clip should be largely red and blue. Averaged over the named
    colours; 0.5 (no opinion) when the prompt names none.
    """
    words = {w.strip(".,;:!?()").lower() for w in prompt.split()}
    named = [c for c in HUES if c in words]
    if not named:
        return 0.5
    hsv = np.stack([np.asarray(Image.fromarray(f).convert("HSV")) for f in frames[:: max(1, len(frames) // 8)]])
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    vivid = (s > 80) & (v > 60)
    shares = []
    for c in named:
        inside = np.zeros_like(vivid)
        for lo, hi in HUES[c]:
            inside |= (h >= lo) & (h < hi)
        shares.append(float((inside & vivid).mean()))
    return float(np.mean(shares))


def smooth_and_colour(frames: np.ndarray, prompt: str) -> float:
    """The mean of `smoothness` and `colour_match`."""
    return 0.5 * (smoothness(frames, prompt) + colour_match(frames, prompt))


SCORERS: dict[str, Scorer] = {"smoothness": smoothness, "colour": colour_match, "smoothness+colour": smooth_and_colour}


def top_k(scores: dict, k: int) -> list:
    """The ``k`` keys with the highest scores, best first; ties go to the smaller key (the lower seed)."""
    return sorted(scores, key=lambda key: (-scores[key], key))[:k]
