"""Self-supervised SOLOv2 (FreeSOLO, METHODS.md "Self-supervised SOLO"): model, targets, losses, inference."""
