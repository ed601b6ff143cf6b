"""Reading images as uint8 RGB, with every way a real image file can go wrong turned into a clear error.

`load_rgb` is the one way the package reads an image. Rules it applies, in order:
- The bytes must be complete: libjpeg and libpng often decode a cut-off file into a partly grey image
  without an error, so JPEG must end its scan data with an EOI marker (FFD9), PNG must reach its IEND
  chunk, and BMP / WebP must hold as many bytes as their headers declare.
- EXIF orientation is applied (as `cv2.imread(..., IMREAD_COLOR)` does). The image is decoded unchanged
  (to keep alpha and 16-bit samples) and the orientation is read from the EXIF block and applied here, so
  8-bit, 16-bit and RGBA files are all oriented the same way. Width and height are those after orientation.
- Grayscale becomes three equal channels.
- Alpha is composited on black (rgb * alpha / max): transparent pixels carry arbitrary colours in many
  files, and black is what most viewers show for "nothing there" in a dataset context.
- 16-bit samples are scaled to 8 bits with rounding (x * 255 / 65535, so 257 * k -> k exactly).
Anything else (empty file, undecodable data, zero-size image, float samples) raises `ImageError`.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import cv2
import numpy as np

_EXIF_ORIENTATION_TAG = 0x0112


class ImageError(ValueError):
    """An image that cannot be used: `.path` names the file, `.reason` says why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """The image at `path` as uint8 (H, W, 3) RGB, EXIF-oriented. Raises ImageError (see module doc)."""
    return decode_rgb(_read_bytes(path), path)[0]


