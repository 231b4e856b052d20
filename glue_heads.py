"""Task heads on the DitBERT encoder: the classifier, its two-text features, the similarity head,
and saving and loading a fine-tuned classifier.

A classifier's head settings are one `HeadConfig`, which a saved classifier's ``config.json``
keeps beside the encoder's `ModelConfig`. Texts are pooled by `model_defs.pool_hidden`, the same
function the Hugging Face export ships.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import fileio
import model_defs
import tokenization
from glue_tasks import Task
from model_defs import pool_hidden
from params import DOC_ID, END_ID, ENCODINGS, PAD_ID, PAIR_ENCODINGS, POOLINGS, START_ID, FinetuneConfig, ModelConfig



def check_pair_encoding(kind: str, choices: tuple[str, ...] = PAIR_ENCODINGS) -> None:
    """Reject an unknown pair encoding before any text is encoded."""
    if kind not in choices:
        raise ValueError(f"pair encoding must be {' or '.join(map(repr, choices))}, got {kind!r}")


def resolve_pair_encoding(kind: str, similar_texts: bool) -> str:
    """How a classifier encodes its pairs under the pair encoding `kind`, on a task that asks how alike
    its two texts are (`similar_texts`) or not. ``by_task`` encodes the texts of a similarity task
    (MRPC, QQP, STS-B: how alike are they?) separately, as Sentence-BERT does, and those of an
    inference task (MNLI, QNLI, RTE, WNLI: does b follow from a?) jointly, so that the words of each
    text can attend to the words of the other."""
    check_pair_encoding(kind)
    if kind != "by_task":
        return kind
    return "separate" if similar_texts else "joint"


def task_pair_encoding(kind: str, task: Task) -> str:
    """How a classifier for `task` encodes its pairs under finetune.pair_encoding=`kind`."""
    return resolve_pair_encoding(kind, task.similarity)


@dataclass(frozen=True)
class HeadConfig:
    """What a classifier's head reads and outputs.

    * `num_labels` -- outputs; 1 = regression.
    * `pooling` -- ``cls`` (the [START] state) or ``mean`` (over the real tokens).
    * `pair_features` -- two-text tasks: each text pooled on its own and scaled to length
      sqrt(d_model), into u and v, and the head reads ``[u, v, |u - v|, u * v]``.
    * `similarity_head` -- regression on two texts: ``scale * cosine + bias`` (`SimilarityHead`).
    * `pair_encoding` -- ``joint`` (one input ``[START] a [DOC] b [END]``) or ``separate``
      (``[START] a [END]`` and ``[START] b [END]`` encoded on their own); `resolve_pair_encoding`
      resolves finetune.pair_encoding=by_task to one of them. Only a head that reads the two texts
      apart (pair features, similarity) follows it; one pooled vector is always of the joint input.
    * `dropout` -- on the pooled features, while training.
    """

    num_labels: int
    pooling: str = "cls"
    pair_features: bool = False
    similarity_head: bool = False
    pair_encoding: str = "joint"
    dropout: float = 0.1

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be {' or '.join(map(repr, POOLINGS))}, got {self.pooling!r}")
        check_pair_encoding(self.pair_encoding, ENCODINGS)
        if self.similarity_head and self.num_labels != 1:
            raise ValueError(f"the similarity head scores one number (regression), not {self.num_labels} labels")

    @property
    def regression(self) -> bool:
        return self.num_labels == 1

    @property
    def reads_pairs(self) -> bool:
        """Whether the head reads the two texts of a pair apart (pair features or the similarity head)."""
        return self.pair_features or self.similarity_head

    @property
    def encodes_apart(self) -> bool:
        """Whether the encoder reads the two texts of a pair as rows of their own."""
        return self.reads_pairs and self.pair_encoding == "separate"

    @classmethod
    def recipe(cls, num_labels: int, two_texts: bool, similar_texts: bool, pooling: str, pair_features: bool,
               similarity_head: bool, pair_encoding: str, dropout: float) -> "HeadConfig":
        """The head a fine-tuning recipe asks for on a task with `num_labels` outputs: pair features only
        where the task has two texts, the similarity head only where it also is a regression, the pair
        encoding resolved for a task whose texts are compared for likeness (`similar_texts`) or not.
        The repository's loop (`for_task`) and the transformers classifier (hf_ditbert) both ask here."""
        return cls(num_labels=num_labels, pooling=pooling, pair_features=pair_features and two_texts,
                   similarity_head=similarity_head and two_texts and num_labels == 1,
                   pair_encoding=resolve_pair_encoding(pair_encoding, similar_texts), dropout=dropout)

    @classmethod
    def for_task(cls, task: Task, ft: FinetuneConfig) -> "HeadConfig":
        """The head `ft` asks for on `task`."""
        return cls.recipe(task.num_labels, two_texts=len(task.text_columns) == 2, similar_texts=task.similarity,
                          pooling=ft.pooling, pair_features=ft.pair_features, similarity_head=ft.similarity_head,
                          pair_encoding=ft.pair_encoding, dropout=ft.dropout)

    def same_weights(self, other: "HeadConfig") -> bool:
        """Whether a head built for `other` has weights of the same shape and meaning: a head of an
        MNLI model is then kept, not replaced."""
        return (self.num_labels, self.pair_features, self.similarity_head) == (
            other.num_labels, other.pair_features, other.similarity_head)


