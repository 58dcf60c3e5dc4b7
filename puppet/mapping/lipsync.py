"""Lip sync from audio level: microphone (sounddevice) or a WAV file (stdlib ``wave``).

Per ~20 ms window: RMS level in dBFS -> gain -> noise gate / range mapping to 0..1 ->
attack/release smoothing -> ``mouth_aaa``.  A rough vowel estimate from the spectral centroid
of the same window biases towards ``mouth_iii`` (bright, high centroid) or ``mouth_ooo``
(dark, low centroid).  The pose mapper combines these with the tracked mouth by max.
"""

from __future__ import annotations

import math
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from puppet.errors import PuppetError


@dataclass
class LipSyncSettings:
    window_s: float = 0.02
    gain_db: float = 0.0  # added to the measured level
    gate_db: float = -45.0  # levels at or below this keep the mouth closed (noise gate)
    full_db: float = -15.0  # levels at or above this open the mouth fully
    attack_s: float = 0.03  # opening time constant
    release_s: float = 0.12  # closing time constant
    vowels: bool = True
    vowel_strength: float = 0.6  # how much of the opening goes to iii / ooo at most


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float samples in [-1, 1] and the sample rate."""
    if not path.is_file():
        raise PuppetError(
            f"Lip-sync audio file not found: {path}.", "Give the path of a .wav file."
        )
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            low, high = SAMPLE_RATES
            if not low <= rate <= high or not channels >= 1:
                raise PuppetError(
                    f"{path} declares {rate} Hz and {channels} channel(s); lip sync reads "
                    f"{low}-{high} Hz with at least one channel.",
                    "Convert it, e.g. `ffmpeg -i IN -ac 1 -ar 48000 -c:a pcm_s16le OUT.wav`.",
                )
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, RuntimeError, OSError, ValueError) as e:
        raise PuppetError(
            f"Cannot read {path} as a PCM WAV file ({e}).",
            "Convert it to 16-bit PCM, e.g. `ffmpeg -i IN -ac 1 -c:a pcm_s16le OUT.wav`.",
        ) from None
    if width == 1:
        data = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        data = v.astype(np.float32) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:  # pragma: no cover - wave only produces 1-4 byte samples
        raise PuppetError(f"Unsupported sample width {width} in {path}.", "Use 16-bit PCM.")
    if channels > 1:
        data = data[: len(data) // channels * channels].reshape(-1, channels).mean(axis=1)
    window = int(round(LipSyncSettings.window_s * rate))
    if len(data) < max(window, 1):
        raise PuppetError(
            f"{path} holds no audio ({len(data)} samples; lip sync needs at least "
            f"{LipSyncSettings.window_s * 1000:g} ms).",
            "Use a WAV file with sound in it.",
        )
    return data, rate


SAMPLE_RATES = (1000, 384000)  # Hz a WAV may declare


class _Envelope:
    """The per-window processing, shared by the file and the microphone paths."""

    def __init__(self, settings: LipSyncSettings, rate: int) -> None:
        self.s = settings
        self.rate = rate
        self.window = max(1, int(round(settings.window_s * rate)))
        self.dt = self.window / rate
        self.open = 0.0
        self.bias = 0.0  # -1 dark (ooo) .. +1 bright (iii)
        self._hann = np.hanning(self.window)
        self._freqs = np.fft.rfftfreq(self.window, 1.0 / rate)

    def _coef(self, tau: float) -> float:
        return 1.0 - math.exp(-self.dt / tau) if tau > 0 else 1.0

    def step(self, samples: np.ndarray) -> dict[str, float]:
        s = self.s
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
        db = 20.0 * math.log10(max(rms, 1e-10)) + s.gain_db
        if db <= s.gate_db:
            target = 0.0
        else:
            target = min(1.0, (db - s.gate_db) / max(s.full_db - s.gate_db, 1e-6))
        tau = s.attack_s if target > self.open else s.release_s
        self.open += self._coef(tau) * (target - self.open)
        if target == 0.0 and self.open < 0.02:  # end the exponential tail: the mouth closes
            self.open = 0.0
        out = {"mouth_aaa": self.open}
        if s.vowels:
            if target > 0 and samples.size == self.window:
                spectrum = np.abs(np.fft.rfft(samples * self._hann))
                power = spectrum * spectrum
                centroid = float((power * self._freqs).sum() / max(power.sum(), 1e-20))
                # bright (> 2 kHz) towards iii, dark (< 1 kHz) towards ooo
                raw = min(1.0, max(0.0, (centroid - 2000.0) / 1500.0)) - min(
                    1.0, max(0.0, (1000.0 - centroid) / 500.0)
                )
                self.bias += self._coef(0.08) * (raw - self.bias)
            strength = s.vowel_strength * self.open
            out["mouth_iii"] = strength * max(self.bias, 0.0)
            out["mouth_ooo"] = strength * max(-self.bias, 0.0)
        return out


class LipSync:
    """Mouth values from audio.  ``LipSync("mic")`` or ``LipSync("speech.wav")``.

    File: ``level_at(t)`` gives the values of the window containing t seconds from the start
    of the file (zeros outside it).  Microphone: ``start()`` opens the input stream,
    ``current()`` gives the latest values, ``close()`` stops it.  ``values(t)`` works for both
    (the pose mapper calls it with seconds since its first frame)."""

    def __init__(
        self,
        source: str | Path,
        settings: LipSyncSettings | None = None,
        *,
        device: int | str | None = None,
    ) -> None:
        self.settings = settings or LipSyncSettings()
        self.source = str(source)
        self.is_mic = self.source == "mic"
        self._lock = threading.Lock()
        self._stream = None
        self._current: dict[str, float] = {"mouth_aaa": 0.0}
        if self.is_mic:
            self._device = device
            self._rate = 0
            return
        samples, rate = _read_wav(Path(source))
        env = _Envelope(self.settings, rate)
        n = len(samples) // env.window
        tracks: dict[str, list[float]] = {}
        for k in range(n):
            for name, value in env.step(samples[k * env.window : (k + 1) * env.window]).items():
                tracks.setdefault(name, []).append(value)
        self._tracks = {k: np.asarray(v, dtype=np.float32) for k, v in tracks.items()}
        self._dt = env.dt
        self.duration_s = n * env.dt

    # ---------------------------------------------------------------- file
    def level_at(self, t_seconds: float) -> dict[str, float]:
        if self.is_mic:
            raise PuppetError("level_at() needs a WAV file source.", "Use current() for the mic.")
        k = int(math.floor(t_seconds / self._dt)) if t_seconds >= 0 else -1
        if k < 0 or k >= len(self._tracks["mouth_aaa"]):
            return {name: 0.0 for name in self._tracks}
        return {name: float(track[k]) for name, track in self._tracks.items()}

    # ---------------------------------------------------------------- microphone
    def start(self) -> LipSync:
        if not self.is_mic or self._stream is not None:
            return self
        try:
            import sounddevice as sd

            info = sd.query_devices(self._device, kind="input")
            rate = int(info["default_samplerate"]) or 48000
            env = _Envelope(self.settings, rate)

            def callback(indata, frames, time_info, status) -> None:  # noqa: ARG001
                values = env.step(np.asarray(indata, dtype=np.float32).mean(axis=1))
                with self._lock:
                    self._current = values

            stream = sd.InputStream(
                device=self._device,
                channels=1,
                samplerate=rate,
                blocksize=env.window,
                dtype="float32",
                callback=callback,
            )
            stream.start()
        except Exception as e:  # PortAudioError, OSError (no PortAudio), ValueError (no device)
            raise PuppetError(
                f"Cannot open a microphone for lip sync ({e}).",
                "Connect a microphone and allow microphone access (Linux: install PortAudio "
                "with `sudo apt install libportaudio2` and check `arecord -l`; macOS: System "
                "Settings > Privacy & Security > Microphone; Windows: Settings > Privacy > "
                "Microphone), or use `--lipsync FILE.wav`.",
            ) from None
        self._stream = stream
        self._rate = rate
        return self

    def current(self) -> dict[str, float]:
        if not self.is_mic:
            raise PuppetError("current() is for the microphone.", "Use level_at(t) for a file.")
        with self._lock:
            return dict(self._current)

    def values(self, t_seconds: float) -> dict[str, float]:
        return self.current() if self.is_mic else self.level_at(t_seconds)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None

    def __enter__(self) -> LipSync:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
