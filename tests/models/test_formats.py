"""Checkpoint file formats (maskless/models/formats.py): each made tiny in the test, read, keys mapped,
mismatches named; pickles that would run code are refused and run nothing."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import struct

import numpy as np
import pytest
import torch

from maskless.models.formats import detectron2_to_torchvision, read_checkpoint
from maskless.models.resnet import build_resnet
from maskless.models.weights import load_backbone, load_state, read_state_dict


@pytest.fixture(scope="module")
def r18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_resnet("resnet18")
    for name, buf in model.named_buffers():  # non-default statistics, so a mix-up of bn keys shows
        if name.endswith("running_mean"):
            buf.uniform_(-1, 1)
        elif name.endswith("running_var"):
            buf.uniform_(0.5, 2)
    return model.state_dict()


def _same_weights(model, state) -> bool:
    got = model.state_dict()
    return set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)


def _to_d2(key: str) -> str:
    """torchvision -> detectron2 names, the renaming of detectron2's tools/convert-torchvision-to-d2.py
    (and FreeSOLO's tools/convert-pretrain-to-detectron2.py), written out here independently."""
    if "layer" not in key:
        key = "stem." + key
    key = re.sub(r"layer([1-4])", lambda m: f"res{int(m.group(1)) + 1}", key)
    key = re.sub(r"bn([1-3])", r"conv\1.norm", key)
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def _write_d2_pkl(path, state, author="torchvision"):
    model = {_to_d2(k): v.numpy() for k, v in state.items()}
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": author, "matching_heuristics": True}, f)


# --- detectron2 .pkl ----------------------------------------------------------------------------------------


def test_detectron2_key_names_map_to_torchvision():
    cases = {
        "stem.conv1.weight": "conv1.weight",
        "stem.conv1.norm.running_var": "bn1.running_var",
        "res2.0.conv1.weight": "layer1.0.conv1.weight",
        "res2.0.conv3.norm.bias": "layer1.0.bn3.bias",
        "res3.0.shortcut.weight": "layer2.0.downsample.0.weight",
        "res5.2.shortcut.norm.running_mean": "layer4.2.downsample.1.running_mean",
        "res4.22.conv2.norm.weight": "layer3.22.bn2.weight",
    }
    assert {k: detectron2_to_torchvision(k) for k in cases} == cases
    for tv in cases.values():  # the inverse of the converter's renaming
        assert detectron2_to_torchvision(_to_d2(tv)) == tv


@pytest.mark.parametrize("author", ["torchvision", "OpenSelfSup"])  # detectron2's converter / FreeSOLO's
def test_detectron2_pkl_loads_as_torchvision_resnet(tmp_path, r18_state, author):
    path = tmp_path / "densecl_r18.pkl"
    _write_d2_pkl(path, r18_state, author)
    state, meta = read_state_dict(str(path))
    assert meta["file_format"] == "detectron2-pkl" and meta["format"] == "model"
    assert "stem.conv1.norm.running_mean" in state and "res3.0.shortcut.norm.weight" in state
    _, meta = load_state(str(path))
    assert meta["key_names"] == "detectron2" and meta["arch"] == "resnet18"
    assert _same_weights(load_backbone(str(path)), r18_state)


def test_detectron2_pkl_missing_key_is_named(tmp_path, r18_state):
    state = {k: v for k, v in r18_state.items() if k != "layer2.0.downsample.1.weight"}
    path = tmp_path / "partial.pkl"
    _write_d2_pkl(path, state)
    with pytest.raises(ValueError, match=r"partial.pkl does not fit.*missing keys 1: layer2.0.downsample.1.weight"):
        load_backbone(str(path), "resnet18")


@pytest.mark.parametrize("protocol, numpy_module", [(0, "numpy.core"), (2, "numpy.core"), (2, "numpy._core"),
                                                    (4, "numpy._core"), (5, "numpy._core")])
def test_detectron2_pkl_of_any_protocol_and_numpy_generation(tmp_path, protocol, numpy_module):
    """Files written by Python 3.6-3.14 (protocols 3-5) and numpy 1.x (module numpy.core) or 2.x (numpy._core);
    protocols 0-2 (text GLOBALs) let the module name be swapped to the numpy 1.x one."""
    weights = {"stem.conv1.weight": np.arange(6, dtype=np.float32).reshape(2, 3).T, "res2.0.conv1.norm.bias":
               np.ones(2, np.float16), "stem.conv1.norm.num_batches_tracked": np.int64(7), "note": np.str_("x")}
    raw = pickle.dumps({"model": weights, "__author__": "OpenSelfSup", "matching_heuristics": True}, protocol=protocol)
    if protocol <= 2:
        raw = raw.replace(b"numpy._core.", f"{numpy_module}.".encode())
        assert f"{numpy_module}.multiarray".encode() in raw
    path = tmp_path / "d2.pkl"
    path.write_bytes(raw)
    state, _ = read_state_dict(str(path))
    assert set(state) == {"stem.conv1.weight", "res2.0.conv1.norm.bias", "stem.conv1.norm.num_batches_tracked"}
    assert state["stem.conv1.weight"].tolist() == [[0, 3], [1, 4], [2, 5]]
    assert state["res2.0.conv1.norm.bias"].dtype == torch.float16 and state["stem.conv1.norm.num_batches_tracked"] == 7


class _System:
    def __reduce__(self):
        return (os.system, ("touch PWNED_SYSTEM",))


class _Eval:
    def __reduce__(self):
        return (eval, ("open('PWNED_EVAL', 'w').close()",))


@pytest.mark.parametrize("payload, refused", [(_System(), "posix.system"), (_Eval(), "builtins.eval")])
def test_code_running_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch, payload, refused):
    """A .pkl whose unpickling would call os.system / eval: refused by name, and no marker file appears."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"stem.conv1.weight": np.zeros(1, np.float32), "x": payload}}, f)
    with pytest.raises(ValueError, match=rf"evil.pkl is a pickle that names the global {re.escape(refused)}"):
        load_state(str(path))
    assert not list(tmp_path.glob("PWNED*"))


class _Codec:
    def __reduce__(self):
        import codecs

        return (codecs.encode, (b"x" * 10, "zlib"))


def test_pickle_codec_other_than_latin1_is_refused(tmp_path):
    path = tmp_path / "codec.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"x": _Codec()}}, f)
    with pytest.raises(ValueError, match=r"codec.pkl is not a readable pickle of numpy arrays.*codec 'zlib'"):
        read_checkpoint(str(path))


def test_truncated_pickle_names_the_file(tmp_path, r18_state):
    path = tmp_path / "cut.pkl"
    _write_d2_pkl(path, r18_state)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cut.pkl is not a readable pickle of numpy arrays"):
        read_checkpoint(str(path))


# --- safetensors --------------------------------------------------------------------------------------------

_ST_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}


def _write_safetensors(path, tensors, header_extra=None):
    """The safetensors layout, written out: u64 LE header length, JSON header, raw little-endian buffer."""
    header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        span = [offset, offset + len(raw)]
        header[name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": span}
        chunks.append(raw)
        offset += len(raw)
    header.update(header_extra or {})
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def test_safetensors_dtypes_round_trip(tmp_path):
    tensors = {
        "a": torch.randn(2, 3),
        "b": torch.randn(4).half(),
        "c": torch.randn(3, 1).bfloat16(),
        "d": torch.tensor([1, -2, 2**40]),
        "scalar": torch.tensor(7),
        "empty": torch.zeros(0, 5),
    }
    path = tmp_path / "mixed.safetensors"
    _write_safetensors(path, tensors)
    state, meta = read_state_dict(str(path))
    assert meta["file_format"] == "safetensors" and set(state) == set(tensors)
    for k, t in tensors.items():
        assert state[k].dtype == t.dtype and state[k].shape == t.shape and torch.equal(state[k], t)


def test_timm_resnet_safetensors_and_plain_state_dict_load(tmp_path, r18_state):
    """timm's ResNet keys are torchvision's (conv1, bn1, layer1..4, fc); fc is dropped and counted."""
    timm_state = {**r18_state, "fc.weight": torch.randn(10, 512), "fc.bias": torch.randn(10)}
    st, pth = tmp_path / "model.safetensors", tmp_path / "pytorch_model.bin"
    _write_safetensors(st, timm_state)
    torch.save(timm_state, pth)
    for path in (st, pth):
        _, meta = load_state(str(path))
        assert meta["dropped"] == 2 and meta["arch"] == "resnet18"
        assert _same_weights(load_backbone(str(path)), r18_state)


def test_safetensors_shape_mismatch_is_named(tmp_path, r18_state):
    state = dict(r18_state)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "bad_shape.safetensors"
    _write_safetensors(path, state)
    with pytest.raises(ValueError, match=r"bad_shape.safetensors does not fit.*layer1.0.conv1.weight \(64, 64, 1, 1\)"):
        load_backbone(str(path), "resnet18")


@pytest.mark.parametrize("extra, message", [
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 999]}}, "has data_offsets \\[0, 999\\] outside"),
    ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 4]}}, "spans 4 bytes; dtype F32 shape \\[3\\] needs 12"),
    ({"x": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, "has dtype 'C64'"),
    ({"x": {"dtype": "F32", "shape": [1]}}, "lacks dtype, shape or data_offsets"),
])
def test_malformed_safetensors_entry_is_named(tmp_path, extra, message):
    path = tmp_path / "bad.safetensors"
    _write_safetensors(path, {"ok": torch.zeros(2)}, extra)
    with pytest.raises(ValueError, match=rf"bad.safetensors is a malformed safetensors file: tensor 'x' {message}"):
        read_checkpoint(str(path))


@pytest.mark.parametrize("content, message", [
    (struct.pack("<Q", 10**6) + b"{}", "header length 1000000 exceeds the file"),
    (struct.pack("<Q", 4) + b"{abc", "its header is not JSON"),
    (struct.pack("<Q", 2) + b"{]", "its header is not JSON"),
])
def test_malformed_safetensors_header_is_named(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"bad.safetensors is a malformed safetensors file: {message}"):
        read_checkpoint(str(path))


# --- OpenSelfSup / mmcv and DINO containers -----------------------------------------------------------------


def test_mmcv_openselfsup_layout_with_backbone_prefix_and_meta(tmp_path, r18_state):
    """mmcv's checkpoint: {"state_dict": {"backbone.*", "neck.*"}, "meta": {...}}; the neck is dropped."""
    wrapped = {f"backbone.{k}": v for k, v in r18_state.items()}
    wrapped.update({"neck.mlp.0.weight": torch.zeros(4, 512), "neck.mlp.0.bias": torch.zeros(4)})
    path = tmp_path / "densecl_mmcv.pth"
    torch.save({"state_dict": wrapped, "meta": {"epoch": 200, "mmcv_version": "0.4.3", "config": "model = ..."}}, path)
    state, meta = load_state(str(path))
    assert meta["prefix"] == "backbone." and meta["format"] == "state_dict" and meta["dropped"] == 2
    assert _same_weights(load_backbone(str(path)), r18_state)


