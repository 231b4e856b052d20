"""GLUE fine-tuning throughput: dynamic padding with length buckets against max-length padding.

    python bench/finetune.py                               # RTE from $GLUE_DIR, else the Hugging Face hub
    python bench/finetune.py --glue-dir path/to/glue_data --task mrpc

The data, encoding, batching and padding are the fine-tuning loop's own (glue_tasks.load_task,
glue_models.load_for_task, encode_split, train_batches, collate); the model is the preset's DitBERT classifier (random
weights: speed does not depend on them). Three ways to feed one pass over the same examples:

* max length   -- random batches, every batch padded to finetune.max_len (what `padding="max_length"` does);
* dynamic      -- the same random batches, each padded to its longest example;
* buckets      -- glue_utils.train_batches: examples of similar length batched together, then
                  padded to the longest (the repository's default).

Each call trains one batch as the fine-tuning loop does (forward, its loss, backward, clipping, the
fused AdamW of runtime.adamw); the three take turns batch by batch,
and examples/s is the examples of the pass divided by the summed time of its batches.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402
import glue_tasks  # noqa: E402
import glue_models
import glue_utils  # noqa: E402
import runtime  # noqa: E402
from data import ensure_tokenizer  # noqa: E402
from model_defs import DitBertForMLM, save_model  # noqa: E402
from params import get_params, notebook_input  # noqa: E402



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "base"])
    ap.add_argument("--task", default="rte", help="a sentence-pair GLUE task (rte, mrpc, stsb, qnli, ...)")
    ap.add_argument("--glue-dir", default=notebook_input("GLUE_DIR") or None, help="GLUE download folder; default $GLUE_DIR, else the hub")
    ap.add_argument("--examples", type=int, default=512, help="training examples in the pass (0 = all)")
    ap.add_argument("--batch-size", type=int, help="default: the preset's finetune.batch_size")
    args = ap.parse_args(argv)

    p = get_params(args.preset)
    ft = p.finetune
    batch_size = args.batch_size or ft.batch_size
    task = glue_tasks.get_task(args.task)
    if len(task.text_columns) != 2:
        raise SystemExit(f"--task {args.task} is not a sentence-pair task")
    splits, _ = glue_tasks.load_task(task, args.glue_dir)
    train = glue_tasks.subsample(splits["train"], args.examples)

    with tempfile.TemporaryDirectory() as model_dir:
        torch.manual_seed(0)
        save_model(DitBertForMLM(p.model), model_dir)
        source = glue_models.ditbert_source(model_dir, str(ensure_tokenizer(p)), label="bench")
        loaded = glue_models.load_for_task(source, task, ft, seed=0)
    model, max_len = loaded.model.train(), loaded.info["max_len"]
    enc = glue_utils.encode_split(loaded, train)
    lengths = np.array([len(ids) for ids in enc["input_ids"]])
    optimizer = runtime.adamw(model, ft.lr, ft.weight_decay)  # the loop's own

    rng = np.random.default_rng(0)
    order = rng.permutation(len(lengths))
    random_batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    bucket_batches = glue_utils.train_batches(lengths, batch_size, np.random.default_rng(0))

    def pad_to(batch: dict, T: int) -> dict:
        extra = T - batch["input_ids"].shape[1]
        return batch | {"input_ids": F.pad(batch["input_ids"], (0, extra), value=loaded.pad_id),
                        "attention_mask": F.pad(batch["attention_mask"], (0, extra), value=0)}

    def trainer(batches, pad_to_max: bool):
        it = iter(batches)

        def step():
            batch = glue_utils.collate(enc, next(it), loaded.pad_id, task.is_regression)
            if pad_to_max:
                batch = pad_to(batch, max_len)
            loss = glue_utils.task_loss(task, model(batch["input_ids"], batch["attention_mask"]), batch["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), ft.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step

    contenders = {"max length": trainer(random_batches, True), "dynamic": trainer(random_batches, False),
                  "buckets": trainer(bucket_batches, False)}
    for warm in (trainer(random_batches[:2], True), trainer(random_batches[:2], False)):  # warm-up, untimed
        warm(), warm()
    rounds = min(len(random_batches), len(bucket_batches))
    times = common.interleave(contenders, rounds=rounds, warmup=0)

    def tokens(batches, pad_to_max):
        """(examples, real tokens, tokens after padding) of the batches the pass trained on."""
        batches = batches[:rounds]
        padded = sum(len(b) * (max_len if pad_to_max else lengths[b].max()) for b in batches)
        return sum(len(b) for b in batches), sum(lengths[b].sum() for b in batches), padded

    counts = {"max length": tokens(random_batches, True), "dynamic": tokens(random_batches, False),
              "buckets": tokens(bucket_batches, False)}
    labels = {"max length": f"pad every batch to {max_len} (random batches)",
              "dynamic": "pad to the batch's longest (random batches)",
              "buckets": "pad to the batch's longest, length buckets (glue_utils.train_batches)"}
    rows = []
    for name in contenders:
        seconds, (n, real, padded) = sum(times[name]), counts[name]
        rows.append({"padding": labels[name], "examples_per_s": n / seconds, "seconds": seconds, "examples": n,
                     "padding_share": 1 - real / padded, "tokens_per_example": padded / n})
    for row in rows:
        row["speedup_over_max_length"] = row["examples_per_s"] / rows[0]["examples_per_s"]
    meta = common.machine_info(torch.device("cpu")) | {
        "preset": args.preset, "task": task.name, "examples": rows[0]["examples"], "batch_size": batch_size, "max_len": max_len,
        "mean_length": float(lengths.mean()), "command": " ".join(sys.argv)}
    common.report(f"finetune_{args.preset}_{task.name}", rows, meta)
    print(f"{task.name}: {rows[0]['examples']} examples, mean length {lengths.mean():.1f} tokens of at most {max_len}, batch {batch_size}")
    print(common.result_line(f"finetune_{args.preset}_{task.name}_dynamic_speedup", rows[1]["speedup_over_max_length"]))
    print(common.result_line(f"finetune_{args.preset}_{task.name}_bucket_speedup", rows[2]["speedup_over_max_length"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
