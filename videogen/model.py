"""Loading video diffusion models, and the small interface the denoiser needs from a model family.

A family implements `VideoModel`: encode a prompt, predict the flow (with classifier-free
guidance), give a fresh scheduler, decode latents. The Wan family (diffusers' Wan 2.1 / 2.2
text-to-video and image-to-video checkpoints) is the first; its components load with
``from_pretrained`` from a local folder or a hub id. ``builtin:<shape>`` sources are built in code
with random weights and fixed seeds (no files, no network): ``tiny-random`` for tests and trying the
CLI, and larger shapes for the bench. ``package:<name>`` sources are trained diffusers folders that
ship inside the package (``videogen/weights/<name>``): the built-in miniature model.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import diffusers
import numpy as np
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
from diffusers.video_processor import VideoProcessor
from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

from .fold import FoldVAE
from .text import BASIC_WORDS, build_word_tokenizer

MAX_TEXT_TOKENS = 512  # WanPipeline's default max_sequence_length

# What a transformer outputs. ``flow``: the velocity ``noise - x0`` (Wan, diffusers). ``sample``: the
# clean latents ``x0``, turned into the velocity ``(x_t - x0) / sigma`` for the scheduler; a
# pixel-space model with patches wider than the transformer can only draw clean images (which lie
# on a low-dimensional manifold), not the noise, so it predicts them (Li and He, "Back to Basics:
# Let Denoising Generative Models Denoise", 2025).
PREDICTIONS = ("flow", "sample")
SAMPLE_MIN_SIGMA = 0.05  # the velocity from a sample prediction divides by at least this noise level
PACKAGED = Path(__file__).parent / "weights"  # trained models shipped with videogen


def text_length(tokenizer) -> int:
    """Tokens a prompt is cut and zero-padded to: the tokenizer's ``model_max_length``, at most 512.

    Wan's UMT5 tokenizer says 512. The miniature's says 32: its captions are at most 14 tokens,
    and padded to 512 the zero embeddings took over 90% of its cross-attention (measured on the
    weights trained that way: 4-8% of the attention on a 6-token prompt).
    """
    return min(MAX_TEXT_TOKENS, int(tokenizer.model_max_length))


def local_source(source: str) -> str:
    """A ``package:<name>`` source as its folder inside the package; any other source unchanged."""
    if not source.startswith("package:"):
        return source
    name = source.removeprefix("package:")
    folder = PACKAGED / name
    if not (folder / "model_index.json").is_file():
        shipped = sorted(p.parent.name for p in PACKAGED.glob("*/model_index.json")) if PACKAGED.is_dir() else []
        raise ValueError(f"model source {source!r}: no model {name!r} in {PACKAGED} ({', '.join(shipped) or 'none shipped'})")
    return str(folder)


class VideoModel(Protocol):
    """What the denoiser asks of a model family."""

    latent_channels: int
    in_channels: int
    dtype: torch.dtype
    device: torch.device
    decoder: "WanVAE"  # what decode actors and the denoiser's decode chunks use

    def use_lora(self, path: str | None, digest: str | None, scale: float) -> None: ...
    def encode_prompt(self, prompt: str, negative: str, guidance: float) -> tuple[torch.Tensor, torch.Tensor | None]: ...
    def new_scheduler(self): ...
    def predict(self, latents: torch.Tensor, t: torch.Tensor, embeds: tuple, guidance: float) -> torch.Tensor: ...
    def decode(self, latents: torch.Tensor) -> np.ndarray: ...


@dataclass(frozen=True)
class RandomWanShape:
    """Sizes of a Wan model built in code with random weights."""

    layers: int
    heads: int
    head_dim: int
    ffn: int
    text_dim: int  # the text encoder's width
    text_layers: int = 2
    vae_base_dim: int = 3
    freq_dim: int = 256
    in_channels: int = 16
    two_stage: bool = False  # Wan 2.2 A14B style: a second transformer for the low-noise steps


RANDOM_SHAPES = {
    # diffusers' own Wan pipeline tests use these transformer and VAE sizes.
    "tiny-random": RandomWanShape(layers=2, heads=2, head_dim=12, ffn=32, text_dim=32),
    "tiny-random-flf": RandomWanShape(layers=2, heads=2, head_dim=12, ffn=32, text_dim=32, in_channels=36),
    "tiny-random-2stage": RandomWanShape(layers=2, heads=2, head_dim=12, ffn=32, text_dim=32, two_stage=True),
    # Big enough that the transformer dominates on a CPU; small enough for a 2-core bench.
    "bench-cpu": RandomWanShape(layers=4, heads=4, head_dim=64, ffn=1024, text_dim=32),
    # Wan2.1-T2V-1.3B's transformer and VAE. The text encoder stays small (64 wide, not UMT5-XXL's
    # 4096): it runs once per prompt, and the transformer's text projection is a rounding error.
    "wan2.1-1.3b-shape": RandomWanShape(layers=30, heads=12, head_dim=128, ffn=8960, text_dim=64, vae_base_dim=96),
}


def small_text_encoder(vocab_size: int, width: int, layers: int, d_kv: int, d_ff: int) -> UMT5EncoderModel:
    """A UMT5 encoder of the given size, 4 heads, no dropout: the text encoder of built-in models."""
    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=vocab_size,
            d_model=width,
            d_kv=d_kv,
            d_ff=d_ff,
            num_layers=layers,
            num_heads=4,
            relative_attention_num_buckets=8,
            dropout_rate=0.0,
        )
    )


def build_random_wan(shape_name: str) -> dict:
    """Wan components with random weights, seeded so every build is identical."""
    s = RANDOM_SHAPES[shape_name]
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=s.vae_base_dim,
        z_dim=16,
        dim_mult=[1, 1, 1, 1] if s.vae_base_dim < 16 else [1, 2, 4, 4],
        num_res_blocks=1 if s.vae_base_dim < 16 else 2,
        temperal_downsample=[False, True, True],
    )
    torch.manual_seed(0)
    tokenizer = build_word_tokenizer(BASIC_WORDS)
    text_encoder = small_text_encoder(len(tokenizer), s.text_dim, s.text_layers, d_kv=8, d_ff=64)
    transformer_config = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=s.heads,
        attention_head_dim=s.head_dim,
        in_channels=s.in_channels,
        out_channels=16,
        text_dim=s.text_dim,
        freq_dim=s.freq_dim,
        ffn_dim=s.ffn,
        num_layers=s.layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024,
    )
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**transformer_config)
    components = dict(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                      scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
    if s.two_stage:
        torch.manual_seed(1)
        components.update(transformer_2=WanTransformer3DModel(**transformer_config), boundary_ratio=0.875)
    return components


def model_index(source: str) -> dict:
    """A diffusers folder's or hub id's ``model_index.json`` (empty for ``builtin:`` sources)."""
    if source.startswith("builtin:"):
        return {}
    source = local_source(source)
    if Path(source).is_dir():
        return json.loads((Path(source) / "model_index.json").read_text())
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(source, "model_index.json")).read_text())


def load_components(source: str, index: dict | None = None) -> dict:
    """Components from ``builtin:<shape>``, a diffusers folder, or a hub id (float32, on the CPU).

    Args:
        index: the source's ``model_index.json``, where the caller has read it already.
    """
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        if name not in RANDOM_SHAPES:
            raise ValueError(f"model source {source!r}: no built-in shape {name!r} ({', '.join(RANDOM_SHAPES)})")
        return build_random_wan(name)
    source = local_source(source)
    index = model_index(source) if index is None else index
    if index.get("expand_timesteps"):
        raise ValueError(f"model {source!r}: per-token timesteps (Wan 2.2 TI2V) are not supported yet")
    scheduler_cls = getattr(diffusers, index["scheduler"][1])
    components = dict(
        tokenizer=AutoTokenizer.from_pretrained(source, subfolder="tokenizer"),
        text_encoder=UMT5EncoderModel.from_pretrained(source, subfolder="text_encoder"),
        transformer=WanTransformer3DModel.from_pretrained(source, subfolder="transformer"),
        vae=vae_class(index).from_pretrained(source, subfolder="vae"),
        scheduler=scheduler_cls.from_pretrained(source, subfolder="scheduler"),
    )
    if (index.get("transformer_2") or [None])[0] is not None:
        # Wan 2.2 A14B: the second transformer takes the steps below boundary_ratio.
        components["transformer_2"] = WanTransformer3DModel.from_pretrained(source, subfolder="transformer_2")
        components["boundary_ratio"] = index.get("boundary_ratio")
    return components


def vae_class(index: dict) -> type:
    """The VAE class a model index names: Wan's `AutoencoderKLWan`, or a videogen class (`FoldVAE`)."""
    library, name = index.get("vae") or ("diffusers", "AutoencoderKLWan")
    if library == "diffusers" or library.startswith("diffusers."):
        return getattr(diffusers, name)
    if library.startswith("videogen."):
        return getattr(importlib.import_module(library), name)
    raise ValueError(f"model_index.json: vae class {library}.{name} is neither diffusers' nor videogen's")


