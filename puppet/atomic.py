"""File helpers: atomic writes (a temp file in the same folder, fsynced, then ``os.replace``)
and streaming sha256 of a file.

A crash or a full disk never leaves a half-written file under the final name, and the file
gets ordinary permissions (mkstemp alone would make it 0600).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
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
    final name) and ``abort()`` (discard the partial file): an error inside the ``with`` block
    aborts; a normal end or Ctrl+C finishes, so a recording stopped by the user is kept."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):  # noqa: ANN204 - returns the concrete writer
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        if exc_type is not None and issubclass(exc_type, Exception):
            self.abort()
        else:
            self.close()
