"""The denoiser on its own (no Ray): parity with diffusers' WanPipeline, model folders, conditioning."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import WanPipeline

from videogen.denoise import KEYFRAME_STREAM, WINDOW_STREAM, Denoiser, frame_seed, position_noise
from videogen.model import build_random_wan, save_components
from videogen.plan import WindowTask, make_plan
from videogen.request import resolve

SMALL = dict(width=32, height=32, steps=3)


@pytest.fixture(scope="module")
def tiny():
    return Denoiser("builtin:tiny-random")


def test_one_window_equals_wan_pipeline(tiny):
    """A clip that fits in one window, with no keyframes, is exactly diffusers' WanPipeline."""
    spec = resolve({"prompt": "a red circle moving right", "negative": "blurry", "frames": 9, "guidance": 4.0, **SMALL})
    plan = make_plan(spec.latent_frames, spec.latent_window, spec.latent_overlap, spec.latent_keyframe_every)
    assert len(plan.windows) == 1 and not plan.keyframe_tasks
    ours = tiny.model.decode(torch.from_numpy(tiny.window(spec, plan.windows[0], {})["latents"])[None])

    pipe = WanPipeline(**{k: getattr(tiny.model.pipe, k) for k in ("tokenizer", "text_encoder", "transformer", "vae", "scheduler")})
    latents = position_noise(spec.seed, WINDOW_STREAM, range(spec.latent_frames), spec.latent_shape)[None]
    ref = pipe(
        prompt=spec.prompt, negative_prompt=spec.negative, height=32, width=32, num_frames=9,
        num_inference_steps=3, guidance_scale=4.0, latents=latents, output_type="np",
    ).frames[0]
    assert ours.shape == ref.shape == (9, 32, 32, 3)
    assert np.abs(ours - ref).max() <= 1e-4


def test_saved_folder_loads_through_the_checkpoint_path(tmp_path, tiny):
    folder = save_components(build_random_wan("tiny-random"), tmp_path / "tiny")
    assert {p.name for p in folder.iterdir()} >= {"model_index.json", "transformer", "vae", "text_encoder", "tokenizer", "scheduler"}
    spec = resolve({"prompt": "a blue square", "frames": 5, **SMALL, "model": str(folder)})
    assert spec.model_source == str(folder.resolve())
    loaded = Denoiser(spec.model_source)
    task = WindowTask(0, 0, spec.latent_frames)
    # Same weights (checked bit for bit by safetensors); loaded tensors may take other BLAS paths, so
    # allow float32 rounding noise.
    np.testing.assert_allclose(loaded.window(spec, task, {})["latents"], tiny.window(spec, task, {})["latents"], atol=1e-5)


def test_noise_is_keyed_by_position_not_by_window():
    shape = (16, 2, 2)
    a = position_noise(5, WINDOW_STREAM, range(0, 6), shape)
    b = position_noise(5, WINDOW_STREAM, range(4, 9), shape)
    assert torch.equal(a[:, 4:6], b[:, 0:2])
    assert not torch.equal(position_noise(5, KEYFRAME_STREAM, [4], shape)[:, 0], a[:, 4])
    assert not torch.equal(position_noise(6, WINDOW_STREAM, [4], shape)[:, 0], a[:, 4])
    assert frame_seed(1, 0, 3) == frame_seed(1, 0, 3) < 2**63


@pytest.mark.parametrize("source", ["builtin:tiny-random", "builtin:tiny-random-flf"])
def test_known_frames_are_held(source):
    """Keyframes come out of a window exactly as given, by replacement or by channel conditioning."""
    model = "tiny-random" if source.endswith("random") else "tiny-random-flf"
    d = Denoiser(source)
    spec = resolve({"prompt": "a green triangle", "frames": 17, "model": model, **SMALL})
    rng = np.random.default_rng(0)
    known = {0: rng.standard_normal(spec.latent_shape).astype(np.float32), 4: rng.standard_normal(spec.latent_shape).astype(np.float32)}
    task = WindowTask(0, 0, 5, keyframes=(0, 4))
    out = d.window(spec, task, known)["latents"]
    np.testing.assert_array_equal(out[:, 0], known[0])
    np.testing.assert_array_equal(out[:, 4], known[4])
    free = d.window(spec, WindowTask(0, 0, 5), {})["latents"]
    assert np.abs(out[:, 2] - free[:, 2]).max() > 1e-3, "the known frames change the frames between them"


