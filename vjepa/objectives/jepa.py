"""The V-JEPA objective: predict, in latent space, what an EMA target encoder says about hidden tubes."""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import nn

from vjepa.masks import MaskPair
from vjepa.models.vit import gather_tokens
from vjepa.objectives.base import Objective


def effective_rank(features: torch.Tensor, max_rows: int = 2048) -> torch.Tensor:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values.

    A collapsing encoder maps everything to a few directions and its effective rank falls.
    """
    f = features.reshape(-1, features.size(-1)).float()[:max_rows]
    s = torch.linalg.svdvals(f)
    p = s / s.sum().clamp_min(1e-12) + 1e-12
    return torch.exp(-(p * p.log()).sum())


def variance_hinge(features: torch.Tensor, eps: float = 1e-4, stand_in: bool = False) -> torch.Tensor:
    """VICReg's variance term: mean over channels of relu(1 - std), the std over all tokens [.., D].

    Under DDP the std is over the tokens of the whole global batch (sums all-reduced with autograd),
    so N processes compute the loss and gradients one process with N times the batch would. A
    `stand_in` batch (a rank with no readable video) adds no tokens to the sums.
    """
    z = features.float().flatten(0, -2)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        z = z * 0.0 if stand_in else z
        count = 0.0 if stand_in else float(z.shape[0])
        sums = dist_nn.all_reduce(torch.cat([z.sum(0), (z * z).sum(0), z.new_tensor([count])]))
        d = z.shape[1]
        s1, s2, n = sums[:d], sums[d:2 * d], sums[-1]
        var = ((s2 - s1 * s1 / n) / (n - 1)).clamp_min(0)
    else:
        var = z.var(0)
    return F.relu(1.0 - torch.sqrt(var + eps)).mean()


def prediction_loss(pred: torch.Tensor, target: torch.Tensor, exponent: float = 1.0) -> torch.Tensor:
    """mean(|pred - target|^p) / p, V-JEPA's loss (`loss_exp`); p = 1 is the L1 loss."""
    if exponent == 1.0:
        return F.l1_loss(pred.float(), target.float())
    return (pred.float() - target.float()).abs().pow(exponent).mean() / exponent


class JEPA(Objective):
    checkpoint_keys = ("encoder", "predictor", "target_encoder")
    options = ("var_reg", "loss_exp")

    def __init__(self, encoder: nn.Module, predictor: nn.Module, var_reg: float = 0.0, loss_exp: float = 1.0):
        super().__init__()
        if loss_exp <= 0:
            raise ValueError(f"loss.loss_exp={loss_exp}: expected a positive exponent (1: L1, 2: squared error)")
        self.var_reg = var_reg
        self.loss_exp = loss_exp
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = copy.deepcopy(encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad_(False)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.predictor]

    @torch.no_grad()
    def target_features(self, clips: torch.Tensor) -> torch.Tensor:
        """Target encoder on the whole clip, layer-normed per token.

        The layer norm fixes the targets' scale, so the predictor cannot lower the loss by
        shrinking them: one of the guards against collapse, with the EMA and the narrow predictor.
        """
        h = self.target_encoder(clips)
        return F.layer_norm(h, (h.size(-1),))

    def forward(self, clips, masks: Sequence[MaskPair], with_rankme: bool = False, stand_in: bool = False):
        targets = self.target_features(clips)
        tokens = self.encoder.embed(clips)  # embedded once: every mask configuration gathers its context from it
        losses, preds = [], []
        for i, (ctx_idx, tgt_idx) in enumerate(masks):
            ctx = self.encoder.forward_tokens(gather_tokens(tokens, ctx_idx), ctx_idx, self.encoder.token_grid(clips))
            pred = self.predictor(ctx, ctx_idx, tgt_idx, mask_index=i)
            loss = prediction_loss(pred, gather_tokens(targets, tgt_idx), self.loss_exp)
            if self.var_reg:
                loss = loss + self.var_reg * variance_hinge(ctx, stand_in=stand_in)
            losses.append(loss)
            preds.append(pred.detach())
        loss = torch.stack(losses).mean()
        stats = {
            # std over all tokens of the normalised targets: ~1 when healthy, -> 0 on collapse
            "target_std": targets.float().flatten(0, 1).std(0).mean(),
            "pred_std": torch.cat([p.flatten(0, 1) for p in preds]).float().std(0).mean(),
        }
        if with_rankme:
            stats["rankme"] = effective_rank(targets)
        return loss, stats

    @torch.no_grad()
    def after_step(self, momentum: float) -> None:
        # target <- momentum * target + (1 - momentum) * encoder, in one pass over the weights
        torch._foreach_lerp_(list(self.target_encoder.parameters()), [p.detach() for p in self.encoder.parameters()],
                             1.0 - momentum)
