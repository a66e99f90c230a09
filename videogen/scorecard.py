"""`videogen eval --held-out`: a model's scorecard on shapes-world prompts it never trained on.

Three sets of clips, all submitted to one engine at once and judged by `videogen.evaluate`:

- **prompts**: ``per`` clips of each `HELD_OUT` colour-shape-motion combination, each with its
  own caption wording and seed, at the model's default length; colour, shape and motion right.
- **8 windows**: one clip per combination long enough that the model's default windows cut it
  into 8; every seam's ratio (limit `SEAM_LIMIT`).
- **one window**: one default-length clip per combination made as a single window, judged at the
  seams of its default (multi-window) twin from the prompts set: the windowed clip's seams
  should be no rougher than the same clip made whole.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from .encode import read_mp4, write_json
from .evaluate import SEAM_LIMIT, evaluate, seam_frames
from .plan import window_spans
from .presets import quality_preset, resolve_model
from .request import latent_length, resolve
from .shapes import HELD_OUT, caption, sample_scene

SHAPES_MODEL = "miniature"  # the model trained on the shapes world, whatever the default model is
TARGETS = {"colour": 0.95, "motion": 0.90, "shape": 0.80}
SAME_TOLERANCE = 0.05  # "no worse": windowed seams within 5% of the one-window clip's (frame-change noise)


@dataclass(frozen=True)
class Case:
    """One clip to make and judge."""

    name: str  # file stem
    kind: str  # prompts, windows8 or onewindow
    combination: tuple[str, str, str]
    request: dict


def held_out_scenes(combination: tuple[str, str, str], count: int) -> list:
    """The first ``count`` held-out scenes of one combination, in seed order (deterministic)."""
    scenes, seed = [], 0
    while len(scenes) < count:
        scene = sample_scene(seed, "heldout")
        if scene.combination == combination:
            scenes.append(scene)
        seed += 1
    return scenes


def frames_for_windows(model: str, windows: int) -> int:
    """Pixel frames that the model's default quality cuts into exactly ``windows`` windows."""
    preset = resolve_model(model)
    quality = quality_preset(preset.defaults.quality)
    t = preset.vae_scale_temporal
    w, o = latent_length(quality.window, t), quality.overlap // t
    latents = w + (windows - 1) * (w - o)
    assert len(window_spans(latents, w, o)) == windows
    return t * (latents - 1) + 1


def cases(model: str = SHAPES_MODEL, per: int = 4) -> list[Case]:
    """Every clip of the scorecard, in a fixed order."""
    long_frames = frames_for_windows(model, 8)
    out = []
    for combination in sorted(HELD_OUT):
        tag = "-".join(combination)
        scenes = held_out_scenes(combination, per)
        for k, scene in enumerate(scenes):
            out.append(Case(f"{tag}-{k}", "prompts", combination, dict(prompt=caption(scene), model=model, seed=k)))
        first = dict(prompt=caption(scenes[0]), model=model, seed=0)
        out.append(Case(f"{tag}-8windows", "windows8", combination, dict(first, frames=long_frames)))
        frames = resolve(first, resolve_model(model)).frames
        out.append(Case(f"{tag}-onewindow", "onewindow", combination, dict(first, window=frames, overlap=0)))
    return out


def run_scorecard(out: Path, model: str = SHAPES_MODEL, per: int = 4, workers: int = 1, progress: bool = True) -> dict:
    """Make and judge every case's clip under ``out``; write ``scorecard.json`` and ``scorecard.md``."""
    from tqdm import tqdm

    from .driver import Engine

    out.mkdir(parents=True, exist_ok=True)
    todo = cases(model, per)
    start = time.perf_counter()
    with Engine(workers=workers) as engine:
        jobs = {engine.submit(c.request, output=out / f"{c.name}.mp4"): c for c in todo}
        for job in tqdm(engine.as_completed(jobs), total=len(jobs), desc="scorecard", unit="clip", disable=not progress):
            job.result()  # raises if a clip failed
    seconds = time.perf_counter() - start
    reports = {}
    for c in todo:
        frames, _ = read_mp4(out / f"{c.name}.mp4")
        meta = json.loads((out / f"{c.name}.json").read_text())
        if c.kind == "onewindow":  # judged at its windowed twin's seams
            twin = json.loads((out / f"{'-'.join(c.combination)}-0.json").read_text())
            seams = seam_frames(len(frames), twin["window"], twin["overlap"])
        else:
            seams = seam_frames(len(frames), meta["window"], meta["overlap"])
        reports[c.name] = evaluate(frames, c.request["prompt"], seams)
    card = summarise(todo, reports, model, seconds)
    write_json(out / "scorecard.json", card)
    (out / "scorecard.md").write_text(markdown(card))
    return card


