"""Bad inputs, found by property-based tests: empty strings, very long lines, control
characters, invalid UTF-8 and mixed scripts fed to the tokenizer, the corpus reader, the
token file, the sequence loader, the GLUE file reader and the GLUE encoder.

The rule every test checks: the input is either handled (and the output has the shape
the next stage expects) or refused with a ValueError / FileNotFoundError that names the
file. Nothing may fail with an unexplained exception.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import glue_tasks  # noqa: E402
import glue_models  # noqa: E402
import glue_utils  # noqa: E402
import model_defs  # noqa: E402
import corpus  # noqa: E402
from corpus import check_text_file, embedded_corpus_file, iter_corpus_documents  # noqa: E402
from params import (DOC_ID, DOCUMENT_MODES, END_ID, MASK_ID, PAD_ID, SPECIAL_TOKENS, START_ID, FinetuneConfig,  # noqa: E402
                    ModelConfig)
from pretrain_data import SequenceLoader, open_token_file, prepare_token_file, split_tokens  # noqa: E402
from tokenization import load_tokenizer, train_tokenizer  # noqa: E402

VOCAB = 512
CHUNK = corpus.BLOCK_BYTES  # the corpus is read (and checked) in chunks of this many bytes

# --------------------------------------------------------------------------- strategies

MIXED_SCRIPTS = [
    "Hello, world.",
    "Ελληνικά κείμενα",
    "русский текст",
    "中文文本测试",
    "日本語のテキスト",
    "한국어 문장",
    "النص العربي",
    "טקסט עברי",
    "हिन्दी पाठ",
    "ข้อความภาษาไทย",
    "👩‍👩‍👧 🎉🏳️‍🌈",
    "cafe\u0301 naïve",
    "zero\u200bwidth\u200djoiner\ufeff",
    "\u202eoverride\u202c",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ",
    "ﬁ ﬂ ligatures ½ ²",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙",
    "3.14159 2718281828",
]
CONTROL = st.sampled_from(
    [chr(c) for c in range(0x20)] + [chr(c) for c in range(0x7F, 0xA0)] + ["\u2028", "\u2029", "\ufffe", "\uffff"]
)
ANY_CHAR = st.characters(codec="utf-8")  # every code point UTF-8 can encode (no lone surrogates)
LONG_RUN = st.builds(
    lambda unit, n: unit * n, st.sampled_from(["a", "ab ", "中", "é", "\x00", "👍", " ", "9"]), st.integers(1_000, 20_000)
)
FRAGMENT = st.one_of(
    st.just(""),
    st.text(ANY_CHAR, max_size=30),
    st.sampled_from(MIXED_SCRIPTS),
    st.text(CONTROL, min_size=1, max_size=4),
    LONG_RUN,
)
TEXT = st.lists(FRAGMENT, max_size=5).map("".join)


def no_special_literals(text: str) -> bool:
    """The tokenizer matches the special tokens' spellings (e.g. "[MASK]") in raw text, as BERT does."""
    return not any(t in text for t in SPECIAL_TOKENS)


FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-inputs")
    lines = embedded_corpus_file(ROOT / "data").read_text(encoding="utf-8").splitlines()[:300]
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(lines + MIXED_SCRIPTS) + "\n", encoding="utf-8")
    train_tokenizer([corpus], VOCAB, d / "tokenizer.json")
    return d


@pytest.fixture(scope="module")
def tok_path(data_dir):
    return data_dir / "tokenizer.json"


@pytest.fixture(scope="module")
def tok(tok_path):
    return load_tokenizer(tok_path)


# --------------------------------------------------------------------------- tokenizer


@FAST
@given(text=TEXT)
@example(text="")
@example(text="a" * 200_000)
@example(text="\x00\x01\x02\x7f\x85")
def test_tokenizer_encodes_any_text(tok, text):
    ids = tok.encode(text).ids
    assert ids[0] == START_ID and ids[-1] == END_ID
    assert all(0 <= i < VOCAB for i in ids)
    if no_special_literals(text):
        assert START_ID not in ids[1:-1] and END_ID not in ids[1:-1] and PAD_ID not in ids
        # byte-level BPE loses nothing but what NFKC normalisation changes, and one leading
        # space: the tokenizer puts a space before every text that lacks one
        normal = unicodedata.normalize("NFKC", text)
        assert tok.decode(ids) == (normal[1:] if normal.startswith(" ") else normal)


