"""Running an ad batch: every candidate onto the actor pool at once, ranked, cut to each format,
overlaid, written, and listed in a manifest with its cost.

For a checked `Batch` (see `spec.py`), `run_batch`:
1. skips variants finished by an earlier run (their record, MP4s and thumbnails exist and were
   made from the same inputs), so a restarted batch picks up where it stopped;
2. submits each distinct clip once (variant x seed x generation size; variants whose prompts agree
   share clips), all at once, so the engine keeps every actor busy;
3. scores each clip as it arrives; when all of a variant's candidates are in, keeps its best
   ``keep`` seeds, scales and crops them to every format, draws the overlay, and writes one MP4 per
   kept seed x format, then the variant's record;
4. writes ``manifest.csv``, ``manifest.json`` and ``contact_sheet.png`` from every record.

The engine's task cache makes a re-run after a change recompute only the clips whose inputs changed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .. import __version__
from ..contact import contact_sheet
from ..encode import atomic_path, write_json, write_mp4
from .formats import fit_frames
from .overlay import apply, layout, render
from .rank import SCORERS, Scorer, top_k
from .spec import Batch, Variant

RECORDS = ".variants"  # per-variant records and thumbnails, inside the output folder
THUMB_HEIGHT = 320
MANIFEST_FIELDS = (
    "variant", "format", "seed", "rank", "score", "path", "width", "height", "seconds",
    "prompt", "headline", "cta", "actor_seconds", "cost",
)


@dataclass
class BatchReport:
    """What one run did. ``utilisation`` = busy actor-seconds / (wall seconds x actors)."""

    out_dir: Path
    variants: int
    skipped: int
    clips: int  # clips submitted this run
    cached_tasks: int
    wall_seconds: float
    actor_seconds: float
    actors: int
    utilisation: float
    cost: float
    rows: list[dict]

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("rows", "out_dir")} | {"out_dir": str(self.out_dir)}


def clip_count(batch: Batch) -> int:
    """Distinct clips the batch generates (shared prompts and sizes counted once)."""
    return len(batch.unique_requests())


def dry_run(batch: Batch, out_dir: Path | None = None) -> str:
    """The matrix, the clip count and the estimated cost, as text; generates nothing.

    The cost uses the actor-seconds per clip measured by an earlier run into ``out_dir`` when its
    manifest exists and that run computed every task, else the spec's ``pricing.clip_seconds``.
    """
    spec = batch.spec
    names = list(batch.variants[0].values)
    lines = [f"{spec.name}: {len(batch.variants)} variants x {spec.candidates} candidates x "
             f"{len(set(batch.sizes.values()))} generation sizes; formats: "
             + ", ".join(f"{f.name} {f.width}x{f.height} (made at {batch.sizes[f.name][0]}x{batch.sizes[f.name][1]})" for f in batch.formats),
             ""]
    table = [["variant"] + names] + [[v.id] + [v.values[n] for n in names] for v in batch.variants]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    clips = clip_count(batch)
    per_clip, source = spec.pricing.clip_seconds, "pricing.clip_seconds"
    manifest = out_dir / "manifest.json" if out_dir is not None else None
    if manifest is not None and manifest.exists():
        earlier = json.loads(manifest.read_text())
        if earlier.get("clips_generated") and not earlier.get("cached_tasks"):  # a run from the cache would underestimate
            per_clip = earlier["actor_seconds_generated"] / earlier["clips_generated"]
            source = f"measured in {manifest}"
    actor_seconds = clips * per_clip
    lines += ["", f"clips to generate: {clips} ({len(batch.variants) * spec.keep * len(batch.formats)} MP4s kept)",
              f"estimated: {actor_seconds:.0f} actor-seconds ({per_clip:.1f} s per clip, {source}), "
              f"cost {actor_seconds / 3600 * spec.pricing.gpu_hour:.2f} at {spec.pricing.gpu_hour:g} per GPU-hour"]
    return "\n".join(lines)


def _fingerprint(batch: Batch, v: Variant) -> str:
    """A digest of everything a variant's outputs depend on."""
    requests = {f"{seed}:{w}x{h}": r for (vid, seed, (w, h)), r in batch.clips.items() if vid == v.id}
    logo = hashlib.sha256(batch.logo.tobytes()).hexdigest() if batch.logo is not None else None
    blob = json.dumps([__version__, requests, v.headline, v.cta, batch.spec.overlay.model_dump(), logo,
                       [f.model_dump() for f in batch.formats], batch.sizes, batch.spec.scorer, batch.spec.keep],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _finished(out_dir: Path, v: Variant, fingerprint: str) -> dict | None:
    record = out_dir / RECORDS / f"{v.id}.json"
    if not record.exists():
        return None
    data = json.loads(record.read_text())
    if data.get("fingerprint") != fingerprint:
        return None
    for row in data["rows"]:
        if not (out_dir / row["path"]).exists() or not (out_dir / RECORDS / row["thumb"]).exists():
            return None
    return data


def run_batch(
    batch: Batch,
    out_dir: str | Path,
    engine,
    scorer: Scorer | None = None,
    on_event: Callable[[str, dict], None] | None = None,
) -> BatchReport:
    """Generate, rank, overlay and write a batch; returns what it did.

    Args:
        batch: from `load_spec`.
        out_dir: the output folder (created if missing).
        engine: a `videogen.Engine`; give it a ``cache_dir`` so re-runs cost almost nothing.
        scorer: ``(frames, prompt) -> float``, higher is better; default the spec's ``scorer``.
        on_event: called with ``("clip", info)`` as each clip arrives (from this thread) and
            ``("variant", record)`` as each variant is written (from a writer thread).
    Raises:
        Exception: the first clip's error, after every variant that could finish has been written.
    """
    out_dir = Path(out_dir)
    (out_dir / RECORDS).mkdir(parents=True, exist_ok=True)
    spec = batch.spec
    scorer = scorer or SCORERS[spec.scorer]
    price = spec.pricing.gpu_hour / 3600.0

    # 1. Skip what an earlier run finished.
    records, todo = {}, []
    for v in batch.variants:
        fingerprint = _fingerprint(batch, v)
        if (done := _finished(out_dir, v, fingerprint)) is not None:
            records[v.id] = done
        else:
            todo.append((v, fingerprint))

    # 2. Every distinct clip of the remaining variants onto the pool at once.
    start = time.perf_counter()
    needed = {v.id: [k for k in batch.clips if k[0] == v.id] for v, _ in todo}
    users: dict[str, list] = {}  # request JSON -> clip keys that use it
    for keys in needed.values():
        for k in keys:
            users.setdefault(json.dumps(batch.clips[k], sort_keys=True), []).append(k)
    jobs = {engine.submit(json.loads(r)): r for r in users}

    # 3. Score clips as they arrive; finish each variant when its last candidate is in.
    frames: dict[tuple, np.ndarray] = {}
    scores: dict[tuple, float] = {}
    seconds: dict[tuple, float] = {}
    pending = {vid: set(keys) for vid, keys in needed.items()}
    fingerprints = dict((v.id, fp) for v, fp in todo)
    variants = {v.id: v for v in batch.variants}
    busy, cached, first_error = 0.0, 0, None
    # Cutting, overlaying and encoding run beside the loop, so the next clips keep arriving meanwhile.
    writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="videogen-ads")
    written = {}

    def finish(vid: str, clips: dict) -> dict:
        record = _write_variant(batch, variants[vid], needed[vid], clips, scores, seconds, fingerprints[vid], out_dir, price)
        if on_event is not None:
            on_event("variant", record)
        return record

    for job in engine.as_completed(jobs):
        try:
            result = job.result()
        except Exception as e:
            first_error = first_error or e
            continue
        busy += result.actor_seconds
        cached += result.cached_tasks
        score = float(scorer(result.frames, result.spec.prompt))
        keys = users[jobs[job]]
        for k in keys:
            frames[k], scores[k] = result.frames, score
            seconds[k] = result.actor_seconds / len(keys)
        if on_event is not None:
            on_event("clip", dict(request=json.loads(jobs[job]), score=score, actor_seconds=result.actor_seconds,
                                  cached_tasks=result.cached_tasks))
        for k in keys:
            pending[k[0]].discard(k)
            if not pending[k[0]] and k[0] not in written:
                written[k[0]] = writer.submit(finish, k[0], {key: frames.pop(key) for key in needed[k[0]]})
    writer.shutdown(wait=True)
    for vid, future in written.items():
        if future.exception() is not None:
            first_error = first_error or future.exception()
        else:
            records[vid] = future.result()
    wall = time.perf_counter() - start

    # 4. The manifest and the contact sheet, from every variant's record.
    rows = [row for v in batch.variants if v.id in records for row in records[v.id]["rows"]]
    generated = sum(1 for j in jobs if j.future.done() and j.future.exception() is None)
    report = BatchReport(out_dir, len(batch.variants), len(batch.variants) - len(todo), len(jobs), cached, round(wall, 3),
                         round(busy, 3), engine.workers, round(busy / (wall * engine.workers), 4) if jobs and wall > 0 else 0.0,
                         round(sum(r["cost"] for r in rows), 6), rows)
    _write_manifest(batch, out_dir, rows, report, generated)
    if first_error is not None:
        raise first_error
    return report


