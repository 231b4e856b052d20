"""The corpus at scale: every form of corpus gives the tokens of the same text as a .txt file, the
token file build resumes after kill -9 to the same bytes, a 20 MB line builds in bounded memory, a
cached token file is found without reading the corpus, tokenizer training on a sample and on a
one-line corpus, uint32 tokens, a token file past 4 GB and the window order that holds no table."""

from __future__ import annotations

import builtins
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import corpus
import pretrain_data
from corpus import CorpusReader, Reading, iter_corpus_documents, resolve_sources
from params import DOC_ID, MASK_ID, DataConfig
from pretrain_data import (FULL_ORDER_MAX_WINDOWS, SequenceLoader, corpus_fingerprint, feistel_order,
                           open_token_file, prepare_token_file)
from tokenization import TrainingText, load_tokenizer, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def quiet(**settings) -> DataConfig:
    return DataConfig(**settings)


def build(files, tok, cache, progress=False, **settings) -> np.ndarray:
    return np.asarray(open_token_file(prepare_token_file([str(f) for f in files], tok, cache, quiet(**settings),
                                                         progress=progress)))


def expected_tokens(tok_path, docs: list[str]) -> list[int]:
    tok = load_tokenizer(tok_path)
    return [i for doc in docs for i in (*tok.encode(doc, add_special_tokens=False).ids, DOC_ID)]


@pytest.fixture(scope="module")
def lines(tiny_corpus) -> list[str]:
    """120 documents, some with surrounding spaces, with blank lines between some of them."""
    docs = tiny_corpus.read_text(encoding="utf-8").splitlines()[:120]
    return [f"  {d}\t" if i % 7 == 0 else d for i, d in enumerate(docs)]


@pytest.fixture(scope="module")
def as_txt(tmp_path_factory, lines) -> Path:
    path = tmp_path_factory.mktemp("txt") / "corpus.txt"
    path.write_text("".join(line + ("\n\n" if i % 5 == 0 else "\n") for i, line in enumerate(lines)), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the forms of a corpus


def write_form(form: str, folder: Path, lines: list[str]) -> str:
    """The corpus `lines` (one document each) written as `form`; returns the data.corpus entry."""
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    jsonl = "".join(json.dumps({"id": i, "text": line}) + "\n" for i, line in enumerate(lines))
    if form == "jsonl":
        (folder / "c.jsonl").write_text(jsonl, encoding="utf-8")
        return str(folder / "c.jsonl")
    if form == "txt.gz":
        (folder / "c.txt.gz").write_bytes(gzip.compress(text.encode()))
        return str(folder / "c.txt.gz")
    if form in ("txt.zst", "jsonl.zst"):
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, "zstd") as out:
            out.write((text if form == "txt.zst" else jsonl).encode())
        (folder / f"c.{form}").write_bytes(sink.getvalue().to_pybytes())
        return str(folder / f"c.{form}")
    if form == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"id": list(range(len(lines))), "text": lines})
        pq.write_table(table, folder / "c.parquet", row_group_size=25)  # several row groups
        return str(folder / "c.parquet")
    if form in ("folder", "glob"):
        shards = folder / "shards"
        (shards / "sub").mkdir(parents=True)
        third = len(lines) // 3
        (shards / "a.txt").write_text("\n".join(lines[:third]) + "\n", encoding="utf-8")
        (shards / "b.jsonl.gz").write_bytes(gzip.compress("".join(
            json.dumps({"text": line}) + "\n" for line in lines[third : 2 * third]).encode()))
        (shards / "sub" / "c.txt").write_text("\n".join(lines[2 * third:]) + "\n", encoding="utf-8")
        (shards / "README.md").write_text("not a shard\n")  # a folder contributes its corpus files only
        return str(shards) if form == "folder" else str(shards / "**" / "*.*[tz]")
    if form == "datasets":
        import datasets

        datasets.Dataset.from_dict({"text": lines, "n": list(range(len(lines)))}).save_to_disk(str(folder / "ds"))
        return str(folder / "ds")
    raise KeyError(form)


