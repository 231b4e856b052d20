"""The measured figures of README.md, BENCHMARKS.md and docs/ against the committed files they come from.

Each test reads a table or a sentence of a document and the file it names, and asks that every number
shown is that file's number as the document rounds it. Editing one figure in a document, or committing
new results without the document that reports them, fails here. Pure file reading: no model, no run.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import statistics
import subprocess
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCHMARKS = ROOT / "BENCHMARKS.md"
AGGREGATED = ROOT / "GLUE-aggregated-results.csv"
OUTPUTS = ROOT / "GLUE-Outputs"
BENCH = ROOT / "bench" / "results"
VALUE = ROOT / "results" / "pretraining-value"
BUDGET = ROOT / "results" / "budget"

SMALL_GLUE = ("cola", "sst2", "mrpc", "stsb", "rte")
COLUMN_TASK = {"CoLA": "cola", "SST-2": "sst2", "MRPC": "mrpc", "STS-B": "stsb", "RTE": "rte", "WNLI": "wnli",
               "demo (custom)": "demo"}


# --------------------------------------------------------------------------- reading


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def by(table: list[dict], key: str) -> dict[str, dict]:
    return {row[key]: row for row in table}


def section(doc: str, start: str, end: str | None = None) -> str:
    """The text of `doc` from the line holding `start` up to the next `end` (or the end)."""
    assert start in doc, f"the document no longer holds {start!r}"
    rest = doc[doc.index(start):]
    if end is not None:
        assert end in rest, f"no {end!r} after {start!r}"
        rest = rest[:rest.index(end)]
    return rest


def flat(words: str) -> str:
    """`words` with every run of white space as one space, so that a line break changes nothing."""
    return " ".join(words.split())


def table_cells(doc: str, marker: str) -> list[list[str]]:
    """The first markdown table after `marker`: its header, then its rows, as lists of cells."""
    lines = section(doc, marker).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert len(block) > 2, f"the table after {marker!r} is empty"
    return [block[0], *block[2:]]


def table_after(doc: str, marker: str) -> list[dict]:
    """The first markdown table after `marker`, as dicts keyed by its header cells."""
    header, *body = table_cells(doc, marker)
    assert all(len(cells) == len(header) for cells in body), f"a row of the table after {marker!r} is short"
    return [dict(zip(header, cells)) for cells in body]


def f1(x: float) -> str:
    return f"{x:.1f}"


def f2(x: float) -> str:
    return f"{x:.2f}"


def written(figure: str, decimals: int) -> set[str]:
    """How a figure printed in a results file reads rounded to `decimals`: by Python's formatting, or
    rounded half up from its printed digits (1.395 -> 1.39 or 1.40)."""
    step = Decimal(1).scaleb(-decimals)
    return {f"{float(figure):.{decimals}f}", str(Decimal(figure).quantize(step, rounding=ROUND_HALF_UP))}


def number(cell: str) -> str:
    """The first number of a cell, as written ('**1.77x**' -> '1.77', '1,533 (1.6 %)' -> '1533')."""
    found = re.search(r"-?\d[\d,]*(?:\.\d+)?", cell)
    assert found, f"no number in {cell!r}"
    return found.group(0).replace(",", "")


def last_epoch_score(path: Path) -> float:
    """A task's score after the last epoch, as the aggregation computes it: the mean of its validation
    metrics, in percent (the tasks here have one validation split)."""
    last = rows(path)[-1]
    values = [float(v) for k, v in last.items() if k.startswith("validation_")]
    return 100 * sum(values) / len(values)


# --------------------------------------------------------------------------- README: the RESULT lines


def readme_results() -> dict[str, str]:
    block = section(text(README), "## Results at CPU scale", "## Speed")
    found = dict(re.findall(r"^RESULT (\S+) (\S+)$", block, flags=re.M))
    assert found, "the results section holds no RESULT lines"
    return found


def test_readme_demo_results_are_the_aggregated_table_and_the_run_folders():
    results, table = readme_results(), by(rows(AGGREGATED), "model")
    models = {"demo_acc_ditbert": "ditbert-tiny", "demo_acc_random_init": "ditbert-tiny-random-init",
              "demo_acc_minilm": "minilm-l6"}
    assert set(results) == {"val_ppl", "unigram_ppl", *models}, "a RESULT line without a source named in this test"
    for name, model in models.items():
        mean = float(table[model]["demo_final_mean"])
        assert results[name] == f2(mean), f"{name}: README {results[name]}, {AGGREGATED.name} {mean}"
        seeds = sorted(OUTPUTS.glob(f"{model}-seed*/results_demo.csv"))
        assert len(seeds) == int(table[model]["demo_seeds"]) == 3
        scores = [last_epoch_score(path) for path in seeds]
        assert abs(statistics.mean(scores) - mean) < 0.006, f"{model}: the table is not its run folders' mean"
        assert abs(statistics.stdev(scores) - float(table[model]["demo_final_std"])) < 0.006


def test_readme_spreads_and_sizes_beside_the_result_lines():
    block = flat(section(text(README), "## Results at CPU scale", "The committed GLUE table"))
    table = by(rows(AGGREGATED), "model")
    spreads = re.search(r"spread \(\+-([\d.]+), \+-([\d.]+)\)", block)
    assert spreads.groups() == (f2(float(table["ditbert-tiny"]["demo_final_std"])),
                                f2(float(table["ditbert-tiny-random-init"]["demo_final_std"])))
    sizes = by([r for r in rows(BENCH / "model_sizes.csv") if not r["model"].endswith("ForMaskedLM")], "config")
    assert f"`tiny` ({f1(int(sizes['tiny']['params']) / 1e6)}M parameters" in block
    assert f"MiniLM ({f1(int(sizes['minilm-l6']['params']) / 1e6)}M parameters" in block
    steps, tokens = re.search(r"for (\d+) steps, ([\d.]+)M tokens", block).groups()
    for info in sorted(OUTPUTS.glob("ditbert-tiny-seed*/run_info.json")):
        seen = json.loads(text(info))["pretrain_tokens_seen"]
        assert seen == int(steps) * 32 * 130, f"{info}: {seen} tokens is not {steps} steps of 32 x 130"
        assert f1(seen / 1e6) == tokens
    infos = [json.loads(text(info)) for info in sorted(OUTPUTS.glob("ditbert-tiny*-seed*/run_info.json"))
             if "two-hour" not in info.parent.name]
    examples = {info["tasks"]["demo"]["train_examples"] for info in infos}
    assert f"on {examples.pop()} demo sentences with {len(infos) // 2} seeds" in block and not examples
    glue = flat(section(text(README), "Against its twin", "![demo accuracy"))
    assert f"`make demo`'s {steps}-step model" in glue
    minutes = re.search(r"took ([\d.]+) minutes for the nine runs", block).group(1)
    seconds = sum(json.loads(text(info))["tasks"]["demo"]["seconds"]
                  for model in ("ditbert-tiny", "ditbert-tiny-random-init", "minilm-l6")
                  for info in OUTPUTS.glob(f"{model}-seed*/run_info.json"))
    assert minutes == f1(seconds / 60)


def test_readme_perplexities_say_where_they_come_from():
    """No committed file records the `make demo` model's perplexities: the README says so and names the
    commit that printed them, and the documents that quote the same run agree with it. A committed record
    of them (a perplexity in the model's run_info.json) would have to be the README's figure."""
    results, readme = readme_results(), text(README)
    for info in sorted(OUTPUTS.glob("ditbert-tiny-seed*/run_info.json")):
        record = json.loads(text(info))
        kept = {k: v for k, v in record.items() if "ppl" in k or "perplexity" in k}
        for key, value in kept.items():
            assert f2(value) in (results["val_ppl"], results["unigram_ppl"]), f"{info}: {key} {value}"
    block = flat(section(readme, "## Results at CPU scale", "The committed GLUE table"))
    assert "no committed file holds these two" in block
    commit = re.search(r"entered the README \(commit `([0-9a-f]{7,40})`\)", block).group(1)
    then = subprocess.run(["git", "show", f"{commit}:README.md"], cwd=ROOT, capture_output=True, text=True)
    if then.returncode == 0:  # a shallow clone may not hold the commit: the documents below still agree
        printed = dict(re.findall(r"^RESULT (val_ppl|unigram_ppl) (\S+)$", then.stdout, flags=re.M))
        assert printed == {"val_ppl": results["val_ppl"], "unigram_ppl": results["unigram_ppl"]}, \
            f"the README's perplexities are not the ones commit {commit} put there"
    value_doc = text(ROOT / "docs" / "pretraining-value.md")
    assert f"validation perplexity {results['val_ppl']})" in value_doc
    ppl, unigram = round(float(results["val_ppl"])), round(float(results["unigram_ppl"]))
    assert re.search(rf"^\| vocabulary 4096, `make demo` now[^\n]*\| {ppl} / {unigram} \|", value_doc, flags=re.M)
    log = flat(text(ROOT / "docs" / "results-log.md"))
    assert f"perplexity {ppl} at that rate, against the unigram model's {unigram}" in log


# --------------------------------------------------------------------------- README: the GLUE table


def glue_table() -> list[dict]:
    return table_after(text(README), "| model | recipe | train examples | dtype | seeds | CoLA")


def seed_scores(model: str, task: str) -> list[float]:
    """A model's score on a task after the last epoch, one per committed seed run."""
    return [last_epoch_score(path) for path in sorted(OUTPUTS.glob(f"{model}-seed*/results_{task}.csv"))]


def seed_means(model: str, tasks=SMALL_GLUE) -> list[float]:
    """A model's mean over `tasks` after the last epoch, one per committed seed (the five-task mean's seeds)."""
    return [statistics.mean(scores) for scores in zip(*(seed_scores(model, task) for task in tasks))]


def one_decimal(cell: str, csv_value: str, exact: float) -> bool:
    """A table cell is the CSV's two-decimal figure to one decimal. Where that figure ends in 5 (2.95) the
    cell is the rounding of the unrounded value the CSV was written from (2.947 -> 2.9)."""
    return abs(float(cell) - float(csv_value)) <= 0.055 and cell == f1(exact)


BASELINE = "trivial-majority"


def baseline_mark(mean: float, std: float, baseline: float) -> str:
    """The mark the table gives a score against the trivial baseline's: none where mean - std is above it,
    ≈ where it is not but mean + std reaches it, ↓ where mean + std is below it."""
    if mean - std > baseline:
        return ""
    return "≈" if mean + std >= baseline else "↓"


def test_readme_glue_table_is_the_aggregated_csv():
    table = by(rows(AGGREGATED), "model")
    shown = glue_table()
    assert {row["model"] for row in shown} == set(table), "the README's rows are not the CSV's"
    assert shown[0]["model"] == BASELINE and table[BASELINE]["recipe"] == "baseline"
    base = table[BASELINE]
    for row in shown:
        source = table[row["model"]]
        assert row["recipe"] == source["recipe"]
        assert row["train examples"] == (source["train_examples"] or "–")
        assert row["dtype"] == (source["dtype"] or "–")
        for column, task in COLUMN_TASK.items():
            seeds = int(source[f"{task}_seeds"])
            cell = row[column]
            if row["model"] == BASELINE:
                value = source[f"{task}_final_mean"]
                assert cell == (f1(float(value)) if value else "–"), f"{BASELINE} {column}: {cell!r}"
                assert row["seeds"] == "–"
                continue
            if seeds == 0:
                assert cell == "–", f"{row['model']} {column}: {cell!r} where the CSV has no run"
                continue
            mean, std = source[f"{task}_final_mean"], source[f"{task}_final_std"]
            scores = seed_scores(row["model"], task)
            mark = baseline_mark(statistics.mean(scores), statistics.stdev(scores), float(base[f"{task}_final_mean"]))
            assert cell.endswith(f" {mark}") if mark else cell[-1].isdigit(), f"{row['model']} {column}: {cell!r}"
            shown_mean, shown_std = cell.removesuffix(f" {mark}").split(" ± ")
            assert one_decimal(shown_mean, mean, statistics.mean(scores)) and \
                one_decimal(shown_std, std, statistics.stdev(scores)), \
                f"{row['model']} {column}: README {cell!r}, CSV {mean} ± {std}"
            assert row["seeds"] == str(seeds)
        partial = source["GLUE_partial_final_mean"]
        if not partial:
            assert row["GLUE partial"] == "–", f"{row['model']} GLUE partial"
            continue
        shown_mean, tasks = re.fullmatch(r"(-?[\d.]+) \((\d)/8\)", row["GLUE partial"]).groups()
        assert int(tasks) == int(source["GLUE_tasks"]) == len(SMALL_GLUE)
        if row["model"] == BASELINE:
            assert shown_mean == f1(statistics.mean(float(base[f"{task}_final_mean"]) for task in SMALL_GLUE))
            continue
        exact = statistics.mean(statistics.mean(seed_scores(row["model"], task)) for task in SMALL_GLUE)
        assert one_decimal(shown_mean, partial, exact), f"{row['model']} GLUE partial"


def test_readme_table_is_the_committed_markdown_table():
    """Each README row is the final-epoch table of GLUE-aggregated-results.md, cell for cell, on the columns
    the README keeps."""
    committed = by(table_after(text(ROOT / "GLUE-aggregated-results.md"), "**Final epoch"), "model")
    for row in glue_table():
        for column, cell in row.items():
            assert committed[row["model"]][column] == cell, f"{row['model']} {column}"


def test_readme_trivial_baseline_prose_is_the_table():
    prose = flat(section(text(README), "At 2000 training examples the trivial row", "Against its twin"))
    table = by(rows(AGGREGATED), "model")
    base = {task: float(table[BASELINE][f"{task}_final_mean"]) for task in COLUMN_TASK.values()}
    models = [m for m in table if m != BASELINE and table[m]["train_examples"] == "2000"]  # the rows it speaks of

    def finals(task):
        return {m: (float(table[m][f"{task}_final_mean"]), float(table[m][f"{task}_final_std"]))
                for m in models if int(table[m][f"{task}_seeds"])}

    for task in ("sst2", "stsb", "demo"):  # every model well clear of it
        assert all(mean - std > base[task] + 10 for mean, std in finals(task).values()), task
    cola = finals("cola")
    above = [m for m, (mean, std) in cola.items() if mean - std > base["cola"]]
    assert above == ["ditbert-tiny-two-hour-step13000"] and all(mean <= base["cola"] for m, (mean, _) in cola.items()
                                                                if m not in above)
    assert f"every model but the two-hour one ({f1(cola[above[0]][0])} ± {f1(cola[above[0]][1])})" in prose
    assert f"answer's MCC of {round(base['cola'])}" in prose
    mrpc = max(mean for mean, _ in finals("mrpc").values()) - base["mrpc"]
    assert f"no model is more than {f1(mrpc)} points above the all-\"equivalent\" answer's {f1(base['mrpc'])}" in prose
    rte = finals("rte")
    assert f"the all-\"entailment\" answer's {f1(base['rte'])}" in prose
    pretrained = [m for m in rte if "random-init" not in m]
    assert all(mean >= base["rte"] for m, (mean, _) in rte.items() if m in pretrained)
    assert all(mean < base["rte"] for m, (mean, _) in rte.items() if m not in pretrained)
    assert "(" + ", ".join(f"{f1(rte[m][0])} ± {f1(rte[m][1])}" for m in pretrained) + ")" in prose
    wnli = finals("wnli")
    assert all(mean + std < base["wnli"] - 30 for mean, std in wnli.values())
    assert f"far below the majority's {f1(base['wnli'])}" in prose


def test_aggregated_csv_is_the_mean_of_the_committed_run_folders():
    """The link below the README's table: each final_mean/final_std is the last epoch of its seeds' runs."""
    for source in rows(AGGREGATED):
        for task in (*SMALL_GLUE, "wnli", "demo"):
            seeds = sorted(OUTPUTS.glob(f"{source['model']}-seed*/results_{task}.csv"))
            assert len(seeds) == int(source[f"{task}_seeds"]), f"{source['model']} {task}"
            if len(seeds) < 2:
                continue
            scores = seed_scores(source["model"], task)
            assert abs(statistics.mean(scores) - float(source[f"{task}_final_mean"])) < 0.006
            assert abs(statistics.stdev(scores) - float(source[f"{task}_final_std"])) < 0.006


SIGNIFICANCE = ROOT / "GLUE-significance.csv"
TWINS = {"make demo": ("ditbert-tiny", "ditbert-tiny-random-init"),
         "two-hour": ("ditbert-tiny-two-hour-step13000", "ditbert-tiny-two-hour-random-init"),
         "full-size": ("ditbert-tiny-two-hour-full", "ditbert-tiny-two-hour-full-random-init")}


def compared(pair: str, column: str) -> dict:
    """The row of GLUE-significance.csv for a pair of `TWINS` and a column (a task, or GLUE partial)."""
    a, b = TWINS[pair]
    found = [r for r in rows(SIGNIFICANCE) if (r["a"], r["b"], r["column"]) == (a, b, column)]
    assert len(found) == 1, f"{pair} {column}: {len(found)} rows in {SIGNIFICANCE.name}"
    return found[0]


def p_text(value: str) -> str:
    """A p-value as the documents write it (two significant digits; below 0.001 as < 0.001)."""
    p = float(value)
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def interval(row: dict, boot: bool = False) -> str:
    low, high = (row["boot_low"], row["boot_high"]) if boot else (row["ci_low"], row["ci_high"])
    return f"{float(low):+.2f} to {float(high):+.2f}"


def significant(row: dict) -> bool:
    """Whether Welch's 95 % interval excludes 0."""
    return float(row["ci_low"]) > 0 or float(row["ci_high"]) < 0


def test_readme_leads_quoted_beside_the_table():
    table = by(rows(AGGREGATED), "model")
    prose = flat(section(text(README), "Against its twin", "![demo accuracy"))
    lead = {task: float(table["ditbert-tiny"][f"{task}_final_mean"]) -
            float(table["ditbert-tiny-random-init"][f"{task}_final_mean"]) for task in ("sst2", "rte", "stsb", "mrpc")}
    sst2, rte = compared("make demo", "sst2"), compared("make demo", "rte")
    assert (f"SST-2 +{f1(lead['sst2'])} ({interval(sst2)}, p {p_text(sst2['p'])}; bootstrap p {p_text(sst2['boot_p'])})"
            in prose) and significant(sst2)
    assert f"The RTE +{f1(lead['rte'])} ({interval(rte)}, p {p_text(rte['p'])})" in prose
    assert (f"does not survive resampling RTE's 277 dev examples (bootstrap {interval(rte, boot=True)}, "
            f"p {p_text(rte['boot_p'])})") in prose and float(rte["boot_low"]) < 0 < float(rte["boot_high"])
    stsb, mrpc = compared("make demo", "stsb"), compared("make demo", "mrpc")
    assert f"STS-B ({f1(lead['stsb'])}, p {p_text(stsb['p'])})" in prose and significant(stsb)
    assert f"not significantly, MRPC ({f1(lead['mrpc'])}, p {p_text(mrpc['p'])})" in prose and not significant(mrpc)
    mean_lead = float(table["ditbert-tiny"]["GLUE_partial_final_mean"]) - \
        float(table["ditbert-tiny-random-init"]["GLUE_partial_final_mean"])
    five = compared("make demo", "GLUE partial")
    assert five["tasks"] == ", ".join(SMALL_GLUE)
    assert (f"leads it by {f1(mean_lead)} on the five-task mean, which is not significant ({interval(five)}, "
            f"p {p_text(five['p'])})") in prose and not significant(five)


def test_readme_demo_lead_says_it_is_not_significant():
    block = flat(section(text(README), "## Results at CPU scale", "The committed GLUE table"))
    demo = compared("make demo", "demo")
    assert (f"DitBERT leads its twin by {f2(float(demo['difference']))}, more than either's seeds' spread" in block
            and f"not significantly: Welch's 95 % interval over the seeds is {interval(demo)}, "
                f"p {p_text(demo['p'])} (`GLUE-significance.csv`)" in block)
    assert not significant(demo) and p_text(demo["p"]) == "0.11"
    results = readme_results()
    assert f2(float(results["demo_acc_ditbert"]) - float(results["demo_acc_random_init"])) == f2(float(demo["difference"]))


def test_significance_file_is_welch_on_the_committed_run_folders():
    """GLUE-significance.csv's Welch figures, recomputed from the run folders' last epochs with scipy."""
    from scipy import stats

    for pair, (a, b) in TWINS.items():
        for row in (r for r in rows(SIGNIFICANCE) if (r["a"], r["b"]) == (a, b)):
            tasks = row["tasks"].split(", ")
            ours, theirs = seed_means(a, tasks), seed_means(b, tasks)
            test = stats.ttest_ind(ours, theirs, equal_var=False)
            assert float(row["p"]) == pytest.approx(test.pvalue, abs=6e-5), (pair, row["column"])
            low, high = test.confidence_interval()
            assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((low, high), abs=0.006)
            assert float(row["difference"]) == pytest.approx(statistics.mean(ours) - statistics.mean(theirs), abs=0.006)


# --------------------------------------------------------------------------- README: the two-hour recipe


def five_task_means(path: Path, step: str, seeds=("1", "2", "3")) -> list[float]:
    scores: dict[str, dict[str, float]] = {}
    for row in rows(path):
        if row["method"] == "finetune" and row["step"] == step and row["seed"] in seeds:
            scores.setdefault(row["seed"], {})[row["task"]] = float(row["score"])
    return [sum(s[task] for task in SMALL_GLUE) / len(SMALL_GLUE) for s in scores.values()]


def test_readme_two_hour_figures_are_its_record():
    prose = flat(section(text(README), "**The two-hour recipe.**", "```bash"))
    folder = VALUE / "ditbert-tiny-two-hour"
    pretrained, twin = five_task_means(folder / "results.csv", "13000"), five_task_means(folder / "results.csv", "0")
    assert len(pretrained) == len(twin) == 3
    assert (f"({f2(statistics.mean(pretrained))} +- {f2(statistics.stdev(pretrained))} against "
            f"{f2(statistics.mean(twin))} +- {f2(statistics.stdev(twin))}") in prose
    assert f"**+{f1(statistics.mean(pretrained) - statistics.mean(twin))}**" in prose
    summary = [r for r in rows(folder / "summary.csv") if r["step"] != "0"][0]
    assert f"`tiny` pretrained for {summary['step']} steps" in prose
    assert f"({f1(int(summary['tokens_seen']) / 1e6)}M tokens; {round(float(summary['pretrain_s']) / 60)} minutes" in prose
    seconds = sum(task["seconds"] for model in ("ditbert-tiny-two-hour-step13000", "ditbert-tiny-two-hour-random-init")
                  for info in OUTPUTS.glob(f"{model}-seed*/run_info.json")
                  for task in json.loads(text(info))["tasks"].values())
    assert f"({f1(seconds / 60)} minutes for both models' 36 runs" in prose
    bytask = VALUE / "glue-v4096-13k-bytask" / "results.csv"
    assert (f"gave {f2(statistics.mean(five_task_means(bytask, '13000')))} against "
            f"{f2(statistics.mean(five_task_means(bytask, '0')))}") in prose
    table = by(rows(AGGREGATED), "model")
    lead = {task: float(table["ditbert-tiny-two-hour-step13000"][f"{task}_final_mean"]) -
            float(table["ditbert-tiny-two-hour-random-init"][f"{task}_final_mean"]) for task in ("demo", "cola", "sst2", "rte")}
    assert (f"+{f1(lead['demo'])} on the demo task: CoLA +{f1(lead['cola'])}, SST-2 +{f1(lead['sst2'])}, "
            f"RTE +{f1(lead['rte'])}") in prose
    five, demo = compared("two-hour", "GLUE partial"), compared("two-hour", "demo")
    assert five["tasks"] == ", ".join(SMALL_GLUE) and significant(five)
    assert f2(float(five["mean_a"])) == f2(statistics.mean(pretrained)) and f2(float(five["mean_b"])) == f2(statistics.mean(twin))
    assert (f"The +{f1(float(five['difference']))} is significant: {interval(five)}, p {p_text(five['p'])} "
            f"(bootstrap {interval(five, boot=True)}, p {p_text(five['boot_p'])}; `GLUE-significance.csv`)") in prose
    cola, sst2, rte = (compared("two-hour", task) for task in ("cola", "sst2", "rte"))
    assert all(significant(row) for row in (demo, cola, sst2))
    assert (f"and so are the demo task's +{f1(lead['demo'])} (p {p_text(demo['p'])}), SST-2's +{f1(lead['sst2'])} "
            f"(p {p_text(sst2['p'])}) and CoLA's +{f1(lead['cola'])} (p {p_text(cola['p'])}; bootstrap p "
            f"{p_text(cola['boot_p'])}, with CoLA's dev sampling)") in prose
    assert not significant(rte) and (f"RTE's +{f1(lead['rte'])} is not significant by Welch's interval ({interval(rte)}, "
                                     f"p {p_text(rte['p'])}; bootstrap p {p_text(rte['boot_p'])})") in prose
    stsb, mrpc = compared("two-hour", "stsb"), compared("two-hour", "mrpc")
    assert significant(stsb) and not significant(mrpc)
    assert (f"the twin keeps STS-B's overlap (p {p_text(stsb['p'])}), and MRPC's difference is not significant "
            f"(p {p_text(mrpc['p'])})") in prose
    model = table["ditbert-tiny-two-hour-step13000"]
    assert (f"CoLA's {f1(float(model['cola_final_mean']))} ± {f1(float(model['cola_final_std']))} being the one CoLA "
            f"score clear of the trivial {round(float(table[BASELINE]['cola_final_mean']))}") in prose
    assert (f"its {f1(float(model['rte_final_mean']))} ± {f1(float(model['rte_final_std']))} is within the seeds' "
            f"spread of the majority answer's {f1(float(table[BASELINE]['rte_final_mean']))}") in prose
    assert baseline_mark(float(model["rte_final_mean"]), float(model["rte_final_std"]),
                         float(table[BASELINE]["rte_final_mean"])) == "≈"


# --------------------------------------------------------------------------- README: full training size

TASK_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE"}


def signed(x: float) -> str:
    return f"{x:+.1f}"


def test_readme_full_size_figures_are_the_table_and_the_run_folders():
    """The full-training-set paragraph: the model and its twin, each figure from the aggregated table, the
    significance file, the run folders and the pretraining record; the target met or missed as measured."""
    prose = flat(section(text(README), "**At full training size.**", "## Speed"))
    a, b = TWINS["full-size"]
    table = by(rows(AGGREGATED), "model")
    assert table[a]["train_examples"] == table[b]["train_examples"] == "all"
    assert table[a]["dtype"] == table[b]["dtype"] == "float32"
    record = [r for r in rows(VALUE / "ditbert-tiny-two-hour-fp32" / "summary.csv") if r["step"] == "13000"][0]
    assert f"validation perplexity {f2(float(record['val_ppl']))}" in prose
    seconds = sum(task["seconds"] for model in (a, b) for info in OUTPUTS.glob(f"{model}-seed*/run_info.json")
                  for task in json.loads(text(info))["tasks"].values())
    assert f"{round(seconds / 60)} minutes of fine-tuning for the two models' 36 runs" in prose
    means = {m: seed_means(m) for m in (a, b)}
    assert all(len(v) == 3 for v in means.values())
    assert (f"{f2(statistics.mean(means[a]))} +- {f2(statistics.stdev(means[a]))} against "
            f"{f2(statistics.mean(means[b]))} +- {f2(statistics.stdev(means[b]))}") in prose
    five = compared("full-size", "GLUE partial")
    assert five["tasks"] == ", ".join(SMALL_GLUE)
    assert (f"**{signed(float(five['difference']))}** on the five-task mean ({interval(five)}, p {p_text(five['p'])}; "
            f"bootstrap {interval(five, boot=True)}, p {p_text(five['boot_p'])};") in prose
    for task, name in TASK_NAMES.items():
        row = compared("full-size", task)
        assert f"{name} {signed(float(row['difference']))} (p {p_text(row['p'])})" in prose, name
    base = table[BASELINE]
    clear = [TASK_NAMES[task] for task in SMALL_GLUE
             if baseline_mark(float(table[a][f"{task}_final_mean"]), float(table[a][f"{task}_final_std"]),
                              float(base[f"{task}_final_mean"])) == ""]
    assert f"above the trivial baseline by more than the seeds' spread on {len(clear)} of 5 tasks ({', '.join(clear)})" in prose
    met = float(five["difference"]) >= 3 and float(five["ci_low"]) > 0 and len(clear) >= 4
    assert ("The target" in prose) and (("is met" in prose) == met) and (("is missed" in prose) == (not met))


MINILM_FULL = "minilm-l6-full"


def test_readme_full_size_minilm_figures_are_the_table_and_the_run_folders():
    """MiniLM at full training size beside the two-hour model: its size, its time, its five-task mean and
    per-task finals, from the size file, its run folders and the aggregated table."""
    prose = flat(section(text(README), "**MiniLM at full training size.**", "```bash"))
    ours = TWINS["full-size"][0]
    table = by(rows(AGGREGATED), "model")
    row = table[MINILM_FULL]
    assert (row["train_examples"], row["dtype"], row["recipe"], row["init"]) == ("all", "float32", "bert", "pretrained")
    sizes = by([r for r in rows(BENCH / "model_sizes.csv") if not r["model"].endswith("ForMaskedLM")], "config")
    assert f"(6 x 384, {f1(int(sizes['minilm-l6']['params']) / 1e6)}M parameters" in prose
    infos = [json.loads(text(info)) for info in sorted(OUTPUTS.glob(f"{MINILM_FULL}-seed*/run_info.json"))]
    assert [info["seed"] for info in infos] == [1, 2, 3]
    assert all(set(info["tasks"]) == {*SMALL_GLUE, "wnli"} for info in infos)
    longest = max(sum(task["seconds"] for task in info["tasks"].values()) for info in infos)
    assert f"{round(longest / 60)} minutes, three one-thread processes side by side on the 2 cores" in prose
    means = {m: seed_means(m) for m in (MINILM_FULL, ours)}
    assert (f"{f2(statistics.mean(means[MINILM_FULL]))} +- {f2(statistics.stdev(means[MINILM_FULL]))} against the "
            f"two-hour model's {f2(statistics.mean(means[ours]))} +- {f2(statistics.stdev(means[ours]))}") in prose
    lead = statistics.mean(means[MINILM_FULL]) - statistics.mean(means[ours])
    assert f"ahead by {f1(lead)} points" in prose
    for task, name in TASK_NAMES.items():
        theirs, mine = statistics.mean(seed_scores(MINILM_FULL, task)), statistics.mean(seed_scores(ours, task))
        assert f"{name} {f1(theirs)} against {f1(mine)}" in prose, name
    base = table[BASELINE]
    clear = [TASK_NAMES[task] for task in SMALL_GLUE
             if baseline_mark(float(row[f"{task}_final_mean"]), float(row[f"{task}_final_std"]),
                              float(base[f"{task}_final_mean"])) == ""]
    assert f"above the trivial baseline by more than the seeds' spread on {len(clear)} of 5 tasks" in prose
    rte = [float(row[f"rte_final_{what}"]) for what in ("mean", "std")]
    assert (f"on RTE by {f1(rte[0] - rte[1] - float(base['rte_final_mean']))}: {f1(rte[0])} ± {f1(rte[1])} against "
            f"the majority's {f1(float(base['rte_final_mean']))}") in prose


def test_docs_glue_full_size_rows_are_the_table():
    """docs/glue.md's rows beside the published anchors (the two-hour model, its twin, MiniLM, all at full
    training size): the aggregated table's final means."""
    shown = table_after(text(ROOT / "docs" / "glue.md"), "The comparable rows are those at full training size")
    table = by(rows(AGGREGATED), "model")
    a, b = TWINS["full-size"]
    assert [row["model"].split("`")[1] if "`" in row["model"] else b for row in shown] == [a, b, MINILM_FULL]
    for row, model in zip(shown, (a, b, MINILM_FULL)):
        for column, task in COLUMN_TASK.items():
            if column in row:
                exact = statistics.mean(seed_scores(model, task))
                assert one_decimal(row[column], table[model][f"{task}_final_mean"], exact), f"{model} {column}"
        exact = statistics.mean(statistics.mean(seed_scores(model, task)) for task in SMALL_GLUE)
        assert one_decimal(row["five-task mean"], table[model]["GLUE_partial_final_mean"], exact), model
    lead = statistics.mean(seed_means(MINILM_FULL)) - statistics.mean(seed_means(a))
    assert f"pretrained at scale: {f1(lead)} points on the five-task mean" in flat(text(ROOT / "docs" / "glue.md"))


# --------------------------------------------------------------------------- the equal-time comparison


def peer(name: str = "peer_pretrain.csv") -> dict[tuple[str, str], dict]:
    return {(row["model"], row["snapshot"]): row for row in rows(BENCH / name)}


def pm(row: dict, what: str = "glue_small") -> str:
    """A mean +- std over seeds as the README writes it."""
    return f"{f2(float(row[f'{what}_mean']))} +- {f2(float(row[f'{what}_std']))}"


def pmt(row: dict, what: str = "glue_small") -> str:
    """The same as the tables write it."""
    return pm(row, what).replace("+-", "±")


def test_readme_speed_leads_with_the_same_head_figure():
    prose = flat(section(text(README), "## Speed", "## Layout"))
    own, cls = peer(), peer("peer_pretrain_cls_head.csv")
    ditbert_cls, hf, ditbert_own = cls[("ditbert", "B")], own[("hf-mlm15", "B")], own[("ditbert", "B")]
    like = float(ditbert_cls["glue_small_mean"]) - float(hf["glue_small_mean"])
    confounded = float(ditbert_own["glue_small_mean"]) - float(hf["glue_small_mean"])
    twins = float(own[("random-init", "none")]["glue_small_mean"]) - float(own[("hf-random-init", "none")]["glue_small_mean"])
    like_text = f"DitBERT scores {pm(ditbert_cls)} on the small-GLUE mean against the `Trainer` recipe's {pm(hf)}: +{f2(like)}"
    confounded_text = f"the gap is {f1(confounded)} ({pm(ditbert_own)} against {pm(hf)})"
    assert like_text in prose and confounded_text in prose
    assert prose.index(like_text) < prose.index(confounded_text), "the like-for-like figure comes first"
    assert abs(like) < float(ditbert_cls["glue_small_std"]) and "inside the seeds' spread" in prose
    assert f"At equal time ({round(float(ditbert_own['minutes']))} minutes of bf16 pretraining" in prose
    assert f"the two random-init twins alone differ by {f1(twins)}" in prose


def test_benchmarks_peer_tables_are_the_csvs_and_the_same_head_comes_first():
    doc = section(text(BENCHMARKS), "## Equal time against the Hugging Face recipe", "## Results: GPU")
    own, cls = peer(), peer("peer_pretrain_cls_head.csv")
    first_token = by(table_after(doc, "| first-token head |"), "first-token head")
    columns = {"twin": "none", "B/2 (10 min)": "B/2", "B (20 min)": "B"}
    for label, (source, model, what) in {
            "DitBERT, small-GLUE mean": (cls, "ditbert", "glue_small"), "HF 15 %, small-GLUE mean": (own, "hf-mlm15", "glue_small"),
            "HF 40 %, small-GLUE mean": (own, "hf-mlm40", "glue_small"), "DitBERT, demo": (cls, "ditbert", "demo"),
            "HF 15 %, demo": (own, "hf-mlm15", "demo")}.items():
        for column, snapshot in columns.items():
            twin = {"ditbert": "random-init", "hf-mlm15": "hf-random-init"}.get(model)
            key = (twin, "none") if snapshot == "none" else (model, snapshot)
            cell = first_token[label][column].strip("*")
            if key not in source:
                assert cell == "", f"{label} {column}"
                continue
            assert cell == pmt(source[key], what), f"{label} {column}: {cell}"
    names = {"DitBERT twin (random init)": ("random-init", "none"), "HF twin (random init)": ("hf-random-init", "none")}
    own_table = table_after(doc, "| model | snapshot | minutes |")
    assert len(own_table) == len(own)
    for row in own_table:
        model = row["model"].strip("*")
        key = names.get(model) or ({"DitBERT": "ditbert", "HF, 15 % masking": "hf-mlm15",
                                    "HF, 40 % masking": "hf-mlm40"}[model], row["snapshot"])
        source = own[key]
        assert row["minutes"] == ("0" if key[1] == "none" else f1(float(source["minutes"])))
        tokens = int(source["tokens_seen"])
        assert row["tokens seen"] == ("0" if tokens == 0 else f"{f2(tokens / 1e6)}M")
        assert row["small-GLUE mean"].strip("*") == pmt(source)
        assert row["demo"].strip("*") == pmt(source, "demo")
    results = dict(re.findall(r"^ *RESULT (\S+) (\S+)$", doc, flags=re.M))
    gain = {"ditbert": float(own[("ditbert", "B")]["glue_small_mean"]) - float(own[("random-init", "none")]["glue_small_mean"]),
            "hf": float(own[("hf-mlm15", "B")]["glue_small_mean"]) - float(own[("hf-random-init", "none")]["glue_small_mean"])}
    assert results == {"peer_glue_small_ditbert": own[("ditbert", "B")]["glue_small_mean"],
                       "peer_glue_small_hf": own[("hf-mlm15", "B")]["glue_small_mean"],
                       "peer_tokens_ratio": f2(int(own[("ditbert", "B")]["tokens_seen"]) / int(own[("hf-mlm15", "B")]["tokens_seen"])),
                       "peer_gain_ditbert": f2(gain["ditbert"]), "peer_gain_hf": f2(gain["hf"])}
    assert doc.index("**Like for like") < doc.index("**Second: each recipe with its own head**")
    like = float(cls[("ditbert", "B")]["glue_small_mean"]) - float(own[("hf-mlm15", "B")]["glue_small_mean"])
    assert f"DitBERT leads the 15 % run by **{f2(like)}**" in flat(doc)


# --------------------------------------------------------------------------- BENCHMARKS: the step tables


def step_file(name: str) -> dict[str, dict]:
    return by(rows(BENCH / f"{name}.csv"), "model")


@pytest.mark.parametrize("marker, name", [
    ("### Pretraining step, the current `tiny`", "pretrain_step_tiny_cpu"),
    ("### Pretraining step, `tiny` as first benchmarked", "pretrain_step_tiny_cpu.4x256-learned"),
    ("### Pretraining step, `base`", "pretrain_step_base_cpu"),
])
def test_benchmarks_step_tables_are_their_files(marker, name):
    doc = text(BENCHMARKS)
    assert f"bench/results/{name}.csv" in section(doc, marker, "|")
    source = step_file(name)
    for row in table_after(doc, marker):
        label = row["model"].strip("`")
        src = source[label if label == "DitBERT" else f"HF {label}"]
        ms, spread = re.fullmatch(r"([\d,]+) \(([\d.]+) %\)", row["ms/step (spread)"]).groups()
        assert ms.replace(",", "") == str(round(float(src["ms_per_step"])))
        assert spread == f1(100 * float(src["spread"]))
        assert number(row["tokens/s"]) == str(round(float(src["tokens_per_s"])))
        assert number(row["memory MB"]) == str(round(float(src["memory_mb"])))
        if label != "DitBERT":
            assert row["DitBERT's speed-up"].strip("*") == f"{f2(float(src['speedup_of_ditbert']))}x"


def test_benchmarks_ablations_are_their_files():
    table = by(table_after(text(BENCHMARKS), "| switch flipped |"), "switch flipped")
    files = {"`tiny` now (`pretrain_step_tiny_cpu.csv`)": "pretrain_step_tiny_cpu",
             "`tiny` 4 x 256 (`pretrain_step_tiny_cpu.4x256-learned.csv`)": "pretrain_step_tiny_cpu.4x256-learned",
             "`base` (`pretrain_step_base_cpu.csv`, below)": "pretrain_step_base_cpu"}
    labels = {"every position through the last block and the vocabulary projection": "vocabulary projection at every position",
              "plain matmul-softmax attention instead of SDPA": "attention: plain matmul-softmax instead of SDPA",
              "AdamW not fused (loop over tensors)": "AdamW not fused (loop over tensors)"}
    for column, name in files.items():
        source = step_file(name)
        for shown, label in labels.items():
            ratio = float(source[f"DitBERT, {label}"]["speedup_of_ditbert"])
            assert number(table[shown][column]) == f2(ratio), f"{shown}, {name}"
    compile_row = table["`torch.compile` on"]
    loaded = float(step_file("pretrain_step_tiny_cpu.run1")["DitBERT, torch.compile on"]["speedup_of_ditbert"])
    assert number(compile_row["`tiny` 4 x 256 (`pretrain_step_tiny_cpu.4x256-learned.csv`)"]) == f2(loaded)
    for column, name in files.items():  # a figure in this row needs a file that holds the row
        if "DitBERT, torch.compile on" not in step_file(name):
            assert compile_row[column] == "not run" or "run1" in compile_row[column], column


def test_benchmarks_recipe_rows_and_bf16_are_the_current_file():
    doc, source = text(BENCHMARKS), step_file("pretrain_step_tiny_cpu")
    table = by(table_after(doc, "| recipe choice |"), "recipe choice")
    for label in ("vocabulary 8192 instead of 4096", "15 % masking instead of 40 %", "vocabulary 8192 and 15 % masking",
                  "ELECTRA: a 1-block generator, detection at every token, 15 % masking"):
        assert number(table[label]["step time ratio"]) == f2(float(source[f"DitBERT, {label}"]["speedup_of_ditbert"]))
    electra = step_file("pretrain_step_tiny_cpu.electra")
    assert f"measured {f2(float(electra['DitBERT, vocabulary 8192 instead of 4096']['speedup_of_ditbert']))}" in \
        table["vocabulary 8192 instead of 4096"][""]
    bf16 = source["DitBERT, bf16 autocast instead of fp32"]
    prose = flat(section(doc, "### bf16 autocast on the CPU", "| step |"))
    assert (f"**{f2(float(bf16['speedup_of_ditbert']))}**" in prose
            and f"({round(float(bf16['ms_per_step']))} against {round(float(bf16['default_ms_per_step']))} ms: "
                f"{f2(float(bf16['default_ms_per_step']) / float(bf16['ms_per_step']))}x the tokens" in prose)
    assert f"{round(float(bf16['memory_mb']))} MB of training memory against {round(float(source['DitBERT']['memory_mb']))}" in prose
    ppl = by(rows(VALUE / "glue-v4096-13k-bf16" / "val-ppl.csv"), "step")
    shown = table_after(doc, "| step | 1000 |")
    for row, column in ((shown[0], "val_perplexity_fp32"), (shown[1], "val_perplexity_bf16")):
        for step, cell in row.items():
            if step != "step":
                decimals = len(cell.split(".")[1])
                assert cell == f"{float(ppl[step][column]):.{decimals}f}", f"{column} at {step}"
    last = ppl["13000"]
    assert f"{round(float(last['elapsed_s_bf16']))} s against {round(float(last['elapsed_s_fp32']))} s" in flat(doc)


def test_benchmarks_goal_lines_name_the_preset_and_the_file():
    goals = by(table_after(text(BENCHMARKS), "| goal | measured"), "goal")
    current, first = step_file("pretrain_step_tiny_cpu"), step_file("pretrain_step_tiny_cpu.4x256-learned")
    row = goals["`tiny`: DitBERT >= 2.0x RoBERTa tokens/s"]
    speedup = float(current["HF RobertaForMaskedLM"]["speedup_of_ditbert"])
    assert f"{f2(speedup)}x" in row["measured (idle machine): preset and file"]
    assert "pretrain_step_tiny_cpu.csv" in row["measured (idle machine): preset and file"]
    assert row["met?"].startswith("**no**" if speedup < 2.0 else "yes"), "the goal's verdict follows the current file"
    assert f"{f2(float(first['HF RobertaForMaskedLM']['speedup_of_ditbert']))}x" in row["met?"]
    run2 = dict(re.findall(r"RESULT (\S+) (\S+)", text(BENCH / "make-bench-run2.results")))
    assert f"{f2(float(run2['pretrain_tiny_cpu_speedup']))}x in `make-bench-run2.results`" in row["met?"]
    base = step_file("pretrain_step_base_cpu")
    assert row and f"{f2(float(base['HF RobertaForMaskedLM']['speedup_of_ditbert']))}x" in \
        goals["`base`, small batch: >= 1.3x"]["measured (idle machine): preset and file"]
    elapsed = re.search(r"elapsed=(\d+)", text(BENCH / "make-bench-run2.results")).group(1)
    assert goals["`make bench` under 10 minutes"]["measured (idle machine): preset and file"].startswith(f"{elapsed} s")


def test_benchmarks_model_sizes_are_the_derived_file():
    sizes = {(r["config"], r["model"]): r for r in rows(BENCH / "model_sizes.csv")}
    doc = text(BENCHMARKS)

    def m(config: str, model: str, digits: int) -> str:
        return f"{int(sizes[(config, model)]['params']) / 1e6:.{digits}f} M"

    same_sizes = flat(section(doc, "- Same sizes:", "- Same work:"))
    assert f"`base` {m('base', 'DitBERT', 2)} for all three" in same_sizes
    assert m("base", "DitBERT", 2) == m("base", "RobertaForMaskedLM", 2) == m("base", "BertForMaskedLM", 2)
    assert f"{m('tiny', 'DitBERT', 3)} for DitBERT and {m('tiny', 'RobertaForMaskedLM', 3)} for RoBERTa" in same_sizes
    gap = int(sizes[("tiny", "RobertaForMaskedLM")]["params"]) - int(sizes[("tiny", "DitBERT")]["params"])
    assert f"the {gap:,} between them" in same_sizes
    assert f"{m('tiny-4x256-learned', 'DitBERT', 3)} for all three" in same_sizes
    for config, name in (("tiny", "pretrain_step_tiny_cpu"), ("tiny-4x256-learned", "pretrain_step_tiny_cpu.4x256-learned"),
                         ("base", "pretrain_step_base_cpu")):
        for model, label in (("DitBERT", "DitBERT"), ("RobertaForMaskedLM", "HF RobertaForMaskedLM")):
            timed = float(step_file(name)[label]["params_m"])
            assert round(timed * 1e6) == int(sizes[(config, model)]["params"]), f"{name} timed another {model}"
    where = flat(section(doc, "Where the speed-up comes from.", "### Data loader"))
    ratios = [float(sizes[(c, "DitBERT")]["flops_ratio"]) for c in ("tiny", "tiny-4x256-learned", "base")]
    assert f"does {f2(ratios[0])} of RoBERTa's work" in where
    assert f"{f2(ratios[1])} at the 4 x 256 `tiny`" in where and f"{f2(ratios[2])} at `base`" in where
    assert f"{f2(1 / ratios[0])}x, {f2(1 / ratios[1])}x and {f2(1 / ratios[2])}x if time followed FLOPs" in where


def test_benchmarks_loader_padding_and_scaling_tables_are_their_files():
    doc = text(BENCHMARKS)
    loader = by(table_after(doc, "### Data loader"), "")
    for column, name in (("run 1", "data_tiny.run1"), ("run 2", "data_tiny")):
        source = by(rows(BENCH / f"{name}.csv"), "source")
        sequences = source["token file -> sequences (SequenceLoader.next_batch)"]
        on_the_fly = source["text -> sequences (encode_batch on the next lines)"]
        masked = source["token file -> masked batch (train_model.next_step_batches)"]
        text_masked = source["text -> masked batch (same masking)"]
        assert loader["token file -> sequences"][column] == (
            f"{float(sequences['ms_per_batch']):.3f} ms ({round(float(sequences['tokens_per_s']) / 1e6)} M tokens/s)")
        assert loader["text -> sequences, tokenised on the fly"][column] == f"{float(on_the_fly['ms_per_batch']):.2f} ms"
        speedup = float(on_the_fly["ms_per_batch"]) / float(sequences["ms_per_batch"])
        assert loader["**loader speed-up, serving sequences**"][column] == f"**{round(speedup)}x**"
        assert loader["token file -> masked batch (`next_step_batches`)"][column] == f"{float(masked['ms_per_batch']):.2f} ms"
        assert loader["text -> masked batch (same masking)"][column] == f"{float(text_masked['ms_per_batch']):.2f} ms"
        with_masking = float(text_masked["ms_per_batch"]) / float(masked["ms_per_batch"])
        assert loader["loader speed-up with the masking both pay"][column] == f"{f1(with_masking)}x"
        assert loader["**loader + masking, share of a training step**"][column] == \
            f"**{100 * float(masked['share_of_step']):.2f} %**"
    header, *padding = table_cells(doc, "### Fine-tuning, sentence pairs")
    assert header == ["", "RTE examples/s", "tokens per example", "MRPC examples/s", "tokens per example"]
    ways = ["pad every batch to 130 (random batches)", "pad to the batch's longest (random batches)",
            "pad to the batch's longest, length buckets (glue_utils.train_batches)"]
    assert len(padding) == len(ways)
    for column, task in ((1, "rte"), (3, "mrpc")):
        source = by(rows(BENCH / f"finetune_tiny_{task}.csv"), "padding")
        for shown, way in zip(padding, ways):
            assert number(shown[column]) == f1(float(source[way]["examples_per_s"])), f"{task}: {shown[0]}"
            speedup = float(source[way]["speedup_over_max_length"])
            if speedup != 1.0:
                assert f"{f2(speedup)}x" in shown[column], f"{task}: {shown[0]}"
            assert float(shown[column + 1]) == round(float(source[way]["tokens_per_example"]), 1), f"{task}: {shown[0]}"
    scaling = by(table_after(doc, "### Scaling"), "batch x T")
    for name, line in (("scaling_tiny_cpu.run1", "ms/step, run 1"), ("scaling_tiny_cpu", "ms/step, run 2")):
        source = {(r["attention"], r["batch"], r["seq_len"]): r for r in rows(BENCH / f"{name}.csv")}
        fit = json.loads(text(BENCH / f"{name}.json"))["meta"]["fit"]
        assert f"T = {round(fit['quadratic_from_T']):,}" in doc or f"and {round(fit['quadratic_from_T']):,} (run 2)" in doc
        for column, cell in scaling[line].items():
            if column == "batch x T":
                continue
            batch, seq = column.split(" x ")
            assert number(cell) == str(round(float(source[("sdpa", batch, seq)]["ms_per_step"]))), f"{name} {column}"
            memory = scaling["memory MB (SDPA)"][column]
            assert number(memory) == str(round(float(source[("sdpa", batch, seq)]["memory_mb"])))
            plain = scaling["memory MB (plain attention)"][column]
            if ("math", batch, seq) in source:
                assert number(plain) == str(round(float(source[("math", batch, seq)]["memory_mb"])))


def test_benchmarks_second_run_figures_are_its_results_file():
    prose = flat(section(text(BENCHMARKS), "### A second idle run", "### Goals"))
    run2 = dict(re.findall(r"RESULT (\S+) (\S+)", text(BENCH / "make-bench-run2.results")))
    shown = re.search(r"`tiny` ([\d.]+)x RoBERTa / ([\d.]+)x BERT; `base` ([\d.]+)x / ([\d.]+)x; loader (\d+)x "
                      r"on-the-fly tokenisation and ([\d.]+) % of a step; length buckets RTE ([\d.]+)x, MRPC ([\d.]+)x", prose)
    assert shown, "the second run's sentence changed shape"
    names = ["pretrain_tiny_cpu_speedup", "pretrain_tiny_cpu_speedup_vs_bert", "pretrain_base_cpu_speedup",
             "pretrain_base_cpu_speedup_vs_bert", "data_tiny_loader_speedup", "data_tiny_loader_share_of_step",
             "finetune_tiny_rte_bucket_speedup", "finetune_tiny_mrpc_bucket_speedup"]
    for name, figure in zip(names, shown.groups()):
        value = run2[name] if name != "data_tiny_loader_share_of_step" else str(100 * float(run2[name]))
        decimals = len(figure.split(".")[1]) if "." in figure else 0
        assert figure in written(value, decimals), f"{name}: {figure} against {run2[name]}"
    assert f"T = {int(run2['scaling_tiny_cpu_quadratic_from_T']):,}" in prose
    assert "0.99" not in prose, "the torch.compile figure has no line in the results file"


# --------------------------------------------------------------------------- docs


def test_pretraining_doc_tables_are_the_budget_files():
    doc = text(ROOT / "docs" / "pretraining.md")
    schedule = {(r["steps"], r["schedule"], r["counted_by"]): r for r in rows(BUDGET / "schedule.csv")}
    for row in table_after(doc, "| run | steps | tokens |"):
        counted_by = "clock" if "by the clock" in row["run"] else "steps"
        source = schedule[(row["steps"], "triangle" if "triangle" in row["run"] else "linear", counted_by)]
        assert row["tokens"] == f"{f2(int(source['tokens_seen']) / 1e6)}M"
        assert float(row["rate at the end"]) == float(source["end_lr_share"])
        assert row["val ppl"] == f1(float(source["val_ppl"]))
        assert row[f"val ppl at step {source['common_step']}"] == f1(float(source["val_ppl_at_common_step"]))
        demo = "–" if source["demo_seeds"] == "0" else f"{f2(float(source['demo_mean']))} ± {f2(float(source['demo_std']))}"
        assert row["demo accuracy"] == demo
    domain = rows(BUDGET / "domain.csv")
    shown = table_after(doc, "| continued on | tokens | demo accuracy |")
    assert len(shown) == len(domain)
    for row, source in zip(shown, domain):
        tokens = int(source["tokens_seen"])
        assert row["tokens"] == ("0" if tokens == 0 else f"{f2(tokens / 1e6)}M")
        assert row["demo accuracy"] == f"{f2(float(source['demo_mean']))} ± {f2(float(source['demo_std']))}"


def test_huggingface_doc_loop_row_is_the_committed_runs():
    doc = text(ROOT / "docs" / "huggingface.md")
    table = by(rows(AGGREGATED), "model")["ditbert-tiny"]
    row = table_after(doc, "| fine-tuned by |")[0]
    assert row["demo (accuracy)"] == f"{f2(float(table['demo_final_mean']))} ± {f2(float(table['demo_final_std']))}"
    assert row["MRPC dev (mean of accuracy and F1)"] == \
        f"{f2(float(table['mrpc_final_mean']))} ± {f2(float(table['mrpc_final_std']))}"
    last = [rows(path)[-1] for path in sorted(OUTPUTS.glob("ditbert-tiny-seed*/results_mrpc.csv"))]
    accuracy = statistics.mean(100 * float(r["validation_accuracy"]) for r in last)
    f1_score = statistics.mean(100 * float(r["validation_f1"]) for r in last)
    assert row["MRPC accuracy, F1"] == f"{f2(accuracy)}, {f2(f1_score)}"
    with open(OUTPUTS / "ditbert-tiny-seed1" / "predictions" / "mrpc_validation_final.tsv", encoding="utf-8") as fh:
        labels = [r["label"] for r in csv.DictReader(fh, delimiter="\t")]
    share = labels.count("equivalent") / len(labels)
    all_positive_f1 = 2 * share / (1 + share)
    assert (f"accuracy {f1(100 * share)} and F1 {f1(100 * all_positive_f1)} on the dev set "
            f"(a mean of {f1(50 * (share + all_positive_f1))};") in flat(doc)


# --------------------------------------------------------------------------- BENCHMARKS: the figures in its prose


def spreads(name: str, models=None) -> list[float]:
    return [100 * float(r["spread"]) for r in rows(BENCH / f"{name}.csv") if models is None or r["model"] in models]


def test_benchmarks_cpu_prose_is_its_files():
    doc = flat(section(text(BENCHMARKS), "## Results: CPU", "### Data loader"))
    timed = ("pretrain_step_", "data_", "finetune_", "scaling_")  # the files of `make bench` this section describes
    metas = [json.loads(text(path))["meta"] for path in sorted(BENCH.glob("*.json")) if path.name.startswith(timed)]
    versions = {(m["python"], m["torch"], m["transformers"], m["cpu_cores"]) for m in metas}
    assert len(versions) == 1
    python, torch_version, transformers, cores = versions.pop()
    assert (f"Machine: {cores} cores of an AMD EPYC (`torch.get_num_threads() = {cores}`); Python {python}, "
            f"torch {torch_version}, transformers {transformers}") in doc
    first = spreads("pretrain_step_tiny_cpu.4x256-learned") + spreads("pretrain_step_base_cpu")
    current = spreads("pretrain_step_tiny_cpu")
    assert (f"their spreads are {f1(min(first))}-{f1(max(first))} % in the 4 x 256 `tiny` and `base` files and "
            f"{round(min(current))}-{round(max(current))} % in the current `tiny`'s") in doc
    slower = []
    for name in ("pretrain_step_tiny_cpu", "pretrain_step_base_cpu"):
        idle, loaded = step_file(name if "base" in name else f"{name}.4x256-learned"), step_file(f"{name}.run1")
        slower += [float(loaded[m]["ms_per_step"]) / float(idle[m]["ms_per_step"]) for m in idle if m in loaded
                   and not m.startswith("DitBERT,")]
    loaded_base = step_file("pretrain_step_base_cpu.run1")
    assert (f"there steps took {round(min(slower))}-{round(max(slower))}x longer, the spreads reached "
            f"{round(max(spreads('pretrain_step_tiny_cpu.run1') + spreads('pretrain_step_base_cpu.run1')))} %, and the "
            f"ratios scattered (`base`: {f2(float(loaded_base['HF RobertaForMaskedLM']['speedup_of_ditbert']))}x RoBERTa "
            f"and {f2(float(loaded_base['HF BertForMaskedLM']['speedup_of_ditbert']))}x BERT)") in doc
    alibi, learned = step_file("pretrain_step_tiny_cpu_alibi"), step_file("pretrain_step_tiny_cpu.4x256-learned")
    ms = {m: round(float(r["ms_per_step"])) for m, r in alibi.items()}
    slower_that_day = 100 * (ms["HF RobertaForMaskedLM"] / float(learned["HF RobertaForMaskedLM"]["ms_per_step"]) - 1)
    assert f"every model about {int(round(slower_that_day, -1))} % slower that day" in doc
    assert (f"DitBERT {ms['DitBERT']} ms, {round(float(alibi['DitBERT']['tokens_per_s'])):,} tokens/s, "
            f"**{f2(float(alibi['HF RobertaForMaskedLM']['speedup_of_ditbert']))}x** `RobertaForMaskedLM` "
            f"({ms['HF RobertaForMaskedLM']:,} ms) and {f2(float(alibi['HF BertForMaskedLM']['speedup_of_ditbert']))}x "
            f"`BertForMaskedLM` ({ms['HF BertForMaskedLM']:,} ms), spreads {round(min(spreads('pretrain_step_tiny_cpu_alibi')))}-"
            f"{round(max(spreads('pretrain_step_tiny_cpu_alibi')))} %") in doc
    assert f"its spreads were {round(min(current))}-{round(max(current))} %" in doc
    electra = step_file("pretrain_step_tiny_cpu.electra")
    label = "DitBERT, ELECTRA: a 1-block generator, detection at every token, 15 % masking"
    assert f"{f2(float(electra[label]['speedup_of_ditbert']))} in `pretrain_step_tiny_cpu.electra.csv`" in doc
    ppl = rows(VALUE / "glue-v4096-13k-bf16" / "val-ppl.csv")
    gaps = [(abs(float(r["val_perplexity_bf16"]) / float(r["val_perplexity_fp32"]) - 1), r) for r in ppl]
    gap, worst = max(gaps, key=lambda g: g[0])
    assert f"at all {len(ppl)} evaluations of both runs" in doc
    assert (f"agree to within {f2(100 * gap)} % at every evaluation (the largest gap: {f2(float(worst['val_perplexity_bf16']))} "
            f"against {f2(float(worst['val_perplexity_fp32']))} at step {worst['step']})") in doc
    assert f"({ppl[-1]['step']} steps, {f1(int(ppl[-1]['tokens_seen']) / 1e6)}M tokens" in doc
    tables = {name: step_file(name) for name in ("pretrain_step_tiny_cpu", "pretrain_step_tiny_cpu.4x256-learned",
                                                 "pretrain_step_base_cpu")}
    masked_only = [f2(float(t["DitBERT, vocabulary projection at every position"]["speedup_of_ditbert"])) for t in tables.values()]
    against = [f2(float(t["HF RobertaForMaskedLM"]["speedup_of_ditbert"])) for t in tables.values()]
    assert f"The masked-only ablation row measures {masked_only[0]}x, {masked_only[1]}x and {masked_only[2]}x" in doc
    assert f"DitBERT's step against RoBERTa's {against[0]}x, {against[1]}x and {against[2]}x" in doc


def test_benchmarks_loader_padding_scaling_prose_is_its_files():
    doc = flat(section(text(BENCHMARKS), "### Data loader", "### Goals"))
    speedups, masking, per_row = [], [], []
    for name in ("data_tiny.run1", "data_tiny"):
        source = by(rows(BENCH / f"{name}.csv"), "source")
        sequences = float(source["token file -> sequences (SequenceLoader.next_batch)"]["ms_per_batch"])
        masked = float(source["token file -> masked batch (train_model.next_step_batches)"]["ms_per_batch"])
        speedups.append(float(source["text -> sequences (encode_batch on the next lines)"]["ms_per_batch"]) / sequences)
        masking.append(1 - sequences / masked)
        per_row.append(1000 * (masked - sequences) / 32)
    assert f"Serving sequences from the token file is {round(min(speedups))}-{round(max(speedups))}x faster" in doc
    assert {f"{round(100 * m)}" for m in masking} == {re.search(r"both, (\d+) % of the loader's time", doc).group(1)}
    assert f"once per row, {round(min(per_row))}-{round(max(per_row))} us each" in doc
    rte, mrpc = (by(rows(BENCH / f"finetune_tiny_{task}.csv"), "padding") for task in ("rte", "mrpc"))
    random_batches = "pad to the batch's longest (random batches)"
    buckets = "pad to the batch's longest, length buckets (glue_utils.train_batches)"
    assert f"on MRPC it buys {f2(float(mrpc[random_batches]['speedup_over_max_length']))}x" in doc
    shares = [100 * float(t["pad every batch to 130 (random batches)"]["padding_share"]) for t in (rte, mrpc)]
    bucket_shares = {round(100 * float(t[buckets]["padding_share"])) for t in (rte, mrpc)}
    assert f"cut the padding from {round(min(shares))}-{round(max(shares))} % to {bucket_shares.pop()} %" in doc and not bucket_shares
    loaded = by(rows(BENCH / "finetune_tiny_rte.run1.csv"), "padding")
    assert f"(`finetune_tiny_rte.run1`, unfused AdamW, no clipping) measured {f2(float(loaded[buckets]['speedup_over_max_length']))}x" in doc
    metas = [json.loads(text(BENCH / f"{name}.json"))["meta"] for name in ("scaling_tiny_cpu.run1", "scaling_tiny_cpu")]
    fits = [round(m["fit"]["quadratic_from_T"]) for m in metas]
    assert f"T = {fits[0]:,} (run 1) and {fits[1]:,} (run 2)" in doc
    assert {m["flops_crossover_T"] for m in metas} == {int(number(re.search(r"2d \+ f = ([\d,]+) for that", doc).group(1)))}
    now = [r for r in rows(BENCH / "model_sizes.csv") if r["config"] == "tiny"][0]
    assert f"({2 * int(now['d_model']) + int(now['d_ff']):,} for the current one)" in doc
    scaling = [r for name in ("scaling_tiny_cpu.run1", "scaling_tiny_cpu") for r in rows(BENCH / f"{name}.csv")]
    per_token = [float(r["us_per_token"]) for r in scaling if r["attention"] == "sdpa" and r["batch"] == "32"]
    assert f"time per token at batch 32 stays within {int(round(min(per_token), -1))}-{int(round(max(per_token), -1))} us" in doc
    share = {t: [100 * float(r["attention_share_of_time"]) for r in scaling if r["attention"] == "sdpa" and r["seq_len"] == t]
             for t in ("64", "512")}
    assert (f"attention is {round(min(share['64']))}-{round(max(share['64']))} % of the time at T = 64 and "
            f"{round(min(share['512']))}-{round(max(share['512']))} % at T = 512") in doc
    memory = {(r["attention"], r["batch"], r["seq_len"]): float(r["memory_mb"]) for r in scaling}
    assert f"+{round(memory[('math', '8', '512')] - memory[('sdpa', '8', '512')])} MB at 8 x 512" in doc
    elapsed = re.search(r"elapsed=(\d+)", text(BENCH / "make-bench-run2.results")).group(1)
    assert f"`GLUE_DIR=../shared/glue_data make bench` took {elapsed} s on the idle machine" in doc


def test_benchmarks_goal_table_cells_are_their_files():
    goals = by(table_after(text(BENCHMARKS), "| goal | measured"), "goal")
    cells = {goal: flat(" ".join(row.values())) for goal, row in goals.items()}
    current, first = step_file("pretrain_step_tiny_cpu"), step_file("pretrain_step_tiny_cpu.4x256-learned")
    base = step_file("pretrain_step_base_cpu")
    assert (f"1.77x (BERT: {f2(float(current['HF BertForMaskedLM']['speedup_of_ditbert']))}x)" in cells[
        "`tiny`: DitBERT >= 2.0x RoBERTa tokens/s"])
    first_spreads = spreads("pretrain_step_tiny_cpu.4x256-learned", {"DitBERT", "HF RobertaForMaskedLM", "HF BertForMaskedLM"})
    assert (f"2.02x (BERT {f2(float(first['HF BertForMaskedLM']['speedup_of_ditbert']))}x, spreads "
            f"{f1(min(first_spreads))}-{f1(max(first_spreads))} %)") in cells["`tiny`: DitBERT >= 2.0x RoBERTa tokens/s"]
    base_spreads = spreads("pretrain_step_base_cpu", {"DitBERT", "HF RobertaForMaskedLM", "HF BertForMaskedLM"})
    assert (f"(BERT: {f2(float(base['HF BertForMaskedLM']['speedup_of_ditbert']))}x)" in cells["`base`, small batch: >= 1.3x"]
            and f"within the spread ({f1(min(base_spreads))}-{f1(max(base_spreads))} %)" in cells["`base`, small batch: >= 1.3x"])
    loader = [by(rows(BENCH / f"{name}.csv"), "source") for name in ("data_tiny.run1", "data_tiny")]
    share = [100 * float(s["token file -> masked batch (train_model.next_step_batches)"]["share_of_step"]) for s in loader]
    assert f"{share[0]:.2f} %, {share[1]:.2f} %" in cells["loader < 5 % of a step"]
    speed = [float(s["text -> sequences (encode_batch on the next lines)"]["ms_per_batch"]) /
             float(s["token file -> sequences (SequenceLoader.next_batch)"]["ms_per_batch"]) for s in loader]
    assert f"{round(speed[0])}x, {round(speed[1])}x serving sequences" in cells["loader >= 20x on-the-fly tokenisation"]
    padding = [by(rows(BENCH / f"finetune_tiny_{task}.csv"), "padding") for task in ("rte", "mrpc")]
    ratio = {way: [f2(float(p[way]["speedup_over_max_length"])) for p in padding] for way in (
        "pad to the batch's longest (random batches)", "pad to the batch's longest, length buckets (glue_utils.train_batches)")}
    buckets, alone = ratio["pad to the batch's longest, length buckets (glue_utils.train_batches)"], ratio[
        "pad to the batch's longest (random batches)"]
    assert (f"RTE {buckets[0]}x, MRPC {buckets[1]}x (length buckets; padding alone {alone[0]}x / {alone[1]}x)"
            in cells["dynamic padding >= 1.5x examples/s, pair task"])
    elapsed = int(re.search(r"elapsed=(\d+)", text(BENCH / "make-bench-run2.results")).group(1))
    assert f"{elapsed} s ({f1(elapsed / 60)} minutes)" in cells["`make bench` under 10 minutes"]
    sizes = {(r["config"], r["model"]): r for r in rows(BENCH / "model_sizes.csv")}
    closing = flat(section(text(BENCHMARKS), "The current `tiny` masks 40 %", "## Equal time"))
    assert (f"(FLOPs {f2(float(sizes[('tiny', 'DitBERT')]['flops_ratio']))} of RoBERTa's against "
            f"{f2(float(sizes[('tiny-4x256-learned', 'DitBERT')]['flops_ratio']))}, `model_sizes.csv`)") in closing


def test_benchmarks_peer_prose_is_the_csvs():
    doc = flat(section(text(BENCHMARKS), "## Equal time against the Hugging Face recipe", "## Results: GPU"))
    own, cls = peer(), peer("peer_pretrain_cls_head.csv")

    def g(source, model, snapshot, what="glue_small"):
        return float(source[(model, snapshot)][f"{what}_mean"])

    models = {key[0] for key in own}
    snapshots = len(own)
    assert f"then {snapshots * 6 * 3} fine-tuning runs ({snapshots} models x 6 tasks x 3 seeds" in doc and len(models) == 5
    assert f"on the small-GLUE mean ({pmt(cls[('ditbert', 'B')])} against {pmt(own[('hf-mlm15', 'B')])}), inside" in doc
    assert (f"the twins start within a point of each other ({f2(g(cls, 'random-init', 'none'))} against "
            f"{f2(g(own, 'hf-random-init', 'none'))})") in doc
    assert abs(g(cls, "random-init", "none") - g(own, "hf-random-init", "none")) < 1
    half = g(cls, "ditbert", "B/2") - g(own, "hf-mlm15", "B/2")
    assert half > float(cls[("ditbert", "B/2")]["glue_small_std"]) and f"ahead at B/2 (+{f1(half)} over the 15 % run" in doc
    demo = [g(cls, "ditbert", s, "demo") - g(own, "hf-mlm15", s, "demo") for s in ("B/2", "B")]
    assert f"on the demo task at both snapshots (+{f1(demo[0])}, +{f1(demo[1])})" in doc
    assert abs(g(own, "hf-mlm40", "B/2") - g(own, "hf-mlm15", "B/2")) < float(own[("hf-mlm40", "B/2")]["glue_small_std"])
    below = g(own, "hf-mlm15", "B") - g(own, "hf-mlm40", "B")
    assert f"within the spread of 15 % at B/2, {f1(below)} below it at B)" in doc
    ratio = int(own[("ditbert", "B")]["tokens_seen"]) / int(own[("hf-mlm15", "B")]["tokens_seen"])
    assert f"what DitBERT gains is the speed, {f2(ratio)}x the tokens" in doc
    step = float(step_file("pretrain_step_tiny_cpu")["HF RobertaForMaskedLM"]["speedup_of_ditbert"])
    assert f"the current `tiny`'s {f2(step)}x step speed" in doc
    leads = [g(own, "ditbert", s) - g(own, "hf-mlm15", s) for s in ("B/2", "B")]
    demo_leads = [g(own, "ditbert", s, "demo") - g(own, "hf-mlm15", s, "demo") for s in ("B/2", "B")]
    assert (f"by {f1(leads[0])} and {f1(leads[1])} points on the small-GLUE mean ({pmt(own[('ditbert', 'B')])} "
            f"against {pmt(own[('hf-mlm15', 'B')])} at B) and {f1(demo_leads[0])} and {f1(demo_leads[1])} on the demo task") in doc
    twins = g(own, "random-init", "none") - g(own, "hf-random-init", "none")
    assert (f"the two random-init twins alone differ by {f1(twins)} points ({f2(g(own, 'random-init', 'none'))} against "
            f"{f2(g(own, 'hf-random-init', 'none'))})") in doc
    like = g(cls, "ditbert", "B") - g(own, "hf-mlm15", "B")
    assert f"the pretrained models are {f2(like)} apart" in doc and f"the like-for-like +{f2(like)}" in doc
    assert doc.count(f"{f1(leads[1])} points ahead of a `Trainer` user") == 1
    assert f"how the {f1(leads[1])} splits over the tasks" in doc
    assert f"its planned steps ended at {f1(float(own[('hf-mlm40', 'B')]['minutes']))} of its 20 minutes" in doc


def test_pretraining_doc_prose_is_the_budget_files():
    doc = flat(text(ROOT / "docs" / "pretraining.md"))
    runs = by(rows(BUDGET / "schedule.csv"), "run")
    linear = [r for name, r in runs.items() if r["schedule"] == "linear"]
    triangle = runs["triangle-20min"]
    assert (f"({f1(float(triangle['val_ppl']))} after {triangle['steps']} steps, against "
            f"{f1(min(float(r['val_ppl']) for r in linear))} to {f1(max(float(r['val_ppl']) for r in linear))} for the "
            f"linear runs of {min(int(r['steps']) for r in linear)} and {max(int(r['steps']) for r in linear)} steps)") in doc
    at_common = [float(r["val_ppl_at_common_step"]) for r in linear]
    assert (f"At step {triangle['common_step']}, the one step the file records for every run, it is still at "
            f"{f1(float(triangle['val_ppl_at_common_step']))}, within the linear runs' {f1(min(at_common))} to "
            f"{f1(max(at_common))}") in doc
    assert min(at_common) <= float(triangle["val_ppl_at_common_step"]) <= max(at_common)
    clock, steps = runs["linear-20min"], runs[f"steps-{runs['linear-20min']['steps']}"]
    assert (f"{f1(float(clock['val_ppl']))} by the clock against {f1(float(steps['val_ppl']))} by steps, "
            f"{clock['steps']} steps each: within {round(100 * (float(clock['val_ppl']) / float(steps['val_ppl']) - 1))} %") in doc
    assert f"(the steps run had a quieter machine: {f1(float(steps['train_minutes']))} minutes)" in doc
    by_clock = {f1(float(r["train_minutes"])) for r in runs.values() if r["counted_by"] == "clock"}
    assert len(by_clock) == 1 and f"Every run by the clock ended at {by_clock.pop()} minutes of training" in doc
    assert {float(r["end_lr_share"]) for r in runs.values() if r["counted_by"] == "clock"} == {0.0}

    def demo(run: dict) -> str:
        return f"{f1(float(run['demo_mean']))} ± {f1(float(run['demo_std']))}"

    first, steps_1750 = runs["linear-from-start-20min"], runs["steps-1750"]
    assert (f"ended at a lower perplexity ({f1(float(steps_1750['val_ppl']))} against {f1(float(first['val_ppl']))}), "
            f"though not at a better demo score ({demo(steps_1750)} against {demo(first)})") in doc
    assert f"the demo task ({demo(triangle)} against {demo(first)} and {demo(steps_1750)})" in doc
    domain = rows(BUDGET / "domain.csv")
    as_is, general, task = domain[0], domain[1], domain[3]
    assert (f"(+{f1(float(task['demo_mean']) - float(as_is['demo_mean']))} over the model as it is, "
            f"+{f1(float(task['demo_mean']) - float(general['demo_mean']))} over the same minutes of the general mix)") in doc


def test_results_log_figures_are_their_files():
    log = text(ROOT / "docs" / "results-log.md")
    short = flat(section(log, "## Does pretraining pay? In short", "```bash"))
    table = by(rows(AGGREGATED), "model")
    ditbert, twin = table["ditbert-tiny"], table["ditbert-tiny-random-init"]
    assert (f"({f2(float(ditbert['demo_final_mean']))} +- {f2(float(ditbert['demo_final_std']))} against "
            f"{f2(float(twin['demo_final_mean']))} +- {f2(float(twin['demo_final_std']))}, `GLUE-aggregated-results.csv`)") in short
    curve = by([r for r in rows(VALUE / "tokens-2x256" / "summary.csv") if r["task"] == "demo" and r["method"] == "finetune"],
               "step")
    lead = float(curve["4000"]["mean"]) - float(curve["0"]["mean"])
    assert f"(+{f1(lead)} at {round(int(curve['4000']['tokens_seen']) / 1e6)}M, `results/pretraining-value/tokens-2x256/`" in short
    two_hour = by(rows(AGGREGATED), "model")
    demo_lead = float(two_hour["ditbert-tiny-two-hour-step13000"]["demo_final_mean"]) - \
        float(two_hour["ditbert-tiny-two-hour-random-init"]["demo_final_mean"])
    assert f"+{f1(demo_lead)} at 54M, `results/pretraining-value/ditbert-tiny-two-hour/`" in short
    bytask = VALUE / "glue-v4096-13k-bytask" / "results.csv"
    five = {seeds: [statistics.mean(five_task_means(bytask, step, seeds)) for step in ("13000", "0")]
            for seeds in (("1", "2", "3"), ("1", "2", "3", "4", "5"))}
    three, all_five = five[("1", "2", "3")], five[("1", "2", "3", "4", "5")]
    assert (f"**+{f1(three[0] - three[1])} on 3 seeds and +{f1(all_five[0] - all_five[1])} on 5** "
            f"({f2(all_five[0])} against {f2(all_five[1])}; `results/pretraining-value/glue-v4096-13k-bytask/`), with "
            f"{round(max(float(r['pretrain_s']) for r in rows(VALUE / 'glue-v4096-13k-bytask' / 'summary.csv')) / 60)} minutes of "
            f"pretraining") in short
    fp32 = rows(VALUE / "glue-v4096-13k-bf16" / "val-ppl.csv")[-1]
    assert f"which pretrained in {round(float(fp32['elapsed_s_fp32']) / 60)} minutes here" in flat(log)


def test_results_log_old_tables_are_the_aggregated_table_of_their_commit():
    """The section on `make demo` before pairs were encoded by task shows the aggregated markdown of the
    commit it names, table for table."""
    log = text(ROOT / "docs" / "results-log.md")
    old = section(log, "## `make demo` before `tiny` encoded pairs by task")
    commit = re.search(r"held up to commit `([0-9a-f]{7,40})`", old).group(1)
    assert "`GLUE-aggregated-results.md` at that commit" in flat(old)
    then = subprocess.run(["git", "show", f"{commit}:GLUE-aggregated-results.md"], cwd=ROOT, capture_output=True, text=True)
    shown = [line for line in old.splitlines() if line.startswith("|")]
    assert len(shown) == 2 * 5
    if then.returncode == 0:  # a shallow clone may not hold the commit
        kept = [line for line in then.stdout.splitlines() if line.startswith("|")]
        assert shown == kept, f"the tables differ from GLUE-aggregated-results.md at commit {commit}"
    final = by(table_after(old, "**Final epoch: mean ± std over seeds**"), "model")
    leads = {column: float(final["ditbert-tiny"][column].split(" ")[0]) - float(final["ditbert-tiny-random-init"][column].split(" ")[0])
             for column in ("SST-2", "RTE", "CoLA", "MRPC")}
    prose = flat(section(old, "On the demo task DitBERT was ahead"))
    assert (f"ahead on SST-2 (+{f1(leads['SST-2'])}) and RTE (+{f1(leads['RTE'])}), behind on CoLA ({f1(leads['CoLA'])}), "
            f"MRPC ({f1(leads['MRPC'])})") in prose


def test_model_sizes_file_is_the_presets():
    """bench/results/model_sizes.csv against the presets it was derived from: each configuration's shape and
    its FLOPs (arithmetic only; the parameter counts are checked against the timed files above)."""
    spec = importlib.util.spec_from_file_location("model_sizes", ROOT / "bench" / "model_sizes.py")
    model_sizes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model_sizes)
    from params import get_params

    written_rows = {(r["config"], r["model"]): r for r in rows(BENCH / "model_sizes.csv")}
    for config, (preset, overrides) in model_sizes.CONFIGS.items():
        p = get_params(preset, overrides)
        row = written_rows[(config, "DitBERT")]
        assert (int(row["n_layers"]), int(row["d_model"]), int(row["d_ff"]), int(row["vocab_size"]), row["position"],
                float(row["mask_prob"])) == (p.model.n_layers, p.model.d_model, p.model.d_ff, p.model.vocab_size,
                                             p.model.position, p.train.mask_prob), f"{config}: rerun bench/model_sizes.py"
        full, masked_only = model_sizes.step_flops(p.model, p.train.mask_prob)
        assert (int(row["step_flops_full"]), int(row["step_flops_masked_only"])) == (full, masked_only)
        assert float(row["flops_ratio"]) == round(masked_only / full, 4)


def test_the_demos_time_is_its_record():
    record = text(ROOT / "results" / "make-demo" / "run.txt")
    minutes, seconds = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\d+):([\d.]+)", record).groups()
    assert f"`make demo` took {int(minutes) + float(seconds) / 60:.1f} minutes on 2 CPU cores" in text(README)
    for line in re.findall(r"^RESULT .+$", record, re.M)[-5:]:
        assert line in text(README), f"the README's RESULT lines are the fresh clone's: {line}"
