"""Pose track JSONL: round trip, validation naming the bad line, atomic writes."""

import json

import numpy as np
import pytest

from puppet.errors import PuppetError
from puppet.pose import PARAMETER_NAMES, PoseVector
from puppet.pose_track import PoseFrame, PoseTrackWriter, read_track, write_track


def _frames(n=5):
    rng = np.random.default_rng(0)
    return [PoseFrame(i / 30, PoseVector(rng.uniform(-1, 1, 45)).clamped()) for i in range(n)]


def test_round_trip(tmp_path):
    path = tmp_path / "t.jsonl"
    frames = _frames()
    write_track(path, 30.0, frames)
    header = json.loads(path.read_text().splitlines()[0])
    assert header == {
        "format": "puppet-pose-track",
        "version": 1,
        "fps": 30.0,
        "parameters": list(PARAMETER_NAMES),
    }
    track = read_track(path)
    assert track.fps == 30.0 and len(track) == 5
    for a, b in zip(track.frames, frames, strict=True):
        assert a.t == pytest.approx(b.t, abs=1e-6)
        np.testing.assert_allclose(a.pose.values, b.pose.values, atol=1e-6)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 3: not valid JSON"),
        ('{"t": 1.0}', "line 3: each frame must be"),
        ('{"t": 1.0, "pose": [0.0]}', 'line 3: "pose" must hold 45 numbers, got 1'),
        ('{"t": "x", "pose": []}', 'line 3: "t" must be a number'),
        ('{"t": -1.0, "pose": ' + json.dumps([0.0] * 45) + "}", 'line 3: "t" goes backwards'),
        ('{"t": 1.0, "pose": ' + json.dumps(["a"] + [0.0] * 44) + "}", "not a finite number"),
    ],
)
def test_bad_lines_are_named(tmp_path, line, message):
    path = tmp_path / "t.jsonl"
    write_track(path, 30.0, _frames(1))
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(PuppetError) as info:
        read_track(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_bad_header_and_missing_file(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"format": "other"}\n')
    with pytest.raises(PuppetError, match="line 1"):
        read_track(path)
    path.write_text("")
    with pytest.raises(PuppetError, match="empty"):
        read_track(path)
    with pytest.raises(PuppetError, match="not found"):
        read_track(tmp_path / "missing.jsonl")


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "rec.jsonl"
    with pytest.raises(RuntimeError):
        with PoseTrackWriter(path, 30.0) as writer:
            writer.write(0.0, PoseVector())
            raise RuntimeError("crash mid-recording")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # the partial file is gone too
    with PoseTrackWriter(path, 30.0) as writer:
        writer.write(0.0, PoseVector())
        assert not path.exists()  # not visible under the final name until closed
    assert len(read_track(path)) == 1
