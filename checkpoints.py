"""A pretraining run's files: its checkpoint, its output folder, resuming it, and the trained
model a new run may start from.

A checkpoint (``<out_dir>/checkpoint.pt``) holds everything to continue a run exactly: the weights,
the optimizer, the schedule, the data position, the RNG, the settings, the fingerprints of the
tokenizer and the corpus, and the steps, tokens and training time so far. It is written atomically
and read without unpickling code. A folder that holds a run is continued (`resume`) or replaced
(`overwrite`), never started over by accident; a resumed run may change only RESUMABLE_SETTINGS.

`read_trained_model` reads the three forms a trained DitBERT takes (a ``final/`` folder, a
checkpoint, a folder exported for transformers) for ``train_model.py --init-from`` and for the export.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import load_file

from corpus import corpus_files, source_exists
from model_defs import DitBertForMLM, load_model
from params import ModelConfig, Params, params_from_dict
from pretrain_data import corpus_fingerprint
from tokenization import check_tokenizer

LOG_COLUMNS = ["step", "loss", "perplexity", "lr", "tokens_seen", "elapsed_s", "train_s", "val_perplexity"]

RUN_FILES = ("checkpoint.pt", "log.csv", "summary.json", "final")  # what makes a folder hold a run
# The settings a resumed run may take other values of than its checkpoint's: how far it goes
# (train.steps, not below the checkpoint's step, or train.budget_minutes; the decay then ends at the
# new end), how often it records, how and where its steps run (the global batch, the masks and the
# order of the data do not change with the micro-batch or the device), and where its files are
# (train.out_dir; the tokenizer and the corpus must match the fingerprints the checkpoint holds).
# Any other change is refused.
RESUMABLE_SETTINGS = (
    "train.steps", "train.budget_minutes", "train.checkpoint_every", "train.eval_every", "train.log_every",
    "train.max_nonfinite_steps", "train.threads", "train.compile", "train.device", "train.dtype", "train.micro_batch",
    "model.attention", "model.mlm_masked_only", "train.out_dir", "train.tokenizer", "data.corpus", "data.cache_dir",
    "data.workers", "data.commit_seconds", "train.tensorboard",
)


def check_output_dir(out_dir: Path, model: torch.nn.Module) -> None:
    """Fail before training, not after hours of it, when checkpoints cannot be written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise OSError(f"output folder {out_dir} is not writable: {err.strerror}") from None
    need = sum(p.numel() for p in model.parameters()) * 4 * 4  # weights + 2 Adam moments + a temporary copy
    free = shutil.disk_usage(out_dir).free
    if free < need:
        raise OSError(f"output folder {out_dir} has {free / 1e6:.0f} MB free; a checkpoint needs about {need / 1e6:.0f} MB")


def checkpoint_path(params: Params) -> Path:
    return Path(params.train.out_dir) / "checkpoint.pt"



# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file in the same folder, fsync, rename: atomic. When the write
    fails (a full disk, say) the partial temporary file is removed and the previous checkpoint stays."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OSError(err.errno, f"could not write checkpoint {path}: {err.strerror or err}; "
                                     f"the previous checkpoint is unchanged") from None
        raise


