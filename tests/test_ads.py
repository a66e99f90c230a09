"""Ad batches: the spec and its matrix, format presets, overlays on the pixels, ranking, every bad
input as an error naming the spec line, and whole batches on a local Ray (cache, restart, a killed actor)."""

import csv
import json
import math
import os
import signal
import textwrap

import numpy as np
import pytest
from PIL import Image

from videogen.ads.batch import run_batch
from videogen.ads.formats import fit_frames, format_presets, generation_size
from videogen.ads.overlay import OverlaySpec, apply, layout, render
from videogen.ads.rank import colour_match, smoothness, top_k
from videogen.ads.spec import SpecError, load_spec
from videogen.cli import main
from videogen.encode import read_mp4
from videogen.presets import model_presets

SPEC = """\
name: test
template: "a {color} ball on a {place}"
style: "product shot"
negatives: [ads]
variables:
  color: [red, blue]
  place: [beach]
formats: [square, tiktok]
candidates: 2
keep: 1
seed: 10
pixels: 1024
clip: {frames: 9, fps: 8, steps: 2}
overlay:
  headline: {text: "The {color} one"}
  cta: {text: "Shop now", background: "#e0245e"}
  logo: {path: logo.png}
"""


def write_spec(folder, text=SPEC, name="spec.yaml"):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    logo = Image.new("RGBA", (120, 40), (255, 255, 255, 255))
    logo.save(folder / "logo.png")
    return path


# ------------------------------------------------------------------ the spec and its matrix


def test_matrix_is_the_product_of_the_variables(tmp_path):
    spec = SPEC.replace("place: [beach]", "place: [beach, roof, park]")
    batch = load_spec(write_spec(tmp_path, spec))
    assert [v.values for v in batch.variants] == [
        {"color": c, "place": p} for c in ("red", "blue") for p in ("beach", "roof", "park")
    ]
    assert len({v.id for v in batch.variants}) == 6
    v = batch.variants[0]
    assert v.prompt == "product shot, a red ball on a beach" and v.headline == "The red one" and v.cta == "Shop now"
    # 6 variants x 2 seeds x 2 generation sizes (square 32x32, tiktok 16x32)
    assert batch.sizes == {"square": (32, 32), "tiktok": (16, 32)}
    assert len(batch.clips) == 24 and len(batch.unique_requests()) == 24
    assert all(r["negative"].startswith("blurry, low quality") for r in batch.clips.values())


