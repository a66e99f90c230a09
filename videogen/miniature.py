"""The miniature model: a Wan-family video diffusion model small enough to train on a 2-core CPU.

Every component is a stock diffusers / transformers class, so the model saves with
`videogen.model.save_components` and loads with `videogen.model.load_components` like any Wan
checkpoint:

- **VAE**: `AutoencoderKLWan`, 4x temporal (Wan's convention: pixel frames = 4k+1) and 4x
  spatial (two downsamplings, not Wan's three: at 32 px an 8x VAE leaves 4x4 latents, too few for
  a shape's outline). 32x32 pixels -> 8x8 latents of 16 channels.
- **Transformer**: `WanTransformer3DModel` with Wan image-to-video's 36 input channels
  (16 noisy latents + 4 mask + 16 conditioning latents), patch (1, 2, 2): a 33-frame clip is
  9 latent frames x 4 x 4 = 144 tokens.
- **Text**: a small `UMT5EncoderModel` over a word-level tokenizer of the shapes world's captions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

from .model import small_text_encoder
from .shapes import vocabulary
from .text import build_word_tokenizer


@dataclass(frozen=True)
class MiniatureConfig:
    """Sizes of the miniature model; the reason for each number beside it."""

    size: int = 32  # pixels per side: shapes of 8-14 px keep their outline, and a step stays under a second
    latent_channels: int = 16  # Wan's z_dim, so the 36-channel image-to-video layout holds
    mask_channels: int = 4  # Wan image-to-video's mask width
    vae_dim: int = 8  # the VAE's widest layer is 16: flat shapes need little
    width: int = 128  # transformer hidden size: 4 heads x 32
    heads: int = 4
    layers: int = 4
    ffn: int = 384
    text_dim: int = 64
    text_layers: int = 2
    flow_shift: float = 2.0  # small images need less high-noise emphasis than Wan's 480p (shift 5)

    @property
    def in_channels(self) -> int:
        return 2 * self.latent_channels + self.mask_channels


def build_miniature(config: MiniatureConfig = MiniatureConfig(), seed: int = 0) -> dict:
    """Untrained miniature components (seeded), in the dict `save_components` takes."""
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=config.vae_dim,
        z_dim=config.latent_channels,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[True, True],
        latents_mean=[0.0] * config.latent_channels,  # set from data after the VAE is trained
        latents_std=[1.0] * config.latent_channels,
        scale_factor_temporal=4,
        scale_factor_spatial=4,
    )
    tokenizer = build_word_tokenizer(vocabulary())
    text_encoder = small_text_encoder(len(tokenizer), config.text_dim, config.text_layers, d_kv=16, d_ff=4 * config.text_dim)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=config.heads,
        attention_head_dim=config.width // config.heads,
        in_channels=config.in_channels,
        out_channels=config.latent_channels,
        text_dim=config.text_dim,
        freq_dim=64,
        ffn_dim=config.ffn,
        num_layers=config.layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024,
    )
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                scheduler=FlowMatchEulerDiscreteScheduler(shift=config.flow_shift))


def parameter_count(components: dict) -> dict[str, int]:
    """Parameters per trained component."""
    return {n: sum(p.numel() for p in components[n].parameters()) for n in ("vae", "text_encoder", "transformer")}