@FAST
@given(a=TEXT, b=TEXT)
def test_tokenizer_encodes_any_sentence_pair(tok, a, b):
    assume(no_special_literals(a + b))
    ids = tok.encode(a, b).ids
    n_a = len(tok.encode(a, add_special_tokens=False).ids)
    assert ids[0] == START_ID and ids[1 + n_a] == DOC_ID and ids[-1] == END_ID
    assert ids.count(DOC_ID) == 1


# --------------------------------------------------------------------------- corpus files


def expected_documents(text: str) -> list[str]:
    """What one-document-per-line reading must give: universal newlines, stripped, blanks dropped."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [line.strip() for line in lines if line.strip()]


def pieces(doc: str) -> list[str]:
    """A document as the token file tokenises it: whole up to corpus.PIECE_CHARS characters, else in
    pieces of at most that many, cut before a space that follows a word where there is one
    (corpus.cut_piece), so that natural text gives the whole's tokens."""
    out = []
    while len(doc) > corpus.PIECE_CHARS:
        cut = corpus.cut_piece(doc)
        assert 0 < cut <= corpus.PIECE_CHARS
        out.append(doc[:cut])
        doc = doc[cut:]
    return out + [doc]


CORPUS_BYTES = st.one_of(
    st.binary(max_size=200),
    TEXT.map(lambda t: t.encode("utf-8")),
    st.tuples(TEXT, st.binary(min_size=1, max_size=3), TEXT).map(lambda p: p[0].encode() + p[1] + p[2].encode()),
)


