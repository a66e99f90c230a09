"""`videogen eval --redraw`: how a model redraws each shape from the true clip under noise.

The scorecard says how often a model's clips have the right shape; this says where a wrong one
comes from. Scenes of each shape are drawn by the shapes world, noised to a level sigma and handed
to the model as a text-to-video input (nothing given); its clean-frame guess, ``x_t - sigma * v``,
is decoded and judged by `evaluate`'s fill ratio (as the shapes world draws them at 32 px: circle
about 0.79, square 1, triangle about 0.58).
Each noisy clip is guessed under its own caption and under the same caption with the shape word
swapped for each other shape, on the same noise: where the prompt steers the outline, the fill
follows the asked shape; where the model reads the outline from the noisy clip, it follows the true
shape; where it does neither, every cell reads the same.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np
import torch

from .denoise import to_uint8
from .evaluate import REDRAW_SIGMAS, judging_size, median_fill, tracks
from .shapes import SHAPE_WORDS, SHAPES, caption, clip_times, render, sample_scene

LATENT_FRAMES = 9  # 33 pixel frames, the miniature's default clip


@dataclass(frozen=True)
class Cell:
    """Fill ratios of one (sigma, true shape, asked shape): the median over a clip's measurable frames, per scene."""

    sigma: float
    true: str
    asked: str
    fills: tuple[float, ...]
    picture: np.ndarray = field(repr=False, compare=False)  # uint8 (H, W, 3): the first scene's guess, middle frame

    @property
    def mean(self) -> float | None:
        kept = [f for f in self.fills if not np.isnan(f)]
        return statistics.fmean(kept) if kept else None


def scenes_of_each_shape(per: int) -> dict[str, list]:
    """The first ``per`` training scenes of each shape that stay the same size (not ``growing``), in seed order."""
    found: dict[str, list] = {s: [] for s in SHAPES}
    seed = 0
    while min(len(v) for v in found.values()) < per:
        scene = sample_scene(seed, "train")
        seed += 1
        if scene.motion != "growing" and len(found[scene.shape]) < per:
            found[scene.shape].append(scene)
    return found


def swap_shape(text: str, true: str, asked: str) -> str:
    """The caption with its word for ``true`` replaced by ``asked``'s first word."""
    return " ".join(SHAPE_WORDS[asked][0] if w in SHAPE_WORDS[true] else w for w in text.split())


def fill_ratio(frames: np.ndarray) -> float:
    """Median fill ratio over the frames where the shape is whole (NaN if none is)."""
    ratio = median_fill(tracks(judging_size(frames)))
    return float("nan") if ratio is None else ratio


@torch.no_grad()
def redraw(source: str, sigmas=REDRAW_SIGMAS, per: int = 8, seed: int = 0, size: int = 32) -> list[Cell]:
    """Judge a model's clean-frame guesses of noised shapes-world clips.

    Args:
        source: a model folder or ``package:<name>`` source whose VAE encodes pixels (the miniature's).
        sigmas: noise levels in (0, 1].
        per: scenes of each shape.
        seed: the noise's seed (scene k of each shape gets noise seeded ``seed + k``).
        size: frame side in pixels, the model's own (the miniature's: 32).
    Returns:
        one `Cell` per (sigma, true shape, asked shape), in that order; asked == true is the real caption.
    """
    from .model import load_model, local_source
    from .train import LatentCodec

    model = load_model(local_source(source))
    codec = LatentCodec(model.vae, size)
    scenes = scenes_of_each_shape(per)
    truth = {s: [codec.encode([(sc, LATENT_FRAMES, 0, LATENT_FRAMES)])[0] for sc in scenes[s]] for s in SHAPES}
    extra = model.in_channels - model.latent_channels  # mask and conditioning channels: nothing given
    embeds = {}
    cells = []
    for sigma in sigmas:
        t = torch.tensor(float(sigma) * model.pipe.scheduler.config.num_train_timesteps)
        for true in SHAPES:
            for asked in SHAPES:
                fills, pictures = [], []
                for k, (scene, x0) in enumerate(zip(scenes[true], truth[true])):
                    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + k))
                    x = ((1 - sigma) * x0 + sigma * noise)[None]  # (1, C, T, h, w)
                    model_input = torch.cat([x, x.new_zeros(1, extra, *x.shape[2:])], dim=1) if extra else x
                    text = caption(scene) if asked == true else swap_shape(caption(scene), true, asked)
                    if text not in embeds:
                        embeds[text] = model.encode_prompt(text, "", 1.0)
                    v = model.predict(model_input, t, embeds[text], 1.0)
                    guess = x - sigma * v.float()
                    frames = frames_of(model, guess)
                    fills.append(fill_ratio(frames))
                    pictures.append(frames[len(frames) // 2])
                cells.append(Cell(float(sigma), true, asked, tuple(fills), pictures[0]))
    return cells


def truth_fills(per: int = 8, size: int = 32) -> dict[str, float]:
    """Mean fill ratio of the scenes `redraw` uses, as the shapes world draws them at ``size`` pixels."""
    frames = 4 * (LATENT_FRAMES - 1) + 1
    return {s: statistics.fmean(fill_ratio(render(sc, clip_times(frames), size)) for sc in scenes)
            for s, scenes in scenes_of_each_shape(per).items()}


def frames_of(model, latents: torch.Tensor) -> np.ndarray:
    """Latents (1, C, T, h, w) decoded by the model's VAE to uint8 frames (F, H, W, 3)."""
    return to_uint8(model.decode(latents))


def markdown(cells: list[Cell], truth: dict[str, float] | None = None) -> str:
    """The cells as a table: a row per sigma, a column per true shape, each cell the fill asked as circle / square / triangle."""
    num = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    head = " | ".join(f"true {s}: asked {' / '.join(a[:3] for a in SHAPES)}" for s in SHAPES)
    lines = [f"| sigma | {head} |", "|---|" + "---|" * len(SHAPES)]
    if truth:
        lines.append("| drawn | " + " | ".join(num(truth[s]) for s in SHAPES) + " |")
    for sigma in sorted({c.sigma for c in cells}, reverse=True):
        row = []
        for true in SHAPES:
            by = {c.asked: c.mean for c in cells if c.sigma == sigma and c.true == true}
            row.append(" / ".join(num(by[a]) for a in SHAPES))
        lines.append(f"| {sigma:g} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def sheet(cells: list[Cell], size: int = 32, cell_width: int = 96):
    """The guesses as a picture: a column per (true shape, asked shape), a row per sigma, the first
    scene's middle frame in each cell with its fill; the top row is that scene as drawn. A `PIL.Image`."""
    from .contact import contact_sheet

    frames = 4 * (LATENT_FRAMES - 1) + 1
    first = {s: scenes[0] for s, scenes in scenes_of_each_shape(1).items()}
    drawn = {s: render(first[s], clip_times(frames), size)[frames // 2] for s in SHAPES}
    columns = [(true, asked) for true in SHAPES for asked in SHAPES]
    images = [drawn[true] for true, _ in columns]
    captions = [f"{true}, asked {asked}" for true, asked in columns]
    by = {(c.sigma, c.true, c.asked): c for c in cells}
    for sigma in sorted({c.sigma for c in cells}, reverse=True):
        for true, asked in columns:
            cell = by[(sigma, true, asked)]
            images.append(cell.picture)
            captions.append(f"sigma {sigma:g}: fill " + ("-" if cell.mean is None else f"{cell.mean:.2f}"))
    return contact_sheet(images, captions, columns=len(columns), cell_width=cell_width, caption_lines=2,
                         font_size=11, title="clean-frame guesses of noised true clips (top: as drawn)")
