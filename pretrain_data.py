"""The pretraining data path, from text files to masked batches.

Read top to bottom: the corpus (the user's UTF-8 files or the embedded ones, checked before any
work), the token file (the corpus tokenised once into a flat memory-mapped stream), the sequence
loader (windows of that stream, in an order drawn from the seed), the MLM masking, and what the
training loop asks for: the split into training and validation tokens and each step's masked
micro-batches.

Every random choice is drawn from a seed and a position in the stream, never from saved RNG
state, so a resumed or re-sharded run reads and masks exactly what the original would have.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from corpus import corpus_files, iter_corpus_documents
from fileio import atomic_write_bytes, atomic_writer
from params import DOC_ID, END_ID, MASK_ID, SPECIAL_TOKENS, START_ID, Params
from tokenization import load_tokenizer

VAL_MASK_SEED = 20240101  # validation masks are fixed so perplexities compare across steps and runs

# --------------------------------------------------------------------------- token file


def fingerprint(files: list[str | Path], tokenizer_path: str | Path) -> str:
    """A hash of the corpus files' names and bytes and of the tokenizer: the token file's identity."""
    named, _ = corpus_hashes(files)
    hash_file(named, tokenizer_path)
    return named.hexdigest()[:16]


def corpus_fingerprint(files: list[str | Path]) -> str:
    """A hash of the corpus files' contents, in order: what a checkpoint records of its data, which
    stays the same when the files move or are renamed."""
    return corpus_hashes(files)[1].hexdigest()[:16]


_CORPUS_HASHES: dict = {}  # (path, size, mtime) of each file -> its hashes, so a run reads its corpus once


def corpus_hashes(files: list[str | Path]) -> tuple:
    """Two sha256 over the files, in one pass: of their names and bytes, and of their contents alone
    (each file's length, then its bytes). Copies: a caller may add to them."""
    key = tuple((str(Path(f).resolve()), Path(f).stat().st_size, Path(f).stat().st_mtime_ns) for f in files)
    if key not in _CORPUS_HASHES:
        named, contents = hashlib.sha256(), hashlib.sha256()
        for f in files:
            contents.update(Path(f).stat().st_size.to_bytes(8, "little"))
            hash_file(named, f, also=contents)
        _CORPUS_HASHES[key] = named, contents
    return tuple(h.copy() for h in _CORPUS_HASHES[key])


def hash_file(h, path: str | Path, also=None) -> None:
    """Add a file's name and bytes to `h` (and its bytes alone to `also`)."""
    h.update(str(Path(path).name).encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            if also is not None:
                also.update(chunk)


def corpus_record(params: Params) -> dict:
    """The corpus a run trains on, as its checkpoint records it: the files (absolute paths) and
    their fingerprint, which a resumed run must match."""
    files = corpus_files(params.data.corpus, params.data.embedded)
    return {"files": [str(Path(f).resolve()) for f in files], "fingerprint": corpus_fingerprint(files)}


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def prepare_token_file(files: list[str | Path], tokenizer_path: str | Path, cache_dir: str | Path = "") -> Path:
    """Tokenise the corpus once into a flat token file and return its path.

    Writes ``<cache_dir>/<first file>.<fingerprint>.tokens`` (uint16 when the
    vocabulary fits, else uint32) holding every document's tokens followed by
    [DOC], plus a ``.json`` beside it with the dtype and count. The fingerprint
    hashes the corpus and tokenizer bytes, so changing either builds a new file.
    """
    files = [Path(f) for f in files]
    tok = load_tokenizer(tokenizer_path)
    cache_dir = Path(cache_dir) if cache_dir else files[0].parent
    docs = list(iter_corpus_documents(files))
    out = cache_dir / f"{files[0].name}.{fingerprint(files, tokenizer_path)}.tokens"
    meta_path = out.with_suffix(".tokens.json")
    if out.is_file() and meta_path.is_file():
        return out
    dtype = token_dtype(tok.get_vocab_size())
    cache_dir.mkdir(parents=True, exist_ok=True)
    n_tokens = 0
    with atomic_writer(out) as fh:
        for start in range(0, len(docs), 4096):
            encodings = tok.encode_batch(docs[start : start + 4096], add_special_tokens=False)
            ids = [i for enc in encodings for i in (*enc.ids, DOC_ID)]
            fh.write(np.asarray(ids, dtype=dtype).tobytes())
            n_tokens += len(ids)
    atomic_write_bytes(meta_path, json.dumps({"dtype": np.dtype(dtype).name, "n_tokens": n_tokens}).encode())
    return out


def open_token_file(path: str | Path) -> np.ndarray:
    """The token file as a read-only memory map: nothing is loaded until a window is served."""
    meta = json.loads(Path(path).with_suffix(".tokens.json").read_text())
    return np.memmap(path, dtype=meta["dtype"], mode="r", shape=(meta["n_tokens"],))


# --------------------------------------------------------------------------- sequences


class SequenceLoader:
    """Serves ``[START] + seq_len tokens + [END]`` sequences cut from a flat token stream.

    The stream is cut into consecutive windows; each epoch visits them in an order
    drawn from (seed, epoch). `position` counts sequences served since the start
    of training, summed over ranks, so the loader (and thus a resumed run, even on
    another number of GPUs) continues exactly where it stopped. Rank r of n takes
    its share of each global micro-batch, disjoint from the others'.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int = 0, shuffle: bool = True):
        self.tokens, self.seq_len, self.seed, self.shuffle = tokens, seq_len, seed, shuffle
        self.n_windows = len(tokens) // seq_len
        if self.n_windows == 0:
            raise ValueError(f"the token stream has {len(tokens)} tokens, fewer than one sequence of {seq_len}")
        self.position = 0
        self._order_epoch, self._order = -1, None

    def _window_order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            else:
                self._order = np.arange(self.n_windows)
            self._order_epoch = epoch
        return self._order

    def sequences(self, start: int, count: int) -> torch.Tensor:
        """Sequences number start .. start+count-1 of the infinite stream, as a (count, seq_len+2) tensor."""
        out = np.empty((count, self.seq_len + 2), dtype=np.int64)
        out[:, 0], out[:, -1] = START_ID, END_ID
        for row, index in enumerate(range(start, start + count)):
            epoch, i = divmod(index, self.n_windows)
            w = self._window_order(epoch)[i]
            out[row, 1:-1] = self.tokens[w * self.seq_len : (w + 1) * self.seq_len]
        return torch.from_numpy(out)

    def next_batch(self, micro_batch: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """This rank's `micro_batch` sequences of the next global micro-batch; advances `position`."""
        batch = self.sequences(self.position + rank * micro_batch, micro_batch)
        self.position += micro_batch * world_size
        return batch

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed, "n_windows": self.n_windows}

    def load_state_dict(self, state: dict) -> None:
        if state["n_windows"] != self.n_windows or state["seed"] != self.seed:
            raise ValueError(
                f"checkpoint's data ({state['n_windows']} windows, seed {state['seed']}) differs from this "
                f"run's ({self.n_windows} windows, seed {self.seed}): same corpus, tokenizer and seed needed"
            )
        self.position = state["position"]


def split_tokens(tokens: np.ndarray, val_fraction: float, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out the tail of the stream (at least one sequence) for validation."""
    n_val = max(seq_len, int(len(tokens) * val_fraction))
    if len(tokens) - n_val < seq_len:
        raise ValueError(
            f"the corpus has only {len(tokens)} tokens: too few for a {seq_len}-token training "
            f"sequence plus a validation slice"
        )
    return tokens[:-n_val], tokens[-n_val:]


# --------------------------------------------------------------------------- masking


def word_start_table(tokenizer) -> torch.Tensor:
    """(vocab,) bool: which tokens begin a word. A byte-level BPE token continues the word before
    it when it starts with a letter or digit; one that starts with the space marker "Ġ", with
    punctuation or any other byte begins a new one (as the pre-tokenizer splits words). Special
    tokens count as word starts."""
    vocab = tokenizer.get_vocab()
    table = torch.ones(max(vocab.values()) + 1, dtype=torch.bool)
    for token, i in vocab.items():
        if i >= len(SPECIAL_TOKENS) and not token.startswith("Ġ") and token[:1].isalnum():  # "Ġ" is a letter too
            table[i] = False
    return table


def word_index(input_ids: torch.Tensor, word_starts: torch.Tensor) -> torch.Tensor:
    """Each position's word, numbered 0, 1, ... along the last dimension: a word is a token that
    `word_starts` marks, or one after a special token, or a row's first token, with the tokens
    that continue it."""
    n_special = len(SPECIAL_TOKENS)
    after_special = F.pad(input_ids[..., :-1] < n_special, (1, 0), value=True)
    starts = word_starts.to(input_ids.device)[input_ids] | after_special
    return starts.long().cumsum(-1) - 1


def mask_tokens(input_ids: torch.Tensor, vocab_size: int, mask_prob: float = 0.15, generator=None,
                word_starts: torch.Tensor | None = None):
    """BERT's masking: pick `mask_prob` of the non-special, non-padding tokens; of those,
    80% become [MASK], 10% a random non-special token, 10% stay. Returns (inputs, labels)
    with labels -100 wherever no prediction is asked for. Special ids are 0..4.

    With `word_starts` (`word_start_table`) whole words are picked, each with probability
    `mask_prob`, and every token of a picked word is predicted (whole-word masking, as in BERT's
    later release): with a small vocabulary many words are several tokens, and a word's last
    pieces are easy to guess from its first ones without any context."""
    n_special = len(SPECIAL_TOKENS)
    device = input_ids.device
    eligible = input_ids >= n_special
    rand = torch.rand(input_ids.shape, generator=generator, device=device)
    if word_starts is not None:
        rand = rand.gather(-1, word_index(input_ids, word_starts))  # one draw per word
    chosen = eligible & (rand < mask_prob)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator, device=device)
    random_ids = torch.randint(n_special, vocab_size, input_ids.shape, generator=generator, device=device)
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(input_ids, MASK_ID), input_ids)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    return inputs, labels


def mask_sequences(rows: torch.Tensor, first_index: int, params: Params, word_starts: torch.Tensor | None = None):
    """MLM masks for consecutive stream sequences, each drawn from a generator seeded by
    (seed, its index in the stream). The masks thus depend on neither the micro-batch
    size, the accumulation, the number of ranks, nor any saved RNG state: a resumed or
    re-sharded run masks exactly as the original would have. `word_starts`: whole-word masking."""
    inputs, labels = torch.empty_like(rows), torch.empty_like(rows)
    for i in range(len(rows)):
        gen = torch.Generator().manual_seed(params.train.seed * 1_000_003 + first_index + i)
        inputs[i], labels[i] = mask_tokens(rows[i], params.model.vocab_size, params.train.mask_prob, gen, word_starts)
    return inputs, labels


# --------------------------------------------------------------------------- what the training loop reads


def split_token_file(params: Params) -> tuple[np.ndarray, np.ndarray]:
    """The corpus as (training tokens, validation tokens), from its cached token file."""
    vocab = load_tokenizer(params.tokenizer_path).get_vocab_size()
    if vocab > params.model.vocab_size:  # ids past the embedding table would fail deep inside the model
        raise ValueError(
            f"tokenizer {params.tokenizer_path} has {vocab} tokens but model.vocab_size is {params.model.vocab_size}: "
            "train the tokenizer for this preset (Train-Tokenizer.py) or set model.vocab_size"
        )
    files = corpus_files(params.data.corpus, params.data.embedded)
    token_path = prepare_token_file(files, params.tokenizer_path, params.data.cache_dir)
    return split_tokens(open_token_file(token_path), params.data.val_fraction, params.model.seq_len)


def prepare_data(params: Params):
    """Token file -> (training loader, validation batch, unigram token frequencies). The validation
    batch is the first `data.val_sequences` held-out sequences, masked per token with a fixed seed."""
    train_tokens, val_tokens = split_token_file(params)
    loader = SequenceLoader(train_tokens, params.model.seq_len, seed=params.train.seed)
    val_loader = SequenceLoader(val_tokens, params.model.seq_len, shuffle=False)
    n_val = min(params.data.val_sequences, val_loader.n_windows)
    val_inputs, val_labels = mask_tokens(
        val_loader.sequences(0, n_val),
        params.model.vocab_size,
        params.train.mask_prob,
        torch.Generator().manual_seed(VAL_MASK_SEED),
    )
    counts = np.bincount(np.asarray(train_tokens), minlength=params.model.vocab_size).astype(np.float64)
    return loader, (val_inputs, val_labels), counts


def next_step_batches(loader: SequenceLoader, params: Params, accum: int, rank: int = 0, world_size: int = 1,
                      word_starts: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's masked micro-batches (inputs, labels) for one optimizer step: `accum` global
    micro-batches, of which rank `rank` of `world_size` takes its share."""
    micro = params.train.micro_batch
    batches = []
    for _ in range(accum):
        first = loader.position + rank * micro
        rows = loader.next_batch(micro, rank, world_size)
        batches.append(mask_sequences(rows, first, params, word_starts))
    return batches
