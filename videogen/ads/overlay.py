"""Text and logo drawn over finished frames, inside a format's safe area.

Diffusion models garble lettering, so an ad's words are never generated: they are drawn here with
Pillow. Everything is stacked and centred inside the safe area: the logo at the top, the headline
under it, the call to action (a filled button) at the bottom. Both texts start at their wanted
size and shrink together, wrapping at word boundaries, until the stack fits; if they would have to
go below their minimum size, `layout` raises `OverlayError` (checked before any generation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont
from pydantic import Field, field_validator

from ..presets import Strict
from .formats import FormatPreset

SHRINK = 0.95  # font sizes shrink by 5% per try


class TextStyle(Strict):
    """One line of copy. Sizes are fractions of the frame's height."""

    text: str = Field(min_length=1)  # may name the spec's {variables}
    size: float = Field(default=0.05, gt=0, le=0.5)  # wanted font size
    min_size: float = Field(default=0.02, gt=0, le=0.5)  # never shrink below this
    max_lines: int = Field(default=3, ge=1)
    color: str = "#ffffff"
    background: str | None = None  # a button behind the text

    @field_validator("color", "background")
    @classmethod
    def _known_colour(cls, v: str | None) -> str | None:
        if v is not None:
            ImageColor.getrgb(v)  # a ValueError naming the colour
        return v


class LogoStyle(Strict):
    """A logo image (PNG with transparency) at the top of the safe area."""

    path: str  # relative to the spec file
    height: float = Field(default=0.08, gt=0, le=0.5)  # fraction of the frame's height


class OverlaySpec(Strict):
    font: str | None = None  # a TrueType/OpenType file (relative to the spec); None: Pillow's built-in font
    headline: TextStyle | None = None
    cta: TextStyle | None = None
    logo: LogoStyle | None = None


class OverlayError(ValueError):
    """The overlay cannot fit a format's safe area; ``element`` is ``headline``, ``cta`` or ``logo``."""

    def __init__(self, element: str, reason: str):
        self.element = element
        super().__init__(reason)


@dataclass(frozen=True)
class _Block:
    lines: list[str]
    font: ImageFont.FreeTypeFont
    stroke: int
    line_height: int
    pad: int  # button padding around the text (0 without a background)

    @property
    def width(self) -> int:
        return max(round(self.font.getlength(line)) for line in self.lines) + 2 * (self.stroke + self.pad)

    @property
    def height(self) -> int:
        return len(self.lines) * self.line_height + 2 * (self.stroke + self.pad)


def load_font(font: str | None, size: int) -> ImageFont.FreeTypeFont:
    """A font at ``size`` pixels: the file at ``font``, or Pillow's built-in one."""
    return ImageFont.load_default(size) if font is None else ImageFont.truetype(font, size)


