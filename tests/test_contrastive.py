"""The contrastive (unsupervised SimCSE) phase after masked-LM pretraining."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import train_model
from model_defs import DitBertEncoder, contrastive_loss, load_model
from params import get_params

from test_pretrain import assert_same_weights, corpus_and_tokenizer, make_params, weights  # noqa: F401 (fixtures)


def test_contrastive_loss_is_log_batch_when_every_text_looks_the_same():
    cfg = get_params("tiny", {"model.n_layers": 1, "model.d_model": 16, "model.n_heads": 2, "model.d_ff": 32,
                              "model.vocab_size": 40}).model
    torch.manual_seed(0)
    encoder = DitBertEncoder(cfg).eval()
    same = torch.full((6, 10), 7)
    assert contrastive_loss(encoder, same, 0.05).item() == pytest.approx(math.log(6), rel=1e-4)
    different = torch.randint(5, 40, (6, 10))
    assert contrastive_loss(encoder, different, 0.05).item() < math.log(6) - 1.0


def mean_pairwise_cosine(encoder, ids):
    with torch.no_grad():
        pooled = F.normalize(encoder(ids).mean(1), dim=-1)
    sims = pooled @ pooled.T
    return float((sims.sum() - sims.diagonal().sum()) / (len(ids) * (len(ids) - 1)))


def test_phase_spreads_texts_apart_deterministically_and_restores_dropout(make_params):  # noqa: F811
    params = make_params("mlm", train__steps=30, train__warmup_steps=3, train__lr=3e-3, contrastive__steps=25,
                         contrastive__batch_size=16, contrastive__span_tokens=12, contrastive__lr=1e-3)
    summary = train_model.train(params, show_progress=False)
    assert summary["contrastive_steps"] == 25
    mlm_only = train_model.load_checkpoint(Path(params.train.out_dir) / "checkpoint.pt", params)["model"]
    before = load_model(summary["final_model"])
    before.load_state_dict(mlm_only)  # the model as MLM left it
    final = load_model(summary["final_model"])
    info = json.loads(open(f"{summary['final_model']}/config.json").read())
    assert info["contrastive_loss_last"] < info["contrastive_loss_first"]
    loader, _, _ = train_model.prepare_data(params)
    ids = loader.sequences(0, 24)[:, :14]
    ids[:, -1] = 2  # [END]
    assert mean_pairwise_cosine(final.encoder.eval(), ids) < mean_pairwise_cosine(before.encoder.eval(), ids) - 0.05
    # the phase again, on the MLM model: the same weights; and dropout back at the pretraining value
    train_model.contrastive_phase(before, params)
    assert_same_weights(before.state_dict(), final.state_dict())
    assert all(m.p == params.model.dropout for m in before.modules() if isinstance(m, torch.nn.Dropout))


def test_resumed_run_repeats_the_phase_exactly(make_params):  # noqa: F811
    settings = dict(train__steps=12, contrastive__steps=6, contrastive__batch_size=8, contrastive__span_tokens=12)
    straight = make_params("straight", **settings)
    train_model.train(straight, show_progress=False)
    split = make_params("split", **settings)
    train_model.train(split, stop_at=5, show_progress=False)
    train_model.train(split, resume=True, show_progress=False)
    assert_same_weights(weights(f"{straight.train.out_dir}/final"), weights(f"{split.train.out_dir}/final"))
    plain = make_params("plain", train__steps=12)
    train_model.train(plain, show_progress=False)
    a, b = weights(f"{straight.train.out_dir}/final"), weights(f"{plain.train.out_dir}/final")
    assert not torch.equal(a["encoder.blocks.0.ffn.fc_in.weight"], b["encoder.blocks.0.ffn.fc_in.weight"])