def save_components(components: dict, folder: str | Path, prediction: str = "flow") -> Path:
    """Save components as a diffusers folder that `load_components` (and `WanPipeline`) can read.

    Args:
        prediction: what the transformer outputs (see `PREDICTIONS`); recorded in ``model_index.json``
            when it is not diffusers' own ``flow``.
    """
    pipe = WanPipeline(**components)
    if prediction != "flow":
        pipe.register_to_config(prediction_type=prediction)
    pipe.save_pretrained(folder)
    return Path(folder)


def load_model(source: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> VideoModel:
    """Load a model of any supported family (today: Wan) from its source."""
    return FAMILIES["wan"].load(source, device, dtype)


def _cast(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move to ``device`` and ``dtype``, keeping the modules a diffusers model marks float32 in float32."""
    torch.nn.Module.to(model, device, dtype)
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    if dtype != torch.float32 and keep:
        for name, module in model.named_modules():
            if any(k in name.split(".") for k in keep):
                torch.nn.Module.to(module, torch.float32)


def velocity_from_sample(x_t: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The flow ``noise - x0`` implied by a clean-sample prediction at noise level ``sigma``
    (``x_t = (1 - sigma) x0 + sigma noise``), with ``sigma`` at least `SAMPLE_MIN_SIGMA`."""
    sigma = sigma.to(x_t).clamp(min=SAMPLE_MIN_SIGMA).view(-1, *[1] * (x_t.dim() - 1))
    return (x_t - x0) / sigma


class WanVAE:
    """Wan's VAE alone: what a decode actor needs (no transformer, no text encoder)."""

    def __init__(self, vae: AutoencoderKLWan, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        # Float32: decoding is a small share of the time and bf16 bands colours.
        self.vae = vae.eval().requires_grad_(False)
        _cast(self.vae, self.device, torch.float32)
        self.processor = VideoProcessor(vae_scale_factor=self.vae.config.scale_factor_spatial)

    @classmethod
    def load(cls, source: str, device: str = "cpu") -> "WanVAE":
        if source.startswith("builtin:"):
            return cls(load_components(source)["vae"], device)
        return cls(vae_class(model_index(source)).from_pretrained(local_source(source), subfolder="vae"), device)

    def _denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        latents = latents.to(self.device, torch.float32)
        mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(latents)
        std = torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(latents)
        return latents / (1.0 / std) + mean  # as WanPipeline does

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (B, C, T, h, w) to float32 RGB frames in [0, 1], shape (B*F, H, W, 3)."""
        video = self.vae.decode(self._denormalize(latents), return_dict=False)[0]
        return np.concatenate(self.processor.postprocess_video(video, output_type="np"))

    def new_stream(self) -> list:
        """The decoder's causal cache, empty: one per clip decoded in pieces."""
        if isinstance(self.vae, FoldVAE):
            return []  # no cache: each latent frame decodes on its own
        return [None] * sum(isinstance(m, WanCausalConv3d) for m in self.vae.decoder.modules())

    @torch.no_grad()
    def decode_stream(self, latents: torch.Tensor, stream: list, first: bool) -> np.ndarray:
        """Decode the next latent frames (1, C, n, h, w) of a clip, carrying the causal cache in ``stream``.

        Pieces decoded in order give exactly the frames of one `decode` of the whole clip: this is
        the VAE's own frame-by-frame loop, with the cache kept between calls.
        """
        if isinstance(self.vae, FoldVAE):
            video = self.vae.decode(self._denormalize(latents), return_dict=False, first_chunk=first)[0]
            return np.concatenate(self.processor.postprocess_video(video, output_type="np"))
        x = self.vae.post_quant_conv(self._denormalize(latents))
        pieces = [
            self.vae.decoder(x[:, :, i : i + 1], feat_cache=stream, feat_idx=[0], first_chunk=first and i == 0)
            for i in range(x.shape[2])
        ]
        video = torch.clamp(torch.cat(pieces, 2), min=-1.0, max=1.0)
        return np.concatenate(self.processor.postprocess_video(video, output_type="np"))


class WanModel:
    """The Wan family behind `VideoModel`: text encoding, guided flow prediction, VAE decoding.

    Prompt encoding and latent (de)normalisation are diffusers' own (a `WanPipeline` built from the
    same components), so a one-window clip of a velocity (``flow``) model matches `WanPipeline`
    exactly. A ``sample`` model's outputs are turned into velocities first (`velocity_from_sample`),
    which `WanPipeline` does not do.
    """

    def __init__(self, components: dict, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 prediction: str = "flow"):
        if prediction not in PREDICTIONS:
            raise ValueError(f"model_index.json: prediction_type={prediction!r} is not one of {', '.join(PREDICTIONS)}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.prediction = prediction
        modules = [n for n in ("text_encoder", "transformer", "transformer_2") if components.get(n) is not None]
        for name in modules:  # the VAE is set up by WanVAE
            # Built-in-code models start in training mode; eval() turns T5's dropout off.
            components[name].eval().requires_grad_(False)
        for name in modules:
            _cast(components[name], self.device, dtype)
        self.decoder = WanVAE(components["vae"], self.device)
        self.pipe = WanPipeline(**components)
        self.transformer = self.pipe.transformer
        self.transformer_2 = self.pipe.transformer_2
        ratio = self.pipe.config.boundary_ratio
        self.boundary = None if ratio is None else ratio * self.pipe.scheduler.config.num_train_timesteps
        self.vae = self.pipe.vae
        self._adapters: set[str] = set()  # LoRA adapters loaded into the transformer(s)
        self.latent_channels = self.vae.config.z_dim
        self.in_channels = self.transformer.config.in_channels

    @classmethod
    def load(cls, source: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> "WanModel":
        index = model_index(source)
        return cls(load_components(source, index), device, dtype, index.get("prediction_type", "flow"))

    @torch.no_grad()
    def encode_prompt(self, prompt: str, negative: str, guidance: float):
        """Text embeddings (1, L, D), and the negative prompt's when guidance is on (> 1)."""
        embeds, negative_embeds = self.pipe.encode_prompt(
            prompt=prompt,
            negative_prompt=negative,
            do_classifier_free_guidance=guidance > 1.0,
            max_sequence_length=text_length(self.pipe.tokenizer),
            device=self.device,
        )
        negative_embeds = negative_embeds.to(self.dtype) if negative_embeds is not None else None
        return embeds.to(self.dtype), negative_embeds

    def use_lora(self, path: str | None, digest: str | None, scale: float) -> None:
        """Switch the transformer(s) to a LoRA adapter, loaded once and named by its content, or to none.

        Args:
            path: a diffusers LoRA ``.safetensors`` file or folder; None for the base model.
            digest: the adapter's content hash (adapters are kept by it, so an edited file reloads).
            scale: the adapter's strength.
        """
        if path is None:
            if self._adapters:
                self.pipe.disable_lora()
            return
        name = f"lora_{digest[:16]}"
        if name not in self._adapters:
            file = Path(path)
            if file.is_file():
                self.pipe.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=name)
            else:
                self.pipe.load_lora_weights(str(file), adapter_name=name)
            self._adapters.add(name)
        self.pipe.enable_lora()
        self.pipe.set_adapters([name], [scale])

    def new_scheduler(self):
        """A fresh scheduler: schedulers keep per-run state (step index, multistep history)."""
        return type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)

    @torch.no_grad()
    def predict(self, model_input: torch.Tensor, t: torch.Tensor, embeds: tuple, guidance: float) -> torch.Tensor:
        """Guided flow prediction for ``model_input`` (B, C_in, T, h, w) at timestep ``t``.

        Two-stage (Wan 2.2) models use ``transformer_2`` below the boundary timestep, as WanPipeline does.
        """
        positive, negative = embeds
        x = model_input.to(self.dtype)
        timestep = t.expand(x.shape[0])
        net = self.transformer if self.boundary is None or t >= self.boundary else self.transformer_2
        pred = net(hidden_states=x, timestep=timestep, encoder_hidden_states=positive, return_dict=False)[0]
        if negative is not None:
            uncond = net(hidden_states=x, timestep=timestep, encoder_hidden_states=negative, return_dict=False)[0]
            pred = uncond + guidance * (pred - uncond)
        if self.prediction == "sample":
            sigma = t.float() / self.pipe.scheduler.config.num_train_timesteps
            return velocity_from_sample(x[:, : self.latent_channels], pred, sigma)
        return pred

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (1, C, T, h, w) to float32 RGB frames in [0, 1], shape (F, H, W, 3)."""
        return self.decoder.decode(latents)


FAMILIES: dict[str, type] = {"wan": WanModel}  # presets name their family; a new family registers here
