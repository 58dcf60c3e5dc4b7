"""The shared mapping vectors (tests/data/mapping_vectors.json, see tests/mapping_vectors.py):
the Python mapping still makes exactly the recorded poses, and the web page's JavaScript port
(puppet/outputs/web/mapping.js, a plain ES module) makes the same poses in node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mapping_vectors
import numpy as np
import pytest

from puppet.outputs.web_site import mapping_constants
from puppet.pose import INDEX

MAPPING_JS = Path(__file__).parents[1] / "puppet" / "outputs" / "web" / "mapping.js"
TOLERANCE = 2e-6  # float32 poses: a few units in the last place

# Runs every case through mapping.js and prints, per case, the largest difference per frame.
NODE_SCRIPT = """
import { readFileSync } from "node:fs";
const [mappingUrl, constantsPath, vectorsPath] = process.argv.slice(1);
const { PoseMapper, replayedRandom } = await import(mappingUrl);
const constants = JSON.parse(readFileSync(constantsPath, "utf8"));
const vectors = JSON.parse(readFileSync(vectorsPath, "utf8"));
const names = vectors.blendshape_names;
const results = vectors.cases.map((c) => {
  const mapper = new PoseMapper(constants, {
    mirrorCharacter: c.mirror_character, random: replayedRandom(c.draws),
  });
  return vectors.frames.map((frame, i) => {
    const observation = frame.scores ? {
      blendshapes: Object.fromEntries(names.map((n, k) => [n, frame.scores[k]])),
      rotation: frame.rotation, mirrored: frame.mirrored,
    } : null;
    const pose = mapper.update(observation, frame.t);
    return Math.max(...Array.from(pose, (v, k) => Math.abs(v - c.poses[i][k])));
  });
});
console.log(JSON.stringify(results));
"""


@pytest.fixture(scope="module")
def vectors() -> dict:
    return mapping_vectors.load()


def test_python_mapping_reproduces_the_vectors(vectors: dict) -> None:
    frames, names = vectors["frames"], vectors["blendshape_names"]
    assert len(frames) > 300 and sum("scores" not in f for f in frames) >= 200
    for case in vectors["cases"]:
        poses, draws = mapping_vectors.python_poses(frames, names, case["mirror_character"])
        np.testing.assert_allclose(poses, case["poses"], rtol=0, atol=TOLERANCE)
        assert draws == case["draws"]
    # The vectors exercise what they are for: blinks and an open mouth while tracked, the
    # easing to neutral and idle blinks and breathing while the face is lost.
    poses = np.array(vectors["cases"][0]["poses"])
    tracked = np.array(["scores" in f for f in frames])
    assert poses[tracked, INDEX["eye_wink_left"]].max() > 0.5
    assert poses[tracked, INDEX["mouth_aaa"]].max() > 0.5
    assert np.abs(poses[tracked, INDEX["head_y"]]).max() > 0.5
    assert poses[~tracked, INDEX["eye_wink_left"]][-100:].max() > 0.9  # an idle blink
    assert poses[~tracked, INDEX["breathing"]].max() > 0.9
    assert not np.allclose(poses, vectors["cases"][1]["poses"])  # the mirror changes poses


def test_javascript_mapping_reproduces_the_vectors(vectors: dict, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node found: install Node.js to run the page's mapping outside a browser")
    constants = tmp_path / "mapping.json"
    constants.write_text(json.dumps(mapping_constants()))
    result = subprocess.run(
        [node, "--input-type=module", "-e", NODE_SCRIPT, MAPPING_JS.as_uri(), constants,
         mapping_vectors.VECTORS],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    errors = json.loads(result.stdout)
    for case, case_errors in zip(vectors["cases"], errors, strict=True):
        worst = int(np.argmax(case_errors))
        assert max(case_errors) <= TOLERANCE, (case["mirror_character"], worst, max(case_errors))
    print(f"JS vs Python mapping: max difference {max(max(e) for e in errors):.2e}")
