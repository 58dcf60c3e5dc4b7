"""File outputs: video files through PyAV (FFmpeg) and directories of PNGs.

Formats, picked by the file extension:

========  ===========================  ==========================  ==========================
ext       codec                        pixels stored               alpha
========  ===========================  ==========================  ==========================
``.mp4``  H.264 (libx264, CRF 18)      yuv420p, BT.709 tv range    no: composited over the
                                                                   background (default chroma
                                                                   green #00FF00)
``.webm`` VP9 (libvpx-vp9, CRF 30)     yuva420p                    yes (``alpha_mode=1``)
``.mov``  ProRes 4444 (prores_ks)      yuva444p10le                yes
``.gif``  GIF, one 255-colour palette  pal8, index 255 transparent  1-bit: alpha >= 128 opaque
          per frame, no dithering
``dir/``  PNG (one file per frame)     RGBA 8-bit straight alpha   yes
========  ===========================  ==========================  ==========================

``background``: ``None``/``"transparent"`` keeps alpha in the formats that have it; for ``.mp4``
(no alpha) it means the default colour, chroma green, so the result can be keyed out in an
editor. A colour (``"#RRGGBB"`` or ``(r, g, b)``) is composited under every frame of every format,
which then carries no transparency. PNG directories always keep straight alpha.

Sizes: H.264 yuv420p needs even sizes; odd frames get one extra column/row that repeats the
edge pixels (the video is then 1 px larger than the frames). The other formats keep the size.

Timing: frame ``i`` has the timestamp ``i / fps`` exactly (a rational time base), so N frames
give a video of N frames at ``fps``.

Atomic writes (``puppet.atomic``'s rule): a video is encoded into a uniquely named temporary
``.NAME.EXT.XXXXXXXX.tmp`` in the target's folder and moved onto ``NAME.EXT`` with
``os.replace`` by ``close()`` after an fsync; a PNG sequence is written into a temporary folder
``.NAME.XXXXXXXX.tmp/`` and renamed onto ``NAME/``. A crash (or ``abort()``, or an exception
inside ``with``) leaves nothing under the final name, and two writers of one target never share
a temporary (the last to finish wins, complete). An existing video file is replaced; an existing
PNG directory is replaced only when it holds nothing but numbered PNGs. ``keep_partial()``
(`render` stopped by Ctrl+C) finishes what was written as a valid ``NAME.partial.EXT`` (or
``NAME.partial/``) and leaves ``NAME.EXT`` as it was. A target already being written by this
process, or one of the run's inputs (``audio_from``), is refused. Write errors (disk full,
read-only folder, permissions) raise one PuppetError naming the path and the fix.

Audio: with ``audio_from=DRIVER_VIDEO`` the first audio stream of that file is copied into the
video (``.mp4``/``.mov``/``.webm``): remuxed when the container accepts its codec, otherwise
re-encoded (AAC for mp4/mov, Opus for webm). Audio is interleaved as frames arrive and cut at the
end of the video. Audio timestamps are taken relative to the driver's video start, so the output
stays in sync when its frame ``i`` renders the driver's frame ``i``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from puppet.atomic import (
    TEMP_SUFFIX,
    FinishOrAbort,
    check_folder,
    check_not_input,
    claim,
    fsync_file,
    fsync_folder,
    os_error,
    partial_path,
    publish,
    temp_dir,
    temp_file,
)
from puppet.errors import PuppetError
from puppet.outputs.base import FrameInfo
from puppet.outputs.compose import (
    CHROMA_GREEN,
    Background,
    check_frame,
    flatten,
    is_transparent,
    parse_background_color,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Format:
    container: str
    codec: str
    pix_fmt: str  # with alpha kept
    opaque_pix_fmt: str  # when a background colour is composited in
    options: dict[str, str]
    audio_copy: frozenset[str]  # audio codecs the container takes as they are
    audio_encoder: str | None  # what other audio is re-encoded to


VIDEO_FORMATS: dict[str, _Format] = {
    ".mp4": _Format(
        "mp4", "libx264", "yuv420p", "yuv420p",
        {"crf": "18", "preset": "veryfast"},
        frozenset({"aac", "mp3", "alac", "opus"}), "aac",
    ),
    ".webm": _Format(
        "webm", "libvpx-vp9", "yuva420p", "yuv420p",
        # good quality, constant-quality mode; cpu-used 4 keeps it near real time on 2 cores
        {"crf": "30", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"},
        frozenset({"opus", "vorbis"}), "libopus",
    ),
    ".mov": _Format(
        "mov", "prores_ks", "yuva444p10le", "yuv444p10le",
        {"profile": "4444", "vendor": "apl0"},
        frozenset({"aac", "alac", "mp3", "pcm_s16le", "pcm_s24le", "pcm_f32le"}), "aac",
    ),
    ".gif": _Format("gif", "gif", "pal8", "pal8", {}, frozenset(), None),
}  # fmt: skip

SUPPORTED_EXTENSIONS = (*VIDEO_FORMATS, "/ (a directory of PNGs)")


def fps_fraction(fps: float) -> Fraction:
    """fps as an exact rational: integers stay integers, NTSC rates become n*1000/1001."""
    if not fps > 0:
        raise PuppetError(f"Frame rate {fps} is not positive.", "Use e.g. --fps 30.")
    if abs(fps - round(fps)) < 1e-6:
        return Fraction(round(fps))
    ntsc = round(fps * 1.001)
    if abs(ntsc * 1000 / 1001 - fps) < 1e-4:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(fps).limit_denominator(1000)


def quantize_for_gif(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Straight RGBA -> (indices uint8 (H,W), palette uint8 (256,4) as A,R,G,B rows).

    Pixels with alpha < 128 use index 255 (fully transparent palette entry); the others are
    quantised to at most 255 colours (octree, no dithering, so static areas stay static).
    """
    from PIL import Image

    opaque = rgba[..., 3] >= 128
    rgb = np.ascontiguousarray(rgba[..., :3])
    if not opaque.all():
        rgb = rgb.copy()
        # Transparent pixels take an existing colour so they do not use palette entries.
        rgb[~opaque] = rgb[opaque][0] if opaque.any() else 0
    image = Image.fromarray(rgb, "RGB").quantize(
        colors=255, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
    )
    indices = np.asarray(image, dtype=np.uint8).copy()
    colours = np.asarray(image.getpalette() or [], dtype=np.uint8).reshape(-1, 3)[:255]
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[: len(colours), 0] = 255
    palette[: len(colours), 1:] = colours
    indices[~opaque] = 255  # palette[255] is (0, 0, 0, 0)
    return indices, palette


