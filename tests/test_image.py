import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from iseg_core import ImageError, check_image, load_image


def test_check_image_rejects_what_a_model_cannot_take():
    with pytest.raises(ImageError, match=r"shape \(H, W, 3\), got shape \(20, 20, 4\)"):
        check_image(np.zeros((20, 20, 4), np.uint8))
    with pytest.raises(ImageError, match=r"got shape \(20, 20\)"):
        check_image(np.zeros((20, 20), np.uint8))
    with pytest.raises(ImageError, match="dtype uint8"):
        check_image(np.zeros((20, 20, 3), np.float32))
    with pytest.raises(ImageError, match="1x1 pixels"):
        check_image(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageError, match="numpy"):
        check_image([[0, 0, 0]])


def test_huge_array_is_refused_without_touching_its_pixels():
    # np.zeros maps 1.2 GB lazily; the check must refuse from the shape alone.
    huge = np.zeros((20000, 20000, 3), np.uint8)
    with pytest.raises(ImageError, match=r"20000x20000 \(400 MP\), above the limit of 64 MP"):
        check_image(huge)


def _png(size):
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_load_image_decodes_converts_and_keeps_size(tmp_path):
    gray = tmp_path / "g.png"
    Image.new("L", (40, 30), 77).save(gray)
    loaded = load_image(gray)
    assert loaded.rgb.shape == (30, 40, 3) and loaded.rgb.dtype == np.uint8
    assert (loaded.rgb == 77).all() and loaded.scale == 1.0 and loaded.message == ""


def test_load_image_applies_exif_orientation(tmp_path):
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif)
    loaded = load_image(path)
    assert loaded.rgb.shape == (40, 20, 3) and loaded.source_size == (40, 20)


def test_corrupt_and_truncated_files_raise_image_errors(tmp_path):
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(b"this is not an image")
    data = _png((64, 64))
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot open"):
        load_image(tmp_path / "missing.png")


def test_large_jpeg_is_decoded_downscaled_with_a_message(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("L", (6000, 4000), 128).save(path, quality=50)
    loaded = load_image(path, max_pixels=1_000_000)
    h, w = loaded.rgb.shape[:2]
    assert h * w <= 1_000_000 and abs(w / h - 1.5) < 0.01
    assert loaded.source_size == (4000, 6000)
    assert loaded.scale == pytest.approx(w / 6000)
    assert "6000x4000" in loaded.message and "downscaled" in loaded.message


def test_png_claiming_a_gigantic_size_is_refused_before_decoding():
    data = bytearray(_png((16, 16)))
    ihdr = 8 + 8

    def claim(w, h):  # rewrite the IHDR chunk's size and fix its CRC
        data[ihdr : ihdr + 8] = struct.pack(">II", w, h)
        data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
        return bytes(data)

    with pytest.raises(ImageError, match=r"25000x20000 \(500 MP\); PNG files above 400 MP are not decoded"):
        load_image(claim(25000, 20000))
    with pytest.raises(ImageError, match="too large to decode"):
        load_image(claim(60000, 60000))
