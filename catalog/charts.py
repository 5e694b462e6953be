"""PNG charts of a model version's held-out evaluation, drawn with Pillow (no plotting library):
the confusion matrix and the reliability diagram.

Inputs are the JSON a model version stores in `metrics` (see `classifier.calibration`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

INK = (31, 41, 51)
MUTED = (97, 110, 124)
GRID = (228, 231, 235)
BRAND = (15, 118, 110)
DANGER = (180, 35, 24)
WHITE = (255, 255, 255)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: Any) -> float:
    return draw.textlength(text, font=font)


def confusion_png(classes: Sequence[str], matrix: Sequence[Sequence[int]]) -> bytes:
    """Rows: true category; columns: predicted category, plus "other" (a category outside the
    head, e.g. zero-shot). Cells are shaded by their share of the row; counts are printed."""
    columns = [*classes, "other"]
    cell = 44
    font, small = _font(13), _font(11)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = int(max((_text_width(probe, c, font) for c in classes), default=40)) + 24
    top = int(max((_text_width(probe, c, small) for c in columns), default=40)) + 34
    width = left + cell * len(columns) + 20
    height = top + cell * len(classes) + 40
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((left, 6), "predicted →", fill=MUTED, font=small)
    for column, name in enumerate(columns):
        label = Image.new("RGBA", (int(_text_width(draw, name, small)) + 4, 16), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((0, 0), name, fill=INK, font=small)
        rotated = label.rotate(60, expand=True)
        x = left + column * cell + cell // 2 - rotated.width // 2 + 6
        image.paste(rotated, (x, top - rotated.height - 4), rotated)
    for row, name in enumerate(classes):
        y = top + row * cell
        draw.text((left - 8 - _text_width(draw, name, font), y + cell // 2 - 8), name, fill=INK, font=font)
        total = sum(matrix[row]) or 1
        for column, count in enumerate(matrix[row]):
            x = left + column * cell
            share = count / total
            diagonal = column == row
            base = BRAND if diagonal else DANGER
            fill = tuple(
                int(255 - (255 - channel) * min(1.0, share * (1.0 if diagonal else 2.5))) for channel in base
            )
            draw.rectangle([x, y, x + cell - 2, y + cell - 2], fill=fill, outline=GRID)
            if count:
                colour = WHITE if share > 0.55 else INK
                text = str(count)
                draw.text(
                    (x + (cell - 2 - _text_width(draw, text, font)) / 2, y + cell // 2 - 9),
                    text,
                    fill=colour,
                    font=font,
                )
    draw.text((8, height - 26), "rows: true category (held-out photos)", fill=MUTED, font=small)
    return _png(image)


def reliability_png(bins: Sequence[dict[str, Any]], ece: float | None = None) -> bytes:
    """Accuracy against mean confidence per confidence bin (bars), with the diagonal of perfect
    calibration and each bin's photo count; the title gives the expected calibration error."""
    size, margin = 360, 56
    width, height = size + margin + 24, size + margin + 44
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    font, small = _font(13), _font(11)
    x0, y0 = margin, 32
    x1, y1 = x0 + size, y0 + size
    title = "Reliability" + (f" — ECE {ece:.3f}" if ece is not None else "")
    draw.text((x0, 8), title, fill=INK, font=font)
    for tick in range(0, 11, 2):
        value = tick / 10
        x = x0 + value * size
        y = y1 - value * size
        draw.line([x, y0, x, y1], fill=GRID)
        draw.line([x0, y, x1, y], fill=GRID)
        draw.text((x - 8, y1 + 4), f"{value:.1f}", fill=MUTED, font=small)
        draw.text((x0 - 30, y - 7), f"{value:.1f}", fill=MUTED, font=small)
    for item in bins:
        if not item.get("count"):
            continue
        left = x0 + float(item["lower"]) * size + 2
        right = x0 + float(item["upper"]) * size - 2
        accuracy_top = y1 - float(item["accuracy"]) * size
        draw.rectangle([left, accuracy_top, right, y1], fill=BRAND)
        gap_top = y1 - float(item["confidence"]) * size
        draw.line([left, gap_top, right, gap_top], fill=DANGER, width=2)
        label = str(item["count"])
        draw.text(
            ((left + right) / 2 - _text_width(draw, label, small) / 2, accuracy_top - 14),
            label,
            fill=INK,
            font=small,
        )
    draw.line([x0, y1, x1, y0], fill=MUTED, width=1)
    draw.rectangle([x0, y0, x1, y1], outline=INK)
    draw.text(
        (x0, y1 + 20),
        "confidence (bars: accuracy; red: mean confidence; numbers: photos)",
        fill=MUTED,
        font=small,
    )
    return _png(image)
