"""Masked-LM pretraining of DitBERT.

    python train_model.py                                  # tiny preset, embedded Wikipedia + IMDB corpus
    python train_model.py --preset base --corpus a.txt b.txt --out runs/mine
    python train_model.py --budget-minutes 20              # by the clock: decayed when 20 minutes of training end
    python train_model.py --init-from runs/tiny/pretrain/final --corpus legal.txt --out runs/legal
                                                           # continue a trained model on another corpus
    python train_model.py --budget-minutes 600 --stop-at-minutes 120   # ten hours, trained two at a time (--resume)
    python train_model.py --resume                         # continue from <out>/checkpoint.pt, with its settings
    python train_model.py --resume --steps 5600            # continue a finished run further
    python train_model.py --overwrite                      # start over in a folder that holds a run
    python train_model.py --preset base --estimate         # tokens/s, memory and the run's length on this machine
    python train_model.py --preset base --set train.micro_batch=auto --tensorboard   # the largest micro-batch that
                                                           # fits; curves in <out>/tensorboard/
    torchrun --nproc_per_node=4 train_model.py --preset base ...

Writes into the output folder:
    checkpoint.pt     everything needed to continue exactly (torch.save, loads with weights_only=True)
    log.csv           step, loss, perplexity, lr, tokens_seen, elapsed_s, train_s, val_perplexity
    final/            model.safetensors + config.json of the finished model
    summary.json      the headline figures, also printed as RESULT lines
    tensorboard/      with train.tensorboard: loss, perplexity, lr, tokens/s, gradient norm (TensorBoard)

By the clock (train.budget_minutes), the time counted is training time: the optimizer steps and
their batches, not the data preparation, validation or checkpoint writing (train_s in the log;
elapsed_s is the wall clock). Every rank follows rank 0's clock, so all stop at the same step.

A folder that holds a run is never started over silently: --resume continues it with the settings
its checkpoint holds (the corpus, the tokenizer and every setting; of those given again, only the
ones in RESUMABLE_SETTINGS may differ), --overwrite replaces it, anything else is an error before
any work. Resuming a finished run says so and leaves its files alone. The checkpoint and the run
folder are handled in checkpoints.py; the data comes from pretrain_data.py.

Read top to bottom: the ranks, validation, then the loop: `optimizer_step` (one step over the
micro-batches), `Recorder.after_step` (validation, the log, checkpoints) and `train`, which calls
them in turn."""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from checkpoints import (RESUMABLE_SETTINGS, CsvLog, StopAt, check_output_dir, check_resume_inputs, check_run_folder,
                         check_start, checkpoint_path, is_main_process, load_checkpoint, nothing_left, reached_end,
                         read_checkpoint, remove_run, resume_changes, rng_state, run_files, save_checkpoint, saved_params,
                         set_rng_state, start_settings)
from cli import overwrite_allowed
from fileio import FolderBusy, folder_lock
import memory_model
from model_defs import DitBertForMLM, parameter_table, save_model
from params import DEFAULT_PRESET, PRESETS, Params, apply_overrides, env_overrides, get_params, parse_overrides
from pretrain_data import SequenceLoader, corpus_record, next_step_batches, prepare_data, word_start_table
from runtime import Curves, Precision, adamw, autocast_dtype, pick_device, warmup_decay
from tokenization import load_tokenizer, tokenizer_fingerprint


# --------------------------------------------------------------------------- set-up


