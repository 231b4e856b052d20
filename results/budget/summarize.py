"""The tables of results/budget/run.sh: schedule.csv (pretraining by the clock and by steps) and
domain.csv (the make-demo model continued on three corpora, fine-tuned on the demo task).

    python results/budget/summarize.py [--runs runs] [--out results/budget]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def final_lr_share(log: pd.DataFrame, peak: float) -> float:
    """The learning rate of the run's last step, as a share of its peak."""
    return float(log["lr"].iloc[-2] if len(log) > 1 else log["lr"].iloc[-1]) / peak


def schedule_rows(runs: Path) -> list[dict]:
    rows = []
    for folder in sorted((runs / "budget").iterdir()):
        summary_path = folder / "summary.json"
        if not summary_path.is_file():
            continue
        summary = json.loads(summary_path.read_text())
        settings = json.loads((folder / "final" / "config.json").read_text())["params"]["train"]
        log = pd.read_csv(folder / "log.csv")
        rows.append({
            "run": folder.name,
            "counted_by": "clock" if settings["budget_minutes"] else "steps",
            "schedule": settings["schedule"],
            "train_minutes": summary["train_minutes"],
            "steps": summary["step"],
            "tokens_seen": summary["tokens_seen"],
            "last_lr_share": round(final_lr_share(log, settings["lr"]), 4),
            "val_ppl": round(summary["val_ppl"], 2),
        })
    return rows


def demo_scores(outputs: Path, label: str) -> pd.Series:
    """Final-epoch demo accuracy (x100) of each seed's run of `label`."""
    scores = {}
    for run in sorted(outputs.glob(f"{label}-seed*")):
        results = run / "results_demo.csv"
        if results.is_file():
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
