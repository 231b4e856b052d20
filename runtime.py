"""What pretraining and fine-tuning share about running a model: the device, the mixed precision,
the optimizer, the learning-rate schedule and the live curves. One place each, so that both loops train alike.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from params import DEVICES, DTYPES, SCHEDULES

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # the names of DTYPES but auto


def pick_device(setting: str = "auto", index: int = 0) -> torch.device:
    """`auto` = the CUDA device `index` when one is present, else the CPU."""
    if setting not in DEVICES:
        raise ValueError(f"device {setting!r}: choose one of {DEVICES}")
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", index)
    return torch.device("cpu")


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype:
    """The dtype matrix multiplications run in. `auto` = bf16 on GPUs that have it, fp16 on older ones,
    fp32 on the CPU, so that a CPU result does not depend on whether the CPU has bf16 instructions
    (BENCHMARKS.md measures bf16 on the CPU)."""
    if setting not in DTYPES:
        raise ValueError(f"dtype {setting!r}: choose one of {DTYPES}")
    if setting != "auto":
        return TORCH_DTYPES[setting]
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass(frozen=True)
class Precision:
    """A device and the dtype autocast uses on it; fp16 also needs a gradient scaler."""

    device: torch.device
    dtype: torch.dtype

    @classmethod
    def choose(cls, device: str = "auto", dtype: str = "auto", index: int = 0) -> "Precision":
        dev = pick_device(device, index)
        return cls(dev, autocast_dtype(dtype, dev))

    def autocast(self):
        """A fresh autocast context (none in fp32)."""
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16 gradients underflow without loss scaling; in bf16 and fp32 the scaler is a no-op."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)


def shape_factor(shape: str, progress: float, min_ratio: float = 0.0) -> float:
    """The schedule's shape over a run, `progress` 0..1 (above 1 when it starts after a warmup):
    ``linear`` falls from 1 to `min_ratio`; ``triangle`` (Cramming's budget schedule) rises from 1/4 to
    1 at 3/4 of the run, then falls to `min_ratio`."""
    if shape == "linear":
        return 1.0 - (1.0 - min_ratio) * progress
    if shape == "triangle":
        return min(0.25 + progress, 1.0 - (1.0 - min_ratio) * (progress - 0.75) / 0.25)
    raise ValueError(f"schedule {shape!r}: choose one of {SCHEDULES}")


def lr_factor(step: int, warmup: int, total: int, min_ratio: float = 0.0, shape: str = "linear",
              progress: float | None = None) -> float:
    """The learning rate of step `step` as a fraction of the peak: a linear warmup over `warmup` steps
    caps the schedule's shape. By steps (`progress` None) a linear decay runs from the end of the warmup
    to `total`, a triangle over all `total` steps; by the clock `progress` is the share of the time
    budget spent, and the shape runs over the whole budget."""
    ramp = (step + 1) / warmup if step < warmup else 1.0
    if progress is None:
        progress = (step - warmup) / max(1, total - warmup) if shape == "linear" else step / total
    return min(ramp, shape_factor(shape, min(1.0, progress), min_ratio))


def warmup_decay(optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float = 0.0,
                 shape: str = "linear", progress=None):
    """The one learning-rate schedule of DitBERT: `lr_factor` as a torch scheduler. `progress`, a
    function giving the share of a time budget spent, makes it follow the clock instead of the steps."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total, min_ratio, shape, progress() if progress else None))


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8,
          fused: bool = True) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: biases, norms and position tables are not
    pulled towards zero. Frozen parameters are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and "pos_emb" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused)


class Curves:
    """Scalars as TensorBoard event files in `folder`, written as the run goes (train.tensorboard,
    finetune.tensorboard). `purge_step`: the first step a resumed run writes again; what an earlier process
    wrote from it on is hidden, so that the curves read as one run. `setting` is what turns them on, named
    in the error where the tensorboard package is missing."""

    def __init__(self, folder: str | Path, setting: str, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError(f"{setting}=true needs the tensorboard package (pip install tensorboard, as "
                             f"requirements.txt does), or set {setting}=false") from None
        self.writer = SummaryWriter(str(folder), purge_step=purge_step, flush_secs=30)

    def add(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            if math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()
