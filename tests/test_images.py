"""Every image read right: each mode a file can hold against a conversion written out here, by hand."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zeroshot.inputs import as_image
from zeroshot.video import load_image

RNG = np.random.default_rng(0)


def _read(image: Image.Image, tmp_path, name: str = "image.png", **options) -> np.ndarray:
    path = tmp_path / name
    image.save(path, **options)
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    return np.asarray(loaded)


def _gray3(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    """A 16-bit PNG holds 0..65535: 8 bits keep the top of the range (v * 255 / 65535), where Pillow's own conversion
    clips everything over 255 to white (a mid-grey photo read with a mean of 227)."""
    values = RNG.integers(0, 65536, (24, 32)).astype(np.uint16)
    values[0, :4] = [0, 32896, 65535, 128]
    pixels = _read(Image.fromarray(values), tmp_path)
    expected = np.floor(values.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(pixels, _gray3(expected))
    assert list(pixels[0, :4, 0]) == [0, 128, 255, 0]
    assert abs(pixels.mean() - 127.5) < 5  # uniform noise stays mid-grey


def test_float_grayscale_tiff_reads_zero_to_one(tmp_path):
    values = RNG.random((8, 8)).astype(np.float32)
    pixels = _read(Image.fromarray(values, mode="F"), tmp_path, "float.tif")
    np.testing.assert_array_equal(pixels, _gray3(np.floor(values.astype(np.float64) * 255 + 0.5).astype(np.uint8)))


def test_grayscale_and_one_bit(tmp_path):
    values = RNG.integers(0, 256, (8, 8)).astype(np.uint8)
    np.testing.assert_array_equal(_read(Image.fromarray(values), tmp_path), _gray3(values))
    bits = values > 127
    np.testing.assert_array_equal(_read(Image.fromarray(bits), tmp_path, "bits.png"), _gray3(bits * np.uint8(255)))


def test_palette_looks_up_its_colours(tmp_path):
    indices = RNG.integers(0, 4, (8, 8)).astype(np.uint8)
    colours = np.array([[255, 0, 0], [0, 128, 0], [10, 20, 30], [200, 200, 0]], np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(colours.ravel().tolist())
    np.testing.assert_array_equal(_read(image, tmp_path), colours[indices])
    # A transparent palette entry shows white, the backdrop of a cut-out character.
    transparent = _read(image, tmp_path, "transparent.png", transparency=2)
    expected = colours[indices].copy()
    expected[indices == 2] = 255
    np.testing.assert_array_equal(transparent, expected)


def test_cmyk_uses_the_subtractive_formula(tmp_path):
    cmyk = RNG.integers(0, 256, (8, 8, 4)).astype(np.uint8)
    pixels = _read(Image.fromarray(cmyk, mode="CMYK"), tmp_path, "cmyk.tif")
    c, k = cmyk[..., :3].astype(np.float64), cmyk[..., 3:].astype(np.float64)
    expected = (255 - c) * (255 - k) / 255
    assert np.abs(pixels - expected).max() <= 1  # Pillow rounds in integer arithmetic


def test_alpha_is_composited_over_white(tmp_path):
    rgba = RNG.integers(0, 256, (8, 8, 4)).astype(np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    pixels = _read(Image.fromarray(rgba, mode="RGBA"), tmp_path)
    alpha = rgba[..., 3:] / 255.0
    expected = rgba[..., :3] * alpha + 255 * (1 - alpha)
    assert np.abs(pixels - expected).max() <= 0.5
    assert list(pixels[0, 0]) == [255, 255, 255] and list(pixels[0, 1]) == list(rgba[0, 1, :3])
    gray_alpha = np.stack([rgba[..., 0], rgba[..., 3]], axis=-1)
    pixels = _read(Image.fromarray(gray_alpha, mode="LA"), tmp_path, "la.png")
    expected = gray_alpha[..., :1] * alpha + 255 * (1 - alpha)
    assert np.abs(pixels - expected).max() <= 0.5 and (pixels[..., 0] == pixels[..., 2]).all()


@pytest.mark.parametrize(("orientation", "turn"), [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_turns_the_image_upright(orientation, turn, tmp_path):
    """EXIF 3 is a half turn, 6 a quarter turn clockwise, 8 anticlockwise (np.rot90 turns anticlockwise)."""
    upright = RNG.integers(0, 256, (6, 10, 3)).astype(np.uint8)
    stored = np.rot90(upright, -turn)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = orientation
    np.testing.assert_array_equal(_read(Image.fromarray(np.ascontiguousarray(stored)), tmp_path, exif=exif), upright)


def test_the_api_reads_arrays_as_a_user_would_pass_them(tmp_path):
    rgb = RNG.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(as_image(rgb)), rgb)
    np.testing.assert_array_equal(np.asarray(as_image(rgb[..., 0])), _gray3(rgb[..., 0]))
    np.testing.assert_array_equal(np.asarray(as_image(rgb / 255.0)), rgb)
    np.testing.assert_array_equal(np.asarray(as_image(rgb.astype(np.uint16) * 257)), rgb)
    rgba = np.concatenate([rgb, np.zeros((6, 8, 1), np.uint8)], axis=-1)
    assert (np.asarray(as_image(rgba)) == 255).all()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(np.asarray(as_image(tmp_path / "rgb.png")), rgb)
    np.testing.assert_array_equal(np.asarray(as_image(str(tmp_path / "rgb.png"))), rgb)
    np.testing.assert_array_equal(np.asarray(as_image(Image.fromarray(rgb).convert("RGBA"))), rgb)
