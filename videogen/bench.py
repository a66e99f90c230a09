"""``videogen bench``: videogen against diffusers' WanPipeline, side by side in one run, as ratios.

Everything runs in Ray actors on this machine, timed in alternation so that a noisy neighbour
slows both sides alike. The model is a built-in random Wan of a chosen shape (random weights cost
exactly what trained ones do).

Sections:
- overhead: one-window clip, videogen end to end (submit to frames) vs `WanPipeline.__call__`, both warm.
- length: 1x, 2x, 4x, 8x the window; videogen's time and peak memory per actor vs WanPipeline
  given the whole clip at once; linearity is the largest ratio of a measured time to the straight
  line fitted through all four.
- parallelism: 1 vs 2 actors (one CPU and one torch thread each) on an 8-window clip.
- compute floor: the transformer's counted FLOPs over this machine's measured matmul rate, as a
  share of videogen's measured time.
- job service: submit to first task over HTTP, and the actors' busy share draining a queue
  (`videogen.service.bench`).
- ad batch: `examples/ads/bench48.yaml` (48 clips) on 2 actors with the bench's model: the
  actors' busy share as the manifest records it, and a re-run with nothing changed as a fraction
  of the first run's time (`videogen.ads.batch.measure_batch`).

``--sections`` picks some of them by number; the compute floor needs the parallelism section's time.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

STEPS = 16
GUIDANCE = 5.0
SIZE = 128  # pixels: 16x16 latents, 8x8 tokens per latent frame
WINDOW = 33  # pixel frames = 9 latent frames
OVERLAP = 4  # pixel frames = 1 latent frame
KEYFRAME_EVERY = 32  # pixel frames = 8 latent frames: every overlap frame is a keyframe
AD_SPEC = Path(__file__).resolve().parents[1] / "examples" / "ads" / "bench48.yaml"
AD_CLIPS, AD_ACTORS = 48, 2  # the batch the targets are set for
AD_BUSY_TARGET = 0.90  # actor-seconds / (actors x wall seconds) of the first run
AD_RERUN_TARGET = 0.05  # a re-run with nothing changed, as a fraction of the first run's time


def clip_frames(windows: int) -> int:
    """Pixel frames of a clip that is exactly ``windows`` windows long (4k+1, so WanPipeline can make it whole)."""
    latent = 9 + (windows - 1) * 8
    return 4 * (latent - 1) + 1


class PipelineRunner:
    """Diffusers' own WanPipeline in an actor, on the same components videogen's actors build."""

    def __init__(self, shape: str, threads: int):
        from diffusers import WanPipeline

        from .model import WanModel

        torch.set_num_threads(threads)
        model = WanModel.load(f"builtin:{shape}")
        self.pipe = WanPipeline(**{k: getattr(model.pipe, k) for k in ("tokenizer", "text_encoder", "transformer", "vae", "scheduler")})
        self.pipe.set_progress_bar_config(disable=True)

    def run(self, prompt: str, frames: int, latents: np.ndarray) -> dict:
        start = time.perf_counter()
        with torch.no_grad():
            self.pipe(prompt=prompt, height=SIZE, width=SIZE, num_frames=frames, num_inference_steps=STEPS,
                      guidance_scale=GUIDANCE, latents=torch.from_numpy(latents)[None], output_type="np")
        return {"seconds": time.perf_counter() - start, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def matmul_rate(threads: int) -> float:
    """Measured float32 matmul FLOP/s with ``threads`` torch threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - start) / 4)
    torch.set_num_threads(before)
    return 2 * n**3 / best


