"""The live loop and offline rendering: source -> tracking -> mapping -> poser -> outputs.

``run_live`` drives the outputs in real time from a camera, a video file or a pose track;
``render`` turns a pose track or a face video into a file, one output frame per input frame.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poser_models.registry import Poser, create_poser
from puppet.app.timing import RateMeter, StageStats, StageTimer
from puppet.capture.sources import FrameSource, parse_source
from puppet.errors import PuppetError
from puppet.outputs.base import FrameInfo, LiveControls
from puppet.outputs.factory import open_output, open_outputs
from puppet.paths import DEFAULT_STUDENT_DIR, models_dir
from puppet.pose import PoseVector
from puppet.pose_track import PoseTrackWriter, SessionRecorder, TrackReader, count_track_frames

log = logging.getLogger(__name__)


@dataclass
class LiveConfig:
    """Everything `puppet live` needs. ``source``: camera index, video file or ``.jsonl`` track."""

    source: str = "0"
    poser: str = "default"
    character: Path | None = None
    outputs: list[str] = field(default_factory=lambda: ["window"])
    background: str | None = None
    profile: str | None = None
    tracker: str = "full"  # "full" (blendshapes) or "fast"
    mirror: bool = True
    frames: int | None = None  # stop after N frames
    seconds: float | None = None  # stop after S seconds
    record: Path | None = None  # write the pose track of the session
    lipsync: str | None = None  # "mic" or a WAV path
    idle_when_tracking: bool = False
    fps: float = 30.0  # output frame rate (frames are paced to it)
    device: str = "cpu"
    vcam_device: str | None = None
    browser_port: int | None = None


@dataclass
class RunReport:
    frames: int
    seconds: float
    fps: float
    stages: dict[str, StageStats]
    outputs: list[str]
    dropped_outputs: list[str]

    def summary(self) -> str:
        parts = [f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps)"]
        stage_text = ", ".join(f"{k} {v.mean_ms:.1f} ms" for k, v in self.stages.items())
        if stage_text:
            parts.append(stage_text)
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Building blocks


def is_track(source: str | Path) -> bool:
    return str(source).endswith(".jsonl")


def load_poser(spec: str, character: Path | None, device: str) -> Poser:
    """The poser for ``spec`` ("default" is the bundled student), loaded with ``character``."""
    return create_poser(
        spec, character, device, default_student=DEFAULT_STUDENT_DIR, models_dir=models_dir()
    )


class FaceToPose:
    """Tracking + mapping for camera/video sources (mediapipe tracker, calibrated mapper)."""

    def __init__(
        self,
        *,
        tracker: str,
        mirror: bool,
        profile: str | None,
        lipsync: str | None,
        idle_when_tracking: bool,
        timer: StageTimer,
    ) -> None:
        from puppet.mapping.calibration import load_profile
        from puppet.mapping.pose_mapper import PoseMapper
        from puppet.tracking.tracker import FaceTracker, TrackerOptions

        loaded_profile = load_profile(profile) if profile else None
        lip = None
        if lipsync:
            from puppet.mapping.lipsync import LipSync

            lip = LipSync(lipsync)
            if lip.is_mic:
                lip.start()
        self.mapper = PoseMapper(loaded_profile, idle_when_tracking=idle_when_tracking, lipsync=lip)
        # Selfie view: the preview is mirrored and the character moves like a reflection
        # (the user winks their left eye, the eye on the same side of the screen closes).
        self.mapper.mirror_character = mirror
        self.options = TrackerOptions(mode=tracker, mirror=mirror)
        self.tracker = FaceTracker(self.options)
        self.timer = timer
        self.lipsync = lip
        self.last_observation = None
        self._tracking_error_reported = False

    def __call__(self, image: np.ndarray, t: float) -> PoseVector:
        with self.timer.stage("tracking"):
            try:
                observation = self.tracker.detect(image, int(round(t * 1000)))
            except Exception as error:  # noqa: BLE001 - a bad frame must not end the stream
                if not self._tracking_error_reported:
                    log.warning("tracking failed on a frame (treated as no face): %s", error)
                    self._tracking_error_reported = True
                observation = None
        self.last_observation = observation
        with self.timer.stage("mapping"):
            return self.mapper.update(observation, t)

    def handle(self, action: str) -> None:
        if action == "recalibrate" and self.last_observation is not None:
            self.mapper.recalibrate_neutral(self.last_observation)
        elif action == "toggle_idle":
            self.mapper.toggle_idle()
        elif action == "toggle_mirror":
            self.tracker.close()
            from puppet.tracking.tracker import FaceTracker, TrackerOptions

            self.options = TrackerOptions(mode=self.options.mode, mirror=not self.options.mirror)
            self.tracker = FaceTracker(self.options)
            self.mapper.mirror_character = self.options.mirror
        elif action.startswith("expression:"):
            self.mapper.toggle_expression(action.split(":", 1)[1])

    @property
    def state(self) -> str:
        return self.mapper.state

    def close(self) -> None:
        self.tracker.close()
        if self.lipsync is not None:
            self.lipsync.close()


@contextmanager
def _stop_on_sigint(stop: threading.Event) -> Iterator[None]:
    """First Ctrl+C asks the loop to stop cleanly (files are finished); a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _TrackPlayer:
    """Plays a pose track: every line once, paced to the track's fps (never faster).

    A machine too slow for the track's rate plays it slower rather than skipping lines, so
    file outputs get every frame. The track is streamed (first frame at once, flat memory,
    whatever its length); a bad line ends the playback there, the outputs are finished, and
    ``error`` (raised after them) names the line.
    """

    def __init__(self, path: Path) -> None:
        self._reader = TrackReader(path)
        self.error: PuppetError | None = None
        self._next = next(self._reader, None)
        if self._next is None:
            raise PuppetError(f"Pose track {path} has no frames.", "Record or generate one.")
        self.fps = self._reader.fps
        self.start_time = self._next.t

    @property
    def finished(self) -> bool:
        return self._next is None

    def next_pose(self) -> tuple[float, PoseVector]:
        frame = self._next
        assert frame is not None
        try:
            self._next = next(self._reader, None)
        except PuppetError as error:
            self._next, self.error = None, error
        return frame.t, frame.pose

    def close(self) -> None:
        self._reader.close()


