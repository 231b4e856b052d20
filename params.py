"""Every DitBERT setting in one place.

Configuration flows one way: a preset below -> overrides (command line, keyword
arguments or the environment) -> the code. Nothing else reads global state.

Two presets:

* ``base`` -- the RTX 3060 recipe: a 12 x 768 pre-LayerNorm encoder, 32768-token
  byte-level BPE, 128 tokens per sequence, 3200 sequences per optimizer step.
* ``tiny`` -- the same code at a size that trains for real on two CPU cores
  (2 x 256, 4096-token vocabulary, ALiBi); the default of ``make demo`` and of the tests.

Each preset function below spells out its batch arithmetic.

Choose one with ``DITBERT_PRESET=base`` or ``--preset base``; change single values
with ``--set train.lr=5e-4`` (or ``get_params("tiny", {"train.lr": 5e-4})``).
"""

from __future__ import annotations

import ast
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[START]", "[END]", "[MASK]", "[DOC]"]  # ids 0..4, in this order
PAD_ID, START_ID, END_ID, MASK_ID, DOC_ID = range(len(SPECIAL_TOKENS))
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # a byte-level BPE holds every byte and the special tokens

# The choices of the settings that name one, declared here only: runtime.py, model_defs.py and
# glue_heads.py import them (tests/test_architecture.py checks that no module declares a copy).
POSITIONS = ("learned", "alibi")
ATTENTIONS = ("sdpa", "math")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("linear", "triangle")  # train.schedule: runtime.lr_factor
POOLINGS = ("cls", "mean")
ENCODINGS = ("joint", "separate")  # how a classifier encodes a pair
PAIR_ENCODINGS = (*ENCODINGS, "by_task")  # finetune.pair_encoding: one of ENCODINGS, or chosen by task
DOCUMENT_MODES = ("line", "blank_line")  # data.documents: what a document of a text file is (corpus.py)


def require(ok: bool, key: str, value, what: str) -> None:
    """One setting's check: a ValueError naming the setting, its value and what it must be."""
    if not ok:
        raise ValueError(f"setting {key}={value!r}: {what}")


def check_types(section: str, config) -> None:
    """Every field of a settings section holds a value of its declared type (an int where an int is
    declared, a finite number where a float is), so a mistyped override fails here, by name."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        require(has_type(value, hints[f.name]), f"{section}.{f.name}", value, f"must be {type_name(hints[f.name])}")


def has_type(value, hint) -> bool:
    """Whether `value` is of the type `hint` declares (bools are not numbers here)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return isinstance(value, list) and all(has_type(v, args[0]) for v in value)
    if origin is tuple:
        return isinstance(value, tuple) and len(value) == len(args) and all(map(has_type, value, args))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def type_name(hint) -> str:
    """The type `hint` declares, in words for an error message."""
    names = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return f"a list of {type_name(args[0]).split(' ', 1)[1]}s"
    if origin is tuple:
        return f"{len(args)} numbers"
    return names.get(hint, str(hint))


@dataclass
class TokenizerConfig:
    vocab_size: int = 32768  # byte-level BPE vocabulary, special tokens included
    min_frequency: int = 2  # a merge must be seen this often to be learned
    max_train_lines: int = 0  # at most this many documents (pieces of long ones) reach the BPE trainer; 0 = all
    # The text the BPE trainer sees, in UTF-8 bytes: a corpus larger than this gives a sample of its
    # documents drawn evenly from all of it (a fixed seed), so the trainer's time and memory do not grow
    # with the corpus; 0 = all of it. The embedded corpus (37 MB) fits whole.
    sample_bytes: int = 200_000_000
    # The last documents of the corpus kept out of training, to measure the tokenizer on text it has not
    # seen (Train-Tokenizer.py): this many, but never more than a tenth of the corpus's documents.
    holdout_docs: int = 200

    def check(self, s: str = "tokenizer") -> None:
        check_types(s, self)
        require(self.vocab_size >= MIN_VOCAB, f"{s}.vocab_size", self.vocab_size,
                f"must be at least {MIN_VOCAB}: the 256 bytes and the {len(SPECIAL_TOKENS)} special tokens")
        require(self.min_frequency >= 1, f"{s}.min_frequency", self.min_frequency, "must be at least 1")
        require(self.max_train_lines >= 0, f"{s}.max_train_lines", self.max_train_lines, "must be 0 (all) or more")
        require(self.sample_bytes >= 0, f"{s}.sample_bytes", self.sample_bytes, "must be 0 (all) or more")
        require(self.holdout_docs >= 0, f"{s}.holdout_docs", self.holdout_docs, "must be 0 (none) or more")


