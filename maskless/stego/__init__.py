"""STEGO: unsupervised semantic segmentation by distilling feature correspondences (Hamilton et al. 2022).

Frozen backbone features (features) -> kNN of pooled image features (knn) -> a head trained with the
feature-correspondence loss (model, losses, train) -> cluster and linear probes -> maps at image resolution
(predict), optionally refined by a dense CRF (crf). baseline: k-means on the raw features, the bar STEGO
has to clear. METHODS.md "STEGO" holds the maths.
"""