def transformer_flops(transformer: torch.nn.Module, latent_frames: int) -> float:
    """FLOPs of one transformer forward on ``latent_frames`` frames, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    s = SIZE // 8
    x = torch.zeros(1, transformer.config.in_channels, latent_frames, s, s)
    text = torch.zeros(1, 512, transformer.config.text_dim)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        transformer(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=text, return_dict=False)
    return float(counter.get_total_flops())


def ad_batch(spec: str | Path, clip: dict, workers: int = AD_ACTORS, say=print) -> dict:
    """Section 6: an ad batch on ``workers`` fresh actors, then the same batch again with nothing changed.

    Args:
        spec: the batch spec (the bench runs `AD_SPEC`, 48 clips).
        clip: clip fields that replace the spec's, e.g. ``{"model": "bench-cpu"}``.
        workers: actors.
        say: where to print the section's table.
    Returns:
        `measure_batch`'s numbers for the first run and the re-run, each target, and ``met``: which
        targets were met.
    """
    from .ads.batch import measure_batch
    from .ads.spec import load_spec

    batch = load_spec(spec, clip)
    c = next(iter(batch.specs.values()))
    say(f"   {len(batch.variants)} variants x {batch.spec.candidates} candidates: {len(batch.unique_requests())} clips of "
        f"{c.frames} frames at {c.width}x{c.height}, {c.steps} steps, guidance {c.guidance:g}; "
        f"{len(batch.variants) * batch.spec.keep * len(batch.formats)} MP4s kept")
    with tempfile.TemporaryDirectory(prefix="videogen-bench-ads-") as scratch:
        m = measure_batch(spec, scratch, workers=workers, clip=clip, from_cache=False)
    met = {"clips": m["clips"] == AD_CLIPS, "actors": workers == AD_ACTORS,
           "utilisation": m["utilisation"] >= AD_BUSY_TARGET, "rerun_ratio": m["rerun_ratio"] <= AD_RERUN_TARGET}
    rows = [("clips", f"{m['clips']}", f"{AD_CLIPS}", met["clips"]),
            ("actors", f"{workers}", f"{AD_ACTORS}", met["actors"]),
            ("first run, wall", f"{m['seconds']:.1f} s", "", None),
            ("actors busy (manifest)", f"{100 * m['utilisation']:.1f}%", f">= {100 * AD_BUSY_TARGET:.0f}%", met["utilisation"]),
            ("re-run, nothing changed", f"{m['rerun_seconds']:.2f} s", "", None),
            ("re-run / first run", f"{100 * m['rerun_ratio']:.2f}%", f"<= {100 * AD_RERUN_TARGET:.0f}%", met["rerun_ratio"])]
    say(f"   {'':24} {'measured':>9}  {'target':>7}")
    for name, value, target, ok in rows:
        say(f"   {name:24} {value:>9}  {target or '-':>7}  {'' if ok is None else 'met' if ok else 'missed'}".rstrip())
    return m | {"clips_target": AD_CLIPS, "workers_target": AD_ACTORS, "busy_target": AD_BUSY_TARGET,
                "rerun_target": AD_RERUN_TARGET, "met": met}


def run_bench(args) -> int:
    from .driver import Engine
    from .errors import RequestError
    from .presets import resolve_model
    from .request import latent_length

    preset = resolve_model(args.model)
    sections = set(args.sections)
    if 4 in sections and 3 not in sections:
        raise RequestError("sections", sorted(sections), "section 4 (compute floor) is a share of section 3's 1-actor time; add 3")
    shape = preset.source.removeprefix("builtin:")
    repeats = 1 if args.quick else 3  # one-window runs (the overhead section runs repeats + 2)
    long_repeats = 1 if args.quick else 2  # 8-window runs in the parallelism section
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    def request(frames: int, seed: int = 0) -> dict:
        return dict(prompt="a red circle moving right", model=preset.name, frames=frames, width=SIZE, height=SIZE,
                    steps=STEPS, guidance=GUIDANCE, window=WINDOW, overlap=OVERLAP, keyframe_every=KEYFRAME_EVERY, seed=seed)

    def noise(frames: int) -> np.ndarray:
        from .denoise import WINDOW_STREAM, position_noise

        return position_noise(0, WINDOW_STREAM, range(latent_length(frames, 4)), (16, SIZE // 8, SIZE // 8)).numpy()

    results: dict = {"device": "cpu", "cores": os.cpu_count(), "model": preset.name, "size": SIZE, "steps": STEPS,
                     "sections": sorted(sections)}
    cores = os.cpu_count() or 1
    start = time.perf_counter()
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    results["ray_start_seconds"] = round(time.perf_counter() - start, 2)
    say = (lambda *a: None) if args.json else print
    say(f"videogen bench: model builtin:{shape}, {SIZE}x{SIZE}, {STEPS} steps, guidance {GUIDANCE}, {cores} cores")
    say(f"Ray start: {results['ray_start_seconds']:.2f} s (reported on its own, not in any ratio below)")

    def timed(engine, req) -> float:
        t = time.perf_counter()
        engine.generate(req)
        return time.perf_counter() - t

    # 1. Overhead: one window, both warm, alternating.
    if 1 in sections:
        with Engine(workers=1, threads_per_worker=cores) as engine:
            runner = ray.remote(PipelineRunner).options(num_cpus=1).remote(shape, cores)
            timed(engine, request(WINDOW))
            ray.get(runner.run.remote("a red circle moving right", WINDOW, noise(WINDOW)))
            ours, theirs = [], []
            for _ in range(repeats + 2):
                ours.append(timed(engine, request(WINDOW)))
                theirs.append(ray.get(runner.run.remote("a red circle moving right", WINDOW, noise(WINDOW)))["seconds"])
            ray.kill(runner)
        o, t = statistics.median(ours), statistics.median(theirs)
        results["overhead"] = {"videogen_s": round(o, 3), "wanpipeline_s": round(t, 3), "ratio": round(o / t, 3), "target": 1.05}
        say(f"\n1. Overhead, one {WINDOW}-frame window, warm ({repeats + 2} runs each, alternating, median)")
        say(f"   videogen {o:.3f} s | WanPipeline {t:.3f} s | ratio {o / t:.3f} (target <= 1.05)")

    # 2. Length: 1x, 2x, 4x, 8x the window; fresh actors per length so peak memory is per length.
    if 2 in sections:
        rows = []
        for k in (1, 2, 4, 8):
            frames = clip_frames(k)
            with Engine(workers=1, threads_per_worker=cores) as engine:
                runner = ray.remote(PipelineRunner).options(num_cpus=1).remote(shape, cores)
                timed(engine, request(WINDOW))
                ray.get(runner.run.remote("warm up", WINDOW, noise(WINDOW)))
                ours = timed(engine, request(frames))
                ref = [ray.get(runner.run.remote("a red circle moving right", frames, noise(frames)))]
                peak = engine.actor_info()[0]["peak_rss"]
                ray.kill(runner)
            rows.append(dict(k=k, frames=frames, videogen_s=round(ours, 3), videogen_peak_mb=round(peak / 2**20),
                             wanpipeline_s=round(statistics.median(r["seconds"] for r in ref), 3),
                             wanpipeline_peak_mb=round(max(r["peak_rss"] for r in ref) / 2**20)))
        ks = np.array([r["k"] for r in rows], float)
        ts = np.array([r["videogen_s"] for r in rows])
        slope, intercept = np.polyfit(ks, ts, 1)
        linearity = float(np.max(ts / (slope * ks + intercept)))
        results["length"] = {"rows": rows, "linearity": round(linearity, 3), "target": 1.05,
                             "memory_growth": round(rows[-1]["videogen_peak_mb"] / rows[0]["videogen_peak_mb"], 3)}
        say(f"\n2. Length (windows of {WINDOW} frames sharing {OVERLAP}; one run each, memory peak RSS per actor)")
        say("   k  frames | videogen s  MB   | WanPipeline s  MB   | videogen s per window")
        for r in rows:
            say(f"   {r['k']}x {r['frames']:5d}  | {r['videogen_s']:9.3f} {r['videogen_peak_mb']:5d} | "
                f"{r['wanpipeline_s']:12.3f} {r['wanpipeline_peak_mb']:5d} | {r['videogen_s'] / r['k']:.3f}")
        say(f"   linearity (max measured / straight-line fit): {linearity:.3f} (target <= 1.05); "
            f"videogen memory 8x/1x: {results['length']['memory_growth']:.2f}")

    # 3. Parallelism: 1 vs 2 actors, one CPU and one thread each, 8 windows, alternating.
    if 3 in sections:
        frames8 = clip_frames(8)
        samples = {1: [], 2: []}
        with Engine(workers=1, threads_per_worker=1) as one, Engine(workers=2, threads_per_worker=1) as two:
            one.generate(request(WINDOW))
            for _ in range(2):
                two.generate(request(WINDOW))
            for _ in range(long_repeats):
                samples[1].append(timed(one, request(frames8)))
                samples[2].append(timed(two, request(frames8)))
            stages = two.generate(request(frames8)).stage_seconds
        times = {n: statistics.median(v) for n, v in samples.items()}
        speedup = times[1] / times[2]
        results["parallelism"] = {"one_actor_s": round(times[1], 3), "two_actors_s": round(times[2], 3),
                                  "speedup": round(speedup, 3), "target": 1.7}
        say(f"\n3. Parallelism, {frames8}-frame clip (8 windows), actors with 1 CPU and 1 thread each")
        say(f"   1 actor {times[1]:.3f} s | 2 actors {times[2]:.3f} s | speedup {speedup:.2f}x (target >= 1.7)")
        say(f"   2 actors, seconds per stage: {stages}")
        results["parallelism"]["two_actor_stage_seconds"] = stages

    # 4. Compute floor: counted transformer FLOPs for the 8-window job over the measured matmul rate.
    if 4 in sections:
        from .plan import make_plan

        plan = make_plan(latent_length(frames8, 4), latent_length(WINDOW, 4), OVERLAP // 4, KEYFRAME_EVERY // 4)
        forwards = STEPS * (2 if GUIDANCE > 1 else 1)
        from .model import build_random_wan

        transformer = build_random_wan(shape)["transformer"].eval()
        flops = sum(transformer_flops(transformer, len(t.positions)) for t in plan.keyframe_tasks)
        flops += sum(transformer_flops(transformer, w.length) for w in plan.windows)
        flops *= forwards
        rate = matmul_rate(1)
        floor = flops / rate
        results["compute_floor"] = {"flops": flops, "matmul_flops_per_s_1_thread": rate, "floor_s": round(floor, 3),
                                    "measured_s_1_actor": round(times[1], 3), "share": round(floor / times[1], 3)}
        say(f"\n4. Compute floor, the same clip on 1 actor: {flops / 1e9:.1f} GFLOP in the transformer, "
            f"matmul {rate / 1e9:.1f} GFLOP/s on 1 thread")
        say(f"   floor {floor:.3f} s of {times[1]:.3f} s measured: {100 * floor / times[1]:.0f}% of the time is counted matmul work")

    # 5. The job service's own overhead: submit to first task with a free actor, and a queue drained.
    if 5 in sections:
        from .service.bench import measure_service

        say("\n5. Job service over HTTP on 127.0.0.1, 2 actors")
        results["service"] = measure_service(request(WINDOW), workers=2, jobs=10 if args.quick else 50, say=say)

    # 6. An ad batch: the first run's busy share, then a re-run with nothing changed.
    if 6 in sections:
        say(f"\n6. Ad batch, {AD_SPEC.name} on {AD_ACTORS} actors with {preset.name}, then again with nothing changed")
        results["ad_batch"] = ad_batch(AD_SPEC, dict(model=preset.name) | (dict(frames=9) if args.quick else {}), say=say)
    ray.shutdown()
    if args.json:
        print(json.dumps(results, indent=2))
    return 0
