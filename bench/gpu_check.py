"""make gpu-check: the `base` recipe's GPU path checked end to end on any CUDA machine, offline.

    make gpu-check                                   # = .venv/bin/python bench/gpu_check.py
    python bench/gpu_check.py --tokenizer runs/base/tokenizer.json   # reuse a base tokenizer
    python bench/gpu_check.py --rehearse             # every stage at a tiny size on the CPU (what the tests run)

It needs what `make setup` installs and fetches once (the packages of the embedded corpus, the demo
task's archive in data/) and nothing from the network while it runs. Without a CUDA GPU it says so
and exits with status 1. Written for about 5 minutes on one H100; not yet run on a GPU.

Stages, in order; each gives rows of the report (bench/results/gpu_check_<gpu>.csv and .json, one
RESULT line per row, status 1 when a row fails):

 1. tokenizer   base's 32768-token byte-level BPE, learned from the embedded corpus (--tokenizer: reuse one).
 2. flops       model FLOPs per token of a training step (forward and backward) at base's masking rate,
                counted by torch.utils.flop_counter.FlopCounterMode over one step of the model, with
                attention written out (model.attention=math: the same arithmetic as SDPA, whose fused
                kernels the counter does not know on every device).
 3. pretrain    --steps optimizer steps of `base` in bf16, then in fp16 with the gradient scaler
                (train_model.train, micro-batch --micro-batch, 2 micro-batches a step): tokens/s over
                the steps after the first fifth, MFU = tokens/s x FLOPs per token / the GPU's dense
                bf16 peak (PEAK_BF16_TFLOPS by device name; unknown: no MFU), the peak memory, and the
                loss falling.
 4. resume      a bf16 run stopped halfway and resumed ends with the weights of the run that went
                straight through, bit for bit (with model.attention=math: fused attention's backward
                adds in an order that changes from run to run).
 5. memory      per micro-batch: the peak of two optimizer steps (memory_model.trial_step,
                torch.cuda.max_memory_allocated) beside the memory model's prediction (within 15 %).
 6. fits        the largest micro-batch of base's batch (3200) that fits in 12, 24, 40 and 80 GB, each
                emulated with torch.cuda.set_per_process_memory_fraction (what torch may allocate; the
                CUDA context is not in it), found by trial steps, beside the memory model's pick for the
                same budget, which must not be larger (80 GB on a smaller card: the whole card).
 7. export      hf_export.export of the bf16 model; it loads with transformers (trust_remote_code) and
                gives the project model's logits.
 8. glue        one epoch of fine-tuning on the demo task (glue_utils.run_glue, bf16, 2000 examples).

--rehearse runs the same stages on the CPU with a 2 x 32 model, a 512-token tokenizer learned from 300
documents, a few steps, budgets in MiB instead of GB (each fit measured by memory_model.TensorMemory
against the budget) and 64 fine-tuning examples: the script's own test, not a measurement.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import common  # noqa: E402
import memory_model  # noqa: E402
from memory_model import GiB, probe_batch  # noqa: E402
from model_defs import DitBertForMLM  # noqa: E402
from params import Params, get_params  # noqa: E402
from pretrain_step import GPU_BF16_PEAK_TFLOPS  # noqa: E402

ROOT = common.ROOT
MiB = 2**20

# Dense bf16 tensor-core peak, TFLOP/s, without sparsity: bench/pretrain_step.py's table and the
# consumer cards of the recipe. The longest name contained in the device's name is taken.
PEAK_BF16_TFLOPS = {
    **GPU_BF16_PEAK_TFLOPS,
    "RTX 3060": 25.5,  # GA106: 28 SMs x 1.777 GHz x 512 (bf16 with fp32 accumulation, dense)
    "RTX 3090": 71.0,  # GA102 whitepaper, bf16 with fp32 accumulation, dense
    "A10": 125.0,
    "L40": 181.0,
}


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of the GPU called `device_name` (as torch.cuda.get_device_name gives it), or
    None when the table does not know it."""
    known = [key for key in PEAK_BF16_TFLOPS if key.lower() in device_name.lower()]
    return PEAK_BF16_TFLOPS[max(known, key=len)] if known else None


# --------------------------------------------------------------------------- what is checked, at which size


