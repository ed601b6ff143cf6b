"""Named weights (maskless/models/registry.py), end to end against a local HTTP server on 127.0.0.1: a good
download, a corrupted one, a wrong hash, a truncated body, no server; and the workflow's plan for a name."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch
import yaml

from maskless.models import registry
from maskless.models.resnet import build_resnet
from maskless.models.weights import load_backbone

REPO = Path(__file__).resolve().parents[2]


class _Server:
    """Serves routes: path -> (body, declared Content-Length); counts the requests per path."""

    def __init__(self):
        self.routes: dict[str, tuple[bytes, int]] = {}
        self.hits: dict[str, int] = {}
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                hits[self.path] = hits.get(self.path, 0) + 1
                if self.path not in routes:
                    self.send_error(404)
                    return
                body, length = routes[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def serve(self, path: str, body: bytes, length: int | None = None) -> str:
        self.routes[path] = (body, len(body) if length is None else length)
        return self.url + path


@pytest.fixture
def server():
    srv = _Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> tuple[bytes, str]:
    """A tiny torchvision-layout ResNet-18 checkpoint's bytes and sha256."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "r18.pth"
    torch.save(build_resnet("resnet18").state_dict(), path)
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_checks_the_hash_and_loads(tmp_path, server, ckpt):
    data, sha = ckpt
    extra = {"tiny": {"url": server.serve("/tiny.pth", data), "file": "tiny.pth", "sha256": sha}}
    cache = tmp_path / "cache"
    path = registry.download("tiny", cache, extra)
    assert Path(path) == cache / "tiny.pth" and Path(path).read_bytes() == data
    assert _leftovers(cache) == ["tiny.pth"]  # no temporary file left beside it
    assert load_backbone(path).norm == "bn"
    assert registry.download("tiny", cache, extra) == path and server.hits["/tiny.pth"] == 1  # cached: no fetch


def test_torchvision_style_prefix_is_checked(tmp_path, server, ckpt):
    data, sha = ckpt
    good = {"url": server.serve("/r18.pth", data), "file": "r18.pth", "sha256": None, "sha256_prefix": sha[:8]}
    assert Path(registry.fetch(good, tmp_path / "r18.pth")).is_file()
    bad = {**good, "sha256_prefix": "00000000" if not sha.startswith("0" * 8) else "ffffffff"}
    with pytest.raises(ValueError, match=f"expected sha256 beginning {bad['sha256_prefix']}"):
        registry.fetch(bad, tmp_path / "other.pth")
    assert _leftovers(tmp_path) == ["r18.pth"]


def test_corrupted_download_is_refused_and_leaves_nothing(tmp_path, server, ckpt):
    """The server sends other bytes of the same length: the hash differs; URL and both hashes are named."""
    data, sha = ckpt
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    url = server.serve("/tiny.pth", bytes(corrupt))
    extra = {"tiny": {"url": url, "file": "tiny.pth", "sha256": sha}}
    with pytest.raises(ValueError) as e:
        registry.download("tiny", tmp_path / "cache", extra)
    msg = str(e.value)
    assert url in msg and sha in msg and hashlib.sha256(corrupt).hexdigest() in msg
    assert _leftovers(tmp_path / "cache") == []


def test_wrong_hash_in_entry_is_refused(tmp_path, server, ckpt):
    data, sha = ckpt
    wrong = "0" * 64
    extra = {"tiny": {"url": server.serve("/tiny.pth", data), "file": "tiny.pth", "sha256": wrong}}
    with pytest.raises(ValueError, match=f"has sha256 {sha}, expected sha256 {wrong}"):
        registry.download("tiny", tmp_path / "cache", extra)
    assert _leftovers(tmp_path / "cache") == []


