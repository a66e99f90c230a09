"""`videogen eval`: judge a clip of the shapes world from its pixels alone.

What is measured, per clip:
- **background**: a straight line down each frame through the colours of its left and right
  border strips (backgrounds are plain or graded top to bottom; shapes keep clear of the sides);
- **foreground**: how far each pixel is from its row's background, as a 0..1 coverage;
- **colour**: the palette colour nearest the mean of the clearly foreground pixels;
- **shape**: the foreground area over its bounding box's area (circle pi/4 = 0.785, square 1,
  triangle 0.5), the median over frames where the shape is whole inside the frame;
- **motion**: from the coverage-weighted centroid and size tracks: ``growing`` when the size
  grows by half, ``bouncing`` when the vertical path is over twice the net vertical move with two
  reversals, else the direction of the net displacement;
- **seams**: for each boundary between temporal windows, the mean frame-to-frame change (mean
  absolute difference after a 3x3 blur, levels of 255) over the transitions the seam spans (its
  overlap and one either side) over the mean change of the six transitions on each side of it
  that no seam spans. A smooth clip scores about 1; a jump at a seam scores well above 1.2.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import RequestError
from .plan import window_spans
from .request import latent_length
from .shapes import COLOURS, MOTION_PHRASES, MOTIONS, SHAPE_WORDS

FOREGROUND_LEVELS = 40.0  # RGB distance from the background below which a pixel counts as background
SEAM_LIMIT = 1.2  # seam ratios above this are flagged
STILL_LEVELS = 0.25  # a mean frame change below this (levels of 255) is invisible: a still clip is smooth
VAE_TEMPORAL = 4  # pixel frames per latent frame in the clips the engine makes (Wan convention)
BORDER_PARTS = 32  # the background is read from the outer 1/32 of the width on each side (2 px at 64 px)
REDRAW_SIGMAS = (0.99, 0.95, 0.9, 0.8, 0.65, 0.5, 0.3, 0.1)  # `videogen eval --redraw`'s noise levels: the transformer's, then the expert's
JUDGE_SIDE = 64  # a clip whose shorter side is twice this or more is area-averaged down by a whole factor first

SYNONYMS = {w: shape for shape, words in SHAPE_WORDS.items() for w in words}
SYNONYMS.update({"gray": "grey", "rising": "up", "falling": "down", "upward": "up", "downward": "down",
                 "bounces": "bouncing", "bouncy": "bouncing", "grows": "growing", "expanding": "growing",
                 "bigger": "growing"})


@dataclass
class Prompt:
    """The colour, shape and motion a prompt asks for (None where it names none)."""

    colour: str | None
    shape: str | None
    motion: str | None


def parse_prompt(prompt: str) -> Prompt:
    """Read colour, shape and motion words (with their synonyms) from a prompt."""
    words = [SYNONYMS.get(w, w) for w in re.findall(r"[a-z]+", prompt.lower())]
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPE_WORDS), None)
    named = [w for w in words if w in MOTIONS or w in MOTION_PHRASES]
    # "bouncing up and down" names directions too: a non-linear motion word wins.
    motion = next((w for w in named if w in MOTION_PHRASES), named[0] if named else None)
    return Prompt(colour, shape, motion)


@dataclass
class Tracks:
    """Per-frame measurements of the foreground."""

    coverage: np.ndarray  # (F, H, W) in [0, 1]
    centre: np.ndarray  # (F, 2) x, y in pixels; NaN where a frame has no foreground
    size: np.ndarray  # (F,) square root of the covered area, pixels
    fill: np.ndarray  # (F,) covered area over bounding-box area; NaN where not measurable


def background(video: np.ndarray) -> np.ndarray:
    """The background (F, H, 1, 3) of float frames (F, H, W, 3): a straight line down each frame,
    through the median colour of its left and right border strips' top half and of their bottom half.

    The shapes world's backgrounds are plain or graded top to bottom, and its shapes keep clear of
    the frame's sides, so the border strips are background whatever the shape's size. (A row's own
    median is not: a made shape as wide as half the row, with its fringe, moves it 40 to 80 levels,
    and the rest of the row then reads as foreground.)
    """
    f, h, w, _ = video.shape
    e = max(1, w // BORDER_PARTS)
    sides = np.concatenate([video[:, :, :e], video[:, :, -e:]], axis=2)  # (F, H, 2e, 3)
    if h < 2:
        return np.median(sides, axis=2, keepdims=True)
    half = h // 2
    top = np.median(sides[:, :half].reshape(f, -1, 3), axis=1)  # (F, 3): the colour at the top half's middle row
    bottom = np.median(sides[:, h - half:].reshape(f, -1, 3), axis=1)
    y_top, y_bottom = (half - 1) / 2, h - 1 - (half - 1) / 2
    rows = np.arange(h, dtype=np.float32)[None, :, None] - y_top  # (1, H, 1)
    line = top[:, None] + (bottom - top)[:, None] * rows / (y_bottom - y_top)  # (F, H, 3)
    return line[:, :, None]


def foreground(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (F, H, W) in [0, 1] and the background (F, H, 1, 3) of uint8 frames (F, H, W, 3)."""
    video = frames.astype(np.float32)
    back = background(video)
    distance = np.linalg.norm(video - back, axis=-1)
    contrast = np.percentile(distance, 99.5, axis=(1, 2), keepdims=True)  # the shape's own colour distance
    coverage = np.clip(distance / np.maximum(contrast, FOREGROUND_LEVELS), 0, 1)
    coverage[distance < FOREGROUND_LEVELS / 2] = 0
    return coverage, back