def read_checkpoint(path: Path, mmap: bool = False) -> dict:
    """A training checkpoint's contents, without unpickling code (`mmap`: tensors stay on disk until used)."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        import pickle

        if isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err):  # names a class or function
            detail = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), "")
            raise ValueError(
                f"checkpoint {path} was refused: it holds Python objects other than tensors and plain data, and "
                f"loading them could run code from the file ({detail[:200]}). A DitBERT checkpoint holds none."
            ) from None
        raise ValueError(f"checkpoint {path} is corrupt or truncated and cannot be read ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or "model" not in state or "params" not in state:
        raise ValueError(f"checkpoint {path} is not a DitBERT training checkpoint")
    return state


def saved_params(path: Path, state: dict) -> Params:
    """The settings a checkpoint holds (not yet checked: a resumed run may change some first)."""
    try:
        return params_from_dict(state["params"], check=False)
    except TypeError as err:  # a setting this version does not have
        raise ValueError(f"checkpoint {path} holds settings this version of DitBERT does not know ({err}); "
                         f"resume it with the version that wrote it") from None


def load_checkpoint(path: Path, params: Params) -> dict:
    """Read a checkpoint without unpickling code and check it belongs to this model."""
    state = read_checkpoint(path)
    saved = saved_params(path, state).model
    diff = {k: (getattr(saved, k), getattr(params.model, k)) for k in vars(saved)
            if k not in SPEED_SWITCHES and getattr(saved, k) != getattr(params.model, k)}
    if diff:
        raise ValueError(f"checkpoint {path} was made for another model config (saved, now): {diff}")
    return state


# --------------------------------------------------------------------------- a run's folder and resuming


def run_files(out_dir: Path) -> list[str]:
    """The files of a pretraining run that `out_dir` holds."""
    return [name for name in RUN_FILES if (out_dir / name).exists()]


def check_run_folder(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Before any work: a folder that holds a run is continued (`resume`) or replaced (`overwrite`),
    never started over by accident."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in the output folder and --overwrite replaces it: give one of them")
    found = run_files(out_dir)
    if found and not (resume or overwrite):
        raise FileExistsError(f"output folder {out_dir} holds a run ({', '.join(found)}): continue it with --resume, "
                              f"replace it with --overwrite, or choose another folder with --out")


def remove_run(out_dir: Path) -> list[str]:
    """--overwrite: delete the earlier run's files; anything else in the folder stays."""
    found = run_files(out_dir)
    for name in found:
        path = out_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    (out_dir / "checkpoint.pt.tmp").unlink(missing_ok=True)
    return found


def pretraining_settings(params: Params) -> dict:
    """The settings that shape a pretraining run, as ``section.name -> value``."""
    d = params.to_dict()
    flat = {"preset": d["preset"]}
    for section in ("model", "data", "train"):
        flat.update({f"{section}.{name}": value for name, value in d[section].items()})
    return flat


def resume_changes(path: Path, state: dict, params: Params) -> dict:
    """The settings `params` gives other values than the checkpoint holds, {key: (saved, now)}. Changes
    outside RESUMABLE_SETTINGS are refused, all of them named: a resumed run that trained on under other
    settings would be neither the run it continues nor a new one."""
    saved, now = pretraining_settings(saved_params(path, state)), pretraining_settings(params)
    changes = {key: (saved.get(key), value) for key, value in now.items() if saved.get(key) != value}
    refused = [f"{key}: {a!r} in the checkpoint, {b!r} now" for key, (a, b) in changes.items()
               if key not in RESUMABLE_SETTINGS]
    if refused:
        raise ValueError(f"checkpoint {path} was made with other settings ({'; '.join(refused)}); a resumed run keeps "
                         f"its checkpoint's settings (leave these out of --set, the flags and DITBERT_SET, or start "
                         f"a new run with --out or --overwrite); it may change only {', '.join(RESUMABLE_SETTINGS)}")
    if changes and is_main_process():
        print(f"resuming {path} at step {state['step']} with changed settings: "
              + ", ".join(f"{key} {a!r} -> {b!r}" for key, (a, b) in changes.items()))
    return changes


def check_resume_inputs(path: Path, state: dict, params: Params) -> None:
    """Before any tokenising: the tokenizer and the corpus are the ones the checkpoint was made with,
    and a missing file is named with the run's own list of them."""
    tok = params.tokenizer_path
    if not tok.is_file():
        raise FileNotFoundError(f"tokenizer file {tok} does not exist; the run in {path.parent} was trained with it "
                                f"(give its place with --tokenizer)")
    check_tokenizer(state.get("tokenizer_fingerprint"), tok, path)
    recorded = state.get("corpus") or {}
    expected = ", ".join(recorded.get("files") or params.data.corpus)
    for f in params.data.corpus:
        if not source_exists(f):
            raise FileNotFoundError(f"corpus file {f} does not exist: the run in {path.parent} was trained on "
                                    f"{expected}; put it back or give its place with --corpus")
    if recorded:
        files = corpus_files(params.data.corpus, params.data.embedded)
        now = corpus_fingerprint(files, params.data.cache_dir)
        if now != recorded["fingerprint"]:
            raise ValueError(f"the corpus {', '.join(files)} is not the one the run in {path.parent} was trained on "
                             f"({expected}): the contents differ (fingerprint {now}, the "
                             f"checkpoint recorded {recorded['fingerprint']}); give the run's corpus with --corpus")


