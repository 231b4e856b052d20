"""The encoder, the MLM head and the masking helper."""

from dataclasses import replace

import pytest
import torch

from model_defs import DitBertEncoder, DitBertForMLM, alibi_bias, load_model, parameter_table, save_model, set_dropout
from params import END_ID, MASK_ID, PAD_ID, SPECIAL_TOKENS, START_ID, ModelConfig
from pretrain_data import mask_tokens, word_index, word_start_table
from tokenization import load_tokenizer

CFG = ModelConfig(vocab_size=300, seq_len=14, n_layers=2, d_model=32, n_heads=4, d_ff=64)


def random_ids(batch, length, vocab=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL_TOKENS), vocab, (batch, length), generator=g)
    ids[:, 0], ids[:, -1] = START_ID, END_ID
    return ids


def test_masking_statistics_follow_bert():
    ids = random_ids(400, 130, vocab=5000)
    ids[:, 100:] = PAD_ID  # a padded tail must never be chosen
    inputs, labels = mask_tokens(ids, 5000, 0.15, torch.Generator().manual_seed(1))
    chosen = labels.ne(-100)
    eligible = ids >= len(SPECIAL_TOKENS)
    assert not (chosen & ~eligible).any(), "special or padding tokens were chosen"
    assert torch.equal(labels[chosen], ids[chosen])
    assert chosen.sum() / eligible.sum() == pytest.approx(0.15, abs=0.005)
    n = chosen.sum().item()
    became_mask = (inputs[chosen] == MASK_ID).sum().item() / n
    unchanged = (inputs[chosen] == ids[chosen]).sum().item() / n
    assert became_mask == pytest.approx(0.8, abs=0.01)
    assert unchanged == pytest.approx(0.1 + 0.1 / 5000, abs=0.01)
    replaced = inputs[chosen & (inputs != MASK_ID) & (inputs != ids)]
    assert (replaced >= len(SPECIAL_TOKENS)).all(), "a random replacement was a special token"
    assert torch.equal(inputs[~chosen], ids[~chosen]), "tokens not chosen were changed"


def test_whole_word_masking_picks_every_token_of_a_word_or_none():
    vocab = 300
    word_starts = torch.rand(vocab, generator=torch.Generator().manual_seed(3)) < 0.6  # 40 % of tokens continue a word
    word_starts[: len(SPECIAL_TOKENS)] = True
    ids = random_ids(300, 64, vocab=vocab, seed=4)
    ids[:, 50:] = PAD_ID
    words = word_index(ids, word_starts)
    assert words[:, 0].eq(0).all() and (words.diff(dim=1) >= 0).all()
    continues = ~word_starts[ids[:, 1:]] & (ids[:, :-1] >= len(SPECIAL_TOKENS))
    assert torch.equal(words.diff(dim=1).eq(0), continues)  # a word ends only where the next token starts one
    inputs, labels = mask_tokens(ids, vocab, 0.4, torch.Generator().manual_seed(5), word_starts)
    chosen = labels.ne(-100)
    eligible = ids >= len(SPECIAL_TOKENS)
    assert not (chosen & ~eligible).any()
    assert torch.equal(chosen[:, 1:][continues], chosen[:, :-1][continues]), "a word was split"
    assert chosen.sum() / eligible.sum() == pytest.approx(0.4, abs=0.02)
    assert (inputs[chosen] == MASK_ID).float().mean() == pytest.approx(0.8, abs=0.02)
    tokens_only = mask_tokens(ids, vocab, 0.4, torch.Generator().manual_seed(5))[1].ne(-100)
    assert not torch.equal(tokens_only[:, 1:][continues], tokens_only[:, :-1][continues])  # token masking splits words


def test_word_start_table_marks_the_space_marker_and_punctuation(tiny_tokenizer):
    tok = load_tokenizer(tiny_tokenizer)
    table = word_start_table(tok)
    assert len(table) == tok.get_vocab_size() and table[: len(SPECIAL_TOKENS)].all()
    vocab = tok.get_vocab()
    for token, i in vocab.items():
        if i >= len(SPECIAL_TOKENS):
            assert bool(table[i]) == (token.startswith("Ġ") or not token[0].isalnum()), token
    assert 0 < table.float().mean() < 1