@pytest.mark.parametrize("source", ["builtin:tiny-random", "builtin:tiny-random-flf"])
def test_released_keyframes_are_drawn_again_from_themselves(source):
    """Below ``keyframe_release`` a window stops holding its keyframes: it draws them again with
    its other frames, starting from each keyframe noised to that level, so they stay near it."""
    model = "tiny-random" if source.endswith("random") else "tiny-random-flf"
    d = Denoiser(source)
    spec = resolve({"prompt": "a green triangle", "frames": 17, "model": model, **dict(SMALL, steps=8)})
    rng = np.random.default_rng(0)
    known = {0: rng.standard_normal(spec.latent_shape).astype(np.float32), 4: rng.standard_normal(spec.latent_shape).astype(np.float32)}
    task = WindowTask(0, 0, 5, keyframes=(0, 4))
    held = d.window(spec, task, known)["latents"]
    released = d.window(replace(spec, keyframe_release=0.5), task, known)["latents"]
    free = d.window(spec, WindowTask(0, 0, 5), {})["latents"]
    for p in (0, 4):
        moved, away = np.abs(released[:, p] - known[p]).mean(), np.abs(free[:, p] - known[p]).mean()
        assert 1e-3 < moved < away / 2, (p, moved, away)
    assert np.abs(released[:, 2] - held[:, 2]).max() > 1e-4
    np.testing.assert_array_equal(d.window(replace(spec, keyframe_release=0.0), task, known)["latents"], held)


def test_two_stage_wan22_folder_equals_wan_pipeline(tmp_path):
    """A Wan 2.2-style folder (transformer_2 below the boundary timestep) loads and matches WanPipeline."""
    folder = save_components(build_random_wan("tiny-random-2stage"), tmp_path / "two-stage")
    assert (folder / "transformer_2").is_dir()
    spec = resolve({"prompt": "a white circle bouncing", "frames": 9, "model": str(folder), **dict(SMALL, steps=4)})
    d = Denoiser(spec.model_source)
    assert d.model.boundary == pytest.approx(875.0)
    ours = d.model.decode(torch.from_numpy(d.window(spec, WindowTask(0, 0, spec.latent_frames), {})["latents"])[None])
    pipe = WanPipeline.from_pretrained(folder)
    latents = position_noise(spec.seed, WINDOW_STREAM, range(spec.latent_frames), spec.latent_shape)[None]
    ref = pipe(prompt=spec.prompt, height=32, width=32, num_frames=9, num_inference_steps=4,
               guidance_scale=spec.guidance, latents=latents, output_type="np").frames[0]
    assert np.abs(ours - ref).max() <= 1e-4
    one_stage = Denoiser("builtin:tiny-random").window(spec, WindowTask(0, 0, spec.latent_frames), {})["latents"]
    assert np.abs(d.window(spec, WindowTask(0, 0, spec.latent_frames), {})["latents"] - one_stage).max() > 1e-3


def test_decoding_in_chunks_equals_one_decode_of_the_whole_clip(tiny):
    from videogen.denoise import to_uint8
    from videogen.stitch import blend

    spec = resolve({"prompt": "a purple square moving up", "frames": 75, **SMALL})  # 19 latent frames, trimmed 77 -> 75
    plan = make_plan(spec.latent_frames, spec.latent_window, spec.latent_overlap, 0)
    rng = np.random.default_rng(0)
    windows = {w.index: rng.standard_normal((16, w.length, 2, 2)).astype(np.float32) for w in plan.windows}
    pieces = [tiny.decoder.decode_chunk(spec, plan, "clip", c, windows)["frames"] for c in range(len(plan.decode_chunks))]
    whole = tiny.model.decode(torch.from_numpy(blend(plan, [windows[i] for i in sorted(windows)], spec.blend))[None])
    assert len(pieces) == len(plan.windows) > 3
    assert np.array_equal(np.concatenate(pieces), to_uint8(whole[:75]))
    assert tiny.decoder._streams == {}, "the causal cache is dropped after the last chunk"


def make_lora(folder):
    """A LoRA for tiny-random's transformer with random, non-zero weights, saved as diffusers saves one."""
    from peft import LoraConfig, get_peft_model_state_dict

    transformer = build_random_wan("tiny-random")["transformer"]
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
    WanPipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(transformer))
    return folder / "pytorch_lora_weights.safetensors"


def test_a_lora_adapter_changes_the_frames_by_its_scale_and_leaves_others_alone(tmp_path):
    lora = make_lora(tmp_path)
    d = Denoiser("builtin:tiny-random")
    task = WindowTask(0, 0, 3)
    base = resolve({"prompt": "a red circle moving right", "frames": 9, **SMALL})
    styled = resolve({"prompt": "a red circle moving right", "frames": 9, **SMALL, "lora": str(lora)})
    assert styled.lora_digest and styled.lora == str(lora.resolve())
    plain = d.window(base, task, {})["latents"]
    with_lora = d.window(styled, task, {})["latents"]
    assert np.abs(with_lora - plain).max() > 1e-3
    off = resolve({"prompt": "a red circle moving right", "frames": 9, **SMALL, "lora": str(lora), "lora_scale": 0})
    np.testing.assert_allclose(d.window(off, task, {})["latents"], plain, atol=1e-6)
    np.testing.assert_array_equal(d.window(base, task, {})["latents"], plain)  # no LoRA after one: the base model
    np.testing.assert_array_equal(d.window(styled, task, {})["latents"], with_lora)


def test_a_missing_lora_is_a_request_error(tmp_path):
    from videogen.errors import RequestError

    with pytest.raises(RequestError, match="lora=.*no such file or folder"):
        resolve({"prompt": "x", "lora": str(tmp_path / "nope.safetensors")})