def test_rows_and_a_csv_feed_give_the_same_variants(tmp_path):
    rows = SPEC.replace("variables:\n  color: [red, blue]\n  place: [beach]\n",
                        "rows:\n  - {color: red, place: beach}\n  - {color: green, place: moon}\n")
    from_rows = load_spec(write_spec(tmp_path, rows))
    with open(tmp_path / "feed.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["color", "place"], ["red", "beach"], ["green", "moon"]])
    from_feed = load_spec(write_spec(tmp_path, rows.replace(
        "rows:\n  - {color: red, place: beach}\n  - {color: green, place: moon}\n", "feed: feed.csv\n"), "feed.yaml"))
    assert [v.values for v in from_rows.variants] == [{"color": "red", "place": "beach"}, {"color": "green", "place": "moon"}]
    assert from_rows.variants == from_feed.variants


def test_variables_used_only_in_the_overlay_share_clips(tmp_path):
    spec = SPEC.replace('headline: {text: "The {color} one"}', 'headline: {text: "Hello {city}"}').replace(
        "place: [beach]", "place: [beach]\n  city: [Paris, Rome, Oslo]")
    batch = load_spec(write_spec(tmp_path, spec))
    assert len(batch.variants) == 6
    assert len(batch.unique_requests()) == 2 * 2 * 2  # colours x seeds x sizes: the city is drawn, not generated


def test_dry_run_prints_the_matrix_and_the_cost(tmp_path, capsys):
    spec = write_spec(tmp_path)
    assert main(["batch", str(spec), "-o", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "clips to generate: 8 (4 MP4s kept)" in out and "red" in out and "blue" in out
    # 8 clips x 60 s at 2.0 per GPU-hour
    assert "estimated: 480 actor-seconds" in out and "cost 0.27" in out
    assert not (tmp_path / "out").exists()


def test_clip_flags_replace_the_specs_clip_settings(tmp_path, capsys):
    spec = write_spec(tmp_path)
    batch = load_spec(spec, {"steps": 3, "seconds": 2})
    assert {(s.steps, s.frames) for s in batch.specs.values()} == {(3, 16)}
    assert main(["batch", str(spec), "-o", str(tmp_path / "out"), "--dry-run", "--width", "64"]) == 2
    assert "width=64: is set by the spec" in capsys.readouterr().err


# ------------------------------------------------------------------ formats


def test_format_presets_have_the_platform_sizes():
    f = format_presets()
    for name in ("tiktok", "reels", "shorts"):
        assert (f[name].width, f[name].height) == (1080, 1920)
    assert (f["feed"].width, f["feed"].height) == (1080, 1350)
    assert (f["square"].width, f["square"].height) == (1080, 1080)
    assert (f["youtube"].width, f["youtube"].height) == (1920, 1080)
    # TikTok keeps text out of the top 14%, the bottom 35% and the right-hand rail.
    assert f["tiktok"].safe_box() == (65, 269, 918, 1248)


@pytest.mark.parametrize("model", ["tiny-random", "wan2.1-t2v-1.3b"])
def test_generation_sizes_fit_the_model_and_keep_the_shape(model):
    m = model_presets()[model]
    for f in format_presets().values():
        w, h = generation_size(f, m.defaults.width * m.defaults.height, m)
        assert w % m.size_multiple == 0 and h % m.size_multiple == 0 and w * h <= m.max_pixels
        assert abs(math.log((w / h) / (f.width / f.height))) < 0.12
    assert generation_size(format_presets()["tiktok"], 832 * 480, model_presets()["wan2.1-t2v-1.3b"]) == (448, 800)


def test_fit_frames_covers_and_crops_the_centre():
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    frames[:, :, 8:24] = 255  # a white band in the middle third-ish
    out = fit_frames(frames, 1080, 1920)  # a square made tall: the sides are cropped
    assert out.shape == (2, 1920, 1080, 3)
    assert out[0, 960, 540].tolist() == [255, 255, 255] and out[0, 960, 5].tolist() == [0, 0, 0]


# ------------------------------------------------------------------ overlays


@pytest.mark.parametrize("name", sorted(format_presets()))
def test_overlay_is_drawn_inside_the_safe_area(name):
    fmt = format_presets()[name]
    overlay = OverlaySpec.model_validate(dict(headline=dict(text="Run further than you think you can, every day"),
                                              cta=dict(text="Shop now", background="#e0245e"), logo=dict(path="x")))
    logo = Image.new("RGBA", (300, 100), (255, 255, 0, 255))
    frames = np.full((2, fmt.height, fmt.width, 3), 128, np.uint8)
    out = apply(frames, render(layout(fmt, overlay, overlay.headline.text, "Shop now", logo), fmt.width, fmt.height))
    ys, xs = np.nonzero((out[0] != 128).any(axis=2))
    left, top, right, bottom = fmt.safe_box()
    assert left <= xs.min() and xs.max() < right and top <= ys.min() and ys.max() < bottom
    assert (out[0] == [255, 255, 0]).all(axis=2).sum() > 1000  # the logo is there
    assert (out[0] == [0xE0, 0x24, 0x5E]).all(axis=2).sum() > 1000  # and the button
    assert ys.max() > bottom - 0.2 * (bottom - top)  # the call to action sits at the bottom


def test_long_text_shrinks_and_wraps():
    fmt = format_presets()["tiktok"]
    overlay = OverlaySpec.model_validate(dict(headline=dict(text="x", size=0.06, max_lines=4)))
    short = layout(fmt, overlay, "Run", None, None).blocks[0][0]
    long = layout(fmt, overlay, "Run further than you ever thought you could, every single day of the year", None, None).blocks[0][0]
    assert len(short.lines) == 1 and len(long.lines) > 1
    assert long.font.size < short.font.size == round(0.06 * 1920)
    assert long.width <= fmt.safe_box()[2] - fmt.safe_box()[0]


# ------------------------------------------------------------------ ranking


def test_smoothness_prefers_the_steady_clip_and_top_k_keeps_the_best():
    rng = np.random.default_rng(0)
    steady = np.repeat(rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8), 9, axis=0)
    flicker = rng.integers(0, 256, (9, 16, 16, 3), dtype=np.uint8)
    assert smoothness(steady) == 1.0
    assert smoothness(flicker) < 0.8
    assert top_k({10: 0.5, 11: 0.9, 12: 0.7}, 2) == [11, 12]
    assert top_k({10: 0.5, 11: 0.5}, 1) == [10]


def test_colour_match_rewards_the_colour_the_prompt_names():
    red = np.zeros((3, 8, 8, 3), np.uint8)
    red[..., 0] = 220
    assert colour_match(red, "a red ball") == 1.0
    assert colour_match(red, "a blue ball") == 0.0
    assert colour_match(red, "a ball") == 0.5


# ------------------------------------------------------------------ bad input names the spec line


@pytest.mark.parametrize("old, new, line, message", [
    ('template: "a {color} ball on a {place}"', 'template: "a {colour} ball on a {place}"', 2, r"unknown variable \{colour\}"),
    ('text: "The {color} one"', 'text: "The {size} one"', 15, r"overlay.headline.text=.*unknown variable \{size\}"),
    ("  color: [red, blue]", "  color: []", 6, r"variables.color=\[\]: no values: the matrix would be empty"),
    ("variables:\n  color: [red, blue]\n  place: [beach]", "rows: []", 5, "the matrix is empty"),
    ("formats: [square, tiktok]", "formats:\n  - square\n  - tiktokk", 10, "formats.1='tiktokk': unknown format"),
    ('text: "The {color} one"', 'text: "The {color} one", size: 0.5, min_size: 0.45', 15, "does not fit format square"),
    ("logo: {path: logo.png}", "logo: {path: missing.png}", 17, "logo file not found"),
    ("logo: {path: logo.png}", "logo: {path: logo.png, height: 0.4}", 17, "logo does not fit"),
    ("negatives: [ads]", "negatives: [adz]", 4, "unknown negative prompt"),
    ("keep: 1", "keep: 3", 1, "keep=3 is more than candidates=2"),
    ("seed: 10", "sede: 10", 11, "sede=10: unknown key"),
    ("clip: {frames: 9, fps: 8, steps: 2}", "clip: {frames: 9, fps: 8, steps: 2, window: 10}", 13, "window=10: must be 4k\\+1"),
    ("clip: {frames: 9, fps: 8, steps: 2}", "clip: {frames: 9, fps: 8, steps: 2, model: nope}", 13, "clip.model='nope'"),
    (None, "scorer: best", 18, "scorer='best': unknown scorer"),
])
def test_bad_input_names_the_spec_line_before_anything_runs(tmp_path, capsys, old, new, line, message):
    text = SPEC.replace(old, new) if old is not None else SPEC + new + "\n"  # None: a line appended
    assert text != SPEC
    spec = write_spec(tmp_path, text)
    with pytest.raises(SpecError, match=message) as e:
        load_spec(spec)
    assert str(e.value).startswith(f"{spec}:{line}: ")
    out = tmp_path / "out"
    assert main(["batch", str(spec), "-o", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"videogen: error: {spec}:{line}: ")
    assert not out.exists()


def test_lora_is_checked_and_reaches_every_clip_request(tmp_path):
    spec = write_spec(tmp_path, SPEC + "lora: {path: brand.safetensors, scale: 0.8}\n")
    with pytest.raises(SpecError, match="18: lora.path='brand.safetensors': LoRA file not found"):
        load_spec(spec)
    (tmp_path / "brand.safetensors").write_bytes(b"brand look")
    batch = load_spec(spec)
    assert {(s.lora, s.lora_scale) for s in batch.specs.values()} == {(str((tmp_path / "brand.safetensors").resolve()), 0.8)}
    assert len({s.lora_digest for s in batch.specs.values()}) == 1


# ------------------------------------------------------------------ whole batches on a local Ray


@pytest.fixture(scope="module")
def engine(ray_local, tmp_path_factory):
    from videogen import Engine

    with Engine(workers=2, cache_dir=tmp_path_factory.mktemp("cache")) as e:
        yield e


@pytest.fixture(scope="module")
def first_run(engine, tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    batch = load_spec(write_spec(folder))
    return batch, folder / "out", run_batch(batch, folder / "out", engine)


def test_a_batch_writes_kept_variants_in_every_format_with_a_manifest(first_run):
    batch, out, report = first_run
    assert report.clips == 8 and report.skipped == 0 and len(report.rows) == 4  # 2 variants x 1 kept x 2 formats
    assert 0 < report.utilisation <= 1 and report.actor_seconds > 0
    with open(out / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["variant"], r["format"]) for r in rows] == [(v.id, f) for v in batch.variants for f in ("square", "tiktok")]
    assert set(rows[0]) >= {"variant", "format", "seed", "score", "path", "actor_seconds", "cost", "color", "place"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["clips_generated"] == 8 and manifest["actors"] == 2 and manifest["utilisation"] == report.utilisation
    # Every candidate's actor-seconds, discarded ones too, are charged to its variant's rows.
    assert sum(float(r["actor_seconds"]) for r in rows) == pytest.approx(report.actor_seconds, abs=1e-2)
    assert sum(float(r["cost"]) for r in rows) == pytest.approx(report.actor_seconds / 3600 * 2.0, abs=1e-5)
    for r in rows:
        frames, info = read_mp4(out / r["path"])
        assert frames.shape[0] == 9 and (info["width"], info["height"]) == {"square": (1080, 1080), "tiktok": (1080, 1920)}[r["format"]]
        assert r["path"] == f"{r['variant']}_seed{r['seed']}_{r['format']}.mp4"
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width > 2 * 180 and sheet.height > 2 * 180


def test_the_kept_seed_is_the_best_scored_candidate(first_run, engine):
    batch, out, _ = first_run
    v = batch.variants[0]
    record = json.loads((out / ".variants" / f"{v.id}.json").read_text())
    scores = {}
    for seed in batch.seeds:  # recompute from the clips (read back from the cache)
        scores[seed] = np.mean([smoothness(engine.generate(batch.clips[(v.id, seed, size)]).frames)
                                for size in dict.fromkeys(batch.sizes.values())])
    assert record["kept"] == [max(scores, key=scores.get)]
    assert record["candidates"] == {str(s): pytest.approx(x, abs=1e-5) for s, x in scores.items()}


def test_a_rerun_skips_finished_variants_and_a_restart_redoes_only_missing_ones(first_run, engine):
    batch, out, report = first_run
    again = run_batch(batch, out, engine)
    assert again.skipped == 2 and again.clips == 0 and again.rows == report.rows
    (out / report.rows[0]["path"]).unlink()  # as if the first run died before this file
    restarted = run_batch(batch, out, engine)
    assert restarted.skipped == 1 and restarted.clips == 4 and (out / report.rows[0]["path"]).exists()
    assert restarted.cached_tasks > 0 and restarted.actor_seconds == 0  # its clips come back from the cache
    assert len(json.loads((out / "manifest.json").read_text())["rows"]) == 4


def test_one_changed_variable_recomputes_only_its_variants(first_run, engine, tmp_path):
    spec = write_spec(tmp_path, SPEC.replace("color: [red, blue]", "color: [red, green]"))
    events = []
    report = run_batch(load_spec(spec), tmp_path / "out", engine, on_event=lambda kind, info: events.append((kind, info)))
    clips = [info for kind, info in events if kind == "clip"]
    assert len(clips) == 8
    for info in clips:
        if " red " in info["request"]["prompt"]:
            assert info["actor_seconds"] == 0 and info["cached_tasks"] > 0
        else:
            assert info["actor_seconds"] > 0 and info["cached_tasks"] == 0
    assert report.skipped == 0 and len(report.rows) == 4


def test_a_batch_survives_a_killed_actor(engine, tmp_path):
    spec = write_spec(tmp_path, SPEC.replace("seed: 10", "seed: 500"))  # not in the cache
    pids = [i["pid"] for i in engine.actor_info()]
    killed = []

    def kill_once(kind, info):
        if kind == "clip" and not killed:
            killed.append(pids[0])
            os.kill(pids[0], signal.SIGKILL)

    report = run_batch(load_spec(spec), tmp_path / "out", engine, on_event=kill_once)
    assert killed and pids[0] not in [i["pid"] for i in engine.actor_info()]
    assert report.clips == 8 and len(report.rows) == 4
    assert all((tmp_path / "out" / r["path"]).exists() for r in report.rows)


def test_a_variant_the_prompt_policy_blocks_names_its_line_before_generation(tmp_path):
    spec = write_spec(tmp_path, SPEC.replace("place: [beach]", "place: [beach, swastika flag]"))
    with pytest.raises(SpecError, match=r"spec.yaml:\d+: template=.*blocked by the prompt policy \(hate_symbols\)"):
        load_spec(spec)
    assert load_spec(write_spec(tmp_path, SPEC.replace("place: [beach]", "place: [beach, gorgeous roof]")))
