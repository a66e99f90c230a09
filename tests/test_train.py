"""`videogen train`: a few steps of each stage, a resume that continues the count and the log, and
the exported folder loading through the engine's own loader."""

import csv

import numpy as np
import pytest
import torch

from videogen.cli import main
from videogen.miniature import MiniatureConfig, build_miniature
from videogen.fold import FoldVAE
from videogen.model import WanVAE, load_components
from videogen.train import LatentCodec, Trainer, TrainSettings, batch_rng, dit_batch, vae_batch


def read_log(path):
    with open(path) as f:
        return [(r["stage"], int(r["step"]), r["task"]) for r in csv.DictReader(f)]


def test_batches_are_keyed_by_step():
    a = vae_batch(batch_rng(0, "vae", 7), 4, 32)
    b = vae_batch(batch_rng(0, "vae", 7), 4, 32)
    assert torch.equal(a, b) and a.min() >= -1 and a.max() <= 1
    shapes = {tuple(vae_batch(batch_rng(0, "vae", step), 4, 32).shape) for step in range(30)}
    # About the same pixel count for short clips; one clip of each long length (65, 129 frames).
    assert shapes == {(4, 3, 9, 32, 32), (2, 3, 17, 32, 32), (1, 3, 33, 32, 32), (1, 3, 65, 32, 32), (1, 3, 129, 32, 32)}
    assert not torch.equal(a, vae_batch(batch_rng(0, "vae", 8), 4, 32))


def test_transformer_batches_cover_the_three_tasks():
    vae = build_miniature()["vae"].eval()
    codec = LatentCodec(vae, MiniatureConfig().size)
    tasks = {}
    for step in range(12):
        task, x0, known, prompts = dit_batch(batch_rng(0, "dit", step), codec, 2)
        assert x0.shape[:2] == (2, 192) and x0.shape[3:] == (8, 8) and known.shape == (2, x0.shape[2])
        assert len(prompts) == 2 and all(known.sum(dim=1) < x0.shape[2])  # something is always left to make
        tasks.setdefault(task, []).append(known)
    assert set(tasks) == {"t2v", "window", "keyframes"}
    assert all(k.sum() == 0 for k in tasks["t2v"])
    assert any(k.sum() > 0 for k in tasks["window"])


def test_train_resume_and_load(tmp_path):
    out = tmp_path / "run"
    flags = ["--out", str(out), "--vae-steps", "2", "--batch", "2", "--checkpoint-every", "1", "--quiet"]
    assert main(["train", *flags, "--steps", "2", "--expert-steps", "1"]) == 0
    first = read_log(out / "loss.csv")
    # Pixel space: the fold has nothing to train, so the transformer stage starts at once; the
    # low-noise expert comes after it.
    assert [(s, n) for s, n, _ in first] == [("dit", 1), ("dit", 2), ("expert", 1)]

    assert main(["train", *flags, "--steps", "2"]) == 2  # a run folder with a checkpoint needs --resume
    assert main(["train", *flags, "--steps", "4", "--expert-steps", "2", "--resume"]) == 0
    second = read_log(out / "loss.csv")
    assert second[:3] == first
    assert [(s, n) for s, n, _ in second[3:]] == [("dit", 3), ("dit", 4), ("expert", 2)]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["counts"] == {"vae": 0, "dit": 4, "expert": 2}

    components = load_components(str(out / "model"))
    assert isinstance(components["vae"], FoldVAE)
    assert components["transformer"].config.in_channels == 2 * 192 + 4
    assert components["vae"].config.scale_factor_spatial == 4
    assert np.allclose(components["vae"].config.latents_std, ckpt["latents_std"])
    trained = ckpt["transformer"]["proj_out.weight"]
    assert torch.equal(components["transformer"].state_dict()["proj_out.weight"], trained)
    size = sum(f.stat().st_size for f in (out / "model").rglob("*") if f.is_file())
    assert size < 25 * 2**20
    # The transformer learnt; the text encoder stayed as initialised (seeded), as Wan's stays frozen.
    assert not torch.equal(trained, build_miniature()["transformer"].state_dict()["proj_out.weight"])
    initial = build_miniature()["text_encoder"].state_dict()
    assert all(torch.equal(v, initial[k]) for k, v in components["text_encoder"].state_dict().items())