class _AudioCopy:
    """Copies the first audio stream of a source file into an output container, in step with
    the video (``advance``), remuxing or re-encoding as the container requires."""

    def __init__(self, source: Path, container, fmt: _Format) -> None:  # noqa: ANN001
        import av

        try:
            self._input = av.open(str(source))
        except (av.FFmpegError, OSError) as error:
            raise PuppetError(
                f"Cannot read the audio of {source}: {error}.", "Check the driver video file."
            ) from error
        self.present = bool(self._input.streams.audio)
        if not self.present:
            self._input.close()
            return
        self._in_stream = self._input.streams.audio[0]
        # The driver's video start is time 0 of the output.
        video = self._input.streams.video
        if video and video[0].start_time is not None:
            self._t0 = float(video[0].start_time * video[0].time_base)
        elif self._input.start_time is not None:
            self._t0 = self._input.start_time / 1_000_000
        else:
            self._t0 = 0.0
        self._container = container
        codec_name = self._in_stream.codec_context.name
        self._remux = codec_name in fmt.audio_copy
        if self._remux:
            self._out = container.add_stream_from_template(self._in_stream)
        else:
            encoder = fmt.audio_encoder or "aac"
            in_rate = self._in_stream.codec_context.sample_rate or 48000
            rate = 48000 if encoder == "libopus" else in_rate
            layout = "mono" if self._in_stream.codec_context.channels == 1 else "stereo"
            self._out = container.add_stream(encoder, rate=rate, layout=layout)
            self._out.time_base = Fraction(1, rate)
            self._resampler = None
            self._samples = 0
        self._packets: Iterator = self._input.demux(self._in_stream)
        self._pending = None  # a packet read ahead that belongs after the current cut
        self._done = False

    def _tick_seconds(self, packet) -> float | None:  # noqa: ANN001
        if packet.pts is None:
            return None
        return float(packet.pts * packet.time_base) - self._t0

    def advance(self, until: float) -> None:
        """Write the source's audio packets that start before ``until`` seconds."""
        while not self._done:
            packet = self._pending
            self._pending = None
            if packet is None:
                try:
                    packet = next(self._packets)
                except StopIteration:
                    self._done = True
                    break
                if packet.size == 0:  # demux's final flush packet
                    continue
            start = self._tick_seconds(packet)
            if start is not None and start >= until:
                self._pending = packet
                break
            self._write(packet)

    def _write(self, packet) -> None:  # noqa: ANN001
        if self._remux:
            shift = round(self._t0 / packet.time_base)
            if packet.pts is not None:
                packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = self._out
            self._container.mux(packet)
            return
        for frame in packet.decode():
            self._encode(frame)

    def _encode(self, frame) -> None:  # noqa: ANN001
        import av

        if self._resampler is None:
            ctx = self._out.codec_context
            self._resampler = av.AudioResampler(
                format=ctx.format.name, layout=ctx.layout.name, rate=ctx.sample_rate,
                frame_size=ctx.frame_size or None,
            )  # fmt: skip
        frames = (
            self._resampler.resample(frame)
            if frame is not None
            else (self._resampler.resample(None))
        )
        for out in frames:
            out.pts = self._samples
            out.time_base = self._out.time_base
            self._samples += out.samples
            self._container.mux(self._out.encode(out))

    def finish(self, end: float) -> None:
        """Copy the rest up to ``end`` seconds (the video's length), then flush."""
        self.advance(end)
        if not self._remux:
            if self._resampler is not None:
                self._encode(None)
            self._container.mux(self._out.encode(None))
        self.close()

    def close(self) -> None:
        self._done = True
        self._input.close()


