"""Masked-LM pretraining of DitBERT.

    python train_model.py                                  # tiny preset, embedded Wikipedia + IMDB corpus
    python train_model.py --preset base --corpus a.txt b.txt --out runs/mine
    python train_model.py --resume                         # continue from <out>/checkpoint.pt
    torchrun --nproc_per_node=4 train_model.py --preset base ...

Writes into the output folder:
    checkpoint.pt     everything needed to continue exactly (torch.save, loads with weights_only=True)
    log.csv           step, loss, perplexity, lr, tokens_seen, elapsed_s, val_perplexity
                      (and with ELECTRA val_detection_auc)
    final/            model.safetensors + config.json of the finished model
    summary.json      the headline figures, also printed as RESULT lines
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from model_defs import (
    DitBertForMLM,
    SequenceLoader,
    contrastive_loss,
    corpus_files,
    load_tokenizer,
    mask_tokens,
    open_token_file,
    parameter_table,
    prepare_token_file,
    save_model,
    set_dropout,
    split_tokens,
    word_start_table,
)
from params import Params, env_overrides, get_params, params_from_dict, parse_overrides

LOG_COLUMNS = ["step", "loss", "perplexity", "lr", "tokens_seen", "elapsed_s", "val_perplexity", "val_detection_auc"]
VAL_MASK_SEED = 20240101  # validation masks are fixed so perplexities compare across steps and runs


# --------------------------------------------------------------------------- set-up


class Distributed:
    """Rank and world size under torchrun; a single process otherwise."""

    def __init__(self, device_setting: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device_setting == "cuda" or (device_setting == "auto" and torch.cuda.is_available())
        if use_cuda:
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")

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

    def close(self):
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it, else fp16; fp32 on CPU, so that a CPU result does not depend on whether
    the CPU has bf16 instructions (with them, train.dtype=bf16 gives 1.3x the tokens/s: BENCHMARKS.md)."""
    if setting != "auto":
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[setting]
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def lr_factor(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warmup to 1 over `warmup` steps, then linear decay to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - (1.0 - min_ratio) * progress


def build_optimizer(model: torch.nn.Module, cfg, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, LayerNorms or positions)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "pos_emb" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=cfg.fused_adamw)


def to_device(batch: torch.Tensor, device: torch.device, pin_memory: bool) -> torch.Tensor:
    """Host -> GPU copy. From page-locked memory the copy is asynchronous (non_blocking), so it
    overlaps with GPU work already queued; on the CPU there is nothing to copy."""
    if device.type != "cuda":
        return batch
    return batch.pin_memory().to(device, non_blocking=True) if pin_memory else batch.to(device)


