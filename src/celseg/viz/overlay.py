"""Pictures of segmentations: colour maps, overlays, legends and contact sheets (Pillow only)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from celseg.data.classes import ClassInfo

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def _font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _to_numpy(label) -> np.ndarray:
    if hasattr(label, "detach"):
        label = label.detach().cpu().numpy()
    return np.asarray(label)


def colorize(label, palette: np.ndarray) -> np.ndarray:
    """(H, W) ids (uint8 array or long tensor) -> (H, W, 3) uint8; 255 and unknown ids black."""
    label = _to_numpy(label).astype(np.int64)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: min(len(palette), 255)] = palette[:255]
    out = lut[np.clip(label, 0, 255)]
    out[(label < 0) | (label >= len(palette))] = 0
    return out


def overlay(image_uint8: np.ndarray, label, palette: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend class colours over an (H, W, 3) uint8 image; ignore (255) pixels stay untouched.

    Class borders are drawn in white so neighbouring regions stay apart.
    """
    label = _to_numpy(label).astype(np.int64)
    image = np.asarray(image_uint8, dtype=np.float32)
    colors = colorize(label, palette).astype(np.float32)
    valid = (label != 255)[..., None]
    out = np.where(valid, (1 - alpha) * image + alpha * colors, image)
    edge = np.zeros(label.shape, dtype=bool)
    edge[:-1] |= label[:-1] != label[1:]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    out[edge] = 255
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def legend_image(
    names: Sequence[str], palette: np.ndarray, ids: Sequence[int],
    marked: Sequence[int] = (), columns: int = 1, font_size: int = 14,
) -> np.ndarray:
    """(h, w, 3) uint8 legend: a colour swatch and the name of each class in ``ids``.

    Classes in ``marked`` (e.g. the unseen ones) get a trailing "*".
    """
    font = _font(font_size)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    texts = [names[i] + (" *" if i in set(marked) else "") for i in ids]
    row_h = font_size + 6
    box = font_size
    text_w = max([int(font.getlength(t)) for t in texts] + [10])
    col_w = box + 8 + text_w + 12
    columns = max(1, min(columns, len(texts) or 1))
    rows = -(-len(texts) // columns) if texts else 1
    img = Image.new("RGB", (columns * col_w + 8, rows * row_h + 8), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for k, (i, text) in enumerate(zip(ids, texts, strict=True)):
        col, row = divmod(k, rows)
        x, y = 6 + col * col_w, 5 + row * row_h
        draw.rectangle([x, y, x + box, y + box], fill=tuple(int(c) for c in palette[i]),
                       outline=TEXT)
        draw.text((x + box + 6, y - 1), text, fill=TEXT, font=font)
    return np.asarray(img)


def _pad_to(cell: np.ndarray, h: int, w: int) -> np.ndarray:
    out = np.full((h, w, 3), BACKGROUND, dtype=np.uint8)
    out[: cell.shape[0], : cell.shape[1]] = cell[:h, :w]
    return out


def wrap_title(title: str, width: int, font: ImageFont.ImageFont) -> list[str]:
    """``title`` as lines no wider than ``width`` px in ``font``: broken at spaces and after
    underscores, and a piece too long for a line of its own at characters."""
    lines, line = [], ""
    for piece in re.findall(r"\s*[^\s_]*_?", title):
        if not piece:
            continue
        if font.getlength(line + piece) <= width:
            line += piece
            continue
        lines += [line] if line else []
        piece = piece.lstrip()
        while len(piece) > 1 and font.getlength(piece) > width:
            cut = max([k for k in range(1, len(piece)) if font.getlength(piece[:k]) <= width],
                      default=1)
            lines.append(piece[:cut])
            piece = piece[cut:]
        line = piece
    return [*lines, line] if line or not lines else lines


def panel(rows: list[list[np.ndarray]], titles: Sequence[str] = (), gap: int = 4,
          font_size: int = 14) -> Image.Image:
    """Grid of (h, w, 3) uint8 cells with optional column ``titles``; cells are top-left aligned
    in slots as large as the largest cell. A title wider than its slot is wrapped onto as many
    lines as it needs, so no title runs into the next column."""
    h = max(c.shape[0] for r in rows for c in r)
    w = max(c.shape[1] for r in rows for c in r)
    ncol = max(len(r) for r in rows)
    font = _font(font_size)
    wrapped = [wrap_title(title, w - 4, font) for title in titles]  # 4 px apart at least
    line_h = font_size + 4
    title_h = max((len(lines) for lines in wrapped), default=0) * line_h + 4 if titles else 0
    sheet = Image.new("RGB", (ncol * (w + gap) + gap, title_h + len(rows) * (h + gap) + gap),
                      BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for j, lines in enumerate(wrapped):
        for k, line in enumerate(lines):
            draw.text((gap + j * (w + gap), 3 + k * line_h), line, fill=TEXT, font=font)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            sheet.paste(Image.fromarray(_pad_to(cell, h, w)),
                        (gap + j * (w + gap), title_h + gap + i * (h + gap)))
    return sheet


def _upscale(a: np.ndarray, factor: int) -> np.ndarray:
    return a if factor <= 1 else a.repeat(factor, axis=0).repeat(factor, axis=1)


def contact_sheet(
    images: Sequence[np.ndarray], labels: Sequence, class_info: ClassInfo,
    preds: Sequence | None = None, names: Sequence[str] = (), scale: int = 0,
    alpha: float = 0.55, font_size: int = 14,
) -> Image.Image:
    """Rows of ``image | ground truth overlay [| prediction overlay]`` and a legend of every class
    present (unseen ones marked "*").

    ``images``: (H, W, 3) uint8; ``labels`` / ``preds``: (H, W) ids; ``names`` captions each row;
    ``scale``: integer upscaling of small images (0: enough to make cells >= 192 px).
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if scale <= 0:
        scale = max(1, -(-192 // max(min(im.shape[:2]) for im in images)))
    palette = class_info.palette
    rows, present = [], set()
    for k, (img, lbl) in enumerate(zip(images, labels, strict=True)):
        lbl = _to_numpy(lbl)
        present.update(int(v) for v in np.unique(lbl) if v != 255 and v < len(palette))
        row = [_upscale(img, scale), _upscale(overlay(img, lbl, palette, alpha), scale)]
        if preds is not None:
            pred = _to_numpy(preds[k])
            present.update(int(v) for v in np.unique(pred) if v != 255 and v < len(palette))
            row.append(_upscale(overlay(img, pred, palette, alpha), scale))
        if names:
            row = [_caption(row[0], names[k], font_size)] + row[1:]
        rows.append(row)
    titles = ["image", "ground truth"] + (["prediction"] if preds is not None else [])
    grid = panel(rows, titles, font_size=font_size)
    ids = sorted(present)
    legend = legend_image(class_info.names, palette, ids, marked=class_info.unseen_ids,
                          font_size=font_size)
    note = _text_strip(f"{class_info.dataset_name or 'dataset'}: * = unseen class",
                       legend.shape[1], font_size)
    width = max(note.shape[1], legend.shape[1])
    legend = np.concatenate([_pad_to(note, note.shape[0], width),
                             _pad_to(legend, legend.shape[0], width)], axis=0)
    h = max(grid.height, legend.shape[0])
    sheet = Image.new("RGB", (grid.width + legend.shape[1] + 8, h), BACKGROUND)
    sheet.paste(grid, (0, 0))
    sheet.paste(Image.fromarray(legend), (grid.width + 4, 4))
    return sheet


def _text_strip(text: str, width: int, font_size: int) -> np.ndarray:
    font = _font(font_size)
    width = max(width, int(font.getlength(text)) + 12)
    img = Image.new("RGB", (width, font_size + 10), BACKGROUND)
    ImageDraw.Draw(img).text((6, 4), text, fill=TEXT, font=font)
    return np.asarray(img)


def _caption(cell: np.ndarray, text: str, font_size: int) -> np.ndarray:
    """Write ``text`` on a white band at the bottom of a cell."""
    img = Image.fromarray(cell.copy())
    draw = ImageDraw.Draw(img)
    font = _font(font_size - 2)
    band = font_size + 2
    draw.rectangle([0, img.height - band, int(font.getlength(text)) + 8, img.height],
                   fill=BACKGROUND)
    draw.text((4, img.height - band), text, fill=TEXT, font=font)
    return np.asarray(img)
