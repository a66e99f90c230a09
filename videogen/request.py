"""What a user asks for (`ClipRequest`) and the fully resolved clip the engine runs (`ClipSpec`).

`ClipRequest` is the one schema behind the CLI's flags and the job API's fields. Fields left out
take the model's and the quality preset's defaults in `resolve`, which also checks everything that
depends on the model (sizes, frame limits, window geometry). All errors are `RequestError`s that
name the field and the value.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import RequestError
from .presets import ModelPreset, default_model, quality_preset, resolve_model

BlendMethod = Literal["linear", "cosine", "pyramid", "flat"]
MAX_SEED = 2**63 - 1


class ClipRequest(BaseModel):
    """A clip as a user asks for it. Lengths are in pixel frames, sizes in pixels."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    negative: str = ""
    model: str = Field(default_factory=default_model)
    quality: str | None = None
    frames: int | None = Field(default=None, ge=1)
    seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    fps: int | None = Field(default=None, ge=1, le=120)
    width: int | None = Field(default=None, ge=1)
    height: int | None = Field(default=None, ge=1)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    steps: int | None = Field(default=None, ge=1, le=1000)
    guidance: float | None = Field(default=None, ge=0, le=50, allow_inf_nan=False)
    window: int | None = Field(default=None, ge=1)
    overlap: int | None = Field(default=None, ge=0)
    keyframe_every: int | None = Field(default=None, ge=0)
    keyframe_release: float | None = Field(default=None, ge=0, lt=1, allow_inf_nan=False)
    blend: BlendMethod = "cosine"
    lora: str | None = None  # a LoRA adapter (diffusers format: .safetensors file or folder)
    lora_scale: float = Field(default=1.0, ge=0, le=2, allow_inf_nan=False)

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @classmethod
    def parse(cls, data: dict) -> "ClipRequest":
        """Validate a dict (CLI flags, JSON body); the first problem becomes a `RequestError`."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "request"
            reason = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                reason = "unknown field"
            raise RequestError(field, err.get("input"), reason) from None


@dataclass(frozen=True)
class ClipSpec:
    """A request with every number decided; what travels to actors.

    Lengths here are pixel frames unless named ``latent_*``. The clip is generated on
    ``latent_frames`` latent frames, decoded to ``4k+1`` pixel frames (for a 4x temporal VAE) and
    trimmed to ``frames``, so a user's frame count is never rounded.
    """

    prompt: str
    negative: str
    model: str  # preset name or folder path, as the user gave it
    model_source: str
    seed: int
    frames: int
    fps: int
    width: int
    height: int
    steps: int
    guidance: float
    window: int
    overlap: int
    keyframe_every: int
    blend: str
    vae_scale_temporal: int
    vae_scale_spatial: int
    latent_channels: int
    lora: str | None = None  # absolute path
    lora_scale: float = 1.0
    lora_digest: str | None = None  # sha256 of the adapter's files: the cache key changes with them
    view: tuple[int, int, str] | None = None  # (width, height, swscale filter) the MP4 is enlarged to
    # Noise level below which a window stops holding its keyframes and draws them again with its
    # own frames (from the keyframe noised to that level); 0: keyframes held to the end.
    keyframe_release: float = 0.0

    @property
    def latent_frames(self) -> int:
        return latent_length(self.frames, self.vae_scale_temporal)

    @property
    def latent_window(self) -> int:
        return latent_length(self.window, self.vae_scale_temporal)

    @property
    def latent_overlap(self) -> int:
        return self.overlap // self.vae_scale_temporal

    @property
    def latent_keyframe_every(self) -> int:
        return self.keyframe_every // self.vae_scale_temporal

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H/8, W/8) of one latent frame."""
        s = self.vae_scale_spatial
        return (self.latent_channels, self.height // s, self.width // s)

    def to_dict(self) -> dict:
        return asdict(self)


def latent_length(pixel_frames: int, scale_temporal: int) -> int:
    """Latent frames that decode to at least ``pixel_frames``: the first latent is one pixel frame."""
    return math.ceil((pixel_frames - 1) / scale_temporal) + 1


def resolve(request: ClipRequest | dict, model: ModelPreset | None = None) -> ClipSpec:
    """Fill a request's gaps from its model and quality presets and check it against the model.

    Args:
        request: a `ClipRequest`, or a dict to validate into one.
        model: the model preset, if already resolved (else looked up from ``request.model``).
    Raises:
        RequestError: naming the first bad field and its value.
    """
    if isinstance(request, dict):
        request = ClipRequest.parse(request)
    model = model or resolve_model(request.model)
    d = model.defaults
    quality = quality_preset(request.quality or d.quality)

    fps = request.fps or d.fps
    if request.frames is not None and request.seconds is not None:
        raise RequestError("seconds", request.seconds, "give frames or seconds, not both")
    if request.seconds is not None:
        frames = request.seconds * fps
        if abs(frames - round(frames)) > 1e-6:
            raise RequestError("seconds", request.seconds, f"is not a whole number of frames at fps={fps}")
        frames = round(frames)
    else:
        frames = request.frames or d.frames
    if frames > model.max_frames:
        raise RequestError("frames", frames, f"exceeds the limit of {model.max_frames} for model {model.name}")
    if frames < 1:
        raise RequestError("frames", frames, "must be at least 1")

    width, height = request.width or d.width, request.height or d.height
    m = model.size_multiple
    for field, value in (("width", width), ("height", height)):
        if value % m:
            raise RequestError(field, value, f"must be a multiple of {m} for model {model.name}")
    if width * height > model.max_pixels:
        raise RequestError("width", width, f"width*height={width * height} exceeds {model.max_pixels} for model {model.name}")

    t = model.vae_scale_temporal
    window = request.window or quality.window
    overlap = quality.overlap if request.overlap is None else request.overlap
    keyframe_every = quality.keyframe_every if request.keyframe_every is None else request.keyframe_every
    if (window - 1) % t:
        raise RequestError("window", window, f"must be {t}k+1 pixel frames for model {model.name}")
    if overlap % t:
        raise RequestError("overlap", overlap, f"must be a multiple of {t} pixel frames for model {model.name}")
    if overlap >= window:
        raise RequestError("overlap", overlap, f"must be smaller than window={window}")
    if keyframe_every % t:
        raise RequestError("keyframe_every", keyframe_every, f"must be a multiple of {t} pixel frames for model {model.name}")

    lora = lora_digest = None
    if request.lora is not None:
        lora_path = Path(request.lora).expanduser()
        if not lora_path.exists():
            raise RequestError("lora", request.lora, "no such file or folder")
        lora, lora_digest = str(lora_path.resolve()), file_digest(lora_path)

    return ClipSpec(
        prompt=request.prompt,
        negative=request.negative,
        model=request.model,
        model_source=model.source,
        seed=request.seed,
        frames=frames,
        fps=fps,
        width=width,
        height=height,
        steps=request.steps or quality.steps,
        guidance=quality.guidance if request.guidance is None else request.guidance,
        window=window,
        overlap=overlap,
        keyframe_every=keyframe_every,
        blend=request.blend,
        vae_scale_temporal=t,
        vae_scale_spatial=model.vae_scale_spatial,
        latent_channels=model.latent_channels,
        lora=lora,
        lora_scale=request.lora_scale,
        lora_digest=lora_digest,
        view=(*model.view.size(width, height), model.view.filter) if model.view else None,
        keyframe_release=quality.keyframe_release if request.keyframe_release is None else request.keyframe_release,
    )


@lru_cache(maxsize=64)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files in name order (re-hashed only when they change)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    parts = [f"{f.relative_to(path) if f != path else f.name}:{_digest(str(f), f.stat().st_mtime_ns, f.stat().st_size)}" for f in files]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