def check_output_dir(out_dir: Path, model: torch.nn.Module) -> None:
    """Fail before training, not after hours of it, when checkpoints cannot be written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise OSError(f"output folder {out_dir} is not writable: {err.strerror}") from None
    need = sum(p.numel() for p in model.parameters()) * 4 * 4  # weights + 2 Adam moments + a temporary copy
    free = shutil.disk_usage(out_dir).free
    if free < need:
        raise OSError(f"output folder {out_dir} has {free / 1e6:.0f} MB free; a checkpoint needs about {need / 1e6:.0f} MB")


# --------------------------------------------------------------------------- data


def split_token_file(params: Params) -> tuple[np.ndarray, np.ndarray]:
    """The corpus as (training tokens, validation tokens), from its cached token file."""
    vocab = load_tokenizer(params.tokenizer_path).get_vocab_size()
    if vocab > params.model.vocab_size:  # ids past the embedding table would fail deep inside the model
        raise ValueError(
            f"tokenizer {params.tokenizer_path} has {vocab} tokens but model.vocab_size is {params.model.vocab_size}: "
            "train the tokenizer for this preset (Train-Tokenizer.py) or set model.vocab_size"
        )
    files = corpus_files(params.data.corpus, params.data.embedded)
    token_path = prepare_token_file(files, params.tokenizer_path, params.data.cache_dir)
    return split_tokens(open_token_file(token_path), params.data.val_fraction, params.model.seq_len)


def prepare_data(params: Params):
    """Token file -> (training loader, validation batch, unigram token frequencies)."""
    train_tokens, val_tokens = split_token_file(params)
    loader = SequenceLoader(train_tokens, params.model.seq_len, seed=params.train.seed,
                            short_fraction=params.train.short_seq_prob)
    val_loader = SequenceLoader(val_tokens, params.model.seq_len, shuffle=False)
    n_val = min(params.data.val_sequences, val_loader.n_windows)
    val_inputs, val_labels = mask_tokens(
        val_loader.sequences(0, n_val),
        params.model.vocab_size,
        params.train.mask_prob,
        torch.Generator().manual_seed(VAL_MASK_SEED),
    )
    counts = np.bincount(np.asarray(train_tokens), minlength=params.model.vocab_size).astype(np.float64)
    return loader, (val_inputs, val_labels), counts


def unigram_perplexity(counts: np.ndarray, labels: torch.Tensor) -> float:
    """Perplexity of predicting each masked token from training-set token frequencies alone
    (add-one smoothed): the bar a model must clear to show it uses context."""
    probs = (counts + 1.0) / (counts.sum() + len(counts))
    targets = labels[labels.ne(-100)].numpy()
    return float(np.exp(-np.log(probs[targets]).mean()))


def mask_sequences(rows: torch.Tensor, first_index: int, params: Params, word_starts: torch.Tensor | None = None):
    """MLM masks for consecutive stream sequences, each drawn from a generator seeded by
    (seed, its index in the stream). The masks thus depend on neither the micro-batch
    size, the accumulation, the number of ranks, nor any saved RNG state: a resumed or
    re-sharded run masks exactly as the original would have. `word_starts`: whole-word masking."""
    inputs, labels = torch.empty_like(rows), torch.empty_like(rows)
    for i in range(len(rows)):
        gen = torch.Generator().manual_seed(params.train.seed * 1_000_003 + first_index + i)
        inputs[i], labels[i] = mask_tokens(rows[i], params.model.vocab_size, params.train.mask_prob, gen, word_starts)
    return inputs, labels


def next_step_batches(loader: SequenceLoader, params: Params, ddp: Distributed, accum: int,
                      word_starts: torch.Tensor | None = None):
    """This rank's masked micro-batches for one optimizer step, and the number of masked
    tokens in the whole global step (all micro-batches, all ranks): the loss is normalised
    by it, so the gradient is the mean over the global batch however it is split."""
    micro = params.train.micro_batch
    batches = []
    for _ in range(accum):
        first = loader.position + ddp.rank * micro
        rows = loader.next_batch(micro, ddp.rank, ddp.world_size)
        batches.append(mask_sequences(rows, first, params, word_starts))
    n_masked = torch.tensor([float(sum(int(lab.ne(-100).sum()) for _, lab in batches))])
    if ddp.world_size > 1:
        n_masked = n_masked.to(ddp.device)
        dist.all_reduce(n_masked)
    return batches, max(int(n_masked.item()), 1)


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file in the same folder, fsync, rename: atomic. When the write
    fails (a full disk, say) the partial temporary file is removed and the previous checkpoint stays."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OSError(err.errno, f"could not write checkpoint {path}: {err.strerror or err}; "
                                     f"the previous checkpoint is unchanged") from None
        raise


def load_checkpoint(path: Path, params: Params) -> dict:
    """Read a checkpoint without unpickling code and check it belongs to this model."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        import pickle

        if isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err):  # names a class or function
            detail = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), "")
            raise ValueError(
                f"checkpoint {path} was refused: it holds Python objects other than tensors and plain data, and "
                f"loading them could run code from the file ({detail[:200]}). A DitBERT checkpoint holds none."
            ) from None
        raise ValueError(f"checkpoint {path} is corrupt or truncated and cannot be read ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or "model" not in state or "params" not in state:
        raise ValueError(f"checkpoint {path} is not a DitBERT training checkpoint")
    saved = params_from_dict(state["params"]).model
    speed_switches = ("attention", "mlm_masked_only")  # change how, not what, the model computes
    diff = {k: (getattr(saved, k), getattr(params.model, k)) for k in vars(saved)
            if k not in speed_switches and getattr(saved, k) != getattr(params.model, k)}
    if diff:
        raise ValueError(f"checkpoint {path} was made for another model config (saved, now): {diff}")
    return state


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def validate(model, val_batch, params: Params, device, dtype) -> tuple[float, float | None]:
    """Validation perplexity: exp(mean cross-entropy) over every masked position of the fixed validation
    batch. With ELECTRA it is the generator's, and the second figure is how well the encoder ranks the
    generator's replacements above the original tokens (ROC AUC; 0.5 is chance), sampled from the same
    logits; None otherwise. The detection loss hides that: for thousands of steps it sits a few
    hundredths of a nat under always guessing the share of replaced tokens. The samples come from their
    own seeded generator, so evaluating leaves the training run as it was."""
    from torchmetrics.functional.classification import binary_auroc

    model.eval()
    inputs, labels = val_batch
    electra = bool(model.cfg.generator_layers)
    sampler = torch.Generator(device).manual_seed(VAL_MASK_SEED) if electra else None
    total, count, scores, replaced = 0.0, 0, [], []
    for start in range(0, len(inputs), params.train.micro_batch):
        x = inputs[start : start + params.train.micro_batch].to(device)
        y = labels[start : start + params.train.micro_batch].to(device)
        masked = y.ne(-100)
        n = int(masked.sum())
        if n == 0:
            continue
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model.mlm_logits(x, masked)  # with ELECTRA the generator's: the encoder predicts no words
            if electra:
                s, r = model.detect(x, y, logits, generator=sampler)
                scores.append(s.float())
                replaced.append(r)
        total += F.cross_entropy(logits.float(), y[masked], reduction="sum").item()
        count += n
    model.train()
    auc = float(binary_auroc(torch.cat(scores), torch.cat(replaced).long())) if electra else None
    return math.exp(total / max(count, 1)), auc


# --------------------------------------------------------------------------- contrastive phase


def contrastive_phase(model: DitBertForMLM, params: Params, show_progress: bool = False) -> dict:
    """Train `model`'s encoder in place for ``contrastive.steps`` steps of unsupervised SimCSE on spans
    of the training text (``params.contrastive``; a fresh AdamW, as MLM's but at ``contrastive.lr``, and
    its own schedule, on the model's device).
    The spans come from their own seeded loader, so the phase is the same however the MLM run was
    split. Returns steps, seconds and the mean loss of the first and last tenth of the steps."""
    cc = params.contrastive
    device = next(model.parameters()).device
    train_tokens, _ = split_token_file(params)
    spans = SequenceLoader(train_tokens, cc.span_tokens, seed=params.train.seed + 1)
    encoder = model.encoder
    optimizer = build_optimizer(encoder, dataclasses.replace(params.train, lr=cc.lr), device)
    warmup = max(cc.steps // 10, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, cc.steps))
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(params.train.seed + 2)  # the dropout masks: the phase is the same however it is reached
    set_dropout(model, cc.dropout)
    model.train()
    losses, t0 = [], time.time()
    for _ in tqdm(range(cc.steps), desc="contrastive", disable=not show_progress):
        loss = contrastive_loss(encoder, spans.next_batch(cc.batch_size).to(device), cc.temperature)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"contrastive step {len(losses) + 1}: non-finite loss; lower contrastive.lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), params.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        losses.append(loss.item())
    set_dropout(model, params.model.dropout)
    torch.random.set_rng_state(generator_state)
    tenth = max(len(losses) // 10, 1)
    return {"contrastive_steps": cc.steps, "contrastive_s": round(time.time() - t0, 1),
            "contrastive_loss_first": float(np.mean(losses[:tenth])) if losses else float("nan"),
            "contrastive_loss_last": float(np.mean(losses[-tenth:])) if losses else float("nan")}


# --------------------------------------------------------------------------- training


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


def train(params: Params, resume: bool = False, stop_at: int | None = None, show_progress: bool = True) -> dict:
    """Pretrain with masked-LM (ELECTRA with model.generator_layers) until `params.train.steps` (or
    `stop_at`) optimizer steps; with contrastive.steps, the SimCSE phase follows at the end.

    Returns a summary dict; the final model is written to ``<out_dir>/final``.
    """
    tc = params.train
    ddp = Distributed(tc.device)
    device = ddp.device
    dtype = autocast_dtype(tc.dtype, device)
    out_dir = Path(tc.out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    torch.manual_seed(tc.seed + ddp.rank)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tc.tf32
        torch.backends.cudnn.allow_tf32 = tc.tf32

    model = DitBertForMLM(params.model).to(device)
    if ddp.is_main:
        check_output_dir(out_dir, model)
    loader, val_batch, unigram_counts = prepare_data(params)
    word_starts = word_start_table(load_tokenizer(params.tokenizer_path)) if tc.whole_word_mask else None
    optimizer = build_optimizer(model, tc, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, tc.warmup_steps, tc.steps, tc.min_lr_ratio)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    step, tokens_seen, elapsed_before = 0, 0, 0.0

    if resume:
        state = load_checkpoint(ckpt_path, params)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        loader.load_state_dict(state["loader"])
        set_rng_state(state["rng"])
        step, tokens_seen, elapsed_before = state["step"], state["tokens_seen"], state["elapsed_s"]
        if ddp.world_size > 1:  # the saved RNG state is rank 0's; give each rank its own dropout stream
            torch.manual_seed(tc.seed + 7919 * step + ddp.rank)

    accum = tc.accumulation_steps(ddp.world_size)
    train_model = torch.compile(model) if tc.compile else model
    if ddp.world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    unigram_ppl = unigram_perplexity(unigram_counts, val_batch[1])
    log = CsvLog(out_dir / "log.csv", resume_from_step=step if resume else None) if ddp.is_main else None
    if ddp.is_main and show_progress:
        print(parameter_table(model))
        print(
            f"device {device}, autocast {dtype}, {ddp.world_size} rank(s), micro-batch {tc.micro_batch} x "
            f"{accum} accumulation x {ddp.world_size} = {tc.batch_size} sequences per step; unigram ppl {unigram_ppl:.1f}"
        )

    def checkpoint_state():
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "loader": loader.state_dict(),
            "rng": rng_state(),
            "params": params.to_dict(),
            "step": step,
            "tokens_seen": tokens_seen,
            "elapsed_s": elapsed_before + time.time() - t0,
        }

    last_step = min(tc.steps, stop_at) if stop_at is not None else tc.steps
    seq_tokens = params.model.max_positions
    nonfinite_in_a_row, val_ppl, val_auc, interrupted = 0, float("nan"), "", None
    bar = tqdm(total=last_step, initial=step, disable=not (ddp.is_main and show_progress), desc="pretrain")
    t0 = time.time()
    t_last, tokens_last = t0, tokens_seen
    with StopSignal() as stop:
        while step < last_step:
            loss_sum = torch.zeros((), device=device)
            batches, n_masked_global = next_step_batches(loader, params, ddp, accum, word_starts)
            for micro_step, (inputs, labels) in enumerate(batches):
                n_local = int(labels.ne(-100).sum())  # counted on the host: no wait for the GPU
                inputs, labels = to_device(inputs, device, tc.pin_memory), to_device(labels, device, tc.pin_memory)
                sync = micro_step == accum - 1
                ctx = train_model.no_sync() if ddp.world_size > 1 and not sync else contextlib.nullcontext()
                with ctx:
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                        loss, _ = train_model(inputs, labels)
                    # Weight each micro-batch by its share of the step's masked tokens (times the
                    # world size, which DDP's gradient averaging divides out again).
                    loss = loss * (n_local * ddp.world_size / n_masked_global)
                    scaler.scale(loss).backward()
                loss_sum += loss.detach() / ddp.world_size  # summed over ranks below: the global mean
            if ddp.world_size > 1:
                dist.all_reduce(loss_sum)
            step_loss = loss_sum.item()
            grad_norm = float("nan")
            if math.isfinite(step_loss):
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip).item()
            # A finite loss can still give an inf/NaN gradient, and one such step turns every weight
            # into NaN. fp16's GradScaler skips those steps itself (and lowers its scale) so is left to it.
            grads_ok = scaler.is_enabled() or math.isfinite(grad_norm)
            if not ddp.all_true(math.isfinite(step_loss) and grads_ok):
                nonfinite_in_a_row += 1
                optimizer.zero_grad(set_to_none=True)
                scaler.update(scaler.get_scale() / 2) if scaler.is_enabled() else None
                what = f"loss ({step_loss})" if not math.isfinite(step_loss) else f"gradient (norm {grad_norm}, loss {step_loss:.4f})"
                tqdm.write(f"step {step + 1}: non-finite {what}; step skipped")
                if nonfinite_in_a_row >= tc.max_nonfinite_steps:
                    raise FloatingPointError(
                        f"training stopped at step {step + 1}: {nonfinite_in_a_row} non-finite losses or gradients "
                        f"in a row; lower train.lr or check the data. The last good checkpoint is {ckpt_path}"
                    )
                continue
            nonfinite_in_a_row = 0
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            tokens_seen += tc.batch_size * seq_tokens
            bar.update(1)

            if ddp.is_main:
                evaluate_now = step % tc.eval_every == 0 or step == tc.steps
                if evaluate_now:
                    val_ppl, auc = validate(model, val_batch, params, device, dtype)
                    val_auc = "" if auc is None else auc
                if evaluate_now or step % tc.log_every == 0:
                    now = time.time()
                    tok_s = (tokens_seen - tokens_last) / max(now - t_last, 1e-9)
                    t_last, tokens_last = now, tokens_seen
                    lr = scheduler.get_last_lr()[0]
                    # with ELECTRA the loss adds the detection loss to the MLM loss: no perplexity
                    ppl = "" if params.model.generator_layers else math.exp(min(step_loss, 50))
                    row = [step, step_loss, ppl, lr, tokens_seen, round(elapsed_before + now - t0, 2),
                           val_ppl if evaluate_now else "", val_auc if evaluate_now else ""]
                    log.append(row)
                    bar.set_postfix(loss=f"{step_loss:.3f}", ppl=f"{ppl:.1f}" if ppl else "-", lr=f"{lr:.2e}",
                                    tok_s=f"{tok_s:,.0f}")
            stopping = not ddp.all_true(stop.received is None)
            if ddp.is_main and (step % tc.checkpoint_every == 0 or step == last_step or stopping):
                save_checkpoint(ckpt_path, checkpoint_state())
            if stopping:
                interrupted = stop.received or "signal"
                break
    bar.close()

    summary = {
        "step": step,
        "tokens_seen": tokens_seen,
        "val_ppl": val_ppl,
        "unigram_ppl": unigram_ppl,
        "elapsed_s": round(elapsed_before + time.time() - t0, 1),
        "checkpoint": str(ckpt_path),
        "interrupted": interrupted,
    }
    if params.model.generator_layers:
        summary["val_detection_auc"] = val_auc
    if ddp.is_main and interrupted is None and step == tc.steps:
        extra = {"preset": params.preset, "steps": step, "tokens_seen": tokens_seen, "val_ppl": val_ppl,
                 "unigram_ppl": unigram_ppl, "params": params.to_dict()}
        if params.contrastive.steps:  # after the MLM checkpoint: a resumed run repeats the phase exactly
            extra |= contrastive_phase(model, params, show_progress)
            summary |= {k: extra[k] for k in ("contrastive_steps", "contrastive_s")}
        summary["final_model"] = str(save_model(model, out_dir / "final", extra))
    if ddp.is_main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    ddp.close()
    return summary


class CsvLog:
    """The training log; on resume, rows past the checkpoint's step are dropped so the
    log reads as one uninterrupted run."""

    def __init__(self, path: Path, resume_from_step: int | None):
        self.path = path
        rows = []
        if resume_from_step is not None and path.is_file():
            with open(path, newline="") as fh:
                rows = [r for r in csv.reader(fh)][1:]
            rows = [r for r in rows if r and int(r[0]) <= resume_from_step]
        buf = io.StringIO()
        csv.writer(buf).writerows([LOG_COLUMNS, *rows])
        path.write_text(buf.getvalue())

    def append(self, row: list) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow(row)


# --------------------------------------------------------------------------- command line


def parse_args(argv=None) -> tuple[Params, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="tiny or base (default: $DITBERT_PRESET, else tiny)")
    ap.add_argument("--corpus", nargs="+", help="UTF-8 text files; default: data.embedded (Wikipedia leads + IMDB reviews)")
    ap.add_argument("--tokenizer", help="tokenizer.json (default: runs/<preset>/tokenizer.json)")
    ap.add_argument("--out", help="output folder (default: runs/<preset>/pretrain)")
    ap.add_argument("--steps", type=int, help="total optimizer steps")
    ap.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    ap.add_argument("--stop-at", type=int, help="stop after this step with a checkpoint (resume later)")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.NAME=VALUE", help="any other setting of params.py")
    args = ap.parse_args(argv)
    overrides = env_overrides() | parse_overrides(args.set)  # $DITBERT_SET, then --set and the flags
    for flag, key in (("corpus", "data.corpus"), ("tokenizer", "train.tokenizer"), ("out", "train.out_dir"), ("steps", "train.steps")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    return get_params(args.preset, overrides), args


def main(argv=None) -> int:
    params, args = parse_args(argv)
    try:
        summary = train(params, resume=args.resume, stop_at=args.stop_at)
    except (FileNotFoundError, ValueError, OSError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if summary["interrupted"]:
        print(f"stopped by {summary['interrupted']} at step {summary['step']}; checkpoint {summary['checkpoint']}; "
              f"continue with --resume")
        return 130
    print(f"outputs in {params.train.out_dir}: log.csv, checkpoint.pt" + (", final/" if "final_model" in summary else ""))
    print(f"RESULT val_ppl {summary['val_ppl']:.2f}")
    print(f"RESULT unigram_ppl {summary['unigram_ppl']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
