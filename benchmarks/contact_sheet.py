"""Teacher vs student at REAL tracked poses: a contact sheet and the figures behind it.

    OPENBLAS_NUM_THREADS=2 .venv/bin/python benchmarks/contact_sheet.py \
        [--student DIR] [--clips ../shared/fixtures/faces/d12.mp4 ...] [--count 24] \
        [--out docs/student_contact_sheet.png] [--json figures.json]

Each clip (a real face video; default: the two clips of ``../shared/fixtures/faces``) is
tracked with the real MediaPipe tracker (``puppet.app.live.track_video``, as ``puppet track``
does; a ``.jsonl`` pose track is read as it is). Scored: ``--count`` evenly spaced tracked
poses per clip and 32 random held-out poses (seed 1234, a stream no training run uses)
against the rig teacher, alpha-weighted PSNR over the whole frame and over the head box
(rows 64-192, cols 192-320), SSIM, worst frame (``puppet.training.evaluation``).

Sheet rows: per clip, the tracked frames with the strongest blink, half-closed eyes, open
mouth and head turn; columns: teacher | student (head and shoulders) | 2x teacher head box |
2x student head box, with the frame's PSNR under it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "fixtures" / "faces"
BACKGROUND = (236, 240, 246)
CROP = (16, 128, 272, 384)  # (top, left, bottom, right): head and shoulders


def clip_poses(clip: Path, count: int, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """(all tracked poses, ``count`` evenly spaced ones) of a face video or a pose track."""
    from puppet.pose import LOWER, UPPER
    from puppet.pose_track import read_track
    from puppet.training.evaluation import tracked_poses

    track = clip
    if clip.suffix != ".jsonl":
        from puppet.app.live import track_video

        track = work / f"{clip.stem}.jsonl"
        track_video(clip, track)
    every = np.stack([f.pose.values for f in read_track(track).frames]).astype(np.float32)
    return np.clip(every, LOWER, UPPER), tracked_poses(track, count)


def _tile(rgba: np.ndarray, box: tuple[int, int, int, int], zoom: int = 1) -> np.ndarray:
    from puppet.outputs.compose import composite_over

    top, left, bottom, right = box
    tile = composite_over(np.ascontiguousarray(rgba[top:bottom, left:right]), BACKGROUND)
    if zoom > 1:
        tile = cv2.resize(
            tile, (tile.shape[1] * zoom, tile.shape[0] * zoom), interpolation=cv2.INTER_NEAREST
        )
    return tile


def make_sheet(rows: list[tuple[str, np.ndarray]], student, teacher, out: Path) -> Path:  # noqa: ANN001
    from PIL import Image, ImageDraw

    from poser_models.student import rgba_to_premultiplied_linear
    from puppet.pose import PoseVector
    from puppet.training.evaluation import HEAD_BOX, alpha_weighted_psnr

    t0, l0, h0, w0 = HEAD_BOX
    head = (t0, l0, t0 + h0, l0 + w0)
    width = CROP[3] - CROP[1]
    zoom = 2 * h0
    label, margin = 18, 6
    sheet = Image.new(
        "RGB",
        (2 * width + 2 * zoom + 5 * margin, len(rows) * (zoom + label + margin) + margin),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(sheet)
    for r, (name, values) in enumerate(rows):
        pose = PoseVector(values)
        expected = teacher.pose(pose)
        premultiplied = student.pose_premultiplied(pose).copy()
        frame = student.pose(pose)
        target = rgba_to_premultiplied_linear(expected)
        whole = alpha_weighted_psnr(target, premultiplied)
        box = alpha_weighted_psnr(target, premultiplied, HEAD_BOX)
        y, x = margin + r * (zoom + label + margin), margin
        for tile in (
            _tile(expected, CROP),
            _tile(frame, CROP),
            _tile(expected, head, 2),
            _tile(frame, head, 2),
        ):
            sheet.paste(Image.fromarray(tile), (x, y))
            x += tile.shape[1] + margin
        draw.text(
            (margin + 2, y + zoom + 2),
            f"{name}: whole {whole:.1f} dB, head box {box:.1f} dB"
            "   [teacher | student | 2x teacher head box | 2x student head box]",
            fill=(20, 20, 30),
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def main() -> None:
    from poser_models.registry import create_poser
    from poser_models.student import StudentPoser
    from puppet.paths import DEFAULT_STUDENT_DIR
    from puppet.training.evaluation import evaluate_student, telling_frames
    from puppet.training.teacher_frames import render_frames, sample_poses

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, default=DEFAULT_STUDENT_DIR)
    parser.add_argument("--teacher", default="rig:hana")
    parser.add_argument(
        "--clips", type=Path, nargs="*", default=[FACES / "d12.mp4", FACES / "d14.mp4"]
    )
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--random", type=int, default=32)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "student_contact_sheet.png")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    student = StudentPoser.from_folder(args.student)
    student.load(student.character_path)
    teacher = create_poser(args.teacher, student.character_path)
    figures: dict = {}
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for clip in args.clips:
            every, poses = clip_poses(clip, args.count, Path(work))
            frames = render_frames(teacher, poses)
            figures[clip.stem] = evaluate_student(student, poses, frames)
            for label, n in telling_frames(every).items():
                rows.append((f"{clip.stem} #{n} {label}", every[n]))
    if args.random > 0:  # --random 0: the tracked poses only (a slow teacher)
        poses = sample_poses("heldout", args.random, seed=1234)
        frames = render_frames(teacher, poses)
        figures["random"] = evaluate_student(student, poses, frames)
    for name, f in figures.items():
        print(
            f"{name:7s} ({f['frames']} poses) whole {f['whole_psnr_db']:.2f} dB (worst frame"
            f" {f['whole_frame_min_db']:.2f} #{f['whole_worst_frame']}, SSIM"
            f" {f['whole_ssim']:.4f}) | head box {f['head_psnr_db']:.2f} dB (worst"
            f" {f['head_frame_min_db']:.2f} #{f['head_worst_frame']}, SSIM {f['head_ssim']:.4f})"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    print(make_sheet(rows, student, teacher, args.out))


if __name__ == "__main__":
    main()