def reached_end(step: int, train_s: float, params: Params) -> bool:
    """Whether a run at `step`, after `train_s` seconds of training, is at its end: the time budget
    spent when it runs by the clock (train.budget_minutes), else train.steps done."""
    tc = params.train
    return train_s >= tc.budget_minutes * 60 if tc.budget_minutes else step >= tc.steps


@dataclass(frozen=True)
class StopAt:
    """Where a run is asked to stop before its end, with a checkpoint to resume from: after a step
    (--stop-at), after minutes of training (--stop-at-minutes), or neither."""

    step: int | None = None
    minutes: float | None = None

    def reached(self, step: int, train_s: float) -> bool:
        return ((self.step is not None and step >= self.step)
                or (self.minutes is not None and train_s >= self.minutes * 60))

    def __str__(self) -> str:
        return f"step {self.step}" if self.step is not None else f"{self.minutes:g} minutes of training"


def nothing_left(path: Path, state: dict, params: Params, stop: StopAt) -> dict | None:
    """A resumed run already at its end or where `stop` asks it to stop: say so and leave its files (the
    summary, the final model, the log) as they are, returning the summary it wrote when it finished,
    marked `already_done`. None when there is training left to do."""
    step, steps, train_s = state["step"], params.train.steps, state.get("train_s", state["elapsed_s"])
    minutes = params.train.budget_minutes
    if not minutes and step > steps:
        raise ValueError(f"train.steps={steps} is below step {step}, where checkpoint {path} stands: a run cannot "
                         f"go back; give train.steps (--steps) of {step} or more")
    if reached_end(step, train_s, params):
        end, more = ((f"{train_s / 60:.1f} of {minutes:g} minutes of training, step {step}",
                      "train.budget_minutes (--budget-minutes)") if minutes
                     else (f"step {step} of {steps}", "train.steps (--steps)"))
        message = f"the run in {path.parent} is finished: {end}; its files are left as they are. Raise {more} to continue it"
    elif stop.reached(step, train_s):
        message = f"the run in {path.parent} is at step {step} already: nothing to do before a stop at {stop}"
    else:
        return None
    if is_main_process():
        print(message)
    summary_path = path.parent / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return {**summary, "step": step, "already_done": message}


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])



class CsvLog:
    """The training log; on resume, rows past the checkpoint's step are dropped so the
    log reads as one uninterrupted run."""

    def __init__(self, path: Path, resume_from_step: int | None):
        self.path = path
        rows = []
        if resume_from_step is not None and path.is_file():
            with open(path, newline="") as fh:
                rows = [r for r in csv.reader(fh)][1:]
            rows = [r for r in rows if r and int(r[0]) <= resume_from_step]
        buf = io.StringIO()
        csv.writer(buf).writerows([LOG_COLUMNS, *rows])
        path.write_text(buf.getvalue())

    def append(self, row: list) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow(row)


# --------------------------------------------------------------------------- starting from a trained model


def strip_wrapper_prefixes(key: str) -> str:
    """Parameter names as the bare model has them: torch.compile adds ``_orig_mod.``, DDP ``module.``."""
    for prefix in ("_orig_mod.", "module."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def model_from_state(cfg: ModelConfig, state: dict, source: Path) -> DitBertForMLM:
    """A DitBertForMLM of `cfg` holding `state`; a tied output layer may be left out of `state`."""
    model = DitBertForMLM(cfg)
    state = {strip_wrapper_prefixes(k): v for k, v in state.items()}
    if cfg.tie_lm_head and "head.decoder.weight" not in state and "encoder.tok_emb.weight" in state:
        state["head.decoder.weight"] = state["encoder.tok_emb.weight"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line or "Missing" in line),
                      str(err)[:300])
        raise ValueError(f"the weights in {source} do not match its model settings: {detail}") from None
    return model


