"""Every DitBERT setting in one place.

Configuration flows one way: a preset below -> overrides (command line, keyword
arguments or the environment) -> the code. Nothing else reads global state.

Two presets:

* ``base`` -- the RTX 3060 recipe: a 12 x 768 pre-LayerNorm encoder, 32768-token
  byte-level BPE, 128 tokens per sequence, 3200 sequences per optimizer step.
  Batch arithmetic: 32 sequences per micro-batch x 100 accumulation steps x 1 GPU
  = 3200 sequences = 3200 x 130 = 416,000 tokens per optimizer step.
* ``tiny`` -- the same code at a size that trains for real on two CPU cores in
  about 15 minutes of pretraining (2 x 256, 4096-token vocabulary, ALiBi); the default of
  ``make demo`` and of the tests.
  Batch arithmetic: 32 sequences per micro-batch x 1 accumulation step = 32
  sequences = 4,160 tokens per optimizer step.

Choose one with ``DITBERT_PRESET=base`` or ``--preset base``; change single values
with ``--set train.lr=5e-4`` (or ``get_params("tiny", {"train.lr": 5e-4})``).
"""

from __future__ import annotations

import ast
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[START]", "[END]", "[MASK]", "[DOC]"]  # ids 0..4, in this order
PAD_ID, START_ID, END_ID, MASK_ID, DOC_ID = range(len(SPECIAL_TOKENS))


@dataclass
class TokenizerConfig:
    vocab_size: int = 32768  # byte-level BPE vocabulary, special tokens included
    min_frequency: int = 2  # a merge must be seen this often to be learned
    max_train_lines: int = 0  # 0 = learn merges from every line of the corpus


@dataclass
class ModelConfig:
    vocab_size: int = 32768
    seq_len: int = 128  # text tokens per pretraining sequence, [START] and [END] not counted
    n_layers: int = 12
    d_model: int = 768
    n_heads: int = 12
    d_ff: int = 3072
    dropout: float = 0.0  # pretraining dropout; fine-tuning sets finetune.dropout
    tie_lm_head: bool = True  # share the token embedding with the MLM output projection
    layer_norm_eps: float = 1e-5
    # Per-dimension std the sinusoid position table starts at; 0 = unit amplitude (std 0.71),
    # which is 35x the 0.02 token embeddings and hides the tokens after the embedding LayerNorm.
    pos_init_std: float = 0.02
    # learned = a position embedding table (BERT); alibi = none: each head's attention scores get
    # -slope |i - j|, so attention starts local and the model uses its neighbours from the first steps.
    position: str = "learned"
    # Speed switches: they change neither the weights nor the results (tests/test_optimisations.py).
    attention: str = "sdpa"  # sdpa = fused kernels (flash / memory-efficient on CUDA); math = plain matmul-softmax reference
    mlm_masked_only: bool = True  # last block after attention + MLM head at masked positions only; False = everywhere
    # ELECTRA (Clark et al., 2020) when > 0: a generator of this many blocks, which shares the embeddings and
    # the MLM head, fills the masked positions with tokens it samples, and the encoder learns to tell at every
    # position whether its token is the original: a signal from all tokens instead of the masked ones.
    generator_layers: int = 0
    rtd_weight: float = 50.0  # weight of the replaced-token detection loss beside the generator's MLM loss

    @property
    def max_positions(self) -> int:
        """Positions the embedding table holds: the text plus [START] and [END]."""
        return self.seq_len + 2


@dataclass
class DataConfig:
    corpus: list[str] = field(default_factory=list)  # UTF-8 text files, one document per line; empty = `embedded`
    # Wikipedia leads + IMDB reviews (model_defs); a name listed n times enters the token stream n times,
    # which weights the mix (docs/pretraining-value.md, "More Wikipedia in the mix")
    embedded: list[str] = field(default_factory=lambda: ["wiki", "imdb"])
    val_fraction: float = 0.01  # tail of the token stream held out for validation perplexity
    val_sequences: int = 256  # at most this many held-out sequences per evaluation
    cache_dir: str = ""  # where the token file goes; empty = beside the first corpus file