# ---------------------------------------------------------------------------------------------
# The live loop


def run_live(
    config: LiveConfig,
    *,
    stop: threading.Event | None = None,
    on_frame: Callable[[np.ndarray, FrameInfo], None] | None = None,
) -> RunReport:
    """Run until Ctrl+C, the end of a file/track, ``frames``/``seconds``, or a quit hotkey."""
    stop = stop or threading.Event()
    controls = LiveControls()
    timer = StageTimer()
    rate = RateMeter()
    with ExitStack() as stack:
        # Cheap checks first: a bad source or track fails before the poser loads.
        player: _TrackPlayer | None = None
        source: FrameSource | None = None
        face_to_pose: FaceToPose | None = None
        if is_track(config.source):
            player = _TrackPlayer(Path(config.source))
            stack.callback(player.close)
        else:
            source = stack.enter_context(FrameSource(parse_source(config.source)))
        poser = load_poser(config.poser, config.character, config.device)
        last_image = poser.pose(PoseVector())  # also what is shown if a pose ever fails
        poser_failed = False
        height, width = last_image.shape[:2]
        if source is not None:
            face_to_pose = FaceToPose(
                tracker=config.tracker,
                mirror=config.mirror,
                profile=config.profile,
                lipsync=config.lipsync,
                idle_when_tracking=config.idle_when_tracking,
                timer=timer,
            )
            stack.callback(face_to_pose.close)
        fps = player.fps if player is not None else config.fps
        # Failed outputs are reported once and dropped (a missing virtual camera is retried);
        # on an error every file is aborted, on a normal end or Ctrl+C they are finished.
        outputs = stack.enter_context(
            open_outputs(
                config.outputs,
                width=width,
                height=height,
                fps=fps,
                background=config.background,
                controls=controls,
                vcam_device=config.vcam_device,
                browser_port=config.browser_port,
            )
        )
        names = [output.name for output in outputs.outputs]
        recorder = None
        if config.record is not None:
            # Whatever ends the session, the frames recorded so far are kept.
            recorder = SessionRecorder(config.record, fps)
            stack.callback(recorder.close)
        stack.enter_context(_stop_on_sigint(stop))

        log.info("live: %s -> %s", config.source, ", ".join(names) or "no outputs")
        start = time.perf_counter()
        player_offset = player.start_time if player is not None else 0.0
        index = 0
        pose = PoseVector()
        while not stop.is_set() and not controls.stop_requested.is_set():
            if config.frames is not None and index >= config.frames:
                break
            t = time.perf_counter() - start
            if config.seconds is not None and t >= config.seconds:
                break
            camera_frame = None
            tracking_state = "off"
            if player is not None:
                if player.finished:
                    break
                with timer.stage("track"):
                    track_t, pose = player.next_pose()
                # Pace to the track's own timing (a track may start later than t=0).
                delay = start + track_t - player_offset - time.perf_counter()
                if config.seconds is not None:  # never wait past the end of the session
                    delay = min(delay, start + config.seconds - time.perf_counter())
                if delay > 0:
                    stop.wait(delay)
            else:
                assert source is not None and face_to_pose is not None
                with timer.stage("capture"):
                    captured = source.read(timeout=1.0 / config.fps)
                if captured is None:
                    if source.is_file and source.finished:
                        break
                    if source.connected:
                        continue  # no new frame yet
                    # Camera gone (unplugged, reconnecting): keep animating, face lost.
                    with timer.stage("mapping"):
                        pose = face_to_pose.mapper.update(None, t)
                else:
                    camera_frame = captured.image
                    pose = face_to_pose(camera_frame, t)
                tracking_state = face_to_pose.state
                for action in controls.take():
                    face_to_pose.handle(action)
            with timer.stage("poser"):
                try:
                    image = poser.pose(pose)
                except Exception as error:  # noqa: BLE001 - the stream must not go dark
                    if not poser_failed:
                        log.warning("the poser failed (showing the last frame): %s", error)
                        poser_failed = True
                    image = last_image
                else:
                    last_image = image
            info = FrameInfo(
                index=index,
                t=t,
                fps=rate.tick(),
                stage_ms=dict(timer.last_ms),
                tracking=tracking_state,
                pose=pose,
                camera_frame=camera_frame,
                landmarks=getattr(
                    getattr(face_to_pose, "last_observation", None), "landmarks", None
                ),
            )
            with timer.stage("outputs"):
                outputs.send(image, info)
            if recorder is not None:
                recorder.write(t, pose)
            if on_frame is not None:
                on_frame(image, info)
            index += 1
        elapsed = time.perf_counter() - start
    if player is not None and player.error is not None:
        raise player.error  # a bad line: the outputs hold everything before it
    return RunReport(
        frames=index,
        seconds=elapsed,
        fps=index / elapsed if elapsed > 0 else 0.0,
        stages=timer.stats(),
        outputs=names,
        dropped_outputs=list(outputs.failures),
    )


