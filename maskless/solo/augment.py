"""Training samples for self-supervised SOLO: resize, flip, scale jitter, copy-paste, weak and strong views.

METHODS.md "Self-supervised SOLO (FreeSOLO)": FreeSOLO trains on weak and strong views of each image and
pastes instances between images (copy-paste, after Ghiasi et al. 2021, "Simple Copy-Paste"). Per batch:

1. weak_sample: resize so the short side is input_size x s (s drawn from scale_jitter; the long side is
   capped at twice that, maskless.data.images.resized_hw), then a horizontal flip with p_flip. Masks follow the
   same geometry (bilinear on 0/1, threshold 0.5); masks that vanish are dropped with their embeddings.
2. copy_paste (Ghiasi et al.'s copy-paste as FreeSOLO's freesolo/engine/trainer.py copy_and_paste and
   run_step do it, by default; each way maskless did it before issue 15 is a named value, given in brackets):
   - copy_paste_prob: the share of images that receive instances; FreeSOLO pastes into every image, 1 (0.5).
   - copy_paste_source: image b of the batch receives from image B-1-b, "reverse" (FreeSOLO's data_k[::-1];
     the middle image of an odd batch is its own source), or from a random other image, "random".
   - copy_paste_min, copy_paste_max: the count k is uniform in min..n, n the source's instances capped at max;
     FreeSOLO draws 0..n (np.random.randint(n + 1)), min 0, max None (1 and 3). k = 0 pastes nothing.
   - copy_paste_max_ioy: a drawn instance is not pasted when it would cover that share or more of one of the
     target's instances (IoY: intersection over the target instance's area); FreeSOLO's 0.5 (None: no filter).
   - copy_paste_view: the source's weak sample (resized whole to the target's size, so its instances keep
     their relative place and scale) goes with its pixels, masks and embeddings onto the target's strong
     view after its photometric changes and erasing, "strong" (FreeSOLO pastes into data_q, the strong
     views; the weak views keep their image and masks, so the two views have masks of their own), or into
     the weak sample before its strong view is made, "both" (both views carry the paste and share masks).
   - copy_paste_occlude_pasted: each pasted instance hides what it covers of those pasted before it, True;
     FreeSOLO keeps every pasted mask whole and pastes the union of their pixels, False. The target's own
     masks keep only their visible part either way.
   - copy_paste_min_visible_px: masks with fewer visible pixels are dropped with their embeddings. FreeSOLO
     drops none; a mask hidden entirely gives it no target (freesolo/modeling/solov2/solov2.py skips empty
     masks), which 1 reproduces (16: one 4x4 mask-resolution cell).
   Smaller differences remain: FreeSOLO resizes the source bilinearly and keeps every mask pixel above 0
   (here INTER_AREA when shrinking and >= 0.5, resize_masks), and draws k before that resize (here after
   dropping masks that vanish in it).
3. strong_view: the weak view's pixels (after pasting with copy_paste_view "both") with colour jitter,
   grayscale and Gaussian blur, then (random_erasing) FreeSOLO's three RandomErasing passes: the same
   geometry, so the same masks serve both views but for the pasted ones (FreeSOLO keeps the masks of erased
   pixels too).

How training uses the two views is maskless.solo.train.SoloTrainParams.views (document there). Every
random draw comes from the numpy Generator passed in, so a step's samples are a function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from maskless.data.images import resized_hw
from maskless.data.photometric import LUMA, color_jitter

_CV_CHANNELS = 256  # masks resized this many at a time (cv2 takes at most 512 channels)


@dataclass
class Sample:
    """One training sample: image (H, W, 3) uint8 (the weak view), masks (N, H, W) bool, embeddings (N, E)
    float32 or None. strong: (H, W, 3) uint8 photometric variant of image, once strong_view has run.
    strong_labels: (masks, embeddings) of the strong view when they differ from the weak view's (copy-paste
    onto the strong view alone); None: the strong view has the weak view's masks and embeddings."""

    image: np.ndarray
    masks: np.ndarray
    embeddings: np.ndarray | None
    strong: np.ndarray | None = None
    strong_labels: tuple[np.ndarray, np.ndarray | None] | None = None

    def view(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(image, masks, embeddings) of view "weak" or "strong"."""
        if name == "weak":
            return self.image, self.masks, self.embeddings
        if name != "strong" or self.strong is None:
            raise ValueError(f"Sample.view: no view {name!r} (views: weak, and strong once strong_view has run)")
        return (self.strong, *(self.strong_labels or (self.masks, self.embeddings)))


@dataclass(frozen=True)
class SoloAugmentParams:
    input_size: int = 160
    scale_jitter: tuple[float, float] = (1.0, 1.0)  # short side = input_size x U(lo, hi)
    p_flip: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    p_jitter: float = 0.8
    p_gray: float = 0.2
    p_blur: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # px at 224, scaled by the image's short side / 224
    random_erasing: bool = True
    # Copy-paste (module docstring); the defaults are FreeSOLO's, the comments give maskless's earlier values.
    copy_paste_prob: float = 1.0  # earlier 0.5
    copy_paste_min: int = 0  # earlier 1
    copy_paste_max: int | None = None  # None: up to all the source's instances; earlier 3
    copy_paste_max_ioy: float | None = 0.5  # None: no overlap filter (earlier)
    copy_paste_source: str = "reverse"  # or "random" (earlier)
    copy_paste_view: str = "strong"  # or "both" (earlier)
    copy_paste_occlude_pasted: bool = False  # earlier True
    copy_paste_min_visible_px: int = 1  # earlier 16


# FreeSOLO's strong augmentation (freesolo/data/detection_utils.py build_strong_augmentation): three
# torchvision RandomErasing passes (probability, area fraction range, aspect-ratio range), value "random".
ERASING = ((0.7, (0.05, 0.2), (0.3, 3.3)), (0.5, (0.02, 0.2), (0.1, 6.0)), (0.3, (0.02, 0.2), (0.05, 8.0)))
_ERASE_ATTEMPTS = 10  # torchvision's: a box that does not fit the image is drawn again, up to 10 times


def resize_masks(masks: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(N, H, W) bool -> (N, h, w) bool: bilinear on 0/1 then >= 0.5 (smoother than nearest on coarse masks)."""
    n = masks.shape[0]
    if n == 0 or masks.shape[1:] == tuple(hw):
        return masks.reshape(n, *hw) if n == 0 else masks.copy()
    out = []
    for start in range(0, n, _CV_CHANNELS):
        chunk = masks[start : start + _CV_CHANNELS].transpose(1, 2, 0).astype(np.uint8) * 255  # (H, W, c)
        res = cv2.resize(chunk, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
        out.append(res.reshape(hw[0], hw[1], -1).transpose(2, 0, 1) >= 128)  # (c, h, w)
    return np.ascontiguousarray(np.concatenate(out))


def resize_sample(image: np.ndarray, masks: np.ndarray, embeddings: np.ndarray | None,
                  hw: tuple[int, int]) -> Sample:
    """Resize image and masks to hw; masks that vanish are dropped with their embedding rows."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"SOLO augment expects (H, W, 3) uint8 RGB images, got {image.shape} {image.dtype}")
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"SOLO augment: masks {masks.shape} do not fit the image {image.shape[:2]}")
    if embeddings is not None and len(embeddings) != len(masks):
        raise ValueError(f"SOLO augment: {len(embeddings)} embeddings for {len(masks)} masks")
    if image.shape[:2] != tuple(hw):
        down = hw[0] < image.shape[0] and hw[1] < image.shape[1]
        image = cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)
    masks = resize_masks(masks.astype(bool, copy=False), hw)
    keep = masks.reshape(len(masks), hw[0] * hw[1]).any(1)  # (N,); explicit size: N may be 0
    emb = None if embeddings is None else np.asarray(embeddings, dtype=np.float32)[keep]
    return Sample(image, masks[keep], emb)


def weak_sample(image: np.ndarray, masks: np.ndarray, embeddings: np.ndarray | None,
                rng: np.random.Generator, params: SoloAugmentParams) -> Sample:
    """Weak view: resize (with scale jitter) and a random horizontal flip."""
    lo, hi = params.scale_jitter
    s = rng.uniform(lo, hi) if hi > lo else lo
    sample = resize_sample(image, masks, embeddings, resized_hw(*image.shape[:2], params.input_size * s))
    if rng.random() < params.p_flip:
        sample.image = np.ascontiguousarray(sample.image[:, ::-1])
        sample.masks = np.ascontiguousarray(sample.masks[:, :, ::-1])
    return sample


def _merge_embeddings(a: np.ndarray | None, na: int, b: np.ndarray | None, nb: int) -> np.ndarray | None:
    """Stack embedding rows; a side without embeddings gives zero rows (the loss skips zero-norm targets)."""
    if a is None and b is None:
        return None
    if a is not None and b is not None and a.shape[1] != b.shape[1]:
        raise ValueError(f"copy_paste: embedding dims differ ({a.shape[1]} vs {b.shape[1]})")
    dim = (a if a is not None else b).shape[1]
    a = np.zeros((na, dim), np.float32) if a is None else a
    b = np.zeros((nb, dim), np.float32) if b is None else b
    return np.concatenate([a, b]).astype(np.float32)


def copy_paste(target: Sample, source: Sample, rng: np.random.Generator, *, min_instances: int,
               max_instances: int | None, max_ioy: float | None, occlude_pasted: bool,
               min_visible_px: int) -> tuple[Sample, int]:
    """Paste k random instances of `source` onto `target` -> (new sample, number pasted).

    The source is first resized whole to the target's size; k is uniform in min_instances..n, n the source's
    instance count capped at max_instances (None: no cap); k = 0 pastes nothing. With max_ioy, a drawn
    instance covering at least that share of one of the target's own instances (IoY = |pasted & target| /
    |target|) is left out (the draws are the same either way). The target's masks keep only their visible
    part. occlude_pasted: the pasted instances go in their drawn order, each hiding what it covers of the
    earlier ones; else each pasted mask stays whole (overlapping ones share pixels). Masks with fewer than
    min_visible_px visible pixels (at least 1) are dropped with their embeddings.
    """
    n_src = len(source.masks)
    if n_src == 0 or (max_instances is not None and max_instances < 1):
        return target, 0
    hw = target.image.shape[:2]
    src = resize_sample(source.image, source.masks, source.embeddings, hw)
    if len(src.masks) == 0:
        return target, 0
    hi = len(src.masks) if max_instances is None else min(max_instances, len(src.masks))
    k = int(rng.integers(min(min_instances, hi), hi + 1))
    if k == 0:
        return target, 0
    chosen = np.sort(rng.choice(len(src.masks), size=k, replace=False))
    if max_ioy is not None and len(target.masks):
        chosen = chosen[overlap_ioy(src.masks[chosen], target.masks).max(1) < max_ioy]
        k = len(chosen)
        if k == 0:
            return target, 0
    image = target.image.copy()
    masks = np.concatenate([target.masks, src.masks[chosen]]) if len(target.masks) else src.masks[chosen].copy()
    emb = _merge_embeddings(target.embeddings, len(target.masks),
                            None if src.embeddings is None else src.embeddings[chosen], k)
    n_old = len(target.masks)
    if occlude_pasted:
        for j in range(k):
            paste = masks[n_old + j].copy()  # (H, W)
            image[paste] = src.image[paste]
            masks[: n_old + j] &= ~paste  # everything below this instance loses what it covers
    else:
        paste = masks[n_old:].any(0)  # (H, W): the union; the pixels are the source's either way
        image[paste] = src.image[paste]
        masks[:n_old] &= ~paste
    keep = masks.reshape(len(masks), hw[0] * hw[1]).sum(1) >= max(1, min_visible_px)  # (N + k,)
    return Sample(image, masks[keep], None if emb is None else emb[keep]), k


def overlap_ioy(pasted: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(K, H, W), (N, H, W) bool -> (K, N): |pasted_k & target_n| / |target_n| (0 for an empty target)."""
    p = pasted.reshape(len(pasted), -1).astype(np.float32)
    t = targets.reshape(len(targets), -1).astype(np.float32)
    return (p @ t.T) / np.maximum(t.sum(1), 1.0)[None, :]


def strong_view(image: np.ndarray, rng: np.random.Generator, params: SoloAugmentParams) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 with colour jitter (p_jitter), grayscale (p_gray) and Gaussian
    blur (p_blur): the MoCo v2 photometric set, no geometry, so masks are unchanged."""
    view = image.astype(np.float32) / 255.0
    if rng.random() < params.p_jitter:
        view = color_jitter(view, rng, params.jitter)
    if rng.random() < params.p_gray:
        view = np.repeat((view @ LUMA)[..., None], 3, axis=2)
    if rng.random() < params.p_blur:
        sigma = rng.uniform(*params.blur_sigma) * min(image.shape[:2]) / 224.0
        view = cv2.GaussianBlur(view, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    return np.clip(np.rint(view * 255.0), 0, 255).astype(np.uint8)


def random_erasing(image: np.ndarray, rng: np.random.Generator, passes=ERASING) -> np.ndarray:
    """(H, W, 3) uint8 -> a copy with up to len(passes) rectangles replaced by uniform random pixels.

    Each pass (p, scale, ratio) runs with probability p: area = H W U(scale), aspect ratio log-uniform in
    ratio, h = round(sqrt(area r)), w = round(sqrt(area / r)); the box is placed uniformly if it fits
    (h < H and w < W), else drawn again (torchvision's RandomErasing). torchvision's value "random" is a
    standard normal in [0, 1] units that ToPILImage wraps to bytes, i.e. noise; here uniform noise in [0, 255].
    """
    out = image.copy()
    height, width = image.shape[:2]
    for p, scale, ratio in passes:
        if rng.random() >= p:
            continue
        log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        for _ in range(_ERASE_ATTEMPTS):
            area = height * width * rng.uniform(*scale)
            r = math.exp(rng.uniform(*log_ratio))
            h, w = int(round(math.sqrt(area * r))), int(round(math.sqrt(area / r)))
            if 0 < h < height and 0 < w < width:
                top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                out[top : top + h, left : left + w] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                break
    return out


def batch_samples(items: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]], rng: np.random.Generator,
                  params: SoloAugmentParams) -> tuple[list[Sample], int]:
    """Weak samples of a batch, copy-paste between them and strong views -> (samples, instances pasted).

    Copy-paste sources are the weak samples before any pasting, so the result does not depend on the order
    in which targets are processed (beyond the draws' order). copy_paste_view "both": paste into the weak
    sample, then make the strong view of the result; "strong": make the strong views, then paste the
    sources' weak pixels onto them, with the strong view's own masks (Sample.strong_labels).
    """
    weak = [weak_sample(img, m, e, rng, params) for img, m, e in items]
    onto_strong = params.copy_paste_view == "strong"
    out = [Sample(s.image, s.masks, s.embeddings) for s in weak]
    if onto_strong:
        _add_strong_views(out, rng, params)
    pasted = 0
    for b in range(len(weak)):
        other = _paste_source(b, len(weak), rng, params)
        if other is None:
            continue
        target = Sample(out[b].strong, out[b].masks, out[b].embeddings) if onto_strong else out[b]
        new, k = copy_paste(target, weak[other], rng, max_instances=params.copy_paste_max,
                            min_instances=params.copy_paste_min, min_visible_px=params.copy_paste_min_visible_px,
                            max_ioy=params.copy_paste_max_ioy, occlude_pasted=params.copy_paste_occlude_pasted)
        pasted += k
        if not onto_strong:
            out[b] = new
        elif k:
            out[b].strong, out[b].strong_labels = new.image, (new.masks, new.embeddings)
    if not onto_strong:
        _add_strong_views(out, rng, params)
    return out, pasted


def _paste_source(b: int, n: int, rng: np.random.Generator, params: SoloAugmentParams) -> int | None:
    """Index of the sample whose instances sample b of n receives, or None (no copy-paste for it).
    "reverse": sample n - 1 - b (FreeSOLO; the middle one of an odd batch is its own source); "random": any
    sample but b."""
    if params.copy_paste_source == "random" and n < 2:
        return None
    if not rng.random() < params.copy_paste_prob:
        return None
    if params.copy_paste_source == "reverse":
        return n - 1 - b
    return (b + 1 + int(rng.integers(n - 1))) % n


def _add_strong_views(samples: list[Sample], rng: np.random.Generator, params: SoloAugmentParams) -> None:
    for s in samples:
        s.strong = strong_view(s.image, rng, params)
        if params.random_erasing:
            s.strong = random_erasing(s.strong, rng)


def padded_size(samples: list[Sample], multiple: int) -> tuple[int, int]:
    """The batch's common size: the largest H and W, rounded up to `multiple`."""
    h = max(s.image.shape[0] for s in samples)
    w = max(s.image.shape[1] for s in samples)
    return math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple
