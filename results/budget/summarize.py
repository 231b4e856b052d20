"""The tables of results/budget/run.sh: schedule.csv (pretraining by the clock and by steps, each
model fine-tuned on the demo task) and domain.csv (the make-demo model continued on three corpora, fine-tuned on the demo task).

    python results/budget/summarize.py [--runs runs] [--out results/budget]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import glue_runs  # noqa: E402  (the repository's module: run folders are read through it)


def end_lr_share(log: pd.DataFrame, peak: float) -> float:
    """Where the schedule stood when the run ended (the last row's rate), as a share of the peak: 0
    for a run that ended fully decayed."""
    return float(log["lr"].iloc[-1]) / peak


def val_ppl_at(log: pd.DataFrame, step: int) -> float:
    """The validation perplexity the log holds for `step` (NaN where it has none)."""
    row = log[(log["step"] == step) & log["val_perplexity"].notna()]
    return round(float(row["val_perplexity"].iloc[0]), 2) if len(row) else float("nan")


def schedule_rows(runs: Path) -> list[dict]:
    """One row per run of runs/budget/, with the validation perplexity at its end and at the last
    step every run validated at (equal tokens seen)."""
    rows, logs = [], {}
    for folder in sorted((runs / "budget").iterdir()):
        summary_path = folder / "summary.json"
        if not summary_path.is_file():
            continue
        summary = json.loads(summary_path.read_text())
        settings = json.loads((folder / "final" / "config.json").read_text())["params"]["train"]
        log = logs[folder.name] = pd.read_csv(folder / "log.csv")
        rows.append({
            "run": folder.name,
            "counted_by": "clock" if settings["budget_minutes"] else "steps",
            "schedule": settings["schedule"],
            "train_minutes": summary["train_minutes"],
            "steps": summary["step"],
            "tokens_seen": summary["tokens_seen"],
            "end_lr_share": round(end_lr_share(log, settings["lr"]), 4),
            "val_ppl": round(summary["val_ppl"], 2),
        })
    common = min((log.loc[log["val_perplexity"].notna(), "step"].iloc[-2] for log in logs.values()), default=0)
    for row in rows:
        row["common_step"], row["val_ppl_at_common_step"] = common, val_ppl_at(logs[row["run"]], common)
        scores = demo_scores(runs / "budget" / "GLUE-Outputs", f"ditbert-tiny-{row['run']}")
        row["demo_seeds"], row["demo_mean"], row["demo_std"] = len(scores), round(scores.mean(), 2), round(scores.std(), 2)
    return rows


def demo_scores(outputs: Path, label: str) -> pd.Series:
    """Final-epoch demo accuracy (x100) of each seed's run of `label`."""
    scores = {}
    for run in glue_runs.label_runs(outputs, label).values():
        results = glue_runs.results_path(run, "demo")
        if glue_runs.is_finished(run, "demo"):
            scores[run.name] = 100 * pd.read_csv(results)["validation_accuracy"].iloc[-1]
    return pd.Series(scores, dtype=float)


def domain_rows(runs: Path, demo_outputs: Path) -> list[dict]:
    corpora = {"none": "(the make-demo model as it is)", "general": "the embedded mix (Wikipedia + IMDB)",
               "imdb": "IMDB reviews alone", "task": "the demo task's 9568 training sentences, unlabelled"}
    rows = []
    for name, corpus in corpora.items():
        if name == "none":
            scores, minutes, tokens = demo_scores(demo_outputs, "ditbert-tiny"), 0.0, 0
        else:
            folder = runs / "adapt" / f"{name}-10min"
            if not (folder / "summary.json").is_file():
                continue
            summary = json.loads((folder / "summary.json").read_text())
            scores = demo_scores(runs / "adapt" / "GLUE-Outputs", f"ditbert-tiny-{name}-10min")
            minutes, tokens = summary["train_minutes"], summary["tokens_seen"]
        if scores.empty:
            continue
        rows.append({"continued_on": corpus, "train_minutes": minutes, "tokens_seen": tokens, "seeds": len(scores),
                     "demo_mean": round(scores.mean(), 2), "demo_std": round(scores.std(), 2)})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--demo-outputs", default="GLUE-Outputs", help="where make demo's fine-tuning runs are")
    ap.add_argument("--out", default="results/budget")
    args = ap.parse_args(argv)
    out = Path(args.out)
    for name, rows in (("schedule", schedule_rows(Path(args.runs))),
                       ("domain", domain_rows(Path(args.runs), Path(args.demo_outputs)))):
        table = pd.DataFrame(rows)
        table.to_csv(out / f"{name}.csv", index=False)
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