@dataclass
class ModelConfig:
    vocab_size: int = 32768
    seq_len: int = 128  # text tokens per pretraining sequence, [START] and [END] not counted
    n_layers: int = 12
    d_model: int = 768
    n_heads: int = 12
    d_ff: int = 3072
    dropout: float = 0.0  # pretraining dropout; fine-tuning sets finetune.dropout
    tie_lm_head: bool = True  # share the token embedding with the MLM output layer; False = an untied output layer
    layer_norm_eps: float = 1e-5
    # learned = a position table (BERT), started as a sinusoid at the token embeddings' scale;
    # alibi = none: each head's attention scores get -slope |i - j|, so attention starts local
    # and the model uses its neighbours from the first steps.
    position: str = "learned"
    # Speed switches: they change neither the weights nor the results (tests/test_optimisations.py).
    attention: str = "sdpa"  # sdpa = fused kernels (flash / memory-efficient on CUDA); math = plain matmul-softmax reference
    mlm_masked_only: bool = True  # last block after attention + MLM head at masked positions only; False = everywhere

    @property
    def max_positions(self) -> int:
        """Positions the embedding table holds: the text plus [START] and [END]."""
        return self.seq_len + 2

    def check(self, s: str = "model") -> None:
        check_types(s, self)
        require(self.vocab_size >= MIN_VOCAB, f"{s}.vocab_size", self.vocab_size,
                f"must be at least {MIN_VOCAB}, the smallest DitBERT tokenizer")
        for name in ("seq_len", "n_layers", "d_model", "n_heads", "d_ff"):
            require(getattr(self, name) >= 1, f"{s}.{name}", getattr(self, name), "must be at least 1")
        require(self.d_model % self.n_heads == 0, f"{s}.n_heads", self.n_heads,
                f"must divide {s}.d_model={self.d_model} (each head takes an equal share)")
        require(0 <= self.dropout < 1, f"{s}.dropout", self.dropout, "must be in [0, 1)")
        require(self.layer_norm_eps > 0, f"{s}.layer_norm_eps", self.layer_norm_eps, "must be above 0")
        require(self.position in POSITIONS, f"{s}.position", self.position, f"must be one of {POSITIONS}")
        require(self.attention in ATTENTIONS, f"{s}.attention", self.attention, f"must be one of {ATTENTIONS}")


@dataclass
class DataConfig:
    # The corpus, read in order (docs/pretraining.md, "Your corpus at scale"): text files (.txt or any other
    # name; UTF-8), JSON lines (.jsonl), Parquet (.parquet), each maybe compressed (.gz, .zst); a folder of
    # such shards; a glob pattern; a folder written by `datasets`' save_to_disk; hf:<name>[:<config>] for a
    # hub dataset (streamed). Empty = `embedded`.
    corpus: list[str] = field(default_factory=list)
    # Wikipedia leads + IMDB reviews (pretrain_data); a name listed n times enters the token stream n times,
    # which weights the mix (docs/pretraining-value.md, "More Wikipedia in the mix")
    embedded: list[str] = field(default_factory=lambda: ["wiki", "imdb"])
    val_fraction: float = 0.01  # tail of the token stream held out for validation perplexity
    val_sequences: int = 256  # at most this many held-out sequences per evaluation
    cache_dir: str = ""  # where the token file goes; empty = beside the first corpus file (hub datasets: data/)
    # A document of a text file: "line" = every non-empty line; "blank_line" = the lines up to a blank line
    # (joined by a newline). JSON lines, Parquet rows and dataset rows are one document each.
    documents: str = "line"
    text_column: str = "text"  # the field of JSON lines, Parquet and dataset rows that holds the text
    split: str = "train"  # the split of a datasets folder or hub dataset
    # Building the token file (these change how fast it is built, never what it holds):
    workers: int = 0  # processes tokenising the corpus; 0 = one per core; 1 = this process (the tokenizer's threads)
    commit_seconds: float = 30.0  # the build records where it is at most this often; a killed build resumes there

    def check(self, s: str = "data") -> None:
        check_types(s, self)
        require(all(self.corpus), f"{s}.corpus", self.corpus, "must not name an empty path")
        require(self.documents in DOCUMENT_MODES, f"{s}.documents", self.documents, f"must be one of {DOCUMENT_MODES}")
        require(bool(self.text_column), f"{s}.text_column", self.text_column, "must name a column")
        require(bool(self.split), f"{s}.split", self.split, "must name a split")
        require(self.workers >= 0, f"{s}.workers", self.workers, "must be 0 (one per core) or more")
        require(self.commit_seconds >= 0, f"{s}.commit_seconds", self.commit_seconds, "must be 0 or more")
        require(bool(self.corpus or self.embedded), f"{s}.embedded", self.embedded,
                f"must name an embedded corpus when {s}.corpus is empty")
        require(0 < self.val_fraction < 1, f"{s}.val_fraction", self.val_fraction, "must be between 0 and 1")
        require(self.val_sequences >= 1, f"{s}.val_sequences", self.val_sequences, "must be at least 1")


