"""The shared running code: device and precision choice, the mixed-precision paths a GPU takes
(bf16 autocast; fp16 with a gradient scaler), exercised on the CPU, the schedule and AdamW's groups."""

from __future__ import annotations

import pytest
import torch

import runtime


def tiny_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 2))


def test_auto_precision_is_fp32_on_the_cpu_and_named_settings_are_taken():
    cpu = torch.device("cpu")
    assert runtime.autocast_dtype("auto", cpu) == torch.float32
    assert runtime.autocast_dtype("bf16", cpu) == torch.bfloat16
    assert runtime.Precision.choose("cpu", "fp16").dtype == torch.float16
    with pytest.raises(ValueError, match="dtype 'fp8'"):
        runtime.autocast_dtype("fp8", cpu)
    with pytest.raises(ValueError, match="device 'tpu'"):
        runtime.pick_device("tpu")


def test_bf16_autocast_runs_matmuls_in_bf16_and_fp32_does_not():
    net, x = tiny_net(), torch.randn(4, 8)
    with runtime.Precision.choose("cpu", "bf16").autocast():
        assert net(x).dtype == torch.bfloat16
    with runtime.Precision.choose("cpu", "fp32").autocast():
        assert net(x).dtype == torch.float32


def train_steps(precision: runtime.Precision, steps: int = 5, poison_step: int | None = None):
    net = tiny_net()
    opt = runtime.adamw(net, lr=1e-2, weight_decay=0.01)
    scaler = precision.grad_scaler()
    x, y = torch.randn(32, 8, generator=torch.Generator().manual_seed(1)), torch.randint(0, 2, (32,))
    losses = []
    for step in range(steps):
        with precision.autocast():
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        scaler.scale(loss).backward()
        if step == poison_step:
            next(net.parameters()).grad.fill_(float("inf"))
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return net, losses, scaler


def test_fp16_with_the_gradient_scaler_trains_like_fp32_and_skips_an_overflowing_step():
    _, fp32_losses, _ = train_steps(runtime.Precision.choose("cpu", "fp32"))
    _, fp16_losses, scaler = train_steps(runtime.Precision.choose("cpu", "fp16"))
    assert scaler.is_enabled()
    assert fp16_losses[-1] < fp16_losses[0]
    assert fp16_losses == pytest.approx(fp32_losses, rel=0.02)

    before = tiny_net().state_dict()
    net, _, scaler = train_steps(runtime.Precision.choose("cpu", "fp16"), steps=1, poison_step=0)
    assert scaler.get_scale() < 2.0 ** 16  # the scale backed off
    for name, value in net.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} moved on a step with an infinite gradient"


def test_the_scaler_is_off_in_bf16_and_fp32():
    assert not runtime.Precision.choose("cpu", "bf16").grad_scaler().is_enabled()
    assert not runtime.Precision.choose("cpu", "fp32").grad_scaler().is_enabled()


def test_warmup_then_linear_decay():
    assert runtime.lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert runtime.lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert runtime.lr_factor(55, 10, 100) == pytest.approx(0.5)
    assert runtime.lr_factor(100, 10, 100) == 0.0
    assert runtime.lr_factor(100, 10, 100, min_ratio=0.1) == pytest.approx(0.1)
    net = tiny_net()
    opt = torch.optim.SGD(net.parameters(), lr=2.0)
    sched = runtime.warmup_decay(opt, 2, 4)
    rates = []
    for _ in range(4):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([1.0, 2.0, 2.0, 1.0])


def test_adamw_decays_matrices_only_and_leaves_frozen_parameters_out():
    net = tiny_net()
    net[0].bias.requires_grad_(False)
    decay, no_decay = runtime.adamw(net, lr=1e-3, weight_decay=0.1).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {p.dim() for p in decay["params"]} == {2}
    assert all(p.dim() == 1 for p in no_decay["params"])
    assert not any(p is net[0].bias for p in decay["params"] + no_decay["params"])
