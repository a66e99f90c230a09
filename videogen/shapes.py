"""The shapes world: short clips of one coloured shape moving on a plain or gently graded background.

The built-in model is trained on these clips and judged by them. A clip is a `Scene` (its
parameters, drawn from a seed) rendered at any list of times in ``[0, 1]`` (0 the clip's first
pixel frame, 1 its last), so the same scene gives a short clip, a long one, or a few keyframes of
a long one. Drawing is numpy only, anti-aliased by supersampling; nothing is stored.

Some colour-shape-motion combinations (`HELD_OUT`) are never drawn for training: prompts made of
them test whether the model composes words it has only seen apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 220, 30),
    "green": (35, 185, 60),
    "blue": (40, 80, 235),
    "purple": (145, 45, 195),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down", "bouncing", "growing")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"black": (0, 0, 0), "grey": (190, 190, 190)}

# Never drawn in training mode. Every colour, shape and motion still appears in training, only
# not in these combinations.
HELD_OUT: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("red", "triangle", "up"),
        ("orange", "circle", "down"),
        ("yellow", "square", "left"),
        ("green", "circle", "right"),
        ("blue", "triangle", "bouncing"),
        ("purple", "square", "growing"),
        ("white", "circle", "left"),
        ("red", "square", "bouncing"),
        ("blue", "circle", "growing"),
        ("green", "triangle", "down"),
    }
)

# Caption vocabulary: each canonical word and the words that may stand for it in a prompt.
SHAPE_WORDS = {"circle": ("circle", "ball", "disc"), "square": ("square", "box", "block"), "triangle": ("triangle",)}
DIRECTION_PHRASES = ("moving {d}", "moving to the {d}", "drifting to the {d}", "sliding {d}", "going {d}")
VERTICAL_PHRASES = ("moving {d}", "drifting {d}", "sliding {d}", "going {d}")
MOTION_PHRASES = {
    "bouncing": ("bouncing", "bouncing up and down", "bouncing on the floor"),
    "growing": ("growing", "growing bigger", "getting bigger"),
}
BACKGROUND_WORDS = {"black": ("black", "dark"), "grey": ("grey", "gray", "light")}
TEMPLATES = (
    "{a} {colour} {shape} {motion}",
    "{colour} {shape} {motion} on {background}",
    "{a} {colour} {shape} {motion} on a {background} background",
    "the {colour} {shape} is {motion}",
)

SUPERSAMPLE = 4  # sub-pixels per pixel side: edges get 17 levels of coverage
BOUNCES = 2  # floor contacts in a bouncing clip, whatever its length
GROWN_RADIUS = 0.22  # a growing shape ends this big (under half the frame, so rows stay mostly background)


@dataclass(frozen=True)
class Scene:
    """One clip's parameters. Positions and sizes are fractions of the frame side.

    Args:
        colour, shape, motion, background: words from `COLOURS`, `SHAPES`, `MOTIONS`, `BACKGROUNDS`.
        x, y: the shape's centre at the start (0 left/top, 1 right/bottom).
        radius: half the shape's extent (for ``growing``, its size at the start).
        gradient: brightness change from the top to the bottom of the background, in levels of 255.
        phrasing: which caption template and synonyms the caption uses.
    """

    colour: str
    shape: str
    motion: str
    background: str
    x: float
    y: float
    radius: float
    gradient: float
    phrasing: int

    @property
    def combination(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.motion)

    def centre_and_radius(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre (x, y) and radius at times ``t`` in [0, 1], as fractions of the frame side."""
        t = np.asarray(t, dtype=np.float64)
        m = self.radius + 0.04  # the shape stays inside the frame
        x, y, r = np.full_like(t, self.x), np.full_like(t, self.y), np.full_like(t, self.radius)
        if self.motion == "right":
            x = m + (1 - 2 * m) * t
        elif self.motion == "left":
            x = 1 - m - (1 - 2 * m) * t
        elif self.motion == "down":
            y = m + (1 - 2 * m) * t
        elif self.motion == "up":
            y = 1 - m - (1 - 2 * m) * t
        elif self.motion == "bouncing":
            floor, top = 1 - m, m + 0.1
            y = floor - (floor - top) * np.abs(np.sin(np.pi * (BOUNCES - 0.5) * t + np.pi / 2))
        elif self.motion == "growing":
            r = self.radius + (GROWN_RADIUS - self.radius) * t
        return x, y, r



