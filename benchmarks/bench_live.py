"""The real live loop (``run_live``: tracking, mapping, poser and outputs on their threads) from
a synthetic camera at several rates, with and without BLAS limited to one thread.

Each row is one run: the camera's rate, the loop's frames per second, capture-to-output latency
(p50/p95, measured on every frame from the camera's capture stamp to the moment the output took
it), the stale camera frames dropped (never queued), and the process's CPU time per frame. The
loop's CPU time is what it costs whatever else the machine runs; wall-clock figures depend on
the load, so run ``uptime`` next to it.

``--overlap-share`` runs each given share of tracking that may be hidden behind the poser
(``LiveConfig.overlap``, ``puppet live --overlap``; it matters only when the stages in turn cannot
keep up with ``--fps``), ``--rounds`` repeats the whole set, interleaved (the VM's load drifts).

Usage: python benchmarks/bench_live.py [--poser default] [--seconds 5] [--camera-fps 30 60]
       [--fps 30] [--blas single default] [--overlap-share 0.5 1] [--rounds 1]
       [--output FILE.mov ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import numpy as np

import puppet.app.live as live
from puppet.app.bench import LatencyProbe, bench_camera_frame
from puppet.app.live import LiveConfig, load_poser, run_live
from puppet.capture.sources import SyntheticCamera
from puppet.outputs.base import FrameInfo


def one_run(  # noqa: ANN001
    poser, args: argparse.Namespace, camera_fps: float, blas: str, share: float
) -> dict:
    if blas == "default":  # the loop without its one-thread BLAS limit, for comparison
        live.single_threaded_blas = contextlib.nullcontext
    probe = LatencyProbe()
    first_cpu: list[float] = []

    def count(image: np.ndarray, info: FrameInfo) -> None:
        if not first_cpu:
            first_cpu.append(time.process_time())

    config = LiveConfig(poser=args.poser, outputs=list(args.output), seconds=args.seconds,
                        fps=args.fps, tracker=args.tracker, overlap=share)  # fmt: skip
    try:
        report = run_live(config, source=SyntheticCamera(bench_camera_frame(), camera_fps),
                          extra_outputs=[probe], on_frame=count, poser=poser)  # fmt: skip
    finally:
        live.single_threaded_blas = single_threaded_blas
    cpu = time.process_time() - first_cpu[0] if first_cpu else 0.0
    p50, p95 = report.latency_ms or (float("nan"), float("nan"))
    return {
        "camera_fps": camera_fps,
        "fps_setting": args.fps,
        "overlap_share": share,
        "blas": blas,
        "fps": round(report.fps, 2),
        "latency_ms": {"p50": round(p50, 1), "p95": round(p95, 1)},
        "stale_dropped": report.stale_dropped,
        "cpu_ms_per_frame": round(1000 * cpu / max(report.frames - 1, 1), 2),
        "stages_mean_ms": {k: round(v.mean_ms, 2) for k, v in report.stages.items()},
        "outputs": {name: stats.text() for name, stats in report.pacing.items()},
        "load_average": round(os.getloadavg()[0], 2),
    }


single_threaded_blas = live.single_threaded_blas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--poser", default="default")
    parser.add_argument("--tracker", default="full")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--camera-fps", type=float, nargs="+", default=[30.0, 60.0])
    parser.add_argument("--fps", type=float, default=30.0, help="the outputs' rate (--fps)")
    parser.add_argument("--blas", nargs="+", default=["single", "default"])
    parser.add_argument(
        "--overlap-share", type=float, nargs="+", default=[live.OVERLAP_TRACKING_SHARE]
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--output", nargs="*", default=[], help="extra live outputs (files)")
    args = parser.parse_args()
    poser = load_poser(args.poser, None, "cpu")
    for _ in range(args.rounds):
        for blas in args.blas:
            for camera_fps in args.camera_fps:
                for share in args.overlap_share:
                    run = one_run(poser, args, camera_fps, blas, share)
                    print(json.dumps(run), flush=True)


if __name__ == "__main__":
    main()
