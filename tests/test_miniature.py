"""The built-in model: shipped weights, the default of `videogen generate`, viewing size, scorecard plan."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from videogen.encode import read_mp4, write_mp4
from videogen.evaluate import evaluate, evaluate_file, judging_size, seam_frames, tracks
from videogen.fold import FoldVAE
from videogen.model import PACKAGED, load_components, local_source, model_index
from videogen.plan import window_spans
from videogen.presets import DEFAULT_MODEL, MODEL_ENV, ViewSettings, default_model, resolve_model
from videogen.request import ClipRequest, resolve
from videogen.scorecard import cases, frames_for_windows
from videogen.shapes import HELD_OUT, Scene, clip_times, render

MAX_SHIPPED_BYTES = 25 * 2**20


def test_shipped_weights_load_through_the_preset(monkeypatch):
    monkeypatch.delenv(MODEL_ENV)
    assert default_model() == DEFAULT_MODEL and ClipRequest(prompt="x").model == DEFAULT_MODEL
    monkeypatch.setenv(MODEL_ENV, "tiny-random")
    assert ClipRequest(prompt="x").model == "tiny-random"
    preset = resolve_model("miniature")
    folder = PACKAGED / "miniature"
    assert local_source(preset.source) == str(folder)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= MAX_SHIPPED_BYTES, size
    c = load_components(preset.source)
    assert isinstance(c["vae"], FoldVAE) and c["vae"].config.z_dim == preset.latent_channels == 192
    assert c["transformer"].config.in_channels == preset.in_channels == 2 * 192 + 4
    assert c["vae"].config.scale_factor_spatial == preset.vae_scale_spatial == 4
    assert model_index(preset.source)["prediction_type"] == "sample"
    # The pixels' statistics were measured on training clips, not left at 0 / 1.
    assert np.ptp(c["vae"].config.latents_mean) > 0 and min(c["vae"].config.latents_std) != 1.0
    ids = c["tokenizer"]("a red circle moving right").input_ids
    assert c["tokenizer"].decode(ids, skip_special_tokens=True) == "a red circle moving right"


def test_unknown_packaged_model_is_a_clear_error():
    with pytest.raises(ValueError, match="no model 'nope'.*miniature"):
        load_components("package:nope")


def test_view_size_is_a_whole_factor_to_the_short_side():
    assert ViewSettings(short_side=256).size(32, 32) == (256, 256)
    assert ViewSettings(short_side=256).size(48, 32) == (384, 256)
    assert ViewSettings(short_side=256).size(512, 512) == (512, 512)
    spec = resolve(ClipRequest(prompt="x"), resolve_model("miniature"))
    assert (spec.width, spec.height, spec.frames, spec.fps, spec.view) == (32, 32, 33, 8, (256, 256, "lanczos"))
    assert (spec.steps, spec.guidance) == (40, 4.0)  # configs/quality/miniature.yaml
    assert resolve(ClipRequest(prompt="x", model="tiny-random"), resolve_model("tiny-random")).view is None


def test_enlarged_clip_is_judged_like_the_native_one(tmp_path):
    scene = Scene("blue", "triangle", "down", "grey", x=0.5, y=0.5, radius=0.15, gradient=10.0, phrasing=0)
    native = render(scene, clip_times(33), 32)
    write_mp4(native, tmp_path / "big.mp4", 8, {"prompt": "a blue triangle going down"}, view=(256, 256, "lanczos"))
    big, info = read_mp4(tmp_path / "big.mp4")
    assert (info["width"], info["height"], len(big)) == (256, 256, 33)
    assert judging_size(big).shape == (33, 64, 64, 3)
    assert json.loads((tmp_path / "big.json").read_text())["view"] == {"width": 256, "height": 256, "filter": "lanczos"}
    a, b = evaluate(native, "a blue triangle going down"), evaluate_file(tmp_path / "big.mp4")
    assert (a.colour_right, a.shape_right, a.motion_right) == (b.colour_right, b.shape_right, b.motion_right) == (True,) * 3
    assert abs(a.fill_ratio - b.fill_ratio) < 0.05


def test_scorecard_plan():
    assert frames_for_windows("miniature", 8) == 129
    spec = resolve(ClipRequest(prompt="x", frames=129), resolve_model("miniature"))
    assert len(window_spans(spec.latent_frames, spec.latent_window, spec.latent_overlap)) == 8
    assert len(seam_frames(129, spec.window, spec.overlap)) == 7
    todo = cases(per=2)
    assert {c.combination for c in todo} == set(HELD_OUT) and len(todo) == len(HELD_OUT) * 4
    assert len({c.request["prompt"] for c in todo if c.kind == "prompts"}) >= len(HELD_OUT) * 2 - 2  # wording varies


def test_generate_with_the_shipped_model(tmp_path):
    """The default model through the CLI: native 32x32 frames, a 256x256 MP4, a frame strip, and
    `videogen eval` finding the colour, shape and motion the prompt asks for.

    The prompt is a held-out combination the shipped weights draw well (colour, shape and motion
    right on 4 of 4 seeds, MODEL.md); on held-out prompts at large, motion is right on 92% and shape
    on 50%.
    """
    out = tmp_path / "out.mp4"
    strip = tmp_path / "strip.png"
    env = {k: v for k, v in os.environ.items() if k != MODEL_ENV}  # no model named: the built-in one
    prompt = "a white circle moving left"
    assert ("white", "circle", "left") in HELD_OUT
    run = subprocess.run([sys.executable, "-m", "videogen", "generate", prompt, "-o", str(out),
                          "--strip", str(strip), "--json"], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout)
    assert (summary["frames"], summary["width"], summary["height"]) == (33, 32, 32)
    frames, info = read_mp4(out)
    assert (len(frames), info["width"], info["height"], info["fps"]) == (33, 256, 256, 8.0)
    assert json.loads(out.with_suffix(".json").read_text())["view"]["filter"] == "lanczos"
    from PIL import Image

    assert Image.open(strip).size[0] > 8 * 128
    report = evaluate_file(out)
    assert (report.found.colour, report.found.shape, report.found.motion) == ("white", "circle", "left"), report.found
    assert report.colour_right and report.shape_right and report.motion_right
    # The shape travels: its centre's last quarter is well left of its first (measured: 24-28 of 64 px, seeds 0-3).
    track = tracks(judging_size(frames)).centre
    quarter = len(track) // 4
    assert np.nanmean(track[:quarter, 0]) - np.nanmean(track[-quarter:, 0]) > 0.3 * 64
    # The clip is a shape on a background, not noise: most of each frame is one flat colour.
    small = judging_size(frames).astype(int)
    background = np.median(small.reshape(len(small), -1, 3), axis=1)[:, None, None]
    assert np.mean(np.abs(small - background).max(axis=-1) < 24) > 0.6


def test_redraw_swaps_the_shape_word_and_reads_the_drawn_shapes():
    from videogen.redraw import scenes_of_each_shape, swap_shape, truth_fills

    assert swap_shape("an orange box moving to the left", "square", "circle") == "an orange circle moving to the left"
    assert swap_shape("a red ball bouncing", "circle", "triangle") == "a red triangle bouncing"
    scenes = scenes_of_each_shape(3)
    assert [len(scenes[s]) for s in ("circle", "square", "triangle")] == [3, 3, 3]
    assert all(sc.shape == s and sc.motion != "growing" for s, v in scenes.items() for sc in v)
    truth = truth_fills(3)  # as the shapes world draws them: the evaluator's thresholds 0.68 and 0.89 apart
    assert truth["square"] > 0.95 and 0.7 < truth["circle"] < 0.89 and truth["triangle"] < 0.65, truth


def test_redraw_of_the_shipped_model_follows_the_true_shape_at_low_noise(tmp_path):
    """Handed a clip under light noise (sigma 0.1), the shipped model's clean guess keeps each shape's
    fill order (square over circle over triangle) whatever the caption says; the CLI prints the table."""
    from videogen.redraw import redraw

    cells = redraw("package:miniature", sigmas=(0.1,), per=2)
    assert len(cells) == 9
    mean = {(c.true, c.asked): c.mean for c in cells}
    for asked in ("circle", "square", "triangle"):
        assert mean[("square", asked)] > mean[("circle", asked)] > mean[("triangle", asked)], mean
    env = {**os.environ, "VIDEOGEN_MODEL": "miniature"}
    sheet = tmp_path / "redraw.png"
    done = subprocess.run([sys.executable, "-m", "videogen.cli", "eval", "--redraw", "--per", "1", "--sigmas", "0.5,0.1",
                           "--sheet", str(sheet)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("| sigma | true circle: asked cir / squ / tri") and lines[2].startswith("| drawn |")
    assert lines[3].startswith("| 0.5 |") and lines[4].startswith("| 0.1 |") and len(lines) == 5
    from PIL import Image

    picture = Image.open(sheet)
    assert picture.width == 12 + 9 * (96 + 12)  # a column per true and asked shape
    assert sorted(p.name for p in tmp_path.iterdir()) == ["redraw.png"]  # no temporary file left
    missing = subprocess.run([sys.executable, "-m", "videogen.cli", "eval", "--redraw", "--sheet", str(tmp_path / "no" / "r.png")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode == 2 and "sheet=" in missing.stderr and "does not exist" in missing.stderr, missing.stderr
    jpeg = subprocess.run([sys.executable, "-m", "videogen.cli", "eval", "--redraw", "--sheet", str(tmp_path / "r.jpg")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert jpeg.returncode == 2 and "must end in .png" in jpeg.stderr, jpeg.stderr
    bad = subprocess.run([sys.executable, "-m", "videogen.cli", "eval", "--redraw", "--sigmas", "0.5,2"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "sigmas='0.5,2'" in bad.stderr and "(0, 1]" in bad.stderr, bad.stderr
