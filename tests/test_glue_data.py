"""GLUE task registry and data loading: every task's files in the original GLUE layout, custom
CSV tasks, the demo task, bad inputs, and (with $GLUE_DIR) the official row counts."""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import dataclasses

import glue_tasks
from glue_tasks import MNLI_INIT_TASKS, TASKS, Task, get_task, load_task, read_split
from conftest import GLUE_FILES

PAIR_TASKS = {"mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}


def raw_column(path: Path, column, header: bool) -> list[str]:
    """A file's column split by hand (tabs only, no csv module): the oracle for the loader."""
    lines = path.read_text(encoding="utf-8").lstrip("\ufeff").splitlines()
    if header:
        names = lines[0].split("\t")
        column, lines = names.index(column), lines[1:]
    return [line.split("\t")[column] for line in lines]


def test_registry_holds_the_nine_glue_tasks_and_ax():
    assert glue_tasks.GLUE_TASKS == ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
    assert TASKS["ax"].label_column is None and TASKS["ax"].label_names == TASKS["mnli"].label_names
    assert TASKS["stsb"].is_regression and TASKS["mnli"].num_labels == 3
    assert TASKS["cola"].metrics == ("mcc",) and TASKS["stsb"].metrics == ("pearson", "spearman")
    assert TASKS["mrpc"].metrics == TASKS["qqp"].metrics == ("accuracy", "f1")


def test_task_rows_are_keyword_only_and_name_what_the_aggregation_reports():
    with pytest.raises(TypeError):
        Task("x", 2, ("accuracy",), ("a",), "label")  # positional rows would hide which value is which
    assert TASKS["mnli"].report_columns() == {"mnli_m": ["validation_matched_accuracy"],
                                              "mnli_mm": ["validation_mismatched_accuracy"]}
    assert TASKS["stsb"].report_columns() == {"stsb": ["validation_pearson", "validation_spearman"]}
    assert set(MNLI_INIT_TASKS) == {"rte", "mrpc", "stsb", "wnli"} and set(MNLI_INIT_TASKS) <= set(glue_tasks.GLUE_TASKS)
    assert dataclasses.replace(TASKS["rte"], metrics=("f1",)).column_names() == ["epoch", "train_f1", "validation_f1"]


def test_unknown_task_is_an_error_listing_the_valid_ones():
    with pytest.raises(KeyError) as err:
        get_task("colaa")
    for name in [*glue_tasks.GLUE_TASKS, "demo"]:
        assert name in str(err.value)


@pytest.mark.parametrize("name", glue_tasks.GLUE_TASKS)
def test_each_task_loads_its_real_column_layout(name, glue_layout):
    task = TASKS[name]
    data, reports = load_task(task, glue_layout)
    assert set(data) == set(task.splits)
    for split, filename in task.splits.items():
        path = glue_layout / task.folder / filename
        ds = data[split]
        assert reports[split].bad_rows == 0 and reports[split].rows == len(ds)
        assert ds["text_a"] == raw_column(path, task.text_columns[0], task.header)
        assert ("text_b" in ds.column_names) == (name in PAIR_TASKS)
        if name in PAIR_TASKS:
            assert ds["text_b"] == raw_column(path, task.text_columns[1], task.header)
        raw_labels = raw_column(path, task.label_column, task.header)
        if task.is_regression:
            assert ds["label"] == [float(v) for v in raw_labels]
        else:
            expected = [task.label_names.index(v) if v in task.label_names else int(v) for v in raw_labels]
            assert ds["label"] == expected and set(expected) <= set(range(task.num_labels))


def test_cola_has_no_header_so_its_first_line_is_data(glue_layout):
    data, _ = load_task(TASKS["cola"], glue_layout)
    first = (glue_layout / "CoLA" / "train.tsv").read_text().splitlines()[0].split("\t")
    assert len(data["train"]) == 24 and data["train"][0]["text_a"] == first[3]


def test_mrpc_bom_and_quote_characters_are_kept_as_text(glue_layout):
    assert (glue_layout / "MRPC" / "train.tsv").read_bytes().startswith(b"\xef\xbb\xbf")
    data, _ = load_task(TASKS["mrpc"], glue_layout)
    assert all(text.startswith('He said " ') for text in data["train"]["text_a"])
    assert all(text.endswith(" ''") for text in data["train"]["text_b"])


def test_mnli_reads_both_dev_files_and_maps_label_names(glue_layout):
    data, reports = load_task(TASKS["mnli"], glue_layout)
    assert sorted(data) == ["train", "validation_matched", "validation_mismatched"]
    assert reports["validation_mismatched"].source.endswith("MNLI/dev_mismatched.tsv")
    assert data["train"]["label"][:3] == [0, 1, 2]  # entailment, neutral, contradiction
    assert TASKS["mnli"].column_names() == [
        "epoch", "train_accuracy", "validation_matched_accuracy", "validation_mismatched_accuracy"]


def test_diagnostic_set_loads_without_labels(glue_layout):
    data = glue_tasks.load_test_splits(TASKS["ax"], glue_layout)
    assert "label" not in data["test"].column_names and len(data["test"]) == 12
    assert data["test"]["idx"] == list(range(12))  # the file's index column


def test_test_splits_load_their_own_layout_with_the_files_index(glue_layout, tmp_path):
    """Test files have a header (CoLA's too), an index column (QQP's is `id`) and no labels; a
    missing one is left out with a note."""
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "test.tsv").write_text("index\tsentence\n7\tBill whistled.\n3\tThe car honked.\n")
    data = glue_tasks.load_test_splits(TASKS["cola"], tmp_path)
    assert data["test"]["idx"] == [7, 3] and data["test"]["text_a"] == ["Bill whistled.", "The car honked."]
    (tmp_path / "QQP").mkdir()
    (tmp_path / "QQP" / "test.tsv").write_text("id\tquestion1\tquestion2\n0\ta?\tb?\n1\tc?\td?\n")
    qqp = glue_tasks.load_test_splits(TASKS["qqp"], tmp_path)["test"]
    assert qqp["idx"] == [0, 1] and qqp["text_b"] == ["b?", "d?"] and "label" not in qqp.column_names
    assert glue_tasks.load_test_splits(TASKS["rte"], tmp_path) == {}  # no RTE folder: nothing to predict
    assert set(TASKS["mnli"].test_splits) == {"test_matched", "test_mismatched"}
    data, _ = load_task(TASKS["rte"], glue_layout)
    assert data["validation"]["idx"] == list(range(12))  # dev rows are numbered from 0


