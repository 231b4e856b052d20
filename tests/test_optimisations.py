"""Each speed switch leaves the results alone: the optimised and the plain path give the same
loss (and gradients, or weights after a step) on the same batch, within the dtype's tolerance.

The model is the `tiny` preset's shape made smaller (two layers) so each test takes a second on
two CPU cores; the switches are set through params.get_params, as a user sets them.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import model_defs
from model_defs import DitBertForMLM, kept_rows
from params import END_ID, PAD_ID, START_ID, get_params
from pretrain_data import mask_tokens
from runtime import adamw
from train_model import to_device

SMALL = {"model.n_layers": 2, "model.seq_len": 30, "model.vocab_size": 500}


def settings(**overrides):
    return get_params("tiny", {**SMALL, **{k.replace("__", "."): v for k, v in overrides.items()}})


def batch(p, n=4, padded=True, seed=0):
    """A masked batch; with `padded`, the last two rows end in padding (so attention masks matter)."""
    gen = torch.Generator().manual_seed(seed)
    T = p.model.max_positions
    ids = torch.randint(5, p.model.vocab_size, (n, T), generator=gen)
    ids[:, 0], ids[:, -1] = START_ID, END_ID
    if padded:
        ids[-2:, T // 2 :] = PAD_ID
    inputs, labels = mask_tokens(ids, p.model.vocab_size, 0.3, gen)
    return inputs, labels


def twin(p_plain, p_fast):
    """The same weights under two settings."""
    torch.manual_seed(0)
    plain = DitBertForMLM(p_plain.model)
    fast = DitBertForMLM(p_fast.model)
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def loss_and_grads(model, inputs, labels, runner=None):
    """Loss and gradients of `model`, run through `runner` (e.g. its compiled form) if given."""
    model.zero_grad(set_to_none=True)
    loss, _ = (model if runner is None else runner)(inputs, labels)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_same(a, b, atol):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    torch.testing.assert_close(loss_a, loss_b, atol=atol, rtol=0)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=atol, rtol=1e-4, msg=name)


def test_switches_keep_the_state_dict():
    """Speed switches live in ModelConfig only because they do not change the weights."""
    keys = set(DitBertForMLM(settings().model).state_dict())
    for override in ({"model.attention": "math"}, {"model.mlm_masked_only": False}):
        assert set(DitBertForMLM(get_params("tiny", {**SMALL, **override}).model).state_dict()) == keys


@pytest.mark.parametrize("position", ["learned", "alibi"])
def test_sdpa_matches_plain_attention(monkeypatch, position):
    p_plain = settings(model__attention="math", model__position=position)
    p_fast = settings(model__attention="sdpa", model__position=position)
    plain, fast = twin(p_plain, p_fast)
    inputs, labels = batch(p_fast)
    result_fast = loss_and_grads(fast, inputs, labels)
    # the setting really selects the path: the plain model never calls SDPA
    monkeypatch.setattr(model_defs.F, "scaled_dot_product_attention", lambda *a, **k: pytest.fail("SDPA called"))
    assert_same(loss_and_grads(plain, inputs, labels), result_fast, atol=1e-5)


def test_attention_setting_is_checked():
    with pytest.raises(ValueError, match="model.attention"):
        DitBertForMLM(settings(model__attention="flash").model)


def test_masked_only_head_matches_full_projection():
    plain, fast = twin(settings(model__mlm_masked_only=False), settings(model__mlm_masked_only=True))
    inputs, labels = batch(settings())
    result_plain, result_fast = loss_and_grads(plain, inputs, labels), loss_and_grads(fast, inputs, labels)
    assert_same(result_plain, result_fast, atol=1e-5)
    _, logits = fast(inputs, labels)
    assert logits.shape == (int(labels.ne(-100).sum()), settings().model.vocab_size)


@pytest.mark.parametrize("position", ["learned", "alibi"])
@pytest.mark.parametrize("attention", ["sdpa", "math"])
def test_masked_only_path_matches_with_padding_and_rows_without_masks(attention, position):
    """Padded sequences, and a row with no masked token, take the same numbers both ways
    (with ALiBi the kept queries must also keep their own rows of the distance bias)."""
    plain, fast = twin(settings(model__mlm_masked_only=False, model__attention=attention, model__position=position),
                       settings(model__mlm_masked_only=True, model__attention=attention, model__position=position))
    inputs, labels = batch(settings())
    inputs[0, 20:], labels[0, 20:] = PAD_ID, -100  # a padded row
    labels[1] = -100  # a row without masked tokens
    assert_same(loss_and_grads(plain, inputs, labels), loss_and_grads(fast, inputs, labels), atol=1e-5)


def test_kept_rows_gather_equals_boolean_selection():
    keep = torch.rand(5, 17, generator=torch.Generator().manual_seed(0)) < 0.2
    keep[2] = False
    x = torch.randn(5, 17, 3)
    rows, valid = kept_rows(keep)
    assert rows.shape[1] == int(keep.sum(1).max())
    assert torch.equal(x.gather(1, rows[..., None].expand(-1, -1, 3))[valid], x[keep])


def test_masked_only_head_computes_less():
    """The fast path really skips work: the last FFN sees only the masked positions."""
    p = settings()
    model = DitBertForMLM(p.model)
    inputs, labels = batch(p)
    seen, queries = [], []
    model.encoder.blocks[-1].ffn.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    model.encoder.blocks[-1].attn.out.register_forward_hook(lambda m, i, o: queries.append(i[0].shape[0]))
    model(inputs, labels)
    assert seen == queries == [int(labels.ne(-100).sum())]


@pytest.mark.parametrize("fused", [True, False])
def test_fused_adamw_matches_loop(fused):
    """After three steps on the same batch, fused and unfused AdamW hold the same weights."""
    p = settings()
    plain, fast = twin(p, p)
    inputs, labels = batch(p)
    start = plain.encoder.blocks[0].ffn.fc_in.weight.detach().clone()
    tc = p.train
    opts = [adamw(model, tc.lr, tc.weight_decay, tc.betas, tc.eps, fused=f) for model, f in ((plain, not fused), (fast, fused))]
    assert [o.defaults["fused"] for o in opts] == [not fused, fused]
    for _ in range(3):
        for model, opt in zip((plain, fast), opts):
            model(inputs, labels)[0].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for (name, a), b in zip(plain.named_parameters(), fast.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    assert not torch.equal(plain.encoder.blocks[0].ffn.fc_in.weight, start)  # the steps did move the weights


@pytest.mark.slow
def test_compile_matches_eager():
    """torch.compile (train.compile) gives the eager loss and gradients; one layer, as compiling
    on the CPU takes most of a minute whatever the size."""
    p = get_params("tiny", {**SMALL, "model.n_layers": 1, "model.d_model": 64, "model.d_ff": 128, "train.compile": True})
    eager = DitBertForMLM(p.model)
    twin_model = copy.deepcopy(eager)
    inputs, labels = batch(p, padded=False)
    assert_same(loss_and_grads(eager, inputs, labels),
                loss_and_grads(twin_model, inputs, labels, runner=torch.compile(twin_model)), atol=1e-4)


def test_bf16_autocast_matches_fp32_within_bf16_tolerance():
    """bf16 autocast is the GPU default; on the CPU the same autocast path runs, so its loss can be
    checked here against fp32 (bf16 keeps 8 bits of mantissa: about 1% relative)."""
    p = settings()
    torch.manual_seed(0)
    model = DitBertForMLM(p.model)
    inputs, labels = batch(p)
    loss32, _ = model(inputs, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16, logits16 = model(inputs, labels)
    assert logits16.dtype == torch.bfloat16  # the autocast really ran in bf16
    torch.testing.assert_close(loss16.float(), loss32, rtol=2e-2, atol=0)


def test_pinned_copy_keeps_the_values():
    p = settings()
    inputs, _ = batch(p)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert torch.equal(to_device(inputs, device).cpu(), inputs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TF32 is a CUDA setting")
def test_tf32_matches_fp32_within_tf32_tolerance():
    p = settings()
    torch.manual_seed(0)
    model = DitBertForMLM(p.model).cuda()
    inputs, labels = (t.cuda() for t in batch(p))
    losses = []
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        losses.append(model(inputs, labels)[0].item())
    torch.backends.cuda.matmul.allow_tf32 = False
    assert losses[0] == pytest.approx(losses[1], rel=5e-3)


def test_reference_attention_is_softmax_attention():
    """The plain path itself is right: it equals softmax(q k^T / sqrt(d)) v computed by hand."""
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=gen) for _ in range(3))
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[1, ..., 3:] = False
    out = model_defs.SelfAttention.reference_attention(q, k, v, mask, 0.0)
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / 2.0
    scores[1, :, :, 3:] = float("-inf")
    torch.testing.assert_close(out, torch.einsum("bhqk,bhkd->bhqd", F.softmax(scores, -1), v))