def test_the_progress_bar_runs_to_the_nearer_limit(tmp_path, capsys):
    flags = ["--out", str(tmp_path / "run"), "--batch", "2", "--steps", "2", "--expert-steps", "1"]
    assert main(["train", *flags, "--minutes", "30"]) == 0
    err = capsys.readouterr().err
    # Two steps end the stage long before 27 minutes: the bar says 100% there, and counts steps beside it.
    assert "train dit: 100%" in err and "step=2" in err and "train expert: 100%" in err

    trainer = Trainer(TrainSettings(out=tmp_path / "timed", steps=100_000, minutes=10.0))
    trainer.seconds["dit"] = 0.25 * trainer.budget("dit")
    trainer.counts["dit"] = 50
    assert trainer.done("dit", 100_000) == pytest.approx(0.25)  # the time budget is nearer than 100,000 steps
    assert trainer.done("dit", 100) == pytest.approx(0.5)  # 50 of 100 steps is nearer than a quarter of the time


def test_a_wan_vae_is_trained_first_and_its_latent_statistics_measured(tmp_path):
    trainer = Trainer(TrainSettings(out=tmp_path / "run", vae_steps=2, steps=1, expert_steps=1, batch=2, minutes=None),
                      MiniatureConfig(vae="wan"))
    folder = trainer.run(progress=False)
    assert [(s, n) for s, n, _ in read_log(tmp_path / "run" / "loss.csv")] == [("vae", 1), ("vae", 2), ("dit", 1), ("expert", 1)]
    vae = load_components(str(folder))["vae"]
    assert type(vae).__name__ == "AutoencoderKLWan" and vae.config.z_dim == 16
    assert min(vae.config.latents_std) != 1.0


def test_fold_is_exact_and_decodes_in_pieces_as_whole():
    fold = FoldVAE()
    x = vae_batch(batch_rng(0, "vae", 3), 2, 32, 33)  # (1, 3, 33, 32, 32)
    z = fold.encode(x).latent_dist.mode()
    assert z.shape == (1, 192, 9, 8, 8)
    assert torch.equal(fold.decode(z).sample, x)
    vae = WanVAE(fold)
    whole = vae.decode(z)
    stream = vae.new_stream()
    pieces = np.concatenate([vae.decode_stream(z[:, :, a:b], stream, first=a == 0) for a, b in ((0, 3), (3, 4), (4, 9))])
    assert whole.shape == (33, 32, 32, 3) and np.array_equal(pieces, whole)
    with pytest.raises(ValueError, match="32 frames; it takes 1 \\+ 4k"):
        fold.encode(x[:, :, :32])


def test_the_miniature_pads_prompts_to_its_tokenizers_32_tokens_not_wans_512(tmp_path):
    """Training and the engine encode a prompt alike: cut and zero-padded to the tokenizer's length."""
    from diffusers import WanPipeline

    from videogen.model import WanModel, build_random_wan, save_components, text_length

    components = build_miniature(MiniatureConfig(layers=1))
    save_components(components, tmp_path / "m", prediction="sample")
    model = WanModel.load(str(tmp_path / "m"))
    assert text_length(model.pipe.tokenizer) == 32
    prompt = "the yellow triangle is bouncing up and down on a light background"
    embeds, _ = model.encode_prompt(prompt, "", 1.0)
    assert embeds.shape == (1, 32, 64)
    words = len(prompt.split()) + 1  # and the end token
    assert embeds[0, :words].abs().sum(dim=-1).min() > 0 and embeds[0, words:].abs().sum() == 0
    components["text_encoder"].eval()
    with torch.no_grad():
        trained, _ = WanPipeline(**components).encode_prompt(
            prompt=[prompt], do_classifier_free_guidance=False,
            max_sequence_length=text_length(components["tokenizer"]), device=torch.device("cpu"))
    torch.testing.assert_close(trained, embeds)
    assert text_length(build_random_wan("tiny-random")["tokenizer"]) == 512  # Wan's length, as its checkpoints say