class VideoFileOutput(FinishOrAbort):
    """A video file (.mp4 / .webm / .mov / .gif), written atomically; see the module docstring.

    The size is taken from the first frame; later frames must have the same size.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float,
        background: Background = None,
        audio_from: Path | None = None,
    ) -> None:
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in VIDEO_FORMATS:
            raise PuppetError(
                f"Cannot write {self.path.name!r}: unknown video extension {ext or '(none)'}.",
                f"Use one of {', '.join(SUPPORTED_EXTENSIONS)}.",
            )
        self.name = str(self.path)
        self._format = VIDEO_FORMATS[ext]
        self._rate = fps_fraction(fps)
        if is_transparent(background) and self._format.pix_fmt != "yuv420p":
            self._background: tuple[int, int, int] | None = None
        else:
            self._background = parse_background_color(background, CHROMA_GREEN)
        self._audio_from = Path(audio_from) if audio_from is not None else None
        if self._audio_from is not None and not self._audio_from.is_file():
            raise PuppetError(
                f"Audio source {self._audio_from} does not exist.", "Give the driver video's path."
            )
        if self.path.is_dir():
            raise PuppetError(f"{self.path} is a folder.", "Give a video file name.")
        check_folder(self.path)
        check_not_input(self.path, [self._audio_from])
        self._release = claim(self.path)
        self._partial: Path | None = None  # the temporary, created with the first frame
        self._container = None
        self._stream = None
        self._audio: _AudioCopy | None = None
        self._size: tuple[int, int] | None = None  # frame (width, height)
        self.frames_written = 0
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------
    def _open(self, width: int, height: int) -> None:
        import av

        fmt = self._format
        self._size = (width, height)
        self._pix_fmt = fmt.pix_fmt if self._background is None else fmt.opaque_pix_fmt
        enc_w, enc_h = width, height
        if self._pix_fmt == "yuv420p":
            enc_w += width % 2
            enc_h += height % 2
        self._partial = temp_file(self.path)
        try:
            container = av.open(
                str(self._partial), mode="w", format=fmt.container,
                options={"movflags": "+faststart"} if fmt.container == "mp4" else None,
            )  # fmt: skip
        except (av.FFmpegError, OSError) as error:
            self._partial.unlink(missing_ok=True)
            raise self._error(error) from None
        self._container = container
        try:
            stream = container.add_stream(fmt.codec, rate=self._rate)
            stream.width, stream.height = enc_w, enc_h
            stream.pix_fmt = self._pix_fmt
            stream.time_base = 1 / self._rate
            stream.codec_context.time_base = 1 / self._rate
            if fmt.codec != "gif":
                ctx = stream.codec_context
                ctx.colorspace, ctx.color_primaries, ctx.color_trc = 1, 1, 1  # BT.709
                ctx.color_range = 1  # tv/limited
            stream.options = dict(fmt.options)
            self._stream = stream
            if self._audio_from is not None and fmt.audio_encoder is not None:
                audio = _AudioCopy(self._audio_from, container, fmt)
                self._audio = audio if audio.present else None
                if not audio.present:
                    log.info("%s has no audio stream; writing video only", self._audio_from)
            elif self._audio_from is not None:
                log.warning("%s cannot carry audio; writing video only", self.path.name)
        except BaseException:
            self._discard()
            raise

    def _to_video_frame(self, frame: np.ndarray):  # noqa: ANN202
        import av

        fmt = self._format
        if self._background is not None:
            rgb = flatten(frame, self._background)
            if fmt.codec == "gif":
                return av.VideoFrame.from_ndarray(
                    quantize_for_gif(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])),
                    format="pal8",
                )
            image, src = rgb, "rgb24"
        else:
            if fmt.codec == "gif":
                return av.VideoFrame.from_ndarray(quantize_for_gif(frame), format="pal8")
            image, src = frame, "rgba"
        stream = self._stream
        if (image.shape[1], image.shape[0]) != (stream.width, stream.height):
            pad_y, pad_x = stream.height - image.shape[0], stream.width - image.shape[1]
            image = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=src)
        return video_frame.reformat(
            format=self._pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG",
            dst_color_trc=1, dst_color_primaries=1,
        )  # fmt: skip

    def send(self, frame: np.ndarray, info: FrameInfo | None = None) -> None:
        """Encode one straight-RGBA frame (H, W, 4) uint8."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        check_frame(frame, self._size)
        if self._container is None:
            self._open(frame.shape[1], frame.shape[0])
        try:
            video_frame = self._to_video_frame(frame)
            video_frame.pts = self.frames_written
            video_frame.time_base = self._stream.codec_context.time_base
            self._container.mux(self._stream.encode(video_frame))
            self.frames_written += 1
            if self._audio is not None:
                self._audio.advance(self.frames_written / self._rate)
        except Exception as error:  # noqa: BLE001 - av.FFmpegError or OSError: one line
            raise self._error(error) from None

    def _error(self, error: Exception) -> PuppetError:
        if isinstance(error, PuppetError):
            return error
        if isinstance(error, OSError) and error.errno:
            return os_error(error, self.path)
        return PuppetError(
            f"Cannot write {self.path}: {error}.", "Check free disk space and the folder."
        )

    def _finish(self, target: Path) -> bool:
        """Flush the encoder, close the container and move the file onto ``target``; False
        when no frame was sent (nothing is written)."""
        if self._closed:
            return False
        self._closed = True
        if self._container is None:
            self._release()
            return False
        try:
            self._container.mux(self._stream.encode(None))
            if self._audio is not None:
                self._audio.finish(float(self.frames_written / self._rate))
                self._audio = None
            self._container.close()
            self._container = None
            assert self._partial is not None
            fsync_file(self._partial)
            publish(self._partial, target)
            self._partial = None
        except Exception as error:  # noqa: BLE001 - one line, the temporary removed
            self._discard()
            raise self._error(error) from None
        except BaseException:
            self._discard()
            raise
        finally:
            self._release()
        return True

    def close(self) -> None:
        """Finish the file and move it onto its final name (idempotent)."""
        if self._container is None and not self._closed:
            log.warning("no frames were sent to %s; nothing written", self.path)
        self._finish(self.path)

    def keep_partial(self) -> Path | None:
        """Finish the frames written so far as a valid ``NAME.partial.EXT``; ``NAME.EXT``
        keeps what it had. None when no frame was written."""
        target = partial_path(self.path)
        if not self._finish(target):
            return None
        log.warning("interrupted: kept the %d frames written as %s", self.frames_written, target)
        return target

    def abort(self) -> None:
        """Stop without keeping anything: the partial file is deleted (idempotent)."""
        self._closed = True
        self._discard()
        self._release()

    def _discard(self) -> None:
        if self._audio is not None:
            self._audio.close()
            self._audio = None
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away anyway
                pass
            self._container = None
        if self._partial is not None:
            self._partial.unlink(missing_ok=True)
            self._partial = None


