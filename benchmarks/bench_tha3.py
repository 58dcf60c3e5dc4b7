"""CPU seconds per frame of the THA3 poser, per variant and backend.

    .venv/bin/python benchmarks/bench_tha3.py --variants separable_float standard_float \
        --methods eager channels_last onnx compile --threads 2

Weights: ``--model-dir DIR`` (a folder holding ``<variant>/<network>.pt``), else the installed
official weights, else seeded random weights (speed does not depend on the values: the
networks are dense and the inputs finite). Protocol as in shared/fixtures/TIMINGS.md: warm-up
calls, then the median of timed calls, for three kinds of frame:

* ``steady``: every pose slice changes each frame (live tracking): four networks run, the
  eyebrow decomposer is cached per character;
* ``rotation``: only head/body rotation changes, so the combiner and face morpher caches hit;
* ``uncached``: the image changes every frame too, so all five networks run.

``--bf16`` adds one measurement of the editor in bfloat16 (eager) for comparison.
The official implementation measured 1.8 s (separable_float) and 4.8 s (standard_float) per
steady frame on the same 2-core machine (TIMINGS.md).

Measured here (2-vCPU VM shared with other jobs that kept one core busy, so noisy; medians):

    method        threads  separable_float steady / rotation-only / uncached   standard steady
    onnx          2        0.56 / 0.41 / 0.60 s  (1.8 fps)                      1.7 s
    onnx          1        0.50 / 0.39 / 0.54 s
    eager         1        1.26 / 1.11 / 1.34 s
    eager         2        0.81 s when quiet; 5-8 s while another job held a core (OpenMP)
    compile       2        ~2x eager on the editor, 45 s compile at start
    channels_last 2        no gain over eager;  bf16 editor: 2.2 s (vs 0.5 s fp32)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poser_models import tha3  # noqa: E402

FRAME_KINDS = ("steady", "rotation", "uncached")


def random_networks(variant: str, seed: int = 0) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)  # torch's default initialisation of every layer
    return {network: tha3.build_tha3_network(network, variant) for network in tha3.NETWORKS}


def make_poser(variant: str, method: str, model_root: Path | None, threads: int) -> tha3.THA3Poser:
    folder = None
    if model_root is not None:
        folder = model_root / variant
    else:
        try:
            from puppet.model_store import find_tha3_variant_dir

            folder = find_tha3_variant_dir(variant, None)
        except Exception:  # not installed (or models.py absent): random weights
            folder = None
    if folder is not None:
        return tha3.THA3Poser(variant, folder, backend=method, threads=threads)
    print(f"  ({variant}: no weights installed, using random weights)", flush=True)
    return tha3.THA3Poser(
        variant, networks=random_networks(variant), backend=method, threads=threads
    )


def poses(count: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.0, 1.0, 45).astype(np.float32) for _ in range(count)]


def frame_sequence(kind: str, count: int) -> list[np.ndarray]:
    sequence = poses(count)
    if kind == "rotation":
        for pose in sequence[1:]:
            pose[:39] = sequence[0][:39]
    return sequence


def time_frame(poser: tha3.THA3Poser, image: torch.Tensor, kind: str, pose: np.ndarray) -> float:
    start = time.perf_counter()
    if kind == "uncached":
        poser.set_image(image)
    poser.pose_image(pose)
    return time.perf_counter() - start


def bench_bf16(threads: int) -> float:
    torch.set_num_threads(threads)
    editor = random_networks("separable_float")["editor"].to(torch.bfloat16)
    inputs = [torch.zeros(s, dtype=torch.bfloat16) for s in tha3.INPUT_SHAPES["editor"]]
    with torch.inference_mode():
        editor(*inputs)
        start = time.perf_counter()
        editor(*inputs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=["separable_float", "standard_float"])
    parser.add_argument(
        "--methods", nargs="+", default=["eager", "channels_last", "onnx"], choices=tha3.BACKENDS
    )
    parser.add_argument("--kinds", nargs="+", default=list(FRAME_KINDS), choices=FRAME_KINDS)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = torch.rand(1, 4, 512, 512) * 2 - 1

    rows = []
    for variant in args.variants:
        posers: dict[str, tha3.THA3Poser] = {}
        results: dict[str, dict] = {}
        for method in args.methods:
            if method == "onnx" and not tha3.onnx_available():
                print(f"  skip {method}: onnxruntime/onnx not installed")
                continue
            start = time.perf_counter()
            poser = make_poser(variant, method, args.model_dir, args.threads)
            poser.set_image(image)
            poser.pose_image(poses(1, seed=99)[0])  # compile / initialise
            results[method] = {"variant": variant, "method": method}
            results[method]["setup"] = time.perf_counter() - start
            posers[method] = poser
        # Methods take turns frame by frame, so load from other processes hits them alike.
        for kind in args.kinds:
            sequence = frame_sequence(kind, args.warmup + args.runs)
            times: dict[str, list[float]] = {method: [] for method in posers}
            seconds: dict[str, dict[str, float]] = {method: {} for method in posers}
            for i, pose in enumerate(sequence):
                frame_image = image.clone()
                frame_image[0, 0, 0, i] += 1e-3  # a new character image (used by "uncached")
                for method, poser in posers.items():
                    elapsed = time_frame(poser, frame_image, kind, pose)
                    if i >= args.warmup:
                        times[method].append(elapsed)
                        for network, t in poser.stats.seconds.items():
                            seconds[method].setdefault(network, []).append(t)
            for method in posers:
                results[method][kind] = statistics.median(times[method])
                if kind == "steady":
                    results[method]["networks"] = {
                        n: statistics.median(ts) for n, ts in seconds[method].items()
                    }
        for method, result in results.items():
            cells = "  ".join(f"{k} {result[k]:.3f}s" for k in args.kinds)
            print(f"{variant:16} {method:14} setup {result['setup']:6.1f}s  {cells}", flush=True)
            rows.append(result)
        posers.clear()

    print()
    header = "| variant | method | " + " | ".join(f"{k} s/frame" for k in args.kinds)
    print(header + " | steady fps | setup s | steady per network (s) |")
    print("|" + "---|" * (len(args.kinds) + 5))
    for r in rows:
        per_net = ", ".join(
            f"{n.split('_')[0][:4]}{'-' + n.split('_')[1][:3] if '_' in n else ''} {s:.3f}"
            for n, s in r.get("networks", {}).items()
            if n != "eyebrow_decomposer"
        )
        cells = " | ".join(f"{r[k]:.3f}" for k in args.kinds)
        fps = f"{1 / r['steady']:.2f}" if "steady" in r else "-"
        print(
            f"| {r['variant']} | {r['method']} | {cells} | {fps} | {r['setup']:.1f} | {per_net} |"
        )
    if args.bf16:
        print(f"\nseparable editor eager bfloat16: {bench_bf16(args.threads):.2f} s/call")
    print(f"\n{args.threads} threads, median of {args.runs} after {args.warmup} warm-up frames.")


if __name__ == "__main__":
    main()
