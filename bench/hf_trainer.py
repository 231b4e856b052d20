"""An exported DitBERT fine-tuned the Hugging Face way: transformers' `Trainer` as run_glue.py drives it.

    python hf_export.py --model runs/tiny/pretrain/final --tokenizer runs/tiny/tokenizer.json --out runs/tiny/hf
    python bench/hf_trainer.py --model runs/tiny/hf --tasks demo,mrpc --seeds 1,2,3 --glue-dir ../shared/glue_data

What run_glue.py does, step for step: ``AutoConfig.from_pretrained(model, num_labels=..., finetuning_task=task)``,
``AutoModelForSequenceClassification.from_pretrained(model, config=config)`` (with ``trust_remote_code=True``:
the folder's own modeling code), the folder's tokenizer with ``truncation=True, max_length=max_seq_length``,
`DataCollatorWithPadding`, and `TrainingArguments` with AdamW, linear warmup then linear decay. The
settings are the preset's ``finetune`` section (`tiny`: lr 3e-4, 3 epochs, warmup over 0.2 epochs, weight
decay 0.1, batch 32, 130 tokens), as the repository's own loop (GLUE-Finetune.py) uses them, and the
examples are the ones that loop reads: glue_tasks.load_task, and the same `--max-train` training
examples (glue_tasks.subsample draws them with a fixed seed, for every model and seed).

Prints ``RESULT hf_trainer_<task>_seed<seed> <score>`` per run and ``RESULT hf_trainer_<task> <mean>``
per task: the task's score as Aggregate-GLUE-results.py reports it (x100, the mean of the task's
metrics on its validation split, e.g. MRPC's accuracy and F1), after the last epoch.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import glue_tasks  # noqa: E402
from params import FinetuneConfig, get_params, notebook_input  # noqa: E402


def tokenized(tokenizer, ds, max_len: int):
    """A split's texts as run_glue.py tokenizes them (one text or a pair, cut to `max_len` tokens)."""
    def tokenize(batch):
        texts = [batch["text_a"]] + ([batch["text_b"]] if "text_b" in batch else [])
        return tokenizer(*texts, truncation=True, max_length=max_len)

    return ds.map(tokenize, batched=True, remove_columns=[c for c in ds.column_names if c != "label"])


def training_arguments(ft: FinetuneConfig, seed: int, steps_per_epoch: int, out_dir: str):
    """The fine-tuning settings as `TrainingArguments`: the same rate, epochs, batch, weight decay,
    clipping and warmup steps (finetune.warmup_epochs of an epoch) as the repository's loop."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=out_dir, learning_rate=ft.lr, num_train_epochs=ft.epochs, per_device_train_batch_size=ft.batch_size,
        per_device_eval_batch_size=2 * ft.batch_size, weight_decay=ft.weight_decay, max_grad_norm=ft.grad_clip,
        warmup_steps=round(ft.warmup_epochs * steps_per_epoch), lr_scheduler_type="linear", seed=seed,
        save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True)


def finetune(model_dir: str, task, splits: dict, ft: FinetuneConfig, seed: int) -> dict:
    """Fine-tune a fresh classifier from `model_dir` on `task` with `seed`; its validation metrics."""
    from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, set_seed)

    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    config = AutoConfig.from_pretrained(model_dir, num_labels=task.num_labels, finetuning_task=task.name,
                                        trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, config=config, trust_remote_code=True)
    max_len = min(ft.max_len, tokenizer.model_max_length)
    train = tokenized(tokenizer, splits["train"], max_len)
    with tempfile.TemporaryDirectory() as out_dir:
        args = training_arguments(ft, seed, math.ceil(len(train) / ft.batch_size), out_dir)
        trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                          data_collator=DataCollatorWithPadding(tokenizer))
        trainer.train()
        metrics = {}
        for split in task.eval_splits:
            out = trainer.predict(tokenized(tokenizer, splits[split], max_len))
            preds = out.predictions.squeeze(-1) if task.is_regression else out.predictions.argmax(-1)
            values = glue_tasks.compute_metrics(task, preds, out.label_ids)
            metrics.update({f"{split}_{name}": value for name, value in values.items()})
    return metrics


def task_score(task, metrics: dict) -> float:
    """x100 mean of the validation metrics, as the aggregated table reports a task."""
    return 100 * statistics.mean(metrics[f"{split}_{m}"] for split in task.eval_splits for m in task.metrics)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a folder written by `hf_export.py`")
    ap.add_argument("--tasks", default="demo", help="comma-separated: GLUE names, demo, or a custom task folder")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--glue-dir", default=notebook_input("GLUE_DIR") or None,
                    help="GLUE download folder; default $GLUE_DIR, else the hub")
    ap.add_argument("--preset", default="tiny", help="whose finetune settings to use")
    ap.add_argument("--max-train", type=int, default=2000, help="training examples (0 = all)")
    args = ap.parse_args(argv)

    ft = get_params(args.preset).finetune
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    print(f"{args.model}: lr {ft.lr:g}, {ft.epochs} epochs, warmup {ft.warmup_epochs:g} epochs, weight decay "
          f"{ft.weight_decay:g}, batch {ft.batch_size}, {ft.max_len} tokens, {args.max_train or 'all'} examples")
    for name in glue_tasks.parse_tasks(args.tasks):
        task = glue_tasks.get_task(name)
        splits, _ = glue_tasks.load_task(task, args.glue_dir, ft.max_bad_fraction)
        splits["train"] = glue_tasks.subsample(splits["train"], args.max_train)
        scores = []
        for seed in seeds:
            started = time.time()
            metrics = finetune(args.model, task, splits, ft, seed)
            scores.append(task_score(task, metrics))
            detail = ", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items())
            print(f"{task.name} seed {seed}: {detail} ({time.time() - started:.0f} s)")
            print(f"RESULT hf_trainer_{task.name}_seed{seed} {scores[-1]:.2f}")
        spread = f" +- {statistics.stdev(scores):.2f}" if len(scores) > 1 else ""
        print(f"{task.name}: {statistics.mean(scores):.2f}{spread} over seeds {seeds}")
        print(f"RESULT hf_trainer_{task.name} {statistics.mean(scores):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