def sample_scene(seed: int, split: str = "train") -> Scene:
    """The scene for ``seed``: the same seed always gives the same scene.

    Args:
        seed: any non-negative integer.
        split: ``train`` never gives a `HELD_OUT` combination; ``heldout`` gives only those;
            ``all`` gives any.
    """
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split={split!r}: must be train, heldout or all")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5CE7E]))
    while True:
        if split == "heldout":
            held = sorted(HELD_OUT)
            colour, shape, motion = held[rng.integers(len(held))]
        else:
            colour = list(COLOURS)[rng.integers(len(COLOURS))]
            shape = SHAPES[rng.integers(len(SHAPES))]
            motion = MOTIONS[rng.integers(len(MOTIONS))]
            if split == "train" and (colour, shape, motion) in HELD_OUT:
                continue
        break
    # White on the light background has too little contrast to read.
    background = "black" if colour == "white" else list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    radius = 0.09 if motion == "growing" else float(rng.uniform(0.12, 0.17))
    m = radius + 0.04
    return Scene(
        colour=colour,
        shape=shape,
        motion=motion,
        background=background,
        x=float(rng.uniform(m, 1 - m)) if motion != "growing" else float(rng.uniform(0.35, 0.65)),
        y=float(rng.uniform(m, 1 - m)) if motion != "growing" else float(rng.uniform(0.35, 0.65)),
        radius=radius,
        gradient=float(rng.choice([0.0, 0.0, rng.uniform(-24, 24)])),
        phrasing=int(rng.integers(1 << 16)),
    )


def caption(scene: Scene) -> str:
    """The scene's caption, with the wording chosen by ``scene.phrasing``."""
    rng = np.random.default_rng(scene.phrasing)
    if scene.motion in MOTION_PHRASES:
        motion = rng.choice(MOTION_PHRASES[scene.motion])
    else:
        phrases = DIRECTION_PHRASES if scene.motion in ("left", "right") else VERTICAL_PHRASES
        motion = rng.choice(phrases).format(d=scene.motion)
    return str(rng.choice(TEMPLATES)).format(
        a="an" if scene.colour[0] in "aeiou" else "a",
        colour=scene.colour,
        shape=rng.choice(SHAPE_WORDS[scene.shape]),
        motion=motion,
        background=rng.choice(BACKGROUND_WORDS[scene.background]),
    )


def vocabulary() -> list[str]:
    """Every word a caption can use, in a fixed order (the built-in tokenizer's vocabulary)."""
    words: list[str] = ["a", "an"]
    texts = [*COLOURS, *(w for ws in SHAPE_WORDS.values() for w in ws), *MOTIONS, *TEMPLATES]
    texts += [p for ps in (DIRECTION_PHRASES, VERTICAL_PHRASES, *MOTION_PHRASES.values()) for p in ps]
    texts += [w for ws in BACKGROUND_WORDS.values() for w in ws]
    for text in texts:
        for w in re.sub(r"\{\w+\}", " ", text).split():
            if w not in words:
                words.append(w)
    return words


def _coverage(shape: str, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Inside-ness (bool) of sub-pixel offsets ``u, v`` from the centre, in units of the frame side."""
    if shape == "circle":
        return u * u + v * v <= r * r
    if shape == "square":
        return (np.abs(u) <= r) & (np.abs(v) <= r)
    # An upright triangle filling the lower half-width at the base: apex (0, -r), base corners (+-r, r).
    return (v <= r) & (v >= -r) & (np.abs(u) <= (v + r) / 2)


def render(scene: Scene, times, size: int) -> np.ndarray:
    """Draw the scene at ``times`` (fractions of the clip, in [0, 1]).

    Args:
        scene: what to draw.
        times: sequence of F times.
        size: frame side in pixels (frames are square).
    Returns:
        uint8 frames (F, size, size, 3).
    """
    times = np.asarray(times, dtype=np.float64)
    n = size * SUPERSAMPLE
    grid = (np.arange(n) + 0.5) / n  # sub-pixel centres, fractions of the side
    cx, cy, r = (a[:, None, None] for a in scene.centre_and_radius(times))
    inside = _coverage(scene.shape, grid[None, None, :] - cx, grid[None, :, None] - cy, r)  # (F, n, n)
    alpha = inside.reshape(len(times), size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(2, 4))[..., None]
    ramp = (np.arange(size) + 0.5) / size - 0.5
    background = np.asarray(BACKGROUNDS[scene.background], np.float64) + scene.gradient * ramp[:, None, None]
    colour = np.asarray(COLOURS[scene.colour], np.float64)
    frames = alpha * colour + (1 - alpha) * background[None].clip(0, 255)
    return frames.round().clip(0, 255).astype(np.uint8)


def clip_times(frames: int) -> np.ndarray:
    """Evenly spaced times for a clip of ``frames`` pixel frames spanning the whole motion."""
    return np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
