"""The live loop and offline rendering end to end, with real posers, files and mediapipe.

No webcam exists on CI machines: camera-like sources are video files read in real time by
the same capture thread a camera uses (the library boundary is cv2.VideoCapture).
"""

from __future__ import annotations

import shutil
import threading

import av
import numpy as np
import pytest
from facevideo import make_face_video
from PIL import Image

from puppet.app.live import LiveConfig, RenderConfig, render, run_live, track_video
from puppet.errors import PuppetError
from puppet.pose import PoseVector
from puppet.pose_track import PoseFrame, read_track, write_track

POSER = "rig:hana"  # the bundled rig: fast and real (the student's teacher)


def _track(path, frames=8, fps=30.0):
    poses = []
    for i in range(frames):
        pose = PoseVector()
        pose["mouth_aaa"] = i / max(frames - 1, 1)
        pose["head_y"] = -0.5 + i / max(frames - 1, 1)
        poses.append(PoseFrame(i / fps, pose))
    write_track(path, fps, poses)
    return path


def _count_video_frames(path):
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_live_from_track_into_several_outputs_with_one_failing(tmp_path):
    track = _track(tmp_path / "t.jsonl", frames=12)
    frames_dir = tmp_path / "frames"
    mp4 = tmp_path / "live.mp4"
    seen = []

    def break_png_output(image, info):
        seen.append(info.index)
        if info.index == 3:  # the disk "disappears" under the PNG output mid-run
            for partial in tmp_path.glob(".frames.*"):
                shutil.rmtree(partial)

    report = run_live(
        LiveConfig(source=str(track), poser=POSER, outputs=[str(mp4), f"{frames_dir}/"]),
        on_frame=break_png_output,
    )
    assert report.frames == 12 == len(seen)
    assert report.dropped_outputs == [f"{frames_dir}/"]
    assert not frames_dir.exists()  # the failed output left nothing under its final name
    assert _count_video_frames(mp4) == 12  # the other output went on to the end
    assert {"track", "poser", "outputs"} <= set(report.stages)


def test_live_stops_on_frames_seconds_and_event(tmp_path):
    track = _track(tmp_path / "t.jsonl", frames=300)
    report = run_live(
        LiveConfig(source=str(track), poser=POSER, outputs=[f"{tmp_path / 'a'}/"], frames=5)
    )
    assert report.frames == 5
    report = run_live(
        LiveConfig(source=str(track), poser=POSER, outputs=[f"{tmp_path / 'b'}/"], seconds=0.3)
    )
    assert 1 <= report.frames <= 12
    stop = threading.Event()
    stop.set()
    report = run_live(
        LiveConfig(source=str(track), poser=POSER, outputs=[f"{tmp_path / 'c'}/"]), stop=stop
    )
    assert report.frames == 0


def test_live_from_face_video_tracks_and_records(tmp_path):
    """A face video stands in for the webcam: real mediapipe, mapping, poser, two outputs."""
    video = make_face_video(tmp_path / "face.mp4", frames=90, fps=15)
    record = tmp_path / "rec.jsonl"
    states = []
    report = run_live(
        LiveConfig(
            source=str(video),
            poser=POSER,
            outputs=[str(tmp_path / "o.webm"), f"{tmp_path / 'png'}/"],
            frames=10,
            record=record,
        ),
        on_frame=lambda image, info: states.append(info.tracking),
    )
    assert report.frames == 10
    assert "tracking" in states
    assert {"capture", "tracking", "mapping", "poser", "outputs"} <= set(report.stages)
    assert len(read_track(record)) == 10
    assert len(list((tmp_path / "png").glob("*.png"))) == 10


def test_render_track_one_frame_per_line_with_straight_alpha(tmp_path):
    track = _track(tmp_path / "t.jsonl", frames=6)
    report = render(RenderConfig(driver=track, output=f"{tmp_path / 'png'}/", poser=POSER))
    files = sorted((tmp_path / "png").glob("*.png"))
    assert report.frames == 6 and [f.name for f in files][:2] == ["000000.png", "000001.png"]
    rgba = np.asarray(Image.open(files[0]))
    assert rgba.shape == (512, 512, 4)
    assert rgba[0, 0, 3] == 0 and rgba[300, 256, 3] == 255
    render(RenderConfig(driver=track, output=str(tmp_path / "o.gif"), poser=POSER))
    assert _count_video_frames(tmp_path / "o.gif") == 6


def test_render_face_video_copies_audio_and_tracks(tmp_path):
    video = make_face_video(tmp_path / "talk.mp4", frames=12, fps=12, audio=True)
    out = tmp_path / "out.mp4"
    report = render(RenderConfig(driver=video, output=str(out), poser=POSER, background="#ffffff"))
    assert report.frames == 12
    with av.open(str(out)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
    track = tmp_path / "talk.jsonl"
    track_video(video, track)
    assert len(read_track(track)) == 12


def test_render_bad_output_extension(tmp_path):
    track = _track(tmp_path / "t.jsonl", frames=2)
    with pytest.raises(PuppetError):
        render(RenderConfig(driver=track, output=str(tmp_path / "o.xyz"), poser=POSER))
    assert not (tmp_path / "o.xyz").exists()


def test_render_png_directory_matches_official_straight_alpha(tmp_path, fixtures_dir):
    """`puppet render TRACK DIR/` with the official THA4 student writes the same straight-alpha
    PNGs as the official converter (fixture *_straight.png; colour compared where alpha >= 8,
    since dividing by a tiny alpha amplifies float noise)."""
    student = fixtures_dir / "tha4_student" / "lambda_00"
    expected = np.load(student / "expected_outputs.npz")
    poses = [PoseFrame(j / 30, PoseVector(expected["pose"][j])) for j in (0, 1)]
    write_track(tmp_path / "t.jsonl", 30.0, poses)
    render(RenderConfig(driver=tmp_path / "t.jsonl", output=f"{tmp_path / 'png'}/",
                        poser=f"tha4-student:{student}"))  # fmt: skip
    for j, name in ((0, "neutral"), (1, "blink")):
        ours = np.asarray(Image.open(tmp_path / "png" / f"{j:06d}.png")).astype(int)
        reference = np.asarray(Image.open(student / f"output_{j}_{name}_straight.png")).astype(int)
        assert ours.shape == reference.shape == (512, 512, 4)
        assert np.abs(ours[..., 3] - reference[..., 3]).max() <= 1
        covered = reference[..., 3] >= 8
        assert np.abs(ours[..., :3] - reference[..., :3])[covered].max() <= 1


def test_live_loop_survives_a_failing_pose(tmp_path, caplog):
    """A poser error on one pose must not end the stream: the last frame is shown instead."""
    from poser_models.registry import register_poser
    from poser_models.rig import RigPoser

    class FlakyRig(RigPoser):
        def pose(self, pose):
            if pose["mouth_aaa"] > 0.5:
                raise RuntimeError("simulated poser fault")
            return super().pose(pose)

    register_poser("flaky", lambda argument, device, models_dir: (FlakyRig(), "hana"))
    track = _track(tmp_path / "t.jsonl", frames=6)  # mouth_aaa rises past 0.5 mid-track
    report = run_live(LiveConfig(source=str(track), poser="flaky:x",
                                 outputs=[f"{tmp_path / 'png'}/"]))  # fmt: skip
    assert report.frames == 6
    assert len(list((tmp_path / "png").glob("*.png"))) == 6
    assert "the poser failed" in caplog.text
