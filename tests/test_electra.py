"""ELECTRA pretraining (model.generator_layers > 0): replaced-token detection beside a small generator."""

import pytest
import torch

import train_model
from model_defs import DitBertForMLM, load_model, mask_tokens, replace_masked
from params import PAD_ID, get_params

from test_pretrain import assert_same_weights, corpus_and_tokenizer, make_params, weights  # noqa: F401 (fixtures)

SMALL_MODEL = {"model.n_layers": 2, "model.d_model": 32, "model.n_heads": 2, "model.d_ff": 64, "model.seq_len": 14,
               "model.vocab_size": 50}


def small_cfg(**overrides):
    return get_params("tiny", {**SMALL_MODEL, **overrides}).model


def test_a_seed_gives_the_same_encoder_with_or_without_a_generator():
    """The random-init twin of an ELECTRA run is the twin of the MLM run: the generator is made after."""
    torch.manual_seed(7)
    plain = DitBertForMLM(small_cfg())
    torch.manual_seed(7)
    electra = DitBertForMLM(small_cfg(**{"model.generator_layers": 1}))
    assert_same_weights(plain.encoder.state_dict(), electra.encoder.state_dict())
    assert any(k.startswith("generator.") for k in electra.state_dict())
    assert not any(k.startswith(("generator.", "rtd_head.")) for k in plain.state_dict())


def test_replace_masked_fills_only_masked_positions_and_marks_real_replacements():
    original = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    masked = torch.tensor([[True, False, True, False], [False, False, False, True]])
    # logits certain of the original token at the first two masked positions, of token 20 at the third
    logits = torch.full((3, 30), -1e4)
    logits[0, 5], logits[1, 7], logits[2, 20] = 0.0, 0.0, 0.0
    corrupted, replaced = replace_masked(original, masked, logits)
    assert corrupted.tolist() == [[5, 6, 7, 8], [9, 10, 11, 20]]
    assert replaced.tolist() == [[False] * 4, [False, False, False, True]]


def test_loss_is_generator_mlm_plus_weighted_detection_and_reaches_every_part():
    torch.manual_seed(0)
    model = DitBertForMLM(small_cfg(**{"model.generator_layers": 1, "model.rtd_weight": 50.0}))
    ids = torch.randint(5, 50, (4, 16))
    ids[3, 12:] = PAD_ID
    inputs, labels = mask_tokens(ids, 50, 0.3, torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    loss, logits = model(inputs, labels)
    masked = labels.ne(-100)
    mlm = torch.nn.functional.cross_entropy(logits, labels[masked])
    torch.manual_seed(3)  # the same samples again
    rtd = model.detection_loss(inputs, labels, model.mlm_logits(inputs, masked))
    assert loss.item() == pytest.approx(mlm.item() + 50.0 * rtd.item(), rel=1e-5)
    loss.backward()
    for name in ("generator.0.ffn.fc_in.weight", "rtd_head.weight", "encoder.blocks.1.ffn.fc_in.weight",
                 "encoder.tok_emb.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_detection_loss_ignores_padding():
    torch.manual_seed(0)
    model = DitBertForMLM(small_cfg(**{"model.generator_layers": 1}))
    ids = torch.randint(5, 50, (2, 16))
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    logits = torch.zeros(2, 50)
    padded = ids.clone()
    padded[:, 10:] = PAD_ID
    torch.manual_seed(1)
    b = model.detection_loss(padded, labels, logits)
    # the loss over the first 10 positions alone equals the loss of the padded sequence
    torch.manual_seed(1)
    c = model.detection_loss(padded[:, :10], labels[:, :10], logits)
    assert torch.isfinite(b) and b.item() == pytest.approx(c.item(), rel=1e-5)


def test_electra_pretraining_learns_resumes_exactly_and_saves_a_loadable_model(make_params):  # noqa: F811
    straight = make_params("electra", model__generator_layers=1, train__mask_prob=0.15, train__steps=30,
                           train__warmup_steps=3, train__lr=3e-3, train__eval_every=30)
    summary = train_model.train(straight, show_progress=False)
    rows = [line.split(",") for line in open(f"{straight.train.out_dir}/log.csv").read().splitlines()[1:]]
    assert float(rows[-1][1]) < float(rows[0][1]) - 1.0  # the combined loss falls
    assert summary["val_ppl"] < 0.7 * straight.model.vocab_size, summary  # the generator's perplexity
    final = load_model(summary["final_model"])
    assert final.cfg.generator_layers == 1
    assert rows[-1][train_model.LOG_COLUMNS.index("val_detection_auc")] == str(summary["val_detection_auc"])
    assert 0.0 <= summary["val_detection_auc"] <= 1.0
    split = make_params("electra-split", model__generator_layers=1, train__mask_prob=0.15, train__steps=30,
                        train__warmup_steps=3, train__lr=3e-3, train__eval_every=30)
    train_model.train(split, stop_at=11, show_progress=False)
    train_model.train(split, resume=True, show_progress=False)  # the sampling RNG comes back with the checkpoint
    assert_same_weights(weights(f"{straight.train.out_dir}/final"), weights(f"{split.train.out_dir}/final"))


def test_export_of_an_electra_model_is_refused_by_name():
    import hf_ditbert

    with pytest.raises(ValueError, match="ELECTRA"):
        hf_ditbert.to_hf(DitBertForMLM(small_cfg(**{"model.generator_layers": 1})))


def test_validation_detection_auc_counts_ranked_pairs_and_leaves_the_training_rng_alone():
    torch.manual_seed(0)
    params = get_params("tiny", {**SMALL_MODEL, "model.generator_layers": 1, "train.micro_batch": 3})
    model = DitBertForMLM(params.model)
    ids = torch.randint(5, 50, (8, 14))
    ids[7, 9:] = PAD_ID
    val_batch = mask_tokens(ids, 50, 0.4, torch.Generator().manual_seed(2))
    rng = torch.random.get_rng_state()
    _, auc = train_model.validate(model, val_batch, params, torch.device("cpu"), torch.float32)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert model.training
    # by hand, in one batch: the share of (replaced, original) pairs the head ranks the right way round
    inputs, labels = val_batch
    model.eval()
    with torch.no_grad():
        sampler = torch.Generator().manual_seed(train_model.VAL_MASK_SEED)
        scores, replaced = [], []
        for start in range(0, 8, 3):  # the same micro-batches, so the same samples
            x, y = inputs[start : start + 3], labels[start : start + 3]
            s, r = model.detect(x, y, model.mlm_logits(x, y.ne(-100)), generator=sampler)
            scores.append(s)
            replaced.append(r)
    scores, replaced = torch.cat(scores), torch.cat(replaced)
    assert 0 < replaced.sum() < len(replaced)
    pos, neg = scores[replaced], scores[~replaced]
    wins = (pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :]).float()
    assert auc == pytest.approx(wins.mean().item(), abs=1e-6)