@dataclass
class TrainConfig:
    out_dir: str = "runs/base"  # checkpoints, logs and the final model
    tokenizer: str = "runs/base/tokenizer.json"  # written by Train-Tokenizer.py, read by everything after it
    steps: int = 100_000  # optimizer steps = warmup_steps + decay_steps (not used when budget_minutes is set)
    # Train by the clock: this many minutes of training time (optimizer steps and their batches; not
    # data preparation, validation or checkpoints), the schedule's decay following the clock to end
    # when the budget does, whatever the hardware. 0 = by train.steps.
    budget_minutes: float = 0.0
    # The learning rate's shape over the run: "linear" = warmup, then linear decay to min_lr_ratio;
    # "triangle" = Cramming's budget shape, from a quarter of lr up to lr at 3/4 of the run, then down to
    # min_lr_ratio (the warmup caps it in the first steps). docs/pretraining.md, "By the clock".
    schedule: str = "linear"
    warmup_steps: int = 25_000  # linear warmup from 0 to lr
    lr: float = 1e-3
    min_lr_ratio: float = 0.0  # lr at the end of the linear decay, as a fraction of lr
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    batch_size: int = 3200  # sequences per optimizer step, summed over GPUs
    # Sequences per forward pass on one device. train_model.py --set train.micro_batch=auto picks the largest
    # that fits the device instead (memory_model.py; on CUDA confirmed by a trial step) and records it here.
    micro_batch: int = 32
    grad_clip: float = 0.5
    mask_prob: float = 0.15
    # Mask whole words, all their tokens, instead of single tokens (pretrain_data.mask_tokens); the
    # validation masks stay per token, so perplexities compare across runs. Off in both presets
    # (docs/pretraining-value.md, "Whole words masked").
    whole_word_mask: bool = False
    checkpoint_every: int = 1000  # optimizer steps between checkpoints
    eval_every: int = 1000  # optimizer steps between validation perplexity measurements
    log_every: int = 10  # optimizer steps between rows of the CSV log
    seed: int = 1234
    device: str = "auto"  # auto = cuda when available, else cpu
    dtype: str = "auto"  # auto = bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU (bf16 there: BENCHMARKS.md)
    compile: bool = False  # torch.compile the model
    max_nonfinite_steps: int = 5  # stop after this many non-finite losses in a row
    threads: int = 0  # CPU threads for torch; 0 = torch's default
    # Start from a trained DitBERT's weights (a final/ folder, a checkpoint.pt or a folder exported for
    # transformers) with a new optimizer and schedule: continued or domain-adaptive pretraining. The
    # model settings are the source's; the tokenizer must be the one it was trained with. "" = fresh weights.
    init_from: str = ""
    # Loss, perplexity, learning rate, tokens/s and gradient norm as TensorBoard event files in
    # <out_dir>/tensorboard/, written as the run goes (log.csv is written as well). Off in both presets:
    # it needs the tensorboard package, which requirements.txt installs and a hand-made environment may lack.
    tensorboard: bool = False

    def accumulation_steps(self, world_size: int = 1) -> int:
        """Micro-batches per optimizer step on each rank, so the global batch stays `batch_size`;
        when it does not split, the error names a micro-batch (or a batch size) that does."""
        per_step = self.micro_batch * world_size
        if self.batch_size % per_step:
            raise ValueError(
                f"train.batch_size={self.batch_size} is not a multiple of train.micro_batch x ranks = "
                f"{self.micro_batch} x {world_size}: {self.batch_advice(world_size)}"
            )
        return self.batch_size // per_step

    def batch_advice(self, world_size: int) -> str:
        """The largest micro-batch up to train.micro_batch that splits train.batch_size over
        `world_size` ranks; or, when the ranks cannot share the batch equally, the nearest batch sizes."""
        ranks = f"{world_size} rank" + ("s" if world_size > 1 else "")
        if self.batch_size % world_size == 0:
            per_rank = self.batch_size // world_size
            micro = max(m for m in range(1, min(self.micro_batch, per_rank) + 1) if per_rank % m == 0)
            return (f"set train.micro_batch={micro} ({micro} x {per_rank // micro} accumulation x {ranks} "
                    f"= {self.batch_size} sequences)")
        per_step = self.micro_batch * world_size
        lower, upper = self.batch_size // per_step * per_step, (self.batch_size // per_step + 1) * per_step
        sizes = f"{lower} or {upper}" if lower else f"{upper}"
        return (f"{self.batch_size} sequences do not split over {ranks}; set train.batch_size={sizes} "
                f"(multiples of {self.micro_batch} x {world_size})")

    def check(self, s: str = "train") -> None:
        check_types(s, self)
        for name in ("out_dir", "tokenizer"):
            require(bool(getattr(self, name)), f"{s}.{name}", getattr(self, name), "must name a path")
        require(self.steps >= 1, f"{s}.steps", self.steps, "must be at least 1 (the optimizer steps of the run)")
        require(self.budget_minutes >= 0, f"{s}.budget_minutes", self.budget_minutes,
                "must be 0 (train by steps) or the minutes of training time")
        require(self.schedule in SCHEDULES, f"{s}.schedule", self.schedule, f"must be one of {SCHEDULES}")
        require(0 <= self.warmup_steps < self.steps, f"{s}.warmup_steps", self.warmup_steps,
                f"must be at least 0 and below {s}.steps={self.steps}, or the learning rate never reaches "
                f"its peak {s}.lr; lower {s}.warmup_steps or raise {s}.steps")
        require(self.lr > 0, f"{s}.lr", self.lr, "must be above 0")
        require(0 <= self.min_lr_ratio <= 1, f"{s}.min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        require(all(0 <= b < 1 for b in self.betas), f"{s}.betas", self.betas, "must both be in [0, 1)")
        require(self.eps > 0, f"{s}.eps", self.eps, "must be above 0")
        require(self.weight_decay >= 0, f"{s}.weight_decay", self.weight_decay, "must be 0 or more")
        for name in ("batch_size", "micro_batch", "checkpoint_every", "eval_every", "log_every", "max_nonfinite_steps"):
            require(getattr(self, name) >= 1, f"{s}.{name}", getattr(self, name), "must be at least 1")
        self.accumulation_steps(1)
        require(self.grad_clip > 0, f"{s}.grad_clip", self.grad_clip, "must be above 0")
        require(0 < self.mask_prob < 1, f"{s}.mask_prob", self.mask_prob, "must be between 0 and 1")
        require(self.seed >= 0, f"{s}.seed", self.seed, "must be 0 or more")
        require(self.device in DEVICES, f"{s}.device", self.device, f"must be one of {DEVICES}")
        require(self.dtype in DTYPES, f"{s}.dtype", self.dtype, f"must be one of {DTYPES}")
        require(self.threads >= 0, f"{s}.threads", self.threads, "must be 0 (torch's default) or more")


@dataclass
class FinetuneConfig:
    lr: float = 2e-5
    warmup_epochs: float = 2.0  # linear warmup, then linear decay over the remaining epochs
    epochs: int = 10  # 2 warmup + 8 decay, as the original recipe
    batch_size: int = 32
    weight_decay: float = 0.1
    dropout: float = 0.1  # encoder and classifier-head dropout while fine-tuning (Hugging Face models too)
    max_len: int = 130  # tokens per example, special tokens included
    seeds: list[int] = field(default_factory=lambda: [1])
    max_train_examples: int = 0  # 0 = all; a quick run is one setting away
    max_eval_examples: int = 0
    grad_clip: float = 1.0
    pooling: str = "cls"  # cls | mean
    # Two-text tasks (MRPC, STS-B, RTE...): pool each text on its own, scale both to one length
    # and give the head [u, v, |u - v|, u * v] (glue_heads.DitBertClassifier); DitBERT models only.
    pair_features: bool = False
    # Two-text tasks, DitBERT models: joint = one input [START] a [DOC] b [END], the texts attending to
    # each other; separate = [START] a [END] and [START] b [END] encoded on their own (Sentence-BERT's
    # siamese encoder), each shaped like a pretraining input; by_task = separate for similarity tasks
    # (MRPC, QQP, STS-B), joint for inference tasks (MNLI, QNLI, RTE, WNLI). For pair features and the
    # similarity head.
    pair_encoding: str = "joint"
    # Regression on two texts (STS-B): score = scale * cosine of the two texts + bias, the scale and
    # bias fitted by least squares before fine-tuning (glue_heads.SimilarityHead); DitBERT models only.
    similarity_head: bool = False
    output_dir: str = "GLUE-Outputs"  # one folder per run: <model label>-seed<seed>/
    save_best: bool = True  # keep the best epoch's model per task as safetensors (best_<task>/)
    # <run>/tensorboard/<task>/, written as the task trains: the loss and learning rate of every step, each
    # epoch's train and validation metrics (TensorBoard). Off in both presets, as train.tensorboard.
    tensorboard: bool = False
    max_bad_fraction: float = 0.01  # more malformed rows than this in a data file is an error

    def check(self, s: str = "finetune") -> None:
        check_types(s, self)
        require(self.lr > 0, f"{s}.lr", self.lr, "must be above 0")
        require(self.epochs >= 1, f"{s}.epochs", self.epochs, "must be at least 1")
        require(0 <= self.warmup_epochs <= self.epochs, f"{s}.warmup_epochs", self.warmup_epochs,
                f"must be at least 0 and at most {s}.epochs={self.epochs}")
        require(self.batch_size >= 1, f"{s}.batch_size", self.batch_size, "must be at least 1")
        require(self.weight_decay >= 0, f"{s}.weight_decay", self.weight_decay, "must be 0 or more")
        require(0 <= self.dropout < 1, f"{s}.dropout", self.dropout, "must be in [0, 1)")
        require(self.max_len >= 4, f"{s}.max_len", self.max_len, "must be at least 4 (the special tokens and a text)")
        require(bool(self.seeds), f"{s}.seeds", self.seeds, "must name at least one seed")
        for name in ("max_train_examples", "max_eval_examples"):
            require(getattr(self, name) >= 0, f"{s}.{name}", getattr(self, name), "must be 0 (all) or more")
        require(self.grad_clip > 0, f"{s}.grad_clip", self.grad_clip, "must be above 0")
        require(self.pooling in POOLINGS, f"{s}.pooling", self.pooling, f"must be one of {POOLINGS}")
        require(self.pair_encoding in PAIR_ENCODINGS, f"{s}.pair_encoding", self.pair_encoding,
                f"must be one of {PAIR_ENCODINGS}")
        require(bool(self.output_dir), f"{s}.output_dir", self.output_dir, "must name a folder")
        require(0 <= self.max_bad_fraction <= 1, f"{s}.max_bad_fraction", self.max_bad_fraction, "must be in [0, 1]")


@dataclass
class Params:
    preset: str = "base"
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    @property
    def tokenizer_path(self) -> Path:
        return Path(self.train.tokenizer)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self) -> "Params":
        """Validate every section before any work: the first bad value raises a ValueError naming
        the setting (``train.steps``), its value and what it must be. Returns the settings."""
        require(self.preset in PRESETS, "preset", self.preset, f"must be one of {sorted(PRESETS)}")
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if dataclasses.is_dataclass(section):
                section.check(f.name)
        return self