def test_truncated_download_is_refused_even_without_a_hash(tmp_path, server, ckpt):
    """The server declares the whole length but sends half and closes: caught without any hash."""
    data, _ = ckpt
    url = server.serve("/cut.pth", data[: len(data) // 2], length=len(data))
    extra = {"cut": {"url": url, "file": "cut.pth", "sha256": None}}
    with pytest.raises(ValueError, match=f"download of {url} (is truncated|broke off)"):
        registry.download("cut", tmp_path / "cache", extra)
    assert _leftovers(tmp_path / "cache") == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_stops_with_url_and_path(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/gone.pth"
    extra = {"gone": {"url": url, "file": "gone.pth", "sha256": "a" * 64}}
    with pytest.raises(registry.WeightsUnavailable) as e:
        registry.require("gone", tmp_path / "cache", extra)
    msg = str(e.value)
    assert f"Fetch {url} by hand and put it at {tmp_path / 'cache' / 'gone.pth'}" in msg  # absolute
    assert "unreachable" in msg and "a" * 64 in msg
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "gone.pth").write_bytes(b"x")  # in the cache: no probe, no error
    assert registry.require("gone", tmp_path / "cache", extra) == str(tmp_path / "cache" / "gone.pth")


def test_resolve_paths_names_and_unknowns(tmp_path):
    own = tmp_path / "own.pth"
    own.write_bytes(b"x")
    assert registry.resolve(str(own), "weights") == str(own)
    assert registry.resolve("dino_vitb8", "w") == str(Path("w") / "dino_vitbase8_pretrain.pth")
    with pytest.raises(ValueError, match=r"'dino_vitb9' is neither an existing file nor a known name.*dino_vitb8"):
        registry.resolve("dino_vitb9", "w")


def test_registry_entries_are_consistent():
    """Every built-in entry: an https URL of its publisher ending in its file name; a full sha256 or
    torchvision's prefix (the file name's 8 hex digits), or a note that the publisher gives none."""
    assert {"densecl_r50_imagenet", "densecl_r101_imagenet", "dino_vits16", "dino_vits8", "dino_vitb16",
            "dino_vitb8", "torchvision_resnet18", "torchvision_resnet50"} <= set(registry.REGISTRY)
    files = [item["file"] for item in registry.REGISTRY.values()]
    assert len(files) == len(set(files))  # rule fetch_weights finds the entry by its file name
    hosts = {"huggingface.co", "dl.fbaipublicfiles.com", "download.pytorch.org"}
    for name, item in registry.REGISTRY.items():
        parts = urlsplit(item["url"])
        assert parts.scheme == "https" and parts.hostname in hosts, name
        assert parts.path.rsplit("/", 1)[-1] == item["file"], name
        assert item["source"] and item["arch"] and item["format"], name
        if item.get("sha256_prefix"):
            assert item["file"].rsplit("-", 1)[-1].split(".")[0] == item["sha256_prefix"], name
        elif not item.get("sha256"):
            assert "none published" in item["hash_note"], name


def _snakemake(workdir: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess:
    (workdir / "named.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", *args, "--cores", "1", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(workdir / "named.yaml")]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_workflow_plans_and_runs_the_fetch_of_a_named_pretrain_weight(tmp_path, server, ckpt):
    """pretrain.weights: a name -> rule pretrain takes <cache>/<file>, which rule fetch_weights makes. The dry
    run downloads nothing (the probe only connects); running the fetch alone gets the checked file; with
    the server gone the workflow stops while parsing, naming the URL and the path."""
    data, sha = ckpt
    url = server.serve("/mine.pth", data)
    cfg = yaml.safe_load((REPO / "tests" / "workflow" / "tiny.yaml").read_text())
    cfg["pretrain"] = {**cfg.get("pretrain", {}), "weights": "mine", "arch": "resnet18"}
    cfg["weights"] = {"cache": "wcache", "extra": {"mine": {"url": url, "file": "mine.pth", "sha256": sha}}}
    proc = _snakemake(tmp_path, cfg, f"results/{cfg['experiment']}/pretrain/backbone.pt", "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "rule fetch_weights:" in out and "wcache/mine.pth" in out and "rule pretrain:" in out
    assert "Building DAG of jobs" in out
    assert server.hits.get("/mine.pth", 0) == 0 and not (tmp_path / "wcache").exists()

    proc = _snakemake(tmp_path, cfg, "wcache/mine.pth")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "wcache" / "mine.pth").read_bytes() == data and server.hits["/mine.pth"] == 1

    gone = f"http://127.0.0.1:{_closed_port()}/mine.pth"
    cfg["weights"]["extra"]["mine"].update(url=gone, file="other.pth")
    proc = _snakemake(tmp_path, cfg, f"results/{cfg['experiment']}/pretrain/backbone.pt", "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "WeightsUnavailable" in out
    assert f"Fetch {gone} by hand and put it at {tmp_path / 'wcache' / 'other.pth'}" in out
    assert "Building DAG of jobs" not in out  # stopped while parsing the rules, before planning any job
