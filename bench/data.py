"""The pretraining data path: the pre-tokenised file loader against tokenising text on the fly.

    python bench/data.py                      # tiny preset, embedded Wikipedia corpus, CPU

Four contenders take turns in one process (common.interleave), then the loader alternates with
DitBERT training steps to give its share of a step:

* loader -- SequenceLoader windows cut from the memory-mapped token file (what the training loop
  serves), alone and followed by the training loop's masking (pretrain_data.next_step_batches);
* on the fly -- the same batch made from raw text inside the loop: the next corpus lines are
  tokenised (the Rust tokenizer's encode_batch, both cores), joined with [DOC] and cut into
  sequences, alone and followed by the same masking (pretrain_data.mask_sequences).

Tokens/s counts the tokens of the served batches (micro-batch x (seq_len + 2)).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import common  # noqa: E402
import pretrain_step  # noqa: E402
from corpus import embedded_corpus_file, iter_corpus_documents  # noqa: E402
from params import DOC_ID, END_ID, START_ID, Params, get_params  # noqa: E402
from tokenization import load_tokenizer, train_tokenizer  # noqa: E402
from pretrain_data import (  # noqa: E402
    SequenceLoader, mask_sequences, next_step_batches, open_token_file, prepare_token_file)


def ensure_tokenizer(p: Params) -> Path:
    """The preset's tokenizer; trained on the embedded corpus (about a second for tiny) if missing."""
    path = p.tokenizer_path
    if not path.is_file():
        train_tokenizer([embedded_corpus_file("data")], p.tokenizer.vocab_size, path, p.tokenizer.min_frequency)
    return path


class OnTheFlyBatches:
    """Batches made from raw lines inside the training loop: tokenise just enough lines for the
    next batch, keep the remainder for the one after. The fair version of the baseline: batched
    Rust tokenisation, no Python loop over tokens."""

    def __init__(self, lines: list[str], tokenizer, seq_len: int):
        self.lines, self.tok, self.seq_len = itertools.cycle(lines), tokenizer, seq_len
        self.buffer = np.empty(0, dtype=np.int64)
        self.lines_per_call = 8

    def sequences(self, count: int) -> torch.Tensor:
        need = count * self.seq_len
        while len(self.buffer) < need:
            texts = list(itertools.islice(self.lines, self.lines_per_call))
            encodings = self.tok.encode_batch(texts, add_special_tokens=False)
            ids = np.fromiter((i for enc in encodings for i in (*enc.ids, DOC_ID)), dtype=np.int64)
            self.buffer = np.concatenate([self.buffer, ids])
            self.lines_per_call = max(1, int(self.lines_per_call * need / max(len(ids), 1)))  # about one batch a call
        out = np.empty((count, self.seq_len + 2), dtype=np.int64)
        out[:, 0], out[:, -1] = START_ID, END_ID
        out[:, 1:-1] = self.buffer[:need].reshape(count, self.seq_len)
        self.buffer = self.buffer[need:]
        return torch.from_numpy(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "base"])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--step-rounds", type=int, default=6, help="timed training steps for the share of a step")
    args = ap.parse_args(argv)

    p = get_params(args.preset, {"train.device": "cpu"})
    micro, seq_len = p.train.micro_batch, p.model.seq_len
    tokens = micro * p.model.max_positions
    tokenizer_path = ensure_tokenizer(p)
    corpus = [embedded_corpus_file("data")]
    token_file = prepare_token_file(corpus, tokenizer_path, p.data.cache_dir)
    loader = SequenceLoader(open_token_file(token_file), seq_len, seed=p.train.seed)
    tok = load_tokenizer(tokenizer_path)
    on_the_fly = OnTheFlyBatches(list(iter_corpus_documents(corpus)), tok, seq_len)

    def loader_serve():
        loader.next_batch(micro)

    def loader_full():
        next_step_batches(loader, p, 1)

    def on_the_fly_serve():
        on_the_fly.sequences(micro)

    def on_the_fly_full():
        mask_sequences(on_the_fly.sequences(micro), 0, p)

    contenders = {"loader": loader_serve, "on the fly": on_the_fly_serve,
                  "loader + masking": loader_full, "on the fly + masking": on_the_fly_full}
    times = common.interleave(contenders, args.rounds, args.warmup)
    step_batches = [next_step_batches(loader, p, 1)[0] for _ in range(4)]
    step = pretrain_step.ditbert("DitBERT step", p, torch.device("cpu"), step_batches)
    step_times = common.interleave({"step": step.step, "loader + masking": loader_full}, args.step_rounds, 1)

    ms = {name: common.median(t) * 1e3 for name, t in times.items()}
    step_ms = common.median(step_times["step"]) * 1e3
    share = common.median(step_times["loader + masking"]) * 1e3 / step_ms
    what = {
        "loader": "token file -> sequences (SequenceLoader.next_batch)",
        "on the fly": "text -> sequences (encode_batch on the next lines)",
        "loader + masking": "token file -> masked batch (pretrain_data.next_step_batches)",
        "on the fly + masking": "text -> masked batch (same masking)",
    }
    rows = [{"source": what[name], "ms_per_batch": ms[name], "spread": common.spread(times[name]),
             "tokens_per_s": tokens / ms[name] * 1e3, "share_of_step": ms[name] / step_ms} for name in contenders]
    rows.append({"source": "DitBERT training step (for scale)", "ms_per_batch": step_ms,
                 "spread": common.spread(step_times["step"]), "tokens_per_s": tokens / step_ms * 1e3, "share_of_step": 1.0})
    serve_speedup = ms["on the fly"] / ms["loader"]
    full_speedup = ms["on the fly + masking"] / ms["loader + masking"]
    meta = common.machine_info(torch.device("cpu")) | {"preset": args.preset, "micro_batch": micro,
                                                       "seq_tokens": p.model.max_positions, "command": " ".join(sys.argv)}
    common.report(f"data_{args.preset}", rows, meta)
    print(f"loader vs on the fly: {serve_speedup:.1f}x serving sequences, {full_speedup:.1f}x with the masking both "
          f"share; loader + masking = {share:.2%} of a training step (timed interleaved with the step)")
    print(common.result_line(f"data_{args.preset}_loader_share_of_step", share))
    print(common.result_line(f"data_{args.preset}_loader_speedup_with_masking", full_speedup))
    print(common.result_line(f"data_{args.preset}_loader_speedup", serve_speedup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
