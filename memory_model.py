"""Peak training memory per micro-batch, predicted before a run, and the largest micro-batch that fits.

    python memory_model.py --preset base --micro-batches 8,16,32,64      # predicted peak of each
    python memory_model.py --preset base --table                         # the README's GPU memory table

What a pretraining step holds (train_model.optimizer_step), for a model of N parameters:

* weights: 4N bytes. Under bf16 or fp16 autocast the master weights stay fp32; the half-precision copies
  autocast makes of the matrices live only from forward to backward, so they are activations here.
* gradients: 4N (fp32, as the weights). With more than one micro-batch per step they live through
  every micro-batch after the first.
* AdamW: two fp32 moments, 8N. Fused AdamW (what training uses) updates in place; the loop over
  tensors (``fused=False``) also holds a temporary the size of its largest parameter group.
* activations: what one forward and backward of a micro-batch allocate above that.

The peak of a step is the largest of three moments: the first micro-batch (its gradients are
allocated during its backward), a later micro-batch (gradients all there), and the AdamW update.

**Activations are measured, not written out.** `probe` runs one forward and backward at micro-batch
1 and at micro-batch 2 and records the bytes of live tensors after every operation: a timeline.
Every tensor of a step is the micro-batch times something, or does not depend on it, so each point
of the timeline is a linear function of the micro-batch, and two runs give its line; the peak at
micro-batch B is the highest point of the timeline extrapolated to B. Why not the `meta` device:
DitBERT's forward has shapes that depend on the data (the masked positions are selected with a
boolean mask and the longest row's count of them read back), which meta tensors cannot run. Why
not a straight line through the two peaks: the peak moves. At small micro-batches it sits where
the tied embedding's two gradients are added (a vocabulary-sized buffer that does not grow with the
batch), at large ones inside the forward's activations; the two peaks alone would extrapolate the
first and miss the second (measured: tiny preset, the peaks above the weights at B=1 and 2 are equal, at B=4
40 % higher).

On the CPU the live bytes come from `TensorMemory`, which counts each tensor storage from the
operation that creates it until it is freed: the CPU counterpart of torch.cuda.memory_allocated
(the CPU allocator keeps no statistics, and the process's resident memory also holds the
interpreter, the libraries and what malloc keeps for reuse). On CUDA the probe reads the caching
allocator's own peak per operation. A probe on the CPU for a GPU prediction (the README table) runs
the GPU's autocast dtype on the CPU: the same tensors, without the CUDA kernels' workspaces.

Not modelled: torch.compile (other activations), gradient checkpointing, and DDP's gradient buckets
(about the gradients' size again on each rank; `ranks` adds them).
"""

from __future__ import annotations

import argparse
import sys
import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from model_defs import DitBertForMLM
from params import DTYPES, END_ID, MASK_ID, SPECIAL_TOKENS, START_ID, ModelConfig, Params, get_params, parse_overrides
from runtime import Precision, adamw, autocast_dtype

GiB = 2**30
# A real GPU gives torch less than its size: the CUDA context and kernel images (outside torch's
# allocator, about 0.3 to 0.5 GiB on a consumer card), and the caching allocator's blocks are not all
# usable at once (fragmentation with tensors of changing sizes). `usable_bytes` takes both off.
CUDA_CONTEXT_BYTES = GiB // 2
FRAGMENTATION_MARGIN = 0.10
GPU_SIZES_GB = (12, 24, 40, 80)  # the README's table: 12 GB = the RTX 3060


# --------------------------------------------------------------------------- live tensor bytes


class TensorMemory(TorchDispatchMode):
    """Bytes of the tensors alive, while the mode is on: every storage an operation returns is counted
    from then until it is freed (a finalizer on the storage). `current` is what is alive, `peak` the
    most since the last `reset_peak`, and `timeline` (when `record` is set) the live bytes after each
    operation. Tensors made before the mode started are counted once `track` is given them."""

    def __init__(self, record: bool = False):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0
        self.record, self.timeline = record, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.track(leaf)
        if self.record:
            self.timeline.append(self.current)
        return out

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self.live:  # a view, or an in-place result: its storage is counted already
            return
        self.live[key] = storage.nbytes()
        self.current += self.live[key]
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def reset_peak(self) -> None:
        self.peak = self.current