@dataclass
class CheckConfig:
    """The sizes of one gpu-check: the real one on a GPU, or the rehearsal on the CPU (`rehearsal`)."""

    device: str = "cuda"
    preset: str = "base"
    model: dict = field(default_factory=dict)  # model.* overrides of the preset
    vocab: int = 32768
    corpus_lines: int = 0  # 0 = the whole embedded corpus for the tokenizer and the pretraining
    steps: int = 300
    micro_batch: int = 64
    resume_steps: int = 24
    memory_micro_batches: tuple[int, ...] = (8, 16, 32, 64, 128)
    sizes: tuple[float, ...] = (12, 24, 40, 80)
    size_unit: int = GiB
    size_name: str = "GB"
    glue_examples: int = 2000
    val_sequences: int = 64

    @classmethod
    def rehearsal(cls) -> "CheckConfig":
        return cls(device="cpu", preset="tiny", model={"model.n_layers": 2, "model.d_model": 32, "model.n_heads": 2,
                                                        "model.d_ff": 64, "model.seq_len": 16, "model.position": "learned"},
                   vocab=512, corpus_lines=300, steps=10, micro_batch=4, resume_steps=6, memory_micro_batches=(1, 2, 4),
                   sizes=(1.0, 1.5, 2.0, 4.0), size_unit=MiB, size_name="MiB", glue_examples=64, val_sequences=8)

    def params(self, work: Path, tokenizer: Path, corpus: list[str], **overrides) -> Params:
        """The pretraining settings of this check: the preset, its model, a batch of two micro-batches."""
        values = {**self.model, "model.vocab_size": self.vocab, "data.corpus": corpus, "train.tokenizer": str(tokenizer),
                  "data.cache_dir": str(work / "cache"), "train.device": self.device, "train.steps": self.steps,
                  "train.warmup_steps": max(1, self.steps // 10), "train.micro_batch": self.micro_batch,
                  "train.batch_size": 2 * self.micro_batch, "train.checkpoint_every": 10**6, "train.eval_every": 10**6,
                  "train.log_every": max(1, self.steps // 30), "data.val_sequences": self.val_sequences}
        return get_params(self.preset, {**values, **overrides})


@dataclass
class Row:
    """One figure of the report: the check, its value and unit, whether it passed, and what it means."""

    check: str
    value: float
    unit: str
    ok: bool = True
    detail: str = ""


# --------------------------------------------------------------------------- the figures, as functions


def flops_per_token(params: Params, micro_batch: int = 2) -> float:
    """Model FLOPs of one training step (forward and backward) per token, counted by FlopCounterMode over
    a step of `params.model` with written-out attention and round(mask_prob x seq_len) masked tokens a
    sequence. Tokens are the sequence's positions, [START] and [END] included, as train_model counts them."""
    cfg = dataclasses.replace(params.model, attention="math")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DitBertForMLM(cfg)
    inputs, labels = probe_batch(cfg, params.train.mask_prob, micro_batch)
    with FlopCounterMode(display=False) as counter:
        loss, _ = model(inputs, labels)
        loss.backward()
    return counter.get_total_flops() / (micro_batch * cfg.max_positions)


def mfu(tokens_per_s: float, flops_per_tok: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation: the FLOPs the steps did per second over the GPU's peak (None: peak unknown)."""
    return tokens_per_s * flops_per_tok / (peak_tflops * 1e12) if peak_tflops else None


def log_throughput(log_csv: Path, skip_fraction: float = 0.2) -> tuple[float, float, float]:
    """(tokens/s over the logged steps after the first `skip_fraction` of them, the first logged loss, the
    last) from a run's log.csv: the first steps (kernel selection, the allocator growing) are left out."""
    with open(log_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh)]
    start = rows[min(int(len(rows) * skip_fraction), len(rows) - 2)]
    end = rows[-1]
    seconds = float(end["train_s"]) - float(start["train_s"])
    rate = (int(end["tokens_seen"]) - int(start["tokens_seen"])) / seconds if seconds > 0 else float("nan")
    return rate, float(rows[0]["loss"]), float(rows[-1]["loss"])


def largest_fits(sizes: list[float], candidates: list[int], fits: Callable[[int, float], bool]) -> dict[float, int | None]:
    """For each budget of `sizes` (bytes), the largest candidate micro-batch for which `fits(micro_batch,
    budget)` holds (memory_model.largest_fitting: bisection, fitting taken to be monotonic)."""
    return {size: memory_model.largest_fitting(candidates, lambda m, size=size: fits(m, size)) for size in sizes}


def cuda_fits(params: Params, device: torch.device) -> Callable[[int, float], bool]:
    """fits(micro_batch, budget): two optimizer steps at `micro_batch` succeed while torch may allocate
    only `budget` bytes of the GPU (torch.cuda.set_per_process_memory_fraction; the whole card at most)."""
    total = torch.cuda.get_device_properties(device).total_memory

    def fits(micro_batch: int, budget: float) -> bool:
        torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total), device)
        try:
            return memory_model.trial_step(params, device, micro_batch) is not None
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, device)

    return fits