# --------------------------------------------------------------------------- two texts


def pool_texts(h: torch.Tensor, input_ids, attention_mask, pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The two texts of ``[START] a [DOC] b [END]`` pooled one by one: the states at [START] and
    [DOC] (cls), or the means over ``[START] a`` and ``b [END]`` (mean)."""
    is_sep = input_ids.eq(DOC_ID)
    if pooling == "cls":
        sep = is_sep.int().argmax(1)  # the first [DOC]; 0 (the [START] state) when a row has none
        return h[:, 0], h[torch.arange(len(h), device=h.device), sep]
    in_b = is_sep.int().cumsum(1) > 0  # [DOC] and what follows it
    real = attention_mask.bool()
    return pool_hidden(h, real & ~in_b, "mean"), pool_hidden(h, real & in_b & ~is_sep, "mean")


def pair_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """``[START] a [DOC] b [END]`` rows (right-padded, (B, T)) -> ``(a, a_len, b, b_len)``: the rows
    ``[START] a [END]`` and ``[START] b [END]``, each (B, T) right-padded, and their lengths (B,). A
    row without [DOC] is all text a, and its b is ``[START] [END]``. Tensor operations only, with no
    shape that depends on the values: the same code runs eagerly, compiled and exported."""
    T = input_ids.shape[1]
    lengths = attention_mask.long().sum(1)  # (B,)
    has_sep = input_ids.eq(DOC_ID)
    sep = torch.where(has_sep.any(1), has_sep.int().argmax(1), lengths - 1)  # where a's [END] goes
    pos = torch.arange(T, device=input_ids.device)[None]  # (1, T)
    a = torch.where(pos < sep[:, None], input_ids, torch.where(pos == sep[:, None], END_ID, PAD_ID))
    b_len = lengths - sep  # [START], b's tokens and [END]
    from_row = (sep[:, None] + pos).clamp(max=T - 1)  # b's j-th token is the joint row's (sep + j)-th
    b = torch.where(pos < b_len[:, None], input_ids.gather(1, from_row), PAD_ID)
    b = torch.where(pos == 0, START_ID, b)
    b = torch.where((pos == 1) & b_len.le(1)[:, None], END_ID, b)  # no [DOC]: an empty b
    return a, sep + 1, b, b_len.clamp(min=2)


def tracing() -> bool:
    """Whether the forward is being captured as a graph (torch.compile, torch.export and the ONNX
    exporters, TorchScript tracing), where no shape may follow the values of a tensor."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)
    return torch.compiler.is_compiling() or exporting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def stacked_texts(input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``[START] a [DOC] b [END]`` -> the rows ``[START] a [END]`` then ``[START] b [END]`` (`pair_rows`)
    stacked into one batch of 2B rows, and their mask: both texts of every pair go through the encoder
    on their own, in one pass. Run eagerly the rows are cut to the longest text's width; captured as a
    graph they keep the input's width (the mask hides the extra padding: the same states)."""
    a, a_len, b, b_len = pair_rows(input_ids, attention_mask)
    ids, lengths = torch.cat([a, b]), torch.cat([a_len, b_len])
    if not tracing():
        ids = ids[:, : int(lengths.max())]
    mask = torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]
    return ids, mask.long()


# --------------------------------------------------------------------------- the heads


class TaskHead:
    """What the two heads of a sequence classifier share: how they read the encoder.

    A classifier (`DitBertClassifier` here, ``DitBertForSequenceClassification`` in hf_ditbert and in an
    exported folder) runs the encoder on the rows its head asks for (`encoder_rows`: the input, or the
    two texts of every pair as rows of their own) and gives the head their final states and, where it
    reads them (`reads_embeddings`), the embedding layer's: ``head(states, ids, mask, embedded)`` is then
    the scores (B, num_labels), `features` what the head reads and `scores` what it makes of them."""

    config: HeadConfig
    reads_embeddings = False

    def set_config(self, config: HeadConfig) -> None:
        """Read the same weights with other settings (pooling, pair encoding, dropout)."""
        self.config = config

    def encoder_rows(self, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask) of the rows the encoder reads for this head."""
        if self.config.encodes_apart:
            return stacked_texts(input_ids, attention_mask)
        return input_ids, attention_mask

    def text_vectors(self, states, ids, mask, pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, v), (B, D) each: the two texts of each pair pooled apart from the `states` of the encoder rows."""
        if self.config.encodes_apart:
            half = states.shape[0] // 2
            return pool_hidden(states[:half], mask[:half], pooling), pool_hidden(states[half:], mask[half:], pooling)
        return pool_texts(states, ids, mask, pooling)

    def forward(self, states, ids, mask, embedded=None):
        return self.scores(self.features(states, ids, mask, embedded))


class LinearHead(TaskHead, nn.Linear):
    """Pooled vector ([START] position or masked mean) -> dropout -> linear layer.

    With pair features (two-text tasks) the layer reads ``[u, v, |u - v|, u * v]`` of the two texts
    pooled apart and scaled (InferSent's features): how alike the texts are, the cosine of u and v,
    is then a sum over the features, where a head on one pooled vector needs the encoder's attention
    to learn the comparison from the task's few examples (docs/pretraining-value.md, "Two texts, two
    vectors")."""

    def __init__(self, d_model: int, config: HeadConfig):
        super().__init__((4 if config.pair_features else 1) * d_model, config.num_labels)
        self.d_model = d_model
        self.dropout = nn.Dropout(config.dropout)
        self.set_config(config)

    def set_config(self, config: HeadConfig) -> None:
        self.config = config
        self.dropout.p = config.dropout

    def features(self, states, ids, mask, embedded=None) -> torch.Tensor:
        """The pooled vector (B, D), or the pair features (B, 4 D): u and v scaled to length sqrt(d_model),
        so that the sum of u * v is d_model times their cosine, whatever the states' norms."""
        if not self.config.pair_features:
            return pool_hidden(states, mask, self.config.pooling)
        u, v = (F.normalize(x, dim=-1) * math.sqrt(self.d_model)
                for x in self.text_vectors(states, ids, mask, self.config.pooling))
        return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)

    def scores(self, features) -> torch.Tensor:
        return F.linear(self.dropout(features), self.weight, self.bias)  # (B, num_labels)