def check_source_exists(source: str | Path) -> Path:
    """A trained model's path, or a FileNotFoundError that says it does not exist."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"trained model {source} does not exist (train.init_from / --init-from: give a final/ "
                                f"folder, a checkpoint.pt or a folder exported for transformers)")
    return source


def model_config_of(source: Path) -> ModelConfig:
    """The model settings of a trained model (see `read_trained_model`), without reading its weights."""
    source = check_source_exists(source)
    if source.is_file():
        return saved_params(source, read_checkpoint(source, mmap=True)).model
    config = folder_config(source)
    values = config.get("model", config)  # a final/ folder nests them; an export keeps them beside transformers' own
    return ModelConfig(**{f.name: values[f.name] for f in fields(ModelConfig) if f.name in values})


def folder_config(folder: Path) -> dict:
    """A model folder's config.json, its absence or bad JSON named."""
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is neither a saved DitBERT model (a final/ folder or one exported for "
                                f"transformers, with config.json) nor a checkpoint file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def read_trained_model(source: str | Path) -> tuple[DitBertForMLM, dict]:
    """The model and its training record (``steps``, ``tokens_seen``, ``params``, ``tokenizer_fingerprint``:
    those saved) from a `save_model` folder (a run's ``final/``), a ``checkpoint.pt``, or a folder
    `hf_export.py` wrote (whose weights are named under ``ditbert.``). Nothing is unpickled and
    no code from the folder runs."""
    source = check_source_exists(source)
    if source.is_file():
        state = read_checkpoint(source)
        extras = {"steps": state.get("step"), "tokens_seen": state.get("tokens_seen"), "params": state["params"],
                  "tokenizer_fingerprint": state.get("tokenizer_fingerprint") or None}
        model = model_from_state(saved_params(source, state).model, state["model"], source)
        return model, {k: v for k, v in extras.items() if v is not None}
    config = folder_config(source)
    if config.get("model_type") != "ditbert":
        model = load_model(source)
        config.pop("model", None)
        return model, config
    weights = source / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} does not exist: {source} holds no exported weights")
    state = {k.removeprefix("ditbert."): v for k, v in load_file(str(weights)).items()}
    extras = {k: config[k] for k in ("tokenizer_fingerprint", "tokens_seen", "steps") if config.get(k) is not None}
    return model_from_state(model_config_of(source), state, source), extras


def source_tokenizer(source: str | Path) -> Path | None:
    """The tokenizer file a trained model was trained with, as its files say: an exported folder's own
    ``tokenizer.json``, else the ``train.tokenizer`` its run recorded (a checkpoint's settings, or those a
    final/ folder's config.json keeps); None when they name none."""
    source = check_source_exists(source)
    if source.is_dir() and (source / "tokenizer.json").is_file():
        return source / "tokenizer.json"
    if source.is_file():
        recorded = saved_params(source, read_checkpoint(source, mmap=True)).train.tokenizer
    else:
        recorded = folder_config(source).get("params", {}).get("train", {}).get("tokenizer")
    return Path(recorded) if recorded else None


SPEED_SWITCHES = ("attention", "mlm_masked_only")  # change how, not what, the model computes


def start_settings(params: Params, source: str, overrides: dict) -> Params:
    """--init-from: the new run's model settings are `source`'s (the speed switches aside); a
    ``model.*`` value given that differs is refused, named. Unless a tokenizer is given
    (``train.tokenizer``, --tokenizer), the run takes the one `source` was trained with."""
    cfg = model_config_of(Path(source))
    if "train.tokenizer" not in overrides and (own := source_tokenizer(source)) is not None and own.is_file():
        params.train.tokenizer = str(own)
    given = [k.removeprefix("model.") for k in overrides if k.startswith("model.")]
    clashes = [f"model.{k}={getattr(params.model, k)!r} (the model has {getattr(cfg, k)!r})" for k in given
               if k not in SPEED_SWITCHES and hasattr(cfg, k) and getattr(cfg, k) != getattr(params.model, k)]
    if clashes:
        raise ValueError(f"--init-from {source}: a run started from a trained model keeps its settings; these differ: "
                         f"{'; '.join(clashes)}")
    params.model = ModelConfig(**{**asdict(cfg), **{k: getattr(params.model, k) for k in SPEED_SWITCHES}})
    return params


def check_start(source: str, params: Params) -> tuple[DitBertForMLM, dict]:
    """--init-from, before any tokenising: the model and its record, once the tokenizer is found to be
    the one it was trained with."""
    tok, own = params.tokenizer_path, source_tokenizer(source)
    wanted = f" ({own})" if own is not None else ""
    if not tok.is_file():
        raise FileNotFoundError(f"tokenizer file {tok} does not exist; give the tokenizer {source} was trained "
                                f"with{wanted} (--tokenizer)")
    model, extras = read_trained_model(source)
    try:
        check_tokenizer(extras.get("tokenizer_fingerprint"), tok, source)
    except ValueError as err:
        raise ValueError(f"{err}{wanted}") from None
    return model, extras