_PNG_NAME = re.compile(r"^\d{6,}\.png$")


class PngDirectoryOutput(FinishOrAbort):
    """Frames as ``000000.png, 000001.png, ...`` (straight RGBA, 8 bit) in a directory.

    Written into a unique temporary folder next to the target and renamed onto ``NAME/`` by
    ``close()`` (after an fsync of every frame). An existing target is replaced only when it
    holds nothing but numbered PNGs (a previous render); anything else raises PuppetError
    rather than delete a user's files. PNG compression level 1: fast, still lossless.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory)
        if self.path.name in ("", ".", ".."):
            raise PuppetError(
                f"Cannot write PNG frames into {directory!r}.", "Name a new directory, e.g. out/."
            )
        self.name = f"{self.path}/"
        check_folder(self.path)
        _check_replaceable(self.path)
        self._release = claim(self.path)
        try:
            self._partial: Path | None = temp_dir(self.path)
        except BaseException:
            self._release()
            raise
        self._size: tuple[int, int] | None = None
        self.frames_written = 0
        self._closed = False

    def send(self, frame: np.ndarray, info: FrameInfo | None = None) -> None:
        """Write one straight-RGBA frame as the next numbered PNG."""
        import cv2

        if self._closed or self._partial is None:
            raise RuntimeError(f"{self.name} is closed")
        check_frame(frame, self._size)
        self._size = (frame.shape[1], frame.shape[0])
        ok, buffer = cv2.imencode(
            ".png", cv2.cvtColor(frame, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 1]
        )
        if not ok:
            raise PuppetError(f"Encoding frame {self.frames_written} as PNG failed.")
        target = self._partial / f"{self.frames_written:06d}.png"
        try:
            # Python's own write: a full disk or a read-only folder gives a real OSError.
            with open(target, "wb") as handle:
                handle.write(buffer.tobytes())
        except OSError as error:
            raise os_error(error, self.name) from None
        self.frames_written += 1

    def _finish(self, target: Path) -> bool:
        if self._closed or self._partial is None:
            return False
        self._closed = True
        partial, self._partial = self._partial, None
        old = None
        try:
            for child in partial.iterdir():
                fsync_file(child)
            fsync_folder(partial)
            if target.exists():
                _check_replaceable(target)
                old = target.with_name(f".{target.name}.old-{os.getpid()}{TEMP_SUFFIX}")
                os.replace(target, old)
            publish(partial, target)
        except OSError as error:
            shutil.rmtree(partial, ignore_errors=True)
            if old is not None and not target.exists():
                os.replace(old, target)  # put the previous render back
                old = None
            raise os_error(error, target) from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            self._release()
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return True

    def close(self) -> None:
        """Rename the finished directory onto its final name (idempotent)."""
        self._finish(self.path)

    def keep_partial(self) -> Path | None:
        """Keep the frames written so far as ``NAME.partial/``; ``NAME/`` keeps what it had."""
        target = partial_path(self.path)
        if not self._finish(target):
            return None
        log.warning("interrupted: kept the %d frames written in %s/", self.frames_written, target)
        return target

    def abort(self) -> None:
        """Stop and delete the frames written so far (idempotent)."""
        self._closed = True
        if self._partial is not None:
            shutil.rmtree(self._partial, ignore_errors=True)
            self._partial = None
        self._release()


def _check_replaceable(path: Path) -> None:
    """An existing PNG target may be replaced only when it is a previous render."""
    if not path.exists():
        return
    if not path.is_dir():
        raise PuppetError(f"{path} exists and is not a directory.", "Choose another output path.")
    try:
        foreign = [p.name for p in path.iterdir() if not _PNG_NAME.match(p.name)]
    except OSError as error:
        raise os_error(error, path, "read") from None
    if foreign:
        raise PuppetError(
            f"{path}/ already holds other files ({', '.join(sorted(foreign)[:3])}).",
            "Choose a new or empty directory.",
        )
