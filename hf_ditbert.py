"""DitBERT as a Hugging Face ``transformers`` model.

Inside this repository the classes below wrap the one encoder of ``model_defs.py``
(`DitBertEncoder`, `MLMHead`) and the task heads of ``glue_heads.py`` (the sequence classifier's
head is the one the repository's loop trains: pooling, pair features, the pair encodings and
the similarity head), and are registered
with the Auto classes on import (the bare encoder, masked LM, sequence and token classification,
question answering, multiple choice), so ``AutoModelForMaskedLM.from_pretrained(dir)`` works
after ``import hf_ditbert``. They take transformers' standard forward arguments
(``output_hidden_states``, ``output_attentions``, ``inputs_embeds``, ``return_dict``), both
attention implementations (``sdpa``, ``eager``) and gradient checkpointing; the config carries
the repository's fine-tuning recipe, so a fresh task model starts as its own loop starts one.

``hf_export.py`` writes a trained model as a folder that loads without this repository: it
generates the modeling code from the source of these classes (docs/huggingface.md).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

import glue_tasks
import model_defs
import params
import tokenization
from glue_heads import DitBertClassifier, HeadConfig, SimilarityHead, task_head
from model_defs import DitBertEncoder, MLMHead, init_weights, pool_hidden, set_dropout
from params import PAD_ID, PAIR_ENCODINGS, POOLINGS, FinetuneConfig, ModelConfig

# --------------------------------------------------------------------------- configuration


class DitBertConfig(PretrainedConfig):
    """The settings of `params.ModelConfig` under the same names, plus the fine-tuning recipe.

    `attribute_map` lets generic transformers code read the usual names
    (``hidden_size``, ``tie_word_embeddings``...) without a second copy of each value.

    The recipe is what the repository's own fine-tuning loop does with the model, so that a
    classifier made by ``from_pretrained`` starts the same way: `pooling`, `finetune_dropout` (the
    encoder's dropout in every task model; `dropout` is pretraining's, which the MLM and the bare
    encoder keep), `classifier_dropout` (before the task layer), and for two-text tasks
    `pair_features` (the head reads ``[u, v, |u - v|, u * v]`` of the two texts pooled apart) with
    `pair_encoding` (``joint``: one input ``[START] a [DOC] b [END]``; ``separate``: each text
    encoded on its own; ``by_task``: separate for the similarity tasks, joint for the others), and
    `similarity_head` (a regression on two texts scores ``scale * cosine + bias`` of the texts).
    Whether a task has two texts, and which it is, comes from `text_pairs` or else from
    ``finetuning_task`` (a GLUE name, as run_glue.py sets it with ``--task_name``): `head_config`.
    """

    model_type = "ditbert"
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
        "intermediate_size": "d_ff",
        "tie_word_embeddings": "tie_lm_head",
    }

    def __init__(
        self,
        vocab_size: int = 32768,
        seq_len: int = 128,
        n_layers: int = 12,
        d_model: int = 768,
        n_heads: int = 12,
        d_ff: int = 3072,
        dropout: float = 0.0,
        tie_lm_head: bool = True,
        layer_norm_eps: float = 1e-5,
        position: str = "learned",
        classifier_dropout: float = 0.1,
        pooling: str = "cls",
        initializer_range: float = 0.02,
        finetune_dropout: float = 0.1,
        pair_features: bool = False,
        pair_encoding: str = "joint",
        similarity_head: bool = False,
        text_pairs: bool | None = None,
        finetuning_task: str | None = None,
        **kwargs,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if pair_encoding not in PAIR_ENCODINGS:
            raise ValueError(f"pair_encoding must be one of {PAIR_ENCODINGS}, got {pair_encoding!r}")
        self.vocab_size = vocab_size
        self.seq_len = seq_len  # text tokens per sequence; the model holds seq_len + 2 positions
        self.n_layers = n_layers
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_ff = d_ff
        self.dropout = dropout
        self.tie_lm_head = tie_lm_head
        self.layer_norm_eps = layer_norm_eps
        self.position = position  # learned: a position table; alibi: a distance penalty in attention
        self.classifier_dropout = classifier_dropout  # dropout before the classification layer
        self.pooling = pooling  # cls: the [START] vector; mean: the average over real tokens
        self.initializer_range = initializer_range  # std of newly created weights (BERT's 0.02)
        self.finetune_dropout = finetune_dropout  # encoder dropout of the task models
        self.pair_features = pair_features  # two-text tasks: the head reads [u, v, |u - v|, u * v]
        self.pair_encoding = pair_encoding  # two-text tasks with pair features: joint | separate | by_task
        self.similarity_head = similarity_head  # regression on two texts: scale * cosine + bias
        self.text_pairs = text_pairs  # the task has two texts; None = decided by finetuning_task
        kwargs.setdefault("pad_token_id", 0)  # [PAD]
        kwargs.setdefault("bos_token_id", 1)  # [START]
        kwargs.setdefault("eos_token_id", 2)  # [END]
        super().__init__(**kwargs)
        # the task's name, as run_glue.py gives it; an attribute of its own, since from_pretrained drops
        # keyword arguments that a config does not have
        self.finetuning_task = finetuning_task


# --------------------------------------------------------------------------- models

# The GLUE tasks by their names in run_glue.py (``finetuning_task``): which have two texts, and which of
# those ask how alike the texts are (glue_tasks: Task.similarity), for the pair recipe (`pair_recipe`).
GLUE_TWO_TEXT_TASKS = tuple(sorted(name for name, task in glue_tasks.TASKS.items() if len(task.text_columns) == 2))
SIMILARITY_TASKS = tuple(sorted(name for name, task in glue_tasks.TASKS.items() if task.similarity))


def core_config(config: DitBertConfig) -> ModelConfig:
    """The `ModelConfig` the core encoder is built from, read off the HF config (a setting the
    config lacks, e.g. one added to ModelConfig after the export, takes ModelConfig's default)."""
    return ModelConfig(**{f.name: getattr(config, f.name, f.default) for f in dataclasses.fields(ModelConfig)})


def head_config(config: DitBertConfig) -> HeadConfig:
    """The head of a sequence classifier for the task of `config`, decided as the repository's loop
    decides it (`glue_heads.HeadConfig.recipe`): the pair features, the similarity head and the pair
    encoding of the recipe on a task with two texts -- `text_pairs`, or else a two-text GLUE task named
    by ``finetuning_task`` -- where ``by_task`` encodes a similarity task's texts separately and the
    others' jointly; one pooled vector of the joint input otherwise (a task of one text, or one the
    config does not name: run_glue.py with local files sets no ``finetuning_task``)."""
    task = str(getattr(config, "finetuning_task", None) or "").lower()
    text_pairs = getattr(config, "text_pairs", None)
    return HeadConfig.recipe(
        config.num_labels, two_texts=text_pairs if text_pairs is not None else task in GLUE_TWO_TEXT_TASKS,
        similar_texts=task in SIMILARITY_TASKS, pooling=config.pooling,
        pair_features=getattr(config, "pair_features", False), similarity_head=getattr(config, "similarity_head", False),
        pair_encoding=getattr(config, "pair_encoding", "joint"), dropout=config.classifier_dropout)


def real_tokens(input_ids, attention_mask, inputs_embeds=None) -> torch.Tensor:
    """The (B, T) mask of real tokens: the attention mask, else the non-padding ids, else every
    position of `inputs_embeds`."""
    if attention_mask is not None:
        return attention_mask
    if input_ids is not None:
        return input_ids.ne(PAD_ID).long()
    return torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)