# ---------------------------------------------------------------------------------------------
# Offline rendering


@dataclass
class RenderConfig:
    driver: Path  # a pose track (.jsonl) or a face video
    output: str  # a file path (extension picks the format) or a directory ending in "/"
    poser: str = "default"
    character: Path | None = None
    background: str | None = None  # "transparent" or "#RRGGBB"
    profile: str | None = None
    tracker: str = "full"
    mirror: bool = True
    device: str = "cpu"
    copy_audio: bool = True


def _driver_poses(
    config: RenderConfig, timer: StageTimer
) -> tuple[float, int | None, Iterator[tuple[float, PoseVector]], Callable[[], None]]:
    """(fps, frame count or None, iterator of (t, pose), close)."""
    if is_track(config.driver):
        reader = TrackReader(config.driver)  # streamed: any length, flat memory
        frames = ((f.t, f.pose) for f in reader)
        return reader.fps, count_track_frames(config.driver), frames, reader.close
    source = FrameSource(parse_source(str(config.driver)), realtime=False)
    face_to_pose = FaceToPose(
        tracker=config.tracker,
        mirror=config.mirror,
        profile=config.profile,
        lipsync=None,
        idle_when_tracking=False,
        timer=timer,
    )

    def poses() -> Iterator[tuple[float, PoseVector]]:
        while True:
            captured = source.read(timeout=30.0)
            if captured is None:
                return
            yield captured.timestamp, face_to_pose(captured.image, captured.timestamp)

    def close() -> None:
        source.close()
        face_to_pose.close()

    return source.fps, source.frame_count, poses(), close


