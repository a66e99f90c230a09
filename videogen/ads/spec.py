"""The ad batch spec: one YAML file (plus an optional CSV feed) that names every variant.

`load_spec` reads and checks everything a batch needs before any generation: the schema (unknown
keys are errors), the matrix, the template's variables, the formats, the negative prompts, every
clip request against its model, each format's allowed length, the font, the logo, and whether the
overlay fits every format's safe area for every variant. Each problem is a `SpecError` naming the
spec file, the line and the key.

A spec::

    template: "a {color} sneaker on a {place}, product shot"
    variables: {color: [red, blue], place: [beach, rooftop]}   # or rows: [...], or feed: rows.csv
    formats: [tiktok, feed, youtube]
    candidates: 3        # seeds per variant
    keep: 1              # best candidates kept per variant
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from PIL import Image, UnidentifiedImageError
from pydantic import Field, ValidationError, model_validator

from ..errors import RequestError
from ..presets import ModelPreset, Strict, default_model, resolve_model
from ..policy import default_policy
from ..request import BlendMethod, ClipSpec, resolve
from .formats import FormatPreset, format_presets, generation_size, negative_presets
from .overlay import OverlayError, OverlaySpec, layout, open_logo
from .rank import SCORERS

Value = str | int | float


class SpecError(RequestError):
    """A bad spec: the file, the line, the key and the value."""

    def __init__(self, path: str | Path, line: int | None, key: str, value, reason: str):
        super().__init__(key, value, reason)
        self.path, self.line = str(path), line
        self.args = (f"{path}:{line or 1}: {key}={value!r}: {reason}",)

    def __str__(self) -> str:
        return self.args[0]


class ClipFields(Strict):
    """The clip settings every variant shares (the request fields a spec may set)."""

    model: str = Field(default_factory=default_model)
    quality: str | None = None
    frames: int | None = Field(default=None, ge=1)
    seconds: float | None = Field(default=None, gt=0)
    fps: int | None = Field(default=None, ge=1, le=120)
    steps: int | None = Field(default=None, ge=1, le=1000)
    guidance: float | None = Field(default=None, ge=0, le=50)
    window: int | None = Field(default=None, ge=1)
    overlap: int | None = Field(default=None, ge=0)
    keyframe_every: int | None = Field(default=None, ge=0)
    blend: BlendMethod = "cosine"


class Pricing(Strict):
    gpu_hour: float = Field(default=2.0, ge=0)  # price of one GPU-hour (one actor-hour)
    clip_seconds: float = Field(default=60.0, gt=0)  # dry-run guess of actor-seconds per clip, before any run


class Lora(Strict):
    """A LoRA style adapter for a brand look (diffusers' ``load_lora_weights``)."""

    path: str  # a .safetensors file or a folder, relative to the spec
    scale: float = Field(default=1.0, ge=0, le=2)


class AdSpec(Strict):
    """The batch spec as written in YAML. Exactly one of ``variables``, ``rows`` and ``feed``."""

    name: str = "batch"
    template: str = Field(min_length=1)  # the prompt, with {variables}
    style: str = ""  # prefix before every prompt, e.g. "studio product shot, soft light"
    negatives: list[str] = []  # names from configs/negatives/
    negative: str = ""  # more negative prompt, after the library's
    variables: dict[str, list[Value]] | None = None  # the matrix is their product
    rows: list[dict[str, Value]] | None = None  # explicit variants
    feed: str | None = None  # a CSV file of rows (header = variable names), relative to the spec
    formats: list[str] = Field(min_length=1)  # names from configs/formats/
    candidates: int = Field(default=1, ge=1)  # seeds per variant
    keep: int = Field(default=1, ge=1)  # best candidates kept per variant
    seed: int = Field(default=0, ge=0)  # candidates use seed, seed + 1, ...
    pixels: int | None = Field(default=None, gt=0)  # generation area (width * height); default: the model's
    clip: ClipFields = ClipFields()
    overlay: OverlaySpec = OverlaySpec()
    scorer: str = "smoothness"
    pricing: Pricing = Pricing()
    lora: Lora | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "AdSpec":
        given = [k for k in ("variables", "rows", "feed") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of variables, rows or feed (got {', '.join(given) or 'none'})")
        if self.keep > self.candidates:
            raise ValueError(f"keep={self.keep} is more than candidates={self.candidates}")
        return self


@dataclass(frozen=True)
class Variant:
    """One row of the matrix: its variables, its prompt and its overlay copy filled in."""

    id: str
    values: dict
    prompt: str
    headline: str | None
    cta: str | None


@dataclass
class Batch:
    """A checked spec, expanded: what `run_batch` generates.

    ``clips`` maps (variant id, seed, (width, height)) to its request; variants whose prompts
    agree share requests, so identical clips are generated once.
    """

    spec: AdSpec
    path: Path
    model: ModelPreset
    variants: list[Variant]
    formats: list[FormatPreset]
    sizes: dict  # format name -> generation (width, height)
    clips: dict = field(default_factory=dict)
    specs: dict = field(default_factory=dict)  # same keys -> resolved ClipSpec
    logo: Image.Image | None = None

    @property
    def seeds(self) -> list[int]:
        return [self.spec.seed + i for i in range(self.spec.candidates)]

    def unique_requests(self) -> dict[str, dict]:
        """Each distinct request once, by its JSON text."""
        return {json.dumps(r, sort_keys=True): r for r in self.clips.values()}


# ------------------------------------------------------------------ YAML lines


def yaml_line(node, loc: tuple) -> int | None:
    """The 1-based line of the deepest node on ``loc`` (keys and list indices) in a composed YAML tree."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(key)]
            if not match:
                break
            k, node = match[0]
            line = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


class _Lines:
    def __init__(self, path: Path, root):
        self.path, self.root = path, root

    def error(self, loc: tuple, value, reason: str) -> SpecError:
        return SpecError(self.path, yaml_line(self.root, loc), ".".join(str(k) for k in loc) or "spec", value, reason)


# ------------------------------------------------------------------ loading


def _fields(template: str, lines: _Lines, loc: tuple) -> list[str]:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise lines.error(loc, template, f"bad template: {e}") from None
    for name in names:
        if not name.isidentifier():
            raise lines.error(loc, template, f"{{{name}}} is not a variable name")
    return names


def _rows(spec: AdSpec, base: Path, lines: _Lines) -> list[dict]:
    if spec.variables is not None:
        for name, values in spec.variables.items():
            if not values:
                raise lines.error(("variables", name), values, "no values: the matrix would be empty")
        names = list(spec.variables)
        return [dict(zip(names, combo)) for combo in itertools.product(*spec.variables.values())]
    if spec.rows is not None:
        return spec.rows
    feed = base / spec.feed
    try:
        with open(feed, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
    except OSError as e:
        raise lines.error(("feed",), spec.feed, f"cannot read the CSV feed ({e.strerror})") from None
    for i, row in enumerate(rows):
        if None in row or any(v is None for v in row.values()):
            raise lines.error(("feed",), spec.feed, f"row {i + 2} of the CSV has a different number of columns than its header")
    return rows


def _variant_id(values: dict) -> str:
    """A readable, stable id: the values as a slug plus a short digest of all of them."""
    if "id" in values:
        return str(values["id"])
    slug = re.sub(r"[^a-z0-9]+", "-", "-".join(str(v) for v in values.values()).lower()).strip("-")[:40].rstrip("-")
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:6]
    return f"{slug}-{digest}" if slug else digest


def load_spec(path: str | Path, clip: dict | None = None) -> Batch:
    """Read, check and expand a spec; nothing is generated.

    Args:
        path: the spec's YAML file; relative paths inside it (feed, logo, font, LoRA) are relative to it.
        clip: clip fields that replace the spec's (the CLI's ``--model``, ``--steps``...); ``frames``
            and ``seconds`` replace each other.
    Raises:
        SpecError: the first problem, naming the file, the line, the key and the value.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(path, None, "spec", str(path), f"cannot read ({e.strerror})") from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise SpecError(path, mark.line + 1 if mark else None, "spec", path.name, f"not valid YAML ({getattr(e, 'problem', e)})") from None
    lines = _Lines(path, root)
    if not isinstance(data, dict):
        raise lines.error((), data, "must be a mapping of keys to values")
    if clip:
        given = dict(data.get("clip") or {})
        if {"frames", "seconds"} & set(clip):
            given.pop("frames", None), given.pop("seconds", None)
        data["clip"] = given | clip

    # 1. Schema: types, ranges, unknown keys.
    try:
        spec = AdSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(k for k in err["loc"])
        reason = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise lines.error(loc, err.get("input") if loc else None, reason) from None
    base = path.parent

    # 2. The matrix, and every template's variables.
    rows = _rows(spec, base, lines)
    source = next(k for k in ("variables", "rows", "feed") if getattr(spec, k) is not None)
    if not rows:
        raise lines.error((source,), getattr(spec, source), "the matrix is empty: no variants to make")
    known = set(rows[0])
    for i, row in enumerate(rows):
        if set(row) != known:
            raise lines.error((source, i) if source == "rows" else (source,), row, f"has variables {sorted(row)}, the first row {sorted(known)}")
    templates = {("template",): spec.template}
    for name in ("headline", "cta"):
        if (style := getattr(spec.overlay, name)) is not None:
            templates[("overlay", name, "text")] = style.text
    for loc, template in templates.items():
        for name in _fields(template, lines, loc):
            if name not in known:
                raise lines.error(loc, template, f"unknown variable {{{name}}}; the spec defines {', '.join(sorted(known)) or 'none'}")

    variants = []
    for row in rows:
        values = {k: str(v) for k, v in row.items()}
        prompt = ", ".join(p for p in (spec.style.strip(), spec.template.format(**values).strip()) if p)
        headline, cta = (s.text.format(**values) if s else None for s in (spec.overlay.headline, spec.overlay.cta))
        variants.append(Variant(_variant_id(values), values, prompt, headline, cta))
    ids = [v.id for v in variants]
    for i, vid in enumerate(ids):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", vid):
            raise lines.error((source,), vid, "a variant id must be letters, digits, '.', '_' or '-' (it names files)")
        if ids.index(vid) != i:
            raise lines.error((source,), vid, "two variants have the same id (repeated rows?)")

    # 3. Presets: formats and negative prompts.
    formats = []
    for i, name in enumerate(spec.formats):
        if name not in format_presets():
            raise lines.error(("formats", i), name, f"unknown format; choose from {', '.join(format_presets())}")
        formats.append(format_presets()[name])
    terms = []
    for i, name in enumerate(spec.negatives):
        if name not in negative_presets():
            raise lines.error(("negatives", i), name, f"unknown negative prompt; choose from {', '.join(negative_presets())}")
        terms += negative_presets()[name].terms
    negative = ", ".join(t for t in (", ".join(terms), spec.negative.strip()) if t)

    # 4. Every clip request against its model, and each format's allowed length.
    try:
        model = resolve_model(spec.clip.model)
    except RequestError as e:
        raise lines.error(("clip", "model"), e.value, e.reason) from None
    pixels = spec.pixels or model.defaults.width * model.defaults.height
    sizes = {f.name: generation_size(f, pixels, model) for f in formats}
    batch = Batch(spec, path, model, variants, formats, sizes)
    clip = spec.clip.model_dump(exclude_none=True)
    if spec.lora is not None:
        lora = base / spec.lora.path
        if not lora.exists():
            raise lines.error(("lora", "path"), spec.lora.path, "LoRA file not found")
        clip.update(lora=str(lora.resolve()), lora_scale=spec.lora.scale)
    policy = default_policy()
    for v in variants:
        if (category := policy.category(v.prompt)) is not None:
            raise lines.error(("template",), v.prompt, f"blocked by the prompt policy ({category}) in variant {v.id}")
        for seed in batch.seeds:
            for w, h in dict.fromkeys(sizes.values()):
                request = dict(clip, prompt=v.prompt, negative=negative, seed=seed, width=w, height=h)
                batch.clips[(v.id, seed, (w, h))] = request
    resolved: dict[str, ClipSpec] = {}
    for key, request in batch.unique_requests().items():
        try:
            resolved[key] = resolve(request, model)
        except RequestError as e:
            loc = (
                ("lora", "path") if e.field == "lora"
                else ("clip", e.field) if e.field in clip
                else ("pixels",) if e.field in ("width", "height")
                else ("clip",)
            )
            raise lines.error(loc, e.value, e.reason) from None
    batch.specs = {k: resolved[json.dumps(r, sort_keys=True)] for k, r in batch.clips.items()}
    any_spec = next(iter(resolved.values()))
    seconds = any_spec.frames / any_spec.fps
    for i, f in enumerate(formats):
        if not f.min_seconds <= seconds <= f.max_seconds:
            raise lines.error(("formats", i), f.name, f"clips are {seconds:g} s; format {f.name} takes {f.min_seconds:g} to {f.max_seconds:g} s")

    # 5. Font, logo and LoRA files, and the overlay on every variant in every format.
    overlay = spec.overlay
    if overlay.font is not None:
        font = base / overlay.font
        if not font.is_file():
            raise lines.error(("overlay", "font"), overlay.font, "font file not found")
        overlay = overlay.model_copy(update={"font": str(font)})
        try:
            layout(formats[0], overlay, "Ag", None, None)
        except OSError as e:
            raise lines.error(("overlay", "font"), spec.overlay.font, f"not a font Pillow can read ({e})") from None
    logo = None
    if overlay.logo is not None:
        logo_path = base / overlay.logo.path
        try:
            logo = open_logo(logo_path)
        except FileNotFoundError:
            raise lines.error(("overlay", "logo", "path"), overlay.logo.path, "logo file not found") from None
        except (OSError, UnidentifiedImageError) as e:
            raise lines.error(("overlay", "logo", "path"), overlay.logo.path, f"not an image ({e})") from None
    batch.spec = spec.model_copy(update={"overlay": overlay})
    batch.logo = logo
    for v in variants:
        for f in formats:
            try:
                layout(f, overlay, v.headline, v.cta, logo)
            except OverlayError as e:
                loc = ("overlay", "logo", "path") if e.element == "logo" else ("overlay", e.element, "text")
                value = {"headline": v.headline, "cta": v.cta}.get(e.element, overlay.logo and overlay.logo.path)
                raise lines.error(loc, value, str(e)) from None

    # 6. The scorer.
    if spec.scorer not in SCORERS:
        raise lines.error(("scorer",), spec.scorer, f"unknown scorer; choose from {', '.join(SCORERS)}")
    return batch
