"""The pretraining data path, from the corpus to masked batches.

Read top to bottom: the token file (the corpus, read as a stream by corpus.py, tokenised once into a flat
memory-mapped stream by worker processes, resumable), the sequence loader (windows of that stream, in an
order drawn from the seed), the MLM masking, and what the training loop asks for: the split into training
and validation tokens and each step's masked micro-batches.

Every random choice is drawn from a seed and a position in the stream, never from saved RNG
state, so a resumed or re-sharded run reads and masks exactly what the original would have.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from corpus import (CorpusReader, Reading, cache_stem, content_fingerprint, corpus_files, default_cache_dir,
                    describe_entry, no_text_message, resolve_sources, stat_key)
from fileio import atomic_write_bytes, file_mode
from params import DOC_ID, END_ID, MASK_ID, SPECIAL_TOKENS, START_ID, DataConfig, Params
from tokenization import load_tokenizer

VAL_MASK_SEED = 20240101  # validation masks are fixed so perplexities compare across steps and runs

# --------------------------------------------------------------------------- token file

TOKEN_FILE_FORMAT = 2  # what a token file holds for given text and settings; raised when the reading rules change
JOB_CHARS = 1 << 18  # characters of text per tokenising job (one encode_batch call): about 90 MB per worker
JOB_PIECES = 4096  # at most this many documents (or pieces of long ones) per job
KNOWN_STATS = 8  # how many file-system records of its corpus a token file keeps (copies, moves, touches)


def tokenizer_hash(path: str | Path) -> str:
    """A hash of the tokenizer file's bytes: a token file holds the ids of exactly this tokenizer."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def token_dtype(vocab_size: int):
    """uint16 while every id fits (ids 0 .. vocab_size-1 <= 65535), else uint32."""
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def _token_files(cache: Path, stem: str):
    """(token file, its record) of every token file built from a corpus whose first entry is `stem`."""
    for meta_path in sorted(cache.glob(f"{glob.escape(stem)}.*.tokens.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict):
            yield meta_path.with_suffix(""), meta


def _find_token_file(cache: Path, stem: str, stats: list, want: dict) -> Path | None:
    """The token file of this corpus, told by the files' sizes and times alone (no text is read)."""
    for path, meta in _token_files(cache, stem):
        if all(meta.get(k) == v for k, v in want.items()) and stats in meta.get("sources", []) and path.is_file() \
                and path.stat().st_size == meta.get("n_tokens", -1) * np.dtype(meta.get("dtype", "uint16")).itemsize:
            return path
    return None


def _remember_stats(meta_path: Path, meta: dict, stats: list) -> None:
    """Add the corpus's current file-system record to a token file's, so the next look-up finds it at once."""
    meta["sources"] = [stats] + [s for s in meta.get("sources", []) if s != stats][: KNOWN_STATS - 1]
    atomic_write_bytes(meta_path, json.dumps(meta).encode())


_FINGERPRINTS: dict = {}  # the corpus's file-system record -> its contents' fingerprint, so a run hashes it once


def corpus_fingerprint(files: list[str | Path], cache_dir: str | Path = "") -> str:
    """A hash of the corpus's contents, in order (corpus.content_fingerprint): what a checkpoint records
    of its data, which stays the same when the files move or are renamed. Taken from the record of a
    token file built from the same files when their sizes and times are unchanged, else computed."""
    files = [str(f) for f in files]
    sources = resolve_sources(files)
    stats = stat_key(sources)
    memo = json.dumps(stats)
    if memo not in _FINGERPRINTS:
        cache = Path(cache_dir) if cache_dir else default_cache_dir(files)
        known = [meta["fingerprint"] for _, meta in _token_files(cache, cache_stem(files))
                 if stats in meta.get("sources", []) and "fingerprint" in meta]
        _FINGERPRINTS[memo] = known[0] if known else content_fingerprint(sources)
    return _FINGERPRINTS[memo]


def corpus_record(params: Params) -> dict:
    """The corpus a run trains on, as its checkpoint records it: the entries (absolute paths) and the
    fingerprint of their contents, which a resumed run must match."""
    files = corpus_files(params.data.corpus, params.data.embedded)
    return {"files": [describe_entry(f) for f in files], "fingerprint": corpus_fingerprint(files, params.data.cache_dir)}


def prepare_token_file(files: list[str | Path], tokenizer_path: str | Path, cache_dir: str | Path = "",
                       data: DataConfig | None = None, progress: bool = True) -> Path:
    """Tokenise the corpus once into a flat token file and return its path.

    Writes ``<cache_dir>/<first entry>.<key>.tokens`` (uint16 when the vocabulary fits, else uint32)
    holding every document's tokens followed by [DOC]; beside it ``.tokens.json`` (dtype, counts, what
    it was built from) and ``.tokens.counts.npy`` (each token's count). The key hashes the corpus's
    contents, the tokenizer and the reading settings (`data`), so a change of any builds a new file.

    Finding an existing file reads no text: the files' paths, sizes and times are compared with the
    ones recorded (docs/pretraining.md, "Your corpus at scale"); when they differ the contents are
    hashed again (also checking every file) and only new contents are tokenised. The build runs on
    `data.workers` processes, records where it is every `data.commit_seconds`, and a build that was
    stopped in any way resumes there to the same bytes.
    """
    data = data or DataConfig()
    files = [str(f) for f in files]
    reading = Reading.of(data)
    sources = resolve_sources(files)  # a missing or empty file is named before anything else
    tok = load_tokenizer(tokenizer_path)
    want = {"format": TOKEN_FILE_FORMAT, "tokenizer": tokenizer_hash(tokenizer_path), "reading": reading.key()}
    cache = Path(cache_dir) if cache_dir else default_cache_dir(files)
    stem, stats = cache_stem(files), stat_key(sources)
    found = _find_token_file(cache, stem, stats, want)
    if found:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    with _build_lock(cache / f".{stem}.tokens.lock"):
        found = _find_token_file(cache, stem, stats, want)  # built by another process while this one waited
        if found:
            return found
        if progress:
            print(f"checking and hashing the corpus ({_size_text(sum(s.size() or 0 for s in sources))})", flush=True)
        fingerprint = content_fingerprint(sources, reading, validate=True)
        _FINGERPRINTS[json.dumps(stats)] = fingerprint
        meta = {**want, "fingerprint": fingerprint}
        key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
        out = cache / f"{stem}.{key}.tokens"
        meta_path = out.with_suffix(".tokens.json")
        if out.is_file() and meta_path.is_file():  # the same contents under other names or times
            _remember_stats(meta_path, json.loads(meta_path.read_text()), stats)
            return out
        TokenFileBuild(out, sources, reading, tokenizer_path, tok.get_vocab_size(), data, meta, stats,
                       files, progress).run()
    return out


@contextlib.contextmanager
def _build_lock(path: Path):
    """One builder per corpus and cache folder (the ranks of a run, two runs on one corpus): the others
    wait here, then find the file built."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(f"waiting for another process to finish the token file ({path.parent})", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _size_text(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.2f} {unit}"
        n /= 1000


class TokenFileBuild:
    """Building one token file: the corpus read as a stream (corpus.CorpusReader), cut into jobs of about
    JOB_CHARS characters, tokenised by worker processes in order, appended to ``<out>.partial``.

    Every `data.commit_seconds`, after a job that ends a document, the partial file is flushed to disk
    and ``<out>.progress.json`` records its length, the reader's position and the counts so far
    (written atomically after the data). A build stopped in any way (Ctrl-C, kill -9, a crash, a full
    disk) resumes from that record: the partial file is cut back to the recorded length and the reader
    starts at the recorded position. Each document is tokenised on its own, so where jobs, commits
    and restarts fall never changes a byte of the result."""

    def __init__(self, out: Path, sources, reading: Reading, tokenizer_path, vocab_size: int, data: DataConfig,
                 meta: dict, stats: list, files: list[str], progress: bool):
        self.out, self.sources, self.reading, self.tokenizer_path = out, sources, reading, str(tokenizer_path)
        self.vocab_size, self.dtype = vocab_size, token_dtype(vocab_size)
        self.data, self.meta, self.stats, self.files, self.progress = data, meta, stats, files, progress
        self.partial = out.with_suffix(".tokens.partial")
        self.record = out.with_suffix(".tokens.progress.json")
        self.workers = data.workers or usable_cores()
        total = sum(s.size() or 0 for s in sources) if all(s.size() is not None for s in sources) else None
        if total is not None:  # a small corpus is not worth starting processes for
            self.workers = max(1, min(self.workers, total // (4 * JOB_CHARS) + 1))

    def _resume_state(self) -> dict | None:
        """The last committed state of an earlier build of this file, if its partial file is there."""
        try:
            state = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return None
        if state.get("meta") != self.meta or not self.partial.is_file() or self.partial.stat().st_size < state["bytes"]:
            return None
        state["counts"] = np.frombuffer(base64.b64decode(state["counts"]), dtype="<i8").copy()
        return state

    def _commit(self, fh, state: dict) -> None:
        fh.flush()
        os.fsync(fh.fileno())
        record = {**state, "meta": self.meta, "bytes": fh.tell(),
                  "counts": base64.b64encode(state["counts"].astype("<i8").tobytes()).decode()}
        atomic_write_bytes(self.record, json.dumps(record).encode())

    def run(self) -> None:
        state = self._resume_state()
        resumed = state is not None
        if not resumed:
            state = {"position": [0, 0], "bytes": 0, "n_tokens": 0, "n_documents": 0,
                     "counts": np.zeros(self.vocab_size, dtype=np.int64)}
        reader = CorpusReader(self.sources, self.reading, state["position"])
        total = reader.total_bytes()
        if self.progress:
            how = (f"resuming at {_size_text(reader.consumed)} of {_size_text(total or 0)}, {state['n_tokens']:,} "
                   f"tokens done" if resumed else "from the start")
            print(f"tokenising {len(self.sources)} source(s) ({_size_text(total) if total else 'size unknown'}) into "
                  f"{self.out} with {self.workers} process(es), {how}", flush=True)
        bar = _progress_bar(total, reader.consumed, self.progress)
        t0, start_tokens, last_commit = time.perf_counter(), state["n_tokens"], time.monotonic()
        mode = "r+b" if resumed else "wb"
        try:
            with open(self.partial, mode) as fh, Encoder(self.tokenizer_path, self.dtype, self.workers) as encoder:
                fh.truncate(state["bytes"])
                fh.seek(state["bytes"])
                for tokens, n_docs, position, consumed in encoder.map(_jobs(reader)):
                    fh.write(tokens.tobytes())
                    state["counts"] += np.bincount(tokens, minlength=self.vocab_size)[: self.vocab_size]
                    state["n_tokens"] += len(tokens)
                    state["n_documents"] += n_docs
                    elapsed = time.perf_counter() - t0
                    bar.update(max(consumed - bar.n, 0))
                    bar.set_postfix_str(f"{state['n_documents']:,} docs, {state['n_tokens']:,} tokens, "
                                        f"{(state['n_tokens'] - start_tokens) / max(elapsed, 1e-9):,.0f} tokens/s",
                                        refresh=False)
                    if position is not None and time.monotonic() - last_commit >= self.data.commit_seconds:
                        state["position"] = list(position)
                        self._commit(fh, state)
                        last_commit = time.monotonic()
                if state["n_documents"] == 0:
                    raise ValueError(no_text_message(self.files))
                state["position"] = list(reader.position)
                self._commit(fh, state)
        except ValueError:  # a bad input (or no text): the same contents would stop at the same place
            self.partial.unlink(missing_ok=True)
            self.record.unlink(missing_ok=True)
            raise
        finally:
            bar.close()
        self._finish(state)
        seconds = time.perf_counter() - t0
        if self.progress:
            made = state["n_tokens"] - start_tokens
            print(f"wrote {state['n_tokens']:,} tokens ({state['n_documents']:,} documents) to {self.out}: "
                  f"{made:,} in {seconds:.1f} s, {made / max(seconds, 1e-9):,.0f} tokens/s", flush=True)

    def _finish(self, state: dict) -> None:
        """Counts and record first, then the data takes its name: a token file that is there is whole."""
        buf = io.BytesIO()
        np.save(buf, state["counts"])
        atomic_write_bytes(self.out.with_suffix(".tokens.counts.npy"), buf.getvalue())
        meta = {**self.meta, "dtype": np.dtype(self.dtype).name, "n_tokens": state["n_tokens"],
                "n_documents": state["n_documents"], "sources": [self.stats]}
        atomic_write_bytes(self.out.with_suffix(".tokens.json"), json.dumps(meta).encode())
        os.chmod(self.partial, file_mode())
        os.replace(self.partial, self.out)
        self.record.unlink(missing_ok=True)


def _progress_bar(total: int | None, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc="tokenising",
                disable=not enabled, mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)


def _jobs(reader: CorpusReader):
    """(pieces, position after them or None, bytes read) for each job: about JOB_CHARS characters of
    pieces, ending with a document where one ends (then `position` is where the next starts)."""
    units, chars = [], 0
    for text, ends in reader:
        units.append((text, ends))
        chars += len(text)
        if ends and (chars >= JOB_CHARS or len(units) >= JOB_PIECES):
            yield units, reader.position, reader.consumed
            units, chars = [], 0
        elif chars >= 2 * JOB_CHARS:  # inside a long document
            yield units, None, reader.consumed
            units, chars = [], 0
    if units:
        yield units, reader.position, reader.consumed


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def encode_pieces(tok, units: list[tuple[str, bool]], dtype) -> tuple[np.ndarray, int]:
    """The tokens of (piece, ends_document) pairs, [DOC] after each document's last piece: (tokens, documents)."""
    encodings = tok.encode_batch_fast([text for text, _ in units], add_special_tokens=False)
    ids, n_docs = [], 0
    for enc, (_, ends) in zip(encodings, units):
        ids.append(enc.ids)
        if ends:
            ids.append((DOC_ID,))
            n_docs += 1
    count = sum(map(len, ids))
    return np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=count), n_docs


_WORKER: dict = {}  # a worker process's tokenizer and token type


def _start_worker(tokenizer_path: str, dtype: str, parent: int) -> None:
    """A worker leaves Ctrl-C to its parent and ends when its parent is gone (killed with -9 too)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER.update(tok=load_tokenizer(tokenizer_path), dtype=np.dtype(dtype))

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _encode_job(units):
    return encode_pieces(_WORKER["tok"], units, _WORKER["dtype"])


class Encoder:
    """Tokenises jobs in order: on `workers` forked processes (each single-threaded), or in this
    process with the tokenizer's own threads when workers is 1 or fork is not available. At most two
    jobs per worker are in flight, so memory stays bounded whatever the corpus."""

    def __init__(self, tokenizer_path: str, dtype, workers: int):
        self.tokenizer_path, self.dtype, self.workers = tokenizer_path, np.dtype(dtype), workers
        self.pool, self.tok = None, None

    def __enter__(self):
        if self.workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            # forked workers must not use the tokenizer's thread pool (the tokenizers library would
            # otherwise turn it off with a warning); the variable is put back once they are started
            before = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            try:
                self.pool = multiprocessing.get_context("fork").Pool(
                    self.workers, _start_worker, (self.tokenizer_path, self.dtype.name, os.getpid()))
            finally:
                if before is None:
                    os.environ.pop("TOKENIZERS_PARALLELISM", None)
                else:
                    os.environ["TOKENIZERS_PARALLELISM"] = before
        else:
            self.tok = load_tokenizer(self.tokenizer_path)
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def map(self, jobs):
        """(tokens, documents, position, bytes read) of each job, in the jobs' order."""
        if self.pool is None:
            for units, position, consumed in jobs:
                yield (*encode_pieces(self.tok, units, self.dtype), position, consumed)
            return
        pending = deque()
        for units, position, consumed in jobs:
            pending.append((self.pool.apply_async(_encode_job, (units,)), position, consumed))
            while pending and (len(pending) > 2 * self.workers or pending[0][0].ready()):
                result, where, read = pending.popleft()
                yield (*result.get(), where, read)
        while pending:
            result, where, read = pending.popleft()
            yield (*result.get(), where, read)


def open_token_file(path: str | Path) -> np.ndarray:
    """The token file as a read-only memory map: nothing is loaded until a window is served."""
    meta = json.loads(Path(path).with_suffix(".tokens.json").read_text())
    return np.memmap(path, dtype=meta["dtype"], mode="r", shape=(meta["n_tokens"],))


def bincount_chunked(tokens: np.ndarray, minlength: int, chunk: int = 1 << 22) -> np.ndarray:
    """np.bincount of a (memory-mapped) token stream a chunk at a time: never a copy of the whole."""
    counts = np.zeros(minlength, dtype=np.int64)
    for start in range(0, len(tokens), chunk):
        part = np.bincount(tokens[start : start + chunk], minlength=minlength)
        if len(part) > len(counts):
            counts = np.pad(counts, (0, len(part) - len(counts)))
        counts[: len(part)] += part
    return counts


def train_token_counts(path: str | Path, tokens: np.ndarray, n_train: int, minlength: int) -> np.ndarray:
    """How often each token occurs in the first `n_train` tokens of the token file (the training part):
    the file's counts, recorded when it was built, less those of the rest."""
    counts_path = Path(path).with_suffix(".tokens.counts.npy")
    if counts_path.is_file():
        total = np.load(counts_path)
        counts = np.zeros(max(minlength, len(total)), dtype=np.int64)
        counts[: len(total)] = total
        rest = bincount_chunked(tokens[n_train:], minlength)
        counts[: len(rest)] -= rest
        return counts
    return bincount_chunked(tokens[:n_train], minlength)


# --------------------------------------------------------------------------- sequences


# Up to this many windows an epoch's order is numpy's permutation, held as uint32 (16 MiB at most);
# above it, a keyed bijection computed per window (`feistel_order`), which holds nothing. At 5B tokens
# and 128-token windows (39M windows) the permutation takes 149 MiB as uint32 (298 MiB as the int64
# array numpy returns) on every rank and 3 to 4 s to draw at each epoch; the Feistel order takes about
# 1 ms per 3200-sequence step (docs/pretraining.md, "Your corpus at scale").
FULL_ORDER_MAX_WINDOWS = 1 << 22
WINDOW_ORDERS = {"permutation", "feistel"}
FEISTEL_ROUNDS = 6
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic): a well-mixed hash of each value."""
    x = (x ^ (x >> np.uint64(30))) * _MIX[0]
    x = (x ^ (x >> np.uint64(27))) * _MIX[1]
    return x ^ (x >> np.uint64(31))


def feistel_order(within: np.ndarray, n: int, seed: int, epoch: int) -> np.ndarray:
    """The windows at places `within` of epoch `epoch`'s order of n windows, with no table: a Feistel
    network keyed by (seed, epoch) permutes [0, 4^k) for the smallest 4^k >= n, and a place whose
    image falls past n is permuted again until it lands inside (cycle walking), which keeps the map a
    bijection of [0, n). Any place is computed on its own, so the order costs no memory and a resumed
    run continues it from any position."""
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    shift, mask = np.uint64(half), np.uint64((1 << half) - 1)
    keys = np.random.default_rng([seed, epoch, FEISTEL_ROUNDS]).integers(0, 1 << 63, FEISTEL_ROUNDS, dtype=np.uint64)
    x = np.asarray(within, dtype=np.uint64).copy()
    todo = np.arange(len(x))
    while len(todo):
        y = x[todo]
        for key in keys:
            left, right = y >> shift, y & mask
            y = (right << shift) | (left ^ (_mix64(right ^ key) & mask))
        x[todo] = y
        todo = todo[y >= np.uint64(n)]
    return x.astype(np.int64)


class SequenceLoader:
    """Serves ``[START] + seq_len tokens + [END]`` sequences cut from a flat token stream.

    The stream is cut into consecutive windows; each epoch visits them in an order
    drawn from (seed, epoch). `position` counts sequences served since the start
    of training, summed over ranks, so the loader (and thus a resumed run, even on
    another number of GPUs) continues exactly where it stopped. Rank r of n takes
    its share of each global micro-batch, disjoint from the others'.

    `order`: "permutation" (numpy's, drawn per epoch; the default up to FULL_ORDER_MAX_WINDOWS
    windows) or "feistel" (`feistel_order`, which holds no table; the default above).
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int = 0, shuffle: bool = True, order: str = ""):
        self.tokens, self.seq_len, self.seed, self.shuffle = tokens, seq_len, seed, shuffle
        self.n_windows = len(tokens) // seq_len
        if self.n_windows == 0:
            raise ValueError(f"the token stream has {len(tokens)} tokens, fewer than one sequence of {seq_len}")
        self.order = order or ("permutation" if self.n_windows <= FULL_ORDER_MAX_WINDOWS else "feistel")
        if self.order not in WINDOW_ORDERS:
            raise ValueError(f"unknown window order {self.order!r}: one of {sorted(WINDOW_ORDERS)}")
        self.position = 0
        self._order_epoch, self._order = -1, None

    def _window_order(self, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s permutation: numpy's permutation(n_windows), drawn in place on a uint32 range
        (the same order at half the memory of the int64 array permutation returns)."""
        if epoch != self._order_epoch:
            self._order = np.arange(self.n_windows, dtype=np.uint32 if self.n_windows < 1 << 32 else np.int64)
            np.random.default_rng([self.seed, epoch]).shuffle(self._order)
            self._order_epoch = epoch
        return self._order

    def windows(self, start: int, count: int) -> np.ndarray:
        """The windows of sequences number start .. start+count-1 of the infinite stream."""
        epochs, within = np.divmod(np.arange(start, start + count, dtype=np.int64), self.n_windows)
        if not self.shuffle:
            return within
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            if self.order == "permutation":
                out[sel] = self._window_order(int(epoch))[within[sel]]
            else:
                out[sel] = feistel_order(within[sel], self.n_windows, self.seed, int(epoch))
        return out

    def sequences(self, start: int, count: int) -> torch.Tensor:
        """Sequences number start .. start+count-1 of the infinite stream, as a (count, seq_len+2) tensor."""
        out = np.empty((count, self.seq_len + 2), dtype=np.int64)
        out[:, 0], out[:, -1] = START_ID, END_ID
        for row, w in enumerate(self.windows(start, count).tolist()):
            out[row, 1:-1] = self.tokens[w * self.seq_len : (w + 1) * self.seq_len]
        return torch.from_numpy(out)

    def next_batch(self, micro_batch: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """This rank's `micro_batch` sequences of the next global micro-batch; advances `position`."""
        batch = self.sequences(self.position + rank * micro_batch, micro_batch)
        self.position += micro_batch * world_size
        return batch

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed, "n_windows": self.n_windows, "order": self.order}

    def load_state_dict(self, state: dict) -> None:
        if state["n_windows"] != self.n_windows or state["seed"] != self.seed:
            raise ValueError(
                f"checkpoint's data ({state['n_windows']} windows, seed {state['seed']}) differs from this "
                f"run's ({self.n_windows} windows, seed {self.seed}): same corpus, tokenizer and seed needed"
            )
        self.position = state["position"]
        # the order the run was started with (a checkpoint that names none drew numpy's permutation)
        order = state.get("order", "permutation")
        if order != self.order:
            self.order, self._order_epoch, self._order = order, -1, None


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