@FAST
@given(data=CORPUS_BYTES)
@example(data=b"")
@example(data=b"abc\xc3")  # a character cut off by the end of the file
@example(data=b"\xef\xbb\xbfBOM first\r\nwindows\rold mac\n")
@example(data=b"\xed\xa0\x80 encoded surrogate")
@example(data=b"\xc0\xaf overlong")
def test_corpus_file_is_read_or_refused_by_name(data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "corpus.txt"
        path.write_bytes(data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            with pytest.raises(ValueError) as raised:
                list(iter_corpus_documents([path]))
            message = str(raised.value)
            assert str(path) in message and "not valid UTF-8" in message
            assert f"at byte {err.start}" in message, "the position of the first bad byte is reported"
            return
        docs = expected_documents(text)
        if not data:
            with pytest.raises(ValueError, match=f"corpus file {path} is empty"):
                list(iter_corpus_documents([path]))
        elif not docs:
            with pytest.raises(ValueError, match="holds no text"):
                list(iter_corpus_documents([path]))
        else:
            assert list(iter_corpus_documents([path])) == docs


@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_character_split_across_read_chunks_is_valid_utf8(tmp_path, char):
    width = len(char.encode("utf-8"))
    for cut in range(1, width):  # the chunk boundary falls inside the character after `cut` of its bytes
        path = tmp_path / f"split{cut}.txt"
        path.write_bytes(b"a" * (CHUNK - cut) + char.encode("utf-8") * 3 + b" end\n")
        check_text_file(path)
        assert list(iter_corpus_documents([path])) == ["a" * (CHUNK - cut) + char * 3 + " end"]


@pytest.mark.parametrize(
    "tail, position",
    [
        (b"\xe2\x82", CHUNK),  # a character cut off by the end of the file, right after a chunk boundary
        (b"\x82ok\n", CHUNK),  # a stray continuation byte at the start of the second chunk
        (b"ok\xff\n", CHUNK + 2),
    ],
)
def test_bad_bytes_after_the_first_chunk_are_found_and_located(tmp_path, tail, position):
    path = tmp_path / "big.txt"
    path.write_bytes(b"b" * CHUNK + tail)
    with pytest.raises(ValueError, match=f"corpus file {path} is not valid UTF-8: .* at byte {position}$"):
        check_text_file(path)


@FAST
@given(lines=st.lists(TEXT, max_size=8))
@example(lines=[])
@example(lines=["", "   ", "\t\x0b\x0c"])
@example(lines=["x" * 150_000])
@example(lines=MIXED_SCRIPTS)
def test_token_file_holds_every_document_of_any_corpus(tok, tok_path, lines):
    with tempfile.TemporaryDirectory() as d:
        corpus = Path(d) / "weird.txt"
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
        docs = expected_documents("\n".join(lines))
        if not docs:
            with pytest.raises(ValueError, match="holds no text"):
                prepare_token_file([corpus], tok_path, d)
            return
        tokens = open_token_file(prepare_token_file([corpus], tok_path, d, progress=False))
        encoded = [[i for piece in pieces(doc) for i in tok.encode(piece, add_special_tokens=False).ids] for doc in docs]
        assert tokens.tolist() == [i for ids in encoded for i in (*ids, DOC_ID)]
        assert int(tokens.max()) < VOCAB


@FEW
@given(lines=st.lists(TEXT, min_size=1, max_size=6))
@example(lines=["\x00" * 5000, "中" * 3000])
def test_tokenizer_trains_on_any_corpus(lines):
    with tempfile.TemporaryDirectory() as d:
        corpus, out = Path(d) / "c.txt", Path(d) / "tokenizer.json"
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
        if not expected_documents("\n".join(lines)):
            with pytest.raises(ValueError, match=f"{corpus}.* holds no text"):
                train_tokenizer([corpus], 300, out)
            assert not out.exists()
            return
        train_tokenizer([corpus], 300, out)
        trained = load_tokenizer(out)  # the special tokens hold ids 0..4 whatever the text
        assert trained.get_vocab_size() <= 300
        assert trained.token_to_id("[MASK]") == MASK_ID


def blank_line_documents(text: str) -> list[str]:
    """What blank-line reading must give: the runs of non-blank lines, each line stripped, joined by a newline."""
    docs, lines = [], []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") + [""]:
        if line.strip():
            lines.append(line.strip())
        elif lines:
            docs.append("\n".join(lines))
            lines = []
    return docs


@contextlib.contextmanager
def reading_sizes(block: int, piece: int):
    """Tiny reads and pieces, so that a few bytes exercise lines cut by reads and documents in pieces."""
    saved = corpus.BLOCK_BYTES, corpus.PIECE_CHARS
    corpus.BLOCK_BYTES, corpus.PIECE_CHARS = block, piece
    try:
        yield
    finally:
        corpus.BLOCK_BYTES, corpus.PIECE_CHARS = saved


@FAST
@given(
    lines=st.lists(st.one_of(TEXT, st.just(""), st.just("  "), st.text(" ab\tc", max_size=40)), max_size=8),
    ends=st.lists(st.sampled_from(["\n", "\r\n", "\r", "\n\n"]), min_size=8, max_size=8),
    block=st.integers(1, 40),
    piece=st.integers(6, 40),
    mode=st.sampled_from(DOCUMENT_MODES),
)
@example(lines=["a\r", "b"], ends=["\r\n"] * 8, block=1, piece=6, mode="line")
def test_the_reader_gives_the_same_documents_whatever_its_reads_and_resumes_at_any_document(lines, ends, block, piece,
                                                                                           mode):
    """Any text, read a few bytes at a time and served in pieces of a few characters: the pieces of each
    document are those of the whole document (`pieces`), and a reader started at the position after
    any document gives exactly the pieces that follow it."""
    text = "".join(line + end for line, end in zip(lines, ends))
    expected = expected_documents(text) if mode == "line" else blank_line_documents(text)
    with tempfile.TemporaryDirectory() as d, reading_sizes(block, piece):
        path = Path(d) / "c.txt"
        path.write_bytes(text.encode("utf-8"))
        if not text:
            return
        sources = corpus.resolve_sources([path])
        reading = corpus.Reading(documents=mode)
        reader = corpus.CorpusReader(sources, reading)
        served, positions = [], []
        for piece_text, ends_doc in reader:
            served.append((piece_text, ends_doc))
            if ends_doc:
                positions.append((len(served), reader.position))
        docs, parts = [], []
        for piece_text, ends_doc in served:
            parts.append(piece_text)
            if ends_doc:
                docs.append(parts)
                parts = []
        assert ["".join(p) for p in docs] == expected
        assert docs == [pieces(doc) for doc in expected]
        for count, position in positions:
            assert list(corpus.CorpusReader(sources, reading, position)) == served[count:], f"resumed at {position}"


@pytest.mark.parametrize("case", ["jsonl without the column", "jsonl line not JSON", "jsonl text not a string",
                                  "parquet without the column", "parquet column not text", "datasets without the column",
                                  "datasets without the split", "corrupt gz", "bad UTF-8 in gz", "empty file in a folder",
                                  "folder without corpus files", "pattern without matches"])
def test_bad_inputs_in_any_form_are_refused_by_name(case, tmp_path, tok_path):
    """Each is refused, by the token file build and by tokenizer training, with an error naming the file
    (or folder, or pattern), and leaves no token file behind."""
    import gzip

    good = "\n".join(MIXED_SCRIPTS) + "\n"
    if case.startswith("jsonl"):
        path = tmp_path / "c.jsonl"
        bad = {"jsonl without the column": '{"body": "text"}', "jsonl line not JSON": "{not json",
               "jsonl text not a string": '{"text": 5}'}[case]
        path.write_text('{"text": "fine"}\n' * 3 + bad + "\n", encoding="utf-8")
        name = str(path)
    elif case.startswith("parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "c.parquet"
        column = {"parquet without the column": ("body", ["a", "b"]), "parquet column not text": ("text", [1, 2])}[case]
        pq.write_table(pa.table({column[0]: column[1]}), path)
        name = str(path)
    elif case.startswith("datasets"):
        import datasets

        path = tmp_path / "ds"
        if case == "datasets without the column":
            datasets.Dataset.from_dict({"body": ["a", "b"]}).save_to_disk(str(path))
        else:
            datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"text": ["a"]})}).save_to_disk(str(path))
        name = str(path)
    elif case == "corrupt gz":
        path = tmp_path / "c.txt.gz"
        path.write_bytes(gzip.compress(good.encode())[:-12] + b"garbage")
        name = str(path)
    elif case == "bad UTF-8 in gz":
        path = tmp_path / "c.txt.gz"
        path.write_bytes(gzip.compress(good.encode() + b"bad \xff byte\n"))
        name = str(path)
    elif case == "empty file in a folder":
        path = tmp_path / "shards"
        path.mkdir()
        (path / "a.txt").write_text(good, encoding="utf-8")
        (path / "b.txt").write_bytes(b"")
        name = str(path / "b.txt")
    elif case == "folder without corpus files":
        path = tmp_path / "shards"
        path.mkdir()
        (path / "notes.md").write_text(good, encoding="utf-8")
        name = str(path)
    else:
        path = tmp_path / "nothing-*.txt"
        name = str(path)
    for attempt in (lambda: prepare_token_file([str(path)], tok_path, tmp_path / "cache", progress=False),
                    lambda: train_tokenizer([str(path)], 300, tmp_path / "tokenizer.json")):
        with pytest.raises((ValueError, FileNotFoundError)) as err:
            attempt()
        assert name in str(err.value), err.value
    left = [p.name for p in tmp_path.glob("cache/*.tokens*") if not p.name.endswith(".lock")]
    assert not left and not (tmp_path / "tokenizer.json").exists()


