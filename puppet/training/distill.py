"""``puppet distill``: train a CPU student poser (``poser_models/student.py``) from a teacher.

Teachers: ``rig`` / ``rig:NAME`` (the bundled character's code-drawn rig), ``tha3[:variant]``
(official THA3 weights, default variant ``separable_float``) and ``tha4-student:DIR``.

The run is a table of phases (:data:`PHASES`), each a function of the run; the run's state
(``OUT/checkpoints/state.json``) records the phases done and a checkpoint is written after
each, so an interrupted run (Ctrl+C, a crash, a time limit) resumes where it stopped:

1. ``probe`` (:mod:`.teacher_frames`): the face parts, found where each part's values change
   the teacher's un-rotated frame.
2. ``frames`` (:mod:`.teacher_frames`): teacher frames of the pose sets, cached.
3. ``init`` (:mod:`.initialisation`): warps fitted to the teacher (or taken from
   ``init_from``), per-part PCA bases and regressed part MLPs.
4. ``train`` (:mod:`.training`): everything end to end, within the time budget.
5. ``evaluate`` (:mod:`.evaluation`): the numpy runtime against the teacher on held-out
   random poses and on real tracked poses (``tracks``), the student written atomically.

The library prints nothing: it reports through ``progress(event, info)`` (events ``phase``,
``render``, ``init``, ``train``, ``log``); ``cli.py`` draws the bar.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from poser_models.image import load_character
from poser_models.student import (
    StudentManifest,
    StudentPoser,
    image_sha256,
    rgba_to_premultiplied_linear,
)
from poser_models.student_net import StudentNet, export
from puppet.atomic import atomic_write_bytes, os_error
from puppet.errors import PuppetError
from puppet.pose import PoseVector
from puppet.training import evaluation, initialisation, teacher_frames, training
from puppet.training.evaluation import (  # noqa: F401 - re-exported: the metric's home
    alpha_weighted_mse,
    alpha_weighted_psnr,
    alpha_weighted_ssim,
    flops_per_frame,
    metric_weight,
)
from puppet.training.teacher_frames import (  # noqa: F401 - re-exported for callers
    make_teacher,
    parse_teacher,
    render_frames,
    sample_poses,
)

Progress = Callable[[str, dict], None]


def _quiet(event: str, info: dict) -> None:
    del event, info


# ---------------------------------------------------------------------------------------------
# Qualities.


@dataclass(frozen=True)
class Quality:
    face_frames: int  # face-box crops of expression-only poses
    head_frames: int  # head rotation only (the warp fit; not rendered with init_from)
    body_frames: int
    joint_frames: int
    heldout_frames: int
    part_rank: int
    part_hidden: int
    pca_frames: int
    regress_steps: int  # each part's MLP onto its PCA coefficients
    train_steps: int  # end to end, warps fitted to the teacher
    refine_steps: int  # end to end, warps from an ``init_from`` student (already trained)
    batch: int
    crop: int
    minutes: float  # time budget of the whole run (rendering included)
    residual_rank: int = 16
    residual_hidden: int = 64
    layers: int = 3
    fourier: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    # The part MLPs' features with the ``tracked`` sampler (a slow teacher's few hundred or
    # thousand face crops): high frequencies there fit the crops and miss the poses between
    # them (lambda_00, 1,200 crops: 36.2 dB over the face box at (1, 2), 34.3 at up to 16;
    # an eye part from 1,100 crops, held out: 29.4 dB at (1,), 28.8 at (1, 2)).
    fourier_tracked: tuple[float, ...] = (1.0,)
    tracked_frames: int = 24  # evenly spaced poses per evaluation track
    checkpoint_every: int = 0  # steps between training checkpoints (besides once a minute)


QUALITIES: dict[str, Quality] = {
    "test": Quality(
        face_frames=200,
        head_frames=24,
        body_frames=24,
        joint_frames=40,
        heldout_frames=4,
        part_rank=12,
        part_hidden=32,
        pca_frames=200,
        regress_steps=200,
        train_steps=30,
        refine_steps=30,
        batch=2,
        crop=96,
        minutes=3.0,
        residual_rank=4,
        residual_hidden=16,
        fourier=(1.0, 2.0, 4.0, 8.0),
        tracked_frames=4,
        checkpoint_every=10,
    ),
    "fast": Quality(
        face_frames=4000,
        head_frames=300,
        body_frames=300,
        joint_frames=600,
        heldout_frames=24,
        part_rank=128,
        part_hidden=192,
        pca_frames=3000,
        regress_steps=6000,
        train_steps=2300,
        refine_steps=800,
        batch=6,
        crop=128,
        minutes=10.0,
    ),
    "default": Quality(
        face_frames=20000,
        head_frames=1000,
        body_frames=1000,
        joint_frames=2000,
        heldout_frames=64,
        part_rank=192,
        part_hidden=256,
        pca_frames=10000,
        regress_steps=12000,
        train_steps=6000,
        refine_steps=2500,
        batch=6,
        crop=128,
        minutes=30.0,
    ),
}

# Rendering gets at most this share of the time budget (the probe included): a slow teacher
# (THA3 on a CPU: 0.5-1.9 s a frame) renders fewer frames rather than overrun the budget.
RENDER_SHARE = 0.55
# The sets' sizes against the quality's with the ``tracked`` sampler (a slow teacher): the
# default mapping turns the body with the head, so joint frames (which also carry tracked
# expressions) teach more than body-only ones; the head warps are the weaker stage there.
# Face crops are 4-5x cheaper than frames and the part MLPs are short of them: an eye part
# regressed from 550 / 1,100 / 2,200 crops is 26.2 / 28.8 / 30.0 dB from held-out crops
# (lambda_00), so they get a larger share.
TRACKED_SET_SCALE = {"face": 1.5, "head": 1.0, "body": 0.5, "joint": 1.5, "heldout": 1.0}
# The fewest frames a set is cut to, whatever the budget.
MIN_FRAMES = {"face": 96, "head": 24, "body": 24, "joint": 48, "heldout": 8}

# Adam step size of the head/body flows (pixels): larger when they start from optical flow
# than when they start from a trained student and only follow the new face.
LR_WARP = {"fitted": 0.02, "refined": 0.004}


@dataclass
class DistillReport:
    """What a distillation measured (alpha-weighted PSNR in dB, see :mod:`.evaluation`)."""

    out_dir: Path
    teacher: str
    quality: str
    seed: int
    whole_psnr_db: float  # random held-out joint poses, pooled
    head_psnr_db: float  # the same frames, head box (rows 64-192, cols 192-320)
    whole_ssim: float
    head_ssim: float
    worst_frame: int  # index of the held-out frame with the lowest whole-frame PSNR
    worst_frame_psnr_db: float
    head_worst_frame: int
    head_worst_frame_psnr_db: float
    untrained_whole_psnr_db: float  # the character image unchanged, same frames
    untrained_head_psnr_db: float
    tracked: dict[str, dict] = field(default_factory=dict)  # per track: the same figures
    fps: float = 0.0  # poser-only, numpy/OpenCV runtime, this machine
    gflop_per_frame: float = 0.0
    heldout_frames: int = 0
    train_steps: int = 0
    wall_minutes: float = 0.0  # the whole run, rendering included, over all resumes
    weights_bytes: int = 0
    command: str = ""  # what reproduces this student from its seed
    extra: dict = field(default_factory=dict)

    # The names ``puppet distill`` printed before the head box was reported.
    @property
    def psnr_db(self) -> float:
        return self.whole_psnr_db

    @property
    def untrained_psnr_db(self) -> float:
        return self.untrained_whole_psnr_db

    def to_dict(self) -> dict:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DistillReport:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["out_dir"] = Path(values["out_dir"])
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# The run.


class Run:
    """One distillation: its inputs, state file, caches and checkpoints."""

    def __init__(
        self,
        character: Path,
        teacher: str,
        out_dir: Path,
        quality: str,
        seed: int,
        device: str,
        max_minutes: float | None,
        init_from: Path | None,
        tracks: Sequence[Path],
        progress: Progress,
    ) -> None:
        if quality not in QUALITIES:
            raise PuppetError(
                f"Unknown quality {quality!r}.", f"Use one of: {', '.join(QUALITIES)}."
            )
        self.character_path = Path(character)
        self.rgba = load_character(self.character_path)
        self.teacher_spec = parse_teacher(teacher)
        self.out_dir = Path(out_dir)
        self.checkpoints = self.out_dir / "checkpoints"
        self.quality_name = quality
        self.q = QUALITIES[quality]
        self.seed = seed
        self.device = device
        self.minutes = max_minutes if max_minutes is not None else self.q.minutes
        self.init_from = Path(init_from) if init_from is not None else None
        self.tracks = [Path(t) for t in tracks]
        for track in self.tracks:
            if not track.is_file():
                raise PuppetError(f"Pose track {track} not found.", "Make one with `puppet track`.")
        self.progress = progress
        self.state_path = self.checkpoints / "state.json"
        self.state: dict = {}
        self._teacher: teacher_frames.Teacher | None = None
        self._frames: teacher_frames.FrameSets | None = None
        self.faces: teacher_frames.ApproximateFaces | None = None  # made by the probe
        self.started = time.monotonic()

    # -- state ---------------------------------------------------------------------------------
    def key(self) -> dict:
        return {
            "teacher": self.teacher_spec,
            "quality": self.quality_name,
            "seed": self.seed,
            "character_sha256": image_sha256(self.rgba),
            "init_from": str(self.init_from.resolve()) if self.init_from else None,
        }

    def elapsed(self) -> float:
        return self.state.get("elapsed_s", 0.0) + time.monotonic() - self.started

    def save_state(self) -> None:
        self.state["elapsed_s"] = self.elapsed()
        self.started = time.monotonic()
        atomic_write_bytes(self.state_path, json.dumps(self.state, indent=1).encode())

    def load_state(self, resume: bool) -> None:
        key = self.key()
        if resume and self.state_path.is_file():
            try:
                state = json.loads(self.state_path.read_text())
            except (OSError, ValueError):
                state = {}
            if isinstance(state, dict) and all(state.get(k) == v for k, v in key.items()):
                self.state = state
                self.progress("log", {"text": f"resuming after {state.get('done') or 'nothing'}"})
                return
            self.progress("log", {"text": "checkpoints are from another run: starting over"})
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        for stale in ("init.safetensors", "train.safetensors", "rendered.json"):
            (self.checkpoints / stale).unlink(missing_ok=True)
        self.state = {**key, "done": [], "rendered": {}}
        self.save_state()

    # -- inputs --------------------------------------------------------------------------------
    def teacher(self) -> teacher_frames.Teacher:
        if self._teacher is None:
            self.progress("log", {"text": f"loading the teacher {self.teacher_spec}"})
            self._teacher = make_teacher(self.teacher_spec, self.character_path, self.device)
        return self._teacher

    def sizes(self) -> dict[str, int]:
        """Frames per set: the quality's, or fewer, so that rendering fits its share of the
        time budget at the teacher's measured speed (decided once, kept for resumes)."""
        if "sizes" in self.state:
            return dict(self.state["sizes"])
        q = self.q
        refine = self.init_from is not None  # the warps exist: no head/body frames to fit
        sizes = {
            "face": q.face_frames,
            "head": 0 if refine else q.head_frames,
            "body": 0 if refine else q.body_frames,
            "joint": q.joint_frames,
            "heldout": q.heldout_frames,
        }
        if self.sampler == "tracked":  # the body turns with the head: more joint frames
            sizes = {
                k: n and max(MIN_FRAMES[k], int(n * TRACKED_SET_SCALE[k])) for k, n in sizes.items()
            }
        seconds_per_frame = self.state.get("teacher_s_per_frame")
        if seconds_per_frame:
            costs = {k: seconds_per_frame for k in sizes}
            costs["face"] = self.state.get("face_s_per_frame", seconds_per_frame)
            wanted = sum(sizes.values())
            sizes = fit_render_budget(
                sizes, costs, RENDER_SHARE * 60.0 * self.minutes - self.elapsed()
            )
            if sum(sizes.values()) < wanted:
                self.progress(
                    "log",
                    {
                        "text": f"the teacher takes {seconds_per_frame:.2f} s a frame"
                        f" ({costs['face']:.2f} s a face crop): rendering"
                        f" {sum(sizes.values())} of the quality's {wanted} frames to fit"
                        f" the {self.minutes:g}-minute budget (give more with --max-minutes)"
                    },
                )
        self.state["sizes"] = sizes
        self.save_state()
        return dict(sizes)

    def frames(self) -> teacher_frames.FrameSets:
        if self._frames is None:
            self._frames = teacher_frames.render_sets(
                self.checkpoints,
                self.teacher,
                self.sizes(),
                self.seed,
                tuple(self.state["face_box"]),
                self.state["rendered"],
                self.save_state,
                self.progress,
                approximate_faces=self.approximate_faces,
                sampler=self.sampler,
                faces=self.faces,
            )
        return self._frames

    @property
    def sampler(self) -> str:
        """The expressions' pose sampler (``teacher_frames.SAMPLERS``), chosen by the probe."""
        return self.state.get("face_sampler", "broad")

    @property
    def neutral_path(self) -> Path:
        """The teacher's neutral frame (raw 512x512 RGBA uint8), for ``base.delta``."""
        return self.checkpoints / "neutral.u8"

    @property
    def approximate_faces(self) -> bool:
        """THA3's face crops are made from its face stages (``ApproximateFaces``)."""
        return self.teacher_spec.startswith("tha3:")

    def budget_fraction(self) -> float:
        """How much of the training time is spent: training ends half a minute (or 4 %)
        before the budget, less what the evaluation's teacher frames will take (THA3: 56
        frames, ~30 s, in ``fast``), and gets at least 30 % of the budget when rendering
        overran it. (A minute left the THA3 runs a minute short of their budget.)"""
        budget = 60.0 * self.minutes
        start = self.state.setdefault("train_start_s", self.elapsed())
        evaluation = self.q.heldout_frames + self.q.tracked_frames * len(self.tracks)
        reserve = max(30.0, 0.04 * budget) + evaluation * self.state.get("teacher_s_per_frame", 0)
        deadline = max(budget - reserve, start + 0.3 * budget)
        return (self.elapsed() - start) / max(deadline - start, 1.0)

    def command(self) -> str:
        parts = ["puppet", "distill", str(self.character_path)]
        parts += ["--teacher", self.teacher_spec, "--quality", self.quality_name]
        parts += ["--seed", str(self.seed), "--out", str(self.out_dir)]
        if self.init_from is not None:
            parts += ["--init-from", str(self.init_from)]
        if self.minutes != self.q.minutes:
            parts += ["--max-minutes", f"{self.minutes:g}"]
        for track in self.tracks:
            parts += ["--eval-track", str(track)]
        return shlex.join(parts)


