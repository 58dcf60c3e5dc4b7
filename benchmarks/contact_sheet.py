"""Teacher vs student contact sheet for the README: ``docs/student_contact_sheet.png``.

    .venv/bin/python benchmarks/contact_sheet.py [--student DIR] [--out PNG]

Top row: the rig teacher; bottom row: the shipped student (or DIR); six labelled poses.
Each tile shows the upper part of the frame (head and shoulders) over a light background,
with the frame's alpha-weighted PSNR vs the teacher under the student tile.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from puppet.pose import PoseVector

POSES: list[tuple[str, dict[str, float]]] = [
    ("neutral", {}),
    ("blink", {"eye_wink_left": 1.0, "eye_wink_right": 1.0}),
    (
        "wink",
        {"eye_wink_right": 1.0, "mouth_raised_corner_left": 0.5, "mouth_raised_corner_right": 0.5},
    ),
    ("aaa", {"mouth_aaa": 1.0, "eyebrow_raised_left": 0.6, "eyebrow_raised_right": 0.6}),
    ("head turn", {"head_y": 0.9, "head_x": -0.3, "iris_rotation_y": -0.6, "body_y": 0.4}),
    (
        "tilt + smile",
        {
            "neck_z": 0.8,
            "body_z": -0.5,
            "eye_happy_wink_left": 1.0,
            "eye_happy_wink_right": 1.0,
            "mouth_raised_corner_left": 1.0,
            "mouth_raised_corner_right": 1.0,
            "breathing": 0.6,
        },
    ),
]
CROP = (16, 96, 336, 416)  # (top, left, bottom, right): head and shoulders
BACKGROUND = (236, 240, 246)


def _tile(rgba: np.ndarray) -> Image.Image:
    from poser_models.image import composite_over

    top, left, bottom, right = CROP
    return Image.fromarray(composite_over(rgba[top:bottom, left:right], BACKGROUND))


def make_sheet(student_dir: Path, out: Path) -> Path:
    from poser_models.rig import render_rig
    from poser_models.student import StudentPoser, rgba_to_premultiplied_linear
    from puppet.training.distill import alpha_weighted_psnr

    student = StudentPoser.from_folder(student_dir)
    student.load(student.character_path)
    tile_w, tile_h = CROP[3] - CROP[1], CROP[2] - CROP[0]
    label_h, margin = 26, 8
    sheet = Image.new(
        "RGB",
        (margin + len(POSES) * (tile_w + margin), 2 * (tile_h + label_h) + 3 * margin),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(sheet)
    for column, (name, values) in enumerate(POSES):
        pose = PoseVector.from_dict(values)
        teacher = render_rig(pose)
        posed = student.pose_premultiplied(pose)
        psnr = alpha_weighted_psnr(rgba_to_premultiplied_linear(teacher), posed)
        x = margin + column * (tile_w + margin)
        for row, (image, caption) in enumerate(
            [
                (teacher, f"teacher (rig): {name}"),
                (student.pose(pose), f"student: {name}, {psnr:.1f} dB"),
            ]
        ):
            y = margin + row * (tile_h + label_h + margin)
            sheet.paste(_tile(image), (x, y))
            draw.text((x + 4, y + tile_h + 6), caption, fill=(20, 20, 30))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def main() -> None:
    from puppet.paths import ASSETS_DIR, DEFAULT_STUDENT_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, default=DEFAULT_STUDENT_DIR)
    parser.add_argument(
        "--out", type=Path, default=ASSETS_DIR.parent / "docs" / "student_contact_sheet.png"
    )
    args = parser.parse_args()
    print(make_sheet(args.student, args.out))


if __name__ == "__main__":
    main()
