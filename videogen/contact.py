"""Contact sheets: many images on one page, each with a caption underneath.

Generic on purpose: storyboards lay out one board per shot, ad batches one frame per variant.
A strip of frames is a sheet with ``columns=len(images)``::

    from videogen.contact import contact_sheet

    sheet = contact_sheet([frame_a, frame_b], ["1A  the door opens", "1B  she turns"], columns=2)
    sheet.save("boards.png")
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` pixels: the same on every machine, no system fonts needed."""
    return ImageFont.load_default(size=size)


def as_image(image: np.ndarray | Image.Image) -> Image.Image:
    """An RGB `PIL.Image` from a uint8 (H, W, 3) array or an image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"images must be uint8 (H, W, 3), got {array.dtype} {array.shape}")
    return Image.fromarray(array, "RGB")


def wrap(text: str, width_px: int, face, max_lines: int) -> list[str]:
    """Split ``text`` into at most ``max_lines`` lines that fit ``width_px``; the last ends in an ellipsis if cut."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            if line and face.getlength(f"{line} {word}") > width_px:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and face.getlength(last + "…") > width_px:
            last = last[:-1]
        lines[-1] = last.rstrip(" .,") + "…"
    return lines


def contact_sheet(
    images: list[np.ndarray | Image.Image],
    captions: list[str] | None = None,
    columns: int | None = None,
    cell_width: int = 240,
    caption_lines: int = 3,
    font_size: int = 14,
    gap: int = 12,
    title: str | None = None,
) -> Image.Image:
    """Lay ``images`` out on a grid, in reading order, each scaled to ``cell_width`` with its caption below.

    Args:
        images: uint8 (H, W, 3) arrays or PIL images, any sizes; each keeps its aspect ratio.
        captions: one string per image (may hold newlines); None for no captions.
        columns: images per row; default about a square sheet (``ceil(sqrt(n))``).
        cell_width: width of each image on the sheet, in pixels.
        caption_lines: lines of caption text kept per image; longer captions end in an ellipsis.
        font_size: caption text height in pixels.
        gap: margin around and between cells, in pixels.
        title: an optional line across the top of the sheet.
    Returns:
        An RGB `PIL.Image`.
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"got {len(captions)} captions for {len(images)} images")
    columns = columns or math.ceil(math.sqrt(len(images)))
    if columns < 1:
        raise ValueError(f"columns={columns}: must be at least 1")
    face = font(font_size)
    line_height = round(font_size * 1.3)
    thumbs = []
    for image in map(as_image, images):
        height = max(1, round(image.height * cell_width / image.width))
        # Nearest neighbour keeps small frames crisp when they are blown up; Lanczos when shrinking.
        resample = Image.Resampling.NEAREST if image.width < cell_width else Image.Resampling.LANCZOS
        thumbs.append(image.resize((cell_width, height), resample))
    text_height = caption_lines * line_height + gap // 2 if captions is not None else 0
    rows = math.ceil(len(thumbs) / columns)
    row_heights = [max(t.height for t in thumbs[r * columns:(r + 1) * columns]) + text_height for r in range(rows)]
    title_height = round(font_size * 1.6) + gap if title else 0
    sheet = Image.new(
        "RGB",
        (gap + columns * (cell_width + gap), gap + title_height + sum(row_heights) + gap * rows),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((gap, gap), title, fill=TEXT, font=font(round(font_size * 1.4)))
    y = gap + title_height
    for r in range(rows):
        for c, thumb in enumerate(thumbs[r * columns:(r + 1) * columns]):
            x = gap + c * (cell_width + gap)
            sheet.paste(thumb, (x, y))
            if captions is not None:
                ty = y + thumb.height + gap // 2
                for line in wrap(captions[r * columns + c], cell_width, face, caption_lines):
                    draw.text((x, ty), line, fill=TEXT, font=face)
                    ty += line_height
        y += row_heights[r] + gap
    return sheet


def frame_strip(frames: np.ndarray, fps: float, count: int = 8, cell_width: int = 128, title: str | None = None) -> Image.Image:
    """``count`` evenly spaced frames of a clip in one row, each captioned with its time.

    Args:
        frames: uint8 (F, H, W, 3), e.g. an MP4 read back with `videogen.encode.read_mp4`.
        fps: the clip's frame rate, for the captions.
    """
    picks = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    return contact_sheet([frames[i] for i in picks], [f"{i / fps:.1f} s" for i in picks], columns=len(picks),
                         cell_width=cell_width, caption_lines=1, title=title)