def test_a_sample_predicting_model_gives_the_sampler_a_velocity(tmp_path):
    """The miniature predicts clean frames; the engine's sampler gets ``(x_t - x0) / sigma`` from it."""
    from videogen.model import SAMPLE_MIN_SIGMA, WanModel, save_components

    save_components(build_miniature(MiniatureConfig(layers=1, expert_layers=1)), tmp_path / "m", prediction="sample")
    model = WanModel.load(str(tmp_path / "m"))
    assert model.prediction == "sample" and model.latent_channels == 192
    x = torch.randn(1, 2 * 192 + 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    embeds = model.encode_prompt("a red circle moving right", "", 1.0)
    # Above the boundary (sigma 0.6) the transformer predicts; below it, the low-noise expert.
    assert model.boundary == pytest.approx(600.0)
    for t, sigma, net in ((torch.tensor(600.0), 0.6, model.transformer),
                          (torch.tensor(10.0), SAMPLE_MIN_SIGMA, model.transformer_2)):
        raw = net(hidden_states=x, timestep=t.expand(1), encoder_hidden_states=embeds[0], return_dict=False)[0]
        assert torch.allclose(model.predict(x, t, embeds, 1.0), (x[:, :192] - raw) / sigma, atol=1e-4)
    flow = WanModel(load_components(str(tmp_path / "m")))  # told nothing: diffusers' velocity, as output
    raw = flow.transformer(hidden_states=x, timestep=torch.tensor([600.0]), encoder_hidden_states=embeds[0], return_dict=False)[0]
    assert torch.equal(flow.predict(x, torch.tensor(600.0), embeds, 1.0), raw)
    with pytest.raises(ValueError, match="prediction_type='noise'"):
        WanModel(load_components(str(tmp_path / "m")), prediction="noise")


def test_a_miniature_with_4x4_pixel_tokens_is_planned_and_run_at_its_own_size_multiple(tmp_path):
    """``MiniatureConfig(patch=(1, 1, 1))``: the folder's geometry comes from its own configs, so a
    36x36 request (a multiple of 4, not of 8) is refused by the default patch and runs on this one."""
    from videogen.denoise import Denoiser
    from videogen.errors import RequestError
    from videogen.model import save_components
    from videogen.plan import make_plan
    from videogen.presets import resolve_model
    from videogen.request import resolve

    for patch in ((1, 2, 2), (1, 1, 1)):
        save_components(build_miniature(MiniatureConfig(layers=1, patch=patch)), tmp_path / str(patch[1]), prediction="sample")
    request = dict(prompt="a red circle moving right", width=36, height=36, frames=9, steps=2, seed=3)
    with pytest.raises(RequestError, match="width.*36.*multiple of 8"):
        resolve(request, resolve_model(str(tmp_path / "2")))
    preset = resolve_model(str(tmp_path / "1"))
    assert preset.patch == (1, 1, 1) and preset.size_multiple == 4
    spec = resolve(request, preset)
    assert spec.latent_shape == (192, 9, 9)
    plan = make_plan(3, 3, 1, 0)
    latents = Denoiser(str(tmp_path / "1")).window(spec, plan.windows[0], {})["latents"]
    assert latents.shape == (192, 3, 9, 9) and np.isfinite(latents).all() and latents.std() > 0.1


def test_a_low_noise_expert_is_trained_after_the_transformer_and_on_a_trained_base(tmp_path):
    """The expert (`transformer_2`, 4x4-pixel tokens) takes the steps below its boundary; ``--base``
    trains only it, on top of another run's transformer, which stays as it was."""
    first = tmp_path / "first"
    flags = ["--batch", "2", "--checkpoint-every", "1", "--quiet"]
    assert main(["train", "--out", str(first), "--steps", "1", "--expert-steps", "1", *flags]) == 0
    base = load_components(str(first / "model"))
    assert tuple(base["transformer_2"].config.patch_size) == (1, 1, 1)
    index = __import__("json").loads((first / "model" / "model_index.json").read_text())
    assert index["boundary_ratio"] == MiniatureConfig().expert_boundary == 0.6

    second = tmp_path / "second"
    assert main(["train", "--out", str(second), "--base", str(first / "model"), "--expert-steps", "2", *flags]) == 0
    assert [(s, n) for s, n, _ in read_log(second / "loss.csv")] == [("expert", 1), ("expert", 2)]
    trained = load_components(str(second / "model"))
    for name in ("transformer", "text_encoder"):
        a, b = base[name].state_dict(), trained[name].state_dict()
        assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert trained["vae"].config.latents_mean == base["vae"].config.latents_mean
    a, b = base["transformer_2"].state_dict(), trained["transformer_2"].state_dict()
    assert not torch.equal(a["proj_out.weight"], b["proj_out.weight"])
    # Resuming a based run continues its expert and keeps the base.
    assert main(["train", "--out", str(second), "--expert-steps", "3", "--resume", *flags]) == 0
    assert read_log(second / "loss.csv")[-1][:2] == ("expert", 3)
    assert torch.load(second / "checkpoint.pt", weights_only=False)["based_on"] == str(first / "model")

    # A checkpoint made without an expert is not resumed by a configuration with one.
    old = Trainer(TrainSettings(out=tmp_path / "old", steps=1, batch=2, minutes=None), MiniatureConfig(expert_boundary=None))
    old.run(progress=False)
    assert main(["train", "--out", str(tmp_path / "old"), "--resume", *flags]) == 2
    assert main(["train", "--out", str(tmp_path / "x"), "--base", str(tmp_path), *flags]) == 2
    assert main(["train", "--out", str(second), "--base", str(first / "model"), "--resume", *flags]) == 2
    assert not (tmp_path / "x").exists()


def test_the_motion_error_weighs_the_4_frame_stair_and_not_a_steady_offset(tmp_path):
    """`motion_error` compares frame-to-frame change: a guess that holds each latent frame's picture
    for its 4 frames is penalised; one off by the same amount in every frame is not."""
    from einops import rearrange

    from videogen.shapes import sample_scene
    from videogen.train import motion_error

    vae = build_miniature()["vae"].eval()
    codec = LatentCodec(vae, MiniatureConfig().size)
    x0 = torch.stack(codec.encode([(sample_scene(s, "train"), 4, 0, 4) for s in range(2)]))  # (2, 192, 4, 8, 8)
    raw = x0 * codec.std + codec.mean
    blocks = rearrange(raw, "b (c t p q) f h w -> b c t p q f h w", t=4, p=4, q=4)
    stair = rearrange(blocks[:, :, -1:].expand_as(blocks), "b c t p q f h w -> b (c t p q) f h w")
    offset = torch.randn(2, 3, 1, 4, 4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    steady = rearrange(blocks + offset, "b c t p q f h w -> b (c t p q) f h w")
    stair, steady = ((z - codec.mean) / codec.std for z in (stair, steady))
    none, every = torch.zeros(2, 4), torch.ones(2, 4)

    assert motion_error(x0, x0, none, vae) == 0
    assert ((steady - x0) ** 2).mean() > ((stair - x0) ** 2).mean() > 0  # by frame error, the steady guess is worse
    assert motion_error(steady, x0, none, vae) < 1e-8
    assert motion_error(stair, x0, none, vae) > 1e-3
    assert motion_error(stair, x0, every, vae) == 0  # transitions between given frames are not counted

    from diffusers import WanPipeline
    from videogen.train import flow_loss

    config = MiniatureConfig(layers=1, expert_layers=1)
    pipe = WanPipeline(**build_miniature(config))
    prompts = ["a red circle moving right"] * 2
    losses = [flow_loss(pipe, x0, none, prompts, np.random.default_rng(0), config.mask_channels, "sample",
                        motion_weight=w).item() for w in (0.0, 4.0)]
    assert losses[1] > losses[0] > 0  # the same transformer, batch and noise: the motion term is added


def test_the_loss_balance_weighs_each_noise_level_by_its_running_loss(tmp_path):
    from diffusers import WanPipeline
    from videogen.train import LossBalance, flow_loss

    balance = LossBalance(1.0, bins=4, decay=0.5)
    for _ in range(40):  # a quiet level (bin 0) and a loud one (bin 3)
        balance.update(torch.tensor([0.1, 0.9]), torch.tensor([0.04, 0.4]))
    w = balance.weights(torch.tensor([0.1, 0.3, 0.6, 0.9]))
    assert w[0] / w[3] == pytest.approx(10, rel=1e-4)  # power 1: each level's loss counts the same
    assert w.mean() == pytest.approx(1, rel=1e-6) and w[1] == w[2]  # levels never seen keep the start
    half = LossBalance(0.5, bins=4, decay=0.5)
    half.load_state_dict(balance.state_dict())
    w = half.weights(torch.tensor([0.1, 0.9]))
    assert w[0] / w[1] == pytest.approx(10**0.5, rel=1e-4)

    # flow_loss with a balance: the loss to step on, and the unweighted one, equal to the loss without it.
    config = MiniatureConfig(layers=1, expert_layers=1, loss_balance=0.5)
    pipe = WanPipeline(**build_miniature(config))
    codec = LatentCodec(pipe.vae, config.size)
    _, x0, known, prompts = dit_batch(batch_rng(0, "dit", 0), codec, 4)
    plain = flow_loss(pipe, x0, known, prompts, np.random.default_rng(0), config.mask_channels, "sample")
    balance = LossBalance(1.0)
    balance.mean[:16] = 0.1  # the lower half of the levels has been quiet
    weighted, unweighted = flow_loss(pipe, x0, known, prompts, np.random.default_rng(0), config.mask_channels,
                                     "sample", balance=balance)
    assert unweighted.item() == pytest.approx(plain.item(), rel=1e-5)
    assert weighted.item() != pytest.approx(plain.item(), rel=1e-3)
    assert (balance.mean != torch.cat([torch.full((16,), 0.1), torch.ones(16)]).double()).sum() > 0  # updated
    with pytest.raises(ValueError, match="expert"):
        flow_loss(pipe, x0, known, prompts, np.random.default_rng(0), config.mask_channels, "sample",
                  below=0.6, balance=balance)

    # The running means are in the checkpoint: a resumed run weighs its steps as an unbroken one does.
    def run(out, steps, resume=False):
        trainer = Trainer(TrainSettings(out=out, steps=steps, expert_steps=0, batch=2, minutes=None,
                                        checkpoint_every=1), config)
        if resume:
            trainer.load()
        trainer.run(progress=False)
        return trainer

    whole = run(tmp_path / "whole", 4)
    run(tmp_path / "cut", 2)
    resumed = run(tmp_path / "cut", 4, resume=True)
    assert whole.balance.power == 0.5
    assert torch.equal(whole.balance.mean, resumed.balance.mean)
    assert (whole.balance.mean != 1).sum() >= 4  # 4 steps of 2 clips: several levels moved
    assert torch.equal(whole.components["transformer"].state_dict()["proj_out.weight"],
                       resumed.components["transformer"].state_dict()["proj_out.weight"])
    off = Trainer(TrainSettings(out=tmp_path / "off", steps=1, batch=2, minutes=None), MiniatureConfig(loss_balance=0))
    assert off.balance is None