# --------------------------------------------------------------------------- loader


@FAST
@given(
    n_tokens=st.integers(0, 400),
    seq_len=st.integers(1, 40),
    val_fraction=st.floats(0.0, 0.9),
    micro=st.integers(1, 5),
    world=st.integers(1, 4),
    start=st.integers(0, 10_000),
)
def test_loader_serves_any_stream_or_refuses_it(n_tokens, seq_len, val_fraction, micro, world, start):
    tokens = (np.arange(n_tokens) % 60000 + len(SPECIAL_TOKENS)).astype(np.uint16)
    n_val = max(seq_len, int(n_tokens * val_fraction))
    if n_tokens - n_val < seq_len:
        with pytest.raises(ValueError, match=f"only {n_tokens} tokens: too few"):
            split_tokens(tokens, val_fraction, seq_len)
        return
    train, val = split_tokens(tokens, val_fraction, seq_len)
    assert len(val) >= seq_len and len(train) >= seq_len and len(train) + len(val) == n_tokens
    loader = SequenceLoader(train, seq_len, seed=start)
    loader.position = start
    whole = loader.sequences(start, micro * world)
    parts = []
    for rank in range(world):
        loader.position = start
        parts.append(loader.next_batch(micro, rank, world))
        assert loader.position == start + micro * world
    assert torch.equal(torch.cat(parts), whole), "ranks' shares are disjoint and add up to one process's batch"
    assert whole.shape == (micro * world, seq_len + 2)
    assert (whole[:, 0] == START_ID).all() and (whole[:, -1] == END_ID).all()
    for row in whole[:, 1:-1]:  # every sequence is one contiguous window of the stream
        first = int(row[0]) - len(SPECIAL_TOKENS)
        assert first % seq_len == 0 and row.tolist() == train[first : first + seq_len].tolist()


