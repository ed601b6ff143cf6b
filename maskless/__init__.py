"""maskless: segmentation learned without labels, as one reproducible Snakemake pipeline."""

__version__ = "0.1.0"