def chosen(value, default):
    """A forward argument, or the config's setting when it is None (transformers' convention)."""
    return default if value is None else value


class DitBertPreTrainedModel(PreTrainedModel):
    """Shared base: new weights (a task head on a pretrained encoder, every weight of a model made
    from a config) get `model_defs.init_weights`, BERT's normal(0, initializer_range) with zero
    biases and unit LayerNorms, and a new similarity head scale 1 and bias 0 (`_init_weights`).

    Attention: ``attn_implementation="sdpa"`` (the default) runs torch's scaled_dot_product_attention;
    ``"eager"`` the written-out softmax, which forms the weights. ``output_attentions=True`` computes
    the weights on the written-out path whichever is set. Gradient checkpointing recomputes each
    block in the backward pass (``gradient_checkpointing_enable()``)."""

    config_class = DitBertConfig
    base_model_prefix = "ditbert"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["Block"]

    def _init_weights(self, module):
        """Initialise `module`'s new weights. transformers calls this for the modules whose weights a
        checkpoint did not hold; 5.x also for modules whose own weights it has read, marked
        ``_is_hf_initialized``, which are left as they are."""
        own = list(module.parameters(recurse=False))
        if own and all(getattr(p, "_is_hf_initialized", False) for p in own):
            return
        if isinstance(module, SimilarityHead):
            module.reset_parameters()
        else:
            init_weights(module, self.config.initializer_range)

    def encoder_outputs(self, input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states):
        """The bare encoder's `BaseModelOutput` for a task head (`self.ditbert`)."""
        return self.ditbert(input_ids, attention_mask, inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states, return_dict=True)

    def finish(self, output, return_dict):
        """`output` as a ModelOutput, or as a tuple when return_dict (or config.return_dict) is False."""
        return output if chosen(return_dict, self.config.return_dict) else output.to_tuple()