def _write_variant(batch: Batch, v: Variant, keys: list, frames: dict, scores: dict, seconds: dict,
                   fingerprint: str, out_dir: Path, price: float) -> dict:
    """Rank a variant's candidates, write its kept MP4s and thumbnails, and its record."""
    spec = batch.spec
    # A candidate is a seed; its score is the mean over the sizes it was made at.
    by_seed = {seed: float(np.mean([scores[k] for k in keys if k[1] == seed])) for seed in batch.seeds}
    kept = top_k(by_seed, spec.keep)
    variant_seconds = sum(seconds[k] for k in keys)  # every candidate's share, discarded ones included
    rows = []
    n_rows = len(kept) * len(batch.formats)
    for rank, seed in enumerate(kept, 1):
        for fmt in batch.formats:
            size = batch.sizes[fmt.name]
            clip_spec = batch.specs[(v.id, seed, size)]
            delivered = fit_frames(frames[(v.id, seed, size)], fmt.width, fmt.height)
            if v.headline or v.cta or batch.logo is not None:
                lay = layout(fmt, spec.overlay, v.headline, v.cta, batch.logo)
                delivered = apply(delivered, render(lay, fmt.width, fmt.height))
            name = f"{v.id}_seed{seed}_{fmt.name}"
            metadata = dict(clip_spec.to_dict(), variant=v.id, variables=v.values, format=fmt.name, headline=v.headline,
                            cta=v.cta, score=by_seed[seed], videogen_version=__version__)
            write_mp4(delivered, out_dir / f"{name}.mp4", clip_spec.fps, metadata)
            thumb = Image.fromarray(delivered[len(delivered) // 2])
            thumb = thumb.resize((max(1, round(thumb.width * THUMB_HEIGHT / thumb.height)), THUMB_HEIGHT), Image.Resampling.LANCZOS)
            with atomic_path(out_dir / RECORDS / f"{name}.png", ".png") as tmp:
                thumb.save(tmp, format="PNG")
            actor_seconds = variant_seconds / n_rows
            rows.append(dict(
                variant=v.id, format=fmt.name, seed=seed, rank=rank, score=round(by_seed[seed], 6), path=f"{name}.mp4",
                width=fmt.width, height=fmt.height, seconds=round(clip_spec.frames / clip_spec.fps, 3),
                prompt=v.prompt, headline=v.headline or "", cta=v.cta or "", variables=v.values,
                actor_seconds=round(actor_seconds, 4), cost=round(actor_seconds * price, 6), thumb=f"{name}.png",
            ))
    record = dict(fingerprint=fingerprint, variant=v.id, candidates={str(s): round(x, 6) for s, x in by_seed.items()},
                  kept=kept, rows=rows)
    write_json(out_dir / RECORDS / f"{v.id}.json", record)
    return record


def _write_manifest(batch: Batch, out_dir: Path, rows: list[dict], report: BatchReport, generated: int) -> None:
    names = list(batch.variants[0].values)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_FIELDS) + names, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row | row["variables"])
    with atomic_path(out_dir / "manifest.csv", ".csv") as tmp:
        tmp.write_text(buf.getvalue())
    spec = batch.spec
    write_json(out_dir / "manifest.json", dict(
        name=spec.name, spec=str(batch.path), videogen_version=__version__, gpu_hour_price=spec.pricing.gpu_hour,
        variants=report.variants, skipped_variants=report.skipped, clips_generated=generated,
        actor_seconds_generated=report.actor_seconds, cached_tasks=report.cached_tasks,
        wall_seconds=report.wall_seconds, actors=report.actors, utilisation=report.utilisation,
        actor_seconds=round(sum(r["actor_seconds"] for r in rows), 3), cost=report.cost,
        rows=[{k: v for k, v in r.items() if k != "thumb"} for r in rows],
    ))
    if rows:
        images = [Image.open(out_dir / RECORDS / r["thumb"]).convert("RGB") for r in rows]
        captions = [f"{r['variant']}\n{r['format']}  seed {r['seed']}  score {r['score']:.3f}" for r in rows]
        sheet = contact_sheet(images, captions, columns=len(batch.formats) * spec.keep, cell_width=180,
                              title=f"{spec.name}: {report.variants} variants, {len(rows)} clips")
        with atomic_path(out_dir / "contact_sheet.png", ".png") as tmp:
            sheet.save(tmp, format="PNG")


