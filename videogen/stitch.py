"""Blending overlapping windows into one clip. Pure numpy.

Windows are blended in **latent space**, after they are fully denoised, and the blended latents
are decoded as one continuous clip (in chunks that carry the VAE's cache, see `denoise.Decoder`).
Why latent and not pixel: the Wan VAE decoder is causal in time and carries a cache from frame to
frame, so decoding each window on its own would restart that cache at every window's first frame
(a visible jump) and decode every overlap twice.

Each window's weight is 1 inside and ramps over the frames it shares with a neighbour; the weights
are then normalised so that, at every frame, the windows covering it sum to 1. Windows that agree
therefore blend to themselves.
"""

from __future__ import annotations

import numpy as np

from .plan import Plan

BLEND_METHODS = ("linear", "cosine", "pyramid", "flat")


def _ramp(n: int, method: str) -> np.ndarray:
    """Rising weights for the ``n`` frames a window shares with the neighbour before it."""
    u = np.arange(1, n + 1, dtype=np.float64) / (n + 1)
    if method == "linear":
        return u
    if method == "cosine":
        return 0.5 - 0.5 * np.cos(np.pi * u)
    return np.ones(n)


def window_weights(plan: Plan, method: str) -> list[np.ndarray]:
    """One weight per latent frame of each window, summing to 1 over the windows at every frame.

    Args:
        plan: the clip's plan.
        method: ``linear`` or ``cosine`` crossfades over each overlap, ``pyramid`` (weight grows
            with the distance from the window's edge, as in FreeNoise), or ``flat`` (plain average).
    """
    if method not in BLEND_METHODS:
        raise ValueError(f"blend={method!r}: choose one of {', '.join(BLEND_METHODS)}")
    raw = []
    windows = plan.windows
    for i, w in enumerate(windows):
        if method == "pyramid":
            j = np.arange(w.length)
            weights = np.minimum(j + 1, w.length - j).astype(np.float64)
        else:
            weights = np.ones(w.length)
            if i > 0 and (n := windows[i - 1].stop - w.start) > 0:
                weights[:n] *= _ramp(n, method)
            if i + 1 < len(windows) and (n := w.stop - windows[i + 1].start) > 0:
                weights[w.length - n :] *= _ramp(n, method)[::-1]
        raw.append(weights)
    total = np.zeros(plan.latent_frames)
    for w, weights in zip(windows, raw):
        total[w.start : w.stop] += weights
    return [weights / total[w.start : w.stop] for w, weights in zip(windows, raw)]


def blend(plan: Plan, window_latents: list[np.ndarray], method: str) -> np.ndarray:
    """Blend denoised windows into the clip's latents.

    Args:
        plan: the clip's plan.
        window_latents: per window, its latents of shape (C, window.length, h, w).
        method: a name from `BLEND_METHODS`.
    Returns:
        latents of shape (C, plan.latent_frames, h, w), float32.
    """
    return blend_range(plan, dict(enumerate(window_latents)), method, 0, plan.latent_frames)


def blend_range(plan: Plan, window_latents: dict[int, np.ndarray], method: str, start: int, stop: int) -> np.ndarray:
    """Blend latent frames ``[start, stop)`` from the windows that cover them.

    Args:
        plan: the clip's plan.
        window_latents: window index -> its latents (C, window.length, h, w); at least every
            window that touches ``[start, stop)``.
        method: a name from `BLEND_METHODS`.
    Returns:
        latents of shape (C, stop - start, h, w), float32.
    """
    c, _, h, w = next(iter(window_latents.values())).shape
    out = np.zeros((c, stop - start, h, w), dtype=np.float64)
    weights = window_weights(plan, method)
    for index in plan.windows_touching(start, stop):
        win = plan.windows[index]
        lo, hi = max(start, win.start), min(stop, win.stop)
        part = window_latents[index][:, lo - win.start : hi - win.start]
        out[:, lo - start : hi - start] += part * weights[index][None, lo - win.start : hi - win.start, None, None]
    return out.astype(np.float32)