class DitBertModel(DitBertPreTrainedModel):
    """The bare encoder: hidden states after the final LayerNorm, shape (B, T, d_model)."""

    _keys_to_ignore_on_load_unexpected = [r"^head\."]  # an exported MLM model's head is not needed here

    def __init__(self, config: DitBertConfig):
        super().__init__(config)
        self.encoder = DitBertEncoder(core_config(config))
        self.post_init()

    def get_input_embeddings(self):
        return self.encoder.tok_emb

    def set_input_embeddings(self, value):
        self.encoder.tok_emb = value

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        """`token_type_ids` is accepted and ignored: DitBERT has no segment embeddings, a pair is
        told apart by the [DOC] token between its two texts. `hidden_states` (when asked for, or
        config.output_hidden_states): the embedding layer's output, then each block's, the last
        after the final LayerNorm (= last_hidden_state). `attentions`: each block's (B, heads, T, T)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give either input_ids or inputs_embeds")
        output_attentions = bool(chosen(output_attentions, self.config.output_attentions))
        output_hidden_states = bool(chosen(output_hidden_states, self.config.output_hidden_states))
        written_out = output_attentions or getattr(self.config, "_attn_implementation", None) == "eager"
        states, weights = self.encoder.layer_states(input_ids, attention_mask, inputs_embeds, need_weights=written_out)
        out = BaseModelOutput(last_hidden_state=states[-1], hidden_states=tuple(states) if output_hidden_states else None,
                              attentions=tuple(weights) if output_attentions else None)
        return self.finish(out, return_dict)


class DitBertForMaskedLM(DitBertPreTrainedModel):
    """Encoder + the pretraining MLM head, logits at every position (B, T, vocab)."""

    _tied_weights_keys = {"head.decoder.weight": "ditbert.encoder.tok_emb.weight"}

    def __init__(self, config: DitBertConfig):
        super().__init__(config)
        self.ditbert = DitBertModel(config)
        self.head = MLMHead(core_config(config), self.ditbert.encoder.tok_emb)
        self.post_init()

    def get_output_embeddings(self):
        return self.head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.head.decoder = new_embeddings

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        """Loss (when `labels` is given; -100 = no prediction asked) and logits at all positions."""
        out = self.encoder_outputs(input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states)
        logits = self.head(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.view(-1))
        result = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        return self.finish(result, return_dict)


class DitBertTaskModel(DitBertPreTrainedModel):
    """Base of the fine-tuning heads: the encoder with the recipe's dropout (config.finetune_dropout);
    each head adds dropout before its task layer (config.classifier_dropout)."""

    _keys_to_ignore_on_load_unexpected = [r"^head\."]  # the MLM head is replaced by the task's

    def __init__(self, config: DitBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.ditbert = DitBertModel(config)
        set_dropout(self.ditbert, config.finetune_dropout)


class DitBertForSequenceClassification(DitBertTaskModel):
    """The encoder with the head of the repository's own classifier (glue_heads.DitBertClassifier):
    `classifier` is a `glue_heads.LinearHead` -- pooled vector (config.pooling) -> dropout -> linear
    layer to `num_labels` scores -- or a `glue_heads.SimilarityHead`, as `head_config` decides from
    the config.

    With pair features each text of a pair is pooled on its own into u and v, both scaled to length
    sqrt(d_model), and the layer reads ``[u, v, |u - v|, u * v]``; the similarity head scores
    ``scale * cosine + bias`` of the two texts. The texts are found by the [DOC] token between them,
    in the joint input or, with the separate encoding, each encoded on its own.

    The loss follows transformers' convention: regression (MSE) for one label,
    cross-entropy for integer labels, BCE for multi-label float targets.
    """

    def __init__(self, config: DitBertConfig):
        super().__init__(config)
        self.classifier = task_head(config.d_model, head_config(config))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        """Scores (B, num_labels) and, with `labels`, the loss. With the separate encoding the texts are
        one batch of 2B rows, first texts then second texts, which `hidden_states` and `attentions` show."""
        head = self.classifier
        if head.config.reads_pairs and input_ids is None:
            raise ValueError("the pair head finds the two texts by the [DOC] token in input_ids: give input_ids")
        ids, mask = input_ids, real_tokens(input_ids, attention_mask, inputs_embeds)
        if input_ids is not None:
            ids, mask = head.encoder_rows(input_ids, mask)
        out = self.encoder_outputs(ids, mask, inputs_embeds, output_attentions, output_hidden_states)
        embedded = self.ditbert.encoder.embed(ids) if head.reads_embeddings else None
        logits = head(out.last_hidden_state, ids, mask, embedded)
        loss = None if labels is None else self.classification_loss(logits, labels)
        result = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                          attentions=out.attentions)
        return self.finish(result, return_dict)

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
        if self.config.problem_type == "single_label_classification":
            return F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class DitBertForTokenClassification(DitBertTaskModel):
    """Encoder -> dropout -> linear layer: `num_labels` scores at every token (B, T, num_labels);
    labels of -100 (special tokens, a word's later pieces) are not scored."""

    def __init__(self, config: DitBertConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        out = self.encoder_outputs(input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1))
        result = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        return self.finish(result, return_dict)


class DitBertForQuestionAnswering(DitBertTaskModel):
    """Extractive question answering: encoder -> dropout -> linear layer to a start and an end score
    at every token. The loss is the mean of the start's and the end's cross-entropy; a position
    outside the input (an answer cut off by truncation) is not scored."""

    def __init__(self, config: DitBertConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.qa_outputs = nn.Linear(config.d_model, 2)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None,
                start_positions=None, end_positions=None, output_attentions=None, output_hidden_states=None,
                return_dict=None):
        out = self.encoder_outputs(input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states)
        start_logits, end_logits = (x.squeeze(-1).contiguous() for x in self.qa_outputs(self.dropout(out.last_hidden_state)).split(1, -1))
        loss = None
        if start_positions is not None and end_positions is not None:
            outside = start_logits.size(1)
            loss = sum(F.cross_entropy(scores.float(), positions.view(-1).clamp(0, outside), ignore_index=outside)
                       for scores, positions in ((start_logits, start_positions), (end_logits, end_positions))) / 2
        result = QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                              hidden_states=out.hidden_states, attentions=out.attentions)
        return self.finish(result, return_dict)