def render(
    config: RenderConfig, *, progress: Callable[[int, int | None], None] | None = None
) -> RunReport:
    """Render every driver frame to ``config.output``; the file appears only when complete.

    Stopped by Ctrl+C (or SIGTERM/SIGHUP), or by a bad line in the driver track, the frames
    rendered so far are kept as a valid ``NAME.partial.EXT`` (``puppet.atomic``) and an
    existing ``NAME.EXT`` is left as it was."""
    timer = StageTimer()
    driver = Path(config.driver)
    if not driver.is_file():
        raise PuppetError(f"Driver {driver} not found.", "Pass a pose track (.jsonl) or a video.")
    poser = load_poser(config.poser, config.character, config.device)
    fps, count, poses, close_driver = _driver_poses(config, timer)
    audio_from = driver if (config.copy_audio and not is_track(driver)) else None
    start = time.perf_counter()
    index = 0
    try:
        first = next(poses, None)
        if first is None:
            raise PuppetError(f"{driver} has no frames.", "Use a non-empty driver.")
        with timer.stage("poser"):
            image = poser.pose(first[1])
        height, width = image.shape[:2]
        output = open_output(
            config.output,
            width=width,
            height=height,
            fps=fps,
            background=config.background,
            audio_from=audio_from,
        )
        keep_partial = getattr(output, "keep_partial", output.close)
        driver_error: PuppetError | None = None
        try:
            t, pose = first
            while True:
                with timer.stage("outputs"):
                    output.send(image, FrameInfo(index=index, t=t, pose=pose))
                index += 1
                if progress is not None:
                    progress(index, count)
                try:
                    item = next(poses, None)
                except PuppetError as error:  # a bad driver line: keep the frames before it
                    driver_error = error
                    break
                if item is None:
                    break
                t, pose = item
                with timer.stage("poser"):
                    image = poser.pose(pose)
        except KeyboardInterrupt:
            keep_partial()
            raise
        except BaseException:
            abort = getattr(output, "abort", None)
            if abort is not None:
                abort()
            raise
        if driver_error is not None:
            keep_partial()
            raise driver_error
        output.close()
    finally:
        close_driver()
    elapsed = time.perf_counter() - start
    return RunReport(
        index, elapsed, index / elapsed if elapsed else 0.0, timer.stats(), [config.output], []
    )


def track_video(
    video: Path,
    track_path: Path,
    *,
    tracker: str = "full",
    mirror: bool = True,
    profile: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> RunReport:
    """Write the pose track of a face video (one line per video frame), atomically."""
    timer = StageTimer()
    config = RenderConfig(driver=video, output="", tracker=tracker, mirror=mirror, profile=profile)
    if not Path(video).is_file():
        raise PuppetError(f"Video {video} not found.", "Check the path.")
    fps, count, poses, close = _driver_poses(config, timer)
    start = time.perf_counter()
    index = 0
    try:
        # Ctrl+C keeps the lines so far as NAME.partial.jsonl; an existing NAME.jsonl stays.
        with PoseTrackWriter(track_path, fps, on_interrupt="partial") as writer:
            for t, pose in poses:
                writer.write(t, pose)
                index += 1
                if progress is not None:
                    progress(index, count)
    finally:
        close()
    elapsed = time.perf_counter() - start
    return RunReport(
        index, elapsed, index / elapsed if elapsed else 0.0, timer.stats(), [str(track_path)], []
    )
