"""Named weights: a config value such as `densecl_r101_imagenet` resolves to a file under the cache folder.

REGISTRY is a plain dict name -> entry: url (the publisher's, as its README or code gives it), file (its
name in the cache), sha256 (the full hex digest, or None where the publisher gives none: then `hash_note`
says so and only the download's length is checked), sha256_prefix (torchvision's convention: the 8 hex digits
in the file name begin the file's sha256, as torch.hub checks them), arch, format and source (where the URL
was read). Config `weights.extra` adds the user's own entries (url, file, sha256). Files are fetched by
rule fetch_weights (rules/weights.smk); nothing here downloads unless `download` is called.

Not listed: FreeSOLO's converted DenseCL R101 `.pkl`. FreeSOLO publishes no converted file (its README asks
the user to convert DenseCL's `.pth` with its tools/convert-pretrain-to-detectron2.py); name the `.pkl`
by path if you have one, or use densecl_r101_imagenet, the same weights before conversion.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

_DENSECL = ("WXinlong/DenseCL README.md, 'Models' table (commit b64bbb6, 2023-12-26: the files moved from "
            "CloudStor to Hugging Face)")
_DENSECL_HASH = "none published (DenseCL's README gives URLs only); the download's length is checked"
_DINO = "facebookresearch/dino README.md, 'Pretrained models' table ('backbone only' links)"
_DINO_HASH = "none published (DINO's README gives URLs only); the download's length is checked"
_TV = ("pytorch/vision torchvision/models/resnet.py, model_urls (commit 054e54c: the ImageNet weights of "
       "`pretrained=True`; later torchvision releases add other files, not listed here); the file name's 8 "
       "hex digits are the sha256 prefix torch.hub checks")

def _dino(url: str, arch: str, label: str) -> dict:
    return {"url": url, "file": url.rsplit("/", 1)[-1], "sha256": None, "hash_note": _DINO_HASH, "arch": arch,
            "format": "torch: raw ViT state dict (DINO's layout)", "source": _DINO,
            "what": f"DINO {label} teacher backbone, ImageNet"}


REGISTRY: dict[str, dict] = {
    "densecl_r50_imagenet": {
        "url": "https://huggingface.co/xinlongwang/DenseCL/resolve/main/densecl_r50_imagenet_200ep.pth?download=true",
        "file": "densecl_r50_imagenet_200ep.pth", "sha256": None, "hash_note": _DENSECL_HASH,
        "arch": "resnet50", "format": "torch: {'state_dict': torchvision keys} (DenseCL's extracted backbone)",
        "what": "DenseCL ResNet-50, ImageNet, 200 epochs", "source": _DENSECL,
    },
    "densecl_r101_imagenet": {
        "url": "https://huggingface.co/xinlongwang/DenseCL/resolve/main/densecl_r101_imagenet_200ep.pth?download=true",
        "file": "densecl_r101_imagenet_200ep.pth", "sha256": None, "hash_note": _DENSECL_HASH,
        "arch": "resnet101", "format": "torch: {'state_dict': torchvision keys} (DenseCL's extracted backbone)",
        "what": "DenseCL ResNet-101, ImageNet, 200 epochs (FreeSOLO's backbone, before its conversion to .pkl)",
        "source": _DENSECL,
    },
    # DINO's "backbone only" files, URLs as its README lists them (ViT-S is DeiT-S there).
    "dino_vits16": _dino("https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth",
                         "vit_s16", "ViT-S/16"),
    "dino_vits8": _dino("https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth",
                        "vit_s8", "ViT-S/8"),
    "dino_vitb16": _dino("https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
                         "vit_b16", "ViT-B/16"),
    "dino_vitb8": _dino("https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth",
                        "vit_b8", "ViT-B/8"),
    "torchvision_resnet18": {
        "url": "https://download.pytorch.org/models/resnet18-5c106cde.pth",
        "file": "resnet18-5c106cde.pth", "sha256": None, "sha256_prefix": "5c106cde",
        "arch": "resnet18", "format": "torch: raw torchvision state dict (with fc)",
        "what": "torchvision ResNet-18, supervised ImageNet", "source": _TV,
    },
    "torchvision_resnet50": {
        "url": "https://download.pytorch.org/models/resnet50-19c8e357.pth",
        "file": "resnet50-19c8e357.pth", "sha256": None, "sha256_prefix": "19c8e357",
        "arch": "resnet50", "format": "torch: raw torchvision state dict (with fc)",
        "what": "torchvision ResNet-50, supervised ImageNet", "source": _TV,
    },
}
log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 3.0
_CHUNK = 1 << 20


class WeightsUnavailable(RuntimeError):
    """A named weight's file is missing and cannot be fetched from here; the message says what to do."""


def entries(extra: dict | None = None) -> dict[str, dict]:
    """The built-in entries and the user's (config weights.extra), the user's winning on a shared name."""
    return {**REGISTRY, **(extra or {})}