# ---------------------------------------------------------------------------------------------
# Phases.


class _TimedTeacher:
    """Counts the teacher's frames and their time (the probe's frames price the rest)."""

    def __init__(self, teacher: teacher_frames.Teacher) -> None:
        self.teacher, self.frames, self.seconds = teacher, 0, 0.0

    def pose(self, pose: PoseVector):  # noqa: ANN201 - the teacher's RGBA frame
        start = time.perf_counter()
        frame = self.teacher.pose(pose)
        self.seconds += time.perf_counter() - start
        self.frames += 1
        return frame


def fit_render_budget(
    sizes: dict[str, int], seconds_per_frame: float | dict[str, float], seconds: float
) -> dict[str, int]:
    """``sizes`` scaled down alike so that their frames take at most ``seconds`` at
    ``seconds_per_frame`` (one figure, or one per set), each set keeping at least
    :data:`MIN_FRAMES` (or what it had)."""
    costs = (
        seconds_per_frame
        if isinstance(seconds_per_frame, dict)
        else dict.fromkeys(sizes, seconds_per_frame)
    )
    total = sum(n * costs[k] for k, n in sizes.items())
    if total == 0 or total <= seconds:
        return dict(sizes)
    factor = max(seconds, 0.0) / total
    return {k: min(n, max(MIN_FRAMES[k], int(n * factor))) for k, n in sizes.items()}