def test_too_short_stream_and_foreign_loader_state_are_refused():
    with pytest.raises(ValueError, match="fewer than one sequence"):
        SequenceLoader(np.zeros(5, dtype=np.uint16), 16)
    loader = SequenceLoader(np.arange(100, dtype=np.uint16), 10, seed=1)
    with pytest.raises(ValueError, match="same corpus, tokenizer and seed"):
        loader.load_state_dict({"position": 3, "seed": 1, "n_windows": 11})


# --------------------------------------------------------------------------- GLUE files and encoders

@pytest.fixture(scope="module")
def glue_model(tmp_path_factory, tok_path):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, n_layers=1, d_model=32, n_heads=2, d_ff=64, seq_len=30)
    model_dir = tmp_path_factory.mktemp("glue-model") / "final"
    model_defs.save_model(model_defs.DitBertForMLM(cfg), model_dir)
    ft = FinetuneConfig(max_len=130)
    single = glue_models.load_for_task(glue_models.ditbert_source(str(model_dir), str(tok_path), "t"), glue_tasks.TASKS["sst2"], ft, 0)
    pair = glue_models.load_for_task(glue_models.ditbert_source(str(model_dir), str(tok_path), "t"), glue_tasks.TASKS["rte"], ft, 0)
    return single, pair, cfg.max_positions


# Pairs whose second text is short: the tokenizers library's pair truncation builds every
# combination of overflowing pieces, so two long texts are tested apart, in a subprocess.
SHORT_TEXT = st.lists(st.one_of(st.text(ANY_CHAR, max_size=30), st.sampled_from(MIXED_SCRIPTS), st.text(CONTROL, max_size=3)),
                      max_size=3).map("".join)


@FAST
@given(texts_a=st.lists(TEXT, min_size=1, max_size=4), texts_b=st.lists(SHORT_TEXT, min_size=4, max_size=4), pair=st.booleans())
@example(texts_a=[""], texts_b=[""] * 4, pair=True)
@example(texts_a=["x" * 100_000, "中" * 5000], texts_b=["", "\x00" * 30, "a", "b"], pair=True)
def test_glue_encoder_feeds_the_model_any_text(glue_model, texts_a, texts_b, pair):
    single, paired, max_positions = glue_model
    loaded = paired if pair else single
    texts_b = texts_b[: len(texts_a)] if pair else None
    assume(no_special_literals("".join(texts_a + (texts_b or []))))
    enc = loaded.encode(texts_a, texts_b)
    assert len(enc["input_ids"]) == len(texts_a)
    for ids in enc["input_ids"]:
        assert 2 <= len(ids) <= max_positions, "truncated to the model's positions"
        assert ids[0] == START_ID and ids[-1] == END_ID
        assert all(0 <= i < VOCAB for i in ids)
        assert ids.count(DOC_ID) == (1 if pair else 0)
    enc["labels"] = [0] * len(texts_a)
    batch = glue_utils.collate(enc, list(range(len(texts_a))), loaded.pad_id, regression=False)
    loaded.model.eval()
    with torch.no_grad():
        logits = loaded.model(batch["input_ids"], batch["attention_mask"])
    assert logits.shape == (len(texts_a), 2) and torch.isfinite(logits).all()


