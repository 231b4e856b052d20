"""The DitBERT tokenizer: a byte-level BPE with DitBERT's special tokens and pair template, its
training on the corpus, loading with checks, and the fingerprint recorded with every trained model."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections import deque
from pathlib import Path

from corpus import PIECE_CHARS, CorpusReader, Reading, no_text_message, resolve_sources
from fileio import atomic_write_bytes
from params import DOC_ID, END_ID, SPECIAL_TOKENS, START_ID


def build_tokenizer():
    """An untrained byte-level BPE tokenizer: NFKC, digits split one by one, DitBERT's pair template.

    A text that does not start with a space gets one before it is split, so a word is the same
    tokens at the start of a text as inside one. Fine-tuning inputs are short sentences whose
    first word often carries the label; without the space it would be cut into pieces that
    pretraining, which meets the word mid-text as " Word", hardly ever sees. The decoder drops
    one leading space again.

    Only the text's first piece gets that space (`first_piece_space`): a special token written
    in a text (``is [MASK].``) splits it in pieces, and the piece after it (``.``) is encoded as
    it is in ``is good.``, not as a new text's first word.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [first_piece_space(), pre_tokenizers.ByteLevel(add_prefix_space=False), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="[START] $A [END]",
        pair="[START] $A [DOC] $B [END]",
        special_tokens=[("[START]", START_ID), ("[END]", END_ID), ("[DOC]", DOC_ID)],
    )
    return tok


def first_piece_space():
    """The pre-tokenizer step that puts a space before a text that has none, in the text's first piece
    only (the one at offset 0). ByteLevel's own add_prefix_space gives one to every piece, so that
    the word after a special token written in the text would become a first word ("Ġ." for ".")."""
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Metaspace(replacement=" ", prepend_scheme="first", split=False)


def train_tokenizer(
    files: list[str], vocab_size: int, out_path: str | Path, min_frequency: int = 2, holdout_docs: int = 0,
    sample_bytes: int = 0, max_docs: int = 0, data=None, held_out: list | None = None, progress: bool = False,
    seed: int = 0,
):
    """Learn BPE merges from the corpus (any form corpus.py reads; `data`: the reading settings, a
    params.DataConfig) and save ``tokenizer.json`` atomically.

    The trainer reads `TrainingText`: the corpus as a stream, never whole, less its last documents
    (at most `holdout_docs`, at most a tenth of them; `held_out`, a list, receives them), and a sample
    of at most `sample_bytes` bytes of it when it is larger (0 = all), at most `max_docs` documents
    (0 = all).
    """
    from tokenizers import pre_tokenizers, trainers

    text = TrainingText(files, holdout_docs, sample_bytes, max_docs, data, seed, progress)
    tok = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    tok.train_from_iterator(text, trainer=trainer, length=text.first_held)
    if held_out is not None:
        held_out.extend(text.held_out)
    out_path = Path(out_path)
    atomic_write_bytes(out_path, tok.to_str(pretty=False).encode("utf-8"))
    return tok