def _base() -> Params:
    # 32 sequences per micro-batch x 100 accumulation steps x 1 GPU = 3200 sequences
    # = 3200 x 130 tokens = 416,000 tokens per optimizer step
    return Params(preset="base", train=TrainConfig(out_dir="runs/base/pretrain", tokenizer="runs/base/tokenizer.json"))


def _tiny() -> Params:
    p = Params(preset="tiny")
    # Vocabulary 4096: with many positions masked the vocabulary projection and its softmax are most
    # of a CPU step, so a smaller one buys tokens per second (docs/pretraining-value.md, "A smaller
    # vocabulary: more tokens in the same minutes").
    p.tokenizer = TokenizerConfig(vocab_size=4096)
    # ALiBi: attention that starts local leaves the perplexity plateau a learned position table sits on
    # ("Why the perplexity stalled: the plateau, and ALiBi"). 2 layers with a narrow feed-forward:
    # on CPU tokens are what pays ("Tokens are what pays: a cheaper encoder, 40 % masking, and the curve").
    p.model = ModelConfig(vocab_size=4096, n_layers=2, d_model=256, n_heads=4, d_ff=512, position="alibi")
    p.data = DataConfig(val_fraction=0.02, val_sequences=128)
    # 32 sequences per micro-batch x 1 accumulation step x 1 process = 32 sequences
    # = 32 x 130 tokens = 4,160 tokens per optimizer step
    p.train = TrainConfig(
        out_dir="runs/tiny/pretrain",
        tokenizer="runs/tiny/tokenizer.json",
        steps=2800,
        warmup_steps=200,
        lr=1e-3,
        mask_prob=0.4,  # more predictions per sequence; only the output layer's work grows (Wettig et al., 2023)
        batch_size=32,
        micro_batch=32,
        checkpoint_every=100,
        eval_every=100,
        log_every=10,
    )
    # The fine-tuning recipe measured in docs/pretraining-value.md: mean pooling (MLM never trains the
    # [START] position), lr 3e-4 for 3 epochs (a 2000-example task is left undertrained at 1e-4 for 2),
    # each text of a pair pooled apart for the head ("Two texts, two vectors"), STS-B scored by the
    # texts' cosine ("A similarity head for STS-B"), and similarity pairs encoded apart, inference
    # pairs together ("Similarity pairs apart, inference pairs together").
    p.finetune = FinetuneConfig(lr=3e-4, warmup_epochs=0.2, epochs=3, max_len=130, pooling="mean", pair_features=True,
                                similarity_head=True, pair_encoding="by_task")
    return p