def test_masking_is_reproducible_with_a_generator():
    ids = random_ids(4, 30)
    a = mask_tokens(ids, 300, 0.15, torch.Generator().manual_seed(7))
    b = mask_tokens(ids, 300, 0.15, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("position", ["learned", "alibi"])
def test_padding_does_not_change_real_token_states(position):
    torch.manual_seed(0)
    enc = DitBertEncoder(replace(CFG, position=position)).eval()
    ids = random_ids(1, 10)
    padded = torch.cat([ids, torch.full((1, 6), PAD_ID)], dim=1)
    short = enc(ids)
    long = enc(padded, padded.ne(PAD_ID))
    assert torch.allclose(short, long[:, :10], atol=1e-5)
    unmasked = enc(padded, torch.ones_like(padded))
    assert not torch.allclose(short, unmasked[:, :10], atol=1e-3), "the padding mask had no effect"


def test_sequence_longer_than_positions_is_an_error():
    enc = DitBertEncoder(CFG)
    with pytest.raises(ValueError, match="longer than the model's 16 positions"):
        enc(random_ids(1, 17))


def test_head_at_masked_positions_equals_full_projection():
    torch.manual_seed(0)
    model = DitBertForMLM(CFG).eval()
    ids = random_ids(3, 16)
    inputs, labels = mask_tokens(ids, 300, 0.3, torch.Generator().manual_seed(0))
    loss, logits = model(inputs, labels)
    full = model.head(model.encoder(inputs))
    ref = torch.nn.functional.cross_entropy(full.view(-1, 300), labels.view(-1), ignore_index=-100)
    assert torch.allclose(logits, full[labels.ne(-100)], atol=1e-5)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_no_masked_token_gives_zero_loss_not_nan():
    model = DitBertForMLM(CFG)
    ids = random_ids(2, 8)
    loss, _ = model(ids, torch.full_like(ids, -100))
    assert loss.item() == 0.0
    loss.backward()  # the graph is intact, so every rank of a DDP run can still call backward


@pytest.mark.parametrize("tie", [True, False])
def test_tied_head_and_save_load_round_trip(tmp_path, tie):
    cfg = ModelConfig(**{**vars(CFG), "tie_lm_head": tie})
    model = DitBertForMLM(cfg).eval()
    assert (model.head.decoder.weight is model.encoder.tok_emb.weight) == tie
    save_model(model, tmp_path, {"tokens_seen": 123})
    loaded = load_model(tmp_path).eval()
    ids = random_ids(2, 12)
    assert torch.equal(model.head(model.encoder(ids)), loaded.head(loaded.encoder(ids)))
    assert (loaded.head.decoder.weight is loaded.encoder.tok_emb.weight) == tie


def test_positions_start_as_sinusoids_at_the_token_embeddings_scale():
    model = DitBertForMLM(CFG)
    pos = model.encoder.pos_emb.weight
    scale = 0.02 * 2**0.5  # the token embeddings' std; sin/cos have std 1/sqrt(2)
    assert torch.allclose(pos[0, 1::2], torch.full((CFG.d_model // 2,), scale))  # cos(0) = 1
    assert torch.allclose(pos[:, 0], scale * torch.sin(torch.arange(CFG.max_positions, dtype=torch.float32)))
    token_std = model.encoder.tok_emb.weight[len(SPECIAL_TOKENS):].std().item()
    assert 0.5 < pos.std().item() / token_std < 2, "positions would drown the tokens after the embedding LayerNorm"


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)
    save_model(DitBertForMLM(CFG), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_model(tmp_path)


def test_parameter_table_counts_tied_weights_once():
    model = DitBertForMLM(CFG)
    table = parameter_table(model)
    total = sum(p.numel() for p in model.parameters())
    assert f"{total:,}" in table.splitlines()[-1]
    untied = DitBertForMLM(ModelConfig(**{**vars(CFG), "tie_lm_head": False}))
    assert sum(p.numel() for p in untied.parameters()) == total + 300 * 32


def test_set_dropout_reaches_every_layer():
    model = DitBertForMLM(CFG)
    set_dropout(model, 0.1)
    ps = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert ps and all(p == 0.1 for p in ps)
    assert all(b.attn.dropout == 0.1 for b in model.encoder.blocks)


def test_bad_head_count_is_an_error():
    with pytest.raises(ValueError, match="not divisible"):
        DitBertEncoder(ModelConfig(**{**vars(CFG), "n_heads": 5}))


def test_alibi_has_no_position_table_and_penalises_distance_per_head():
    model = DitBertForMLM(replace(CFG, position="alibi"))
    assert model.encoder.pos_emb is None
    assert not any("pos_emb" in k for k in model.state_dict())
    bias = alibi_bias(4, 6)[0]  # (nh, T, T)
    assert torch.equal(bias, bias.transpose(-1, -2)), "a bidirectional encoder looks both ways alike"
    assert (bias.diagonal(dim1=-2, dim2=-1) == 0).all()
    assert (bias[:, 0, 1:] < bias[:, 0, :-1]).all(), "farther tokens are penalised more"
    assert (bias[0, 0, 1:] < bias[-1, 0, 1:]).all(), "the first head looks nearer than the last"


def test_alibi_encoder_sees_word_order():
    """Without a position table the distance bias alone must tell the order of the tokens."""
    torch.manual_seed(0)
    enc = DitBertEncoder(replace(CFG, position="alibi")).eval()
    ids = random_ids(1, 10)
    swapped = ids.clone()
    swapped[0, [2, 6]] = ids[0, [6, 2]]
    assert not torch.allclose(enc(ids)[0, 1], enc(swapped)[0, 1], atol=1e-4)


def test_unknown_position_scheme_is_an_error():
    with pytest.raises(ValueError, match="model.position"):
        DitBertEncoder(replace(CFG, position="rotary"))
