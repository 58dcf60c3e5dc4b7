"""Character image loading and `check_character` on good and bad images (real files via PIL)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from poser_models.image import HEAD_BOX, SIZE, load_character, prepare_character
from puppet.character import check_character
from puppet.errors import PuppetError
from puppet.paths import DEFAULT_CHARACTER_IMAGE


def _draw_character(width: int = 512, height: int = 512) -> Image.Image:
    """A simple upright figure: head filling the head box, body below, transparent around."""
    image = Image.new("RGBA", (width, height), (255, 0, 255, 0))  # magenta but alpha 0
    draw = ImageDraw.Draw(image)
    sx, sy = width / 512, height / 512
    draw.ellipse((196 * sx, 60 * sy, 316 * sx, 196 * sy), fill=(250, 220, 200, 255))
    draw.rectangle((200 * sx, 200 * sy, 312 * sx, 511 * sy), fill=(60, 90, 200, 255))
    return image


@pytest.fixture
def good_png(tmp_path: Path) -> Path:
    if DEFAULT_CHARACTER_IMAGE.is_file():
        return DEFAULT_CHARACTER_IMAGE
    path = tmp_path / "good.png"
    _draw_character().save(path)
    return path


def test_good_image_loads_unchanged(good_png: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        rgba = load_character(good_png)
    assert rgba.shape == (SIZE, SIZE, 4) and rgba.dtype == np.uint8
    np.testing.assert_array_equal(rgba, np.asarray(Image.open(good_png).convert("RGBA")))
    assert not caplog.records


def test_array_input_is_accepted(good_png: Path) -> None:
    array = np.asarray(Image.open(good_png).convert("RGBA"))
    np.testing.assert_array_equal(load_character(array), array)
    with pytest.raises(PuppetError, match="no alpha channel"):
        load_character(array[..., :3])


def test_check_good_image_writes_overlay(good_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "check" / "overlay.png"
    report = check_character(good_png, out)
    assert report.ok, report.warnings
    assert report.original_size == (512, 512)
    assert report.head_box_coverage > 0.5
    assert 0.05 < report.alpha_coverage < 0.85
    overlay = np.asarray(Image.open(out).convert("RGB"))
    assert overlay.shape == (SIZE, SIZE, 3)
    x0, y0, x1, y1 = HEAD_BOX
    # The head box outline is drawn in red at its top-left corner.
    assert tuple(overlay[y0, x0 + 20]) == (255, 0, 0)
    assert tuple(overlay[y1 - 1, x1 - 30]) == (255, 0, 0)
    assert not list(out.parent.glob("*.tmp"))


def test_check_flags_a_misplaced_head(tmp_path: Path) -> None:
    image = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((20, 300, 120, 400), fill=(200, 100, 100, 255))
    path = tmp_path / "small.png"
    image.save(path)
    report = check_character(path, tmp_path / "o.png")
    assert report.head_box_coverage == 0.0
    assert not report.ok and any("head box" in w for w in report.warnings)


def test_rgb_jpeg_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    _draw_character().convert("RGB").save(path, quality=90)
    with pytest.raises(PuppetError, match="no alpha channel") as error:
        load_character(path)
    assert "photo.jpg" in str(error.value) and "RGBA PNG" in str(error.value)
    with pytest.raises(PuppetError, match="no alpha channel"):
        check_character(path, tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()


def test_fully_opaque_rgba_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "opaque.png"
    Image.new("RGBA", (512, 512), (10, 200, 30, 255)).save(path)
    with pytest.raises(PuppetError, match="no transparent pixels"):
        load_character(path)


def test_fully_transparent_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    Image.new("RGBA", (512, 512), (0, 0, 0, 0)).save(path)
    with pytest.raises(PuppetError, match="fully transparent"):
        load_character(path)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(PuppetError, match="does not exist") as error:
        load_character(tmp_path / "nope.png")
    assert "--character" in str(error.value)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not a png")
    with pytest.raises(PuppetError, match="Cannot read character image"):
        load_character(junk)
    with pytest.raises(PuppetError, match="does not exist"):
        check_character(tmp_path / "nope.png", tmp_path / "o.png")


def test_non_square_is_centre_cropped_and_resized(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 768x512: a 512x512 character in the middle, 128 px of (opaque) junk on each side.
    wide = Image.new("RGBA", (768, 512), (255, 255, 0, 255))
    wide.paste(_draw_character(), (128, 0))
    path = tmp_path / "wide.png"
    wide.save(path)
    with caplog.at_level(logging.WARNING, logger="puppet.character"):
        rgba = load_character(path)
    assert rgba.shape == (SIZE, SIZE, 4)
    np.testing.assert_array_equal(rgba, np.asarray(_draw_character()))  # the crop, exactly
    assert any("not square" in r.getMessage() for r in caplog.records)

    # Non-square and not 512 tall: cropped, then resized.
    tall = tmp_path / "tall.png"
    _draw_character(300, 400).save(tall)
    rgba, warnings = prepare_character(tall)
    assert rgba.shape == (SIZE, SIZE, 4)
    assert len(warnings) == 1 and "resized to 512x512" in warnings[0]


def test_square_other_size_is_resized(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    _draw_character(1024, 1024).save(path)
    rgba, warnings = prepare_character(path)
    assert rgba.shape == (SIZE, SIZE, 4)
    assert warnings == [f"'{path}' is 1024x1024: resized to 512x512."]
    # The resized head still fills the head box.
    x0, y0, x1, y1 = HEAD_BOX
    assert (rgba[y0:y1, x0:x1, 3] >= 128).mean() > 0.5
    report = check_character(path, tmp_path / "o.png")
    assert report.original_size == (1024, 1024)
    assert any("resized" in w for w in report.warnings)


# ---------------------------------------------------------------------------------------------
# character prepare (drawn figures: the silhouette path; real samples in test_real_art.py)


def _draw_figure(canvas: tuple[int, int], scale: float, at: tuple[float, float]) -> Image.Image:
    """The `_draw_character` figure at ``scale``, its top-left at ``at``, on a larger canvas."""
    image = Image.new("RGBA", canvas, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    ox, oy = at

    def box(x0, y0, x1, y1):
        return (ox + x0 * scale, oy + y0 * scale, ox + x1 * scale, oy + y1 * scale)

    draw.ellipse(box(196, 60, 316, 196), fill=(250, 220, 200, 255))
    draw.rectangle(box(200, 200, 312, 420), fill=(60, 90, 200, 255))
    draw.rectangle(box(226, 190, 286, 204), fill=(250, 220, 200, 255))  # neck
    return image


def _top_and_centre(rgba: np.ndarray) -> tuple[int, float]:
    mask = rgba[..., 3] >= 128
    top = int(np.nonzero(mask.any(axis=1))[0][0])
    return top, float(np.nonzero(mask[top : top + 100])[1].mean())


def test_prepare_places_a_moved_figure_the_same_way(tmp_path: Path) -> None:
    from puppet.character import HEAD_TOP, prepare_art

    results = []
    for index, (canvas, scale, at) in enumerate(
        [((600, 600), 1.0, (0, 0)), ((700, 500), 0.55, (380, 90)), ((900, 1200), 1.7, (20, 300))]
    ):
        art = tmp_path / f"art{index}.png"
        _draw_figure(canvas, scale, at).save(art)
        report = prepare_art(art, tmp_path / f"out{index}.png", tmp_path / f"check{index}.png")
        assert report.method == "silhouette"  # no face to detect in a drawn ellipse
        assert any("No face was detected" in w for w in report.warnings)
        assert report.original_size == canvas and not report.unchanged
        out = np.asarray(Image.open(tmp_path / f"out{index}.png"))
        assert out.shape == (SIZE, SIZE, 4)
        assert (tmp_path / f"check{index}.png").is_file()
        results.append((report.scale * scale, *_top_and_centre(out), out))
    for relative_scale, top, centre, out in results:
        assert relative_scale == pytest.approx(results[0][0], rel=0.03)
        # HEAD_TOP is the first row a quarter of a head wide: the ellipse's tip is above it.
        assert 0 <= HEAD_TOP - top <= 5 and abs(centre - 256) <= 2
        assert abs(top - results[0][1]) <= 1 and abs(centre - results[0][2]) <= 1
        mask, first = out[..., 3] >= 128, results[0][3][..., 3] >= 128
        assert (mask & first).sum() / (mask | first).sum() > 0.95


def test_prepare_keeps_small_detached_pieces(tmp_path: Path) -> None:
    from puppet.character import prepare_art

    image = _draw_figure((600, 600), 1.0, (40, 40))
    ImageDraw.Draw(image).ellipse((420, 90, 440, 110), fill=(255, 255, 0, 255))  # a hair clip
    art = tmp_path / "art.png"
    image.save(art)
    prepare_art(art, tmp_path / "out.png", tmp_path / "check.png")
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert (out[..., 0] > 200)[out[..., 3] > 200].any()  # the clip came along


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("rgb", "no alpha channel"),
        ("opaque", "no transparent pixels"),
        ("empty", "no opaque pixels"),
        ("two", "2 separate figures of similar size"),
        ("bar", "No head found"),
    ],
)
def test_prepare_refuses_what_it_cannot_place(tmp_path: Path, kind: str, message: str) -> None:
    from puppet.character import prepare_art

    if kind == "rgb":
        image = _draw_figure((512, 512), 1.0, (0, 0)).convert("RGB")
    elif kind == "opaque":
        image = Image.new("RGBA", (400, 300), (10, 200, 10, 255))
    elif kind == "empty":
        image = Image.new("RGBA", (400, 300), (10, 200, 10, 40))
    elif kind == "two":
        image = _draw_figure((900, 512), 1.0, (-100, 0))
        image.alpha_composite(_draw_figure((900, 512), 0.9, (300, 40)))
    else:
        image = Image.new("RGBA", (600, 400), (0, 0, 0, 0))
        ImageDraw.Draw(image).rectangle((50, 150, 550, 250), fill=(90, 90, 90, 255))
    art = tmp_path / "art.png"
    image.save(art)
    out = tmp_path / "out.png"
    with pytest.raises(PuppetError, match=message):
        prepare_art(art, out, tmp_path / "check.png")
    assert not out.exists() and not (tmp_path / "check.png").exists()


def test_prepare_never_overwrites_the_art(tmp_path: Path) -> None:
    from puppet.character import prepare_art

    art = tmp_path / "art.png"
    _draw_figure((512, 512), 1.0, (0, 0)).save(art)
    before = art.read_bytes()
    with pytest.raises(PuppetError, match="is the input art"):
        prepare_art(art, art)
    assert art.read_bytes() == before


def test_check_images_default_to_the_data_folder(tmp_path: Path) -> None:
    from puppet.character import default_check_path, prepare_art
    from puppet.paths import data_dir

    art = tmp_path / "art.png"
    _draw_figure((600, 500), 0.8, (50, 30)).save(art)
    report = prepare_art(art, tmp_path / "out.png")
    assert report.check_png == default_check_path(tmp_path / "out.png", "before_after")
    assert report.check_png.is_file() and data_dir() in report.check_png.parents
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art.png", "out.png"]