class Distributed:
    """Rank and world size under torchrun; a single process otherwise."""

    def __init__(self, device_setting: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = pick_device(device_setting, self.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_true(self, flag: bool) -> bool:
        """True when `flag` holds on every rank (so all ranks take the same branch)."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([0.0 if flag else 1.0], device=self.device)
        dist.all_reduce(t)
        return t.item() == 0.0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """`t` summed over the ranks (`t` itself in a single process)."""
        if self.world_size > 1:
            t = t.to(self.device)
            dist.all_reduce(t)
        return t

    def from_main(self, value: float) -> float:
        """Rank 0's `value` on every rank: one clock for all, so that they stop at the same step."""
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return t.item()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` as the training step calls it: under DistributedDataParallel across ranks."""
        if self.world_size == 1:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def close(self):
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> GPU copy from page-locked memory, asynchronous (non_blocking), so it overlaps with
    GPU work already queued; on the CPU there is nothing to copy."""
    if device.type != "cuda":
        return batch
    return batch.pin_memory().to(device, non_blocking=True)


def unigram_perplexity(counts: np.ndarray, labels: torch.Tensor) -> float:
    """Perplexity of predicting each masked token from training-set token frequencies alone
    (add-one smoothed): the bar a model must clear to show it uses context."""
    probs = (counts + 1.0) / (counts.sum() + len(counts))
    targets = labels[labels.ne(-100)].numpy()
    return float(np.exp(-np.log(probs[targets]).mean()))


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def validate(model: DitBertForMLM, val_batch, params: Params, precision: Precision) -> float:
    """Validation perplexity: exp(mean cross-entropy) over every masked position of the fixed validation batch."""
    model.eval()
    inputs, labels = val_batch
    total, count = 0.0, 0
    for start in range(0, len(inputs), params.train.micro_batch):
        x = inputs[start : start + params.train.micro_batch].to(precision.device)
        y = labels[start : start + params.train.micro_batch].to(precision.device)
        masked = y.ne(-100)
        n = int(masked.sum())
        if n == 0:
            continue
        with precision.autocast():
            logits = model.mlm_logits(x, masked)
        total += F.cross_entropy(logits.float(), y[masked], reduction="sum").item()
        count += n
    model.train()
    return math.exp(total / max(count, 1))


# --------------------------------------------------------------------------- training


@dataclass
class Run:
    """What a pretraining run trains and its checkpoint holds, and the counters the loop advances."""

    model: DitBertForMLM
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loader: SequenceLoader
    runner: torch.nn.Module | None = None  # the model as the step calls it: compiled, under DDP
    step: int = 0
    tokens_seen: int = 0
    elapsed_before: float = 0.0  # seconds the run took before this process resumed it
    started: float = field(default_factory=time.time)
    # Seconds of training: optimizer steps and their batches, without data preparation, validation and
    # checkpoints. The schedule follows it when the run has a time budget.
    train_s: float = 0.0
    budget_s: float = 0.0  # train.budget_minutes in seconds; 0 = the run counts steps
    warmup_s: float | None = None  # the training time when the warmup ended (None: not yet)
    clock: Callable[[], float] = time.perf_counter
    step_began: float | None = None  # on `clock`, when the step under way began
    nonfinite_in_a_row: int = 0
    grad_norm: float = float("nan")  # the last step's gradient norm before clipping (TensorBoard's curve)
    val_ppl: float = float("nan")  # the last validation perplexity
    tokenizer_fingerprint: str = ""  # tokenization.tokenizer_fingerprint of train.tokenizer
    corpus: dict = field(default_factory=dict)  # pretrain_data.corpus_record: the files and their fingerprint

    @classmethod
    def start(cls, model: DitBertForMLM, loader: SequenceLoader, params: Params, precision: Precision) -> "Run":
        """A fresh run: AdamW, the schedule (by steps, or by the clock with a time budget) and a
        gradient scaler (a no-op but in fp16)."""
        tc = params.train
        optimizer = adamw(model, tc.lr, tc.weight_decay, tc.betas, tc.eps)
        run = cls(model, optimizer, None, precision.grad_scaler(), loader, budget_s=tc.budget_minutes * 60,
                  warmup_s=0.0 if tc.warmup_steps == 0 else None)
        run.scheduler = warmup_decay(optimizer, tc.warmup_steps, tc.steps, tc.min_lr_ratio, tc.schedule,
                                     (lambda: run.clock_progress(tc.schedule)) if run.budget_s else None)
        return run

    def clock_progress(self, shape: str) -> float:
        """How far a run by the clock has come along the schedule's shape: a linear decay runs from the
        end of the warmup to the end of the budget (as, by steps, from the warmup's last step to
        train.steps), a triangle over the whole budget."""
        if shape != "linear":
            return self.train_s / self.budget_s
        if self.warmup_s is None:
            return 0.0  # still warming up: the ramp sets the rate
        return (self.train_s - self.warmup_s) / max(self.budget_s - self.warmup_s, 1e-9)

    def count_step_time(self, ddp: "Distributed", warmup_steps: int | None = None) -> None:
        """Add the step under way to the training time (rank 0's time on every rank) and, for a step
        taken, note when the warmup ends, before the schedule reads them."""
        if self.step_began is not None:
            self.train_s += ddp.from_main(self.clock() - self.step_began)
            self.step_began = None
        if self.warmup_s is None and warmup_steps is not None and self.step + 1 >= warmup_steps:
            self.warmup_s = self.train_s

    def finished(self, params: Params) -> bool:
        """At the run's end: train.steps done, or its time budget spent."""
        return reached_end(self.step, self.train_s, params)

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def state_dict(self, params: Params) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loader": self.loader.state_dict(),
            "rng": rng_state(),
            "params": params.to_dict(),
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "elapsed_s": self.elapsed(),
            "train_s": self.train_s,
            "warmup_s": self.warmup_s,
            "val_ppl": self.val_ppl,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "corpus": self.corpus,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when saved without fp16; a run moved to fp16 starts its scale afresh
            self.scaler.load_state_dict(state["scaler"])
        self.loader.load_state_dict(state["loader"])
        set_rng_state(state["rng"])
        self.step, self.tokens_seen, self.elapsed_before = state["step"], state["tokens_seen"], state["elapsed_s"]
        self.train_s = state.get("train_s", state["elapsed_s"])
        self.warmup_s = state.get("warmup_s", self.warmup_s)
        self.val_ppl = state.get("val_ppl", float("nan"))
        self.follow_schedule()

    def follow_schedule(self) -> None:
        """Set the rate of the next step from the schedule as built now (the rate saved with the
        optimizer is the old schedule's): a resumed run that raised train.steps or its time budget
        decays towards its new end from its first step on. Unchanged settings give the saved rate exactly."""
        epoch = self.scheduler.last_epoch
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = base * factor(epoch)


def optimizer_step(run: Run, batches: list, params: Params, ddp: Distributed, precision: Precision) -> float | None:
    """One optimizer step on this rank's micro-batches: forward and backward on each (the gradients
    add up; DDP syncs them on the last), clipping, then AdamW and the schedule. Returns the step's loss,
    the mean over the masked tokens of the whole global step; None when the loss or the gradient is
    not finite, and the step is skipped (`skip_step`)."""
    # The loss is normalised by the global step's masked tokens (all micro-batches, all ranks), so
    # the gradient is the mean over the global batch however it is split.
    n_masked = ddp.sum(torch.tensor([float(sum(int(labels.ne(-100).sum()) for _, labels in batches))]))
    n_masked = max(int(n_masked.item()), 1)
    loss_sum = torch.zeros((), device=precision.device)
    for i, (inputs, labels) in enumerate(batches):
        n_local = int(labels.ne(-100).sum())  # counted on the host: no wait for the GPU
        inputs, labels = to_device(inputs, precision.device), to_device(labels, precision.device)
        sync = i == len(batches) - 1
        with run.runner.no_sync() if ddp.world_size > 1 and not sync else nullcontext():
            with precision.autocast():
                loss, _ = run.runner(inputs, labels)
            # Weight each micro-batch by its share of the step's masked tokens (times the world
            # size, which DDP's gradient averaging divides out again).
            loss = loss * (n_local * ddp.world_size / n_masked)
            run.scaler.scale(loss).backward()
        loss_sum += loss.detach() / ddp.world_size  # summed over ranks below: the global mean
    step_loss = ddp.sum(loss_sum).item()
    grad_norm = float("nan")
    if math.isfinite(step_loss):
        run.scaler.unscale_(run.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), params.train.grad_clip).item()
    run.grad_norm = grad_norm
    # A finite loss can still give an inf/NaN gradient, and one such step turns every weight
    # into NaN. fp16's GradScaler skips those steps itself (and lowers its scale) so is left to it.
    grads_ok = run.scaler.is_enabled() or math.isfinite(grad_norm)
    if not ddp.all_true(math.isfinite(step_loss) and grads_ok):
        run.count_step_time(ddp)
        skip_step(run, step_loss, grad_norm, params)
        return None
    run.nonfinite_in_a_row = 0
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.count_step_time(ddp, params.train.warmup_steps)
    run.scheduler.step()
    run.step += 1
    run.tokens_seen += params.train.batch_size * params.model.max_positions
    return step_loss


def skip_step(run: Run, step_loss: float, grad_norm: float, params: Params) -> None:
    """Drop a non-finite step's gradients and say so; stop after train.max_nonfinite_steps in a row."""
    run.nonfinite_in_a_row += 1
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler.is_enabled():
        run.scaler.update(run.scaler.get_scale() / 2)
    what = f"loss ({step_loss})" if not math.isfinite(step_loss) else f"gradient (norm {grad_norm}, loss {step_loss:.4f})"
    tqdm.write(f"step {run.step + 1}: non-finite {what}; step skipped")
    if run.nonfinite_in_a_row >= params.train.max_nonfinite_steps:
        raise FloatingPointError(
            f"training stopped at step {run.step + 1}: {run.nonfinite_in_a_row} non-finite losses or gradients "
            f"in a row; lower train.lr or check the data. The last good checkpoint is {checkpoint_path(params)}"
        )


CURVES = "tensorboard"  # train.tensorboard's folder in the run folder: runtime.Curves, by optimizer step


class Recorder:
    """What follows an optimizer step: the progress bar and, on the main rank, the validation
    perplexity every train.eval_every steps, a row of log.csv every train.log_every, and a
    checkpoint every train.checkpoint_every, at the last step and when the run is stopped. The bar
    counts steps, or with a time budget the seconds of training."""

    def __init__(self, run: Run, params: Params, val_batch, precision: Precision, ddp: Distributed,
                 stop: StopAt, resume: bool, show_progress: bool):
        self.params, self.val_batch, self.precision = params, val_batch, precision
        self.is_main, self.budget_s = ddp.is_main, run.budget_s
        log_path = Path(params.train.out_dir) / "log.csv"
        self.log = CsvLog(log_path, resume_from_step=run.step if resume else None) if self.is_main else None
        total, done = (round(self.budget_s), round(run.train_s)) if self.budget_s else (params.train.steps, run.step)
        self.bar = tqdm(total=min(total, stop.step) if stop.step and not self.budget_s else total, initial=done,
                        unit="s" if self.budget_s else "it", disable=not (self.is_main and show_progress),
                        desc="pretrain")
        self.t_last, self.tokens_last = time.time(), run.tokens_seen
        self.curves = (Curves(Path(params.train.out_dir) / CURVES, "train.tensorboard", purge_step=run.step + 1)
                       if self.is_main and params.train.tensorboard else None)

    def after_step(self, run: Run, step_loss: float, stopping: bool) -> None:
        """`stopping`: the run stops after this step (asked to, or by a signal), so it checkpoints now."""
        self.bar.update(round(min(run.train_s, self.budget_s)) - self.bar.n if self.budget_s else 1)
        if not self.is_main:
            return
        tc, finished = self.params.train, run.finished(self.params)
        evaluate_now = run.step % tc.eval_every == 0 or finished
        if evaluate_now:
            run.val_ppl = validate(run.model, self.val_batch, self.params, self.precision)
        if evaluate_now or run.step % tc.log_every == 0:
            self.log_row(run, step_loss, evaluate_now)
        if run.step % tc.checkpoint_every == 0 or finished or stopping:
            save_checkpoint(checkpoint_path(self.params), run.state_dict(self.params))

    def log_row(self, run: Run, step_loss: float, evaluated: bool) -> None:
        now = time.time()
        tok_s = (run.tokens_seen - self.tokens_last) / max(now - self.t_last, 1e-9)
        self.t_last, self.tokens_last = now, run.tokens_seen
        lr = run.scheduler.get_last_lr()[0]
        ppl = math.exp(min(step_loss, 50))
        self.log.append([run.step, step_loss, ppl, lr, run.tokens_seen, round(run.elapsed(), 2), round(run.train_s, 2),
                         run.val_ppl if evaluated else ""])
        self.bar.set_postfix(loss=f"{step_loss:.3f}", ppl=f"{ppl:.1f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}")
        if self.curves is not None:
            self.curves.add(run.step, {"train/loss": step_loss, "train/perplexity": ppl, "train/lr": lr,
                                       "train/tokens_per_s": tok_s, "train/grad_norm": run.grad_norm,
                                       **({"val/perplexity": run.val_ppl} if evaluated else {})})

    def close(self) -> None:
        self.bar.close()
        if self.curves is not None:
            self.curves.close()


class StopSignal:
    """Turns SIGINT / SIGTERM into a flag checked between optimizer steps, so the
    run ends with a fresh checkpoint instead of a torn one."""

    def __init__(self):
        self.received = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)


def train(params: Params, resume: bool = False, overwrite: bool = False, stop_at: int | None = None,
          show_progress: bool = True, clock=time.perf_counter, stop_at_minutes: float | None = None,
          auto_micro_batch: bool = False) -> dict:
    """Pretrain with masked-LM until train.steps optimizer steps, or with train.budget_minutes until
    that much training time has passed (on `clock`, which tests replace); or stop earlier, with a
    checkpoint to resume from, after step `stop_at` or `stop_at_minutes` minutes of training.

    A folder that holds a run is continued with `resume` (whose checkpoint's settings `params` must
    match but for RESUMABLE_SETTINGS) or replaced with `overwrite`; otherwise it is an error before
    any work. A new run starts from train.init_from's weights when it is set. Returns a summary dict;
    the final model is written to ``<out_dir>/final``.

    The output folder has one writer: while a run trains, another into the same folder stops at once
    with fileio.FolderBusy naming the holder (under torchrun, rank 0 holds the folder for all ranks).

    `auto_micro_batch` (train.micro_batch=auto on the command line): train.micro_batch becomes the largest
    that fits the device (`choose_micro_batch`), which the checkpoint and summary.json record.
    """
    with folder_lock(params.train.out_dir, "pretraining run") if is_main_process() else nullcontext():
        return _train(params, resume, overwrite, stop_at, show_progress, clock, stop_at_minutes, auto_micro_batch)


def _train(params: Params, resume: bool, overwrite: bool, stop_at: int | None, show_progress: bool, clock,
           stop_at_minutes: float | None, auto_micro_batch: bool = False) -> dict:
    tc = params.train
    check_run_folder(Path(tc.out_dir), resume, overwrite)
    if stop_at is not None and stop_at < 1:
        raise ValueError(f"--stop-at {stop_at}: stop after step 1 or later")
    if stop_at_minutes is not None and stop_at_minutes <= 0:
        raise ValueError(f"--stop-at-minutes {stop_at_minutes}: stop after some training, more than 0 minutes")
    stop = StopAt(stop_at, stop_at_minutes)
    state, source_model, source_record = None, None, None
    if resume:
        state = load_checkpoint(checkpoint_path(params), params)
        resume_changes(checkpoint_path(params), state, params)
        done = nothing_left(checkpoint_path(params), state, params, stop)
        if done:
            return done
        check_resume_inputs(checkpoint_path(params), state, params)
    elif tc.init_from:
        source_model, source_record = check_start(tc.init_from, params)
    ddp = Distributed(tc.device)
    precision = Precision(ddp.device, autocast_dtype(tc.dtype, ddp.device))
    picked = choose_micro_batch(params, ddp, precision, show_progress) if auto_micro_batch else None
    accum = tc.accumulation_steps(ddp.world_size)  # before any work: the batch must split over these ranks
    torch.manual_seed(tc.seed + ddp.rank)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if precision.device.type == "cuda":  # TF32 tensor cores for the fp32 matmuls
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    model = DitBertForMLM(params.model)
    if source_model is not None:  # its weights, in a model of this run's settings (the speed switches may differ)
        model.load_state_dict(source_model.state_dict())
        source_model = None
    model = model.to(precision.device)
    if ddp.is_main:
        check_output_dir(Path(tc.out_dir), model)
    loader, val_batch, unigram_counts = prepare_data(params)
    word_starts = word_start_table(load_tokenizer(params.tokenizer_path)) if tc.whole_word_mask else None
    run = Run.start(model, loader, params, precision)
    run.clock = clock
    run.tokenizer_fingerprint, run.corpus = tokenizer_fingerprint(params.tokenizer_path), corpus_record(params)
    if resume:
        run.load_state_dict(state)
        state = None  # the weights now live in the model; let the loaded copy go
        if ddp.world_size > 1:  # the saved RNG state is rank 0's; give each rank its own dropout stream
            torch.manual_seed(tc.seed + 7919 * run.step + ddp.rank)
    run.runner = ddp.wrap(torch.compile(model) if tc.compile else model)
    unigram_ppl = unigram_perplexity(unigram_counts, val_batch[1])
    if ddp.is_main and show_progress:
        print(parameter_table(model))
        print(f"device {precision.device}, autocast {precision.dtype}, {ddp.world_size} rank(s), micro-batch "
              f"{tc.micro_batch} x {accum} accumulation x {ddp.world_size} = {tc.batch_size} sequences per step; "
              f"unigram ppl {unigram_ppl:.1f}")
        if source_record is not None:
            print(f"starting from {tc.init_from} ({source_record.get('tokens_seen', 'unknown')} tokens of pretraining)")
        if tc.budget_minutes:
            print(f"training for {tc.budget_minutes:g} minutes by the clock (optimizer steps only: data preparation, "
                  f"validation and checkpoints are not counted); {tc.schedule} schedule")

    if overwrite and ddp.is_main and run_files(Path(tc.out_dir)):
        print(f"replacing the run in {tc.out_dir} (--overwrite): removed {', '.join(remove_run(Path(tc.out_dir)))}")
    if overwrite and ddp.is_main and (Path(tc.out_dir) / CURVES).is_dir():  # the replaced run's curves
        shutil.rmtree(Path(tc.out_dir) / CURVES)
    recorder = Recorder(run, params, val_batch, precision, ddp, stop, resume, show_progress)
    interrupted, run.started = None, time.time()
    with StopSignal() as signalled:
        try:
            while not run.finished(params) and not stop.reached(run.step, run.train_s):
                run.step_began = clock()
                batches = next_step_batches(run.loader, params, accum, ddp.rank, ddp.world_size, word_starts)
                step_loss = optimizer_step(run, batches, params, ddp, precision)
                if step_loss is None:
                    continue
                by_signal = not ddp.all_true(signalled.received is None)
                recorder.after_step(run, step_loss, stopping=by_signal or stop.reached(run.step, run.train_s))
                if by_signal:
                    interrupted = signalled.received or "signal"
                    break
        finally:
            recorder.close()
    summary = finish(run, params, ddp, unigram_ppl, interrupted, source_record, picked)
    ddp.close()
    return summary


def finish(run: Run, params: Params, ddp: Distributed, unigram_ppl: float, interrupted, started_from: dict | None,
           micro_batch_pick: dict | None = None) -> dict:
    """The run's summary, written to summary.json; a run at its end also saves its final model, with
    the fingerprint of its tokenizer (which fine-tuning and the export check) and, when it started
    from a trained model, that model's record. `micro_batch_pick`: what train.micro_batch=auto picked."""
    out_dir, val_ppl = Path(params.train.out_dir), run.val_ppl
    summary = {
        "step": run.step,
        "tokens_seen": run.tokens_seen,
        "val_ppl": val_ppl,
        "unigram_ppl": unigram_ppl,
        "elapsed_s": round(run.elapsed(), 1),
        "train_minutes": round(run.train_s / 60, 2),
        "checkpoint": str(checkpoint_path(params)),
        "interrupted": interrupted,
    }
    if started_from is not None:
        summary["init_from"] = {"path": params.train.init_from, "steps": started_from.get("steps"),
                                "tokens_seen": started_from.get("tokens_seen")}
    if micro_batch_pick is not None:
        summary["micro_batch_auto"] = micro_batch_pick
    if ddp.is_main and interrupted is None and run.finished(params):
        extra = {"preset": params.preset, "steps": run.step, "tokens_seen": run.tokens_seen, "val_ppl": val_ppl,
                 "unigram_ppl": unigram_ppl, "train_minutes": summary["train_minutes"], "params": params.to_dict(),
                 "tokenizer_fingerprint": run.tokenizer_fingerprint,
                 **({"init_from": summary["init_from"]} if started_from is not None else {})}
        summary["final_model"] = str(save_model(run.model, out_dir / "final", extra))
    if ddp.is_main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


# --------------------------------------------------------------------------- the micro-batch, and an estimate before a run


def choose_micro_batch(params: Params, ddp: Distributed, precision: Precision, show: bool = True,
                       model: memory_model.MemoryModel | None = None) -> dict:
    """train.micro_batch=auto: set train.micro_batch to the largest micro-batch that divides the batch
    (so train.batch_size stays, by accumulation) and fits this device: predicted by memory_model (`model`,
    else built here) from the memory free now (a fragmentation margin off it) and, on CUDA, confirmed by a
    trial step (a smaller one tried when it runs out of memory). Every rank takes rank 0's pick. Returns
    the record the run keeps in summary.json."""
    tc, device = params.train, precision.device
    model = model or memory_model.build(params, device, tc.dtype, ranks=ddp.world_size)
    budget = memory_model.usable_bytes(memory_model.available_memory(device), device.type, context=0)
    candidates = memory_model.micro_batch_candidates(tc.batch_size, ddp.world_size)
    predicted = memory_model.predicted_fit(model, tc.batch_size, budget, ddp.world_size)
    picked = predicted
    if device.type == "cuda":
        picked = memory_model.confirmed_fit(candidates, predicted,
                                            lambda m: memory_model.trial_step(params, device, m) is not None)
    picked = int(ddp.from_main(float(picked or 0)))
    if not picked:
        one = model.peak(1, tc.batch_size // ddp.world_size)
        raise ValueError(f"train.micro_batch=auto: not even a micro-batch of 1 fits {device}: predicted "
                         f"{one / memory_model.GiB:.2f} GiB, {budget / memory_model.GiB:.2f} GiB usable")
    tc.micro_batch = picked
    per_rank = tc.batch_size // ddp.world_size
    record = {"picked": picked, "predicted": predicted, "confirmed_by_trial_step": device.type == "cuda",
              "predicted_peak_gib": round(model.peak(picked, per_rank // picked) / memory_model.GiB, 3),
              "usable_gib": round(budget / memory_model.GiB, 3), "device": str(device)}
    if show and ddp.is_main:
        trial = ", confirmed by a trial step" if device.type == "cuda" else ""
        print(f"train.micro_batch=auto: {picked} ({per_rank // picked} accumulation steps; predicted peak "
              f"{record['predicted_peak_gib']:.2f} GiB of {record['usable_gib']:.2f} GiB usable on {device}{trial})")
    return record


@dataclass
class StepTimes:
    """Seconds of timed optimizer steps, by the micro-batches each took."""

    by_micro_batches: dict[int, list[float]] = field(default_factory=dict)

    def add(self, micro_batches: int, seconds: float) -> None:
        self.by_micro_batches.setdefault(micro_batches, []).append(seconds)

    def step_seconds(self, accumulation: int) -> tuple[float, float, float]:
        """(seconds per optimizer step of `accumulation` micro-batches, seconds per micro-batch, seconds of
        the update): measured directly when the steps took `accumulation` micro-batches; otherwise the
        line through the mean step times at the two counts measured, t = update + n x micro-batch."""
        means = {n: sum(ts) / len(ts) for n, ts in self.by_micro_batches.items() if ts}
        if accumulation in means:
            return means[accumulation], means[accumulation] / accumulation, 0.0
        (lo, t_lo), (hi, t_hi) = sorted(means.items())[0], sorted(means.items())[-1]
        per_micro = max((t_hi - t_lo) / (hi - lo), 1e-9)
        update = max(t_lo - lo * per_micro, 0.0)
        return update + accumulation * per_micro, per_micro, update


ESTIMATE_ACCUMULATION = 4  # an estimate times steps of up to this many micro-batches, and extrapolates past it


def estimate(params: Params, steps: int = 30, warmup: int = 5, auto_micro_batch: bool = False, done_steps: int = 0,
             done_train_s: float = 0.0, show: bool = True) -> dict:
    """Time `steps` optimizer steps of `params` on this hardware, after `warmup` untimed ones, and project
    the run: its tokens/s, peak memory, the micro-batch train.micro_batch=auto would pick, and the time
    train.steps take (or the steps and tokens train.budget_minutes buy), `done_steps` and `done_train_s`
    (a checkpoint's) left out. The steps are the run's own (its micro-batch, precision, model and data);
    with more than ESTIMATE_ACCUMULATION micro-batches per step, steps of 1 and of ESTIMATE_ACCUMULATION
    micro-batches take turns and the step time is extrapolated along the line through them. Validation
    and a checkpoint are timed once each and added as often as the run would do them.

    Nothing is written into train.out_dir: the run's steps, validation and checkpoint go to a temporary
    folder, removed after; the output folder is neither locked nor checked (a run may be training in it).
    The token file of the corpus is made, as the run would make it, where data.cache_dir says."""
    params = copy.deepcopy(params)
    tc = params.train
    with tempfile.TemporaryDirectory(prefix="ditbert-estimate-") as scratch:
        tc.out_dir = scratch
        ddp = Distributed(tc.device)
        precision = Precision(ddp.device, autocast_dtype(tc.dtype, ddp.device))
        device = precision.device
        mem_model = memory_model.build(params, device, tc.dtype, ranks=ddp.world_size)
        pick = choose_micro_batch(params, ddp, precision, show, mem_model) if auto_micro_batch else None
        accum = tc.accumulation_steps(ddp.world_size)
        usable = memory_model.usable_bytes(memory_model.available_memory(device), device.type, context=0)
        would_pick = memory_model.predicted_fit(mem_model, tc.batch_size, usable, ddp.world_size)
        began = time.perf_counter()
        loader, val_batch, _ = prepare_data(params)
        data_s = time.perf_counter() - began
        word_starts = word_start_table(load_tokenizer(params.tokenizer_path)) if tc.whole_word_mask else None
        torch.manual_seed(tc.seed + ddp.rank)
        if tc.threads:
            torch.set_num_threads(tc.threads)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        memory = memory_model.PeakMemory(device)
        model = DitBertForMLM(params.model).to(device)
        run = Run.start(model, loader, params, precision)
        run.runner = ddp.wrap(torch.compile(model) if tc.compile else model)
        plan = [accum] if accum <= ESTIMATE_ACCUMULATION else [1, ESTIMATE_ACCUMULATION]
        times, sync = StepTimes(), (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        for i in range(warmup + steps):
            n = plan[i % len(plan)]
            sync()
            t0 = time.perf_counter()  # the batches' making counts, as in the run's training time
            batches = next_step_batches(run.loader, params, n, ddp.rank, ddp.world_size, word_starts)
            optimizer_step(run, batches, params, ddp, precision)
            sync()
            if i >= warmup:
                times.add(n, time.perf_counter() - t0)
        peak = memory.peak()
        step_s, micro_s, update_s = times.step_seconds(accum)
        t0 = time.perf_counter()
        validate(model, val_batch, params, precision)
        val_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        save_checkpoint(Path(scratch) / "checkpoint.pt", run.state_dict(params))
        checkpoint_s = time.perf_counter() - t0
        del run, model
    tokens_per_step = tc.batch_size * params.model.max_positions
    if tc.budget_minutes:
        train_s = max(tc.budget_minutes * 60 - done_train_s, 0.0)
        run_steps = int(train_s / step_s)
    else:
        run_steps = max(tc.steps - done_steps, 0)
        train_s = run_steps * step_s
    evaluations = run_steps // tc.eval_every + (1 if run_steps % tc.eval_every else 0)
    checkpoints = run_steps // tc.checkpoint_every + (1 if run_steps % tc.checkpoint_every else 0)
    result = {
        "device": str(device), "dtype": str(precision.dtype).removeprefix("torch."), "ranks": ddp.world_size,
        "micro_batch": tc.micro_batch, "accumulation": accum, "batch_size": tc.batch_size,
        "timed_steps": steps, "warmup_steps": warmup, "micro_batches_per_timed_step": plan,
        "seconds_per_step": step_s, "seconds_per_micro_batch": micro_s, "seconds_per_update": update_s,
        "tokens_per_s": tokens_per_step / step_s, "peak_memory_bytes": peak, "peak_memory_is": memory.what,
        "predicted_peak_bytes": mem_model.peak(tc.micro_batch, accum), "usable_bytes": usable,
        "auto_micro_batch": would_pick, "auto_pick": pick, "data_preparation_s": data_s,
        "validation_s": val_s, "checkpoint_s": checkpoint_s, "steps": run_steps, "tokens": run_steps * tokens_per_step,
        "train_s": train_s, "evaluations": evaluations, "checkpoints": checkpoints,
        "wall_s": train_s + evaluations * val_s + checkpoints * checkpoint_s,
        "done_steps": done_steps, "budget_minutes": tc.budget_minutes,
    }
    if show and ddp.is_main:
        print_estimate(result)
    ddp.close()
    return result


def duration(seconds: float) -> str:
    """Seconds in the unit a person reads them in: 45 s, 12.5 min, 3.2 h, 4.1 days."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2f} s"


def print_estimate(r: dict) -> None:
    gib = memory_model.GiB
    way = (f"{r['micro_batches_per_timed_step'][0]} micro-batches" if len(r["micro_batches_per_timed_step"]) == 1
           else f"{' and '.join(map(str, r['micro_batches_per_timed_step']))} micro-batches in turn, extrapolated to "
                f"{r['accumulation']} (update {r['seconds_per_update']:.3f} s + {r['accumulation']} x "
                f"{r['seconds_per_micro_batch']:.3f} s)")
    print(f"estimate on {r['device']}, {r['dtype']}, micro-batch {r['micro_batch']} x {r['accumulation']} accumulation x "
          f"{r['ranks']} rank(s) = {r['batch_size']} sequences per step")
    print(f"  timed {r['timed_steps']} optimizer steps after {r['warmup_steps']} untimed ones, of {way}")
    print(f"  {r['tokens_per_s']:,.0f} tokens/s, {r['seconds_per_step']:.3f} s per optimizer step")
    print(f"  peak memory {r['peak_memory_bytes'] / gib:.2f} GiB ({r['peak_memory_is']}); the memory model predicts "
          f"{r['predicted_peak_bytes'] / gib:.2f} GiB of tensors")
    auto = r["auto_micro_batch"]
    print(f"  train.micro_batch=auto would pick {auto if auto else 'nothing: not even 1 fits'} "
          f"({r['usable_bytes'] / gib:.1f} GiB usable now)" + (f"; picked {r['auto_pick']['picked']}" if r["auto_pick"] else ""))
    left = f" (after step {r['done_steps']})" if r["done_steps"] else ""
    if r["budget_minutes"]:
        print(f"  train.budget_minutes={r['budget_minutes']:g}{left}: {r['steps']:,} steps, {r['tokens']:,} tokens; "
              f"{duration(r['wall_s'])} with validation and checkpoints")
    else:
        print(f"  {r['steps']:,} steps{left}: {duration(r['train_s'])} of training, {duration(r['wall_s'])} with "
              f"{r['evaluations']} validations ({r['validation_s']:.1f} s each) and {r['checkpoints']} checkpoints "
              f"({r['checkpoint_s']:.1f} s each); {r['tokens']:,} tokens")
    print(f"  (data preparation took {r['data_preparation_s']:.1f} s here, not counted; a run reuses the token file)")
    print(f"RESULT estimate_tokens_per_s {r['tokens_per_s']:.1f}")
    print(f"RESULT estimate_peak_memory_gib {r['peak_memory_bytes'] / gib:.3f}")
    print(f"RESULT estimate_train_hours {r['train_s'] / 3600:.4g}")


# --------------------------------------------------------------------------- command line


def parse_args(argv=None) -> tuple[Params, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="tiny or base (default: $DITBERT_PRESET, else tiny)")
    ap.add_argument("--corpus", nargs="+", help="UTF-8 text files; default: data.embedded (Wikipedia leads + IMDB reviews)")
    ap.add_argument("--tokenizer", help="tokenizer.json (default: runs/<preset>/tokenizer.json)")
    ap.add_argument("--out", help="output folder (default: runs/<preset>/pretrain)")
    ap.add_argument("--steps", type=int, help="total optimizer steps (with --resume: default the checkpoint's)")
    ap.add_argument("--budget-minutes", type=float,
                    help="train for this many minutes of training time instead, the schedule following the clock "
                         "(train.budget_minutes)")
    ap.add_argument("--init-from", metavar="PATH",
                    help="start a new run from a trained model's weights: a final/ folder, a checkpoint.pt or a folder "
                         "exported for transformers (train.init_from); its model settings and tokenizer are kept")
    ap.add_argument("--resume", action="store_true",
                    help="continue from <out>/checkpoint.pt with the settings it holds; of the flags and --set values "
                         "given again, only these may differ: " + ", ".join(RESUMABLE_SETTINGS))
    ap.add_argument("--overwrite", action="store_true",
                    help="replace the run the output folder holds (its checkpoint, log, summary and final model); "
                         "also DITBERT_OVERWRITE=1")
    ap.add_argument("--stop-at", type=int, help="stop after this step with a checkpoint (resume later)")
    ap.add_argument("--stop-at-minutes", type=float,
                    help="stop after this many minutes of training with a checkpoint (resume later)")
    ap.add_argument("--tensorboard", action="store_true",
                    help="write the curves as TensorBoard event files in <out>/tensorboard/ (train.tensorboard=true)")
    ap.add_argument("--estimate", action="store_true",
                    help="time a few optimizer steps of these settings on this machine and print tokens/s, peak memory, "
                         "the micro-batch train.micro_batch=auto would pick and the projected time of train.steps (or "
                         "the tokens of train.budget_minutes); writes nothing into the output folder")
    ap.add_argument("--estimate-steps", type=int, default=30, metavar="N",
                    help="--estimate: optimizer steps timed (default 30)")
    ap.add_argument("--estimate-warmup", type=int, default=5, metavar="N",
                    help="--estimate: untimed steps before them (default 5)")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.NAME=VALUE",
                    help="any other setting of params.py; train.micro_batch=auto picks the largest micro-batch that fits")
    args = ap.parse_args(argv)
    overrides = env_overrides() | parse_overrides(args.set)  # $DITBERT_SET, then --set and the flags
    for flag, key in (("corpus", "data.corpus"), ("tokenizer", "train.tokenizer"), ("out", "train.out_dir"),
                      ("steps", "train.steps"), ("budget_minutes", "train.budget_minutes"), ("init_from", "train.init_from")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.tensorboard:
        overrides["train.tensorboard"] = True
    args.auto_micro_batch = str(overrides.get("train.micro_batch", "")).strip().lower() == "auto"
    if args.auto_micro_batch:  # the setting holds the number the run picks (choose_micro_batch); until then
        del overrides["train.micro_batch"]  # a resumed run's checkpoint value, a new run's 1 (it splits any batch)
        if not args.resume:
            overrides["train.micro_batch"] = 1
    if args.estimate_steps < 1 or args.estimate_warmup < 0:
        raise ValueError(f"--estimate-steps {args.estimate_steps} --estimate-warmup {args.estimate_warmup}: time at "
                         f"least 1 step, after 0 or more untimed ones")
    if args.resume:
        return resume_settings(args.preset, overrides), args
    params = get_params(args.preset, overrides)
    if params.train.init_from:
        params = start_settings(params, params.train.init_from, overrides).check()
    return params, args


def resume_settings(preset: str | None, overrides: dict) -> Params:
    """--resume: the settings the checkpoint holds, with only the values given now put over them
    (`train` refuses those outside RESUMABLE_SETTINGS). The checkpoint is in --out, else in the
    preset's output folder."""
    name = preset or os.environ.get("DITBERT_PRESET") or DEFAULT_PRESET
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    out_dir = str(overrides.get("train.out_dir") or PRESETS[name]().train.out_dir)
    path = Path(out_dir) / "checkpoint.pt"
    params = saved_params(path, read_checkpoint(path, mmap=True))
    if preset and preset != params.preset:
        raise ValueError(f"--preset {preset}: the run in {out_dir} was made with preset {params.preset}; "
                         f"resume it without --preset")
    apply_overrides(params, overrides)
    params.train.out_dir = out_dir
    return params.check()


def overwrite_asked(args: argparse.Namespace) -> bool:
    """--overwrite, or DITBERT_OVERWRITE=1 as the notebooks take it (a flag --resume always wins over)."""
    if args.overwrite:
        return True
    return not args.resume and overwrite_allowed()


def estimate_from_args(params: Params, args: argparse.Namespace) -> dict:
    """--estimate: the run these settings would make, or with --resume what is left of the checkpoint's."""
    done_steps, done_train_s = 0, 0.0
    if args.resume:
        state = read_checkpoint(checkpoint_path(params), mmap=True)
        done_steps, done_train_s = state["step"], state.get("train_s", state["elapsed_s"])
    return estimate(params, args.estimate_steps, args.estimate_warmup, args.auto_micro_batch, done_steps, done_train_s)


def main(argv=None, clock=time.perf_counter) -> int:
    try:
        params, args = parse_args(argv)
        if args.estimate:
            estimate_from_args(params, args)
            return 0
        summary = train(params, resume=args.resume, overwrite=overwrite_asked(args), stop_at=args.stop_at, clock=clock,
                        stop_at_minutes=args.stop_at_minutes, auto_micro_batch=args.auto_micro_batch)
    except (FileNotFoundError, ValueError, OSError, FloatingPointError, KeyError, FolderBusy) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    if not is_main_process() or "already_done" in summary:
        return 0
    if summary["interrupted"]:
        print(f"stopped by {summary['interrupted']} at step {summary['step']}; checkpoint {summary['checkpoint']}; "
              f"continue with --resume")
        return 130
    print(f"outputs in {params.train.out_dir}: log.csv, checkpoint.pt" + (", final/" if "final_model" in summary else ""))
    print(f"pretrained {summary['train_minutes']:.1f} minutes, {summary['step']} steps, {summary['tokens_seen']:,} tokens")
    print(f"RESULT val_ppl {summary['val_ppl']:.2f}")
    print(f"RESULT unigram_ppl {summary['unigram_ppl']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
