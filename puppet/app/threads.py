"""One BLAS thread (and one OpenCV thread) while the live loop runs: its stages are already
parallel.

The live loop runs tracking and the poser on their own threads. OpenBLAS (numpy's BLAS) would
also split each matrix product of the student over every core, with worker threads that spin
while they wait: on 2 cores they fight the tracking thread for the second core. Measured on the
2-core machine under load, the default student took 81-96 CPU-ms a frame with OpenBLAS's 2
threads and 33-38 CPU-ms with one, at the same output.

``single_threaded_blas`` sets one thread for the duration and restores the previous count. It
uses threadpoolctl when it is installed (it knows MKL, BLIS, Accelerate...), else OpenBLAS's
own ``*_set_num_threads`` found in the libraries numpy loaded; when neither is there it does
nothing (the loop still works, just with more contention).
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

# OpenBLAS's entry points, by build: scipy-openblas (numpy's wheels, 64-bit ints), then plain.
_PREFIXES = ("scipy_openblas", "openblas")
_SUFFIXES = ("64_", "_64_", "")


def _openblas_paths() -> list[str]:
    """Files of the OpenBLAS libraries this process has loaded (numpy's among them)."""
    import numpy

    paths: set[str] = set()
    maps = Path("/proc/self/maps")
    if maps.is_file():
        for line in maps.read_text(errors="replace").splitlines():
            name = line.rsplit(" ", 1)[-1]
            if "openblas" in Path(name).name.lower():
                paths.add(name)
    else:  # Windows and macOS wheels keep it next to the package
        root = Path(numpy.__file__).resolve().parent
        for folder in (root.parent / "numpy.libs", root / ".dylibs", root / "_core"):
            if folder.is_dir():
                paths.update(str(p) for p in folder.iterdir() if "openblas" in p.name.lower())
    return sorted(paths)


def _openblas_controls() -> list[tuple[Callable[[], int], Callable[[int], object]]]:
    controls = []
    for path in _openblas_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in _PREFIXES:
            found = None
            for suffix in _SUFFIXES:
                getter = getattr(library, f"{prefix}_get_num_threads{suffix}", None)
                setter = getattr(library, f"{prefix}_set_num_threads{suffix}", None)
                if getter is not None and setter is not None:
                    found = (getter, setter)
                    break
            if found is not None:
                controls.append(found)
                break
    return controls


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS limited to one thread inside the ``with`` (see the module docstring)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
        return
    try:
        controls = _openblas_controls()
        previous = [int(getter()) for getter, _ in controls]
        for _, setter in controls:
            setter(1)
    except (OSError, AttributeError, ValueError) as error:  # an unusual build: leave it be
        log.debug("cannot limit BLAS threads on %s: %s", sys.platform, error)
        controls, previous = [], []
    try:
        yield
    finally:
        for (_, setter), count in zip(controls, previous, strict=True):
            setter(count)


@contextmanager
def opencv_threads(count: int) -> Iterator[None]:
    """OpenCV's thread pool limited to ``count`` inside the ``with``, restored after."""
    import cv2

    previous = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)