def _probe(run: Run) -> None:
    # The rig draws exactly; THA networks re-synthesise the whole face a little. A slow teacher
    # renders few frames: they are spent where a webcam drives the face (``tracked``).
    exact = run.teacher_spec.startswith("rig:")
    run.state["face_sampler"] = "broad" if exact else "tracked"
    timed = _TimedTeacher(run.teacher())
    neutral = teacher_frames.check_frame(timed.pose(PoseVector()))
    if run.approximate_faces:  # boxes from the face stages: the editor redraws everything
        parts, inputs = teacher_frames.find_parts(
            teacher_frames.FaceStages(run.teacher()), robust=True
        )
        timed = _TimedTeacher(run.teacher())  # not the first frame: it pays the warm-up
        for values in teacher_frames.sample_poses("joint", 3, seed=run.seed + 7):
            timed.pose(PoseVector(values))  # full frames, to price the other sets
    else:
        parts, inputs = teacher_frames.find_parts(timed, robust=not exact)
    run.state["teacher_s_per_frame"] = timed.seconds / max(timed.frames, 1)
    if run.approximate_faces:
        faces = teacher_frames.ApproximateFaces(
            run.teacher(), teacher_frames.union_box(parts), neutral
        )
        run.faces = faces  # the render phase goes on with it (its neutral frame is paid)
        probes = teacher_frames.sample_poses(
            "face", 2 * teacher_frames.EYEBROW_RUN, seed=run.seed + 7, sampler=run.sampler
        )
        start = time.perf_counter()  # the neutral frames above are paid once
        for values in probes:
            faces.crop(PoseVector(values))
        run.state["face_s_per_frame"] = (time.perf_counter() - start) / len(probes)
    run.state["parts"] = [list(b) for b in parts]
    run.state["part_inputs"] = [list(i) for i in inputs]
    run.state["face_box"] = list(teacher_frames.union_box(parts))
    run.state["neutral_psnr_db"] = alpha_weighted_psnr(
        rgba_to_premultiplied_linear(neutral), rgba_to_premultiplied_linear(run.rgba)
    )
    if not exact:  # the student starts from this frame (``base.delta``), not from the image
        atomic_write_bytes(run.neutral_path, np.ascontiguousarray(neutral).tobytes())
    run.state["base_delta"] = not exact
    run.progress(
        "log",
        {
            "text": f"face parts (top, left, height, width) {run.state['parts']}; teacher"
            f" neutral vs image {run.state['neutral_psnr_db']:.1f} dB"
        },
    )


