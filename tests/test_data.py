"""Tokenizer training, corpus checks, the token file and the sequence loader."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import glue_tasks
from corpus import corpus_files, iter_corpus_documents
from params import DOC_ID, END_ID, SPECIAL_TOKENS, START_ID
from pretrain_data import SequenceLoader, open_token_file, prepare_token_file, split_tokens
from tokenization import load_tokenizer, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_special_tokens_hold_ids_0_to_4_and_round_trip(tiny_tokenizer):
    tok = load_tokenizer(tiny_tokenizer)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tok.get_vocab_size() == 600
    text = "Paris has 2,148,271 inhabitants — café, naïve 東京."
    assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text
    digits = tok.encode("in 12345", add_special_tokens=False).tokens
    assert digits[-5:] == ["1", "2", "3", "4", "5"], "digits are not split one by one"
    pair = tok.encode("a b", "c")
    assert pair.ids[0] == START_ID and pair.ids[-1] == END_ID and DOC_ID in pair.ids


def test_a_word_is_the_same_tokens_at_the_start_of_a_text_as_inside_it(tiny_tokenizer):
    tok = load_tokenizer(tiny_tokenizer)
    for word in ["Paris", "river", "Viewed", "Comes"]:
        alone = tok.encode(f"{word} and", add_special_tokens=False).ids
        inside = tok.encode(f"and {word} and", add_special_tokens=False).ids
        assert alone == inside[-len(alone):], (word, alone, inside)
        assert tok.decode(alone) == f"{word} and"


def test_tokenizer_without_special_tokens_is_refused(tmp_path, tiny_corpus):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train([str(tiny_corpus)], trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"]))
    path = tmp_path / "other.json"
    tok.save(str(path))
    with pytest.raises(ValueError, match=r"other.json lacks DitBERT's special token \[PAD\]"):
        load_tokenizer(path)
    (tmp_path / "broken.json").write_text("{ not json")
    with pytest.raises(ValueError, match="broken.json is not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        load_tokenizer(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"\n   \n\t\n", "holds no text"),
        (b"good line\nbad \xff\xfe byte\n", "not valid UTF-8: invalid start byte at byte 14"),
    ],
)
def test_bad_corpus_files_get_clear_errors(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        list(iter_corpus_documents([path]))
    assert "corpus" in str(err.value)


def test_a_bad_file_is_reported_before_any_work(tmp_path, tiny_corpus):
    out = tmp_path / "tok.json"
    out.write_text("previous tokenizer")
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        train_tokenizer([tiny_corpus, tmp_path / "nothere.txt"], 300, out)
    assert out.read_text() == "previous tokenizer", "an earlier output was overwritten"


def test_multibyte_character_across_read_chunks_is_valid(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_text("a" + "é" * (1 << 20) + "\n", encoding="utf-8")  # 2 MiB from an odd offset: reads split a character
    assert len(list(iter_corpus_documents([path]))) == 1


def test_token_file_is_built_once_and_rebuilt_when_the_corpus_changes(tmp_path, tiny_corpus, tiny_tokenizer):
    my_corpus = tmp_path / "c.txt"
    my_corpus.write_bytes(tiny_corpus.read_bytes())
    first = prepare_token_file([my_corpus], tiny_tokenizer)
    assert first.parent == tmp_path, "the token file is cached beside the corpus"
    meta = json.loads(first.with_suffix(".tokens.json").read_text())
    assert meta["dtype"] == "uint16"
    mtime = first.stat().st_mtime_ns
    assert prepare_token_file([my_corpus], tiny_tokenizer) == first and first.stat().st_mtime_ns == mtime
    tokens = open_token_file(first)
    tok = load_tokenizer(tiny_tokenizer)
    first_doc = my_corpus.read_text(encoding="utf-8").splitlines()[0]
    expected = tok.encode(first_doc, add_special_tokens=False).ids + [DOC_ID]
    assert tokens[: len(expected)].tolist() == expected
    n_docs = len(my_corpus.read_text(encoding="utf-8").splitlines())
    assert n_docs == 300 and (tokens == DOC_ID).sum() == n_docs, "one [DOC] after every document"
    with open(my_corpus, "a", encoding="utf-8") as fh:
        fh.write("One more document.\n")
    second = prepare_token_file([my_corpus], tiny_tokenizer)
    assert second != first and len(open_token_file(second)) > len(tokens)


def test_a_corpus_listed_twice_enters_the_stream_twice(tmp_path, tiny_corpus, tiny_tokenizer):
    """How a mix is weighted (data.embedded=wiki,wiki,imdb): each listing is one more pass of that
    file through the token stream, and the repeated list gets its own token file."""
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    lines = tiny_corpus.read_text(encoding="utf-8").splitlines()
    a.write_text("\n".join(lines[:100]) + "\n", encoding="utf-8")
    b.write_text("\n".join(lines[100:150]) + "\n", encoding="utf-8")
    once_path, twice_path = prepare_token_file([a, b], tiny_tokenizer), prepare_token_file([a, a, b], tiny_tokenizer)
    assert twice_path != once_path
    once, twice = open_token_file(once_path), open_token_file(twice_path)
    n_a = int(np.flatnonzero(once == DOC_ID)[99]) + 1  # a's tokens, its 100 [DOC] marks included
    assert len(twice) == len(once) + n_a
    assert twice[:n_a].tolist() == twice[n_a : 2 * n_a].tolist() == once[:n_a].tolist()
    assert twice[2 * n_a :].tolist() == once[n_a:].tolist()


def make_loader(n_tokens=1000, seq_len=10, seed=3):
    return SequenceLoader(np.arange(n_tokens, dtype=np.uint16) + 5, seq_len, seed=seed)


def test_loader_frames_contiguous_windows():
    loader = make_loader()
    batch = loader.next_batch(4)
    assert batch.shape == (4, 12) and batch.dtype == torch.int64
    assert (batch[:, 0] == START_ID).all() and (batch[:, -1] == END_ID).all()
    body = batch[:, 1:-1]
    assert (body[:, 1:] - body[:, :-1] == 1).all(), "a window is not a contiguous slice of the stream"
    assert ((body[:, 0] - 5) % 10 == 0).all()
    assert loader.position == 4


def test_loader_visits_every_window_once_per_epoch_and_reshuffles():
    loader = make_loader()
    epoch1 = loader.next_batch(100)[:, 1]
    epoch2 = loader.next_batch(100)[:, 1]
    assert sorted(epoch1.tolist()) == sorted(epoch2.tolist()) == [5 + 10 * i for i in range(100)]
    assert epoch1.tolist() != epoch2.tolist()


def test_loader_resumes_exactly_from_its_state():
    a = make_loader()
    for _ in range(7):
        a.next_batch(16)
    b = make_loader()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.next_batch(16), b.next_batch(16))
    with pytest.raises(ValueError, match="differs from this run"):
        make_loader(seed=4).load_state_dict(a.state_dict())


def test_ranks_read_disjoint_parts_that_add_up_to_one_process():
    single = make_loader().next_batch(8)
    ranks = [make_loader().next_batch(4, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(torch.cat(ranks), single)


def test_split_keeps_a_validation_tail_and_refuses_tiny_corpora():
    tokens = np.arange(1000)
    train, val = split_tokens(tokens, 0.1, 10)
    assert len(val) == 100 and train[-1] + 1 == val[0]
    with pytest.raises(ValueError, match="too few"):
        split_tokens(np.arange(15), 0.1, 10)
    with pytest.raises(ValueError, match="fewer than one sequence"):
        SequenceLoader(np.arange(5), 10)


def test_default_corpus_is_wikipedia_and_imdb_without_the_rotten_tomatoes_text(tmp_path):
    """The embedded corpora are written from their packages once; the movie-review package's
    Rotten Tomatoes sentences (the demo task's and SST-2's source) never reach pretraining."""
    files = corpus_files([], ["wiki", "imdb"], tmp_path)
    assert [Path(f).name for f in files] == ["wiki-summaries-en.txt", "imdb-reviews-en.txt"]
    reviews = Path(files[1]).read_text(encoding="utf-8").splitlines()
    assert len(reviews) > 24_000 and len(set(reviews)) == len(reviews)
    assert not any("<br" in r for r in reviews[:2000])
    demo = glue_tasks.get_task("demo", ROOT / "data")
    splits, _ = glue_tasks.load_task(demo)
    sentences = [s for s in splits["validation"]["text_a"] if len(s) > 40]
    text = "\n".join(reviews)
    assert sum(s in text for s in sentences[:300]) == 0
    assert corpus_files(["mine.txt"], ["wiki"], tmp_path) == ["mine.txt"]  # the user's files win


@pytest.mark.parametrize("embedded", [[], ["wiki", "books"]])
def test_unknown_or_no_embedded_corpus_is_an_error(tmp_path, embedded):
    with pytest.raises(ValueError, match="data.embedded"):
        corpus_files([], embedded, tmp_path)
