"""Equal time, same machine: DitBERT's pretraining against the Hugging Face recipe, measured on GLUE.

    python bench/peer_pretrain.py --minutes 45 --glue-dir ../shared/glue_data        # every stage
    python bench/peer_pretrain.py --minutes 45 --stage finetune --glue-dir ...        # one stage

Three runs pretrain for the same B minutes of training on the default corpus, with the project's
tokenizer, one after the other on the whole machine:

* ``ditbert``: the `tiny` preset by the clock (``train.budget_minutes=B``: the schedule ends decayed at B);
* ``hf-mlm15``: the standard way, as transformers' ``run_mlm.py`` drives it: ``RobertaForMaskedLM`` with
  DitBERT's layers, width, heads, feed-forward and vocabulary (SDPA attention; no dropout, as DitBERT
  pretrains), the project's tokenizer as ``PreTrainedTokenizerFast``, the corpus's texts tokenized and
  grouped into 128-token blocks, ``DataCollatorForLanguageModeling`` at its default 15 % and the ``Trainer``
  with the choices of a careful user: DitBERT's peak rate (1e-3), batch (32 sequences), Adam betas
  (0.9, 0.98), epsilon 1e-6 and weight decay 0.01; RoBERTa's 6 % warmup, then linear decay to 0; the
  Trainer's gradient clipping (1.0). The Trainer counts in steps, so a short probe measures the
  machine's seconds per step first and the run is given the steps that fit in B;
* ``hf-mlm40``: the same at DitBERT's masking rate, 40 %, which tells the recipe from the speed.

Each keeps snapshots after B/2 and B minutes of training (training time: the steps and their batches,
not the data preparation or the snapshot writing). Then every snapshot is fine-tuned with the project's
loop (the Hugging Face path for the peer) with the same settings (`tiny`'s ``finetune`` section, 2000
training examples, 3 seeds, final epoch) on the demo task and the five small GLUE tasks, and so is each
recipe's random-init twin: DitBERT's (``random-init``, fresh weights per seed) and the peer's
(``hf-random-init``, its ``RobertaForMaskedLM`` as the Trainer receives it). The two fine-tuning paths
differ (DitBERT's heads read pooled texts and, on STS-B, their cosine; the peer's read the first token),
so each recipe's gain over its own twin is what its pretraining adds.

The report writes ``bench/results/peer_pretrain.csv`` (model, snapshot, minutes, tokens seen,
glue_small_mean and _std over seeds of the mean of the five tasks, demo_mean and _std), a plot of the
GLUE-small mean against minutes, each recipe from its twin, and the RESULT lines
``peer_glue_small_ditbert``, ``peer_glue_small_hf``, ``peer_tokens_ratio`` (DitBERT's tokens over the
peer's at B) and ``peer_gain_ditbert``, ``peer_gain_hf`` (at B, over the twin).

Every stage resumes: a finished snapshot or fine-tuning run is kept, a DitBERT run resumes from its
checkpoint, a Hugging Face run that did not finish starts over.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import glue_models  # noqa: E402
import glue_runs  # noqa: E402
import glue_tasks  # noqa: E402
import glue_utils  # noqa: E402
import runtime  # noqa: E402
from checkpoints import model_from_state, read_checkpoint, saved_params  # noqa: E402
from corpus import corpus_files  # noqa: E402
from model_defs import save_model  # noqa: E402
from params import Params, get_params, parse_overrides  # noqa: E402
from pretraining_value import final_scores, finished_run  # noqa: E402
from train_model import train  # noqa: E402

GLUE_SMALL = ("cola", "sst2", "mrpc", "stsb", "rte")
PEERS = {"hf-mlm15": 0.15, "hf-mlm40": 0.40}  # name -> DataCollatorForLanguageModeling's mlm_probability
TWINS = {"ditbert": "random-init", **{peer: "hf-random-init" for peer in PEERS}}  # recipe -> its random-init twin
MODELS = ("random-init", "hf-random-init", "ditbert", *PEERS)
HF_WARMUP = 0.06  # RoBERTa's share of warmup steps
PROBE_STEPS, PROBE_WARMUP = 25, 5  # the probe's steps, and its first ones, left out of the measure


@dataclasses.dataclass(frozen=True)
class Snapshot:
    model: str  # ditbert, hf-mlm15, hf-mlm40, or a twin: random-init, hf-random-init
    minutes: float  # the training time it had
    folder: Path

    @property
    def twin(self) -> bool:
        return self.model in TWINS.values()

    @property
    def label(self) -> str:
        return f"peer-{self.model}" + ("" if self.twin else f"-{self.minutes:g}min")

    def record(self) -> dict:
        return json.loads((self.folder / "peer_record.json").read_text())


def write_record(folder: Path, model: str, minutes: float, steps: int, tokens: int) -> None:
    (folder / "peer_record.json").write_text(json.dumps(
        {"model": model, "train_minutes": round(minutes, 3), "steps": steps, "tokens_seen": tokens}, indent=2))


# --------------------------------------------------------------------------- DitBERT by the clock


def pretrain_ditbert(params: Params, work: Path, minutes: float) -> list[Snapshot]:
    """`tiny` by the clock for `minutes`, stopped after half of them for the first snapshot."""
    params = dataclasses.replace(params, train=dataclasses.replace(
        params.train, budget_minutes=minutes, out_dir=str(work / "ditbert")))
    half = Snapshot("ditbert", minutes / 2, work / "snapshots" / f"ditbert-{minutes / 2:g}min")
    full = Snapshot("ditbert", minutes, Path(params.train.out_dir) / "final")
    checkpoint = Path(params.train.out_dir) / "checkpoint.pt"
    if not (half.folder / "peer_record.json").is_file():
        train(params, resume=checkpoint.is_file(), stop_at_minutes=minutes / 2, show_progress=False)
        state = read_checkpoint(checkpoint)
        model = model_from_state(saved_params(checkpoint, state).model, state["model"], checkpoint)
        save_model(model, half.folder, {"steps": state["step"], "tokens_seen": state["tokens_seen"],
                                        "params": state["params"], "tokenizer_fingerprint": state["tokenizer_fingerprint"]})
        write_record(half.folder, "ditbert", state["train_s"] / 60, state["step"], state["tokens_seen"])
    if not (full.folder / "peer_record.json").is_file():
        summary = train(params, resume=True, show_progress=False)
        write_record(full.folder, "ditbert", summary["train_minutes"], summary["step"], summary["tokens_seen"])
    return [half, full]


# --------------------------------------------------------------------------- the Hugging Face recipe


def peer_tokenizer(params: Params):
    from hf_ditbert import wrap_tokenizer

    return wrap_tokenizer(params.tokenizer_path, model_max_length=params.model.max_positions)


def grouped_blocks(params: Params, tokenizer, cache: Path):
    """The corpus as run_mlm.py prepares it: every text tokenized with its special tokens, all of them
    concatenated and cut into blocks of DitBERT's window (model.seq_len, 128 tokens in `tiny`; the
    remainder dropped). Cached in `cache`."""
    from datasets import Dataset, load_from_disk

    if (cache / "dataset_info.json").is_file():
        return load_from_disk(str(cache))
    lines = [line.strip() for f in corpus_files(params.data.corpus, params.data.embedded)
             for line in Path(f).read_text(encoding="utf-8").splitlines() if line.strip()]

    def tokenize(batch):
        return tokenizer(batch["text"], return_special_tokens_mask=True)

    block = params.model.seq_len

    def group(batch):
        joined = {k: sum(batch[k], []) for k in ("input_ids", "attention_mask", "special_tokens_mask")}
        usable = len(joined["input_ids"]) // block * block
        return {k: [v[i: i + block] for i in range(0, usable, block)] for k, v in joined.items()}

    texts = Dataset.from_dict({"text": lines})
    blocks = texts.map(tokenize, batched=True, remove_columns=["text"]).map(group, batched=True, batch_size=1000)
    blocks.save_to_disk(str(cache))
    return blocks


def trainer_callback():
    from transformers import TrainerCallback

    class TrainingClock(TrainerCallback):
        """Training time from step end to step end (the batches included), without the snapshot's
        writing: saves the model once past `snapshot_s` and stops the Trainer at `budget_s`."""

        def __init__(self, budget_s: float, snapshot_s: float | None = None, save=None):
            self.budget_s, self.snapshot_s, self.save = budget_s, snapshot_s, save
            self.train_s, self.saved, self.last, self.step_times = 0.0, False, 0.0, []

        def on_train_begin(self, args, state, control, **kwargs):
            self.last = time.perf_counter()

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.step_times.append(time.perf_counter() - self.last)
            self.train_s += self.step_times[-1]
            if self.save and not self.saved and self.train_s >= self.snapshot_s:
                self.save(model, state.global_step, self.train_s)
                self.saved = True
            if self.train_s >= self.budget_s:
                control.should_training_stop = True
            self.last = time.perf_counter()

    return TrainingClock


def hf_trainer(params: Params, blocks, tokenizer, mlm_probability: float, steps: int, out: Path, callback):
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from pretrain_step import hf_model

    tc = params.train
    device = runtime.pick_device(tc.device)
    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=tc.batch_size, learning_rate=tc.lr,
        adam_beta1=tc.betas[0], adam_beta2=tc.betas[1], adam_epsilon=tc.eps, weight_decay=tc.weight_decay,
        warmup_steps=round(HF_WARMUP * steps), lr_scheduler_type="linear", seed=tc.seed, data_seed=tc.seed,
        use_cpu=device.type == "cpu", bf16=runtime.autocast_dtype(tc.dtype, device) == runtime.TORCH_DTYPES["bf16"],
        dataloader_drop_last=True, save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, seed=tc.seed)
    return Trainer(model=hf_model("roberta", params), args=args, train_dataset=blocks, data_collator=collator,
                   callbacks=[callback])


def seconds_per_step(params: Params, blocks, tokenizer, mlm_probability: float, work: Path) -> float:
    """What a careful Trainer user measures before choosing max_steps: a short run's seconds per step,
    once its first steps (warming up the data loader and the kernels) are past."""
    clock = trainer_callback()(budget_s=math.inf)
    hf_trainer(params, blocks, tokenizer, mlm_probability, PROBE_STEPS, work / "probe", clock).train()
    measured = clock.step_times[PROBE_WARMUP:]
    return sum(measured) / len(measured)


def pretrain_hf(params: Params, name: str, work: Path, minutes: float) -> list[Snapshot]:
    """The Hugging Face recipe for `minutes` of training, with a snapshot after half of them."""
    half = Snapshot(name, minutes / 2, work / "snapshots" / f"{name}-{minutes / 2:g}min")
    full = Snapshot(name, minutes, work / "snapshots" / f"{name}-{minutes:g}min")
    if (full.folder / "peer_record.json").is_file() and (half.folder / "peer_record.json").is_file():
        return [half, full]
    tokenizer = peer_tokenizer(params)
    blocks = grouped_blocks(params, tokenizer, work / "hf-blocks")
    mlm = PEERS[name]
    steps = max(PROBE_STEPS, int(minutes * 60 / seconds_per_step(params, blocks, tokenizer, mlm, work)))
    tokens_per_step = params.train.batch_size * params.model.seq_len

    def save(snapshot: Snapshot, model, step: int, train_s: float) -> None:
        shutil.rmtree(snapshot.folder, ignore_errors=True)
        model.save_pretrained(snapshot.folder)
        tokenizer.save_pretrained(snapshot.folder)
        write_record(snapshot.folder, name, train_s / 60, step, step * tokens_per_step)

    clock = trainer_callback()(minutes * 60, minutes * 30, lambda model, step, s: save(half, model, step, s))
    trainer = hf_trainer(params, blocks, tokenizer, mlm, steps, work / name, clock)
    print(f"{name}: {steps} steps planned for {minutes:g} minutes (probe), masking {mlm:.0%}")
    trainer.train()
    if not clock.saved:  # the planned steps ran out before half the budget
        save(half, trainer.model, trainer.state.global_step, clock.train_s)
    save(full, trainer.model, trainer.state.global_step, clock.train_s)
    return [half, full]


def hf_twin_snapshot(work: Path) -> Snapshot:
    return Snapshot("hf-random-init", 0.0, work / "snapshots" / "hf-random-init")


def hf_twin(params: Params, work: Path) -> Snapshot:
    """The peer's random-init twin: the recipe's ``RobertaForMaskedLM`` initialised (seed train.seed) and
    saved with the tokenizer, untrained."""
    import torch

    from pretrain_step import hf_model

    twin = hf_twin_snapshot(work)
    if not (twin.folder / "peer_record.json").is_file():
        torch.manual_seed(params.train.seed)
        hf_model("roberta", params).save_pretrained(twin.folder)
        peer_tokenizer(params).save_pretrained(twin.folder)
        write_record(twin.folder, twin.model, 0.0, 0, 0)
    return twin


# --------------------------------------------------------------------------- fine-tuning and the report


def snapshots(work: Path, minutes: float, models=None) -> list[Snapshot]:
    """Every snapshot the pretraining stage wrote (of `models` only, if given), the random-init twins first."""
    found = [Snapshot("random-init", 0.0, work / "ditbert" / "final")]
    if (hf_twin_snapshot(work).folder / "peer_record.json").is_file():
        found.append(hf_twin_snapshot(work))
    for model in ("ditbert", *PEERS):
        for m in (minutes / 2, minutes):
            folder = (work / "ditbert" / "final" if model == "ditbert" and m == minutes
                      else work / "snapshots" / f"{model}-{m:g}min")
            if (folder / "peer_record.json").is_file():
                found.append(Snapshot(model, m, folder))
    return [s for s in found if models is None or s.model in models]


def source_of(snapshot: Snapshot, params: Params) -> glue_models.ModelSource:
    if snapshot.model in ("ditbert", "random-init"):
        return glue_models.ditbert_source(str(snapshot.folder), str(params.tokenizer_path), snapshot.label,
                                          random_init=snapshot.model == "random-init")
    return glue_models.hf_source(f"{snapshot.label}={snapshot.folder}")


def finetune(params: Params, work: Path, minutes: float, tasks: list[str], glue_dir, models=None) -> None:
    ft = params.finetune
    precision = runtime.Precision.choose(params.train.device, params.train.dtype)
    for snapshot in snapshots(work, minutes, models):
        source = source_of(snapshot, params)
        for task in tasks:
            todo = [seed for seed in ft.seeds if not finished_run(source, task, ft, seed)]
            if todo:
                glue_utils.run_glue(source, [task], dataclasses.replace(ft, seeds=todo), glue_dir,
                                    precision=precision, overwrite=True)


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def report_rows(params: Params, work: Path, minutes: float, tasks: list[str], models=None) -> list[dict]:
    ft, rows = params.finetune, []
    glue = [t for t in tasks if t in GLUE_SMALL]
    for snapshot in snapshots(work, minutes, models):
        runs = [glue_runs.run_dir(ft.output_dir, snapshot.label, seed) for seed in ft.seeds]
        per_task = {task: final_scores(runs, task) for task in tasks}
        glue_means = [sum(per_task[t][seed] for t in glue) / len(glue) for seed in ft.seeds
                      if glue and all(seed in per_task[t] for t in glue)]
        record = {"train_minutes": 0.0, "tokens_seen": 0} if snapshot.model == "random-init" else snapshot.record()
        (g_mean, g_std), (d_mean, d_std) = mean_std(glue_means), mean_std(list(per_task.get("demo", {}).values()))
        kind = "none" if snapshot.twin else "B" if snapshot.minutes == minutes else "B/2"
        rows.append({"model": snapshot.model, "snapshot": kind, "minutes": round(record["train_minutes"], 2),
                     "tokens_seen": record["tokens_seen"], "glue_small_mean": round(g_mean, 2),
                     "glue_small_std": round(g_std, 2), "demo_mean": round(d_mean, 2), "demo_std": round(d_std, 2)})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in ("ditbert", *PEERS):
        twin = [r for r in rows if r["model"] == TWINS[model]]
        points = twin + [r for r in rows if r["model"] == model]
        if len(points) > len(twin):
            ax.errorbar([r["minutes"] for r in points], [r["glue_small_mean"] for r in points],
                        yerr=[r["glue_small_std"] for r in points], marker="o", capsize=3, label=model)
    ax.set_xlabel("minutes of pretraining")
    ax.set_ylabel("small-GLUE mean (dev, final epoch)")
    ax.set_title("Equal pretraining time, same machine")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(params: Params, work: Path, minutes: float, tasks: list[str], out: Path, models=None) -> list[dict]:
    import pandas as pd

    rows = report_rows(params, work, minutes, tasks, models)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "peer_pretrain.csv", index=False)
    plot(rows, out / "peer_pretrain.png")
    print(pd.DataFrame(rows).to_string(index=False))
    at_end = {r["model"]: r for r in rows if r["snapshot"] in ("B", "none")}
    if "ditbert" in at_end and "hf-mlm15" in at_end:
        print(f"RESULT peer_glue_small_ditbert {at_end['ditbert']['glue_small_mean']:.2f}")
        print(f"RESULT peer_glue_small_hf {at_end['hf-mlm15']['glue_small_mean']:.2f}")
        print(f"RESULT peer_tokens_ratio {at_end['ditbert']['tokens_seen'] / at_end['hf-mlm15']['tokens_seen']:.2f}")
        for name, model in (("ditbert", "ditbert"), ("hf", "hf-mlm15")):
            if TWINS[model] in at_end:
                gain = at_end[model]["glue_small_mean"] - at_end[TWINS[model]]["glue_small_mean"]
                print(f"RESULT peer_gain_{name} {gain:.2f}")
    return rows


# --------------------------------------------------------------------------- command line


def settings(args) -> Params:
    overrides = parse_overrides(args.set)
    overrides.setdefault("finetune.max_train_examples", args.train_examples)
    overrides.setdefault("finetune.save_best", False)
    overrides.setdefault("finetune.seeds", args.seeds)
    overrides.setdefault("finetune.output_dir", str(Path(args.work) / "GLUE-Outputs"))
    if args.threads:
        overrides.setdefault("train.threads", args.threads)
    return get_params("tiny", overrides)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=45.0, help="B, the training minutes of each run")
    ap.add_argument("--stage", choices=("all", "pretrain", "finetune", "report"), default="all")
    ap.add_argument("--tasks", default="demo,cola,sst2,mrpc,stsb,rte")
    ap.add_argument("--models", default=",".join(MODELS), help="the models fine-tuned and reported")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--train-examples", type=int, default=2000)
    ap.add_argument("--glue-dir", default=None)
    ap.add_argument("--work", default=None, help="default runs/peer/<B>min")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.NAME=VALUE")
    args = ap.parse_args(argv)
    args.work = args.work or f"runs/peer/{args.minutes:g}min"
    params, work, tasks = settings(args), Path(args.work), glue_tasks.parse_tasks(args.tasks)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if unknown := sorted(set(models) - set(MODELS)):
        ap.error(f"unknown --models {', '.join(unknown)}: choose from {', '.join(MODELS)}")
    if args.stage in ("all", "pretrain"):
        pretrain_ditbert(params, work, args.minutes)
        for name in PEERS:
            pretrain_hf(params, name, work, args.minutes)
        hf_twin(params, work)
    if args.stage in ("all", "finetune"):
        finetune(params, work, args.minutes, tasks, args.glue_dir, models)
    if args.stage in ("all", "report"):
        report(params, work, args.minutes, tasks, Path(args.out), models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