def names(extra: dict | None = None) -> list[str]:
    """Every known weights name, sorted."""
    return sorted(entries(extra))


def entry(name: str, extra: dict | None = None) -> dict:
    known = entries(extra)
    if name not in known:
        raise KeyError(f"unknown weights name {name!r}; known names: {sorted(known)} (config weights.extra adds "
                       "one's own)")
    return known[name]


def cache_path(name: str, cache_dir: str | os.PathLike, extra: dict | None = None) -> str:
    """Where the file of the named weights lives: <cache_dir>/<file>."""
    return str(Path(cache_dir) / entry(name, extra)["file"])


def resolve(value: str, cache_dir: str | os.PathLike, extra: dict | None = None) -> str:
    """A config value naming weights -> the local file: an existing path stays itself, a known name becomes
    <cache_dir>/<file>; anything else is an error naming the value and the known names."""
    if os.path.isfile(value):
        return str(value)
    known = entries(extra)
    if value in known:
        return cache_path(value, cache_dir, extra)
    raise ValueError(f"weights {value!r} is neither an existing file nor a known name; known names: "
                     f"{sorted(known)} (config weights.extra adds one's own)")


def _expected(item: dict) -> str:
    if item.get("sha256"):
        return f"sha256 {item['sha256']}"
    if item.get("sha256_prefix"):
        return f"sha256 beginning {item['sha256_prefix']}"
    return "no published hash"


def check_hash(item: dict, digest: str, url: str) -> None:
    """Raise ValueError naming the URL and both hashes when `digest` is not the entry's."""
    full, prefix = item.get("sha256"), item.get("sha256_prefix")
    if (full and digest != full.lower()) or (prefix and not digest.startswith(prefix.lower())):
        raise ValueError(f"download of {url} has sha256 {digest}, expected {_expected(item)}: a corrupted "
                         "download or a changed file; nothing was kept")


def download(name: str, cache_dir: str | os.PathLike, extra: dict | None = None, *, timeout: float = 60.0) -> str:
    """Fetch the named weights into <cache_dir>/<file> (fetch); an existing file is kept, nothing downloaded."""
    return fetch(entry(name, extra), cache_path(name, cache_dir, extra), timeout=timeout)


def fetch(item: dict, dest: str | os.PathLike, *, timeout: float = 60.0) -> str:
    """Download item["url"] to dest: streamed into a temporary file in the same folder, length and hash
    checked, then renamed into place, so dest holds a whole checked file or nothing. An existing dest is
    kept and nothing is downloaded."""
    final = Path(dest)
    if final.is_file():
        return str(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    url = item["url"]
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _stream(url, out, timeout)
        check_hash(item, digest, url)
        os.replace(tmp, final)
        log.info("fetched %s -> %s (sha256 %s; expected %s)", url, final, digest, _expected(item))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(final)


def _stream(url: str, out, timeout: float) -> str:
    """Copy `url` into `out`, returning its sha256; a short body (fewer bytes than Content-Length) raises."""
    sha = hashlib.sha256()
    got = 0
    try:
        # http, https or file URLs: the registry's and the config's (weights.extra, checked by the schema)
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            length = response.headers.get("Content-Length")
            while chunk := response.read(_CHUNK):
                sha.update(chunk)
                out.write(chunk)
                got += len(chunk)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ValueError(f"download of {url} failed after {got} bytes: {e}; nothing was kept") from e
    except Exception as e:  # noqa: BLE001 (http.client.IncompleteRead and friends on a cut connection)
        raise ValueError(f"download of {url} broke off after {got} bytes ({type(e).__name__}: {e}); nothing "
                         "was kept") from e
    if length is not None and got != int(length):
        raise ValueError(f"download of {url} is truncated: {got} of {length} bytes; nothing was kept")
    return sha.hexdigest()


@lru_cache(maxsize=64)
def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the URL's host accepts a TCP connection (file:// URLs: when the file exists), else why not."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return None if Path(urllib.request.url2pathname(parts.path)).is_file() else f"no file {parts.path}"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{parts.hostname}:{port} is unreachable ({e})"


def require(value: str, cache_dir: str | os.PathLike, extra: dict | None = None) -> str:
    """resolve(), and for a name whose file is not in the cache yet: probe the URL's host (a few seconds at
    most), so a run without network stops while the workflow is parsed, before any job, with the URL to
    fetch by hand and the path to put it at."""
    path = resolve(value, cache_dir, extra)
    if os.path.isfile(path):
        return path
    item = entry(value, extra)
    reason = probe(item["url"])
    if reason:
        raise WeightsUnavailable(
            f"named weights {value!r} are not in the cache and cannot be downloaded from here: {reason}. "
            f"Fetch {item['url']} by hand and put it at {os.path.abspath(path)} (expected: {_expected(item)}), "
            "then run again")
    return path