@dataclass
class TrainConfig:
    out_dir: str = "runs/base"  # checkpoints, logs and the final model
    tokenizer: str = "runs/base/tokenizer.json"  # written by Train-Tokenizer.py, read by everything after it
    steps: int = 100_000  # optimizer steps = warmup_steps + decay_steps
    warmup_steps: int = 25_000  # linear warmup from 0 to lr
    lr: float = 1e-3
    min_lr_ratio: float = 0.0  # lr at the end of the linear decay, as a fraction of lr
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    batch_size: int = 3200  # sequences per optimizer step, summed over GPUs
    micro_batch: int = 32  # sequences per forward pass on one device
    grad_clip: float = 0.5
    mask_prob: float = 0.15
    # Mask whole words, all their tokens, instead of single tokens (model_defs.mask_tokens); the
    # validation masks stay per token, so perplexities compare across runs. Off in both presets: on the
    # two-hour `tiny` run it costs STS-B and the GLUE-small gain (docs/pretraining-value.md, "Whole words
    # masked": +1.7 against +2.4).
    whole_word_mask: bool = False
    # Share of pretraining sequences cut to a random 2 .. seq_len tokens (log-uniform) and padded, as
    # BERT cut 10 % (model_defs.SequenceLoader): fine-tuning's texts are short and end in [END] after
    # a few tokens, which full windows never show. Validation sequences stay full. Off in both presets:
    # 10 % cost the two-hour `tiny` run CoLA and RTE (docs/pretraining-value.md, "Short sequences": +1.9
    # against +3.0).
    short_seq_prob: float = 0.0
    checkpoint_every: int = 1000  # optimizer steps between checkpoints
    eval_every: int = 1000  # optimizer steps between validation perplexity measurements
    log_every: int = 10  # optimizer steps between rows of the CSV log
    seed: int = 1234
    device: str = "auto"  # auto = cuda when available, else cpu
    dtype: str = "auto"  # auto = bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU (bf16 there: BENCHMARKS.md)
    compile: bool = False  # torch.compile the model
    fused_adamw: bool = True  # one fused AdamW kernel (CPU and CUDA) instead of a loop over tensors
    tf32: bool = True  # CUDA only: TF32 tensor cores for fp32 matmuls and convolutions
    pin_memory: bool = True  # CUDA only: copy batches from page-locked memory, without blocking
    max_nonfinite_steps: int = 5  # stop after this many non-finite losses in a row
    threads: int = 0  # CPU threads for torch; 0 = torch's default

    def accumulation_steps(self, world_size: int = 1) -> int:
        """Micro-batches per optimizer step on each rank, so the global batch stays `batch_size`."""
        per_step = self.micro_batch * world_size
        if self.batch_size % per_step:
            raise ValueError(
                f"train.batch_size={self.batch_size} is not a multiple of "
                f"train.micro_batch x ranks = {self.micro_batch} x {world_size}"
            )
        return self.batch_size // per_step


@dataclass
class ContrastiveConfig:
    """An unsupervised SimCSE phase (Gao et al., 2021) after masked-LM: each span of corpus text goes
    through the encoder twice with dropout, and the encoder learns to tell the two encodings of one
    span from those of the other spans in the batch. MLM leaves all texts close together (mean cosine
    of unrelated sentences 0.51 for `tiny`); this spreads them, so that texts are as alike as they read."""

    steps: int = 0  # optimizer steps after pretraining; 0 = none
    lr: float = 1e-4  # linear warmup over the first 10 %, then linear decay to 0
    batch_size: int = 64  # spans per step, each the others' negatives
    span_tokens: int = 32  # text tokens per span (a sentence or two), framed by [START] and [END]
    temperature: float = 0.05
    dropout: float = 0.1  # the only difference between a span's two encodings