def probe_image(path: str | os.PathLike) -> dict:
    """dict(width, height, notes, sha256) of an image; notes list every conversion load_rgb applied.

    Decodes the whole image (the only reliable check that it is usable) and hashes the same bytes, so the
    file is read once.
    """
    data = _read_bytes(path)
    img, notes = decode_rgb(data, path)
    return {
        "width": int(img.shape[1]),
        "height": int(img.shape[0]),
        "notes": notes,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def decode_rgb(data: bytes, path: str | os.PathLike = "<bytes>") -> tuple[np.ndarray, list[str]]:
    """Decode encoded image bytes to uint8 (H, W, 3) RGB plus notes on the conversions applied."""
    if len(data) == 0:
        raise ImageError(path, "empty file (0 bytes)")
    problem = _truncation_problem(data)
    if problem:
        raise ImageError(path, problem)
    buf = np.frombuffer(data, np.uint8)
    img, meta_types, meta = cv2.imdecodeWithMetadata(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        if img is not None and img.ndim >= 2 and 0 in img.shape[:2]:
            raise ImageError(path, f"image has zero width or height ({img.shape[1]}x{img.shape[0]})")
        raise ImageError(path, "cannot decode: not an image, an unsupported format, or corrupt data")
    notes: list[str] = []
    orientation = _exif_orientation(meta_types, meta)
    if orientation != 1:
        img = _apply_orientation(img, orientation)
        notes.append(f"EXIF orientation {orientation} applied")
    return _to_rgb8(img, path, notes), notes


def _read_bytes(path: str | os.PathLike) -> bytes:
    p = Path(path)
    if not p.exists():
        raise ImageError(path, "file not found")
    try:
        return p.read_bytes()
    except OSError as e:
        raise ImageError(path, f"cannot read: {e.strerror or e}") from e


def _to_rgb8(img: np.ndarray, path, notes: list[str]) -> np.ndarray:
    """(H, W[, C]) uint8/uint16 BGR(A) or gray(+alpha) -> uint8 (H, W, 3) RGB."""
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageError(path, f"unsupported sample type {img.dtype} (only 8- and 16-bit images are read)")
    if img.ndim == 2:
        img = img[:, :, None]  # (H, W, 1)
    channels = img.shape[2]
    if channels not in (1, 2, 3, 4):
        raise ImageError(path, f"unsupported channel count {channels}")
    maxval = 255.0 if img.dtype == np.uint8 else 65535.0
    if channels in (2, 4):
        color = img[:, :, :-1].astype(np.float32)  # (H, W, 1 or 3)
        alpha = img[:, :, -1:].astype(np.float32) / maxval  # (H, W, 1)
        img = color * alpha
        notes.append("alpha composited on black")
    if channels in (1, 2):
        img = np.repeat(img, 3, axis=2)  # (H, W, 3)
        notes.append("grayscale converted to RGB")
    if maxval == 65535.0:
        notes.append("16-bit samples scaled to 8-bit")
    if img.dtype != np.uint8:
        img = np.floor(img.astype(np.float64) * (255.0 / maxval) + 0.5).clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(img[:, :, ::-1])  # BGR -> RGB


def _truncation_problem(data: bytes) -> str | None:
    """A reason string when the bytes are a recognised format cut short, else None."""
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_problem(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png_problem(data)
    if data[:2] == b"BM" and len(data) >= 6:
        declared = struct.unpack("<I", data[2:6])[0]
        if len(data) < declared:
            return f"truncated BMP: {len(data)} bytes, header declares {declared}"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        declared = struct.unpack("<I", data[4:8])[0] + 8
        if len(data) < declared:
            return f"truncated WebP: {len(data)} bytes, header declares {declared}"
    return None


def _jpeg_problem(data: bytes) -> str | None:
    """Walk the marker segments to the first scan, then require an EOI marker after it.

    Inside entropy-coded data a 0xFF byte is always followed by 0x00 or a marker, so FFD9 there is the real
    end of image; the walk skips APP segments, whose embedded EXIF thumbnails carry their own FFD9.
    """
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return f"corrupt JPEG: expected a marker at byte {pos}"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return "corrupt JPEG: end-of-image marker before any scan data"
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker == 0xDA:  # start of scan
            if data.find(b"\xff\xd9", pos + 2 + length) < 0:
                return "truncated JPEG: no end-of-image marker (FFD9) after the scan data"
            return None
        pos += 2 + length
    return "truncated JPEG: file ends before the scan data"


def _png_problem(data: bytes) -> str | None:
    """Walk the chunks (length, type, data, crc) and require IEND within the file."""
    if len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        if w == 0 or h == 0:
            return f"image has zero width or height ({w}x{h})"
    pos = 8
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        ctype = data[pos + 4 : pos + 8]
        pos += 12 + length
        if pos > len(data):
            return f"truncated PNG: chunk {ctype!r} runs past the end of the file"
        if ctype == b"IEND":
            return None
    return "truncated PNG: file ends before the IEND chunk"


def _exif_orientation(meta_types, meta) -> int:
    """EXIF orientation (1..8) from cv2's metadata blocks; 1 when absent or unreadable."""
    for kind, block in zip(list(meta_types), list(meta)):
        if int(kind) == cv2.IMAGE_METADATA_EXIF:
            value = _tiff_orientation(bytes(np.asarray(block, np.uint8).ravel()))
            if value is not None:
                return value
    return 1


def _tiff_orientation(tiff: bytes) -> int | None:
    """Read tag 0x0112 from IFD0 of a TIFF-structured EXIF block (byte order 'II' or 'MM')."""
    if tiff[:6] == b"Exif\x00\x00":
        tiff = tiff[6:]
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    end = "<" if tiff[:2] == b"II" else ">"
    ifd = struct.unpack(end + "I", tiff[4:8])[0]
    if ifd + 2 > len(tiff):
        return None
    count = struct.unpack(end + "H", tiff[ifd : ifd + 2])[0]
    for i in range(count):
        entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        if len(entry) < 12:
            return None
        tag, typ = struct.unpack(end + "HH", entry[:4])
        if tag == _EXIF_ORIENTATION_TAG and typ == 3:
            value = struct.unpack(end + "H", entry[8:10])[0]
            return value if 1 <= value <= 8 else None
    return None


def _apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn the stored pixels into display order (EXIF 2.3, tag 0x0112). img: (H, W[, C])."""
    ops = {
        2: lambda a: a[:, ::-1],  # mirror horizontally
        3: lambda a: a[::-1, ::-1],  # rotate 180
        4: lambda a: a[::-1],  # mirror vertically
        5: lambda a: a.swapaxes(0, 1),  # transpose
        6: lambda a: np.rot90(a, -1),  # rotate 90 clockwise
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),  # transverse
        8: lambda a: np.rot90(a, 1),  # rotate 90 counter-clockwise
    }
    return np.ascontiguousarray(ops[orientation](img))


def resized_hw(height: int, width: int, short: float) -> tuple[int, int]:
    """Size before a network: short side = `short`, long side at most 2 x short (extreme aspect ratios)."""
    scale = min(short / min(height, width), 2 * short / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def load_record(record: dict) -> np.ndarray:
    """One manifest image (a row with path, id, height, width) as uint8 (H, W, 3) RGB; ValueError when its
    size differs from the manifest's (the file changed since ingest)."""
    img = load_rgb(record["path"])
    hw = img.shape[:2]
    if hw != (int(record["height"]), int(record["width"])):
        raise ValueError(f"image {record['path']} (id {record['id']}) is {hw[0]}x{hw[1]} but the manifest says "
                         f"{record['height']}x{record['width']}")
    return img


def load_resized(record: dict, input_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Load one manifest image, check its size against the manifest (load_record), resize it (resized_hw).

    Returns (resized uint8 (h, w, 3), original (H, W)). Area interpolation when shrinking (no aliasing),
    bilinear when enlarging.
    """
    img = load_record(record)
    hw = img.shape[:2]
    h, w = resized_hw(hw[0], hw[1], input_size)
    down = h < hw[0] and w < hw[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR), hw


def resized_batches(records: list[dict], batch_size: int, input_size: int):
    """Yield (records, uint8 (B, h, w, 3), original sizes) groups of equal resized size.

    Images of different sizes are never padded together (padding would change the features); a batch of
    mixed sizes runs as several smaller groups.
    """
    for start in range(0, len(records), batch_size):
        groups: dict[tuple[int, int], list] = {}
        for rec in records[start : start + batch_size]:
            img, hw = load_resized(rec, input_size)
            groups.setdefault(img.shape[:2], []).append((rec, img, hw))
        for items in groups.values():
            yield [r for r, _, _ in items], np.stack([i for _, i, _ in items]), [hw for _, _, hw in items]