def _frames(run: Run) -> None:
    run.frames()


def _initialise(run: Run) -> None:
    q = run.q
    torch.manual_seed(run.seed)
    report: dict = {}
    if run.init_from is not None:
        warp_config, warps = initialisation.warps_from_student(run.init_from)
        report["warps"] = f"from {run.init_from}"
    base_delta = run.state.get("base_delta", False)
    # What the flows move: the teacher's neutral frame where the student starts from it.
    reference = _read_neutral(run.neutral_path) if base_delta else run.rgba
    if run.init_from is None:
        warp_config, warps, report["warps"] = initialisation.warps_from_teacher(
            reference, run.frames(), q.layers, q.residual_rank, q.residual_hidden
        )
    net = initialisation.build_net(
        tuple(tuple(b) for b in run.state["parts"]),
        tuple(tuple(i) for i in run.state["part_inputs"]),
        q.part_rank,
        q.part_hidden,
        q.fourier if run.sampler == "broad" else q.fourier_tracked,
        {**warp_config, "base_delta": base_delta},
    )
    if base_delta:
        warps = {
            **warps,
            "base.delta": rgba_to_premultiplied_linear(reference)
            - rgba_to_premultiplied_linear(run.rgba),
        }
    initialisation.set_warps(net, warps)
    report["parts"] = initialisation.fit_parts(
        net, run.rgba, run.frames(), run.seed, q.pca_frames, q.regress_steps,
        progress=run.progress,
    )  # fmt: skip
    run.state["init_report"] = report
    training.save_checkpoint(run.checkpoints / "init.safetensors", net, None, 0)