@pytest.mark.parametrize("form", ["jsonl", "txt.gz", "txt.zst", "jsonl.zst", "parquet", "folder", "glob", "datasets"])
def test_every_form_gives_the_tokens_of_the_same_text_as_a_txt_file(form, tmp_path, lines, as_txt, tiny_tokenizer):
    reference = build([as_txt], tiny_tokenizer, tmp_path / "txt-cache")
    assert reference.tolist() == expected_tokens(tiny_tokenizer, [line.strip() for line in lines])
    entry = write_form(form, tmp_path / form, [line.strip() for line in lines])
    tokens = build([entry], tiny_tokenizer, tmp_path / "cache")
    assert tokens.tolist() == reference.tolist()
    assert list(iter_corpus_documents([entry])) == [line.strip() for line in lines]
    # found again without a rebuild
    again = prepare_token_file([entry], tiny_tokenizer, tmp_path / "cache", quiet(), progress=False)
    assert len(list((tmp_path / "cache").glob("*.tokens"))) == 1 and again.is_file()


def test_a_dataset_read_through_load_dataset_streams_and_resumes(tmp_path, lines, as_txt, tiny_tokenizer, monkeypatch):
    """hf:<name> goes through datasets.load_dataset(streaming=True), as a hub dataset would; here the name
    is a local folder of JSON lines, read offline. Its identity is its name: found again without reading."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "hub-like"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": line.strip()}) + "\n" for line in lines))
    entry = f"hf:{folder}"
    reference = build([as_txt], tiny_tokenizer, tmp_path / "txt-cache")
    path = prepare_token_file([entry], tiny_tokenizer, tmp_path / "cache", quiet(), progress=False)
    assert open_token_file(path).tolist() == reference.tolist()
    sources = resolve_sources([entry])
    assert list(CorpusReader(sources, start=(0, 7))) == [(line.strip(), True) for line in lines[7:]]
    monkeypatch.setattr(corpus, "_dataset_units", None)  # reading it now would fail
    assert prepare_token_file([entry], tiny_tokenizer, tmp_path / "cache", quiet(), progress=False) == path


def test_a_folder_entry_writes_its_token_file_beside_the_folder(tmp_path, lines, tiny_tokenizer):
    entry = Path(write_form("folder", tmp_path / "f", lines))
    path = prepare_token_file([str(entry)], tiny_tokenizer, data=quiet(), progress=False)
    assert path.parent == entry.parent and path.name.startswith("shards.")
    names = [s.path.name for s in resolve_sources([str(entry)])]
    assert names == ["a.txt", "b.jsonl.gz", "c.txt"], "the token file went into the folder of shards"


def test_blank_line_documents(tmp_path, tiny_tokenizer):
    path = tmp_path / "paragraphs.txt"
    path.write_text("First line of one.\n  Second line of one.  \n\n\n\tOnly line of two.\n\nThree\nthree again\n",
                    encoding="utf-8")
    docs = ["First line of one.\nSecond line of one.", "Only line of two.", "Three\nthree again"]
    assert list(iter_corpus_documents([path], Reading(documents="blank_line"))) == docs
    tokens = build([path], tiny_tokenizer, tmp_path / "c", documents="blank_line")
    assert tokens.tolist() == expected_tokens(tiny_tokenizer, docs)
    by_line = prepare_token_file([path], tiny_tokenizer, tmp_path / "c", quiet(), progress=False)
    assert open_token_file(by_line).tolist() != tokens.tolist(), "the document mode is part of the token file's identity"


def test_a_long_line_comes_in_pieces_that_tokenise_as_the_whole(tmp_path, tiny_corpus, tiny_tokenizer, monkeypatch):
    monkeypatch.setattr(corpus, "PIECE_CHARS", 2000)
    words = " ".join(tiny_corpus.read_text(encoding="utf-8").splitlines()[:40])
    path = tmp_path / "long.txt"
    path.write_text(f"short one\n   {words}   \nshort two\n", encoding="utf-8")
    pieces = list(CorpusReader(resolve_sources([path])))
    assert len(pieces) > 10 and all(len(text) <= 2000 for text, _ in pieces)
    assert [ends for _, ends in pieces].count(True) == 3
    assert "".join(text for text, _ in pieces[1:-1]) == words
    assert all(text[0] == " " for text, _ in pieces[2:-1]), "a piece starts with the space before a word"
    tokens = build([path], tiny_tokenizer, tmp_path / "c")
    assert tokens.tolist() == expected_tokens(tiny_tokenizer, ["short one", words, "short two"])


# --------------------------------------------------------------------------- a build stopped and resumed

BUILD_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from params import DataConfig
from pretrain_data import prepare_token_file
prepare_token_file([sys.argv[2]], sys.argv[3], sys.argv[4], DataConfig(workers=2, commit_seconds=0), progress=False)
"""


