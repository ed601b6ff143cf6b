"""Checkpoint reading (every accepted wrapping), errors that name the file and keys, and our own format."""

from __future__ import annotations

import logging

import pytest
import torch

from maskless.models.resnet import build_resnet
from maskless.models.weights import load_backbone, load_state, save_backbone


@pytest.fixture(scope="module")
def r18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_resnet("resnet18").state_dict()


def _same_weights(model, state) -> bool:
    got = model.state_dict()
    return set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)


def test_raw_torchvision_state_with_fc_loads_and_infers_arch(tmp_path, r18_state):
    path = tmp_path / "tv.pth"
    torch.save({**r18_state, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, path)
    state, meta = load_state(str(path))
    assert "fc.weight" not in state and meta["dropped"] == 2 and meta["prefix"] == ""
    assert meta["arch"] == "resnet18" and meta["arch_source"] == "inferred from keys"
    assert _same_weights(load_backbone(str(path)), r18_state)


def test_moco_checkpoint_with_module_encoder_q_prefix(tmp_path, r18_state, caplog):
    """MoCo layout: module.encoder_q.* backbone + fc MLP head, module.encoder_k.* copy, queue buffers.
    Expect 120 backbone keys kept; dropped = 4 fc (q) + 120 + 4 (k) + queue + queue_ptr = 130."""
    wrapped = {f"module.encoder_q.{k}": v for k, v in r18_state.items()}
    wrapped.update({f"module.encoder_k.{k}": v for k, v in r18_state.items()})
    for enc in ("q", "k"):
        for name in ("fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"):
            wrapped[f"module.encoder_{enc}.{name}"] = torch.zeros(1)
    wrapped["module.queue"] = torch.zeros(128, 16)
    wrapped["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    path = tmp_path / "moco.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": wrapped, "optimizer": {}}, path)
    with caplog.at_level(logging.INFO, logger="maskless.models.weights"):
        state, meta = load_state(str(path))
    assert meta["prefix"] == "module.encoder_q." and meta["arch_source"] == "checkpoint"
    assert len(state) == 120 and meta["dropped"] == 130
    assert "dropped 130" in caplog.text
    assert _same_weights(load_backbone(str(path), "resnet18"), r18_state)


def test_openselfsup_densecl_layout_prefers_backbone_over_neck(tmp_path, r18_state):
    """encoder_q = Sequential(backbone, neck): encoder_q.0.* is the backbone, encoder_q.1.* the neck."""
    wrapped = {f"encoder_q.0.{k}": v for k, v in r18_state.items()}
    wrapped.update({"encoder_q.1.mlp.0.weight": torch.zeros(2), "queue2": torch.zeros(3)})
    path = tmp_path / "densecl.pth"
    torch.save({"state_dict": wrapped}, path)
    model = load_backbone(str(path))
    assert _same_weights(model, r18_state)


def test_our_format_roundtrip_is_weights_only_loadable(tmp_path, r18_state):
    model = build_resnet("resnet18")
    model.load_state_dict(r18_state)
    path = tmp_path / "backbone.pt"
    save_backbone(str(path), model, "resnet18", {"steps": 3, "crop": (32, 32)})
    raw = torch.load(path, weights_only=True)
    assert raw["arch"] == "resnet18" and raw["params"]["steps"] == 3 and raw["params"]["norm"] == "bn"
    assert raw["params"]["crop"] == [32, 32]  # tuples become JSON lists
    assert _same_weights(load_backbone(str(path)), r18_state)
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temp file


def test_save_rejects_non_json_params(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        save_backbone(str(tmp_path / "b.pt"), build_resnet("resnet18"), "resnet18", {"x": object()})
    assert not (tmp_path / "b.pt").exists()


def test_missing_num_batches_tracked_is_tolerated(tmp_path, r18_state):
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in r18_state.items() if not k.endswith("num_batches_tracked")}, path)
    load_backbone(str(path), "resnet18")


def test_missing_and_unexpected_keys_are_listed_with_file(tmp_path, r18_state):
    """Drop 12 layer4 tensors and add one stray key: 12 missing (10 shown + '+2 more'), 1 unexpected."""
    drop = [k for k in r18_state if k.startswith("layer4.1.") and not k.endswith("num_batches_tracked")]
    assert len(drop) == 10
    drop += ["layer4.0.conv1.weight", "layer4.0.conv2.weight"]
    state = {k: v for k, v in r18_state.items() if k not in drop}
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        load_backbone(str(path), "resnet18")
    msg = str(err.value)
    assert str(path) in msg and "missing keys 12:" in msg and "(+2 more)" in msg
    assert "unexpected keys 1: extra.weight" in msg


def test_shape_mismatch_is_listed(tmp_path, r18_state):
    state = dict(r18_state)
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"shape mismatches 1: conv1.weight \(64, 3, 3, 3\) vs model \(64, 3, 7, 7\)"):
        load_backbone(str(path), "resnet18")


def test_wrong_arch_requested(tmp_path, r18_state):
    path = tmp_path / "r18.pt"
    model = build_resnet("resnet18")
    save_backbone(str(path), model, "resnet18", {})
    with pytest.raises(ValueError, match="resnet18 backbone but resnet34"):
        load_backbone(str(path), "resnet34")


def test_raw_state_of_unknown_layout_needs_arch(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"layer1.0.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="cannot be inferred"):
        load_backbone(str(path))


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b"", b"PK\x03\x04garbage", b"truncated"])
def test_non_checkpoint_file_names_the_file(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="weights.pth is not a readable torch checkpoint"):
        load_state(str(path))


def test_missing_file_and_empty_dict(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_state(str(tmp_path / "nope.pt"))
    path = tmp_path / "empty.pt"
    torch.save({}, path)
    with pytest.raises(ValueError, match="empty.pt holds no state dict"):
        load_state(str(path))


def test_groupnorm_checkpoint_loads_as_groupnorm(tmp_path):
    model = build_resnet("resnet18", norm="gn")
    path = tmp_path / "gn.pth"
    torch.save(model.state_dict(), path)
    assert load_backbone(str(path)).norm == "gn"


@pytest.mark.parametrize("content, reason", [
    (b"hello, this is a text file\n", "neither a torch zip archive nor a legacy torch pickle"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "neither a torch zip archive nor a legacy torch pickle"),
    (b"PK\x03\x04garbage", "neither a torch zip archive"),
])
def test_non_checkpoint_message_never_advises_weights_only_false(tmp_path, content, reason):
    """torch's own message ends with advice to load with weights_only=False: never pass that on (issue 17)."""
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        load_state(str(path))
    assert reason in str(e.value) and "weights_only=False" not in str(e.value)
    assert "weights_only` set to `False" not in str(e.value)


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_code_executing_pickle_is_named_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "x": _RunsCode()}, path)
    with pytest.raises(ValueError, match=r"holds a Python object \(posix.system\) beyond tensors") as e:
        load_state(str(path))
    assert "weights_only=False" not in str(e.value) and "set to `False" not in str(e.value)
    assert not (tmp_path / "PWNED").exists()
