"""load_rgb / probe_image / sha256_file on hand-made files: every conversion and every way a file breaks."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from maskless.data.images import ImageError, decode_rgb, load_rgb, probe_image, sha256_file


def _encode(ext: str, array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, array)
    assert ok
    return buf.tobytes()


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _tiff_orientation(value: int, byte_order: str = "MM") -> bytes:
    """A minimal EXIF (TIFF) block: header, IFD0 with one SHORT entry 0x0112 = value, no next IFD."""
    e = "<" if byte_order == "II" else ">"
    return (byte_order.encode() + struct.pack(e + "HI", 42, 8) + struct.pack(e + "H", 1)
            + struct.pack(e + "HHIHH", 0x0112, 3, 1, value, 0) + struct.pack(e + "I", 0))


def _png_with_exif(png: bytes, tiff: bytes) -> bytes:
    """Insert an eXIf chunk after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    chunk = struct.pack(">I", len(tiff)) + b"eXIf" + tiff + struct.pack(">I", zlib.crc32(b"eXIf" + tiff))
    return png[:33] + chunk + png[33:]


def _jpeg_with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """Insert an APP1 segment right after SOI."""
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _red_left_blue_right() -> np.ndarray:
    img = np.zeros((16, 32, 3), np.uint8)  # BGR
    img[:, :16] = (0, 0, 255)
    img[:, 16:] = (255, 0, 0)
    return img


def test_rgb_png_round_trip_and_one_pixel(tmp_path):
    """A 1x1 BGR PNG (10, 20, 30) reads back as RGB (30, 20, 10), shape (1, 1, 3)."""
    path = _write(tmp_path, "a.png", _encode(".png", np.array([[[10, 20, 30]]], np.uint8)))
    img = load_rgb(path)
    assert img.dtype == np.uint8 and img.shape == (1, 1, 3)
    assert img[0, 0].tolist() == [30, 20, 10]
    assert probe_image(path) == {"width": 1, "height": 1, "notes": [], "sha256": sha256_file(path)}


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.array([[0, 128, 255]], np.uint8)  # (1, 3)
    path = _write(tmp_path, "g.png", _encode(".png", gray))
    img = load_rgb(path)
    assert img.shape == (1, 3, 3)
    assert img[0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]
    assert "grayscale converted to RGB" in probe_image(path)["notes"]


def test_rgba_is_composited_on_black(tmp_path):
    """Red 200 at alpha 128/255 -> round(200 * 128 / 255) = round(100.39) = 100; alpha 0 -> black."""
    bgra = np.array([[[0, 0, 200, 128], [0, 0, 200, 0], [0, 0, 200, 255]]], np.uint8)
    img = load_rgb(_write(tmp_path, "a.png", _encode(".png", bgra)))
    assert img[0].tolist() == [[100, 0, 0], [0, 0, 0], [200, 0, 0]]


def test_16bit_is_scaled_with_rounding(tmp_path):
    """x * 255 / 65535: 257 * 100 -> 100 exactly, 128 -> 0.498 -> 0, 129 -> 0.502 -> 1, 65535 -> 255."""
    gray16 = np.array([[0, 25700, 128, 129, 65535]], np.uint16)
    path = _write(tmp_path, "a.png", _encode(".png", gray16))
    assert load_rgb(path)[0, :, 0].tolist() == [0, 100, 0, 1, 255]
    assert "16-bit samples scaled to 8-bit" in probe_image(path)["notes"]


def test_16bit_rgba(tmp_path):
    """65535 at alpha 32768/65535 -> 32768 -> * 255 / 65535 = 127.502 -> 128."""
    bgra = np.array([[[0, 0, 65535, 32768]]], np.uint16)
    assert load_rgb(_write(tmp_path, "a.png", _encode(".png", bgra)))[0, 0].tolist() == [128, 0, 0]


def test_exif_rotated_jpeg(tmp_path):
    """Orientation 6 = rotate 90 clockwise: a 16x32 left-red/right-blue image becomes 32x16 with red on
    top (the left column becomes the top row)."""
    jpeg = _jpeg_with_app1(_encode(".jpg", _red_left_blue_right()), b"Exif\x00\x00" + _tiff_orientation(6))
    img = load_rgb(_write(tmp_path, "r.jpg", jpeg))
    assert img.shape == (32, 16, 3)
    assert np.abs(img[:14].astype(int) - [255, 0, 0]).max() < 10  # red top, away from the JPEG edge blur
    assert np.abs(img[18:].astype(int) - [0, 0, 255]).max() < 10
    assert probe_image(tmp_path / "r.jpg")["notes"] == ["EXIF orientation 6 applied"]