def measured_fits(params: Params, device: torch.device) -> Callable[[int, float], bool]:
    """fits(micro_batch, budget) on the CPU (the rehearsal): the peak two steps reach is within the budget."""
    return lambda micro_batch, budget: (memory_model.trial_step(params, device, micro_batch) or math.inf) <= budget


def result_lines(rows: list[Row]) -> list[str]:
    """``RESULT gpu_check_<check> <value>`` for every row with a value."""
    return [common.result_line(f"gpu_check_{r.check}", r.value) for r in rows if r.value == r.value]


def write_report(rows: list[Row], results_dir: Path, name: str, meta: dict) -> Path:
    """The rows as a table on stdout and as <results_dir>/<name>.csv and .json (with `meta`)."""
    from tabulate import tabulate

    results_dir.mkdir(parents=True, exist_ok=True)
    table = [dataclasses.asdict(r) for r in rows]
    print(tabulate(table, headers="keys", floatfmt=".4g"))
    path = results_dir / f"{name}.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    (results_dir / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": table}, indent=2, default=str))
    return path


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# --------------------------------------------------------------------------- the stages


class Check:
    """One gpu-check: its sizes, its work folder, and the rows so far."""

    def __init__(self, config: CheckConfig, work: Path, tokenizer: Path | None):
        self.config, self.work = config, work
        self.device = torch.device(config.device)
        self.tokenizer = tokenizer
        self.rows: list[Row] = []
        self.corpus: list[str] = []
        self.finals: dict[str, Path] = {}

    def add(self, *rows: Row) -> None:
        for row in rows:
            self.rows.append(row)
            mark = "ok" if row.ok else "FAILED"
            print(f"  {row.check}: {row.value:.4g} {row.unit} [{mark}] {row.detail}", flush=True)

    def params(self, **overrides) -> Params:
        return self.config.params(self.work, self.tokenizer, self.corpus, **overrides)

    def stage_tokenizer(self) -> None:
        from corpus import corpus_files, iter_corpus_documents
        from tokenization import train_tokenizer

        files = corpus_files([], ["wiki", "imdb"], ROOT / "data")
        if self.config.corpus_lines:
            small = self.work / "corpus.txt"
            lines = [doc for _, doc in zip(range(self.config.corpus_lines), iter_corpus_documents(files))]
            small.write_text("\n".join(lines) + "\n", encoding="utf-8")
            files = [str(small)]
        self.corpus = [str(f) for f in files]
        if self.tokenizer is not None:
            self.add(Row("tokenizer_s", 0.0, "s", detail=f"reused {self.tokenizer}"))
            return
        self.tokenizer = self.work / "tokenizer.json"
        began = time.perf_counter()
        tok = train_tokenizer(self.corpus, self.config.vocab, self.tokenizer)
        self.add(Row("tokenizer_s", time.perf_counter() - began, "s",
                     detail=f"{tok.get_vocab_size()} tokens learned from {len(self.corpus)} file(s)"))

    def stage_flops(self) -> float:
        per_token = flops_per_token(self.params())
        self.add(Row("flops_per_token", per_token, "FLOP", detail="FlopCounterMode, forward + backward, attention=math"))
        return per_token

    def stage_pretrain(self, dtype: str, per_token: float, peak_tflops: float | None) -> None:
        import train_model

        params = self.params(**{"train.dtype": dtype, "train.out_dir": str(self.work / f"pretrain-{dtype}")})
        memory = memory_model.PeakMemory(self.device)
        summary = train_model.train(params, overwrite=True, show_progress=False)
        rate, first, last = log_throughput(Path(params.train.out_dir) / "log.csv")
        self.finals[dtype] = Path(summary["final_model"])
        utilisation = mfu(rate, per_token, peak_tflops)
        self.add(Row(f"tokens_per_s_{dtype}", rate, "tokens/s",
                     detail=f"{summary['step']} steps of {params.train.batch_size} sequences (micro-batch "
                            f"{params.train.micro_batch})"),
                 Row(f"loss_{dtype}", last, "nats", ok=math.isfinite(last) and last < first,
                     detail=f"first logged {first:.3f}, last {last:.3f}, val perplexity {summary['val_ppl']:.1f}"),
                 Row(f"peak_memory_{dtype}", memory.peak() / GiB, "GiB", detail=memory.what))
        if utilisation is not None:
            self.add(Row(f"mfu_{dtype}", utilisation, "of peak", detail=f"dense bf16 peak {peak_tflops} TFLOP/s"))

    def stage_resume(self) -> None:
        import train_model
        from model_defs import load_model

        steps = self.config.resume_steps
        common_settings = {"train.dtype": "bf16", "model.attention": "math", "train.steps": steps,
                           "train.warmup_steps": max(1, steps // 4)}
        straight = self.params(**common_settings, **{"train.out_dir": str(self.work / "resume-straight")})
        split = self.params(**common_settings, **{"train.out_dir": str(self.work / "resume-split")})
        train_model.train(straight, overwrite=True, show_progress=False)
        train_model.train(split, overwrite=True, stop_at=steps // 2, show_progress=False)
        train_model.train(split, resume=True, show_progress=False)
        a = load_model(Path(straight.train.out_dir) / "final").state_dict()
        b = load_model(Path(split.train.out_dir) / "final").state_dict()
        identical = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        self.add(Row("resume_max_difference", worst, "", ok=identical,
                     detail=f"{steps} steps straight against {steps // 2} + {steps - steps // 2} resumed: "
                            + ("identical weights" if identical else "the weights differ")))

    def stage_memory(self) -> memory_model.MemoryModel:
        params = self.params(**{"train.dtype": "bf16"})
        model = memory_model.build(params, self.device, "bf16")
        for micro in self.config.memory_micro_batches:
            measured = memory_model.trial_step(params, self.device, micro)
            predicted = model.peak(micro, 2)
            if measured is None:
                self.add(Row(f"memory_{micro}", float("nan"), "GiB", ok=False, detail="out of memory"))
                continue
            ratio = predicted / measured
            self.add(Row(f"memory_{micro}", measured / GiB, "GiB", ok=abs(ratio - 1) < 0.15,
                         detail=f"micro-batch {micro}, 2 a step: predicted {predicted / GiB:.3f} GiB (ratio {ratio:.3f})"))
        return model

    def stage_fits(self, model: memory_model.MemoryModel) -> None:
        params = self.params(**{"train.dtype": "bf16"})
        batch = get_params("base").train.batch_size
        candidates = memory_model.micro_batch_candidates(batch)
        fits = cuda_fits(params, self.device) if self.device.type == "cuda" else measured_fits(params, self.device)
        budgets = [size * self.config.size_unit for size in self.config.sizes]
        found = largest_fits(budgets, candidates, fits)
        for size, budget in zip(self.config.sizes, budgets):
            picked = memory_model.predicted_fit(model, batch, memory_model.usable_bytes(budget, self.device.type, 0))
            measured = found[budget]
            ok = measured is not None and (picked or 0) <= measured
            self.add(Row(f"fit_{size:g}{self.config.size_name.lower()}", float(measured or 0), "sequences", ok=ok,
                         detail=f"largest micro-batch of {batch} that ran in {size:g} {self.config.size_name}; the "
                                f"memory model picks {picked}"))

    def stage_export(self) -> None:
        from transformers import AutoModelForMaskedLM

        import hf_export
        from model_defs import load_model

        final = self.finals["bf16"]
        out = hf_export.export(final, self.tokenizer, self.work / "hf")
        hf = AutoModelForMaskedLM.from_pretrained(out, trust_remote_code=True).to(self.device).eval()
        core = load_model(final).to(self.device).eval()
        inputs, _ = probe_batch(core.cfg, 0.15, 2)
        inputs = inputs.to(self.device)
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False  # compare the fp32 arithmetic itself
        try:
            with torch.no_grad():
                difference = (hf(input_ids=inputs).logits - core.head(core.encoder(inputs))).abs().max().item()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        self.add(Row("export_max_logit_difference", difference, "", ok=difference < 1e-3,
                     detail=f"{out} loaded with trust_remote_code against the project model"))

    def stage_glue(self) -> None:
        import runtime
        from glue_models import ditbert_source
        from glue_utils import run_glue

        ft = dataclasses.replace(get_params(self.config.preset).finetune, epochs=1, warmup_epochs=0.1, seeds=[1],
                                 max_train_examples=self.config.glue_examples,
                                 max_eval_examples=self.config.glue_examples, save_best=False,
                                 output_dir=str(self.work / "glue"))
        source = ditbert_source(str(self.finals["bf16"]), str(self.tokenizer), "gpu-check")
        precision = runtime.Precision.choose(self.config.device, "bf16")
        began = time.perf_counter()
        runs = run_glue(source, ["demo"], ft, data_dir=str(ROOT / "data"), precision=precision, overwrite=True)
        with open(Path(runs[0]) / "results_demo.csv", newline="") as fh:
            accuracy = float(list(csv.DictReader(fh))[-1]["validation_accuracy"])
        self.add(Row("glue_demo_accuracy", accuracy, "", ok=0 <= accuracy <= 1,
                     detail=f"1 epoch on {self.config.glue_examples} examples, bf16, {time.perf_counter() - began:.0f} s"))


def missing_inputs() -> list[str]:
    """What `make setup` provides and this check needs, when it is not there."""
    from glue_tasks import DEMO_ARCHIVE

    missing = []
    if not (ROOT / "data" / DEMO_ARCHIVE).is_file() and not (ROOT / "data" / "demo-movie-reviews" / "train.csv").is_file():
        missing.append(f"data/{DEMO_ARCHIVE} (the demo task)")
    for module in ("tensorboard", "transformers", "tokenizers"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"the {module} package")
    return missing


def stage(name: str) -> None:
    print(f"== {name} ({time.strftime('%H:%M:%S')})", flush=True)


def run_check(config: CheckConfig, work: Path, results_dir: Path, tokenizer: Path | None) -> int:
    """Every stage in turn; the report; 0 when every row passed, else 1."""
    work.mkdir(parents=True, exist_ok=True)
    device = torch.device(config.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_bf16_tflops(name) if device.type == "cuda" else None
    check = Check(config, work, tokenizer)
    began = time.perf_counter()
    print(f"gpu-check on {name} ({'rehearsal, ' if config.device == 'cpu' else ''}work folder {work})", flush=True)
    stage("tokenizer")
    check.stage_tokenizer()
    stage("flops")
    per_token = check.stage_flops()
    for dtype in ("bf16", "fp16"):
        stage(f"pretrain, {dtype}")
        check.stage_pretrain(dtype, per_token, peak)
    stage("resume")
    check.stage_resume()
    stage("memory")
    model = check.stage_memory()
    stage("fits")
    check.stage_fits(model)
    stage("export")
    check.stage_export()
    stage("glue")
    check.stage_glue()
    check.add(Row("minutes", (time.perf_counter() - began) / 60, "min", detail="the whole check"))
    meta = common.machine_info(device) | {"command": " ".join(sys.argv), "config": dataclasses.asdict(config),
                                          "gpu_bf16_peak_tflops": peak}
    path = write_report(check.rows, results_dir, f"gpu_check_{slug(name)}", meta)
    print(f"wrote {path} and .json")
    for line in result_lines(check.rows):
        print(line)
    failed = [r.check for r in check.rows if not r.ok]
    if failed:
        print(f"gpu-check: {len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("gpu-check: every check passed")
    return 0


NO_CUDA = ("gpu-check needs a CUDA GPU, and torch sees none (torch {torch} {build}). Run it on a machine with an "
           "NVIDIA GPU and the CUDA build of torch; --rehearse runs its stages at a tiny size on the CPU.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rehearse", action="store_true", help="every stage at a tiny size on the CPU")
    ap.add_argument("--tokenizer", type=Path, help="a tokenizer.json to use instead of learning base's (stage 1)")
    ap.add_argument("--steps", type=int, help="optimizer steps of each pretraining run (default 300)")
    ap.add_argument("--micro-batch", type=int, help="the pretraining runs' micro-batch (default 64; 2 a step)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu-check",
                    help="where the runs go, replaced on every check (default runs/gpu-check)")
    ap.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR,
                    help="where the report goes (default bench/results)")
    args = ap.parse_args(argv)
    config = CheckConfig.rehearsal() if args.rehearse else CheckConfig()
    for name in ("steps", "micro_batch"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    if not args.rehearse and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        print(f"error: {NO_CUDA.format(torch=torch.__version__, build=build)}", file=sys.stderr)
        return 1
    missing = missing_inputs()
    if missing:
        print(f"error: gpu-check needs {', '.join(missing)}: run `make setup` first (it fetches them once)",
              file=sys.stderr)
        return 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return run_check(config, args.work, args.results_dir, args.tokenizer)


if __name__ == "__main__":
    sys.exit(main())