def _copy_task(glue_layout: Path, tmp_path: Path, folder: str) -> Path:
    (tmp_path / folder).mkdir()
    for name in GLUE_FILES[folder]:
        (tmp_path / folder / name).write_bytes((glue_layout / folder / name).read_bytes())
    return tmp_path / folder


def test_malformed_rows_are_counted_reported_and_left_out(glue_layout, tmp_path, capsys):
    folder = _copy_task(glue_layout, tmp_path, "RTE")
    lines = (folder / "train.tsv").read_text().splitlines()
    body = lines[1:] * 10  # 240 rows
    body[6] = "6\tonly one text"  # line 8 of the file: too few fields
    (folder / "train.tsv").write_text("\n".join([lines[0]] + body) + "\n")
    cols, report = read_split(TASKS["rte"], "train", folder / "train.tsv", max_bad_fraction=0.01)
    assert report.bad_rows == 1 and report.rows == 239 == len(cols["text_a"])
    assert report.bad_examples[0][0] == 8
    out = capsys.readouterr().out
    assert "1 of 240 rows" in out and "line 8" in out and "train.tsv" in out


def test_too_many_malformed_rows_are_an_error(glue_layout, tmp_path):
    folder = _copy_task(glue_layout, tmp_path, "RTE")
    lines = (folder / "dev.tsv").read_text().splitlines()
    lines[2] = lines[2].split("\t")[0]
    (folder / "dev.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"1 of 12 rows of .*dev.tsv are malformed"):
        load_task(TASKS["rte"], tmp_path)


def test_label_out_of_range_names_file_and_line(glue_layout, tmp_path):
    folder = _copy_task(glue_layout, tmp_path, "SST-2")
    lines = (folder / "train.tsv").read_text().splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\t2"
    (folder / "train.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train.tsv:4: label 2 is out of range for task sst2 \(0..1\)"):
        load_task(TASKS["sst2"], tmp_path)


def test_unknown_label_name_is_an_error(glue_layout, tmp_path):
    folder = _copy_task(glue_layout, tmp_path, "RTE")
    text = (folder / "dev.tsv").read_text().replace("not_entailment", "maybe", 1)
    (folder / "dev.tsv").write_text(text)
    with pytest.raises(ValueError, match=r"unknown label 'maybe' for task rte; valid labels: \['entailment'"):
        load_task(TASKS["rte"], tmp_path)


def test_missing_task_folder_and_missing_file_are_clear_errors(glue_layout, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"has no folder CoLA/"):
        load_task(TASKS["cola"], tmp_path)
    folder = _copy_task(glue_layout, tmp_path, "MNLI")
    (folder / "dev_mismatched.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"task mnli: validation_mismatched file .*dev_mismatched.tsv does not exist"):
        load_task(TASKS["mnli"], tmp_path)


def test_wrong_header_is_a_clear_error(glue_layout, tmp_path):
    folder = _copy_task(glue_layout, tmp_path, "QNLI")
    text = (folder / "train.tsv").read_text().replace("question\t", "query\t", 1)
    (folder / "train.tsv").write_text(text)
    with pytest.raises(ValueError, match=r"has no column\(s\) \['question'\]"):
        load_task(TASKS["qnli"], tmp_path)


def test_invalid_utf8_and_unbalanced_quotes_are_errors_naming_the_file(glue_layout, tmp_path):
    folder = _copy_task(glue_layout, tmp_path, "SST-2")
    raw = (folder / "dev.tsv").read_bytes().split(b"\n")
    raw[4] = raw[4][:5] + b"\xff" + raw[4][5:]
    (folder / "dev.tsv").write_bytes(b"\n".join(raw))
    with pytest.raises(ValueError, match=r"task sst2: .*SST-2/dev.tsv is not valid UTF-8 \(line 5"):
        load_task(TASKS["sst2"], tmp_path)
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "train.csv").write_text('sentence,label\n"an unbalanced quote,1\n' + "more text,0\n" * 20000)
    (custom / "dev.csv").write_text("sentence,label\nfine,1\n")
    with pytest.raises(ValueError, match=r"train.csv cannot be parsed .*unbalanced quote"):
        load_task(get_task(str(custom)))


def test_hub_path_without_network_says_how_to_go_offline():
    """The hub code path is the default; offline it fails fast with a pointer to GLUE_DIR."""
    code = "import glue_tasks\nglue_tasks.load_task(glue_tasks.TASKS['rte'])"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode != 0
    assert "could not load GLUE task rte from the Hugging Face hub" in proc.stderr and "GLUE_DIR" in proc.stderr


# --------------------------------------------------------------------------- custom CSV tasks


def test_custom_csv_task_with_quoted_commas_and_string_labels(tmp_path):
    (tmp_path / "train.csv").write_text('id,review,label\n1,"good, really good",pos\n2,bad,neg\n3,"fine ""ok""",pos\n')
    (tmp_path / "dev.csv").write_text("id,review,label\n1,great,pos\n2,awful,neg\n")
    task = get_task(str(tmp_path))
    assert task.name == tmp_path.name and task.text_columns == ("review",)
    assert task.label_names == ("neg", "pos") and task.num_labels == 2 and task.metrics == ("accuracy",)
    data, _ = load_task(task)
    assert data["train"]["text_a"] == ["good, really good", "bad", 'fine "ok"']
    assert data["train"]["label"] == [1, 0, 1] and data["validation"]["label"] == [1, 0]


def test_custom_task_json_sets_columns_and_regression(tmp_path):
    (tmp_path / "train.tsv").write_text("a\tb\tscore\tnote\nx y\tz\t0.5\tn\nu\tv\t1.5\tn\n")
    (tmp_path / "validation.tsv").write_text("a\tb\tscore\tnote\nx\ty\t2.0\tn\n")
    (tmp_path / "task.json").write_text(json.dumps({"text_columns": ["a", "b"], "label_column": "score"}))
    task = get_task(str(tmp_path))
    assert task.is_regression and task.metrics == ("pearson", "spearman")
    data, _ = load_task(task)
    assert data["train"]["text_b"] == ["z", "v"] and data["validation"]["label"] == [2.0]


def test_custom_task_without_dev_file_is_a_clear_error(tmp_path):
    (tmp_path / "train.csv").write_text("sentence,label\na,0\n")
    with pytest.raises(FileNotFoundError, match=r"needs train.csv .* and dev.csv or validation.csv"):
        glue_tasks.csv_task(tmp_path)


# --------------------------------------------------------------------------- the demo task


def _fake_vader_sdist(path: Path, lines: list[str]) -> None:
    """A tarball with the sdist's nesting: the ground-truth file inside hutto_ICWSM_2014.tar.gz."""
    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        add(tar, "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt", "\r\n".join(lines).encode())
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz", inner.getvalue())


def test_demo_task_holds_out_1000_sentences_for_validation(tmp_path):
    lines = [f"{i}\t{(-1) ** i * (1 + i % 4) / 2}\tsentence {i}" for i in range(1, 1101)] + ["1101\t0.0\tneutral"]
    _fake_vader_sdist(tmp_path / glue_tasks.DEMO_ARCHIVE, lines)
    task = get_task("demo", data_dir=tmp_path)
    assert task.name == "demo" and task.num_labels == 2 and task.metrics == ("accuracy",)
    data, _ = load_task(task)
    assert len(data["validation"]) == 1000 and len(data["train"]) == 100
    assert sorted(set(data["train"]["label"])) == [0, 1]


def test_demo_split_sizes_labels_and_determinism(tmp_path):
    ratings = [2.5, -1.25, 0.0, 3.0, -0.5, 1.0, -2.0, 0.0, 0.25, -3.5, 1.5, -1.0]
    lines = [f"{i + 1}\t{r}\tsentence {i + 1}, with ''quotes''" for i, r in enumerate(ratings)]
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        _fake_vader_sdist(tmp_path / d / glue_tasks.DEMO_ARCHIVE, lines)
    folder = glue_tasks.prepare_demo_data(tmp_path / "a", n_validation=3)
    again = glue_tasks.prepare_demo_data(tmp_path / "b", n_validation=3)
    assert (folder / "train.csv").read_text() == (again / "train.csv").read_text()
    data, _ = load_task(glue_tasks.csv_task(folder, name="demo"))
    assert len(data["validation"]) == 3 and len(data["train"]) == 7  # the two neutral ratings dropped
    expected = {f"sentence {i + 1}, with ''quotes''": int(r > 0) for i, r in enumerate(ratings) if r != 0}
    for split in ("train", "validation"):
        for text, label in zip(data[split]["text_a"], data[split]["label"]):
            assert expected.pop(text) == label
    assert not expected  # every labelled sentence landed in exactly one split


def test_demo_without_the_archive_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pip download --no-deps --no-binary :all: vadersentiment==3.3.2"):
        get_task("demo", data_dir=tmp_path)


# --------------------------------------------------------------------------- real GLUE files

OFFICIAL_ROWS = {  # /work/shared/glue_data/SOURCES.md
    ("cola", "train"): 8551, ("cola", "validation"): 1043, ("sst2", "train"): 67349, ("sst2", "validation"): 872,
    ("mrpc", "train"): 3668, ("mrpc", "validation"): 408, ("stsb", "train"): 5749, ("stsb", "validation"): 1500,
    ("rte", "train"): 2490, ("rte", "validation"): 277, ("wnli", "train"): 635, ("wnli", "validation"): 71,
    ("qnli", "validation"): 5463, ("qnli", "train"): 104743, ("qqp", "train"): 363846, ("qqp", "validation"): 40430,
    ("mnli", "train"): 392702, ("mnli", "validation_matched"): 9815, ("mnli", "validation_mismatched"): 9832,
}


@pytest.mark.skipif(not os.environ.get("GLUE_DIR") or not Path(os.environ["GLUE_DIR"]).is_dir(),
                    reason="set GLUE_DIR to a GLUE download to check the official row counts")
def test_every_real_glue_file_loads_with_the_official_row_count():
    root = Path(os.environ["GLUE_DIR"])
    checked = 0
    for name in glue_tasks.GLUE_TASKS:
        task = TASKS[name]
        for split, filename in task.splits.items():
            path = root / task.folder / filename
            if not path.is_file():
                continue
            cols, report = read_split(task, split, path, max_bad_fraction=0.0)
            assert report.bad_rows == 0, (path, report.bad_examples)
            assert len(cols["text_a"]) == len(cols["label"]) == OFFICIAL_ROWS[(name, split)], path
            checked += 1
    assert checked > 0, f"GLUE_DIR={root} holds no GLUE task files"


def test_a_custom_task_with_a_test_file_gets_its_ids(tmp_path):
    (tmp_path / "train.csv").write_text("sentence,label\ngood,pos\nbad,neg\n")
    (tmp_path / "dev.csv").write_text("sentence,label\nfine,pos\n")
    (tmp_path / "test.csv").write_text('id,sentence\n40,"nice, really"\n41,awful\n')
    task = get_task(str(tmp_path))
    assert task.test_splits == {"test": "test.csv"} and task.index_column == "id"
    test = glue_tasks.load_test_splits(task)["test"]
    assert test["idx"] == [40, 41] and test["text_a"] == ["nice, really", "awful"]
    (tmp_path / "test.csv").write_text("sentence\nnice\nawful\n")  # no id column: numbered by row
    assert glue_tasks.load_test_splits(get_task(str(tmp_path)))["test"]["idx"] == [0, 1]
