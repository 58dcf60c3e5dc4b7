"""Lip sync on generated WAV files (no audio hardware needed).

The microphone path cannot be exercised without a sound device; on a machine without one
(like CI) ``start()`` must raise one clear PuppetError, which is tested here."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from puppet.errors import PuppetError
from puppet.mapping.lipsync import LipSync, LipSyncSettings

RATE = 16000


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE, channels: int = 1) -> Path:
    data = np.clip(samples, -1, 1)
    if channels > 1:
        data = np.repeat(data[:, None], channels, axis=1).reshape(-1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((data * 32767).astype("<i2").tobytes())
    return path


def burst(noise_amplitude: float = 0.0, seed: int = 0, freq: float = 220.0) -> np.ndarray:
    """1 s silence, 0.5 s tone, 1 s silence (plus optional background noise)."""
    t = np.arange(int(2.5 * RATE)) / RATE
    x = np.where((t >= 1.0) & (t < 1.5), 0.5 * np.sin(2 * np.pi * freq * t), 0.0)
    rng = np.random.default_rng(seed)
    return x + noise_amplitude * rng.standard_normal(t.size)


def test_tone_burst_opens_the_mouth_only_during_the_burst(tmp_path):
    sync = LipSync(write_wav(tmp_path / "burst.wav", burst(noise_amplitude=0.001)))
    assert sync.duration_s == pytest.approx(2.5, abs=0.03)
    ts = np.arange(0, 2.5, 0.01)
    aaa = np.array([sync.level_at(t)["mouth_aaa"] for t in ts])
    before, during, after = aaa[ts < 0.99], aaa[(ts > 1.15) & (ts < 1.49)], aaa[ts > 2.0]
    assert before.max() == 0.0 and after.max() < 0.01
    assert during.min() > 0.8
    # attack is fast (open within ~0.1 s), release takes a little longer but ends
    assert sync.level_at(1.1)["mouth_aaa"] > 0.7
    assert 0.0 < sync.level_at(1.55)["mouth_aaa"] < during.min()
    # a 220 Hz tone is "dark": the vowel estimate goes towards ooo, not iii
    v = sync.level_at(1.4)
    assert v["mouth_ooo"] > 0.3 and v["mouth_iii"] == 0.0
    assert sync.values(1.4) == v
    assert sync.level_at(-1.0)["mouth_aaa"] == 0.0 and sync.level_at(99.0)["mouth_aaa"] == 0.0


def test_bright_sound_biases_towards_iii(tmp_path):
    sync = LipSync(write_wav(tmp_path / "bright.wav", burst(freq=4000.0), channels=2))
    v = sync.level_at(1.4)
    assert v["mouth_aaa"] > 0.8 and v["mouth_iii"] > 0.3 and v["mouth_ooo"] == 0.0


def test_noise_gate_keeps_low_noise_closed(tmp_path):
    noise = 0.003 * np.random.default_rng(1).standard_normal(2 * RATE)  # about -50 dBFS
    sync = LipSync(write_wav(tmp_path / "noise.wav", noise))
    assert max(sync.level_at(t)["mouth_aaa"] for t in np.arange(0, 2, 0.02)) == 0.0
    # with 20 dB of gain the same noise passes the gate
    loud = LipSync(tmp_path / "noise.wav", LipSyncSettings(gain_db=20.0))
    assert max(loud.level_at(t)["mouth_aaa"] for t in np.arange(0, 2, 0.02)) > 0.1


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(PuppetError, match="not found"):
        LipSync(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF1234WAVEnot really")
    with pytest.raises(PuppetError, match="PCM WAV"):
        LipSync(bad)
    with pytest.raises(PuppetError):
        LipSync(write_wav(tmp_path / "ok.wav", burst())).current()


def test_microphone_without_a_device_gives_one_clear_error():
    """Hardware boundary: only checkable where no input device exists."""
    try:
        import sounddevice as sd

        sd.query_devices(kind="input")
        pytest.skip("this machine has an audio input device; the mic path needs a human")
    except Exception:
        pass
    sync = LipSync("mic")
    with pytest.raises(PuppetError, match="microphone"):
        sync.start()