class CudaTimeline(TorchDispatchMode):
    """The CUDA allocator's peak during each operation (kernel workspaces included), as live bytes above
    what was allocated when the mode started: the same timeline `TensorMemory` records on the CPU."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device
        self.start = torch.cuda.memory_allocated(device)
        self.timeline = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        torch.cuda.reset_peak_memory_stats(self.device)
        out = func(*args, **(kwargs or {}))
        self.timeline.append(torch.cuda.max_memory_allocated(self.device) - self.start)
        return out


# --------------------------------------------------------------------------- the probe


def probe_batch(cfg: ModelConfig, mask_prob: float, micro_batch: int, seed: int = 0):
    """(inputs, labels) of `micro_batch` random sequences as the loader serves them ([START] text [END]),
    each with exactly round(mask_prob x seq_len) masked positions: the expected count, the same per row,
    so that every size of a step is proportional to the micro-batch."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL_TOKENS), cfg.vocab_size, (micro_batch, cfg.max_positions), generator=gen)
    ids[:, 0], ids[:, -1] = START_ID, END_ID
    labels = torch.full_like(ids, -100)
    k = max(1, round(mask_prob * cfg.seq_len))
    for row in range(micro_batch):
        positions = 1 + torch.randperm(cfg.seq_len, generator=gen)[:k]
        labels[row, positions] = ids[row, positions]
        ids[row, positions] = MASK_ID
    return ids, labels


@dataclass(frozen=True)
class Probe:
    """Live bytes above the weights after each operation of one forward and backward, at micro-batch 1
    and 2: `first` without gradients beforehand (a step's first micro-batch, which allocates them),
    `accumulating` with every gradient already there (the micro-batches after it)."""

    first: tuple[tuple[int, ...], tuple[int, ...]]
    accumulating: tuple[tuple[int, ...], tuple[int, ...]]
    device: str
    dtype: str

    def peak_above(self, phase: str, micro_batch: int) -> int:
        """The highest point of `phase`'s timeline extrapolated to `micro_batch`."""
        return extrapolated_peak(*getattr(self, phase), micro_batch)


def extrapolated_peak(at_1: tuple[int, ...], at_2: tuple[int, ...], micro_batch: int) -> int:
    """max over the timeline of the line through each point's value at micro-batch 1 and 2. Two
    timelines of different lengths (operations that depend on the data) fall back to the line
    through their peaks."""
    if len(at_1) != len(at_2) or not at_1:
        a, b = max(at_1, default=0), max(at_2, default=0)
        return round(a + (b - a) * (micro_batch - 1))
    return round(max(a + (b - a) * (micro_batch - 1) for a, b in zip(at_1, at_2)))


def probe(params: Params, device: torch.device | str = "cpu", dtype: str | None = None, seed: int = 0) -> Probe:
    """Measure `params.model`'s activation timelines on `device` in `dtype` (default: train.dtype as the
    device resolves it; a probe on the CPU for a GPU names the GPU's, e.g. bf16). The random state of
    the process is left as it was, so a run that probes first initialises its model as without."""
    device = torch.device(device)
    dt = autocast_dtype(dtype or params.train.dtype, device)
    precision = Precision(device, dt)
    timelines = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = DitBertForMLM(params.model).to(device).train()
        for phase in ("first", "accumulating"):
            runs = []
            for micro_batch in (1, 2):
                inputs, labels = (t.to(device) for t in probe_batch(params.model, params.train.mask_prob, micro_batch, seed))
                for p in model.parameters():
                    p.grad = torch.zeros_like(p) if phase == "accumulating" else None
                runs.append(tuple(_timeline(model, inputs, labels, precision)))
            timelines[phase] = tuple(runs)
        del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Probe(timelines["first"], timelines["accumulating"], device.type, str(dt).removeprefix("torch."))


