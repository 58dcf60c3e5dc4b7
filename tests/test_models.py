"""`puppet models` library: import, fetch (against a local HTTP server), list, verify, find.

The five-file sets here are built in tmp_path with the official key names and shapes (zeros,
float16: the separable_half layout, ~28 MB) to exercise validation and installation; the real
official separable_float editor.pt from ../shared/fixtures checks per-file validation. Nothing
reaches the internet: downloads come from a threaded http.server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from poser_models.tha3_keys import KEYS, NETWORKS
from puppet.errors import PuppetError
from puppet.model_store import (
    ATTRIBUTION,
    LICENCE,
    NETWORK_FILES,
    OFFICIAL_URLS,
    fetch_tha3,
    find_tha3_variant_dir,
    import_tha3,
    list_models,
    validate_tha3_file,
    verify_models,
)
from puppet.paths import models_dir

VARIANT = "separable_half"


def _write_state(path: Path, family: str, network: str, dtype=torch.float16) -> None:
    torch.save({key: torch.zeros(shape, dtype=dtype) for key, shape in KEYS[family][network]}, path)


@pytest.fixture(scope="module")
def official_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<root>/separable_half/<network>.pt with the right keys, shapes and dtype."""
    root = tmp_path_factory.mktemp("tha3_models")
    folder = root / VARIANT
    folder.mkdir()
    for network in NETWORKS:
        _write_state(folder / f"{network}.pt", "separable", network)
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_url_table_covers_every_file() -> None:
    assert set(OFFICIAL_URLS) == {
        "standard_float",
        "standard_half",
        "separable_float",
        "separable_half",
    }
    for variant, urls in OFFICIAL_URLS.items():
        assert set(urls) == set(NETWORKS)
        known = [u for u in urls.values() if u]
        assert all(
            u.startswith("https://www.dropbox.com/s/") and u.endswith("?dl=1") for u in known
        )
        assert len(set(known)) == len(known), variant  # no link reused within a variant


def test_real_official_editor_validates(fixtures_dir: Path) -> None:
    editor = fixtures_dir / "tha3_real_editor" / "editor.pt"
    assert validate_tha3_file(editor, "editor") == "separable_float"
    with pytest.raises(PuppetError, match="lacks"):  # not a standard-family editor
        validate_tha3_file(editor, "editor", family="standard")


def test_import_installs_with_manifest(official_set: Path) -> None:
    model = import_tha3(official_set)  # the <variant>/ subfolder layout
    assert model.name == f"tha3:{VARIANT}" and model.variant == VARIANT
    assert model.path == models_dir() / "tha3" / VARIANT
    manifest = json.loads((model.path / "manifest.json").read_text())
    assert manifest["variant"] == VARIANT
    assert manifest["licence"] == LICENCE == "CC BY 4.0"
    assert manifest["attribution"] == ATTRIBUTION
    assert "Pramook Khungurn" in ATTRIBUTION
    for name in NETWORK_FILES:
        source = official_set / VARIANT / name
        assert manifest["files"][name]["sha256"] == _sha(source) == model.files[name]
        assert (model.path / name).read_bytes() == source.read_bytes()
    assert not [p for p in model.path.parent.iterdir() if p.name.startswith(".")]

    listed = {m.name: m for m in list_models()}
    assert listed[f"tha3:{VARIANT}"].licence == "CC BY 4.0"
    assert find_tha3_variant_dir(VARIANT) == model.path
    assert [(r.name, r.ok) for r in verify_models()] == [(f"tha3:{VARIANT}", True)]

    # Re-import over an existing install (the variant folder itself this time).
    again = import_tha3(official_set / VARIANT, variant=VARIANT)
    assert again.files == model.files

    # A changed file is caught by verify.
    with open(model.path / "editor.pt", "ab") as handle:
        handle.write(b"\0")
    (result,) = verify_models()
    assert not result.ok and "editor.pt" in result.problems[0]


def test_import_refuses_bad_sets(official_set: Path, tmp_path: Path) -> None:
    folder = tmp_path / "set"
    shutil.copytree(official_set / VARIANT, folder)
    with pytest.raises(PuppetError, match="not separable_float"):
        import_tha3(folder, variant="separable_float")
    with pytest.raises(PuppetError, match="Unknown THA3 variant 'tiny'"):
        import_tha3(folder, variant="tiny")

    (folder / "face_morpher.pt").unlink()
    with pytest.raises(PuppetError, match="lacks face_morpher.pt"):
        import_tha3(folder)

    state = {
        key: torch.zeros(shape, dtype=torch.float16)
        for key, shape in KEYS["separable"]["face_morpher"]
    }
    key, shape = KEYS["separable"]["face_morpher"][5]
    state[key] = torch.zeros(shape[0] + 1, *shape[1:], dtype=torch.float16)
    torch.save(state, folder / "face_morpher.pt")
    with pytest.raises(PuppetError) as error:
        import_tha3(folder)
    assert "face_morpher.pt" in str(error.value) and repr(key) in str(error.value)
    assert f"expected {tuple(shape)}" in str(error.value)

    _write_state(folder / "face_morpher.pt", "separable", "face_morpher", torch.float32)
    with pytest.raises(PuppetError, match="different variants"):
        import_tha3(folder)
    assert not (models_dir() / "tha3" / VARIANT).exists()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_import_refuses_pickle_payload(official_set: Path, tmp_path: Path) -> None:
    folder = tmp_path / "set"
    shutil.copytree(official_set / VARIANT, folder)
    marker = tmp_path / "payload_ran"
    state = {
        key: torch.zeros(shape, dtype=torch.float16) for key, shape in KEYS["separable"]["editor"]
    }
    state["body.downsample_blocks.0.2.bias"] = _Payload(marker)
    torch.save(state, folder / "editor.pt")
    with pytest.raises(PuppetError, match="editor.pt.*could run code"):
        import_tha3(folder)
    assert not marker.exists()