def measure_batch(spec_path: str | Path, out_dir: str | Path, workers: int = 2, clip: dict | None = None,
                  from_cache: bool = True, **engine_kwargs) -> dict:
    """Time a batch three ways on one engine: fresh, re-run with nothing changed, re-run from the cache alone.

    Args:
        spec_path: the spec.
        out_dir: a scratch folder; emptied first. The task cache goes in ``out_dir/cache``.
        workers: actors.
        clip: clip fields that replace the spec's (as in `load_spec`), e.g. ``{"model": "bench-cpu"}``.
        from_cache: also time the third run; ``False`` leaves it out (``cache_*`` are then absent).
        engine_kwargs: more `Engine` arguments.
    Returns:
        ``utilisation`` of the first run as its manifest records it, its ``seconds`` (the whole
        `run_batch` call), and ``rerun_ratio`` (nothing changed: finished variants skipped) and
        ``cache_ratio`` (outputs deleted, every task read from the cache) as fractions of the first
        run's time.
    """
    from ..driver import Engine
    from .spec import load_spec

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    batch = load_spec(spec_path, clip)
    def timed():
        start = time.perf_counter()
        report = run_batch(batch, out_dir / "out", engine)
        return report, time.perf_counter() - start

    with Engine(workers=workers, cache_dir=out_dir / "cache", **engine_kwargs) as engine:
        # Start the actors first, so the first run is not charged for loading the model.
        engine.generate(dict(batch.clips[next(iter(batch.clips))], prompt="warm-up", frames=1))
        first, first_s = timed()
        manifest = json.loads((out_dir / "out" / "manifest.json").read_text())  # the re-runs rewrite it
        _, again_s = timed()
        result = dict(
            clips=first.clips, workers=workers, seconds=round(first_s, 3), utilisation=manifest["utilisation"],
            rerun_seconds=round(again_s, 3), rerun_ratio=round(again_s / first_s, 4),
        )
        if from_cache:
            shutil.rmtree(out_dir / "out")
            _, cached_s = timed()
            result.update(cache_seconds=round(cached_s, 3), cache_ratio=round(cached_s / first_s, 4))
    return result
