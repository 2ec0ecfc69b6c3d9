"""Weight-decay groups and the step-indexed schedules."""
import math

import torch
from torch import nn

from vjepa.optim import build_optimizer, cosine, linear, param_groups, set_lr_wd, warmup_cosine


def test_biases_and_norms_are_excluded_from_weight_decay():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    decay, no_decay = param_groups([model], weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {p.shape for p in decay["params"]} == {torch.Size([8, 4]), torch.Size([2, 8])}
    assert len(no_decay["params"]) == 4  # two biases, norm weight and bias


def test_set_lr_wd_leaves_no_decay_group_at_zero():
    opt = build_optimizer([nn.Linear(3, 3)], lr=1e-3, weight_decay=0.04)
    set_lr_wd(opt, lr=0.1, weight_decay=0.4)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.4, 0.0]


def test_warmup_then_cosine_hits_its_endpoints():
    kw = dict(warmup_steps=10, total_steps=110, start=1e-4, peak=1e-3, final=1e-6)
    assert math.isclose(warmup_cosine(0, **kw), 1e-4)
    assert math.isclose(warmup_cosine(5, **kw), 5.5e-4)
    assert math.isclose(warmup_cosine(10, **kw), 1e-3)
    assert math.isclose(warmup_cosine(60, **kw), (1e-3 + 1e-6) / 2)
    assert math.isclose(warmup_cosine(110, **kw), 1e-6)
    assert math.isclose(warmup_cosine(500, **kw), 1e-6)  # past the schedule it stays at the end value
    values = [warmup_cosine(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_weight_decay_rises_and_momentum_goes_linearly_to_one():
    assert math.isclose(cosine(0, 100, 0.04, 0.4), 0.04) and math.isclose(cosine(100, 100, 0.04, 0.4), 0.4)
    assert math.isclose(linear(0, 100, 0.998, 1.0), 0.998) and math.isclose(linear(50, 100, 0.998, 1.0), 0.999)
    assert math.isclose(linear(100, 100, 0.998, 1.0), 1.0)
