"""`videogen train`: train the miniature model from scratch on clips of the shapes world.

Two stages, in order, each resumable:

1. **vae** (only with a Wan VAE, ``MiniatureConfig(vae="wan")``; the default pixel fold has nothing
   to learn): the `AutoencoderKLWan` learns to reconstruct clips of 9 to 129 frames (L1 + MSE,
   shapes weighted up, a light KL). Then the latents' per-channel mean and std are measured and
   written into the VAE's config, as Wan's VAE carries them (the fold's too).
2. **dit**: the transformer learns flow matching on the frozen VAE's latents (the text encoder stays
   as initialised unless ``MiniatureConfig(train_text_encoder=True)``).
   With diffusers' `FlowMatchEulerDiscreteScheduler`, ``x_sigma = (1 - sigma) * x0 + sigma * noise``
   and ``step`` moves ``x += (sigma_next - sigma) * prediction``, so the target is ``noise - x0``
   (a clean-frame model's output is turned into that velocity first).
   Each step trains one of the three tasks the engine asks for, on a batch of clips drawn on the fly:
   ``t2v`` (a whole clip, nothing given), ``window`` (a stretch of a longer clip with some latent
   frames given through the mask and conditioning channels), ``keyframes`` (latent frames at a
   fixed stride spanning a long clip; a continuing chunk has its first frame given).

Every batch comes from seeds derived from (run seed, stage, step), so a resumed run draws exactly
the clips an uninterrupted one would. Checkpoints (``checkpoint.pt``, written atomically) hold the
weights, optimiser states and step counts; ``loss.csv`` logs every step; at the end the model is
exported as a diffusers folder (``model/``) that ``--model`` and `load_components` read.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from diffusers import WanPipeline
from einops import rearrange
from tqdm import tqdm

from .miniature import MiniatureConfig, build_miniature
from .model import save_components, text_length, velocity_from_sample
from .shapes import caption, render, sample_scene

STAGES = ("vae", "dit", "expert")
TASKS = ("t2v", "window", "keyframes")
TASK_ODDS = (0.4, 0.3, 0.3)
LATENT_LENGTHS = {"t2v": (5, 9), "window": (5, 9), "keyframes": (2, 3, 5)}  # latent frames per sample
VAE_SHARE = 0.4  # of a time budget, for the VAE stage
# Each stage keeps its learning rate for the first part of its budget, then decays it along a
# half cosine to `FINAL_LR` of it: measured on the VAE after 2,200 steps, 200 more steps at a
# tenth of the rate cut the shapes' reconstruction error by 27%, at the full rate by 15%.
DECAY_FROM = {"vae": 0.75, "dit": 0.7, "expert": 0.7}
# Of a time budget, for the low-noise expert (`MiniatureConfig.expert_boundary`), after the
# transformer: 10 of 90 minutes (1,935 steps of 0.31 s; a step of its 4x4-pixel tokens costs twice
# one of the transformer's). 20 minutes scored no better on held-out prompts (shape 52% against
# 55%), and the transformer's motion needs its 80 (55 minutes drew it on 45%, 85 on 85%; MODEL.md).
EXPERT_SHARE = 1 / 9
FINAL_LR = 0.03
# Pixel frames per VAE training clip, drawn per step. Wan's VAE is causal and carries a cache from
# latent frame to latent frame; one latent frame's influence reaches about 26 latent frames (~100
# pixel frames) further on. Trained on short clips alone, it drifts on long ones (a 97-frame clip
# was off by 38 levels on average), so clips up to 129 frames (33 latent frames, an 8-window draft
# clip) are in the mix, fewer to a batch.
VAE_FRAMES = (9, 17, 33, 65, 129)
VAE_FRAME_ODDS = (0.3, 0.25, 0.2, 0.15, 0.1)  # short clips learn shapes fastest per second; long ones stop the drift
# A clean-frame model's velocity error is its frame error over sigma: left as it is, a step at
# sigma 0.05 weighs 400 times one at sigma 1, and the noisiest steps, where the shape's place and
# path (and so the prompt's motion) are decided, hardly trained: after 6,500 steps at shift 32 its
# prediction from pure noise was a blank frame for every prompt. Below this sigma the velocity
# error is weighed as at this sigma, so no step weighs more than 4 times another.
LOSS_SIGMA_FLOOR = 0.5
# `LossBalance`: noise levels are binned by the schedule's uniform variable (32 bins: the top one is
# sigma 0.999-1, the bottom 0-0.51 at shift 32), and each bin's loss is followed by a moving average
# over about 50 of its samples (200 steps of 8 clips).
BALANCE_BINS = 32
BALANCE_DECAY = 0.98
EMPTY_PROMPT_ODDS = 0.1  # captions dropped, so classifier-free guidance has an unconditional model
KL_WEIGHT = 1e-6
# Shapes cover about a tenth of the pixels: unweighted, the VAE spends hundreds of steps on the
# background alone (measured: after 673 steps it drew no shapes at all).
FOREGROUND_WEIGHT = 10.0
MODEL_DEFAULTS = {"width": 32, "height": 32, "fps": 8, "frames": 33, "quality": "miniature"}
# The exported folder's videogen.yaml, as configs/models/miniature.yaml has it for the shipped copy.
MODEL_PRESET = {"defaults": MODEL_DEFAULTS, "max_pixels": 64 * 64, "view": {"short_side": 256, "filter": "lanczos"}}


@dataclass
class TrainSettings:
    """What one `videogen train` run does.

    Args:
        out: run folder (checkpoint, loss log, exported model).
        vae_steps, steps, expert_steps: optimiser steps of the VAE, transformer and expert stages.
        minutes: wall-clock budget (None: no limit); the VAE stage gets `VAE_SHARE` of it, the
            expert `EXPERT_SHARE` (and whatever the transformer stage left).
        batch: clips per step.
        checkpoint_every: steps between checkpoints.
        seed: the run's seed; every clip derives from it.
    """

    out: Path
    vae_steps: int = 4000
    steps: int = 100_000
    expert_steps: int = 100_000
    minutes: float | None = 90.0
    batch: int = 8
    vae_lr: float = 1e-3
    lr: float = 5e-4
    checkpoint_every: int = 100
    seed: int = 0


def foreground_weights(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel loss weights (B, 1, F, H, W): `FOREGROUND_WEIGHT` + 1 where a pixel differs from its row's median.

    A shape covers under half of every row, so the row median is the background (gradients included).
    """
    off = (x - x.median(dim=-1, keepdim=True).values).abs().amax(dim=1, keepdim=True)
    return 1.0 + FOREGROUND_WEIGHT * (off > 0.1).float()