def tracks(frames: np.ndarray) -> Tracks:
    """Centroid, size and fill-ratio tracks of uint8 frames (F, H, W, 3)."""
    coverage, _ = foreground(frames)
    f, h, w = coverage.shape
    area = coverage.sum(axis=(1, 2))
    ys, xs = np.mgrid[0:h, 0:w]
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = np.stack([(coverage * xs).sum(axis=(1, 2)) / area, (coverage * ys).sum(axis=(1, 2)) / area], axis=1)
    centre[area < 2] = np.nan
    fill = np.full(f, np.nan)
    for i in range(f):
        rows, cols = coverage[i].max(axis=1), coverage[i].max(axis=0)
        if area[i] < 4 or max(rows[0], rows[-1], cols[0], cols[-1]) > 0.1:
            continue  # empty, or cut by the frame's edge
        fill[i] = area[i] / (rows.sum() * cols.sum())  # soft extents: edge pixels count by their coverage
    return Tracks(coverage, centre, np.sqrt(area), fill)


def classify_colour(frames: np.ndarray) -> str | None:
    """The palette colour nearest the mean of the clearly foreground pixels."""
    coverage, _ = foreground(frames)
    core = coverage > 0.9
    if core.sum() < 4:
        return None
    mean = frames[core].astype(np.float32).mean(axis=0)
    return min(COLOURS, key=lambda c: float(np.linalg.norm(mean - np.asarray(COLOURS[c]))))


def median_fill(t: Tracks) -> float | None:
    """The median fill ratio over the frames where it was measured (None where none was)."""
    fill = t.fill[~np.isnan(t.fill)]
    return float(np.median(fill)) if len(fill) else None


def classify_shape(t: Tracks) -> str | None:
    """circle, square or triangle from the median fill ratio."""
    ratio = median_fill(t)
    if ratio is None:
        return None
    return "triangle" if ratio < 0.68 else "circle" if ratio < 0.89 else "square"


