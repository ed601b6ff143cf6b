"""maskless.train.prefetch: the batches a plain loop gives, in order, made one step ahead in a thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from maskless.train import prefetch


def _threads() -> int:
    return sum(t.name == "maskless-prefetch" for t in threading.enumerate())


def test_prefetch_gives_the_items_in_order_one_ahead():
    made = []

    def items():
        for s in range(5):
            made.append(s)
            yield np.full(3, s)

    it = prefetch(items(), depth=1)
    first = next(it)
    time.sleep(0.2)  # the thread has made the next item (and waits to hand it over): at most depth ahead
    assert first.tolist() == [0, 0, 0] and made[:2] == [0, 1] and len(made) <= 3
    assert [x[0] for x in it] == [1, 2, 3, 4]


def test_prefetch_raises_the_producers_error_at_its_item():
    def items():
        yield 1
        raise OSError("corrupt image 000007.png")

    it = prefetch(items())
    assert next(it) == 1
    with pytest.raises(OSError, match="000007.png"):
        next(it)


def test_prefetch_thread_stops_when_the_caller_drops_the_iterator():
    before = _threads()
    it = prefetch(iter(range(1000)), depth=2)
    assert next(it) == 0
    it.close()  # what happens when fit stops early and the generator is collected
    for _ in range(50):
        if _threads() == before:
            break
        time.sleep(0.05)
    assert _threads() == before


def test_solo_batches_through_prefetch_are_the_plain_ones():
    """SOLO's training batches (images and every target tensor), made ahead in the thread, are bit-identical
    to the plain ones: a batch is a function of (seed, step) alone (copy-paste and the strong view included)."""
    from maskless.solo.data import make_batch
    from maskless.solo.train import SoloTrainParams

    rng = np.random.default_rng(0)
    source = []
    for i in range(6):
        masks = np.zeros((2, 48, 48), bool)
        masks[0, 4 + i:20 + i, 6:22], masks[1, 26:40, 10 + 2 * i:30 + 2 * i] = True, True
        source.append((rng.integers(0, 255, (48, 48, 3), dtype=np.uint8), masks, rng.random((2, 4), np.float32)))
    params = SoloTrainParams(batch_size=3, input_size=48, steps=4, copy_paste_prob=1.0, views="both", seed=3)
    geometry = params.solo_geometry()
    plain = [make_batch(source, s, params, geometry) for s in range(4)]
    ahead = list(prefetch(make_batch(source, s, params, geometry) for s in range(4)))
    for (im_a, tg_a, n_a), (im_b, tg_b, n_b) in zip(plain, ahead, strict=True):
        assert torch.equal(im_a, im_b) and n_a == n_b and len(tg_a) == len(tg_b)
        for a, b in zip(tg_a, tg_b):
            for name, value in vars(a).items():
                other = getattr(b, name)
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, other), name
                elif isinstance(value, list):
                    assert len(value) == len(other) and all(torch.equal(x, y) for x, y in zip(value, other)), name
                else:
                    assert value == other, name