def _timeline(model: DitBertForMLM, inputs, labels, precision: Precision) -> list[int]:
    """Live bytes above the start after each operation of one forward and backward (as the training
    step runs them: autocast, the fp16 scaler's multiplication, backward)."""
    scaler = precision.grad_scaler()
    if precision.device.type == "cuda":
        torch.cuda.synchronize(precision.device)
        meter = CudaTimeline(precision.device)
        start = 0
    else:
        meter = TensorMemory(record=True)
        for t in [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None), inputs, labels]:
            meter.track(t)
        start = meter.current
    with meter:
        with precision.autocast():
            loss, _ = model(inputs, labels)
        scaler.scale(loss).backward()
        del loss, _
    return [max(0, v - start) for v in meter.timeline]


# --------------------------------------------------------------------------- the prediction


def parameter_count(cfg: ModelConfig) -> int:
    """The model's parameters, a tied output layer counted once (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = DitBertForMLM(cfg)
    return sum(p.numel() for p in model.parameters())


def largest_group(cfg: ModelConfig) -> int:
    """Parameters of runtime.adamw's largest group (the weight matrices): the loop-over-tensors AdamW's
    temporary is that size."""
    with torch.device("meta"):
        model = DitBertForMLM(cfg)
    decay = sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and "pos_emb" not in n)
    return max(decay, parameter_count(cfg) - decay)


@dataclass(frozen=True)
class MemoryModel:
    """Peak training memory of one model and precision, per micro-batch (bytes)."""

    n_params: int
    largest_group: int
    probe: Probe
    fused_adamw: bool = True
    ranks: int = 1

    @property
    def weights(self) -> int:
        return 4 * self.n_params  # fp32 master weights, whatever the autocast dtype

    @property
    def gradients(self) -> int:
        return 4 * self.n_params

    @property
    def optimizer_state(self) -> int:
        return 8 * self.n_params  # AdamW's exp_avg and exp_avg_sq, fp32

    @property
    def update_temporary(self) -> int:
        return 0 if self.fused_adamw else 4 * self.largest_group

    @property
    def ddp_buckets(self) -> int:
        return self.gradients if self.ranks > 1 else 0

    def parts(self, micro_batch: int, accumulation: int = 2) -> dict[str, int]:
        """The terms of the peak at `micro_batch` with `accumulation` micro-batches per optimizer step."""
        static = self.weights + self.optimizer_state + self.ddp_buckets
        moments = {
            "first micro-batch": self.probe.peak_above("first", micro_batch),
            "update": self.gradients + self.update_temporary,
        }
        if accumulation > 1:
            moments["later micro-batch"] = self.gradients + self.probe.peak_above("accumulating", micro_batch)
        when = max(moments, key=moments.get)
        return {"weights": self.weights, "optimizer_state": self.optimizer_state, "ddp_buckets": self.ddp_buckets,
                "gradients": self.gradients, "peak_at": when, "above_weights_and_state": moments[when],
                "peak": static + moments[when]}

    def peak(self, micro_batch: int, accumulation: int = 2) -> int:
        return self.parts(micro_batch, accumulation)["peak"]


def build(params: Params, device: torch.device | str = "cpu", dtype: str | None = None, fused_adamw: bool = True,
          ranks: int = 1) -> MemoryModel:
    """The memory model of `params` (model, train.mask_prob, train.dtype), its activations probed on `device`."""
    return MemoryModel(parameter_count(params.model), largest_group(params.model), probe(params, device, dtype),
                       fused_adamw, ranks)


# --------------------------------------------------------------------------- what fits


def micro_batch_candidates(batch_size: int, world_size: int = 1) -> list[int]:
    """The micro-batches that keep `batch_size` by accumulation on `world_size` ranks: the divisors of
    the per-rank batch, smallest first (empty when the ranks cannot share the batch equally)."""
    if batch_size % world_size:
        return []
    per_rank = batch_size // world_size
    return [m for m in range(1, per_rank + 1) if per_rank % m == 0]


def largest_fitting(candidates: list[int], fits: Callable[[int], bool]) -> int | None:
    """The largest of `candidates` (ascending) for which `fits` holds, by bisection: fitting is taken to
    be monotonic (what fits, every smaller micro-batch fits), so each candidate is asked at most once and
    about log2(len) are asked in all. None when not even the smallest fits."""
    lo, hi, best = 0, len(candidates) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(candidates[mid]):
            best, lo = candidates[mid], mid + 1
        else:
            hi = mid - 1
    return best


def confirmed_fit(candidates: list[int], predicted: int | None, trial: Callable[[int], bool]) -> int | None:
    """The predicted micro-batch when a trial step at it succeeds; otherwise the largest smaller one a
    trial confirms (bisection below the prediction). None when nothing fits."""
    if predicted is None:
        return None
    if trial(predicted):
        return predicted
    return largest_fitting([c for c in candidates if c < predicted], trial)


def trial_step(params: Params, device: torch.device | str, micro_batch: int, accumulation: int = 2,
               seed: int = 0) -> int | None:
    """Two optimizer steps of `accumulation` micro-batches of `micro_batch` as train_model.optimizer_step
    takes them (autocast, the gradient scaler, clipping, fused AdamW), on a model of `params` built for
    them and let go after: the peak bytes allocated (CUDA: the allocator's peak; CPU: `TensorMemory`), or
    None when the device ran out of memory. Two steps, since the first allocates AdamW's state only at
    its end: the second is a step as every later one. The random state of the process is left as it was."""
    device = torch.device(device)
    precision = Precision(device, autocast_dtype(params.train.dtype, device))
    cuda = device.type == "cuda"
    meter = TensorMemory()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
    try:
        with torch.random.fork_rng(devices=[device] if cuda else []), (nullcontext() if cuda else meter):
            torch.manual_seed(seed)
            model = DitBertForMLM(params.model).to(device).train()
            tc = params.train
            optimizer = adamw(model, tc.lr, tc.weight_decay, tc.betas, tc.eps)
            scaler = precision.grad_scaler()
            for step in range(2):
                for i in range(accumulation):
                    batch = probe_batch(params.model, tc.mask_prob, micro_batch, seed + step * accumulation + i)
                    inputs, labels = (t.to(device) for t in batch)
                    with precision.autocast():
                        loss, _ = model(inputs, labels)
                    scaler.scale(loss).backward()
                    del loss, _
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            del model, optimizer
        if cuda:
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device) - start
        return meter.peak
    except torch.OutOfMemoryError:
        return None
    finally:
        if cuda:
            torch.cuda.empty_cache()


def usable_bytes(memory_bytes: float, device_type: str = "cuda", context: int = CUDA_CONTEXT_BYTES) -> int:
    """What a training step may allocate on a device of `memory_bytes`: on a GPU less the CUDA context,
    and a fragmentation margin off the rest; on the CPU the margin only."""
    reserve = context if device_type == "cuda" else 0
    return max(0, int((memory_bytes - reserve) * (1 - FRAGMENTATION_MARGIN)))


def available_memory(device: torch.device) -> int:
    """What this device has for a run now: the GPU's free memory plus what torch already holds on it,
    or the CPU's available memory (MemAvailable)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def resident_bytes(field: str = "VmRSS") -> int:
    """This process's resident memory (``VmRSS``) or its high-water mark (``VmHWM``), bytes; 0 where
    /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_high_water_mark() -> None:
    """Linux: start the resident memory's high-water mark (VmHWM) again from the current resident memory."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class PeakMemory:
    """The peak memory of what runs from now on: on CUDA torch.cuda.max_memory_allocated (what torch
    holds, all of it), on the CPU the growth of the resident memory's high-water mark."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            reset_high_water_mark()
            self.before = resident_bytes("VmRSS")

    @property
    def what(self) -> str:
        return ("torch.cuda.max_memory_allocated" if self.device.type == "cuda"
                else "growth of the resident memory's high-water mark")

    def peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return max(0, resident_bytes("VmHWM") - self.before)


def predicted_fit(model: MemoryModel, batch_size: int, budget: int, world_size: int = 1) -> int | None:
    """The largest micro-batch whose predicted peak is within `budget` bytes, keeping `batch_size`."""
    candidates = micro_batch_candidates(batch_size, world_size)
    per_rank = batch_size // world_size if candidates else 0
    return largest_fitting(candidates, lambda m: model.peak(m, per_rank // m) <= budget)


def memory_table(model: MemoryModel, batch_size: int, sizes_gb=GPU_SIZES_GB) -> list[dict]:
    """For each GPU size: the largest micro-batch predicted to fit, its accumulation steps and peak."""
    rows = []
    for gb in sizes_gb:
        micro = predicted_fit(model, batch_size, usable_bytes(gb * GiB))
        rows.append({"gpu_gb": gb, "micro_batch": micro, "accumulation": batch_size // micro if micro else None,
                     "predicted_peak_gib": model.peak(micro, batch_size // micro) / GiB if micro else None})
    return rows


def table_markdown(rows: list[dict]) -> str:
    """`memory_table` as the README's table."""
    lines = ["| GPU memory | `train.micro_batch` | accumulation steps (1 GPU) | predicted peak |", "|---|---|---|---|"]
    for r in rows:
        name = f"{r['gpu_gb']} GB" + (" (RTX 3060)" if r["gpu_gb"] == 12 else "")
        if r["micro_batch"] is None:
            lines.append(f"| {name} | does not fit | | |")
        else:
            lines.append(f"| {name} | {r['micro_batch']} | {r['accumulation']} | {r['predicted_peak_gib']:.1f} GiB |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="tiny or base (default: $DITBERT_PRESET, else tiny)")
    ap.add_argument("--dtype", choices=[d for d in DTYPES if d != "auto"], default="bf16",
                    help="the autocast dtype of the run predicted (default bf16, a GPU's)")
    ap.add_argument("--micro-batches", default="1,2,4,8,16,32,64",
                    help="comma-separated micro-batches to predict (default 1,2,4,8,16,32,64)")
    ap.add_argument("--table", action="store_true",
                    help="print the README's table: the largest micro-batch predicted to fit 12, 24, 40 and 80 GB")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.NAME=VALUE", help="any other setting of params.py")
    args = ap.parse_args(argv)
    try:
        params = get_params(args.preset, parse_overrides(args.set))
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    model = build(params, "cpu", args.dtype)
    tc = params.train
    print(f"{params.preset}: {model.n_params:,} parameters; activations probed on the CPU in {args.dtype}; "
          f"batch {tc.batch_size}")
    if args.table:
        print(table_markdown(memory_table(model, tc.batch_size)))
        print(f"(predicted by `python memory_model.py --preset {params.preset} --table`: a CUDA context of "
              f"{CUDA_CONTEXT_BYTES / GiB:.1f} GiB and a {FRAGMENTATION_MARGIN:.0%} margin taken off each size)")
        return 0
    for m in (int(x) for x in args.micro_batches.split(",") if x.strip()):
        parts = model.parts(m, max(1, tc.batch_size // m))
        print(f"micro-batch {m:>4}: predicted peak {parts['peak'] / GiB:7.3f} GiB (at the {parts['peak_at']}; weights "
              f"{parts['weights'] / GiB:.2f}, AdamW state {parts['optimizer_state'] / GiB:.2f}, gradients "
              f"{parts['gradients'] / GiB:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