def token_file(params: Params) -> Path:
    """The corpus's token file, built when missing (prepare_token_file)."""
    vocab = load_tokenizer(params.tokenizer_path).get_vocab_size()
    if vocab > params.model.vocab_size:  # ids past the embedding table would fail deep inside the model
        raise ValueError(
            f"tokenizer {params.tokenizer_path} has {vocab} tokens but model.vocab_size is {params.model.vocab_size}: "
            "train the tokenizer for this preset (Train-Tokenizer.py) or set model.vocab_size"
        )
    files = corpus_files(params.data.corpus, params.data.embedded)
    return prepare_token_file(files, params.tokenizer_path, params.data.cache_dir, params.data)


def split_token_file(params: Params) -> tuple[np.ndarray, np.ndarray]:
    """The corpus as (training tokens, validation tokens), from its cached token file."""
    return split_tokens(open_token_file(token_file(params)), params.data.val_fraction, params.model.seq_len)


def prepare_data(params: Params):
    """Token file -> (training loader, validation batch, unigram token frequencies). The validation
    batch is the first `data.val_sequences` held-out sequences, masked per token with a fixed seed."""
    path = token_file(params)
    train_tokens, val_tokens = split_tokens(open_token_file(path), params.data.val_fraction, params.model.seq_len)
    loader = SequenceLoader(train_tokens, params.model.seq_len, seed=params.train.seed)
    val_loader = SequenceLoader(val_tokens, params.model.seq_len, shuffle=False)
    n_val = min(params.data.val_sequences, val_loader.n_windows)
    val_inputs, val_labels = mask_tokens(
        val_loader.sequences(0, n_val),
        params.model.vocab_size,
        params.train.mask_prob,
        torch.Generator().manual_seed(VAL_MASK_SEED),
    )
    counts = train_token_counts(path, open_token_file(path), len(train_tokens), params.model.vocab_size)
    return loader, (val_inputs, val_labels), counts.astype(np.float64)


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