def test_find_variant_dir_messages(official_set: Path) -> None:
    with pytest.raises(PuppetError) as error:
        find_tha3_variant_dir("separable_float")
    message = str(error.value)
    assert "puppet models import DIR" in message
    assert "puppet models fetch tha3:separable_float" in message
    assert find_tha3_variant_dir(VARIANT, official_set) == official_set / VARIANT
    assert find_tha3_variant_dir(VARIANT, official_set / VARIANT) == official_set / VARIANT
    with pytest.raises(PuppetError, match="does not hold"):
        find_tha3_variant_dir(VARIANT, official_set.parent)


# ---------------------------------------------------------------------------------------------
# fetch against a local server


class _Server:
    """Serves files with Range support; can cut the first response of one file short."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.cut: dict[str, int] = {}  # path -> bytes to send before dropping the connection
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                limit = server.cut.pop(self.path, None)
                body = data[start:] if limit is None else data[start : start + limit]
                self.wfile.write(body)
                if limit is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(official_set: Path):
    files = {
        f"/{VARIANT}/{name}": (official_set / VARIANT / name).read_bytes() for name in NETWORK_FILES
    }
    server = _Server(files)
    yield server
    server.close()


def test_fetch_resumes_after_interruption(server: _Server, official_set: Path) -> None:
    path = f"/{VARIANT}/face_morpher.pt"
    half = len(server.files[path]) // 2
    server.cut[path] = half
    seen: list[tuple[str, int, int | None]] = []
    with pytest.raises(PuppetError, match="interrupted.*run the same command again"):
        fetch_tha3(VARIANT, base_url=server.url, progress=lambda *a: seen.append(a))
    part = models_dir() / "tha3" / ".downloads" / VARIANT / "face_morpher.pt.part"
    assert part.stat().st_size == half
    assert not (models_dir() / "tha3" / VARIANT).exists()

    server.requests.clear()
    model = fetch_tha3(VARIANT, base_url=server.url, progress=lambda *a: seen.append(a))
    # Completed files are not fetched again; the partial one resumes where it stopped.
    assert (path, f"bytes={half}-") in server.requests
    remaining = NETWORKS[NETWORKS.index("face_morpher") :]
    assert [p for p, _ in server.requests] == [f"/{VARIANT}/{n}.pt" for n in remaining]
    for name in NETWORK_FILES:
        assert model.files[name] == _sha(official_set / VARIANT / name)
    assert not (models_dir() / "tha3" / ".downloads" / VARIANT).exists()
    assert verify_models()[0].ok
    done = [d for n, d, _ in seen if n == "face_morpher.pt"]
    assert done == sorted(done) and done[-1] == len(server.files[path])


def test_fetch_refuses_bad_checksum(server: _Server) -> None:
    with pytest.raises(PuppetError, match="Checksum mismatch for editor.pt"):
        fetch_tha3(VARIANT, base_url=server.url, checksums={"editor": "0" * 64})
    downloads = models_dir() / "tha3" / ".downloads" / VARIANT
    assert not (downloads / "editor.pt.part").exists() and not (downloads / "editor.pt").exists()
    assert not (models_dir() / "tha3" / VARIANT).exists()


def test_fetch_refuses_wrong_content_and_missing_file(server: _Server) -> None:
    server.files[f"/{VARIANT}/editor.pt"] = b"<html>not a model</html>"
    with pytest.raises(PuppetError, match="not a valid THA3 separable_half file"):
        fetch_tha3(VARIANT, base_url=server.url)
    del server.files[f"/{VARIANT}/editor.pt"]
    with pytest.raises(PuppetError, match="HTTP 404"):
        fetch_tha3(VARIANT, base_url=server.url)


def test_fetch_without_a_known_link_points_to_import(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to reach the internet")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(PuppetError, match="no known download link.*puppet models import"):
        fetch_tha3(VARIANT)  # separable_half/face_morpher.pt has no per-file link
