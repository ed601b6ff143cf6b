"""The exemplars_n<k> figures of the report: each exemplar pool's crops with their masks (maskless.report)."""

from __future__ import annotations

import logging

from maskless import viz
from maskless.report.inputs import ReportInputs
from maskless.solo.exemplar_pool import ExemplarPool

log = logging.getLogger(__name__)

EXEMPLAR_COLUMNS = 8
EXEMPLAR_CELL = (128, 128)


def exemplar_figures(inputs: ReportInputs, add) -> None:
    """Add (with add(name, category, caption, rgb)) an exemplars_n<k> grid of each exemplar pool, by k."""
    if not inputs.pools:
        log.info("report: no exemplar pools given")
    for n, path in sorted((int(n), path) for n, path in inputs.pools):
        pool = ExemplarPool.load(path)
        tiles = [viz.overlay_masks(crop, mask[None]) for crop, mask in zip(pool.crops, pool.masks)]
        captions = [f"image {int(i)}" for i in pool.image_ids]
        methods = sorted(set(pool.methods))
        img = viz.grid(tiles, columns=min(EXEMPLAR_COLUMNS, len(tiles)), cell=EXEMPLAR_CELL, captions=captions)
        add(f"exemplars_n{n}.png", "exemplars",
            f"Exemplar pool n{n}: {len(pool)} exemplar crop{'s' if len(pool) != 1 else ''} with "
            f"their masks ({'/'.join(methods)}), each captioned with its source image id.", img)