class SimilarityHead(TaskHead, nn.Module):
    """``scale * cosine + bias``: a pair's similarity score (STS-B's 0-5) from its texts' cosine.

    Sentence-BERT's regression objective. The task asks how alike two texts are, and the cosine is that
    question's answer up to a scale. Two numbers that `fit_similarity_head` sets by least squares
    before fine-tuning: left at a default, the score's offset from the labels' mean is a gradient
    common to every pair, and fine-tuning answers it by pushing all texts apart or together, which
    wrecks the similarities it should refine.

    The cosine is the mean of two: between the texts' pooled final states, and between their
    embedding layer's states (always by the mean; there the [START] and [DOC] states are the same for
    every pair). The embedding layer keeps which tokens the texts share; the final states add what the
    encoder made of them in context. A small MLM-pretrained encoder blurs token identity in its final
    states where a random one keeps it, so the final states alone would hand the random-init control
    the lexical overlap that scores STS-B (docs/pretraining-value.md, "A similarity head")."""

    reads_embeddings = True

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def reset_parameters(self) -> None:
        """Scale 1, bias 0: a fresh head outputs the cosine itself (no random draws)."""
        nn.init.ones_(self.scale)
        nn.init.zeros_(self.bias)

    def features(self, states, ids, mask, embedded) -> torch.Tensor:
        """How alike the two texts of each pair are, (B,)."""
        final = F.cosine_similarity(*self.text_vectors(states, ids, mask, self.config.pooling), dim=-1)
        first = F.cosine_similarity(*self.text_vectors(embedded, ids, mask, "mean"), dim=-1)
        return (final + first).float() / 2

    def scores(self, cosine) -> torch.Tensor:
        return (self.scale * cosine + self.bias).unsqueeze(-1)  # (B, 1), as the linear head's output


def task_head(d_model: int, config: HeadConfig) -> LinearHead | SimilarityHead:
    """The head `config` describes, for an encoder of width `d_model` (weights as the layers make them:
    the classifier that holds it initialises them)."""
    return SimilarityHead(config) if config.similarity_head else LinearHead(d_model, config)


# --------------------------------------------------------------------------- the classifier