def _read_neutral(path: Path) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise os_error(error, path, "read") from None
    if len(data) != 512 * 512 * 4:
        raise PuppetError(
            f"{path} is damaged ({len(data)} bytes).",
            "Start the distillation over (without --resume).",
        )
    return np.frombuffer(data, np.uint8).reshape(512, 512, 4)


def _train(run: Run) -> None:
    q = run.q
    checkpoint = run.checkpoints / "train.safetensors"
    net = None if checkpoint.is_file() else load_net(run.checkpoints / "init.safetensors")
    refined = run.init_from is not None
    net, steps = training.train(
        net if net is not None else load_net(checkpoint),
        run.rgba,
        run.frames(),
        steps=q.refine_steps if refined else q.train_steps,
        batch=q.batch,
        crop=q.crop,
        seed=run.seed,
        lr_warp=LR_WARP["refined" if refined else "fitted"],
        checkpoint=checkpoint,
        time_fraction=run.budget_fraction,
        checkpoint_every=q.checkpoint_every,
        progress=run.progress,
        on_checkpoint=lambda step: _saved_step(run, step),
    )
    run.state["train_steps"] = steps


def _saved_step(run: Run, step: int) -> None:
    run.state["train_steps"] = step
    run.save_state()


def _evaluate(run: Run) -> None:
    from safetensors.numpy import save

    from poser_models.student_net import export_arrays

    q = run.q
    net = load_net(run.checkpoints / "train.safetensors")
    manifest = StudentManifest(
        config=net.config,
        character_sha256=image_sha256(run.rgba),
        character_image=_relative_or_absolute(run.character_path, run.out_dir),
        teacher=run.teacher_spec,
        seed=run.seed,
    )
    poser = StudentPoser(export_arrays(net), manifest)
    poser.load(run.rgba)
    sets = run.frames()
    poses, images = sets["heldout"]
    random = evaluation.evaluate_student(poser, poses, images)
    still = evaluation.evaluate_still(run.rgba, poses, images)
    tracked, fps_poses = {}, list(poses)
    for track in run.tracks:
        track_poses = evaluation.tracked_poses(track, q.tracked_frames)
        if not len(track_poses):
            continue
        frames = render_frames(run.teacher(), track_poses)
        figures = evaluation.evaluate_student(poser, track_poses, frames)
        untrained = evaluation.evaluate_still(run.rgba, track_poses, frames)
        figures["untrained_head_psnr_db"] = untrained["head_psnr_db"]
        figures["untrained_whole_psnr_db"] = untrained["whole_psnr_db"]
        tracked[track.stem] = figures
        fps_poses = list(track_poses) if len(tracked) == 1 else fps_poses + list(track_poses)
    fps = evaluation.measure_fps(poser, fps_poses, seconds=0.5 if q.heldout_frames < 10 else 3.0)
    report = DistillReport(
        out_dir=run.out_dir,
        teacher=run.teacher_spec,
        quality=run.quality_name,
        seed=run.seed,
        whole_psnr_db=random["whole_psnr_db"],
        head_psnr_db=random["head_psnr_db"],
        whole_ssim=random["whole_ssim"],
        head_ssim=random["head_ssim"],
        worst_frame=random["whole_worst_frame"],
        worst_frame_psnr_db=random["whole_frame_min_db"],
        head_worst_frame=random["head_worst_frame"],
        head_worst_frame_psnr_db=random["head_frame_min_db"],
        untrained_whole_psnr_db=still["whole_psnr_db"],
        untrained_head_psnr_db=still["head_psnr_db"],
        tracked=tracked,
        fps=fps,
        gflop_per_frame=flops_per_frame(net.config) / 1e9,
        heldout_frames=len(poses),
        train_steps=int(run.state.get("train_steps", 0)),
        wall_minutes=run.elapsed() / 60.0,
        weights_bytes=len(save(export_arrays(net))),
        command=run.command(),
        extra={
            "neutral_psnr_db": run.state.get("neutral_psnr_db"),
            "init": run.state.get("init_report"),
            "torch_threads": torch.get_num_threads(),
            "metric": "alpha-weighted PSNR over premultiplied linear RGBA on [0,1]; see"
            " puppet.training.evaluation",
        },
    )
    metrics = report.to_dict()
    metrics.pop("out_dir")
    manifest.metrics = metrics
    export(net, manifest, run.out_dir)
    run.state["report"] = report.to_dict()