class DitBertForMultipleChoice(DitBertTaskModel):
    """input_ids (B, C, T): C candidate inputs per example (``[START] context [DOC] choice [END]``), each
    pooled (config.pooling) -> dropout -> linear layer to one score: (B, C), cross-entropy over the C."""

    def __init__(self, config: DitBertConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.d_model, 1)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        choices = (input_ids if input_ids is not None else inputs_embeds).shape[1]

        def flat(x):
            return None if x is None else x.reshape(-1, *x.shape[2:])

        ids, embeds = flat(input_ids), flat(inputs_embeds)
        mask = real_tokens(ids, flat(attention_mask), embeds)
        out = self.encoder_outputs(ids, mask, embeds, output_attentions, output_hidden_states)
        pooled = pool_hidden(out.last_hidden_state, mask, self.config.pooling)
        logits = self.classifier(self.dropout(pooled)).view(-1, choices)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels.view(-1))
        result = MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                           attentions=out.attentions)
        return self.finish(result, return_dict)


TASK_AUTO_CLASSES = {
    AutoModel: DitBertModel,
    AutoModelForMaskedLM: DitBertForMaskedLM,
    AutoModelForSequenceClassification: DitBertForSequenceClassification,
    AutoModelForTokenClassification: DitBertForTokenClassification,
    AutoModelForQuestionAnswering: DitBertForQuestionAnswering,
    AutoModelForMultipleChoice: DitBertForMultipleChoice,
}


