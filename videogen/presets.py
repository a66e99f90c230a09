"""Model and quality presets: typed schemas for the YAML files in ``configs/``.

YAML is only how a preset is written down; every file is validated against these models, and an
unknown key is an error (``extra="forbid"``).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import RequestError

DEFAULT_MODEL = "miniature"  # the built-in model trained on the shapes world (MODEL.md)
MODEL_ENV = "VIDEOGEN_MODEL"


def default_model() -> str:
    """The model of a request that names none: ``$VIDEOGEN_MODEL`` (a team's usual model), else `DEFAULT_MODEL`."""
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelDefaults(Strict):
    """What a request gets for a field it leaves out."""

    width: int = Field(gt=0)
    height: int = Field(gt=0)
    fps: int = Field(gt=0)
    frames: int = Field(gt=0)
    quality: str = "standard"


class ViewSettings(Strict):
    """How a model's small frames are enlarged for viewing when they are written to MP4.

    ``filter`` names an FFmpeg swscale filter (PyAV's ``VideoFrame.reformat`` interpolation);
    the model's own frames, and every score computed from them, stay at native size.
    """

    short_side: int = Field(gt=0)  # the MP4's shorter side is at least this many pixels
    filter: Literal["lanczos", "bicubic", "bilinear", "area", "point"] = "lanczos"

    def size(self, width: int, height: int) -> tuple[int, int]:
        """Output size: native size times the smallest whole factor that reaches ``short_side``."""
        factor = max(1, -(-self.short_side // min(width, height)))
        return width * factor, height * factor


class ModelPreset(Strict):
    """A model videogen can run: where its weights live and the geometry the engine plans with."""

    name: str
    description: str = ""
    source: str  # "builtin:<name>", a local diffusers folder, or a hub id
    family: Literal["wan"] = "wan"
    latent_channels: int = 16
    in_channels: int = 16  # > latent_channels: takes conditioning latents + mask on the channel axis
    vae_scale_temporal: int = 4  # pixel frames per latent frame (after the first)
    vae_scale_spatial: int = 8
    patch: tuple[int, int, int] = (1, 2, 2)
    max_frames: int = Field(default=1025, gt=0)
    max_pixels: int = Field(default=1280 * 720, gt=0)  # width * height
    gpu_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    defaults: ModelDefaults
    view: ViewSettings | None = None  # enlarge frames for viewing (models with tiny native frames)

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this (VAE stride times transformer patch)."""
        return self.vae_scale_spatial * self.patch[1]

    @property
    def conditioning(self) -> Literal["channels", "replace"]:
        """How known frames reach the model: concatenated channels (image-to-video style) or replacement."""
        return "channels" if self.in_channels > self.latent_channels else "replace"


class QualityPreset(Strict):
    """Speed against quality: denoising steps and how the clip is cut into windows (pixel frames)."""

    name: str
    description: str = ""
    steps: int = Field(gt=0)
    guidance: float = Field(ge=0)
    window: int = Field(gt=0)
    overlap: int = Field(ge=0)
    keyframe_every: int = Field(ge=0)
    keyframe_release: float = Field(default=0.0, ge=0, lt=1)


def configs_dir() -> Path:
    """The presets folder: ``$VIDEOGEN_CONFIGS``, else the checkout's ``configs/``, else the installed copy."""
    if env := os.environ.get("VIDEOGEN_CONFIGS"):
        return Path(env)
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "configs", here / "configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no configs/ folder found next to the videogen package; set VIDEOGEN_CONFIGS")


def load_yaml(path: Path, schema: type[Strict]) -> Strict:
    """Load one YAML file into ``schema``; errors name the file, the key and the value."""
    with open(path) as f:
        data = yaml.safe_load(f)
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{path}: {key}={err.get('input')!r}: {err['msg']}") from None


def load_presets(folder: str, schema: type[Strict]) -> dict:
    """Every ``configs/<folder>/*.yaml`` loaded into ``schema``, by its ``name``."""
    presets = [load_yaml(p, schema) for p in sorted((configs_dir() / folder).glob("*.yaml"))]
    return {p.name: p for p in presets}


@lru_cache(maxsize=None)
def model_presets() -> dict[str, ModelPreset]:
    return load_presets("models", ModelPreset)


@lru_cache(maxsize=None)
def quality_presets() -> dict[str, QualityPreset]:
    return load_presets("quality", QualityPreset)


def quality_preset(name: str) -> QualityPreset:
    presets = quality_presets()
    if name not in presets:
        raise RequestError("quality", name, f"unknown quality preset; choose one of {', '.join(presets)}")
    return presets[name]


FOLDER_PRESET_FILE = "videogen.yaml"


def resolve_model(name_or_path: str) -> ModelPreset:
    """A preset by name, or the geometry of a diffusers model folder read from its config files.

    Reads JSON configs only: the driver never loads weights.
    """
    presets = model_presets()
    if name_or_path in presets:
        return presets[name_or_path]
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        raise RequestError(
            "model", name_or_path, f"not a preset ({', '.join(presets)}) nor a model folder"
        )
    try:
        index = json.loads((folder / "model_index.json").read_text())
        transformer = json.loads((folder / "transformer" / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RequestError("model", name_or_path, f"not a diffusers model folder ({e})") from None
    if index.get("_class_name") not in ("WanPipeline", "WanImageToVideoPipeline"):
        raise RequestError("model", name_or_path, f"unsupported pipeline class {index.get('_class_name')!r}")
    extra = {}
    if (folder / FOLDER_PRESET_FILE).exists():
        extra = yaml.safe_load((folder / FOLDER_PRESET_FILE).read_text()) or {}
    fields = dict(
        name=str(folder),
        source=str(folder.resolve()),
        latent_channels=vae.get("z_dim", 16),
        in_channels=transformer.get("in_channels", 16),
        vae_scale_temporal=vae.get("scale_factor_temporal") or 2 ** sum(vae.get("temperal_downsample", [])),
        vae_scale_spatial=vae.get("scale_factor_spatial") or 8,
        patch=tuple(transformer.get("patch_size", (1, 2, 2))),
        defaults=dict(width=832, height=480, fps=16, frames=81),
    )
    fields.update(extra)
    try:
        return ModelPreset.model_validate(fields)
    except ValidationError as e:
        raise RequestError("model", name_or_path, f"bad {FOLDER_PRESET_FILE}: {e.errors()[0]['msg']}") from None