PRESETS = {"base": _base, "tiny": _tiny}
DEFAULT_PRESET = "tiny"


def _coerce(current, text: str):
    """Parse an override string to the type of the value it replaces."""
    if isinstance(text, str) and not isinstance(current, str):
        if isinstance(current, bool):
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no"):
                return False
            raise ValueError(f"expected true/false, got {text!r}")
        if isinstance(current, list) and not text.startswith("["):
            item_type = type(current[0]) if current else str
            return [item_type(x) for x in text.split(",") if x]
        value = ast.literal_eval(text)
        if isinstance(current, float) and isinstance(value, int):
            value = float(value)
        if isinstance(current, tuple):
            value = tuple(value)
        return value
    return text


def apply_override(params: Params, key: str, value) -> None:
    """Set ``section.name`` (e.g. ``train.lr``) to ``value``, with a clear error on a typo."""
    section_name, _, name = key.partition(".")
    section = getattr(params, section_name, None)
    if not name or section is None or not dataclasses.is_dataclass(section):
        sections = [f.name for f in dataclasses.fields(params) if dataclasses.is_dataclass(getattr(params, f.name))]
        raise KeyError(f"unknown setting {key!r}: expected <section>.<name> with section one of {sections}")
    names = [f.name for f in dataclasses.fields(section)]
    if name not in names:
        raise KeyError(f"unknown setting {key!r}: {section_name} has {names}")
    current = getattr(section, name)
    try:
        setattr(section, name, _coerce(current, value))
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"bad value for {key}: {value!r} ({err})") from None