def register_auto_classes() -> None:
    """Let AutoConfig / AutoModel* resolve ``model_type: ditbert`` to the classes above."""
    AutoConfig.register(DitBertConfig.model_type, DitBertConfig, exist_ok=True)
    for auto_class, model_class in TASK_AUTO_CLASSES.items():
        auto_class.register(DitBertConfig, model_class, exist_ok=True)


register_auto_classes()

# --------------------------------------------------------------------------- tokenizer


def wrap_tokenizer(tokenizer_path: str | Path, model_max_length: int | None) -> PreTrainedTokenizerFast:
    """The trained ``tokenizer.json`` as a transformers tokenizer with DitBERT's special tokens.

    The pair template ``[START] a [DOC] b [END]`` comes from the file's own post-processor.
    [MASK] and [DOC] are made to absorb the space before them (as RoBERTa's <mask> does): in
    pretraining a masked word took its leading space with it, so ``"... is [MASK]."`` must not
    leave a lone space token before the mask; and the text after a special token is encoded as
    it is anywhere else (`with_first_piece_space`). `model_max_length`: the most tokens the model
    takes, which ``truncation=True`` cuts to (a learned position table's rows); None for ALiBi,
    which has no such limit.
    """
    from tokenizers import AddedToken, Tokenizer

    backend = tokenization.load_tokenizer(tokenizer_path)  # checks the special ids 0..4
    backend = Tokenizer.from_str(json.dumps(with_first_piece_space(json.loads(backend.to_str()))))
    backend.add_special_tokens([AddedToken(token, lstrip=True, special=True) for token in ("[MASK]", "[DOC]")])
    limit = {} if model_max_length is None else {"model_max_length": model_max_length}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        mask_token="[MASK]",
        cls_token="[START]",
        bos_token="[START]",
        sep_token="[END]",
        eos_token="[END]",
        extra_special_tokens=["[DOC]"],
        padding_side="right",
        model_input_names=["input_ids", "attention_mask"],
        **limit,
    )


def with_first_piece_space(spec: dict) -> dict:
    """A tokenizer.json's spec whose ByteLevel pre-tokenizer puts a space before every piece of a text
    (what `tokenization.build_tokenizer` wrote before `tokenization.first_piece_space`), rewritten to put
    it before the first piece only. A text without special tokens is one piece, whose tokens do not
    change; in ``is [MASK].`` the piece ``.`` no longer becomes ``Ġ.`` (``is good.`` ends in ``.``)."""
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if not any(step.get("type") == "ByteLevel" and step.get("add_prefix_space") for step in steps):
        return spec
    first = json.loads(tokenization.first_piece_space().__getstate__())
    rewritten = []
    for step in steps:
        if step.get("type") == "ByteLevel" and step.get("add_prefix_space"):
            rewritten += [first, {**step, "add_prefix_space": False}]
        else:
            rewritten.append(step)
    return {**spec, "pre_tokenizer": {"type": "Sequence", "pretokenizers": rewritten}}


