"""The miniature model: a Wan-family video diffusion model small enough to train on a 2-core CPU.

Every component loads through `videogen.model.load_components` like any Wan checkpoint, and all
but the VAE are stock diffusers / transformers classes:

- **VAE**: pixel space. `FoldVAE` folds 4 pixel frames x 4x4 pixels into 192 channels (Wan's frame
  convention: pixel frames = 4k+1, the first latent frame is the first pixel frame). It is exact
  and has nothing to train, so the whole budget goes to the transformer. (``vae="wan"`` trains a
  small `AutoencoderKLWan` instead: 4x temporal, 4x spatial, 16 channels; MODEL.md says why the
  shipped model does not use it.) 32x32 pixels -> 8x8 latents.
- **Transformer**: `WanTransformer3DModel` with Wan image-to-video's input layout (noisy latents +
  4 mask channels + conditioning latents: 192 + 4 + 192), patch (1, 2, 2): a 33-frame clip is
  9 latent frames x 4 x 4 = 144 tokens.
- **Low-noise expert**: a second, 2-layer `WanTransformer3DModel` with patch (1, 1, 1) (4x4-pixel
  tokens) as `transformer_2`, taking the steps below sigma 0.6 (`boundary_ratio`), as Wan 2.2
  A14B's second expert takes its low-noise steps.
- **Text**: a small `UMT5EncoderModel` over a word-level tokenizer of the shapes world's captions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

from .fold import FoldVAE
from .model import small_text_encoder
from .shapes import vocabulary
from .text import build_word_tokenizer

# Wan's VAE scales, for the fold and the Wan VAE alike (the fold's 4 frames x 4x4 pixels x RGB: 192 channels).
SCALE_TEMPORAL, SCALE_SPATIAL = 4, 4


@dataclass(frozen=True)
class MiniatureConfig:
    """Sizes of the miniature model; the reason for each number beside it."""

    size: int = 32  # pixels per side: shapes of 8-14 px keep their outline, and a step stays under a second
    # "fold": pixel space, 4 frames x 4x4 pixels folded into 192 channels (`FoldVAE`), nothing to
    # train and exact; "wan": a small `AutoencoderKLWan` trained first (16 channels; see MODEL.md for
    # why the shipped model no longer uses it).
    vae: str = "fold"
    mask_channels: int = 4  # Wan image-to-video's mask width
    vae_dim: int = 8  # "wan" only: the VAE's widest layer is 16, flat shapes need little
    # Transformer: 4 layers x 192 wide (6 heads x 32) take a step as long as 6 x 128 did (124
    # against 127 ms) and learn more per step; 6 x 128 (run G, MODEL.md) drew motion on 88% and
    # shape on 35% of held-out clips, this on 90% and 42%.
    width: int = 192
    heads: int = 6
    layers: int = 4
    ffn: int = 576
    # Latent (frames, rows, columns) per transformer token: (1, 2, 2) is 8x8 pixels x 4 frames. (1, 1, 1),
    # 4x4 pixels, took 4.2x as long a step and in 90 minutes left shapes in pieces (run F, MODEL.md).
    patch: tuple[int, int, int] = (1, 2, 2)
    text_dim: int = 64
    text_layers: int = 2
    # Prompts are cut and padded to this many tokens (the tokenizer's model_max_length; captions are
    # at most 14). Wan pads to 512, and 500 zero embeddings drowned a prompt in cross-attention.
    text_tokens: int = 32
    # The text encoder stays as initialised (seeded), as Wan's umT5 stays frozen. At initialisation
    # "moving right" and "moving left" differ at the motion word nearly as much as "red" and "blue"
    # at the colour word (10.9 against 11.9); trained along, after 10,000 steps the transformer
    # read them 0.5 apart against 6.2: it kept the colour and lost direction and shape (MODEL.md).
    train_text_encoder: bool = False
    # Pixel patches (4 x 4x4 x 3 x 2 wide) are wider than the transformer: it predicts clean frames,
    # not the velocity (a velocity carries the noise, which 128 or 192 numbers per token cannot hold).
    prediction: str = "sample"
    # Training's and sampling's noise levels: sigma = shift * t / (1 + (shift - 1) * t), t uniform.
    # A token's 192 channels are nearly flat blocks, so averaging them sees through noise: trained
    # at shift 3, the clean-frame error had fallen from 0.51 to 0.11 (of 1) between sigma 0.999 and
    # 0.99, where shift 3 puts 3% of the training and one of 40 sampling steps. There the shape's
    # place and path are chosen, and that model ignored motion words (same loss with "left" as
    # with "right"). Shift 32 puts a fifth of both in 0.99-0.999 and still a fifth below 0.9.
    flow_shift: float = 32.0
    # Weight of `train.motion_error` (frame-to-frame change of the clean-frame guess against the
    # truth's, in pixels) added to the transformer's loss; "sample" prediction only. Given the true
    # clip under noise, the shipped transformer draws each latent frame's 4 pixel frames as one
    # picture and jumps at the next (change across a latent-frame boundary 7-8 times the change
    # inside; the truth's: about 1). Weight 4 over a 10-minute fine-tune brought that to about 6 and
    # cost shape and motion on the scorecard (MODEL.md), so it stays off.
    motion_weight: float = 0.0
    # `train.LossBalance`'s power: each noise level's samples weighed by its running mean loss
    # raised to minus this power. The noisiest levels' clean-frame error is ten times that where outlines are
    # drawn (0.31 at sigma 0.999 against 0.023 at 0.8), and a circle and a square of the same scene
    # differ by 0.061 there: drawing the shape the caption names would take most of that 0.023
    # away, yet the transformer drew one blob for every shape word. 0.5 trained from scratch (run B,
    # MODEL.md) left the errors at every level as they were and scored shape 45%, motion 80%
    # (shipped: 52%, 92%). 0: off.
    loss_balance: float = 0.0
    # The low-noise expert: a second transformer for the steps below this noise level, as Wan 2.2
    # A14B has one (`transformer_2`, `boundary_ratio`). The first transformer's 8x8-pixel tokens are
    # 768 numbers for 192 channels: given the true clip under light noise (sigma 0.2) its guess read
    # as the right shape on 8 of 20 held-out clips. This expert's tokens are 4x4 pixels (192 numbers,
    # as wide as it is), and after 12 minutes it read 18 of 20; on the held-out scorecard, shape 42%
    # -> 52%, 8-window seams mean 1.64 -> 1.38 (MODEL.md). A boundary of 0.9 trained the same 12
    # minutes read 13 of 20. With 40 steps at shift 32 it takes the last step (from sigma 0.51).
    # None: one transformer for every step.
    expert_boundary: float | None = 0.6
    expert_patch: tuple[int, int, int] = (1, 1, 1)  # 4x4 pixels a token: 192 numbers, no wider than the expert
    expert_width: int = 192
    expert_heads: int = 6
    expert_layers: int = 2
    expert_ffn: int = 576
    # `motion_weight` for the expert's loss; 4 from scratch, 10 minutes: its guess's stair 2.8 ->
    # 2.4, its clips' 3.4 -> 4.0 (MODEL.md). Off.
    expert_motion_weight: float = 0.0

    @property
    def latent_channels(self) -> int:
        return 3 * SCALE_TEMPORAL * SCALE_SPATIAL**2 if self.vae == "fold" else 16  # the fold's 192; Wan's z_dim

    @property
    def in_channels(self) -> int:
        return 2 * self.latent_channels + self.mask_channels


def build_vae(config: MiniatureConfig):
    """The miniature's VAE: the pixel fold, or an untrained small Wan VAE."""
    if config.vae == "fold":
        return FoldVAE(temporal=SCALE_TEMPORAL, spatial=SCALE_SPATIAL)
    if config.vae != "wan":
        raise ValueError(f"MiniatureConfig.vae: {config.vae!r} is neither 'fold' nor 'wan'")
    return AutoencoderKLWan(
        base_dim=config.vae_dim,
        z_dim=config.latent_channels,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[True, True],
        latents_mean=[0.0] * config.latent_channels,  # set from data after the VAE is trained
        latents_std=[1.0] * config.latent_channels,
        scale_factor_temporal=SCALE_TEMPORAL,
        scale_factor_spatial=SCALE_SPATIAL,
    )