@dataclass
class FinetuneConfig:
    lr: float = 2e-5
    warmup_epochs: float = 2.0  # linear warmup, then linear decay over the remaining epochs
    epochs: int = 10  # 2 warmup + 8 decay, as the original recipe
    batch_size: int = 32
    weight_decay: float = 0.1
    dropout: float = 0.1  # encoder and classifier-head dropout while fine-tuning
    max_len: int = 130  # tokens per example, special tokens included
    seeds: list[int] = field(default_factory=lambda: [1])
    max_train_examples: int = 0  # 0 = all; a quick run is one setting away
    max_eval_examples: int = 0
    grad_clip: float = 1.0
    layer_lr_decay: float = 1.0  # lr factor per layer going down from the head; 1 = one lr for all
    head_lr_scale: float = 1.0  # the head's (and final norm's) lr = lr x this; 1 = the encoder's rate
    # LP-FT: epochs that train only the head (and final norm) on the frozen encoder before the
    # whole model is fine-tuned, at head_lr; a random head then does not scramble pretrained features.
    head_epochs: int = 0
    head_lr: float = 1e-3
    pooling: str = "cls"  # cls | mean
    # Two-text tasks (MRPC, STS-B, RTE...): pool each text on its own, scale both to one length
    # and give the head [u, v, |u - v|, u * v] (glue_utils.DitBertClassifier); DitBERT models only.
    pair_features: bool = False
    # Two-text tasks, DitBERT models: joint = one input [START] a [DOC] b [END], the texts attending to
    # each other; separate = [START] a [END] and [START] b [END] encoded on their own (Sentence-BERT's
    # siamese encoder), each shaped like a pretraining input; by_task = separate for similarity tasks
    # (MRPC, QQP, STS-B), joint for inference tasks (MNLI, QNLI, RTE, WNLI). For pair features and the
    # similarity head.
    pair_encoding: str = "joint"
    # Regression on two texts (STS-B): score = scale * cosine of the two texts + bias, the scale and
    # bias fitted by least squares before fine-tuning (glue_utils.SimilarityHead); DitBERT models only.
    similarity_head: bool = False
    # DitBERT models: how pooled texts are mapped before a head reads them (a pair's two texts before
    # they are compared): none | center (minus the training texts' mean) | whiten (also decorrelated
    # to unit variance); fitted on the frozen model's training texts (glue_utils.fit_text_transform).
    # Whitening lifts STS-B for pretrained and random encoders alike (docs/pretraining-value.md,
    # "Whitened texts").
    text_transform: str = "none"
    # DitBERT models, pooled heads: the head also reads each text pooled at the embedding layer (the
    # tokens' own vectors, before the blocks mix them), beside the final states. A random encoder's
    # final states are its embeddings nearly unchanged; a pretrained one's blocks outweigh them.
    # Off in both presets: it lifts the two-hour `tiny` model's MRPC and costs it on the single texts
    # (docs/pretraining-value.md, "The embedding layer beside the final states": +1.5 against +2.4).
    embedding_channel: bool = False
    # DitBERT models, classification tasks with a template in glue_utils.PROMPTS: the task is asked as
    # a cloze, e.g. "<text> It was [MASK]." for SST-2, and a label is scored by the MLM head's logit
    # for its word (" terrible" / " great"), the head starting from pretraining's (PET, Schick and
    # Schuetze, 2021; LM-BFF, Gao et al., 2021): fine-tuning starts from what the encoder can already say.
    # Off in both presets: on the two-hour `tiny` model it ends below the pooled heads
    # (docs/pretraining-value.md, "The task asked as a cloze": GLUE-small gain +0.9 against +2.4).
    prompt: bool = False
    output_dir: str = "GLUE-Outputs"  # one folder per run: <model label>-seed<seed>/
    save_best: bool = True  # keep the best epoch's model per task as safetensors (best_<task>/)
    max_bad_fraction: float = 0.01  # more malformed rows than this in a data file is an error


