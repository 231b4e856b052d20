"""The DitBERT encoder and masked-LM model.

Read top to bottom: the model (embeddings -> pre-LN blocks -> final LayerNorm -> MLM head),
its initialisation, and saving/loading weights without pickle. The tokenizer is in
tokenization.py, the data that pretraining feeds the model in pretrain_data.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from fileio import atomic_write_bytes
from params import ATTENTIONS, PAD_ID, POSITIONS, ModelConfig

# --------------------------------------------------------------------------- model

INIT_STD = 0.02  # BERT's: the std of every initial weight matrix and embedding


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model={cfg.d_model} is not divisible by n_heads={cfg.n_heads}")
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout
        if cfg.attention not in ATTENTIONS:
            raise ValueError(f"model.attention must be one of {ATTENTIONS}, got {cfg.attention!r}")
        self.use_sdpa = cfg.attention == "sdpa"

    def forward(self, x, key_mask, keep=None, need_weights=False):
        """(B, T, D) -> (B, T, D), or (N, D) at the N positions where `keep` (B, T) is True:
        then every position is still a key and value, but only the kept ones are queries.
        `key_mask` is None, a bool mask (B, 1, 1, T) of who may be attended to, or a float bias
        added to the attention scores ((B or 1, nh, T, T): ALiBi's distances, -inf at padding).
        With `need_weights` (no `keep`): (output, attention weights (B, nh, T, T)), computed by the
        written-out softmax, since SDPA's fused kernels never form the weights."""
        B, T, D = x.shape
        if keep is None:
            q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
            if need_weights:
                weights = self.attention_weights(q, k, key_mask)
                y = F.dropout(weights, self.dropout, self.training) @ v
                return self.out(y.transpose(1, 2).reshape(B, T, D)), weights
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
        return F.dropout(SelfAttention.attention_weights(q, k, key_mask), dropout_p) @ v

    @staticmethod
    def attention_weights(q, k, key_mask):
        """softmax(q k^T / sqrt(hs) + mask): how much each query attends to each key, (B, nh, Tq, T)."""
        scores = (q @ k.transpose(-2, -1)) * q.size(-1) ** -0.5  # (B, nh, T, T)
        if key_mask is not None and key_mask.dtype == torch.bool:
            scores = scores.masked_fill(~key_mask, float("-inf"))
        elif key_mask is not None:
            scores = scores + key_mask
        return scores.softmax(-1)


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

    def forward(self, x, key_mask, keep=None, need_weights=False):
        """With `keep` (B, T), every position is a key and value, but the queries, the output
        projection and the FFN run only at the kept positions: (N, D). With `need_weights`:
        (output, the attention weights (B, nh, T, T))."""
        attended = self.attn(self.ln_attn(x), key_mask, keep, need_weights)
        attended, weights = attended if need_weights else (attended, None)
        x = (x if keep is None else x[keep]) + self.drop(attended)
        x = x + self.drop(self.ffn(self.ln_ffn(x)))
        return (x, weights) if need_weights else x


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
    """Token (+ learned position) embeddings -> LayerNorm -> pre-LN blocks -> final LayerNorm.

    With ALiBi (cfg.position=alibi) there is no position table: positions enter the attention
    scores as distances, so a sequence may be longer than the pretraining length. A learned table
    holds cfg.max_positions positions and refuses longer sequences."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=PAD_ID)
        if cfg.position not in POSITIONS:
            raise ValueError(f"model.position must be one of {POSITIONS}, got {cfg.position!r}")
        self.pos_emb = nn.Embedding(cfg.max_positions, cfg.d_model) if cfg.position == "learned" else None
        self.ln_emb = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.gradient_checkpointing = False  # recompute each block in the backward pass (`run_block`)

    def forward(self, input_ids, attention_mask=None, keep=None):
        """input_ids (B, T) -> hidden states (B, T, D). attention_mask (B, T) is 1 for real tokens;
        None says that every token is real (pretraining's windows are never padded), so attention
        runs without a mask. With `keep` (B, T bool), only the hidden states at those positions:
        (N, D); the last block then skips its work after attention everywhere else (pretraining
        needs only masked ones)."""
        self.check_length(input_ids.shape[1])
        x = self.drop(self.embed(input_ids))
        return self.ln_final(run_blocks(self.blocks, x, self.attention_bias(attention_mask, x), keep))

    def layer_states(self, input_ids=None, attention_mask=None, inputs_embeds=None, need_weights=False):
        """What tools that look inside the encoder ask for: the hidden states after the embedding layer
        and after each block, the last one after the final LayerNorm (what `forward` returns), and with
        `need_weights` each block's attention weights (B, nh, T, T). `inputs_embeds` (B, T, D) stands for
        the token embeddings of `input_ids`. Without an attention_mask the tokens of `input_ids` other than
        [PAD] are real, and every position of `inputs_embeds`."""
        self.check_length((input_ids if inputs_embeds is None else inputs_embeds).shape[1])
        x = self.drop(self.embed(input_ids, inputs_embeds))
        if attention_mask is None and input_ids is not None:
            attention_mask = input_ids.ne(PAD_ID)
        key_mask = self.attention_bias(attention_mask, x)
        states, weights = [x], []
        for block in self.blocks:
            x = self.run_block(block, x, key_mask, need_weights)
            if need_weights:
                x, w = x
                weights.append(w)
            states.append(x)
        states[-1] = self.ln_final(x)
        return states, weights

    def run_block(self, block, x, key_mask, need_weights=False):
        """One block; with `gradient_checkpointing` on while training, its activations are not kept but
        recomputed in the backward pass (transformers' gradient_checkpointing_enable sets the flag and
        `_gradient_checkpointing_func`), trading compute for memory."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            recompute = getattr(self, "_gradient_checkpointing_func", None)
            if recompute is None:
                return checkpoint(block, x, key_mask, None, need_weights, use_reentrant=False)
            return recompute(block, x, key_mask, None, need_weights)
        return block(x, key_mask, None, need_weights)

    def check_length(self, T: int) -> None:
        """A learned position table has cfg.max_positions rows; ALiBi has no limit."""
        if self.pos_emb is not None and T > self.cfg.max_positions:
            raise ValueError(f"sequence of {T} tokens is longer than the model's {self.cfg.max_positions} positions "
                             "(a learned position table): truncate it, e.g. tokenizer(..., truncation=True)")

    def attention_bias(self, attention_mask, x):
        """What SelfAttention takes as `key_mask` for the states `x` (B, T, D), from the (B, T) mask of
        real tokens: a bool mask (B, 1, 1, T) of the real tokens or, with ALiBi, a float bias
        -slope |i - j| with -inf at padding. Without a mask (None: no padding) it is None, or ALiBi's
        bias alone. A given mask is always applied, even where it holds no padding: a branch on its
        values would be a data-dependent Python branch, which torch.compile breaks its graph at and
        a traced export freezes to the example it saw."""
        key_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # who may be attended to
        if self.pos_emb is None:  # ALiBi: positions enter as a distance penalty on every attention score
            bias = alibi_bias(self.cfg.n_heads, x.shape[1], x.device).to(x.dtype)
            key_mask = bias if key_mask is None else bias.masked_fill(~key_mask, float("-inf"))
        return key_mask

    def embed(self, input_ids, inputs_embeds=None):
        """The embedding layer: token (+ learned position) embeddings after their LayerNorm, (B, T, D),
        before any attention -- each token's own vector, which the blocks then mix with its context.
        `inputs_embeds` (B, T, D), given instead of `input_ids`, replaces the token embeddings."""
        x = self.tok_emb(input_ids) if inputs_embeds is None else inputs_embeds
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(x.shape[1], device=x.device))
        return self.ln_emb(x)


def pool_hidden(h: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per sequence, (B, T, D) -> (B, D): the [START] position (``cls``) or the mean over
    the positions where attention_mask is 1 (``mean``; zeros for a row without any)."""
    if pooling == "cls":
        return h[:, 0]
    weights = attention_mask.to(h.dtype).unsqueeze(-1)  # (B, T, 1)
    return (h * weights).sum(1) / weights.sum(1).clamp(min=1)


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
    vocabulary projection's cost, and most of the last block's, is skipped, since most positions
    carry no loss."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = DitBertEncoder(cfg)
        self.head = MLMHead(cfg, self.encoder.tok_emb)
        self.apply(init_weights)
        if self.encoder.pos_emb is not None:  # ALiBi has no table to start
            # sin/cos have std 1/sqrt(2): rescaled to the token embeddings' std, so that the positions
            # do not drown the tokens after the embedding LayerNorm
            table = sinusoid_table(cfg.max_positions, cfg.d_model) * (INIT_STD * math.sqrt(2.0))
            with torch.no_grad():
                self.encoder.pos_emb.weight.copy_(table)

    def forward(self, input_ids, labels, attention_mask=None):
        """The training loss, the mean cross-entropy over positions with labels != -100, and the MLM
        logits at those masked positions (N, V)."""
        masked = labels.ne(-100)
        logits = self.mlm_logits(input_ids, masked, attention_mask)
        # sum / N rather than mean, so a batch without masked tokens gives 0 instead of NaN
        loss = F.cross_entropy(logits.float(), labels[masked], reduction="sum") / masked.sum().clamp(min=1)
        return loss, logits

    def mlm_logits(self, input_ids, masked, attention_mask=None):
        """Vocabulary logits at the N masked positions (N, V). With cfg.mlm_masked_only the last block
        computes only those positions; otherwise (the reference) every position goes through it and
        the head, then the masked are taken."""
        keep = masked if self.cfg.mlm_masked_only else None
        logits = self.head(self.encoder(input_ids, attention_mask, keep=keep))
        return logits if keep is not None else logits[masked]


def init_weights(module: nn.Module, std: float = INIT_STD) -> None:
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


# --------------------------------------------------------------------------- saving and loading


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