LONG_PAIR_CHILD = """
import resource, sys
sys.path.insert(0, sys.argv[1])
import glue_tasks
import glue_models
from params import FinetuneConfig
loaded = glue_models.load_for_task(glue_models.ditbert_source(sys.argv[2], sys.argv[3], "t"),
                                  glue_tasks.TASKS["rte"], FinetuneConfig(max_len=130), 0)
with open("/proc/self/status") as fh:
    vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), vm + (2 << 30)))  # 2 GiB more than now
ids = loaded.encode(["premise " * 20000], ["hypothesis " * 3000])["input_ids"]
print("LENGTH", len(ids[0]))
"""


def test_glue_encoder_truncates_a_long_sentence_pair_in_bounded_memory(glue_model, tmp_path):
    """A custom task with long documents on both sides: 20,000 words + 3,000 words."""
    _, paired, max_positions = glue_model
    model_dir = paired.info["source"]
    run = subprocess.run(
        [sys.executable, "-c", LONG_PAIR_CHILD, str(ROOT), model_dir, paired.info["tokenizer"]],
        capture_output=True, text=True, timeout=300,
    )
    rc, last_error_line = run.returncode, (run.stderr.strip().splitlines() or [""])[-1]
    assert rc == 0, f"encoding one long sentence pair exhausted 2 GiB of memory (exit {rc}): {last_error_line}"
    assert f"LENGTH {max_positions}" in run.stdout


TSV_FIELD = st.one_of(TEXT, st.text(CONTROL, max_size=3), st.sampled_from(MIXED_SCRIPTS))


@FAST
@given(
    rows=st.lists(st.tuples(TSV_FIELD, st.sampled_from(["0", "1"])), min_size=1, max_size=6),
    junk=st.one_of(st.just(b""), st.binary(min_size=1, max_size=3)),
)
@example(rows=[("caf\u00e9", "1")], junk=b"\xff")
def test_glue_file_is_read_or_refused_by_name(rows, junk):
    task = glue_tasks.TASKS["sst2"]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "train.tsv"
        body = "sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows)
        path.write_bytes(body.encode("utf-8") + junk)
        try:
            cols, report = glue_tasks.read_split(task, "train", path)
        except (ValueError, FileNotFoundError) as err:
            assert str(path) in str(err), f"the error names the file: {err}"
            return
        assert report.rows >= 1 and len(cols["text_a"]) == len(cols["label"]) == report.rows
        assert all(text.strip() for text in cols["text_a"])
        assert set(cols["label"]) <= {0, 1}


@pytest.mark.parametrize(
    "content",
    [b"", b"sentence\tlabel\n", b"sentence\tlabel\nfine\t1\nbad \xff byte\t0\n", b"sentence\tlabel\n" + b"y" * 200_000 + b"\t1\n"],
    ids=["empty file", "header only", "invalid UTF-8", "200k-character field"],
)
def test_glue_file_edge_cases_name_the_file(tmp_path, content):
    path = tmp_path / "train.tsv"
    path.write_bytes(content)
    task = glue_tasks.TASKS["sst2"]
    try:
        cols, report = glue_tasks.read_split(task, "train", path)
    except (ValueError, FileNotFoundError) as err:
        assert str(path) in str(err)
    else:
        assert report.rows >= 1 and len(cols["text_a"]) == report.rows, "a split without rows is an error"