class TrainingText:
    """The text the BPE trainer sees, as an iterable of documents (pieces of long ones).

    Made in two passes over the corpus, each a stream. The first, on construction, checks every file
    and counts the documents and their bytes. Iterating is the second: the last ``min(holdout_docs,
    a tenth of the documents)`` documents are kept out (in `held_out`, each cut at PIECE_CHARS
    characters), and when the rest holds more than `sample_bytes` bytes each document is taken with
    probability sample_bytes / those bytes, drawn from `seed`, never more than `sample_bytes` in all:
    a sample spread over the whole corpus, so the trainer's time and memory stop growing with it."""

    def __init__(self, files, holdout_docs: int = 0, sample_bytes: int = 0, max_docs: int = 0, data=None,
                 seed: int = 0, progress: bool = False):
        self.sources = resolve_sources(files)  # a missing or empty file is named before any reading
        self.reading, self.sample_bytes, self.max_docs, self.seed = Reading.of(data), sample_bytes, max_docs, seed
        self.progress, self.held_out = progress, []
        n_docs, n_units, n_bytes, starts = 0, 0, 0, deque(maxlen=holdout_docs + 1)
        at_start = True
        with _bar(self.sources, "checking the corpus", progress) as bar:
            for text, ends in (reader := CorpusReader(self.sources, self.reading)):
                if at_start:
                    starts.append((n_units, n_bytes))  # where each of the last documents starts
                n_units += 1
                n_bytes += len(text.encode("utf-8"))
                n_docs += ends
                at_start = ends
                bar.update(max(reader.consumed - bar.n, 0))
        if n_docs == 0:
            raise ValueError(no_text_message(files))
        self.n_documents, self.n_bytes = n_docs, n_bytes
        self.n_held = min(holdout_docs, n_docs // 10)
        self.first_held, self.train_bytes = starts[-self.n_held] if self.n_held else (n_units, n_bytes)
        self.share = 1.0 if not sample_bytes or self.train_bytes <= sample_bytes else sample_bytes / self.train_bytes
        if progress:
            what = "all of it" if self.share == 1 else f"a sample of about {sample_bytes / 1e6:,.0f} MB ({self.share:.1%})"
            print(f"{n_docs:,} documents, {n_bytes / 1e6:,.1f} MB of text; {self.n_held} held out; training on "
                  f"{what}", flush=True)

    def __iter__(self):
        rng, fed, fed_bytes, held, sampling = random.Random(self.seed), 0, 0, [], self.share < 1
        self.held_out = []
        with _bar(self.sources, "feeding the trainer", self.progress) as bar:
            for index, (text, ends) in enumerate(reader := CorpusReader(self.sources, self.reading)):
                bar.update(max(reader.consumed - bar.n, 0))
                if index >= self.first_held:
                    if sum(map(len, held)) < PIECE_CHARS:
                        held.append(text)
                    if ends:
                        self.held_out.append("".join(held)[:PIECE_CHARS])
                        held = []
                    continue
                if sampling and rng.random() >= self.share:
                    continue
                size = len(text.encode("utf-8")) if sampling else 0
                if (sampling and fed_bytes + size > self.sample_bytes) or (self.max_docs and fed >= self.max_docs):
                    continue
                fed, fed_bytes = fed + 1, fed_bytes + size
                yield text


def _bar(sources, what: str, enabled: bool):
    from tqdm.auto import tqdm

    sizes = [s.size() for s in sources]
    total = None if None in sizes else sum(sizes)
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what, disable=not enabled,
                mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)


def tokenizer_stats(tok, texts: list[str]) -> dict:
    """Tokens per whitespace word and whether decode(encode(text)) gives the text back (after NFKC)."""
    import unicodedata

    encodings = tok.encode_batch(texts, add_special_tokens=False)
    n_tokens = sum(len(e.ids) for e in encodings)
    n_words = sum(len(t.split()) for t in texts)
    exact = sum(tok.decode(e.ids) == unicodedata.normalize("NFKC", t) for e, t in zip(encodings, texts))
    return {
        "documents": len(texts),
        "words": n_words,
        "tokens": n_tokens,
        "tokens_per_word": n_tokens / max(n_words, 1),
        "round_trip_exact": exact / max(len(texts), 1),
    }


def load_tokenizer(path: str | Path):
    """Load ``tokenizer.json`` and check that DitBERT's special tokens hold ids 0..4."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist; train one with Train-Tokenizer.py")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:  # the tokenizers library raises a bare Exception on bad JSON
        raise ValueError(f"tokenizer file {path} is not a valid tokenizer.json: {err}") from None
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(token) != expected_id:
            raise ValueError(
                f"tokenizer {path} lacks DitBERT's special token {token} at id {expected_id} "
                f"(found {tok.token_to_id(token)}); retrain it with Train-Tokenizer.py"
            )
    return tok


def tokenizer_fingerprint(path: str | Path) -> str:
    """A short hash of what the tokenizer does (its vocabulary, merges, normalizer and pre-tokenizer),
    not of how its file is laid out: two tokenizers with the same vocabulary size but other merges
    differ, a copy re-saved by transformers does not. Recorded with every trained model."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        parts = {key: spec.get(key) for key in ("model", "normalizer", "pre_tokenizer")}
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"tokenizer file {path} is not a readable tokenizer.json ({err})") from None
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def check_tokenizer(recorded: str | None, tokenizer_path: str | Path, model_path: str | Path) -> None:
    """Refuse a tokenizer other than the one `model_path` was trained with (`recorded` is the
    fingerprint saved with the model; None = a model that recorded none, accepted)."""
    if recorded and recorded != tokenizer_fingerprint(tokenizer_path):
        raise ValueError(
            f"{tokenizer_path} is not the tokenizer {model_path} was trained with (fingerprint "
            f"{tokenizer_fingerprint(tokenizer_path)}, the model recorded {recorded}): give the model's own tokenizer"
        )