class DitBertClassifier(nn.Module):
    """The DitBERT encoder with a task head (`LinearHead`, or `SimilarityHead` for regression on two
    texts with the similarity head): what the repository's fine-tuning loop trains. The transformers
    classifier (hf_ditbert.DitBertForSequenceClassification), which an export ships, holds the same
    head on the same encoder, and `hf_export` writes this model as that one."""

    def __init__(self, encoder: model_defs.DitBertEncoder, head_config: HeadConfig):
        super().__init__()
        self.cfg, self.encoder = encoder.cfg, encoder
        self.head = None
        self.new_head(head_config)

    @property
    def head_config(self) -> HeadConfig:
        return self.head.config

    @head_config.setter
    def head_config(self, config: HeadConfig) -> None:
        """The same head weights, read with `config`'s settings (`HeadConfig.same_weights`)."""
        if not config.same_weights(self.head.config):
            raise ValueError(f"a head built for {self.head.config} cannot be read as {config}: make a new one (new_head)")
        self.head.set_config(config)

    def new_head(self, head_config: HeadConfig) -> None:
        """Take `head_config` with a freshly initialised head (the similarity head: scale 1, bias 0)."""
        self.head = task_head(self.cfg.d_model, head_config).to(self.encoder.tok_emb.weight.device)
        if isinstance(self.head, LinearHead):
            model_defs.init_weights(self.head)

    def features(self, input_ids, attention_mask=None) -> torch.Tensor:
        """What the head reads: the pooled vector, the pair features, or the texts' cosine."""
        if attention_mask is None:
            attention_mask = input_ids.ne(PAD_ID)
        ids, mask = self.head.encoder_rows(input_ids, attention_mask)
        embedded = self.encoder.embed(ids) if self.head.reads_embeddings else None
        return self.head.features(self.encoder(ids, mask), ids, mask, embedded)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.head.scores(self.features(input_ids, attention_mask))  # (B, num_labels)


def similarity_head_of(model: nn.Module) -> SimilarityHead | None:
    """The similarity head of a classifier (this repository's or the transformers one), or None."""
    return next((m for m in model.modules() if isinstance(m, SimilarityHead)), None)


@torch.no_grad()
def fit_similarity_head(head: SimilarityHead, cosine, labels) -> tuple[float, float]:
    """Set the head's scale and bias to the least-squares line from the pairs' cosines to their
    labels (what fine-tuning then starts from); returns (scale, bias)."""
    cosine = torch.as_tensor(cosine, dtype=torch.float64).flatten()
    labels = torch.as_tensor(labels, dtype=torch.float64)
    spread = (cosine - cosine.mean()).square().sum()
    scale = ((cosine - cosine.mean()) * (labels - labels.mean())).sum() / spread if spread > 0 else torch.tensor(1.0)
    bias = labels.mean() - scale * cosine.mean()
    head.scale.fill_(float(scale))
    head.bias.fill_(float(bias))
    return float(scale), float(bias)


# --------------------------------------------------------------------------- saving and loading


def save_classifier(model: DitBertClassifier, out_dir: str | Path, tokenizer: str | Path, extra: dict | None = None):
    """Save a fine-tuned DitBERT (safetensors, no pickle) with its config, head settings and tokenizer,
    whose fingerprint the config records: loading it later with another tokenizer is then refused."""
    from safetensors.torch import save

    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fileio.atomic_write_bytes(out_dir / "model.safetensors", save(state))
    config = {"model": dataclasses.asdict(model.cfg), "head": dataclasses.asdict(model.head_config),
              "tokenizer_fingerprint": tokenization.tokenizer_fingerprint(tokenizer), **(extra or {})}
    fileio.atomic_write_bytes(out_dir / "config.json", json.dumps(config, indent=2).encode())
    if Path(tokenizer).resolve() != (out_dir / "tokenizer.json").resolve():
        shutil.copyfile(tokenizer, out_dir / "tokenizer.json")


def classifier_config(model_dir: str | Path) -> dict:
    """The config.json of a model written by `save_classifier`, or an error naming the folder."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file() or not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"{model_dir} is not a fine-tuned DitBERT model (needs config.json and model.safetensors)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from None
    if "head" not in config:
        raise ValueError(f"{model_dir} holds no head settings in config.json: a pretrained DitBERT, or a classifier "
                         "saved before they were stored (fine-tune it again)")
    return config


def load_classifier(model_dir: str | Path) -> DitBertClassifier:
    """Load a model written by `save_classifier`, with the head settings it was saved with."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    config = classifier_config(model_dir)
    model = DitBertClassifier(model_defs.DitBertEncoder(ModelConfig(**config["model"])), HeadConfig(**config["head"]))
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
    return model
