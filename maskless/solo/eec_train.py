"""The exemplar embedding contrastive term (EEC, maskless.solo.eec) inside SOLO training.

Exemplar-FreeSOLO's total loss is the FreeSOLO loss + lambda x EEC (METHODS.md). This module holds what the
training loop needs for it and nothing else:
- EECState: the EEC head (trained with SOLO) and the pool embeddings as a buffer, so a resume state holds
  exactly the embeddings the interrupted run was using (resume stays bit-identical);
- refresh: the pool embeddings recomputed by the current SOLO + head (no grad, eval mode) at steps 1,
  1 + refresh_every, ...; the backbone BatchNorm is re-frozen afterwards (pool_embeddings restores train
  mode on the whole model);
- eec_losses: the positives' soft masks (sigmoid of their mask logits at mask resolution, one per positive
  grid cell, as the mask losses see them) pooled over the head's embedding map and contrasted with the pool.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from maskless.solo.eec import EECHead, EECParams, eec_term, pool_embeddings
from maskless.solo.losses import gather_positives, mask_logits
from maskless.solo.targets import SoloTargets
from maskless.models.freeze import freeze_bn

log = logging.getLogger(__name__)

EEC_COLUMNS = ("loss_eec", "num_eec_pos", "num_eec_neg", "num_eec_valid")


class EECState(nn.Module):
    """EEC head + the pool (crops and masks kept as tensors, embeddings as a buffer)."""

    def __init__(self, params: EECParams, *, kernel_dim: int, gn_groups: int, crops, masks) -> None:
        super().__init__()
        self.params = params
        self.head = EECHead(kernel_dim, dim=params.dim, gn_groups=gn_groups, upsample=params.upsample)
        crops, masks = torch.as_tensor(crops), torch.as_tensor(masks)
        if crops.shape[0] == 0:
            raise ValueError("EEC: the exemplar pool is empty")
        self.crops, self.masks = crops, masks  # (P, S, S, 3) uint8, (P, S, S) bool; not part of the state
        self.register_buffer("pool_emb", torch.zeros(crops.shape[0], params.dim))

    def refresh_due(self, step: int) -> bool:
        """1-based step: refresh before steps 1, 1 + refresh_every, ..."""
        return self.params.refresh_due(step - 1)

    def refresh(self, model: nn.Module, *, freeze_backbone_bn: bool) -> None:
        dev = self.pool_emb.device
        self.pool_emb.copy_(pool_embeddings(model, self.head, self.crops.to(dev), self.masks.to(dev)))
        if freeze_backbone_bn:
            freeze_bn(model.backbone)


def eec_losses(outputs: dict, targets: list[SoloTargets], state: EECState, head: nn.Module | None = None
               ) -> dict[str, Tensor]:
    """"loss_eec" (unweighted) and its counts for a batch (outputs in float32, as solo_losses takes them).
    head: what to call for the embedding map (state.head, or its DDP wrapper in data-parallel training)."""
    device = outputs["mask_feat"].device
    pos = gather_positives(outputs, [t.to(device) for t in targets])
    feat = outputs["mask_feat"]  # (B, D, Hf, Wf)
    soft = [torch.sigmoid(mask_logits(k, feat[b])) for b, k in enumerate(pos.kernels)]  # per image (P_b, Hf, Wf)
    masks = torch.cat(soft)  # (P, Hf, Wf)
    batch_index = torch.cat([torch.full((len(k),), b, device=device, dtype=torch.long)
                             for b, k in enumerate(pos.kernels)])  # (P,)
    emb_map = (head or state.head)(feat)  # (B, E, Hf * up, Wf * up)
    return eec_term(emb_map, masks, batch_index, state.pool_emb, state.params)
