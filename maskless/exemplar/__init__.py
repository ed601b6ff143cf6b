"""Exemplar-FreeSOLO (METHODS.md "Exemplar-FreeSOLO (EKA + EEC)"; Ishtiak et al. 2023).

No public code exists for this method: every design choice below is ours, is a parameter with a
documented default, and is tested.

EKA, exemplar knowledge abstraction (the `exemplars` stage, one object per exemplar image):
  select   choose n exemplar images: seeded random, or "diverse" (k-means on pooled backbone features)
  grabcut  coarse foreground by OpenCV GrabCut from a centred rectangle or the strongest Free Mask's box
  refine   crop the foreground, run the round-0 SOLO on the crop, keep its mask that best matches GrabCut
  pool     build_pool runs select -> grabcut -> refine for a manifest and writes the ExemplarPool
           (maskless/solo/exemplar_pool.py: zarr v3 + parquet, written atomically, optional k-means pivots)
EEC, exemplar embedding contrastive loss: a SOLO training term, so it lives on the SOLO side
  (maskless/solo/eec.py: EECHead, mask_pooled_embeddings, pool_embeddings, eec_loss, eec_term, EECParams;
  maskless/solo/eec_train.py), as is the pool's format and reader that SOLO training loads
  (maskless/solo/exemplar_pool.py): this package depends on maskless.solo, never the reverse.
"""
