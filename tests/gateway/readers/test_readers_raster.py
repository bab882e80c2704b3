"""PNG and JPEG: modes, bit depths, stacks, broken files and decompression bombs."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from gateway.errors import ImageTooLarge, InconsistentSeries, UnreadableFile
from gateway.readers import ImageSet, ReadLimits, read_images
from tests.factories import RequestFiles, image_entry

LIMITS = ReadLimits(max_pixels_per_image=100_000_000, max_total_voxels=1_500_000_000)
SKIMAGE_DATA = Path(skimage.data.__file__).parent
"""skimage's shipped sample pictures, opened directly (its loaders would fetch the others)."""


def camera_picture() -> np.ndarray:
    return np.asarray(Image.open(SKIMAGE_DATA / "camera.png"))


def astronaut_picture() -> np.ndarray:
    return np.asarray(Image.open(SKIMAGE_DATA / "astronaut.png"))


def encode(image: Image.Image, format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def read(tmp_path: Path, content: bytes, name: str = "image.png", **kw: int) -> ImageSet:
    files = RequestFiles(tmp_path / "uploads")
    files.add(name, content)
    limits = ReadLimits(**{**LIMITS.__dict__, **kw}) if kw else LIMITS
    return read_images(files.entries(), files.uploads, limits)


def test_grayscale_png(tmp_path: Path) -> None:
    camera = camera_picture()
    image = read(tmp_path, encode(Image.fromarray(camera)))
    assert image.pixels.dtype == np.uint8
    np.testing.assert_array_equal(image.pixels, camera[None])
    assert not image.hounsfield
    assert image.spacing is None
    assert image.modality is None


def test_rgb_png(tmp_path: Path) -> None:
    astronaut = astronaut_picture()
    image = read(tmp_path, encode(Image.fromarray(astronaut)))
    assert image.pixels.shape == (1, 512, 512, 3)
    np.testing.assert_array_equal(image.pixels[0], astronaut)


def test_sixteen_bit_png(tmp_path: Path) -> None:
    values = camera_picture().astype(np.uint16) * 257
    image = read(tmp_path, encode(Image.fromarray(values)))
    assert image.pixels.dtype == np.uint16
    np.testing.assert_array_equal(image.pixels[0], values)


def test_jpeg_files(tmp_path: Path) -> None:
    camera = camera_picture()
    image = read(tmp_path, encode(Image.fromarray(camera), "JPEG", quality=95), "c.jpg")
    assert image.pixels.dtype == np.uint8
    assert np.abs(image.pixels[0].astype(int) - camera).mean() < 3
    rocket = SKIMAGE_DATA / "rocket.jpg"
    image = read(tmp_path / "rocket", rocket.read_bytes(), "rocket.jpg")
    assert image.pixels.shape == (1, 427, 640, 3)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    rgb = Image.fromarray(astronaut_picture()[:64, :64])
    image = read(tmp_path, encode(rgb.convert("CMYK"), "JPEG", quality=95), "cmyk.jpg")
    assert image.pixels.shape == (1, 64, 64, 3)
    assert np.abs(image.pixels[0].astype(int) - np.asarray(rgb)).mean() < 8


def test_bilevel_png(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:6] = True
    image = read(tmp_path, encode(Image.fromarray(mask)))
    np.testing.assert_array_equal(image.pixels[0], mask * 255)


def test_gray_palette_becomes_grayscale(tmp_path: Path) -> None:
    camera = camera_picture()[:64, :64]
    palette = Image.fromarray(camera).convert("P")
    palette.putpalette([v for i in range(256) for v in (i, i, i)])
    image = read(tmp_path, encode(palette))
    assert image.pixels.shape == (1, 64, 64)


def test_colour_palette_becomes_rgb(tmp_path: Path) -> None:
    astronaut = Image.fromarray(astronaut_picture()[:64, :64])
    palette = astronaut.quantize(64)
    image = read(tmp_path, encode(palette))
    np.testing.assert_array_equal(image.pixels[0], np.asarray(palette.convert("RGB")))


def test_alpha_is_composited_onto_black(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = [200, 100, 50]
    rgba[..., 3] = [[255, 0], [128, 51]]
    image = read(tmp_path, encode(Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(
        image.pixels[0],
        [[[200, 100, 50], [0, 0, 0]], [[100, 50, 25], [40, 20, 10]]],
    )
    gray_alpha = np.stack([np.full((1, 2), 200, np.uint8), np.array([[255, 0]], np.uint8)], -1)
    image = read(tmp_path / "la", encode(Image.fromarray(gray_alpha, "LA")))
    np.testing.assert_array_equal(image.pixels[0], [[200, 0]])


def test_palette_with_transparency(tmp_path: Path) -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0])
    palette.putpixel((1, 0), 1)
    image = read(tmp_path, encode(palette, transparency=1))
    np.testing.assert_array_equal(image.pixels[0], [[[255, 0, 0], [0, 0, 0]]])


def test_png_named_dcm_reads_by_content(tmp_path: Path) -> None:
    camera = camera_picture()
    image = read(tmp_path, encode(Image.fromarray(camera)), name="scan.dcm")
    np.testing.assert_array_equal(image.pixels[0], camera)


@pytest.mark.parametrize(("format", "cut"), [("PNG", 0.5), ("PNG", 0.02), ("JPEG", 0.5)])
def test_truncated_files(tmp_path: Path, format: str, cut: float) -> None:
    data = encode(Image.fromarray(camera_picture()), format)
    with pytest.raises(UnreadableFile, match="'broken' is not a readable image") as caught:
        read(tmp_path, data[: int(len(data) * cut)], name="broken")
    assert caught.value.status == 422


def test_corrupt_png_data(tmp_path: Path) -> None:
    data = bytearray(encode(Image.fromarray(camera_picture())))
    data[100:200] = bytes(100)
    with pytest.raises(UnreadableFile):
        read(tmp_path, bytes(data))


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def test_png_bomb_fails_from_the_header_without_allocating(tmp_path: Path) -> None:
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(100_001) * 10))
        + _chunk(b"IEND", b"")
    )
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLarge, match=r"100000 x 100000 = 10,000,000,000 pixels"):
            read(tmp_path, bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_jpeg_bomb_fails_from_the_header(tmp_path: Path) -> None:
    data = bytearray(encode(Image.fromarray(camera_picture()[:16, :16]), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60_000, 60_000)
    with pytest.raises(ImageTooLarge, match="60000 x 60000"):
        read(tmp_path, bytes(data), name="bomb.jpg")


def test_our_limit_replaces_pillows(tmp_path: Path) -> None:
    data = encode(Image.new("L", (300, 200)))
    assert read(tmp_path, data, max_pixels_per_image=60_000).pixels.shape == (1, 200, 300)
    with pytest.raises(ImageTooLarge, match="MAX_PIXELS_PER_IMAGE"):
        read(tmp_path / "again", data, max_pixels_per_image=59_999)


def test_pngs_stack_in_index_order(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path / "uploads")
    slices = [np.full((4, 5), value, np.uint8) for value in (10, 20, 30)]
    for i, values in enumerate(slices):
        files.add(f"{i}.png", encode(Image.fromarray(values)))
    entries = [image_entry("0.png", 7), image_entry("1.png", 2), image_entry("2.png", 5)]
    image = read_images(entries, files.uploads, LIMITS)
    np.testing.assert_array_equal(image.pixels[:, 0, 0], [20, 30, 10])
    assert [e.file_name for e in image.slice_images] == ["1.png", "2.png", "0.png"]


def test_png_and_jpeg_may_be_stacked(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path / "uploads")
    files.add("a.png", encode(Image.new("L", (8, 8), 10)))
    files.add("b.jpg", encode(Image.new("L", (8, 8), 200), "JPEG"))
    image = read_images(files.entries(), files.uploads, LIMITS)
    assert image.pixels.shape == (2, 8, 8)


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (Image.new("L", (9, 8)), "'b.png' is 8 x 9 pixels but 'a.png' is 8 x 8"),
        (Image.new("RGB", (8, 8)), "8 x 8 RGB pixels but 'a.png' holds 8 x 8 grayscale"),
        (Image.fromarray(np.zeros((8, 8), np.uint16)), "16-bit pixels but 'a.png' has 8-bit"),
    ],
)
def test_stacked_pictures_must_agree(tmp_path: Path, second: Image.Image, message: str) -> None:
    files = RequestFiles(tmp_path / "uploads")
    files.add("a.png", encode(Image.new("L", (8, 8))))
    files.add("b.png", encode(second))
    with pytest.raises(InconsistentSeries, match=message):
        read_images(files.entries(), files.uploads, LIMITS)


def test_reading_leaves_pillows_process_wide_guard_alone(tmp_path: Path) -> None:
    """Pillow's bomb guard protects every custom pipeline in the process: importing and using
    the readers must not switch it off."""
    default = Image.MAX_IMAGE_PIXELS
    assert default is not None
    read(tmp_path, encode(Image.new("L", (300, 200))))
    assert default == Image.MAX_IMAGE_PIXELS


def test_our_bound_applies_past_pillows_guard(tmp_path: Path) -> None:
    """An image between Pillow's error bound and a raised MAX_PIXELS_PER_IMAGE is ours to judge:
    a 413 naming our limit, never Pillow's DecompressionBombError (a 500)."""
    side = 16_000  # 256 M pixels: past twice Pillow's default bound
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    claimed = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b"")
    with pytest.raises(ImageTooLarge, match="MAX_PIXELS_PER_IMAGE"):
        read(tmp_path, claimed, max_pixels_per_image=100_000_000)