def get_params(preset: str | None = None, overrides: dict | None = None) -> Params:
    """The settings of `preset` (default: $DITBERT_PRESET, else tiny) with `overrides` applied.

    `overrides` maps ``section.name`` to a value or to its string form. The model
    vocabulary always follows the tokenizer vocabulary unless set on its own.
    """
    preset = preset or os.environ.get("DITBERT_PRESET", DEFAULT_PRESET)
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    params = PRESETS[preset]()
    apply_overrides(params, overrides or {})
    return params.check()


def apply_overrides(params: Params, overrides: dict) -> None:
    """Set each ``section.name`` of `overrides` on `params` (unchecked: call `Params.check` after)."""
    for key, value in overrides.items():
        apply_override(params, key, value)
    if "tokenizer.vocab_size" in overrides and "model.vocab_size" not in overrides:
        params.model.vocab_size = params.tokenizer.vocab_size


def params_from_dict(d: dict, check: bool = True) -> Params:
    """Rebuild Params from `to_dict()` output (as stored in checkpoints and configs), validated
    unless `check` is False (settings that overrides will change before they are checked)."""
    p = Params(preset=d.get("preset", "base"))
    for f in dataclasses.fields(Params):
        if f.name == "preset" or f.name not in d:
            continue
        section_type = type(getattr(p, f.name))
        values = dict(d[f.name])
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        setattr(p, f.name, section_type(**values))
    return p.check() if check else p