def classify_motion(t: Tracks, side: int) -> str | None:
    """left, right, up, down, bouncing or growing from the centroid and size tracks."""
    ok = ~np.isnan(t.centre[:, 0])
    if ok.sum() < 3:
        return None
    centre, size = t.centre[ok], t.size[ok]
    q = max(1, len(centre) // 4)
    if size[-q:].mean() > 1.5 * max(size[:q].mean(), 1e-6):
        return "growing"
    y = centre[:, 1]
    path, net = np.abs(np.diff(y)).sum(), abs(y[-1] - y[0])
    steps = np.diff(y)[np.abs(np.diff(y)) > 0.02 * side]
    reversals = int((np.diff(np.sign(steps)) != 0).sum()) if len(steps) > 1 else 0
    if path > 0.3 * side and path > 2 * net and reversals >= 2:
        return "bouncing"
    dx, dy = centre[-q:].mean(axis=0) - centre[:q].mean(axis=0)
    if max(abs(dx), abs(dy)) < 0.1 * side:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def seam_frames(frames: int, window: int, overlap: int) -> list[list[int]]:
    """For each seam of the engine's plan, the pixel-frame transitions it spans.

    Transition ``j`` is the change from pixel frame ``j`` to ``j + 1``. A seam spans its overlap
    (where two windows are blended) plus one transition either side.

    Args:
        frames: pixel frames in the clip; window, overlap: the request's (pixel frames).
    """
    spans = window_spans(latent_length(frames, VAE_TEMPORAL), latent_length(window, VAE_TEMPORAL),
                         overlap // VAE_TEMPORAL)
    seams = []
    for (_, stop), (start, _) in zip(spans, spans[1:]):
        # The overlap is pixel frames 4 * start - 3 .. 4 * (stop - 1): transitions 4 * start - 4 (into
        # it) to 4 * (stop - 1) (out of it), and one more either side.
        first = max(0, VAE_TEMPORAL * start - VAE_TEMPORAL - 1)
        last = min(frames - 2, VAE_TEMPORAL * (stop - 1) + 1)
        seams.append(list(range(first, max(first, last) + 1)))
    return seams


def even_seams(frames: int, windows: int) -> list[list[int]]:
    """Seams of ``windows`` equal windows with no overlap: the boundary's transition and one either side."""
    seams = []
    for k in range(1, windows):
        j = round(frames * k / windows) - 1
        seams.append([i for i in (j - 1, j, j + 1) if 0 <= i < frames - 1])
    return seams


def frame_changes(frames: np.ndarray) -> np.ndarray:
    """Mean absolute change (levels of 255) from each frame to the next, (F-1,), after a 3x3 box blur.

    The blur keeps a shape moving by a fraction of a pixel per frame from reading as alternately
    still and jumping.
    """
    video = frames.astype(np.float32)
    padded = np.pad(video, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = video.shape[1:3]
    blurred = sum(padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0
    return np.abs(np.diff(blurred, axis=0)).mean(axis=(1, 2, 3))


def seam_ratios(frames: np.ndarray, seams: list[list[int]], reach: int = 6) -> list[float]:
    """Each seam's mean frame-to-frame change over the mean change in the windows beside it.

    Args:
        frames: uint8 (F, H, W, 3).
        seams: per seam, its transitions (``j``: frame ``j`` to ``j + 1``).
        reach: transitions taken on each side of a seam for its baseline. Local, because a
            shape's speed changes over a clip (bouncing, growing) but hardly within a few frames.
    """
    change = frame_changes(frames)
    at_seams = {j for s in seams for j in s}
    ratios = []
    for seam in filter(None, seams):
        before = [j for j in range(seam[0] - 1, -1, -1) if j not in at_seams][:reach]
        after = [j for j in range(seam[-1] + 1, len(change)) if j not in at_seams][:reach]
        inside = change[before + after] if before + after else change
        baseline = max(float(inside.mean()), STILL_LEVELS)
        ratios.append(float(change[seam].mean() / baseline))
    return ratios


@dataclass
class Report:
    """What `evaluate` found, and whether it matches the prompt."""

    prompt: Prompt
    found: Prompt
    fill_ratio: float | None
    colour_right: bool
    shape_right: bool
    motion_right: bool
    seam_ratios: list[float] = field(default_factory=list)

    @property
    def seams_smooth(self) -> bool:
        return all(r <= SEAM_LIMIT for r in self.seam_ratios)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seams_smooth"] = self.seams_smooth
        d["seam_max"] = max(self.seam_ratios, default=None)
        return d


def judging_size(frames: np.ndarray) -> np.ndarray:
    """Frames area-averaged by a whole factor to a shorter side of `JUDGE_SIDE` to 2x it.

    Clips enlarged for viewing (the built-in model's 32 px frames are written at 256 px) are
    judged at about the scale the shapes world is drawn at; the measures are ratios and
    fractions, so the factor changes them little, but it keeps the 3x3 blur and the
    per-row background meaningful and the work small.
    """
    f, h, w, c = frames.shape
    k = min(h, w) // JUDGE_SIDE
    if k < 2:
        return frames
    h, w = h // k * k, w // k * k
    small = frames[:, :h, :w].reshape(f, h // k, k, w // k, k, c).mean(axis=(2, 4))
    return np.rint(small).astype(np.uint8)


def evaluate(frames: np.ndarray, prompt: str, seams: list[list[int]] | None = None) -> Report:
    """Judge uint8 frames (F, H, W, 3) against ``prompt``; ``seams`` from `seam_frames` or `even_seams`."""
    frames = judging_size(frames)
    asked = parse_prompt(prompt)
    t = tracks(frames)
    found = Prompt(classify_colour(frames), classify_shape(t), classify_motion(t, min(frames.shape[1:3])))
    return Report(
        prompt=asked,
        found=found,
        fill_ratio=median_fill(t),
        colour_right=asked.colour is not None and asked.colour == found.colour,
        shape_right=asked.shape is not None and asked.shape == found.shape,
        motion_right=asked.motion is not None and asked.motion == found.motion,
        seam_ratios=seam_ratios(frames, seams) if seams else [],
    )


def evaluate_file(path: str | Path, prompt: str | None = None, windows: int | None = None) -> Report:
    """Judge an MP4. The prompt and the window plan come from its JSON sidecar unless given.

    Args:
        path: the MP4.
        prompt: what the clip should show; default: the sidecar's ``prompt``.
        windows: judge seams of this many equal windows instead of the sidecar's plan.
    """
    from .encode import read_mp4, sidecar_path

    path = Path(path)
    if not path.is_file():
        raise RequestError("clip", str(path), "no such file")
    frames, _ = read_mp4(path)
    side = sidecar_path(path)
    meta = json.loads(side.read_text()) if side.is_file() else {}
    prompt = prompt if prompt is not None else meta.get("prompt")
    if not prompt:
        raise RequestError("prompt", prompt, f"not given and no prompt in {side}")
    if windows is not None:
        if windows < 1:
            raise RequestError("windows", windows, "must be at least 1")
        seams = even_seams(len(frames), windows)
    elif {"window", "overlap"} <= meta.keys():
        seams = seam_frames(len(frames), int(meta["window"]), int(meta["overlap"]))
    else:
        seams = []
    return evaluate(frames, prompt, seams)


def cmd_eval(args: argparse.Namespace) -> int:
    if args.redraw:
        return cmd_redraw(args)
    if args.held_out:
        from .scorecard import run_scorecard

        if args.clip is not None:
            raise RequestError("clip", args.clip, "give a clip or --held-out, not both")
        if args.per < 1:
            raise RequestError("per", args.per, "must be at least 1")
        card = run_scorecard(Path(args.output), model=args.model, per=args.per, workers=args.workers, progress=not args.json)
        if args.json:
            print(json.dumps(card))
        else:
            print((Path(args.output) / "scorecard.md").read_text())
        return 0 if all(card["passed"].values()) else 1
    if args.clip is None:
        raise RequestError("clip", None, "give the MP4 to judge (or --held-out for a model's scorecard)")
    report = evaluate_file(args.clip, args.prompt, args.windows)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    yes = {True: "yes", False: "no"}
    print(f"colour  {yes[report.colour_right]:3}  asked {report.prompt.colour}, found {report.found.colour}")
    print(f"shape   {yes[report.shape_right]:3}  asked {report.prompt.shape}, found {report.found.shape} "
          f"(fill {report.fill_ratio if report.fill_ratio is None else round(report.fill_ratio, 2)})")
    print(f"motion  {yes[report.motion_right]:3}  asked {report.prompt.motion}, found {report.found.motion}")
    if report.seam_ratios:
        ratios = " ".join(f"{r:.2f}" for r in report.seam_ratios)
        print(f"seams   {yes[report.seams_smooth]:3}  ratios {ratios} (limit {SEAM_LIMIT})")
    return 0


def cmd_redraw(args: argparse.Namespace) -> int:
    from .encode import check_png_path
    from .presets import resolve_model
    from .redraw import markdown, redraw, truth_fills

    if args.clip is not None or args.held_out:
        raise RequestError("redraw", True, "judges a model, not a clip: give it without a clip or --held-out")
    if args.per < 1:
        raise RequestError("per", args.per, "must be at least 1")
    try:
        sigmas = [float(s) for s in args.sigmas.split(",")]
    except ValueError:
        raise RequestError("sigmas", args.sigmas, "must be numbers separated by commas") from None
    if not sigmas or not all(0 < s <= 1 for s in sigmas):
        raise RequestError("sigmas", args.sigmas, "each must be in (0, 1]")
    if args.sheet is not None:
        check_png_path("sheet", args.sheet)
    preset = resolve_model(args.model)
    size = min(preset.defaults.width, preset.defaults.height)
    cells = redraw(preset.source, sigmas, per=args.per, size=size)
    truth = truth_fills(args.per, size)
    if args.json:
        print(json.dumps({"drawn": truth, "cells": [dict(sigma=c.sigma, true=c.true, asked=c.asked, fill=c.mean,
                                                        fills=list(c.fills)) for c in cells]}))
    else:
        print(markdown(cells, truth), end="")
    if args.sheet is not None:
        from .encode import atomic_path
        from .redraw import sheet

        with atomic_path(args.sheet, ".png") as tmp:
            sheet(cells, size).save(tmp, format="PNG")
    return 0


def add_command(sub) -> None:
    """Register ``videogen eval`` on the CLI's subparsers."""
    from .scorecard import SHAPES_MODEL

    p = sub.add_parser("eval", help="judge a shapes-world clip (colour, shape, motion, seams), or a model's scorecard",
                       description="Read an MP4 and report, from its pixels alone, whether colour, shape and "
                                   "motion match the prompt, and how smooth each window seam is. With --held-out, "
                                   "make clips of the colour-shape-motion combinations held out of training and "
                                   "print the model's scorecard against its targets.",
                       epilog="examples: videogen eval out.mp4 | videogen eval --held-out -o scorecard/ | videogen eval --redraw")
    p.add_argument("clip", nargs="?", help="the MP4 to judge")
    p.add_argument("--prompt", help="what the clip should show (default: the prompt in its JSON sidecar)")
    p.add_argument("--windows", type=int, help="judge seams of N equal windows (default: the sidecar's plan)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    card = p.add_argument_group("scorecard")
    card.add_argument("--held-out", action="store_true", help="make and judge clips of the held-out combinations")
    card.add_argument("-o", "--output", default="scorecard", metavar="DIR", help="clips, scorecard.md and scorecard.json (default scorecard/)")
    card.add_argument("--per", type=int, default=4, metavar="N",
                      help="clips per held-out combination; with --redraw, scenes per shape (default 4)")
    card.add_argument("--model", default=SHAPES_MODEL, metavar="NAME_OR_PATH", help=f"model to score (default {SHAPES_MODEL})")
    card.add_argument("--workers", type=int, default=1, metavar="N", help="denoiser actors")
    probe = p.add_argument_group("redraw (where a model's outlines come from)")
    probe.add_argument("--redraw", action="store_true",
                       help="noise true clips of each shape and judge the fill ratio of the model's clean-frame "
                            "guess under its caption and under the caption's shape word swapped (--model, --per)")
    probe.add_argument("--sigmas", default=",".join(f"{s:g}" for s in REDRAW_SIGMAS),
                       metavar="LIST", help="noise levels, comma-separated (default %(default)s)")
    probe.add_argument("--sheet", metavar="SHEET.png", type=Path,
                       help="also draw the guesses: a column per true and asked shape, a row per sigma")
    p.set_defaults(func=cmd_eval)