@pytest.mark.parametrize("byte_order", ["II", "MM"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_opencv(tmp_path, orientation, byte_order):
    """All 8 EXIF orientations on a lossless PNG agree exactly with cv2.imread(IMREAD_COLOR)."""
    img = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    data = _png_with_exif(_encode(".png", img), _tiff_orientation(orientation, byte_order))
    path = _write(tmp_path, "o.png", data)
    expected = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(load_rgb(path), expected)


def test_16bit_png_is_oriented_too(tmp_path):
    """The 16-bit path applies EXIF orientation like the 8-bit one: 16x32 with orientation 8 -> 32x16."""
    img16 = _red_left_blue_right().astype(np.uint16) * 257
    path = _write(tmp_path, "o.png", _png_with_exif(_encode(".png", img16), _tiff_orientation(8)))
    img = load_rgb(path)
    assert img.shape == (32, 16, 3)
    # rotate 90 counter-clockwise: the right (blue) column becomes the top row
    assert img[0, 0].tolist() == [0, 0, 255] and img[-1, -1].tolist() == [255, 0, 0]


def test_truncated_jpeg(tmp_path):
    data = _encode(".jpg", np.full((32, 32, 3), 90, np.uint8))
    for cut, name in [(len(data) - 2, "no_eoi.jpg"), (len(data) // 2, "half.jpg"), (40, "head.jpg")]:
        with pytest.raises(ImageError, match="truncated JPEG") as err:
            load_rgb(_write(tmp_path, name, data[:cut]))
        assert err.value.path.endswith(name)


def test_truncated_jpeg_with_thumbnail_marker_in_exif(tmp_path):
    """An EXIF thumbnail carries its own FFD9 inside APP1; the scan of the main image must still end."""
    jpeg = _jpeg_with_app1(_encode(".jpg", np.full((16, 16, 3), 90, np.uint8)),
                           b"Exif\x00\x00" + _tiff_orientation(1) + b"\xff\xd8thumb\xff\xd9")
    assert load_rgb(_write(tmp_path, "full.jpg", jpeg)).shape == (16, 16, 3)
    with pytest.raises(ImageError, match="no end-of-image marker"):
        load_rgb(_write(tmp_path, "cut.jpg", jpeg[:-2]))


def test_truncated_png(tmp_path):
    data = _encode(".png", np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    with pytest.raises(ImageError, match="truncated PNG"):
        load_rgb(_write(tmp_path, "no_iend.png", data[:-12]))  # IEND is the last 12 bytes
    with pytest.raises(ImageError, match="truncated PNG"):
        load_rgb(_write(tmp_path, "half.png", data[: len(data) // 2]))


def test_zero_byte_missing_and_garbage_files(tmp_path):
    with pytest.raises(ImageError, match=r"empty file \(0 bytes\)") as err:
        load_rgb(_write(tmp_path, "empty.png", b""))
    assert err.value.reason == "empty file (0 bytes)" and isinstance(err.value, ValueError)
    with pytest.raises(ImageError, match="file not found"):
        load_rgb(tmp_path / "absent.png")
    with pytest.raises(ImageError, match="cannot decode"):
        load_rgb(_write(tmp_path, "text.jpg", b"this is not an image at all"))


def test_zero_size_image(tmp_path):
    """A PNG whose IHDR declares width 0 is refused with that reason (libpng would only say 'invalid')."""
    png = bytearray(_encode(".png", np.zeros((2, 2), np.uint8)))
    png[16:20] = struct.pack(">I", 0)  # IHDR width
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))  # keep the IHDR CRC valid
    with pytest.raises(ImageError, match=r"zero width or height \(0x2\)"):
        load_rgb(_write(tmp_path, "zero.png", bytes(png)))


def test_truncated_bmp(tmp_path):
    data = _encode(".bmp", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageError, match="truncated BMP"):
        load_rgb(_write(tmp_path, "a.bmp", data[:-10]))


def test_sha256_file(tmp_path):
    """The standard test vector: sha256('abc')."""
    path = _write(tmp_path, "abc.txt", b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_decode_rgb_from_bytes():
    img, notes = decode_rgb(_encode(".png", np.zeros((3, 4), np.uint8)))
    assert img.shape == (3, 4, 3) and notes == ["grayscale converted to RGB"]