def build_transformer(config: MiniatureConfig, patch, width: int, heads: int, layers: int, ffn: int) -> WanTransformer3DModel:
    """A Wan transformer with the miniature's input layout and text width, of the given size."""
    return WanTransformer3DModel(
        patch_size=patch,
        num_attention_heads=heads,
        attention_head_dim=width // heads,
        in_channels=config.in_channels,
        out_channels=config.latent_channels,
        text_dim=config.text_dim,
        freq_dim=64,
        ffn_dim=ffn,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024,
    )


def build_miniature(config: MiniatureConfig = MiniatureConfig(), seed: int = 0) -> dict:
    """Untrained miniature components (seeded), in the dict `save_components` takes."""
    torch.manual_seed(seed)
    vae = build_vae(config)
    tokenizer = build_word_tokenizer(vocabulary(), max_length=config.text_tokens)
    text_encoder = small_text_encoder(len(tokenizer), config.text_dim, config.text_layers, d_kv=16, d_ff=4 * config.text_dim)
    transformer = build_transformer(config, config.patch, config.width, config.heads, config.layers, config.ffn)
    components = dict(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                      scheduler=FlowMatchEulerDiscreteScheduler(shift=config.flow_shift))
    if config.expert_boundary is not None:  # built after the others, which stay as they were without it
        components["transformer_2"] = build_transformer(config, config.expert_patch, config.expert_width,
                                                        config.expert_heads, config.expert_layers, config.expert_ffn)
        components["boundary_ratio"] = config.expert_boundary
    return components


def parameter_count(components: dict) -> dict[str, int]:
    """Parameters per trained component."""
    names = [n for n in ("vae", "text_encoder", "transformer", "transformer_2") if components.get(n) is not None]
    return {n: sum(p.numel() for p in components[n].parameters()) for n in names}