@dataclass
class Params:
    preset: str = "base"
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    @property
    def tokenizer_path(self) -> Path:
        return Path(self.train.tokenizer)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _base() -> Params:
    return Params(preset="base", train=TrainConfig(out_dir="runs/base/pretrain", tokenizer="runs/base/tokenizer.json"))


def _tiny() -> Params:
    p = Params(preset="tiny")
    # Vocabulary 4096: with 40 % of positions masked the vocabulary projection and its softmax are
    # most of a CPU step; halving the vocabulary gives 1.5x the tokens per second (1.1x the tokens
    # per word); in 15-16 minutes the demo lead over the twin grew from 0.4 to 1.7-2.2 points (README).
    p.tokenizer = TokenizerConfig(vocab_size=4096)
    # ALiBi: with a learned position table MLM sits near perplexity 600 for 2000 steps before it
    # learns to look at the neighbouring tokens; with attention that starts local it is at 412 by step 400.
    # 2 layers with a narrow feed-forward: twice the tokens per second of 4 x 256 (d_ff 1024), and on
    # CPU tokens are what pays (docs/pretraining-value.md: demo 72.1 / 72.5 / 74.3 after 4 / 8 / 17M
    # tokens against the twin's 70.7).
    p.model = ModelConfig(vocab_size=4096, n_layers=2, d_model=256, n_heads=4, d_ff=512, position="alibi")
    p.data = DataConfig(val_fraction=0.02, val_sequences=128)
    p.train = TrainConfig(
        out_dir="runs/tiny/pretrain",
        tokenizer="runs/tiny/tokenizer.json",
        steps=2800,
        warmup_steps=200,
        lr=1e-3,
        mask_prob=0.4,  # 2.7x the MLM predictions per sequence; only the output layer's work grows (Wettig et al., 2023)
        batch_size=32,
        micro_batch=32,
        checkpoint_every=100,
        eval_every=100,
        log_every=10,
    )
    # mean pooling: MLM never trains the [START] position, so a short pretraining gives it nothing.
    # lr 3e-4 for 3 epochs: at 1e-4 for 2, a 2000-example task is left undertrained (demo 60% vs 70%).
    # pair features: from one vector for both texts no 2-layer encoder learns to compare them on
    # 2000 pairs (STS-B 14 pretrained, 17 random); with the texts pooled apart and scaled the head
    # reads their cosine (36 and 62: docs/pretraining-value.md, "Two texts, two vectors"). similarity
    # head: STS-B scored by that cosine, its scale fitted first, lifts both (72 and 75: "A similarity head").
    p.finetune = FinetuneConfig(lr=3e-4, warmup_epochs=0.2, epochs=3, max_len=130, pooling="mean", pair_features=True,
                                similarity_head=True)
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
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        apply_override(params, key, value)
    if "tokenizer.vocab_size" in overrides and "model.vocab_size" not in overrides:
        params.model.vocab_size = params.tokenizer.vocab_size
    return params


def params_from_dict(d: dict) -> Params:
    """Rebuild Params from `to_dict()` output (as stored in checkpoints and configs)."""
    p = Params(preset=d.get("preset", "base"))
    for f in dataclasses.fields(Params):
        if f.name == "preset" or f.name not in d:
            continue
        section_type = type(getattr(p, f.name))
        values = dict(d[f.name])
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        setattr(p, f.name, section_type(**values))
    return p


def params_from_env() -> Params:
    """Settings for a notebook or `make` step: preset from $DITBERT_PRESET, overrides from
    $DITBERT_SET, e.g. ``DITBERT_SET="train.steps=50;tokenizer.vocab_size=512"``."""
    return get_params(os.environ.get("DITBERT_PRESET"), env_overrides())


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
