"""STEGO inference: cluster and linear-probe label maps at image resolution (METHODS.md "STEGO").

Codes of the frozen features (optionally averaged with the codes of the horizontally flipped image,
flipped back) are upsampled bilinearly to the output size; the cluster map is the most cosine-similar
centroid, the linear map the argmax of the probe's logits. With a CRF, the probabilities fed to it are
softmax(alpha x cosine) for clusters (alpha = 2, cosines in [-1, 1] give soft unaries so the image
edges can move boundaries, as STEGO's evaluation does) and softmax(logits) for the linear probe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskless.stego.crf import CrfParams, dense_crf, prepare_image
from maskless.stego.features import extract_features
from maskless.stego.model import ClusterProbe, LinearProbe, StegoHead


def load_stego(path: str, device: str | torch.device = "cpu") -> dict:
    """{"head", "cluster", "linear" (None when it was skipped), "params"} from a train_stego checkpoint,
    modules in eval mode on `device`."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "stego":
        kind = ckpt.get("kind") if isinstance(ckpt, dict) else None
        raise ValueError(f"{path} is not a STEGO checkpoint (kind {kind!r})")
    p = ckpt["params"]
    head = StegoHead(p["in_channels"], p["code_dim"], p["dropout"])
    head.load_state_dict(ckpt["head"])
    cluster = ClusterProbe(p["code_dim"], p["n_clusters"])
    cluster.load_state_dict(ckpt["cluster"])
    linear = None
    if ckpt.get("linear") is not None:
        linear = LinearProbe(p["code_dim"], p["num_classes"])
        linear.load_state_dict(ckpt["linear"])
    mods = {"head": head, "cluster": cluster, "linear": linear}
    for m in mods.values():
        if m is not None:
            m.to(device).eval()
    return {**mods, "params": p}


@torch.no_grad()
def codes_at(head: StegoHead, feats: torch.Tensor, size: tuple[int, int],
             feats_flipped: torch.Tensor | None = None) -> torch.Tensor:
    """(B, D, H, W) codes upsampled to size; averaged with the flipped image's codes (flipped back) when
    feats_flipped (features of the horizontally flipped images, (B, C, h, w)) is given."""
    was_training = head.training
    head.eval()
    try:
        codes = head(feats)  # (B, D, h, w)
        if feats_flipped is not None:
            codes = (codes + head(feats_flipped).flip(-1)) / 2
    finally:
        head.train(was_training)
    return F.interpolate(codes, size=tuple(size), mode="bilinear", align_corners=False)  # (B, D, H, W)


def _maybe_crf(probs: torch.Tensor, images, crf: CrfParams | None) -> torch.Tensor:
    """(B, K, H, W) probs -> (B, H, W) labels, through dense_crf per image when crf is given."""
    if crf is None:
        return probs.argmax(1)
    if images is None:
        raise ValueError("the CRF needs the images (B, 3, H, W) at the output size")
    if len(images) != len(probs):
        raise ValueError(f"{len(images)} images for {len(probs)} probability maps")
    return torch.stack([dense_crf(img, p, crf).argmax(0) for img, p in zip(images, probs)])


@torch.no_grad()
def cluster_maps(codes: torch.Tensor, cluster: ClusterProbe, *, images=None, crf: CrfParams | None = None,
                 alpha: float = 2.0) -> torch.Tensor:
    """(B, H, W) int64 cluster ids of upsampled codes (B, D, H, W); CRF on softmax(alpha x cos) if crf."""
    cos = cluster(codes)  # (B, K, H, W)
    if crf is None:
        return cos.argmax(1)
    return _maybe_crf(torch.softmax(alpha * cos, dim=1), images, crf)


@torch.no_grad()
def linear_maps(codes: torch.Tensor, linear: LinearProbe, *, images=None,
                crf: CrfParams | None = None) -> torch.Tensor:
    """(B, H, W) int64 class ids of the linear probe on upsampled codes (B, D, H, W)."""
    return _maybe_crf(torch.softmax(linear(codes), dim=1), images, crf)


@torch.no_grad()
def predict(backbone: torch.nn.Module, model: dict, images: torch.Tensor, *, layer: str = "res3",
            flip: bool = True, crf: CrfParams | None = None, alpha: float = 2.0) -> dict:
    """{"cluster": (B, H, W), "linear": (B, H, W) or None} for images (B, 3, H, W) uint8 (the maps have the
    images' size). model: load_stego's dict."""
    images = torch.as_tensor(images)
    device = next(model["head"].parameters()).device
    feats = extract_features(backbone, images, layer).to(device)  # (B, C, h, w)
    flipped = extract_features(backbone, images.flip(-1), layer).to(device) if flip else None
    codes = codes_at(model["head"], feats, tuple(images.shape[-2:]), flipped)  # (B, D, H, W)
    # The CRF compares colours in [0, 255]; float images are in [0, 1] (as extract_features takes them).
    colour = images.float() * (255.0 if images.is_floating_point() else 1.0)  # (B, 3, H, W)
    if crf is not None:  # each image's bilateral kernel once, for both probes
        colour = [prepare_image(c, crf, tuple(images.shape[-2:]), codes.device) for c in colour]
    out = {"cluster": cluster_maps(codes, model["cluster"], images=colour, crf=crf, alpha=alpha).cpu(),
           "linear": None}
    if model.get("linear") is not None:
        out["linear"] = linear_maps(codes, model["linear"], images=colour, crf=crf).cpu()
    return out