def make_tokenizer_config_portable(path: Path) -> None:
    """Rewrite ``tokenizer_config.json`` in the names both transformers 4.x and 5.x read.

    transformers 5 saves ``tokenizer_class: TokenizersBackend`` and a list of
    ``extra_special_tokens``; 4.x knows neither, while 5.x still accepts the older
    ``PreTrainedTokenizerFast`` and ``additional_special_tokens``.
    """
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, list) and extra:
        config["additional_special_tokens"] = extra
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- the core model's record


def finetune_settings(extras: dict) -> dict:
    """The fine-tuning settings (params.py's ``finetune`` section) the model was made for: those its
    training recorded, else its preset's, else FinetuneConfig's defaults (settings that FinetuneConfig
    no longer has are left out)."""
    run_params = extras.get("params") or {}
    preset = run_params.get("preset") or extras.get("preset")
    base = params.get_params(preset).finetune if preset in params.PRESETS else FinetuneConfig()
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    recorded = {k: v for k, v in (run_params.get("finetune") or {}).items() if k in known}
    return {**dataclasses.asdict(base), **recorded}


def recipe_config(finetune: dict) -> dict:
    """The DitBertConfig settings that make a fresh task model start as the repository's loop starts
    one: its pooling, its dropout in the encoder and before the head, and its pair head. The
    similarity head stays off whatever the recipe says: the loop fits its scale and bias to the
    training pairs before fine-tuning (glue_utils.fit_similarity), a step the Trainer does not take,
    and a head left at scale 1 and bias 0 is worse than the pair head (glue_heads.SimilarityHead)."""
    return {"pooling": finetune["pooling"], "finetune_dropout": finetune["dropout"],
            "classifier_dropout": finetune["dropout"], "pair_features": finetune["pair_features"],
            "pair_encoding": finetune["pair_encoding"], "similarity_head": False}


def to_hf(core: model_defs.DitBertForMLM, recipe: dict | None = None) -> DitBertForMaskedLM:
    """A `DitBertForMaskedLM` holding exactly the core model's weights, its config carrying `recipe`
    (`recipe_config`)."""
    config = DitBertConfig(**dataclasses.asdict(core.cfg), **(recipe or {}), architectures=["DitBertForMaskedLM"])
    model = DitBertForMaskedLM(config)
    model.ditbert.encoder.load_state_dict(core.encoder.state_dict())
    model.head.load_state_dict(core.head.state_dict())
    return model.eval()


def classifier_recipe(head: HeadConfig) -> dict:
    """The DitBertConfig settings under which `head_config` gives `head` back exactly: its own settings,
    its task's texts declared two (`text_pairs`) where it reads them apart, and its dropout in the
    encoder too (the loop's finetune.dropout is both)."""
    return {"pooling": head.pooling, "pair_features": head.pair_features, "similarity_head": head.similarity_head,
            "pair_encoding": head.pair_encoding, "text_pairs": head.reads_pairs, "finetune_dropout": head.dropout,
            "classifier_dropout": head.dropout}


def classifier_to_hf(model: DitBertClassifier, task: str | None = None,
                     label_names=()) -> DitBertForSequenceClassification:
    """The transformers classifier holding exactly the weights of `model`, a classifier the repository's
    loop fine-tuned on `task` (its name; `label_names` in label order name the outputs), with the
    same head: the same scores for the same input ids."""
    head = model.head_config
    labels = {"id2label": dict(enumerate(label_names))} if len(label_names) == head.num_labels > 1 else {
        "num_labels": head.num_labels}
    config = DitBertConfig(**dataclasses.asdict(model.cfg), **classifier_recipe(head), finetuning_task=task,
                           problem_type="regression" if head.regression else "single_label_classification",
                           architectures=["DitBertForSequenceClassification"], **labels)
    exported = DitBertForSequenceClassification(config)
    if exported.classifier.config != head:
        raise ValueError(f"the config gives the head {exported.classifier.config}, not the model's {head}")
    exported.ditbert.encoder.load_state_dict(model.encoder.state_dict())
    exported.classifier.load_state_dict(model.head.state_dict())
    return exported.eval()
