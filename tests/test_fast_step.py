"""The JEPA step's fast path (one shared patch embedding, fused EMA) computes the method's plain math."""
import copy

import pytest
import torch
import torch.nn.functional as F

from vjepa.masks import MaskConfig, build_mask_generator, sample_masks
from vjepa.models import Predictor, VisionTransformer
from vjepa.models.vit import gather_tokens
from vjepa.objectives import JEPA
from vjepa.optim import build_optimizer

torch.set_num_threads(1)

# 8 frames of 32x32, tubelet 2, patch 8: a (4, 4, 4) grid of 64 tokens
CLIP = dict(img_size=32, num_frames=8, patch_size=8, tubelet_size=2)


def small_jepa() -> JEPA:
    torch.manual_seed(0)
    encoder = VisionTransformer(**CLIP, embed_dim=48, depth=2, num_heads=3)
    predictor = Predictor(**CLIP, embed_dim=48, predictor_embed_dim=24, depth=2, num_heads=2, num_mask_tokens=2,
                          zero_init_mask_tokens=False)
    jepa = JEPA(encoder, predictor)
    with torch.no_grad():  # a target encoder that differs from the encoder, as after some EMA steps
        for p in jepa.target_encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return jepa


def two_masks(batch: int):
    configs = [MaskConfig(num_blocks=8, spatial_scale=(0.15, 0.15)), MaskConfig(num_blocks=2, spatial_scale=(0.4, 0.4))]
    return sample_masks([build_mask_generator(c, (4, 4, 4)) for c in configs], batch, seed=0, step=3)


def plain_jepa_loss(jepa: JEPA, clips: torch.Tensor, masks) -> torch.Tensor:
    """V-JEPA as written in the paper's code: every mask configuration encodes the clip on its own."""
    with torch.no_grad():
        h = jepa.target_encoder(clips)
        targets = F.layer_norm(h, (h.size(-1),))
    losses = []
    for i, (ctx_idx, tgt_idx) in enumerate(masks):
        ctx = jepa.encoder(clips, masks=ctx_idx)
        pred = jepa.predictor(ctx, ctx_idx, tgt_idx, mask_index=i)
        losses.append(F.l1_loss(pred, gather_tokens(targets, tgt_idx)))
    return torch.stack(losses).mean()


def gradients(jepa: JEPA, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    jepa.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in jepa.named_parameters() if p.grad is not None}


def test_fast_step_gives_the_plain_loss_and_gradients():
    jepa = small_jepa()
    clips = torch.randn(3, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    masks = two_masks(3)
    fast_loss, _ = jepa(clips, masks)
    fast = gradients(jepa, fast_loss)
    plain_loss = plain_jepa_loss(jepa, clips, masks)
    plain = gradients(jepa, plain_loss)
    torch.testing.assert_close(fast_loss, plain_loss, rtol=1e-6, atol=1e-7)
    assert fast.keys() == plain.keys()
    assert any(name.startswith("encoder.patch_embed") for name in fast)  # the shared embedding is trained
    assert not any(name.startswith("target_encoder") for name in fast)
    for name in fast:
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("momentum", [0.99, 1.0])
def test_ema_update_moves_the_target_by_one_minus_momentum(momentum):
    jepa = small_jepa()
    before = copy.deepcopy(jepa.target_encoder.state_dict())
    jepa.after_step(momentum)
    for name, p in jepa.encoder.state_dict().items():
        expected = momentum * before[name] + (1 - momentum) * p
        torch.testing.assert_close(jepa.target_encoder.state_dict()[name], expected, rtol=1e-6, atol=1e-7)


def test_optimizer_step_keeps_the_adamw_update():
    torch.manual_seed(0)
    fast, plain = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    plain.load_state_dict(fast.state_dict())
    opt_fast = build_optimizer([fast], lr=1e-2, weight_decay=0.1)
    opt_plain = torch.optim.AdamW([{"params": [plain.weight], "weight_decay": 0.1}, {"params": [plain.bias], "weight_decay": 0.0}],
                                  lr=1e-2, foreach=False)
    x = torch.randn(16, 8)
    for _ in range(3):
        for model, opt in ((fast, opt_fast), (plain, opt_plain)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    torch.testing.assert_close(fast.weight, plain.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.bias, plain.bias, rtol=1e-5, atol=1e-6)
