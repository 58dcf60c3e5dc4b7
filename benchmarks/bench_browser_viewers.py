"""How much browser-source viewers slow the live loop: the same run with 0, 8 and 50 viewers.

    python benchmarks/bench_browser_viewers.py [--seconds 8]

Each viewer long-polls ``/frame`` as the page does, on loopback; past the cap (8) the server
answers 503 at once. Prints one JSON line per run with the loop fps and the 1-minute load.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import urllib.error
import urllib.request

from puppet.app.live import LiveConfig, run_live
from puppet.paths import DEMO_TRACK


def _viewer(port: int, stop: threading.Event, counts: dict) -> None:
    after = 0
    while not stop.is_set():
        try:
            url = f"http://127.0.0.1:{port}/frame?after={after}"
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
                after = int(response.headers.get("X-Frame-Seq", after + 1))
                counts["ok"] += 1
        except urllib.error.HTTPError as error:
            counts[str(error.code)] = counts.get(str(error.code), 0) + 1
            time.sleep(0.05)  # a page backs off after a 503
        except OSError:
            time.sleep(0.05)


def run(viewers: int, seconds: float, port: int) -> dict:
    stop = threading.Event()
    counts: dict = {"ok": 0}
    threads = [threading.Thread(target=_viewer, args=(port, stop, counts), daemon=True)
               for _ in range(viewers)]  # fmt: skip
    timer = threading.Timer(1.0, lambda: [t.start() for t in threads])
    timer.start()
    config = LiveConfig(source=str(DEMO_TRACK), poser="default", outputs=["browser"],
                        seconds=seconds, browser_port=port)  # fmt: skip
    report = run_live(config)
    stop.set()
    return {"viewers": viewers, "fps": round(report.fps, 2), "responses": counts,
            "load": round(os.getloadavg()[0], 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    for i, viewers in enumerate((0, 8, 50, 0)):
        print(json.dumps(run(viewers, args.seconds, 8790 + i)), flush=True)


if __name__ == "__main__":
    main()