def test_densecl_released_backbone_layout(tmp_path, r18_state):
    """DenseCL's tools/extract_backbone_weights.py output (its released files): {"state_dict": torchvision
    keys, "author": "DenseCL"}."""
    path = tmp_path / "densecl_r18.pth"
    torch.save({"state_dict": dict(r18_state), "author": "DenseCL"}, path)
    _, meta = load_state(str(path))
    assert meta["prefix"] == "" and meta["format"] == "state_dict" and meta["dropped"] == 0
    assert _same_weights(load_backbone(str(path)), r18_state)


def _dino_vit_keys(prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}cls_token": torch.randn(1, 1, 8), f"{prefix}pos_embed": torch.randn(1, 5, 8),
            f"{prefix}patch_embed.proj.weight": torch.randn(8, 3, 2, 2),
            f"{prefix}blocks.0.norm1.weight": torch.randn(8)}


def test_dino_training_checkpoint_reads_the_teacher(tmp_path):
    """DINO's main_dino.py checkpoint: student (DDP-wrapped), teacher, optimizer state, epoch, argparse args,
    the loss's centre. The teacher's tensors come back, keys as stored (backbone.* and head.*)."""
    teacher = {**_dino_vit_keys("backbone."), "head.last_layer.weight_g": torch.ones(1, 4)}
    student = {f"module.{k}": v + 1 for k, v in teacher.items()}
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = torch.optim.AdamW(params)
    params[0].grad = torch.ones(3)
    opt.step()
    path = tmp_path / "checkpoint.pth"
    torch.save({"student": student, "teacher": teacher, "optimizer": opt.state_dict(), "epoch": 3,
                "args": argparse.Namespace(arch="vit_small", patch_size=16),
                "dino_loss": {"center": torch.zeros(1, 4)}},
               path)
    state, meta = read_state_dict(str(path))
    assert meta["format"] == "dino-teacher" and set(state) == set(teacher)
    assert all(torch.equal(state[k], teacher[k]) for k in teacher)


def test_dino_backbone_only_file_is_read_as_is(tmp_path):
    vit = _dino_vit_keys("")
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(vit, path)
    state, meta = read_state_dict(str(path))
    assert meta["format"] == "raw" and set(state) == set(vit)


class _Scaler:  # an object a training script might pickle whole
    pass


def test_training_checkpoint_with_objects_is_refused_clearly(tmp_path):
    path = tmp_path / "full.pth"
    torch.save({"teacher": _dino_vit_keys("backbone."), "student": {}, "scaler": _Scaler()}, path)
    with pytest.raises(ValueError, match=r"full.pth is not a readable torch checkpoint: it holds a Python object "
                                         r"\(.*_Scaler\).*backbone-only file") as e:
        read_state_dict(str(path))
    assert "weights_only=False" not in str(e.value)