def batch_rng(seed: int, stage: str, step: int) -> np.random.Generator:
    """The generator for one step's batch: keyed by (seed, stage, step), never by order or time."""
    return np.random.default_rng(np.random.SeedSequence([seed, STAGES.index(stage), step]))


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames (F, H, W, 3) to a float clip (3, F, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def vae_batch(rng: np.random.Generator, batch: int, size: int, frames: int | None = None) -> torch.Tensor:
    """Clips (B, 3, F, H, W): stretches of clips of random length, so speeds vary.

    Args:
        batch: clips of 9 frames; longer clips come fewer to a batch (9 * batch pixel frames in all).
        frames: pixel frames per clip; default: drawn from `VAE_FRAMES`.
    """
    frames = frames or int(rng.choice(VAE_FRAMES, p=VAE_FRAME_ODDS))
    clips = []
    for _ in range(max(1, batch * VAE_FRAMES[0] // frames)):
        scene = sample_scene(int(rng.integers(1 << 62)), "train")
        groups = int(rng.integers((frames - 1) // 4, 33))  # the clip is 4 * groups + 1 pixel frames
        start = 4 * int(rng.integers(0, groups - (frames - 1) // 4 + 1))
        times = (start + np.arange(frames)) / (4 * groups)
        clips.append(to_tensor(render(scene, times, size)))
    return torch.stack(clips)


class LatentCodec:
    """The frozen VAE as the transformer stage sees it: stretches of scenes to normalised latents."""

    def __init__(self, vae, size: int):
        self.vae, self.size = vae, size
        cfg = vae.config
        self.mean = torch.tensor(cfg.latents_mean).view(-1, 1, 1, 1)
        self.std = torch.tensor(cfg.latents_std).view(-1, 1, 1, 1)

    def pixels(self, scene, length: int, start: int, stop: int) -> torch.Tensor:
        """The pixel frames that encode to latent frames ``[start, stop)`` of a ``length``-latent clip.

        A stretch not at the clip's start begins one pixel frame early, so that its first latent
        frame covers four frames as it does in the whole clip (and is dropped after encoding).
        """
        pixels = 4 * (length - 1) + 1
        first = max(0, 4 * start - 4)
        times = np.arange(first, 4 * (stop - 1) + 1) / max(pixels - 1, 1)
        return to_tensor(render(scene, times, self.size))

    @torch.no_grad()
    def encode(self, stretches: list[tuple]) -> list[torch.Tensor]:
        """Latents (C, stop - start, h, w) for each ``(scene, length, start, stop)``.

        Stretches of equal pixel length are encoded as one batch: the VAE's per-chunk loop, not
        its arithmetic, dominates on small clips.
        """
        clips = [self.pixels(*s) for s in stretches]
        groups: dict[int, list[int]] = {}
        for i, clip in enumerate(clips):
            groups.setdefault(clip.shape[1], []).append(i)
        latents: list[torch.Tensor] = [torch.empty(0)] * len(clips)
        for members in groups.values():
            z = self.vae.encode(torch.stack([clips[i] for i in members])).latent_dist.mode()
            for row, i in zip(z, members):
                row = row if stretches[i][2] == 0 else row[:, 1:]
                latents[i] = (row - self.mean) / self.std
        return latents


def dit_batch(rng: np.random.Generator, codec: LatentCodec, batch: int):
    """One step's batch for the transformer: one task, one length.

    Returns:
        task name; x0 (B, C, T, h, w) normalised latents; known (B, T) float, 1 where a latent
        frame is given; the prompts.
    """
    task = TASKS[rng.choice(len(TASKS), p=TASK_ODDS)]
    t = int(rng.choice(LATENT_LENGTHS[task]))
    stretches, known, prompts = [], [], []
    for _ in range(batch):
        scene = sample_scene(int(rng.integers(1 << 62)), "train")
        mask = np.zeros(t, np.float32)
        if task == "t2v":
            stretches.append([(scene, t, 0, t)])
        elif task == "window":
            length = t + int(rng.integers(0, 7 * t))
            start = int(rng.integers(0, length - t + 1))
            stretches.append([(scene, length, start, start + t)])
            pick = rng.random()
            if pick < 0.6:
                mask[[0, -1]] = 1  # keyframes at both ends, as the engine's windows have
            elif pick < 0.8:
                mask[0] = 1
            else:
                mask[rng.choice(t, size=int(rng.integers(1, t)), replace=False)] = 1
        else:
            stride, chunk = int(rng.integers(2, 9)), int(rng.integers(0, 3))
            first = chunk * (t - 1) * stride
            positions = [first + i * stride for i in range(t)]
            length = positions[-1] + 1 + int(rng.integers(0, 2 * stride))
            stretches.append([(scene, length, p, p + 1) for p in positions])  # each keyframe on its own
            mask[0] = float(chunk > 0)  # a continuing chunk starts from the previous chunk's last keyframe
        known.append(torch.from_numpy(mask))
        prompts.append("" if rng.random() < EMPTY_PROMPT_ODDS else caption(scene))
    flat = codec.encode([s for sample in stretches for s in sample])
    latents, i = [], 0
    for sample in stretches:
        latents.append(torch.cat(flat[i : i + len(sample)], dim=1))
        i += len(sample)
    return task, torch.stack(latents), torch.stack(known), prompts


class LossBalance:
    """Weights that even out the transformer's loss across noise levels.

    The clean-frame error at the noisiest levels (sigma 0.999: 0.31 in normalised latents for the
    shipped transformer) is ten times that at the levels where an outline is drawn (0.023 at sigma
    0.8), so their gradients take most of each step, though much of that error cannot be learned
    (where a shape starts is not in the noise). A sample at a noise level whose running mean loss is
    ``L`` is weighed ``L ** -power`` (normalised to a mean weight of 1 over the levels): power 1 makes
    every level's loss count the same (EDM2's per-level uncertainty weighting, Karras et al. 2024);
    0.5 makes their gradients about the same size; 0 is off. At 0.5 a whole run learnt those levels
    no better (MODEL.md, run B), so `MiniatureConfig.loss_balance` leaves it off.
    """

    def __init__(self, power: float, bins: int = BALANCE_BINS, decay: float = BALANCE_DECAY):
        self.power, self.decay = power, decay
        self.mean = torch.ones(bins, dtype=torch.float64)

    def bins(self, u: torch.Tensor) -> torch.Tensor:
        """The bin of each noise level, given as the schedule's uniform variable in [0, 1)."""
        return (u * len(self.mean)).long().clamp(0, len(self.mean) - 1)

    def weights(self, u: torch.Tensor) -> torch.Tensor:
        w = self.mean ** -self.power
        return (w / w.mean())[self.bins(u)].float()

    def update(self, u: torch.Tensor, losses: torch.Tensor) -> None:
        """Fold each sample's loss into its level's running mean, in batch order."""
        for b, loss in zip(self.bins(u).tolist(), losses.detach().double().tolist()):
            self.mean[b] = self.decay * self.mean[b] + (1 - self.decay) * loss

    def state_dict(self) -> dict:
        return {"power": self.power, "mean": self.mean.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.mean = state["mean"].clone().double()


def flow_loss(pipe: WanPipeline, x0, known, prompts, rng: np.random.Generator, mask_channels: int,
              prediction: str = "flow", transformer=None, below: float | None = None,
              motion_weight: float = 0.0, balance: LossBalance | None = None):
    """Flow-matching loss of a transformer on one batch; given frames are inputs, not targets.

    With ``prediction="sample"`` the transformer outputs clean latents, turned into the velocity
    the loss (and the engine's sampler) uses.

    Args:
        transformer: the one to train (default: the pipeline's first).
        below: draw the noise levels evenly in [0, below) (a low-noise expert's share of the
            steps) instead of through the inference schedule's shift.
        balance: weigh each sample by its noise level's `LossBalance` (and update it); the loss
            is then returned twice: ``(loss to step on, loss as it would be unweighted)``.
    """
    transformer = pipe.transformer if transformer is None else transformer
    b, _, t, h, w = x0.shape
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
    noise = torch.randn(x0.shape, generator=gen)
    u = torch.rand(b, generator=gen)
    shift = pipe.scheduler.config.shift
    if below is None:
        sigma = (shift * u / (1 + (shift - 1) * u)).view(b, 1, 1, 1, 1)  # the inference schedule's shift
    else:
        sigma = (below * u).view(b, 1, 1, 1, 1)
    x = (1 - sigma) * x0 + sigma * noise
    m = known.view(b, 1, t, 1, 1)
    condition = torch.cat([m.expand(b, mask_channels, t, h, w), x0 * m], dim=1)
    # The engine's encoding: cut and zero-padded to the tokenizer's length (`text_length`).
    embeds, _ = pipe.encode_prompt(prompt=prompts, do_classifier_free_guidance=False,
                                   max_sequence_length=text_length(pipe.tokenizer), device=torch.device("cpu"))
    pred = transformer(hidden_states=torch.cat([x, condition], dim=1), timestep=sigma.view(b) * 1000,
                            encoder_hidden_states=embeds, return_dict=False)[0]
    made = (1 - m).expand_as(pred)  # given frames are inputs, not targets
    weight = made
    motion = pred.new_zeros(())
    if prediction == "sample":  # the loss stays on the velocity, as the sampler uses it
        if motion_weight:
            motion = motion_weight * motion_error(pred, x0, known, pipe.vae)
        pred = velocity_from_sample(x, pred, sigma.view(b))
        weight = made * (sigma / LOSS_SIGMA_FLOOR).clamp(max=1) ** 2
    error = ((pred - (noise - x0)) ** 2 * weight).flatten(1).sum(1)  # per sample
    plain = error.sum() / made.sum().clamp(min=1) + motion
    if balance is None:
        return plain
    if below is not None:
        raise ValueError("balance weighs the shifted schedule's noise levels; an expert's (below=) are not binned")
    balance.update(u, error / made.flatten(1).sum(1).clamp(min=1))
    return (balance.weights(u) * error).sum() / made.sum().clamp(min=1) + motion, plain


def motion_error(guess: torch.Tensor, x0: torch.Tensor, known: torch.Tensor, vae) -> torch.Tensor:
    """Mean squared error of the frame-to-frame change in pixels, clean-frame guess against truth.

    A pixel fold holds 4 frames in one latent frame; the frame error alone lets a guess draw the
    same picture 4 times and jump at the next latent frame (a step in time the truth does not
    have). Differences between neighbouring pixel frames, inside latent frames and across them,
    weigh that step directly. Transitions between two given frames are not counted.

    Args:
        guess, x0: normalised latents (B, C, T, h, w); known: (B, T), 1 where a frame is given.
    """
    t, s = vae.config.scale_factor_temporal, vae.config.scale_factor_spatial
    std = torch.tensor(vae.config.latents_std, dtype=guess.dtype).view(1, -1, 1, 1, 1)
    frames = [rearrange(z * std, "b (c t p q) f h w -> b c (f t) (h p) (w q)", t=t, p=s, q=s) for z in (guess, x0)]
    change = [f[:, :, 1:] - f[:, :, :-1] for f in frames]
    made = (1 - known).repeat_interleave(t, dim=1)
    made = torch.maximum(made[:, 1:], made[:, :-1]).view(known.shape[0], 1, -1, 1, 1).expand_as(change[0])
    return ((change[0] - change[1]) ** 2 * made).sum() / made.sum().clamp(min=1)


@torch.no_grad()
def latent_statistics(vae, size: int, seed: int, clips: int = 64) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the VAE's latents over ``clips`` fresh clips."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 99]))
    z = torch.cat([vae.encode(vae_batch(rng, 8, size, VAE_FRAMES[0])).latent_dist.mode() for _ in range(clips // 8)])
    dims = (0, 2, 3, 4)
    return z.mean(dim=dims).tolist(), z.std(dim=dims).clamp(min=1e-3).tolist()


class Trainer:
    """One training run: its components, optimisers and counters, saved to and restored from ``out``."""

    def __init__(self, settings: TrainSettings, config: MiniatureConfig = MiniatureConfig()):
        self.s, self.config = settings, config
        self.components = build_miniature(config, seed=settings.seed)
        c = self.components
        self.vae_opt = torch.optim.AdamW([p for p in c["vae"].parameters() if p.requires_grad] or [torch.zeros(1)],
                                         lr=settings.vae_lr)
        c["text_encoder"].requires_grad_(config.train_text_encoder)
        self.dit_params = [p for n in ("transformer", "text_encoder") for p in c[n].parameters() if p.requires_grad]
        self.dit_opt = torch.optim.AdamW(self.dit_params, lr=settings.lr, weight_decay=0.01)
        expert = c.get("transformer_2")
        self.expert_params = list(expert.parameters()) if expert is not None else []
        self.expert_opt = torch.optim.AdamW(self.expert_params or [torch.zeros(1)], lr=settings.lr, weight_decay=0.01)
        self.balance = LossBalance(config.loss_balance) if config.loss_balance else None
        self.counts = {stage: 0 for stage in STAGES}
        self.seconds = {stage: 0.0 for stage in STAGES}
        self.stats_done = False
        self.based_on: str | None = None  # a model folder whose VAE, text encoder and transformer were taken

    @property
    def has_expert(self) -> bool:
        return self.components.get("transformer_2") is not None

    def start_from(self, folder: str | Path) -> None:
        """Take a trained model folder's VAE (and its latent statistics), text encoder and
        transformer, and train only the low-noise expert: the whole budget goes to it.
        """
        from .model import load_components

        if not self.has_expert:
            raise ValueError("this configuration has no low-noise expert to train (expert_boundary is None)")
        base = load_components(str(folder))
        c = self.components
        for name in ("vae", "text_encoder", "transformer"):
            try:
                c[name].load_state_dict(base[name].state_dict())
            except RuntimeError as e:
                raise ValueError(f"its {name} is not this configuration's ({e})") from None
        c["vae"].register_to_config(latents_mean=list(base["vae"].config.latents_mean),
                                    latents_std=list(base["vae"].config.latents_std))
        self.stats_done = True
        self.based_on = str(folder)

    @property
    def checkpoint_path(self) -> Path:
        return self.s.out / "checkpoint.pt"

    @property
    def log_path(self) -> Path:
        return self.s.out / "loss.csv"

    def save(self) -> None:
        """Write the checkpoint atomically (temporary name, then rename)."""
        c = self.components
        state = dict(
            counts=self.counts, seconds=self.seconds, stats_done=self.stats_done, based_on=self.based_on,
            vae=c["vae"].state_dict(), transformer=c["transformer"].state_dict(),
            text_encoder=c["text_encoder"].state_dict(), vae_opt=self.vae_opt.state_dict(),
            dit_opt=self.dit_opt.state_dict(), expert_opt=self.expert_opt.state_dict(),
            transformer_2=c["transformer_2"].state_dict() if self.has_expert else None,
            loss_balance=self.balance.state_dict() if self.balance else None,
            latents_mean=c["vae"].config.latents_mean, latents_std=c["vae"].config.latents_std,
        )
        tmp = self.checkpoint_path.with_name(f".{self.checkpoint_path.name}.{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)

    def load(self) -> None:
        """Restore the last checkpoint and cut the loss log back to it (steps after it run again)."""
        state = torch.load(self.checkpoint_path, weights_only=False)
        c = self.components
        for name in ("vae", "transformer", "text_encoder"):
            c[name].load_state_dict(state[name])
        self.vae_opt.load_state_dict(state["vae_opt"])
        self.dit_opt.load_state_dict(state["dit_opt"])
        if self.has_expert != (state.get("transformer_2") is not None):
            raise ValueError(f"was made {'with' if not self.has_expert else 'without'} a low-noise expert, "
                             "unlike this configuration")
        if self.has_expert:
            c["transformer_2"].load_state_dict(state["transformer_2"])
            self.expert_opt.load_state_dict(state["expert_opt"])
        if self.balance and state.get("loss_balance"):
            self.balance.load_state_dict(state["loss_balance"])
        c["vae"].register_to_config(latents_mean=state["latents_mean"], latents_std=state["latents_std"])
        self.counts = {stage: state["counts"].get(stage, 0) for stage in STAGES}
        self.seconds = {stage: state["seconds"].get(stage, 0.0) for stage in STAGES}
        self.stats_done, self.based_on = state["stats_done"], state.get("based_on")
        if self.log_path.exists():
            with open(self.log_path) as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.counts[r["stage"]]]
            self._write_log(rows)

    def _write_log(self, rows: list[dict]) -> None:
        tmp = self.log_path.with_name(f".{self.log_path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["stage", "step", "task", "loss", "seconds"])
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.log_path)

    def budget(self, stage: str) -> float:
        """Seconds the stage may run in total (inf without a time budget)."""
        if self.s.minutes is None:
            return float("inf")
        total = self.s.minutes * 60.0
        if self.based_on:  # the base model's stages are done: everything goes to the expert
            return total if stage == "expert" else 0.0
        if stage == "vae":
            return total * VAE_SHARE if self.trains_vae else 0.0
        if stage == "dit":
            return total * (1 - (EXPERT_SHARE if self.has_expert else 0.0)) - self.seconds["vae"]
        return total - self.seconds["vae"] - self.seconds["dit"] if self.has_expert else 0.0

    @property
    def trains_vae(self) -> bool:
        """Whether the VAE stage runs: a Wan VAE is trained first; the pixel fold has nothing to learn."""
        return any(p.requires_grad for p in self.components["vae"].parameters())

    def run(self, progress: bool = True) -> Path:
        """Train the stages to their step or time limits, then export the model folder."""
        self.s.out.mkdir(parents=True, exist_ok=True)
        if not self.log_path.exists():
            self._write_log([])
        c = self.components
        before = self.counts["vae"]
        if self.trains_vae and not self.based_on:
            self._stage("vae", self.s.vae_steps, self._vae_step, progress)
        if self.counts["vae"] != before:  # the VAE changed (a resumed VAE stage): measure its latents again
            self.stats_done = False
        if not self.stats_done:
            c["vae"].eval()
            mean, std = latent_statistics(c["vae"], self.config.size, self.s.seed)
            c["vae"].register_to_config(latents_mean=mean, latents_std=std)
            self.stats_done = True
            self.save()
        c["vae"].eval().requires_grad_(False)
        self.codec = LatentCodec(c["vae"], self.config.size)
        self.pipe = WanPipeline(**c)
        if not self.based_on:
            self._stage("dit", self.s.steps, self._dit_step, progress)
        if self.has_expert:
            self._stage("expert", self.s.expert_steps, self._expert_step, progress)
        return self.export()

    def time_used(self, stage: str) -> float:
        """The share of the stage's time budget spent so far (0 where it has none)."""
        budget = self.budget(stage)
        return self.seconds[stage] / budget if 0 < budget < float("inf") else 0.0

    def lr_scale(self, stage: str) -> float:
        """The learning rate's factor now: 1 (always, without a time budget), then a half cosine
        down to `FINAL_LR` over the last part of the stage's budget."""
        start = DECAY_FROM[stage]
        done = min(1.0, max(0.0, (self.time_used(stage) - start) / (1 - start)))
        return FINAL_LR + (1 - FINAL_LR) * 0.5 * (1 + np.cos(np.pi * done))

    def done(self, stage: str, steps: int) -> float:
        """How far the stage is, 0 to 1: toward its step count or its time budget, whichever ends it first."""
        return min(1.0, max(self.counts[stage] / steps if steps else 1.0, self.time_used(stage)))

    def _stage(self, stage: str, steps: int, step_fn, progress: bool) -> None:
        # The bar runs to the nearer of the two limits, so its time left is the stage's, not that of
        # a step count the time budget stops long before.
        bar = tqdm(total=100.0, initial=100 * self.done(stage, steps), desc=f"train {stage}",
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]",
                   disable=not progress, dynamic_ncols=True)
        with open(self.log_path, "a", newline="") as log:
            writer = csv.writer(log)
            while self.counts[stage] < steps and self.seconds[stage] < self.budget(stage):
                start = time.perf_counter()
                task, loss = step_fn(self.counts[stage])
                self.counts[stage] += 1
                self.seconds[stage] += time.perf_counter() - start
                writer.writerow([stage, self.counts[stage], task, f"{loss:.5f}", f"{self.seconds[stage]:.2f}"])
                log.flush()
                bar.update(100 * self.done(stage, steps) - bar.n)
                bar.set_postfix(step=self.counts[stage], loss=f"{loss:.4f}", task=task, refresh=False)
                if self.counts[stage] % self.s.checkpoint_every == 0:
                    self.save()
        bar.close()
        self.save()

    def _vae_step(self, step: int) -> tuple[str, float]:
        vae = self.components["vae"].train()
        x = vae_batch(batch_rng(self.s.seed, "vae", step), self.s.batch, self.config.size)
        posterior = vae.encode(x).latent_dist
        # The posterior's mean, not a sample: at the start its noise (std 1) drowns what the encoder
        # says, and the decoder learns to ignore the latents and paint the background. The
        # transformer stage and the engine use the mean too.
        y = vae.decode(posterior.mode()).sample
        w = foreground_weights(x)
        loss = (((y - x).abs() + (y - x) ** 2) * w).mean() / w.mean() + KL_WEIGHT * posterior.kl().mean()
        for group in self.vae_opt.param_groups:
            group["lr"] = self.s.vae_lr * self.lr_scale("vae")
        self.vae_opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        self.vae_opt.step()
        return "reconstruct", loss.item()

    def _dit_step(self, step: int) -> tuple[str, float]:
        c = self.components
        c["transformer"].train()
        c["text_encoder"].train(self.config.train_text_encoder)
        return self._flow_step("dit", step, c["transformer"], self.dit_opt, self.dit_params,
                               motion_weight=self.config.motion_weight)

    def _expert_step(self, step: int) -> tuple[str, float]:
        """One step of the low-noise expert: the transformer's tasks, at noise levels below its boundary."""
        expert = self.components["transformer_2"].train()
        return self._flow_step("expert", step, expert, self.expert_opt, self.expert_params, self.config.expert_boundary,
                               self.config.expert_motion_weight)

    def _flow_step(self, stage: str, step: int, transformer, optimiser, params: list,
                   below: float | None = None, motion_weight: float = 0.0) -> tuple[str, float]:
        """One flow-matching step of ``transformer`` on a batch keyed by (stage, step) (see `flow_loss`)."""
        rng = batch_rng(self.s.seed, stage, step)
        task, x0, known, prompts = dit_batch(rng, self.codec, self.s.batch)
        balance = self.balance if below is None else None  # the transformer's shifted levels only
        loss = flow_loss(self.pipe, x0, known, prompts, rng, self.config.mask_channels, self.config.prediction,
                         transformer=transformer, below=below, motion_weight=motion_weight, balance=balance)
        loss, plain = loss if balance else (loss, loss)
        for group in optimiser.param_groups:
            group["lr"] = self.s.lr * min(1.0, (step + 1) / 200) * self.lr_scale(stage)  # warm-up, then decay
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        return task, plain.item()  # logged unweighted, comparable across runs

    def plot(self) -> Path:
        """Draw ``loss.png`` from ``loss.csv``: each stage's loss against training minutes (``loss.png``)."""
        return plot_loss(self.log_path, self.s.out / "loss.png")

    def export(self) -> Path:
        """Save the trained model as a diffusers folder ``out/model`` (atomically: built aside, then renamed)."""
        c = self.components
        for name in ("vae", "transformer", "text_encoder", "transformer_2"):
            if c.get(name) is not None:
                c[name].eval()
        folder = self.s.out / "model"
        tmp = self.s.out / f".model.{os.getpid()}.tmp"
        save_components(c, tmp, self.config.prediction)
        (tmp / "videogen.yaml").write_text(yaml.safe_dump(MODEL_PRESET))
        if folder.exists():
            old = self.s.out / f".model.{os.getpid()}.old"
            os.replace(folder, old)
            os.replace(tmp, folder)
            for p in sorted(old.rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
            old.rmdir()
        else:
            os.replace(tmp, folder)
        self.plot()
        return folder


def plot_loss(log: Path, png: Path, smooth: int = 50) -> Path:
    """A loss curve per stage (and per task in the transformer stage), a running mean of ``smooth`` steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log) as f:
        rows = list(csv.DictReader(f))
    titles = {"vae": "VAE (L1 + MSE + KL)", "dit": "transformer (flow matching)", "expert": "low-noise expert"}
    stages = [s for s in STAGES if any(r["stage"] == s for r in rows)] or ["dit"]
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.6), constrained_layout=True, squeeze=False)
    for ax, stage in zip(axes[0], stages):
        title = titles[stage]
        mine = [r for r in rows if r["stage"] == stage]
        for task in sorted({r["task"] for r in mine}):
            picked = [r for r in mine if r["task"] == task]
            loss = np.array([float(r["loss"]) for r in picked])
            minutes = np.array([float(r["seconds"]) for r in picked]) / 60
            k = max(1, min(smooth, len(loss) // 5))
            mean = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(minutes[k - 1:], mean, label=task, linewidth=1.2)
        ax.set(title=f"{title}: {len(mine)} steps", xlabel="minutes of training", ylabel="loss", yscale="log")
        ax.grid(alpha=0.3)
        if mine:
            ax.legend(fontsize=8)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)
    return png