def summarise(todo: list[Case], reports: dict, model: str, seconds: float) -> dict:
    """Rates per combination and overall, seam ratios, and each target's verdict."""
    rows = []
    for combination in sorted(HELD_OUT):
        mine = [reports[c.name] for c in todo if c.kind == "prompts" and c.combination == combination]
        long = next(reports[c.name] for c in todo if c.kind == "windows8" and c.combination == combination)
        whole = next(reports[c.name] for c in todo if c.kind == "onewindow" and c.combination == combination)
        windowed = reports[f"{'-'.join(combination)}-0"]
        rows.append(dict(
            combination=" ".join(combination), clips=len(mine),
            colour=sum(r.colour_right for r in mine) / len(mine),
            shape=sum(r.shape_right for r in mine) / len(mine),
            motion=sum(r.motion_right for r in mine) / len(mine),
            seams8_max=max(long.seam_ratios), seams8_mean=statistics.fmean(long.seam_ratios),
            windowed_seam=statistics.fmean(windowed.seam_ratios) if windowed.seam_ratios else None,
            one_window_seam=statistics.fmean(whole.seam_ratios) if whole.seam_ratios else None,
        ))
    prompts = [reports[c.name] for c in todo if c.kind == "prompts"]
    seams8 = [r for c in todo if c.kind == "windows8" for r in reports[c.name].seam_ratios]
    rates = {k: sum(getattr(r, f"{k}_right") for r in prompts) / len(prompts) for k in TARGETS}
    pairs = [(row["windowed_seam"], row["one_window_seam"]) for row in rows if row["windowed_seam"] is not None]
    windowed = statistics.fmean(p[0] for p in pairs) if pairs else None
    whole = statistics.fmean(p[1] for p in pairs) if pairs else None
    return dict(
        model=model, clips=len(todo), seconds=round(seconds, 1), rows=rows, rates=rates,
        seams8=dict(count=len(seams8), mean=statistics.fmean(seams8), max=max(seams8),
                    within_limit=sum(r <= SEAM_LIMIT for r in seams8) / len(seams8)),
        windowed_vs_whole=dict(windowed=windowed, whole=whole),
        passed={**{k: rates[k] >= v for k, v in TARGETS.items()},
                "seams8": max(seams8) <= SEAM_LIMIT,
                "no_worse_than_whole": windowed is not None and windowed <= whole * (1 + SAME_TOLERANCE)},
    )


def markdown(card: dict) -> str:
    """The scorecard as a Markdown table."""
    pct = lambda x: f"{100 * x:.0f}%"  # noqa: E731
    num = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    lines = [
        f"Model `{card['model']}`, {card['clips']} clips in {card['seconds']:.0f} s.",
        "",
        "| held-out combination | clips | colour | shape | motion | 8-window seams (max / mean) | 2-window seam, same clip in 1 window |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in card["rows"]:
        lines.append(f"| {r['combination']} | {r['clips']} | {pct(r['colour'])} | {pct(r['shape'])} | {pct(r['motion'])} "
                     f"| {num(r['seams8_max'])} / {num(r['seams8_mean'])} | {num(r['windowed_seam'])}, {num(r['one_window_seam'])} |")
    rates, s, ww, ok = card["rates"], card["seams8"], card["windowed_vs_whole"], card["passed"]
    verdict = {True: "met", False: "**missed**"}
    lines += [
        f"| **all** | {sum(r['clips'] for r in card['rows'])} | {pct(rates['colour'])} | {pct(rates['shape'])} "
        f"| {pct(rates['motion'])} | {num(s['max'])} / {num(s['mean'])} | {num(ww['windowed'])}, {num(ww['whole'])} |",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| colour right >= 95% | {pct(rates['colour'])} | {verdict[ok['colour']]} |",
        f"| motion right >= 90% | {pct(rates['motion'])} | {verdict[ok['motion']]} |",
        f"| shape right >= 80% | {pct(rates['shape'])} | {verdict[ok['shape']]} |",
        f"| seam ratio <= {SEAM_LIMIT} on 8-window clips ({s['count']} seams) | max {num(s['max'])}, "
        f"{pct(s['within_limit'])} within | {verdict[ok['seams8']]} |",
        f"| windowed seams no worse than one window (5% tolerance) | {num(ww['windowed'])} vs {num(ww['whole'])} | {verdict[ok['no_worse_than_whole']]} |",
        "",
    ]
    return "\n".join(lines)