def processes_running(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_build_killed_mid_way_resumes_to_the_same_bytes(tmp_path, tiny_corpus, tiny_tokenizer, capsys):
    """kill -9 of the building process (and so of its workers) after its first commit: the next build
    starts at the committed position and ends with the bytes of a build never stopped."""
    docs = tiny_corpus.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "big.txt"
    path.write_text("\n".join(docs * 12) + "\n", encoding="utf-8")  # about 6 jobs of 1M characters
    cache = tmp_path / "killed"
    marker = str(cache)
    child = subprocess.Popen([sys.executable, "-c", BUILD_CHILD, str(ROOT), str(path), str(tiny_tokenizer), marker],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(cache.glob("*.tokens.progress.json")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.poll() is None, f"the build ended before it could be killed: {child.stderr.read().decode()[-2000:]}"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not list(cache.glob("*.tokens")), "the build finished before the kill"
    committed = json.loads(next(cache.glob("*.tokens.progress.json")).read_text())
    assert 0 < committed["bytes"] <= next(cache.glob("*.tokens.partial")).stat().st_size
    deadline = time.monotonic() + 10
    while processes_running(marker) and time.monotonic() < deadline:  # the workers see their parent gone
        time.sleep(0.1)
    assert not processes_running(marker), "worker processes outlived the killed build"

    capsys.readouterr()
    resumed = prepare_token_file([path], tiny_tokenizer, cache, quiet(workers=2), progress=True)
    out = capsys.readouterr().out
    assert "resuming at" in out and f"{committed['n_tokens']:,} tokens done" in out
    assert not list(cache.glob("*.partial")) and not list(cache.glob("*.progress.json"))
    whole = prepare_token_file([path], tiny_tokenizer, tmp_path / "whole", quiet(workers=1), progress=False)
    assert resumed.read_bytes() == whole.read_bytes()
    assert np.array_equal(np.load(resumed.with_suffix(".tokens.counts.npy")),
                          np.bincount(open_token_file(whole), minlength=load_tokenizer(tiny_tokenizer).get_vocab_size()))
    meta = json.loads(resumed.with_suffix(".tokens.json").read_text())
    assert meta["n_documents"] == len(docs) * 12


def test_the_build_shows_documents_tokens_per_second_and_time_left(tmp_path, as_txt, tiny_tokenizer, capsys):
    prepare_token_file([as_txt], tiny_tokenizer, tmp_path, quiet(), progress=True)
    captured = capsys.readouterr()
    assert "tokenising" in captured.err and "tokens/s" in captured.err and "docs" in captured.err
    assert "<00:00" in captured.err or "<?" in captured.err  # tqdm's time left
    assert "wrote" in captured.out and "tokens/s" in captured.out


# --------------------------------------------------------------------------- bounded memory

LONG_LINE_CHILD = """
import resource, sys
sys.path.insert(0, sys.argv[1])
from params import DataConfig
from pretrain_data import open_token_file, prepare_token_file
from tokenization import load_tokenizer

def rss(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field))

load_tokenizer(sys.argv[3]).encode_batch(["warm up the tokenizer's threads"] * 64)
before = rss("VmRSS:")
path = prepare_token_file([sys.argv[2]], sys.argv[3], sys.argv[4], DataConfig(workers=1), progress=False)
tokens = open_token_file(path)
print("GROWTH", rss("VmHWM:") - before, "TOKENS", len(tokens), "DOCS", int((tokens == 4).sum()))
"""


def test_a_20_mb_line_builds_in_bounded_memory(tmp_path, tiny_corpus):
    """One 20 MB line (the whole-line build took 2.9 GB): the peak memory of the building process
    grows by far less than the line's tokens would take held whole."""
    text = " ".join(tiny_corpus.read_text(encoding="utf-8").splitlines())
    line = (text + " ") * (20_000_000 // (len(text) + 1) + 1)
    path = tmp_path / "one-line.txt"
    path.write_text(line[:20_000_000].rstrip() + "\n", encoding="utf-8")
    tok = tmp_path / "tokenizer.json"
    train_tokenizer([tiny_corpus], 4096, tok)  # a real vocabulary: about 4 bytes a token
    run = subprocess.run([sys.executable, "-c", LONG_LINE_CHILD, str(ROOT), str(path), str(tok), str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    fields = run.stdout.split()
    growth, n_tokens, n_docs = (int(fields[fields.index(k) + 1]) for k in ("GROWTH", "TOKENS", "DOCS"))
    assert n_docs == 1 and n_tokens > 3_000_000
    print(f"the build grew the process by {growth / 2**20:.0f} MB")
    assert growth < 200 * 2**20, f"building grew the process by {growth / 2**20:.0f} MB"


# --------------------------------------------------------------------------- the cache reads no text


@pytest.fixture
def opened(monkeypatch):
    """The paths opened through open() (builtins and io, which pathlib uses) while the fixture is active."""
    seen = []
    real = io.open

    def spy(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            seen.append(Path(file).resolve())
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)
    return seen


def test_an_existing_token_file_is_found_without_reading_the_corpus(tmp_path, tiny_corpus, tiny_tokenizer, opened):
    path = tmp_path / "c.txt"
    path.write_bytes(tiny_corpus.read_bytes())
    cache = tmp_path / "cache"
    first = prepare_token_file([path], tiny_tokenizer, cache, quiet(), progress=False)
    assert path.resolve() in opened  # the spy sees the build read it
    pretrain_data._FINGERPRINTS.clear()  # as in a new process
    seen = opened
    seen.clear()
    assert prepare_token_file([path], tiny_tokenizer, cache, quiet(), progress=False) == first
    assert corpus_fingerprint([path], cache) == json.loads(first.with_suffix(".tokens.json").read_text())["fingerprint"]
    assert path.resolve() not in seen, "the cache hit read the corpus"
    assert first.with_suffix(".tokens.json").resolve() in seen  # it read the record instead

    # touched: hashed once again, found by its contents, not tokenised again
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    seen.clear()
    assert prepare_token_file([path], tiny_tokenizer, cache, quiet(), progress=False) == first
    assert path.resolve() in seen and not list(cache.glob("*.partial"))
    seen.clear()
    assert prepare_token_file([path], tiny_tokenizer, cache, quiet(), progress=False) == first
    assert path.resolve() not in seen, "the new record of the touched file was not kept"

    # the same size and modification time, other contents: the change time tells it
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[:5] = b"XXXXX" if data[:5] != b"XXXXX" else b"YYYYY"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert prepare_token_file([path], tiny_tokenizer, cache, quiet(), progress=False) != first


def test_a_changed_tokenizer_or_reading_setting_builds_another_file(tmp_path, as_txt, tiny_tokenizer):
    cache = tmp_path / "cache"
    first = prepare_token_file([as_txt], tiny_tokenizer, cache, quiet(), progress=False)
    other_tok = tmp_path / "tok.json"
    other_tok.write_bytes(tiny_tokenizer.read_bytes().replace(b'"dropout":null', b'"dropout":null ', 1))
    assert prepare_token_file([as_txt], other_tok, cache, quiet(), progress=False) != first
    assert prepare_token_file([as_txt], tiny_tokenizer, cache, quiet(documents="blank_line"), progress=False) != first
    assert prepare_token_file([as_txt], tiny_tokenizer, cache, quiet(workers=1, commit_seconds=5), progress=False) == first


# --------------------------------------------------------------------------- the tokenizer


def test_a_one_line_corpus_trains_a_tokenizer_through_the_notebook(tmp_path):
    corpus_file = tmp_path / "one.txt"
    corpus_file.write_text("A single line of text is the whole corpus here, with a few words.\n", encoding="utf-8")
    tokenizer = tmp_path / "tokenizer.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DITBERT_")}
    env.update(DITBERT_PRESET="tiny", DITBERT_SET=f"data.corpus={corpus_file};tokenizer.vocab_size=300;"
               f"train.tokenizer={tokenizer}")
    run = subprocess.run([sys.executable, str(ROOT / "Train-Tokenizer.py")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "no documents held out" in run.stdout
    assert load_tokenizer(tokenizer).token_to_id("[MASK]") == MASK_ID


def test_the_held_out_documents_are_at_most_a_tenth_of_the_corpus(tmp_path, tiny_corpus):
    docs = tiny_corpus.read_text(encoding="utf-8").splitlines()[:35]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    held = []
    train_tokenizer([path], 300, tmp_path / "t.json", holdout_docs=200, held_out=held)
    assert held == docs[-3:]


def test_the_trainer_sees_a_sample_spread_over_the_corpus(tmp_path, tiny_corpus):
    """With sample_bytes a fifth of the corpus, about a fifth of the documents reach the trainer,
    never more than sample_bytes, drawn from its beginning, middle and end alike."""
    words = tiny_corpus.read_text(encoding="utf-8").split()
    docs = [f"document {i}: " + " ".join(words[i * 7 % 5000 : i * 7 % 5000 + 12]) for i in range(3000)]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    total = sum(len(d.encode()) for d in docs[:-20])
    text = TrainingText([path], holdout_docs=20, sample_bytes=total // 5)
    fed = list(text)
    assert text.n_documents == len(docs) and text.n_held == 20 and text.held_out == docs[-20:]
    assert 0.8 * total // 5 < sum(len(t.encode()) for t in fed) <= total // 5
    where = [int(t.split()[1][:-1]) for t in fed]
    assert max(where) < len(docs) - 20, "a held-out document was fed"
    thirds = np.bincount(np.array(where) * 3 // (len(docs) - 20), minlength=3)
    assert thirds.min() > 0.75 * thirds.max(), thirds
    assert list(TrainingText([path], holdout_docs=20)) == docs[:-20], "a corpus within sample_bytes is fed whole"
    assert list(TrainingText([path], max_docs=7)) == docs[:7]


# --------------------------------------------------------------------------- large vocabularies and files


def test_a_vocabulary_above_65535_gives_uint32_tokens(tmp_path, tiny_tokenizer):
    tok = load_tokenizer(tiny_tokenizer)
    tok.add_tokens([f"zqx{i}zqx" for i in range(66_000)])
    big = tmp_path / "big.json"
    tok.save(str(big))
    assert load_tokenizer(big).get_vocab_size() > 1 << 16
    path = tmp_path / "c.txt"
    path.write_text("plain words zqx65990zqx and zqx7zqx\nmore words\n", encoding="utf-8")
    out = prepare_token_file([path], big, tmp_path, quiet(), progress=False)
    assert json.loads(out.with_suffix(".tokens.json").read_text())["dtype"] == "uint32"
    tokens = open_token_file(out)
    assert tokens.tolist() == expected_tokens(big, ["plain words zqx65990zqx and zqx7zqx", "more words"])
    assert int(tokens.max()) > 1 << 16


def test_a_token_file_past_4_gb_is_read_where_it_ends(tmp_path):
    """A sparse 4.4 GB file of uint16 tokens: windows past byte 2^32 (token 2^31) come back intact, in
    the order that holds no table (34M windows)."""
    n_tokens = 2_200_000_000
    path = tmp_path / "huge.tokens"
    with open(path, "wb") as fh:
        fh.truncate(n_tokens * 2)
        fh.seek((n_tokens - 256) * 2)
        fh.write(np.arange(5, 261, dtype=np.uint16).tobytes())
    path.with_suffix(".tokens.json").write_text(json.dumps({"dtype": "uint16", "n_tokens": n_tokens}))
    tokens = open_token_file(path)
    loader = SequenceLoader(tokens, 128, seed=1)
    assert loader.order == "feistel" and loader.n_windows > FULL_ORDER_MAX_WINDOWS
    last = loader.n_windows - 1  # tokens 2,199,999,872 .. 2,199,999,999, past byte 2^32
    in_order = SequenceLoader(tokens, 128, shuffle=False)
    assert in_order.sequences(last, 1)[0, 1:-1].tolist() == list(range(5 + 128, 261))
    assert in_order.sequences(last + 1, 1)[0, 1:-1].sum() == 0, "after the last window the stream starts again"
    windows = loader.windows(10_000_000, 512)
    assert (windows < loader.n_windows).all() and len(set(windows.tolist())) == 512
    far = [10_000_000 + i for i in np.flatnonzero(windows * 128 >= 1 << 31)[:4]]
    assert far, "no window past token 2^31 among 512 drawn"
    for position in far:  # read through the shuffled loader: the sparse middle reads as zeros
        assert loader.sequences(position, 1)[0, 1:-1].tolist() == [0] * 128


# --------------------------------------------------------------------------- the window order


@pytest.mark.parametrize("n", [1, 2, 3, 17, 1000, 4097])
def test_the_feistel_order_is_a_permutation_drawn_from_seed_and_epoch(n):
    order = feistel_order(np.arange(n), n, seed=3, epoch=0)
    assert sorted(order.tolist()) == list(range(n))
    assert np.array_equal(order, feistel_order(np.arange(n), n, seed=3, epoch=0))
    if n >= 17:
        assert np.array_equal(order[5:9], feistel_order(np.arange(5, 9), n, 3, 0)), "any place on its own"
        assert not np.array_equal(order, feistel_order(np.arange(n), n, seed=3, epoch=1))
        assert not np.array_equal(order, feistel_order(np.arange(n), n, seed=4, epoch=0))
        assert not np.array_equal(order, np.arange(n))


def test_a_loader_in_feistel_order_visits_every_window_and_resumes():
    tokens = np.arange(1000, dtype=np.uint16) + 5
    a = SequenceLoader(tokens, 10, seed=3, order="feistel")
    epoch1, epoch2 = a.next_batch(100)[:, 1], a.next_batch(100)[:, 1]
    assert sorted(epoch1.tolist()) == sorted(epoch2.tolist()) == [5 + 10 * i for i in range(100)]
    assert epoch1.tolist() != epoch2.tolist()
    b = SequenceLoader(tokens, 10, seed=3)
    assert b.order == "permutation"
    b.load_state_dict(a.state_dict())
    assert b.order == "feistel" and torch.equal(a.next_batch(16), b.next_batch(16))


def test_a_checkpoint_without_an_order_keeps_numpys_permutation():
    """Checkpoints from before the Feistel order drew numpy's permutation: a resumed run keeps it."""
    tokens = np.arange(1000, dtype=np.uint16) + 5
    loader = SequenceLoader(tokens, 10, seed=3, order="feistel")
    loader.load_state_dict({"position": 7, "seed": 3, "n_windows": 100})
    expected = np.random.default_rng([3, 0]).permutation(100)[7:11]
    assert loader.order == "permutation" and loader.windows(7, 4).tolist() == expected.tolist()
