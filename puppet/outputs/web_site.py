"""``puppet export-web``: a static web site that puppets a character in the visitor's browser,
with no install and no server code: any static file host (or ``python -m http.server``) serves
it.

The page (``web/site.html`` + ``web/site.js``) opens the camera, tracks the face with
mediapipe's JavaScript face landmarker (vendored from puppet's download cache, see
``puppet.mediapipe_web``: no CDN at run time), maps it to the 45 pose parameters with
``web/mapping.js`` (the Python mapping's arithmetic; its numbers come from
:func:`mapping_constants`) and renders the student with ``web/student_renderer.js`` in WebGL2,
on a transparent background.

What the folder holds::

    index.html  site.js  mapping.js  mapping.json  student_renderer.js
    student.json  student.bin                       (puppet.outputs.web_student)
    mediapipe/  vision_bundle.mjs  wasm/  face_landmarker.task  package.json  LICENSE  NOTICE
    puppet-site.json                                (what made it; lets a re-export replace it)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from puppet.atomic import os_error, temp_dir
from puppet.errors import PuppetError
from puppet.mapping.converters import VOWEL_BASIS, VOWEL_L1, MapperSettings, mirror_pose
from puppet.mapping.idle import MIN_BLINK_INTERVAL_S, IdleSettings
from puppet.mapping.smoothing import CATEGORY_DEFAULTS, D_CUTOFF
from puppet.mediapipe_web import FILES, PACKAGE, VERSION, cached_tasks_vision, fetch_tasks_vision
from puppet.paths import DEFAULT_STUDENT_DIR, FACE_LANDMARKER, MEDIAPIPE_DIR
from puppet.pose import NUM_PARAMETERS, PARAMETERS, PoseVector

SITE_FORMAT = "puppet-web-site/1"
MARKER = "puppet-site.json"
_PAGE_FILES = {  # site name -> file in puppet/outputs/web/
    "index.html": "site.html",
    "site.js": "site.js",
    "mapping.js": "mapping.js",
    "student_renderer.js": "student_renderer.js",
}


@dataclass(frozen=True)
class WebSite:
    """What :func:`export_web_site` wrote: the folder and its files (relative paths)."""

    folder: Path
    files: tuple[str, ...]
    bytes: int


def mapping_constants() -> dict:
    """The numbers ``mapping.js`` needs, from the Python definitions (``mapping.json``): the
    parameter table, the converter's default thresholds, the One Euro defaults per category,
    the idle settings and the vowel basis."""
    mirrored_ones = mirror_pose(PoseVector(np.ones(NUM_PARAMETERS))).values
    return {
        "parameters": [
            {"name": p.name, "category": p.category, "lower": p.lower, "upper": p.upper}
            for p in PARAMETERS
        ],
        "mapper": asdict(MapperSettings()),
        "filter": {
            "categories": {k: [v.min_cutoff, v.beta] for k, v in CATEGORY_DEFAULTS.items()},
            "d_cutoff": D_CUTOFF,
        },
        "idle": asdict(IdleSettings()),
        "min_blink_interval_s": MIN_BLINK_INTERVAL_S,
        "vowel_basis": VOWEL_BASIS.tolist(),
        "vowel_l1": VOWEL_L1,
        "mirror_negated": [p.name for p in PARAMETERS if mirrored_ones[p.index] < 0],
    }


def page_file(name: str) -> bytes:
    """A file of the page as shipped in the package (``puppet/outputs/web/NAME``)."""
    return resources.files("puppet.outputs").joinpath(f"web/{name}").read_bytes()


def export_web_site(
    student: Path | str,
    out_dir: Path | str,
    *,
    fetch: bool = False,
    tarball: Path | None = None,
) -> WebSite:
    """Write the static site for ``student`` into ``out_dir``.

    ``student``: a student folder (``student:DIR`` too), or ``"default"`` for the bundled
    character's student.
    ``out_dir`` must be new, empty, or an earlier export (which is replaced whole, in one
    rename, once the new site is complete). ``fetch`` (or a ``tarball``) first puts the
    vendored mediapipe package in the download cache (``fetch_tasks_vision``); without it the
    cache must hold it already. Raises PuppetError before writing anything when the package is
    not cached, the student is missing or damaged, or ``out_dir`` holds other files.
    """
    from puppet.outputs.web_student import export_web_student

    out_dir = Path(out_dir).expanduser()
    vendor = fetch_tasks_vision(tarball) if fetch or tarball else cached_tasks_vision()
    _check_out_dir(out_dir)
    spec = str(student).removeprefix("student:")  # as --poser student:DIR names one
    packed = export_web_student(DEFAULT_STUDENT_DIR if spec == "default" else spec)
    files: dict[str, bytes | Path] = {
        site_name: page_file(name) for site_name, name in _PAGE_FILES.items()
    }
    files["mapping.json"] = json.dumps(mapping_constants(), indent=1).encode()
    files["student.json"] = packed.manifest
    files["student.bin"] = packed.weights
    for name in FILES:
        files[f"mediapipe/{name}"] = vendor / name
    files["mediapipe/face_landmarker.task"] = FACE_LANDMARKER
    files["mediapipe/LICENSE"] = MEDIAPIPE_DIR / "LICENSE"
    files["mediapipe/NOTICE"] = MEDIAPIPE_DIR / "NOTICE"
    files[MARKER] = json.dumps(
        {
            "format": SITE_FORMAT,
            "student": str(packed.folder),
            "mediapipe": f"{PACKAGE}@{VERSION}",
            "note": "Made by `puppet export-web`; serve this folder with any static web server.",
        },
        indent=1,
    ).encode()
    _write_folder(out_dir, files)
    total = sum((out_dir / name).stat().st_size for name in files)
    return WebSite(out_dir, tuple(sorted(files)), total)


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise PuppetError(
            f"{out_dir} is a file, not a folder.", "Give a new or empty folder for the site."
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise PuppetError(
            f"{out_dir} is not empty and is not an earlier `puppet export-web` site.",
            "Give a new or empty folder (export-web replaces the whole folder).",
        )
    if not out_dir.parent.is_dir():
        raise PuppetError(
            f"Cannot write the site into {out_dir}: the folder {out_dir.parent} does not exist.",
            "Create it first or choose another path.",
        )


def _write_folder(out_dir: Path, files: dict[str, bytes | Path]) -> None:
    """Build the site next to ``out_dir``, then swap it in (an interrupted export leaves the
    earlier site, or nothing, never half a site)."""
    staging = temp_dir(out_dir)
    try:
        for name, content in files.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, target)
            else:
                target.write_bytes(content)
        old = None
        if out_dir.exists():
            old = temp_dir(out_dir)
            os.rmdir(old)
            os.replace(out_dir, old)
        os.replace(staging, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as error:
        raise os_error(error, out_dir) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
