"""Semi- and weakly supervised semantic segmentation: progressive cross training (PCT) with the optional
Contextrast loss (METHODS.md "PCT", "Contextrast").

model: ResNet + DeepLabv3+ network; losses: CCE, MLSM, H2P / P2H, dynamic evaluation; contextrast: CCL +
BANE; split: strong / weak split and tags; train: train_pct, train_supervised; pseudo: inference and
pseudo labels.
"""