def _wrap(text: str, font, max_width: int) -> list[str] | None:
    """Greedy word wrap; None if one word alone is wider than ``max_width``."""
    lines: list[str] = []
    for word in text.split():
        if font.getlength(word) > max_width:
            return None
        if lines and font.getlength(f"{lines[-1]} {word}") <= max_width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _block(text: str, style: TextStyle, font_path: str | None, px: int, max_width: int) -> _Block | None:
    font = load_font(font_path, px)
    stroke = 0 if style.background else max(1, px // 16)  # a dark outline keeps bare text legible
    pad = px // 3 if style.background else 0
    lines = _wrap(text, font, max_width - 2 * (stroke + pad))
    if lines is None or len(lines) > style.max_lines:
        return None
    ascent, descent = font.getmetrics()
    return _Block(lines, font, stroke, round((ascent + descent) * 1.1), pad)


@dataclass(frozen=True)
class Layout:
    """Where everything goes on one format, in delivery pixels."""

    blocks: list[tuple[_Block, TextStyle, int]]  # block, style, top y
    logo: Image.Image | None
    logo_top: int
    box: tuple[int, int, int, int]


def layout(fmt: FormatPreset, overlay: OverlaySpec, headline: str | None, cta: str | None,
           logo: Image.Image | None) -> Layout:
    """Fit the overlay into ``fmt``'s safe area.

    Args:
        fmt: the delivery format.
        overlay: styles (sizes as fractions of the frame height) and the font.
        headline: the headline with its variables filled in (None: no headline).
        cta: the call to action, filled in (None: none).
        logo: the logo image (RGBA), or None.
    Raises:
        OverlayError: naming the element that cannot fit, and why.
    """
    left, top, right, bottom = box = fmt.safe_box()
    width, height = right - left, bottom - top
    gap = max(2, round(0.02 * fmt.height))
    logo_img = None
    if logo is not None:
        lh = round(overlay.logo.height * fmt.height)
        lw = max(1, round(logo.width * lh / logo.height))
        if lw > width or lh > height // 3:
            raise OverlayError("logo", f"a {lw}x{lh} px logo does not fit format {fmt.name}'s safe area "
                                       f"({width}x{height} px; at most a third of its height)")
        logo_img = logo.resize((lw, lh), Image.Resampling.LANCZOS)
    texts = [(name, t, s) for name, t, s in (("headline", headline, overlay.headline), ("cta", cta, overlay.cta))
             if t is not None]
    room = height - (logo_img.height + gap if logo_img is not None else 0)

    scale = 1.0
    while True:
        for name, _, style in texts:
            if style.size * scale < style.min_size:
                raise OverlayError(name, f"does not fit format {fmt.name}'s safe area ({width}x{height} px) "
                                         f"at its min_size: shorten it or lower min_size")
        blocks = [_block(t, s, overlay.font, round(s.size * scale * fmt.height), width) for _, t, s in texts]
        if all(b is not None for b in blocks) and sum(b.height for b in blocks) + gap * max(0, len(blocks) - 1) <= room:
            break
        scale *= SHRINK

    placed = []
    y = top + (logo_img.height + gap if logo_img is not None else 0)
    for block, (name, _, style) in zip(blocks, texts):
        placed.append((block, style, bottom - block.height if name == "cta" else y))
        y += block.height + gap
    return Layout(placed, logo_img, top, box)


def render(lay: Layout, width: int, height: int) -> Image.Image:
    """The overlay as a transparent RGBA image of the delivery size."""
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    left, _, right, _ = lay.box
    centre = (left + right) // 2
    if lay.logo is not None:
        layer.alpha_composite(lay.logo, (centre - lay.logo.width // 2, lay.logo_top))
    for block, style, y in lay.blocks:
        x0 = centre - block.width // 2
        if style.background:
            draw.rounded_rectangle((x0, y, x0 + block.width - 1, y + block.height - 1),
                                   radius=block.pad, fill=style.background)
        inner = block.stroke + block.pad
        for i, line in enumerate(block.lines):
            lx = centre - round(block.font.getlength(line)) // 2
            draw.text((lx, y + inner + i * block.line_height), line, font=block.font, fill=style.color,
                      stroke_width=block.stroke, stroke_fill="#000000")
    return layer


def apply(frames: np.ndarray, layer: Image.Image) -> np.ndarray:
    """Alpha-composite an RGBA layer over uint8 frames (F, H, W, 3); returns new frames."""
    out = frames.copy()
    box = layer.getbbox(alpha_only=True)
    if box is None:
        return out
    left, top, right, bottom = box
    patch = layer.crop(box)
    for frame in out:
        region = Image.fromarray(frame[top:bottom, left:right]).convert("RGBA")
        region.alpha_composite(patch)
        frame[top:bottom, left:right] = np.asarray(region.convert("RGB"))
    return out


def open_logo(path: str | Path) -> Image.Image:
    """The logo as RGBA."""
    with Image.open(path) as img:
        return img.convert("RGBA")