@dataclass(frozen=True)
class Phase:
    name: str
    run: Callable[[Run], None]
    what: str


PHASES: tuple[Phase, ...] = (
    Phase("probe", _probe, "find the face parts"),
    Phase("frames", _frames, "render teacher frames"),
    Phase("init", _initialise, "initialise"),
    Phase("train", _train, "train"),
    Phase("evaluate", _evaluate, "evaluate"),
)
PHASE_NAMES = tuple(p.name for p in PHASES)


def load_net(path: Path) -> StudentNet:
    return training.load_checkpoint(path)[0]


def _relative_or_absolute(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` (so the pair can move together), else absolute."""
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return str(path.resolve())


# ---------------------------------------------------------------------------------------------


def distill(
    character: Path,
    teacher: str,
    out_dir: Path,
    *,
    quality: str = "default",
    seed: int = 0,
    resume: bool = True,
    device: str = "cpu",
    max_minutes: float | None = None,
    init_from: Path | None = None,
    tracks: Sequence[Path] = (),
    progress: Progress | None = None,
    stop_after: str | None = None,
) -> DistillReport | None:
    """Distill a student for ``character`` from ``teacher`` into ``out_dir``.

    ``teacher``: ``rig`` / ``rig:NAME``, ``tha3[:variant]`` or ``tha4-student:DIR`` (posed on
    ``device``; the student trains on the CPU). ``quality``: a key of :data:`QUALITIES`
    (frame counts, steps and the time budget). ``max_minutes`` overrides the budget;
    training ends early to honour it. ``init_from``: a student of the same character whose
    warps, layers and residual are the starting point (then no head/body frames are
    rendered). ``tracks``: pose tracks (``puppet track`` output) whose poses the report
    also scores. With ``resume``, a run continues from ``out_dir/checkpoints``;
    ``stop_after`` ends the run after that phase (returns None). Writes
    ``out_dir/student.safetensors`` and ``out_dir/manifest.json`` atomically and returns the
    report (also stored in the manifest's ``metrics``).
    """
    progress = progress or _quiet
    if stop_after is not None and stop_after not in PHASE_NAMES:
        raise PuppetError(f"Unknown phase {stop_after!r}.", f"Use one of: {PHASE_NAMES}.")
    run = Run(
        Path(character), teacher, Path(out_dir), quality, seed, device, max_minutes,
        init_from, tracks, progress,
    )  # fmt: skip
    run.load_state(resume)
    for phase in PHASES:
        if phase.name not in run.state["done"]:
            progress("phase", {"name": phase.name, "what": phase.what})
            phase.run(run)
            run.state["done"].append(phase.name)
            run.save_state()
        if phase.name == stop_after:
            return None
    return DistillReport.from_dict(run.state["report"])
