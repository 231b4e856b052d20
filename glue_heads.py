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


def task_pair_encoding(kind: str, task: Task) -> str:
    """How a classifier for `task` encodes its pairs under finetune.pair_encoding=`kind`. ``by_task``
    encodes the texts of a similarity task (MRPC, QQP, STS-B: how alike are they?) separately, as
    Sentence-BERT does, and those of an inference task (MNLI, QNLI, RTE, WNLI: does b follow from
    a?) jointly, so that the words of each text can attend to the words of the other."""
    check_pair_encoding(kind)
    if kind != "by_task":
        return kind
    return "separate" if task.similarity else "joint"


@dataclass(frozen=True)
class HeadConfig:
    """What a classifier's head reads and outputs.

    * `num_labels` -- outputs; 1 = regression.
    * `pooling` -- ``cls`` (the [START] state) or ``mean`` (over the real tokens).
    * `pair_features` -- two-text tasks: each text pooled on its own and scaled to length
      sqrt(d_model), into u and v, and the head reads ``[u, v, |u - v|, u * v]``.
    * `similarity_head` -- regression on two texts: ``scale * cosine + bias`` (`SimilarityHead`).
    * `pair_encoding` -- ``joint`` (one input ``[START] a [DOC] b [END]``) or ``separate``
      (``[START] a [END]`` and ``[START] b [END]`` encoded on their own); `task_pair_encoding`
      resolves finetune.pair_encoding=by_task to one of them.
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
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        check_pair_encoding(self.pair_encoding, ENCODINGS)
        if self.similarity_head and self.num_labels != 1:
            raise ValueError(f"the similarity head scores one number (regression), not {self.num_labels} labels")

    @property
    def regression(self) -> bool:
        return self.num_labels == 1

    @classmethod
    def for_task(cls, task: Task, ft: FinetuneConfig) -> "HeadConfig":
        """The head `ft` asks for on `task`: pair features only where the task has two texts, the
        similarity head only where it also is a regression."""
        pair = len(task.text_columns) == 2
        return cls(num_labels=task.num_labels, pooling=ft.pooling, pair_features=ft.pair_features and pair,
                   similarity_head=ft.similarity_head and pair and task.is_regression,
                   pair_encoding=task_pair_encoding(ft.pair_encoding, task), dropout=ft.dropout)

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


def split_pair(input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """``[START] a [DOC] b [END]`` rows (right-padded) -> ``([START] a [END], mask), ([START] b [END], mask)``,
    each as short as its longest row. A row without [DOC] is all text a, and its b is ``[START] [END]``."""
    T = input_ids.shape[1]
    lengths = attention_mask.long().sum(1)  # (B,)
    has_sep = input_ids.eq(DOC_ID)
    sep = torch.where(has_sep.any(1), has_sep.int().argmax(1), lengths - 1)  # where a's [END] goes
    pos = torch.arange(T, device=input_ids.device)[None]  # (1, T)
    a = torch.where(pos < sep[:, None], input_ids, torch.where(pos == sep[:, None], END_ID, PAD_ID))
    b_len = lengths - sep  # [START], b's tokens and [END]
    from_row = (sep[:, None] + pos).clamp(max=T - 1)  # b's j-th token is the joint row's (sep + j)-th
    b = torch.where(pos < b_len[:, None], input_ids.gather(1, from_row), PAD_ID)
    b[:, 0] = START_ID
    b[b_len.le(1), 1] = END_ID  # no [DOC]: an empty b
    b_len = b_len.clamp(min=2)
    a_len = sep + 1
    return ((a[:, : int(a_len.max())], pos[:, : int(a_len.max())] < a_len[:, None]),
            (b[:, : int(b_len.max())], pos[:, : int(b_len.max())] < b_len[:, None]))


# --------------------------------------------------------------------------- the classifier


class DitBertClassifier(nn.Module):
    """The DitBERT encoder with a task head: pool ([START] position or masked mean) -> dropout -> linear.

    With pair features (two-text tasks) the head reads ``[u, v, |u - v|, u * v]`` of the two texts
    pooled apart and scaled (InferSent's features): how alike the texts are, the cosine of u and v,
    is then a sum over the features, where a head on one pooled vector needs the encoder's attention
    to learn the comparison from the task's few examples (docs/pretraining-value.md, "Two texts, two
    vectors").

    With the similarity head (regression on two texts: STS-B) the score is ``scale * cosine + bias``
    (`SimilarityHead`, `text_cosine`): the task asks how alike two texts are, and the cosine is that
    question's answer up to a scale, which `fit_similarity_head` fits before fine-tuning.
    """

    def __init__(self, encoder: model_defs.DitBertEncoder, head_config: HeadConfig):
        super().__init__()
        self.cfg, self.encoder = encoder.cfg, encoder
        self.head = None
        self.new_head(head_config)

    def new_head(self, head_config: HeadConfig) -> None:
        """Take `head_config` with a freshly initialised head."""
        self.head_config = head_config
        device = self.encoder.tok_emb.weight.device
        if head_config.similarity_head:
            self.head = SimilarityHead().to(device)  # no random draws: scale 1, bias 0 until fitted
            return
        width = (4 if head_config.pair_features else 1) * self.cfg.d_model
        self.head = nn.Linear(width, head_config.num_labels).to(device)
        model_defs.init_weights(self.head)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        if attention_mask is None:
            attention_mask = input_ids.ne(PAD_ID)
        config = self.head_config
        if config.similarity_head:
            return self.head(self.text_cosine(input_ids, attention_mask))
        if config.pair_features:
            u, v = self.scaled_texts(input_ids, attention_mask)
            features = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)  # (B, 4D)
        else:
            features = pool_hidden(self.encoder(input_ids, attention_mask), attention_mask, config.pooling)
        return self.head(F.dropout(features, config.dropout, self.training))  # (B, num_labels)

    def pair_texts(self, input_ids, attention_mask, layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The two texts of each pair ``[START] a [DOC] b [END]``, encoded as the pair encoding says and
        pooled at `layer`: 0 the final states, pooled as the head pools; 1 the embedding layer, always
        the mean (there, the [START] and [DOC] states are the same for every pair). (u, v), (B, D) each."""
        pooling = self.head_config.pooling if layer == 0 else "mean"
        states = self.encoder if layer == 0 else (lambda ids, mask: self.encoder.embed(ids))
        if self.head_config.pair_encoding == "joint":
            return pool_texts(states(input_ids, attention_mask), input_ids, attention_mask, pooling)
        return tuple(pool_hidden(states(ids, mask), mask, pooling) for ids, mask in split_pair(input_ids, attention_mask))

    def scaled_texts(self, input_ids, attention_mask):
        """The two texts of each pair pooled from the final states and scaled to length sqrt(d_model):
        the sum of u * v is then d_model times their cosine, whatever the states' norms."""
        return (F.normalize(x, dim=-1) * math.sqrt(self.cfg.d_model) for x in self.pair_texts(input_ids, attention_mask))

    def text_cosine(self, input_ids, attention_mask) -> torch.Tensor:
        """How alike the two texts of each pair are, (B,): the mean of two cosines between the texts'
        pooled vectors (`pair_texts`), one of the final states and one of the embedding layer.

        The embedding layer keeps which tokens the texts share; the final states add what the
        encoder made of them in context. A small MLM-pretrained encoder blurs token identity in its
        final states where a random one keeps it, so the final states alone would hand the
        random-init control the lexical overlap that scores STS-B (docs/pretraining-value.md,
        "A similarity head")."""
        cosines = [F.cosine_similarity(*self.pair_texts(input_ids, attention_mask, layer), dim=-1) for layer in (0, 1)]
        return (cosines[0] + cosines[1]).float() / 2


class SimilarityHead(nn.Module):
    """``scale * cosine + bias``: a pair's similarity score (STS-B's 0-5) from its texts' cosine.

    Sentence-BERT's regression objective. Two numbers that `fit_similarity_head` sets by least
    squares before fine-tuning: left at a default, the score's offset from the labels' mean is a
    gradient common to every pair, and fine-tuning answers it by pushing all texts apart or
    together, which wrecks the similarities it should refine."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, cosine):
        return (self.scale * cosine + self.bias).unsqueeze(-1)  # (B, 1), as the linear head's output


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
