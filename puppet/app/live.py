"""The live loop and offline rendering: source -> tracking -> mapping -> poser -> outputs.

``run_live`` drives the outputs in real time from a camera, a video file or a pose track;
``render`` turns a pose track or a face video into a file, one output frame per input frame.

The live loop runs its stages at the same time on three threads (mediapipe, OpenCV and numpy
release the GIL): tracking + mapping of frame N+1, the poser on frame N, and the outputs (the
caller's thread, where the preview window lives) on frame N-1. Each stage hands its newest
result to the next through a one-slot ``Handoff``: nothing queues up, nothing goes out of
order, and a slow stage simply works on the newest frame. Every frame carries its capture time,
so the capture-to-output latency is measured (p50/p95 in the HUD, the end line and ``bench``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poser_models.registry import Poser, create_poser
from poser_models.student import StudentPoser
from puppet.app.handoff import Closed, Handoff
from puppet.app.threads import opencv_threads, single_threaded_blas
from puppet.app.timing import LatencyMeter, RateMeter, StageStats, StageTimer
from puppet.capture.sources import FrameSource, FreshFramePicker, LiveSource, parse_source
from puppet.device import check_device
from puppet.errors import PuppetError
from puppet.interrupts import DeferredInterrupt, stop_on_sigint
from puppet.outputs.base import FrameInfo, LiveControls, Output, PacingStats
from puppet.outputs.factory import OutputSet, open_output, open_outputs
from puppet.paths import DEFAULT_STUDENT_DIR, models_dir
from puppet.pose import PoseVector
from puppet.pose_track import PoseTrackWriter, SessionRecorder, TrackReader, count_track_frames
from puppet.students import choose_poser, fallback_warning, measure_seconds_per_frame

log = logging.getLogger(__name__)


# OpenCV threads inside the live loop. The poser's remaps would otherwise split each frame over
# both cores while tracking holds one of them: measured with `puppet bench` on 2 cores, one
# thread took the loop from 42-43 to 46-47 fps, its CPU per frame from 39-43 to 30-33 ms and
# the 30 fps camera's capture->output p50/p95 from 43-50/46-53 to 31-33/39-40 ms.
LOOP_OPENCV_THREADS = 1
# Threads of a student poser inside the loop (``StudentPoser.threads``: its frame in two row
# bands at once). While tracking waits (for the camera, or for the poser: ``overlap_ms``) the
# poser has the second core: measured with `puppet bench` on 2 cores, 3 runs each, against one
# thread, a 30 fps camera into the 30 fps paced output went from p50/p95 36-43/45-60 ms to
# 28-30/33-37 ms.
LOOP_POSER_THREADS = 2
# The most of tracking that is hidden behind the poser by default (``LiveConfig.overlap``,
# ``overlap_ms``).
OVERLAP_TRACKING_SHARE = 0.5


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
    browser_render: str = "server"  # "client": the page renders the student (WebGL2)
    loop: bool = False  # replay a video-file source from its start when it ends
    # The share of tracking that may run while the poser works when the stages in turn cannot
    # keep up with ``fps`` (``overlap_ms``): 0 keeps them in turn (least latency), 1 hides all
    # of tracking (most frames a second on a busy CPU, a few ms later).
    overlap: float = OVERLAP_TRACKING_SHARE


@dataclass
class RunReport:
    frames: int
    seconds: float
    fps: float
    stages: dict[str, StageStats]
    outputs: list[str]
    dropped_outputs: list[str]
    latency_ms: tuple[float, float] | None = None  # capture -> output (p50, p95)
    pacing: dict[str, PacingStats] = field(default_factory=dict)  # paced outputs, live files
    stale_dropped: int = 0  # camera frames/poses a newer one replaced (the loop was slower)
    # Where a frame waited between stages (ms): "poser" (tracked -> poser started), "outputs"
    # (posed -> outputs started). With the stage times they add up to the latency.
    waits: dict[str, StageStats] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps)"]
        if self.latency_ms is not None:
            p50, p95 = self.latency_ms
            parts.append(f"latency p50 {p50:.0f} ms, p95 {p95:.0f} ms")
        stage_text = ", ".join(f"{k} {v.mean_ms:.1f} ms" for k, v in self.stages.items())
        if stage_text:
            parts.append(stage_text)
        if self.stale_dropped:
            parts.append(f"{self.stale_dropped} stale camera frames dropped")
        for name, stats in self.pacing.items():
            parts.append(f"{name}: {stats.text()}")
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Building blocks


def is_track(source: str | Path) -> bool:
    return str(source).endswith(".jsonl")


def load_poser(spec: str, character: Path | None, device: str) -> Poser:
    """The poser for ``spec``, loaded with ``character``.

    ``default`` is the character's own student: the bundled one for the bundled character,
    the one ``puppet distill`` stored for any other, else THA3 with one warning saying how
    fast it runs and how to train the student (``puppet.students.choose_poser``).
    """
    choice = choose_poser(
        spec, character, default_student=DEFAULT_STUDENT_DIR, models_root=models_dir()
    )
    if choice.spec.startswith("tha"):  # THA3 / THA4 run on ``device``; the student is CPU-only
        check_device(device)
    poser = create_poser(
        choice.spec,
        character,
        device,
        default_student=DEFAULT_STUDENT_DIR,
        models_dir=models_dir(),
    )
    if choice.fallback is not None and character is not None:
        seconds = measure_seconds_per_frame(poser)
        log.warning(fallback_warning(character, choice.fallback, seconds))
    return poser


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


@dataclass
class _Posed:
    """A pose on its way from the tracking stage to the poser and the outputs."""

    t: float  # seconds since the loop started: the capture time (the track time for tracks)
    pose: PoseVector
    captured_at: float  # time.perf_counter() of the capture (when a track line was due)
    tracking: str = "off"
    camera_frame: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    mirrored: bool = False
    tracked_at: float = 0.0  # perf_counter() when tracking + mapping were done
    posing_at: float = 0.0  # ... when the poser started on it
    posed_at: float = 0.0  # ... when the poser finished


class _Stages:
    """The live loop's worker threads: a producer (tracking + mapping of camera frames, or the
    track player) and the poser, each handing its newest result to the next stage through a
    one-slot ``Handoff``; the caller's thread runs the outputs.

    Tracking frame N+1 may overlap the poser's work on frame N. The producer starts tracking
    only once the poser has taken the previous pose, and then only so late that its pose is
    ready when the poser is, less the overlap the output rate needs (``_just_in_time``,
    ``overlap_ms``): tracking further ahead would give the poser an older face and take the
    core it needs. A worker's exception stops the loop and is re-raised by
    ``join``.
    """

    STALL_S = 0.25  # a connected camera silent this long counts as a lost face

    def __init__(
        self,
        config: LiveConfig,
        *,
        poser: Poser,
        first_image: np.ndarray,
        timer: StageTimer,
        controls: LiveControls,
        start: float,
        source: LiveSource | None,
        face_to_pose: FaceToPose | None,
        player: _TrackPlayer | None,
        needs_frames: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config = config
        self.needs_frames = needs_frames
        self.poser = poser
        self.last_image = first_image
        self.timer = timer
        self.controls = controls
        self.start = start
        self.source = source
        self.face_to_pose = face_to_pose
        self.player = player
        lossless = player is not None  # every line of a track reaches the outputs
        self.poses: Handoff[_Posed] = Handoff(lossless=lossless)
        self.frames: Handoff[tuple[np.ndarray, _Posed]] = Handoff(lossless=lossless)
        self.halt = threading.Event()
        self.errors: list[BaseException] = []
        self._joined = False
        self._poser_ms = 0.0
        self._tracking_ms = 0.0
        self.fresh = FreshFramePicker()
        self._threads = [
            threading.Thread(target=self._guard, args=(self._produce,), name="puppet-tracking"),
            threading.Thread(target=self._guard, args=(self._pose,), name="puppet-poser"),
        ]

    @property
    def stale_dropped(self) -> int:
        """Camera frames, poses and images replaced by newer ones (never queued)."""
        source = getattr(self.source, "dropped", 0)
        return source + self.fresh.skipped + self.poses.dropped + self.frames.dropped

    def begin(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        """Stop the workers and wait for them; re-raise the first worker error (once)."""
        if self._joined:
            return
        self._joined = True
        self.halt.set()
        self.poses.close()
        self.frames.close()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(timeout=10.0)
        if self.errors:
            raise self.errors[0]

    def _guard(self, work: Callable[[], None]) -> None:
        try:
            work()
        except Closed:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the loop's thread by join()
            self.errors.append(error)
            self.halt.set()
        finally:
            # Downstream sees the end (a finished file or track, or an error).
            if work == self._produce:
                self.poses.close()
            else:
                self.frames.close()

    def _put(self, handoff: Handoff, item: object) -> None:
        while not handoff.put(item, timeout=0.1):  # lossless: wait, but not past a stop
            if self.halt.is_set():
                raise Closed

    # -- producer ----------------------------------------------------------------------------
    def _produce(self) -> None:
        if self.player is not None:
            self._play_track()
        else:
            self._track_camera()

    def _play_track(self) -> None:
        player, config = self.player, self.config
        assert player is not None
        offset = player.start_time
        while not self.halt.is_set() and not player.finished:
            with self.timer.stage("track"):
                track_t, pose = player.next_pose()
            # Pace to the track's own timing (a track may start later than t=0).
            delay = self.start + track_t - offset - time.perf_counter()
            if config.seconds is not None:  # never wait past the end of the session
                delay = min(delay, self.start + config.seconds - time.perf_counter())
            if delay > 0 and self.halt.wait(delay):
                return
            self.controls.take()  # tracks have nothing to recalibrate; quit is an event
            now = time.perf_counter()
            self._put(self.poses, _Posed(now - self.start, pose, now, tracked_at=now))

    def _just_in_time(self) -> None:
        """Wait for the poser to take the last pose, then until tracking a new frame now
        would have its pose ready when the poser finishes its current frame, less the overlap
        the output rate needs (``overlap_ms``)."""
        while not self.poses.wait_empty(0.1):
            if self.halt.is_set():
                raise Closed
        ms = self.timer.last_ms
        # Smoothed stage times: one slow frame must not shift the schedule.
        self._poser_ms += 0.1 * (ms.get("poser", 0.0) - self._poser_ms)
        self._tracking_ms += 0.1 * (ms.get("tracking", 0.0) - self._tracking_ms)
        overlap = overlap_ms(
            self._tracking_ms, self._poser_ms, self.config.fps, self.config.overlap
        )
        ready = self.poses.taken_at + (self._poser_ms - overlap) / 1000.0
        delay = ready - time.perf_counter()
        if delay > 0:
            self.halt.wait(min(delay, 0.1))

    def _track_camera(self) -> None:
        source, face_to_pose, config = self.source, self.face_to_pose, self.config
        assert source is not None and face_to_pose is not None
        source.start()  # a video file plays from its first frame now that the loop is ready
        period = 1.0 / config.fps
        last_frame = time.perf_counter()
        while not self.halt.is_set():
            self._just_in_time()
            with self.timer.stage("capture"):
                captured = source.read(timeout=period)
            for action in self.controls.take():
                face_to_pose.handle(action)
            now = time.perf_counter()
            if captured is None:
                if source.is_file and source.finished:
                    return
                if source.connected and now - last_frame < self.STALL_S:
                    continue  # no new frame yet
                # Camera gone or stalled: keep animating (face lost), at the output rate.
                with self.timer.stage("mapping"):
                    pose = face_to_pose.mapper.update(None, now - self.start)
                item = _Posed(now - self.start, pose, now, face_to_pose.state)
            else:
                captured = self.fresh.pick(source, captured)
                last_frame = now
                t = max(captured.captured_at - self.start, 0.0)
                pose = face_to_pose(captured.image, t)
                observation = face_to_pose.last_observation
                item = _Posed(
                    t,
                    pose,
                    captured.captured_at,
                    face_to_pose.state,
                    camera_frame=captured.image,
                    landmarks=getattr(observation, "landmarks", None),
                    mirrored=bool(getattr(observation, "mirrored", False)),
                )
            item.tracked_at = time.perf_counter()
            self._put(self.poses, item)

    # -- poser -------------------------------------------------------------------------------
    def _pose(self) -> None:
        failed = False
        while not self.halt.is_set():
            item = self.poses.take(timeout=0.1)
            if item is None:
                continue
            item.posing_at = time.perf_counter()
            if not self.needs_frames():
                # Every output draws the pose itself: the last image only keeps the
                # frame handoff's shape.
                item.posed_at = item.posing_at
                self._put(self.frames, (self.last_image, item))
                continue
            with self.timer.stage("poser"):
                try:
                    image = self.poser.pose(item.pose)
                except Exception as error:  # noqa: BLE001 - the stream must not go dark
                    if not failed:
                        log.warning("the poser failed (showing the last frame): %s", error)
                        failed = True
                    image = self.last_image
                else:
                    self.last_image = image
            item.posed_at = time.perf_counter()
            self._put(self.frames, (image, item))


@contextmanager
def _poser_threads(poser: StudentPoser, count: int) -> Iterator[None]:
    previous = poser.threads
    poser.threads = count
    try:
        yield
    finally:
        poser.threads = previous


def overlap_ms(
    tracking_ms: float, poser_ms: float, fps: float, share: float = OVERLAP_TRACKING_SHARE
) -> float:
    """How long tracking the next frame overlaps the poser's work on this one.

    Overlapped, the two stages slow each other down on 2 cores (both at once: tracking 16-20
    and the poser 19-20 ms a frame; one after the other: 12-14 and 12-13), so overlap buys
    frames per second at the cost of latency. The stages overlap only as far as ``fps`` (the
    outputs' rate) needs: not at all when tracking and posing one after the other keep up,
    and at most by ``share`` of tracking (by default half): the longer the two stages run
    together, the slower both are. From a 60 fps camera (`benchmarks/bench_live.py
    --overlap-share 0.5 1`, 4 runs each) hiding all of tracking instead of half cost 5-13 ms
    at p95 (quiet VM: 52-61 ms against 38-49; busy: 53-59 against 48-59) for 0-6 more frames
    a second (42-49 against 40-49 fps; busy: 41-44 against 35-40)."""
    period = 1000.0 / fps
    return min(max(tracking_ms + poser_ms - period, 0.0), tracking_ms * share)


def _poll_interactive(outputs: OutputSet) -> None:
    """Keep windows responsive (events, hotkeys) while no new frame comes."""
    for output in outputs.outputs:
        poll = getattr(output, "poll", None)
        if poll is not None:
            poll()


def run_live(
    config: LiveConfig,
    *,
    stop: threading.Event | None = None,
    on_frame: Callable[[np.ndarray, FrameInfo], None] | None = None,
    source: LiveSource | None = None,
    extra_outputs: Sequence[Output] = (),
    poser: Poser | None = None,
) -> RunReport:
    """Run until Ctrl+C, the end of a file/track, ``frames``/``seconds``, or a quit hotkey.

    ``source`` replaces ``config.source`` with a ready source (``puppet bench``'s synthetic
    camera); ``extra_outputs`` are added to the outputs as they are (tests, the benchmark's
    latency probe); ``poser`` is a loaded poser to use instead of ``config.poser``.
    ``on_frame`` is called on the outputs' thread after each frame went out.
    """
    if not 0.0 <= config.overlap <= 1.0:  # also refuses NaN
        raise PuppetError(
            f"The overlap must be between 0 and 1, got {config.overlap!r}.",
            "Use --overlap 0 (stages in turn, least latency) up to 1 (all of tracking hidden).",
        )
    stop = stop or threading.Event()
    controls = LiveControls()
    timer = StageTimer()
    rate = RateMeter()
    latency = LatencyMeter()
    waits = StageTimer()
    index = 0
    start = time.perf_counter()
    player: _TrackPlayer | None = None
    stages: _Stages | None = None
    with ExitStack() as stack:
        # The stages are parallel already; BLAS and OpenCV threads would fight them for the
        # cores.
        stack.enter_context(single_threaded_blas())
        stack.enter_context(opencv_threads(LOOP_OPENCV_THREADS))
        # Cheap checks first: a bad source or track fails before the poser loads.
        face_to_pose: FaceToPose | None = None
        if source is not None:
            stack.callback(source.close)
        elif is_track(config.source):
            player = _TrackPlayer(Path(config.source))
        else:
            # Opened now (a bad file fails early), read once the loop is ready.
            source = FrameSource(parse_source(config.source), start=False, loop=config.loop)
            stack.callback(source.close)
        if poser is None:
            poser = load_poser(config.poser, config.character, config.device)
            close = getattr(poser, "close", None)
            if callable(close):
                stack.callback(close)  # the run's own poser: its band threads end with it
        if isinstance(poser, StudentPoser):
            stack.enter_context(_poser_threads(poser, LOOP_POSER_THREADS))
        first_image = poser.pose(PoseVector())  # also what is shown if a pose ever fails
        height, width = first_image.shape[:2]
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
        # Live: the virtual camera and browser are paced on their own threads and files are
        # encoded on theirs; camera-driven files are stamped by the wall clock (real speed).
        if config.outputs:
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
                    browser_render=config.browser_render,
                    browser_student=poser.folder if isinstance(poser, StudentPoser) else None,
                    live=True,
                    lossless=player is not None,
                    wall_clock=player is None,
                )
            )
        else:
            outputs = stack.enter_context(OutputSet())
        for output in extra_outputs:
            outputs.add(output)
        names = [output.name for output in outputs.outputs]
        recorder = None
        if config.record is not None:
            # Whatever ends the session, the frames recorded so far are kept.
            recorder = SessionRecorder(config.record, fps)
            stack.callback(recorder.close)
        stack.enter_context(stop_on_sigint(stop))

        log.info("live: %s -> %s", config.source, ", ".join(names) or "no outputs")
        start = time.perf_counter()
        stages = _Stages(
            config, poser=poser, first_image=first_image, timer=timer, controls=controls,
            start=start, source=source, face_to_pose=face_to_pose, player=player,
            needs_frames=lambda: on_frame is not None or outputs.needs_frames(),
        )  # fmt: skip
        # Unwinding stops the workers first, before the tracker, source and files close.
        stack.callback(stages.join)
        stages.begin()
        last_sent = time.perf_counter()
        while not stop.is_set() and not controls.stop_requested.is_set():
            if config.frames is not None and index >= config.frames:
                break
            if config.seconds is not None and time.perf_counter() - start >= config.seconds:
                break
            try:
                got = stages.frames.take(timeout=0.05)
            except Closed:
                break  # the file or track ended, or a worker failed (join raises it)
            if got is None:
                if time.perf_counter() - last_sent > 0.1:
                    _poll_interactive(outputs)  # a slow poser must not freeze the window
                continue
            image, item = got
            now = time.perf_counter()
            waits.add("poser", (item.posing_at - item.tracked_at) * 1000.0)
            waits.add("outputs", (now - item.posed_at) * 1000.0)
            info = FrameInfo(
                index=index,
                t=item.t,
                fps=rate.tick(),
                stage_ms=dict(timer.last_ms),
                tracking=item.tracking,
                pose=item.pose,
                camera_frame=item.camera_frame,
                landmarks=item.landmarks,
                mirrored=item.mirrored,
                captured_at=item.captured_at,
                latency_ms=latency.percentiles(recent=90),
                pacing=outputs.pacing(),
            )
            with timer.stage("outputs"):
                outputs.send(image, info)
            last_sent = time.perf_counter()
            latency.add((last_sent - item.captured_at) * 1000.0)
            if recorder is not None:
                recorder.write(item.t, item.pose)
            if on_frame is not None:
                on_frame(image, info)
            index += 1
        stages.join()
        elapsed = time.perf_counter() - start
        # Counted again after the files are finished (their queues drained).
        counted = [o for o in outputs.outputs if hasattr(o, "stats")]
    pacing = {output.name: output.stats() for output in counted}  # type: ignore[attr-defined]
    if player is not None and player.error is not None:
        raise player.error  # a bad line ended the track; the outputs are finished
    return RunReport(
        frames=index,
        seconds=elapsed,
        fps=index / elapsed if elapsed > 0 else 0.0,
        stages=timer.stats(),
        outputs=names,
        dropped_outputs=list(outputs.failures),
        latency_ms=latency.percentiles(),
        pacing=pacing,
        stale_dropped=stages.stale_dropped if stages is not None else 0,
        waits=waits.stats(),
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


# One BLAS thread: OpenBLAS's second thread costs the student more than it gives (81-96
# against 33-38 CPU-ms a frame here; see puppet.app.threads).
@single_threaded_blas()
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
    interrupt = DeferredInterrupt()
    try:
        with interrupt.installed():
            return _render_frames(
                config, poser, fps, poses, count, audio_from, timer, interrupt, progress
            )
    finally:
        close_driver()


def _render_frames(
    config: RenderConfig,
    poser: Poser,
    fps: float,
    poses: Iterator[tuple[float, PoseVector]],
    count: int | None,
    audio_from: Path | None,
    timer: StageTimer,
    interrupt: DeferredInterrupt,
    progress: Callable[[int, int | None], None] | None,
) -> RunReport:
    start = time.perf_counter()
    index = 0
    first = next(poses, None)
    if first is None:
        raise PuppetError(f"{config.driver} has no frames.", "Use a non-empty driver.")
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
            interrupt.check()
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
        with (
            DeferredInterrupt().installed() as interrupt,
            PoseTrackWriter(track_path, fps, on_interrupt="partial") as writer,
        ):
            for t, pose in poses:
                writer.write(t, pose)
                interrupt.check()
                index += 1
                if progress is not None:
                    progress(index, count)
    finally:
        close()
    elapsed = time.perf_counter() - start
    return RunReport(
        index, elapsed, index / elapsed if elapsed else 0.0, timer.stats(), [str(track_path)], []
    )
