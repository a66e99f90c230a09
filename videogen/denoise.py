"""One task on one model: keyframes, a window, or the final decode. A plain class; `actors.py`
wraps it in a Ray actor, and tests call it directly.

Initial noise is keyed by (seed, stream, absolute latent frame): a window sees the same noise at a
frame whatever window, worker or finishing order it comes from, so the output does not depend on
how the clip is split across workers.

Known frames (keyframes) reach the model in one of two ways, chosen by the model:
- ``channels`` (Wan image-to-video / first-last-frame convention): the transformer takes
  ``[noisy latents, mask, conditioning latents]`` on the channel axis; the mask is 1 on known frames.
- ``replace`` (plain text-to-video models): before every step the known frames are replaced by
  their re-noised version at the current noise level, and set exactly at the end.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
import torch

from .model import VideoModel, WanVAE, load_model
from .plan import KeyframeTask, Plan, WindowTask
from .request import ClipSpec
from .stitch import blend_range

WINDOW_STREAM = 0
KEYFRAME_STREAM = 1


def frame_seed(seed: int, stream: int, position: int) -> int:
    """A 63-bit seed for one latent frame, from a stable derivation (never Python's ``hash()``)."""
    return int(np.random.SeedSequence([seed, stream, position]).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1)


def position_noise(seed: int, stream: int, positions, shape: tuple[int, int, int]) -> torch.Tensor:
    """Gaussian noise (C, len(positions), h, w), each frame from its own CPU generator."""
    frames = []
    for p in positions:
        generator = torch.Generator("cpu").manual_seed(frame_seed(seed, stream, p))
        frames.append(torch.randn(shape, generator=generator, dtype=torch.float32))
    return torch.stack(frames, dim=1)


class Denoiser:
    """Holds one model and runs tasks for any number of clips.

    Args:
        source: model source (``builtin:<shape>``, a diffusers folder, or a hub id).
        device: ``cuda`` or ``cpu``.
        dtype: transformer and text-encoder dtype (bf16 on GPUs, float32 on CPUs by default).
    """

    def __init__(self, source: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.source = source
        self.model: VideoModel = load_model(source, device, dtype)
        self.decoder = Decoder(self.model.decoder)
        self._embeds: OrderedDict[tuple, tuple] = OrderedDict()

    def embeds(self, spec: ClipSpec) -> tuple:
        """Prompt embeddings, cached per (prompt, negative, guidance on/off) across tasks and clips."""
        key = (spec.prompt, spec.negative, spec.guidance > 1.0)
        if key not in self._embeds:
            self._embeds[key] = self.model.encode_prompt(spec.prompt, spec.negative, spec.guidance)
            while len(self._embeds) > 64:
                self._embeds.popitem(last=False)
        self._embeds.move_to_end(key)
        return self._embeds[key]

    @torch.no_grad()
    def sample(self, spec: ClipSpec, positions, stream: int, known: dict[int, np.ndarray] | None = None,
               release: float = 0.0) -> np.ndarray:
        """Denoise latent frames at absolute ``positions`` with ``known`` frames held fixed.

        Args:
            spec: the clip.
            positions: absolute latent frame indices, in order (they key the noise).
            stream: `WINDOW_STREAM` or `KEYFRAME_STREAM`.
            known: absolute position -> latent frame (C, h, w) for frames to hold fixed.
            release: from the first step below this noise level the known frames are no longer
                held: they are set to themselves noised to that level (with their own noise) and
                denoised with the rest, so the last steps draw them and their neighbours together.
        Returns:
            latents (C, len(positions), h, w), float32.
        """
        model, device = self.model, self.model.device
        known = known or {}
        noise = position_noise(spec.seed, stream, positions, spec.latent_shape)[None].to(device)  # (1, C, T, h, w)
        latents = noise.clone()
        local = [i for i, p in enumerate(positions) if p in known]
        x0 = torch.zeros_like(noise)
        for i in local:
            x0[0, :, i] = torch.from_numpy(known[positions[i]]).to(device)
        channels = model.in_channels > model.latent_channels
        if channels:
            mask = torch.zeros((1, model.in_channels - 2 * model.latent_channels, *noise.shape[2:]), device=device)
            mask[:, :, local] = 1.0
            condition = torch.cat([mask, x0], dim=1)

        embeds = self.embeds(spec)
        model.use_lora(spec.lora, spec.lora_digest, spec.lora_scale)
        scheduler = model.new_scheduler()
        scheduler.set_timesteps(spec.steps, device=device)
        scheduler.set_begin_index(0)
        held = bool(local)
        for i, t in enumerate(scheduler.timesteps):
            sigma = scheduler.sigmas[i]
            releasing = held and float(sigma) < release
            if releasing or (held and not channels):
                latents[:, :, local] = sigma * noise[:, :, local] + (1.0 - sigma) * x0[:, :, local]
            if releasing:
                held = False
                if channels:
                    condition[:, :, local] = 0.0
            model_input = torch.cat([latents, condition], dim=1) if channels else latents
            pred = model.predict(model_input, t, embeds, spec.guidance)
            latents = scheduler.step(pred, t, latents, return_dict=False)[0]
        if held:
            latents[:, :, local] = x0[:, :, local]
        return latents[0].float().cpu().numpy()

    def keyframes(self, spec: ClipSpec, task: KeyframeTask, known: dict[int, np.ndarray]) -> dict:
        """Run a keyframe task; returns ``{"latents": {position: (C, h, w)}, "seconds": s}``."""
        start = time.perf_counter()
        latents = self.sample(spec, task.positions, KEYFRAME_STREAM, {p: known[p] for p in task.known})
        result = {p: latents[:, i] for i, p in enumerate(task.positions) if p not in task.known}
        return {"latents": result, "seconds": time.perf_counter() - start}

    def window(self, spec: ClipSpec, task: WindowTask, keyframes: dict[int, np.ndarray]) -> dict:
        """Run a window task; returns ``{"latents": (C, T_window, h, w), "seconds": s}``."""
        start = time.perf_counter()
        latents = self.sample(spec, range(task.start, task.stop), WINDOW_STREAM, {p: keyframes[p] for p in task.keyframes},
                              spec.keyframe_release)
        return {"latents": latents, "seconds": time.perf_counter() - start}



class Decoder:
    """Blends windows and decodes latents to frames: on a denoiser actor, or alone on a CPU actor.

    A clip is decoded in chunks (`Plan.decode_chunks`), in order, each as soon as the windows
    covering it are done; the VAE's causal cache is kept here between a clip's chunks, so the
    pieces are exactly one decode of the whole clip.

    Args:
        vae: a `WanVAE` (``decode``, ``new_stream``, ``decode_stream``).
    """

    def __init__(self, vae: WanVAE):
        self.vae = vae
        self._streams: dict[str, list] = {}  # clip id -> causal cache after its last chunk

    @classmethod
    def load(cls, source: str, device: str = "cpu") -> "Decoder":
        return cls(WanVAE.load(source, device))

    def preview(self, spec: ClipSpec, keyframes: dict[int, np.ndarray]) -> dict:
        """Each keyframe decoded on its own, in position order; ``{"frames": uint8 (K, H, W, 3), "seconds": s}``."""
        start = time.perf_counter()
        positions = sorted(keyframes)
        latents = torch.from_numpy(np.stack([keyframes[p] for p in positions]))[:, :, None]  # (K, C, 1, h, w)
        images = np.concatenate([self.vae.decode(latents[i : i + 1]) for i in range(len(positions))])
        return {"frames": to_uint8(images), "seconds": time.perf_counter() - start}

    def decode_chunk(self, spec: ClipSpec, plan: Plan, clip: str, chunk: int, windows: dict[int, np.ndarray]) -> dict:
        """Blend and decode one chunk of a clip; chunks of a clip must come in order, to one decoder.

        Args:
            clip: an id for the clip (its causal cache is kept under it until the last chunk).
            chunk: index into ``plan.decode_chunks``.
            windows: window index -> latents, for the windows touching the chunk.
        Returns:
            ``{"frames": uint8 (n, H, W, 3), "seconds": s}``: this chunk's pixel frames, the clip's
            4k+1 frames trimmed to the ``spec.frames`` asked for.
        """
        start_time = time.perf_counter()
        start, stop = plan.decode_chunks[chunk]
        if chunk == 0:
            self._streams[clip] = self.vae.new_stream()
        latents = blend_range(plan, windows, spec.blend, start, stop)
        video = self.vae.decode_stream(torch.from_numpy(latents)[None], self._streams[clip], first=chunk == 0)
        if chunk == len(plan.decode_chunks) - 1:
            del self._streams[clip]
        t = spec.vae_scale_temporal
        first_pixel = 0 if start == 0 else t * start - (t - 1)  # the first latent frame is one pixel frame
        video = video[: max(0, spec.frames - first_pixel)]
        return {"frames": to_uint8(video), "seconds": time.perf_counter() - start_time}


def to_uint8(video: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] to uint8."""
    return (video * 255.0).round().clip(0, 255).astype(np.uint8)