# --------------------------------------------------------------------------- the environment

GLUE_NOTEBOOKS = "GLUE-Finetune*.py"
HF_NOTEBOOKS = "GLUE-Finetune-huggingface*.py"
FROM_MNLI = "GLUE-Finetune-from-mnli.py, GLUE-Finetune-huggingface-from-mnli.py"
# Every environment variable of the notebooks and scripts: variable -> (the setting it sets, or ""
# for an input its readers take as it is; what it means; who reads it). `params_from_env` applies
# the settings after $DITBERT_SET; `notebook_input` reads the others.
ENVIRONMENT: dict[str, tuple[str, str, str]] = {
    "DITBERT_PRESET": ("", "the preset: `tiny` (default) or `base`", "every notebook and script"),
    "DITBERT_SET": ("", "settings on top of the preset, `section.name=value;...`", "every notebook and script"),
    "GLUE_SEEDS": ("finetune.seeds", "fine-tuning seeds, one run folder each, e.g. `1,2,3`", GLUE_NOTEBOOKS),
    "GLUE_OUTPUT_DIR": ("finetune.output_dir", "the folder of run folders, written by fine-tuning and read by "
                        "aggregation", f"{GLUE_NOTEBOOKS}, Aggregate-GLUE-results.py"),
    "GLUE_TASKS": ("", "comma-separated tasks: GLUE names, `demo`, or a folder with `train.csv`/`dev.csv`; default "
                   "all nine GLUE tasks (from MNLI: rte,mrpc,stsb,wnli; make submission: the six small ones)",
                   f"{GLUE_NOTEBOOKS}, scripts/submission.sh"),
    "GLUE_DIR": ("", "a folder in the original GLUE download layout; empty = the Hugging Face hub (Pretraining-Value "
                 "and pretraining_value.py: default `../shared/glue_data`; aggregation: the training labels of the "
                 "trivial baseline, else the counts the runs recorded)",
                 f"{GLUE_NOTEBOOKS}, Pretraining-Value.py, pretraining_value.py, bench/finetune.py, "
                 "Aggregate-GLUE-results.py"),
    "DITBERT_MODEL": ("", "the pretrained model folder; default `<train.out_dir>/final`", "GLUE-Finetune.py"),
    "DITBERT_TOKENIZER": ("", "its tokenizer; default `train.tokenizer`", "GLUE-Finetune.py"),
    "RANDOM_INIT": ("", "`1` = the same config with random weights: the control for what pretraining gives",
                    "GLUE-Finetune.py"),
    "MODEL_LABEL": ("", "the model's name in run folders and tables; default `ditbert-<preset>` (`-random-init` "
                    "is added for the control)", "GLUE-Finetune.py, GLUE-Finetune-from-mnli.py"),
    "MNLI_MODEL_DIR": ("", "an MNLI model folder to start from (`{seed}` = the run's seed); default the MNLI "
                       "run's `best_mnli/`", FROM_MNLI),
    "HF_MODELS": ("", "comma-separated hub names, local folders, `minilm-l6` (the packaged MiniLM) or "
                  "`label=name-or-folder`; default `bert-base-uncased,roberta-base`", HF_NOTEBOOKS),
    "GLUE_AGGREGATED_CSV": ("", "the table aggregation writes, the markdown beside it; default "
                            "`GLUE-aggregated-results.csv`", "Aggregate-GLUE-results.py"),
    "GLUE_PLOTS_DIR": ("", "where aggregation's plots go; default `<finetune.output_dir>/plots`",
                       "Aggregate-GLUE-results.py"),
    "GLUE_COMPARE": ("", "pairs of table rows to compare with a 95 % interval, `a:b` separated by `;` or `,` (b may be "
                     "`trivial-majority`), besides each model and its random-init twin; default none",
                     "Aggregate-GLUE-results.py"),
    "VALUE_STEPS": ("", "snapshot step counts, 0 = the random-init control; default `0,700,1400,2800`",
                    "Pretraining-Value.py"),
    "VALUE_SEEDS": ("", "its fine-tuning seeds (set as finetune.seeds); default `1,2,3`", "Pretraining-Value.py"),
    "VALUE_NAME": ("", "experiment name: `runs/value/<name>/`, run labels `<name>-step<k>`, `<name>-random-init`; default "
                   "`notebook`", "Pretraining-Value.py"),
    "VALUE_GLUE": ("", "`1` = also RTE, MRPC, STS-B, CoLA and SST-2 from `GLUE_DIR`", "Pretraining-Value.py"),
    "VALUE_FINETUNE": ("", "`0` = probes and diagnostics only", "Pretraining-Value.py"),
    "DITBERT_OVERWRITE": ("", "`1` = replace what an earlier run wrote (a tokenizer, a pretraining run, fine-tuning "
                          "results); by default an existing one is an error before any work",
                          "Train-Tokenizer.py, train_model.py, " + GLUE_NOTEBOOKS),
    "GLUE_RESUME": ("", "`1` = keep each task and seed a run folder already finished from the same model with the "
                    "same settings, fine-tune the rest (one that did not finish again): a stopped command picks up "
                    "where it stopped", GLUE_NOTEBOOKS),
    "DEMO_SEEDS": ("", "seeds of the demo task; default `1,2,3`", "scripts/demo.sh"),
    "GLUE_SMALL_TASKS": ("", "the GLUE tasks fine-tuned when `GLUE_DIR` is set; default "
                         "`rte,mrpc,stsb,cola,sst2,wnli`", "scripts/demo.sh"),
    "GLUE_SMALL_SEEDS": ("", "their seeds; default `1,2`", "scripts/demo.sh"),
    "MODEL": ("", "the label of the run folders a submission is built from; default `MODEL_LABEL` or "
              "`ditbert-<preset>`", "scripts/submission.sh (make submission)"),
}


