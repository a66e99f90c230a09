"""A pixel-space "VAE": space-to-depth folding of pixel blocks into latent channels, exact both ways.

The miniature model diffuses pixels, not learnt latents. `FoldVAE` stands where Wan's
`AutoencoderKLWan` stands (same ``encode`` / ``decode`` calls, same config fields the engine reads:
``z_dim``, ``latents_mean``, ``latents_std``, ``scale_factor_temporal``, ``scale_factor_spatial``),
so the engine, the pipeline and the loaders treat it like any VAE. A latent frame holds ``temporal``
pixel frames of ``spatial`` x ``spatial`` pixel blocks: 3 x 4 x 4 x 4 = 192 channels. Wan's frame
convention holds: pixel frames = 4k + 1, the first latent frame covers the first pixel frame alone
(stored ``temporal`` times, and read back as their mean).

It has no weights to train, reconstructs every pixel exactly, and decodes each latent frame on its
own (no causal cache), so a clip decoded in pieces equals one decoded whole.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange


class FoldVAE(ModelMixin, ConfigMixin):
    """Pixels (B, 3, 1 + T*k, H, W) in [-1, 1] <-> latents (B, 3*T*S*S, 1 + k, H/S, W/S).

    Args:
        temporal, spatial: pixel frames and pixels per side folded into one latent position.
        latents_mean, latents_std: per-channel statistics the pipeline normalises latents with
            (measured on training clips; default 0 / 1).
    """

    @register_to_config
    def __init__(self, channels: int = 3, temporal: int = 4, spatial: int = 4,
                 latents_mean: list[float] | None = None, latents_std: list[float] | None = None,
                 z_dim: int | None = None, scale_factor_temporal: int | None = None,
                 scale_factor_spatial: int | None = None, temperal_downsample: list[bool] | None = None):
        # The last four follow from the first three; they are in the config because the engine
        # reads them from any VAE's config (and given back when loading, they are checked).
        super().__init__()
        derived = dict(z_dim=channels * temporal * spatial * spatial, scale_factor_temporal=temporal,
                       scale_factor_spatial=spatial, temperal_downsample=[True] * (temporal.bit_length() - 1))
        given = dict(z_dim=z_dim, scale_factor_temporal=scale_factor_temporal,
                     scale_factor_spatial=scale_factor_spatial, temperal_downsample=temperal_downsample)
        for name, value in given.items():
            if value is not None and value != derived[name]:
                raise ValueError(f"FoldVAE: {name}={value!r}, but channels, temporal and spatial make it {derived[name]!r}")
        z = derived["z_dim"]
        self.register_to_config(**derived, latents_mean=list(latents_mean or [0.0] * z),
                                latents_std=list(latents_std or [1.0] * z))
        # ModelMixin wants a parameter to read a device and dtype from; this one is never used.
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    def _fold(self, x: torch.Tensor) -> torch.Tensor:
        t, s = self.config.temporal, self.config.spatial
        return rearrange(x, "b c (f t) (h p) (w q) -> b (c t p q) f h w", t=t, p=s, q=s)

    def _unfold(self, z: torch.Tensor) -> torch.Tensor:
        t, s = self.config.temporal, self.config.spatial
        return rearrange(z, "b (c t p q) f h w -> b c (f t) (h p) (w q)", t=t, p=s, q=s)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """Pixel frames (B, 3, 1 + 4k, H, W) to latents (B, 192, 1 + k, H/4, W/4), as a point distribution."""
        t = self.config.temporal
        if (x.shape[2] - 1) % t:
            raise ValueError(f"FoldVAE.encode: {x.shape[2]} frames; it takes 1 + {t}k")
        first = x[:, :, :1].expand(-1, -1, t, -1, -1)
        z = self._fold(torch.cat([first, x[:, :, 1:]], dim=2))
        dist = DiagonalGaussianDistribution(torch.cat([z, torch.zeros_like(z)], dim=1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, first_chunk: bool = True):
        """Latents to pixel frames in [-1, 1]. With ``first_chunk`` the first latent frame is the clip's
        first pixel frame (the mean of its copies); otherwise every latent frame is ``temporal`` frames."""
        x = self._unfold(z.to(self.anchor.dtype)).clamp(-1.0, 1.0)
        if first_chunk:
            t = self.config.temporal
            x = torch.cat([x[:, :, :t].mean(dim=2, keepdim=True), x[:, :, t:]], dim=2)
        return DecoderOutput(sample=x) if return_dict else (x,)
