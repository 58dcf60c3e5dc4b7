"""The one rule for every file puppet writes, and the helpers that implement it.

* A file is written under a **unique** temporary name in its target folder (``mkstemp`` /
  ``mkdtemp``: ``.NAME.XXXXXXXX.tmp``), fsynced, then renamed onto its final name with
  ``os.replace``. Two writers of the same target never share a temporary file, so the last one
  to finish wins with a complete file; a crash or a full disk never leaves a half-written file
  under the final name, and an existing complete file is replaced only by a complete one.
* A file interrupted by the user (Ctrl+C, SIGTERM, SIGHUP) where that is asked for
  (``on_interrupt = "partial"``: ``render``, ``track``) keeps what it finished, complete and
  valid, under a name **marked partial**: ``NAME.partial.EXT`` (``frames.partial/`` for a PNG
  folder), next to the target; the target itself, if it existed, is left as it was.
* The input is never the output (:func:`check_not_input`), and one process never writes the same
  target twice at once (:func:`claim`).
* Every OSError becomes one PuppetError naming the path, the reason and the fix
  (:func:`os_error`).

A temporary name left by ``kill -9`` starts with ``.`` and ends with ``.tmp``; the next write
of the same target removes those older than a day (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from puppet.errors import PuppetError

PARTIAL_MARK = ".partial"
TEMP_SUFFIX = ".tmp"
STALE_SECONDS = 24 * 3600  # a temporary older than this has no live writer left


# ------------------------------------------------------------------------------ errors

_REASONS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the disk is full", "Free some space on that disk or write somewhere else."),
    errno.EDQUOT: ("the disk quota is used up", "Free some space or write somewhere else."),
    errno.EFBIG: (
        "the file is larger than this file system or the file-size limit (ulimit -f) allows",
        "Write to another disk, or raise the limit.",
    ),
    errno.EROFS: ("the file system is read-only", "Write into a folder on a writable disk."),
    errno.EACCES: (
        "permission denied",
        "Choose a folder you can write to, or change its permissions.",
    ),
    errno.EPERM: ("operation not permitted", "Choose a folder you can write to."),
    errno.ENOENT: ("no such file or folder", "Check the path; create the folder first."),
    errno.ENOTDIR: ("a part of the path is not a folder", "Check the path."),
    errno.EISDIR: ("it is a folder", "Give a file name, not a folder."),
    errno.ENAMETOOLONG: ("the name is too long", "Use a shorter path."),
    errno.EIO: ("an input/output error (failing disk or unplugged drive)", "Check the disk."),
}


def os_error(error: OSError, path: Path | str | None = None, action: str = "write") -> PuppetError:
    """One line for an OSError: ``Cannot <action> <path>: <reason>. <fix>``."""
    target = path if path is not None else (error.filename or "the file")
    reason, fix = _REASONS.get(
        error.errno or -1, (error.strerror or str(error) or type(error).__name__, "Check the path.")
    )
    return PuppetError(f"Cannot {action} {target}: {reason}.", fix)


# ------------------------------------------------------------------------------ names


def _ordinary_mode(path: Path | str, *, folder: bool = False) -> None:
    # mkstemp/mkdtemp make 0600/0700; a user's video or track is an ordinary file.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if folder else 0o666) & ~umask)


def partial_path(path: Path | str) -> Path:
    """Where an interrupted write keeps its finished part: ``a.mp4`` -> ``a.partial.mp4``,
    ``frames`` -> ``frames.partial``, ``take.jsonl`` -> ``take.partial.jsonl``."""
    path = Path(path)
    return path.with_name(f"{path.stem}{PARTIAL_MARK}{path.suffix}")


def remove_stale_temporaries(path: Path | str, max_age_s: float = STALE_SECONDS) -> None:
    """Delete ``.NAME.*.tmp`` files/folders next to ``path`` older than ``max_age_s`` (left by a
    kill -9; a live writer touches its temporary far more often than that)."""
    path = Path(path)
    now = time.time()
    try:
        candidates = list(path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"))
    except OSError:
        return
    for candidate in candidates:
        try:
            if now - candidate.lstat().st_mtime < max_age_s:
                continue
            if candidate.is_dir() and not candidate.is_symlink():
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                candidate.unlink()
        except OSError:
            pass  # someone else's, or already gone


def temp_file(path: Path | str) -> Path:
    """A new, empty, uniquely named file next to ``path`` (same folder, so the final rename
    is atomic). Raises PuppetError (path, reason, fix) when the folder cannot take it."""
    path = Path(path)
    check_folder(path)
    remove_stale_temporaries(path)
    try:
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX
        )
        os.close(handle)
        _ordinary_mode(temporary)
    except OSError as error:
        raise os_error(error, path) from None
    return Path(temporary)


def temp_dir(path: Path | str) -> Path:
    """A new, empty, uniquely named folder next to ``path``."""
    path = Path(path)
    check_folder(path)
    remove_stale_temporaries(path)
    try:
        temporary = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        _ordinary_mode(temporary, folder=True)
    except OSError as error:
        raise os_error(error, path) from None
    return Path(temporary)


def check_folder(path: Path | str) -> None:
    """The folder that will hold ``path`` exists and is a folder (PuppetError otherwise)."""
    folder = Path(path).parent
    if not folder.is_dir():
        raise PuppetError(
            f"Cannot write {path}: the folder {folder} does not exist.",
            "Create it first or choose another path.",
        )


def fsync_folder(folder: Path | str) -> None:
    """Make a rename durable (best effort: some file systems cannot open a folder)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def fsync_file(path: Path | str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_tree(folder: Path | str) -> None:
    for child in Path(folder).iterdir():
        if child.is_file():
            fsync_file(child)
    fsync_folder(folder)


def publish(temporary: Path | str, path: Path | str) -> None:
    """Rename a finished temporary onto ``path`` and make the rename durable."""
    try:
        os.replace(temporary, path)
    except OSError as error:
        raise os_error(error, path) from None
    fsync_folder(Path(path).parent)


# ------------------------------------------------------------------------------ inputs


def same_file(a: Path | str, b: Path | str) -> bool:
    """True when ``a`` and ``b`` name the same file (links and ``..`` resolved), existing or not."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_not_input(output: Path | str, inputs: Iterable[Path | str | None]) -> None:
    """Refuse to write ``output`` over one of the ``inputs`` (``render face.mp4 face.mp4``)."""
    for source in inputs:
        if source is not None and str(source) and same_file(output, source):
            raise PuppetError(
                f"The output {output} is also an input of this run: it would be overwritten.",
                "Write to a new file name.",
            )


_claims: set[str] = set()
_claims_lock = threading.Lock()


def claim(path: Path | str) -> Callable[[], None]:
    """Reserve ``path`` as an output of this process; the returned function releases it.

    A second claim of the same file (``-o a.mp4 -o a.mp4``) raises PuppetError: two writers of
    one target in one run would each leave half a file."""
    key = os.path.realpath(Path(path).expanduser())
    with _claims_lock:
        if key in _claims:
            raise PuppetError(
                f"{path} is named twice as an output of this run.",
                "Give each output its own file name.",
            )
        _claims.add(key)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            with _claims_lock:
                _claims.discard(key)

    return release


# ------------------------------------------------------------------------------ writes


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` by the rule above; PuppetError (path and fix) on any OSError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise os_error(error, path) from None
    temporary = temp_file(path)
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        publish(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise os_error(error, path) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path | str) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks (weights can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FinishOrAbort:
    """Context-manager policy for writers with ``close()`` (finish: the file appears under its
    final name), ``abort()`` (discard the partial file) and ``keep_partial()`` (finish what was
    written under :func:`partial_path`, leaving the final name as it was).

    An error inside the ``with`` block aborts. A normal end finishes. Ctrl+C (and SIGTERM or
    SIGHUP, which the CLI turns into Ctrl+C) finishes when ``on_interrupt`` is ``"finish"`` (a
    live recording stopped by the user is the whole session) or keeps the finished part under
    the partial name when it is ``"partial"`` (a `render` or `track` cut short is not the file
    that was asked for, and must not replace a complete one)."""

    on_interrupt: str = "finish"

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def keep_partial(self) -> Path | None:
        """Finish under the partial name; the default for writers without one is to abort."""
        self.abort()
        return None

    def __enter__(self):  # noqa: ANN204 - returns the concrete writer
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        if exc_type is not None and issubclass(exc_type, Exception):
            self.abort()
        elif exc_type is not None and self.on_interrupt == "partial":
            self.keep_partial()
        else:
            self.close()