def params_from_env() -> Params:
    """Settings for a notebook or `make` step: the preset from $DITBERT_PRESET, then $DITBERT_SET
    (e.g. ``DITBERT_SET="train.steps=50;tokenizer.vocab_size=512"``), then the variables that
    `ENVIRONMENT` maps onto settings (e.g. ``GLUE_SEEDS=1,2,3`` sets finetune.seeds); an empty
    variable leaves its setting as it is."""
    mapped = {setting: os.environ[name] for name, (setting, _, _) in ENVIRONMENT.items()
              if setting and os.environ.get(name, "").strip()}
    return get_params(os.environ.get("DITBERT_PRESET"), env_overrides() | mapped)


def notebook_input(name: str, default: str = "") -> str:
    """The value of an `ENVIRONMENT` variable that sets no setting (`default` when unset). A name
    missing from the table, or one that sets a setting (read it from `params_from_env`), is an error."""
    if name not in ENVIRONMENT or ENVIRONMENT[name][0]:
        raise KeyError(f"{name} is not an input of ENVIRONMENT's table (params.py)")
    return os.environ.get(name, default)


def env_overrides() -> dict:
    """The overrides in $DITBERT_SET (``a.b=1;c.d=2``), which every entry point applies first."""
    return parse_overrides([p for p in os.environ.get("DITBERT_SET", "").split(";") if p.strip()])


def parse_overrides(pairs: list[str]) -> dict:
    """Turn ``["train.lr=1e-4", ...]`` from the command line into an overrides dict."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"override {pair!r} must look like section.name=value")
        out[key.strip()] = value.strip()
    return out
