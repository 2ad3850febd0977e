"""The federated model: a frozen backbone with LoRA at r_max, a pooled task head, and rank masking.

Rank masking
------------
Every model carries LoRA at `r_max`. A client assigned rank r trains only the first r dimensions:
rows r.. of each A and columns r.. of each B are set to exactly zero when the (truncated) global
adapter is loaded, and gradient hooks multiply the gradients of A and B by a 0/1 rank mask, so those
entries receive no gradient and stay exactly zero under AdamW/Adam/SGD (zero gradient, zero moments,
and weight decay of zero is zero). The inactive dimensions therefore contribute nothing to the
forward pass. Changing a client's rank is an in-place update of one mask vector: nothing is rebuilt.

LoRA scaling rule
-----------------
peft scales the update by alpha / r with r = r_max. We keep that constant scale for every client,
whatever its active rank: dW = (alpha / r_max) * B[:, :r] @ A[:r]. Rank slices then mean the same
thing on every client and on the server, so truncation, zero-padding and averaging of slices are
consistent (a slice's contribution does not change when a client's rank changes). A masked rank-r
client is therefore exactly a genuine rank-r LoRA with alpha' = alpha * r / r_max (tested). The
alternative (alpha / r per client) would rescale the same global slice differently on each client.
"""

from __future__ import annotations

import logging
import warnings
from typing import Mapping, Optional

import torch
from torch import nn

from fedranklite.federation.memory import MemoryProfile
from fedranklite.federation.ranks import State, rank_dim
from fedranklite.model.backbones import Backbone, ModelError, load_backbone
from fedranklite.model.verbalizer import Verbalizer, VerbalizerError, VerbalizerHead, choose_verbalizer, logit_transform

log = logging.getLogger(__name__)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """(batch, seq, hidden) -> (batch, hidden) by mean over real tokens, the last real token, or CLS."""
    if how == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    if how == "last":
        last = attention_mask.sum(1).long().clamp_min(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if how == "cls":
        return hidden[:, 0]
    raise ValueError(f"unknown pooling {how!r}")


# Siamese pair head: the cosine of the two embeddings enters the head as a similarity s*cos and a distance
# s*(1 - cos). The scale s lets the head lean on the cosine within a few Adam steps at LoRA learning rates
# (the role of the scale in SBERT/CoSENT cosine losses); the distance copy turns the threshold on the
# cosine into a weight that learns at the same scaled rate (a bias would move s times slower and the
# head would drift to the majority class before the threshold caught up).
COSINE_SCALE = 10.0
PAIR_EXTRA = 2  # pair_features width beyond 2 x hidden


def pair_features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Features of a sentence pair from its two pooled embeddings: [s cos, s (1 - cos), |u^ - v^|, u^ * v^]
    on the L2-normalised embeddings u^, v^ (the sentence-transformers recipe plus the cosine itself)."""
    u, v = nn.functional.normalize(u, dim=-1), nn.functional.normalize(v, dim=-1)
    cos = (u * v).sum(-1, keepdim=True)
    return torch.cat([COSINE_SCALE * cos, COSINE_SCALE * (1 - cos), (u - v).abs(), u * v], dim=-1)


class FedModel(nn.Module):
    """Backbone (frozen) + LoRA at r_max (masked to the active rank) + pooled linear head.

    Sentence pairs are read either as one sequence (`siamese=False`, a cross-encoder: the way causal LMs
    and generic encoders see them) or, `siamese=True`, each sentence encoded on its own and the head fed
    `pair_features` of the two embeddings: the way sentence-transformers checkpoints were trained, whose
    zero-shot cosine already carries most of STS-B and RTE's signal."""

    def __init__(
        self,
        backbone: Backbone,
        num_labels: int,
        r_max: int,
        alpha: float,
        dropout: float,
        target_modules: list[str],
        head_dropout: float = 0.1,
        quantized: bool = False,
        siamese: bool = False,
        verbalizer: Optional[Verbalizer] = None,
    ):
        super().__init__()
        import peft

        model = backbone.model
        if quantized:
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
            # bitsandbytes (0.50) repacks a 4-bit weight into an inference-only CPU layout on the first
            # eval/no-grad forward on AVX512-BF16 CPUs; training after that fails ("a view of a leaf
            # Variable ... in-place"). Clients alternate probe (eval) and training: keep the trainable layout.
            for module in model.modules():
                if hasattr(module, "support_avx512bf16_for_cpu"):
                    module.support_avx512bf16_for_cpu = False
        lora = peft.LoraConfig(
            r=r_max, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, bias="none"
        )
        try:
            with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
                warnings.simplefilter("ignore", FutureWarning)
                self.backbone = peft.get_peft_model(model, lora)
        except ValueError as exc:
            raise ModelError(f"model.lora.target_modules={target_modules}: {exc}") from None
        self.tokenizer = backbone.tokenizer
        self.pooling = backbone.pooling
        self.source = backbone.source
        hidden = model.config.hidden_size
        if verbalizer is not None:
            # label-word scoring: the answer is the next token after the prompt's last one, read by the
            # backbone's own LM head; nothing new to initialise, one prompt per row (never siamese)
            if backbone.lm_head is None:
                raise ModelError("model.head: verbalizer needs the backbone loaded with its LM head")
            if self.pooling != "last" or siamese:
                log.warning(
                    "label-word scoring reads the last token of one prompt per row: pooling %r%s not used",
                    self.pooling,
                    " and siamese pairs are" if siamese else " is",
                )
            self.pooling, self.siamese = "last", False
            verbalizer = verbalizer.for_tokenizer(self.tokenizer)
            scale, softcap = logit_transform(model.config)
            self.head = VerbalizerHead(
                backbone.lm_head,
                verbalizer.label_token_ids(self.tokenizer),
                verbalizer.label_values,
                scale,
                softcap,
                verbalizer.regression_loss,
            )
        else:
            self.siamese = bool(siamese)
            self.head = nn.Sequential(
                nn.Dropout(head_dropout), nn.Linear(2 * hidden + PAIR_EXTRA if siamese else hidden, num_labels)
            )
            if siamese:  # start from a constant prediction: the first steps then follow the scaled cosine
                nn.init.zeros_(self.head[1].weight)
        self.verbalizer = verbalizer  # fitted to the tokenizer (render prompts with this one)
        self.num_labels = num_labels
        self.r_max = r_max
        self.rank = r_max
        # one 0/1 vector shared by every LoRA pair's gradient hooks; set_rank edits it in place
        self.register_buffer("rank_mask", torch.ones(r_max), persistent=False)
        self._lora_params: list[tuple[str, nn.Parameter]] = []
        for name, param in self.named_parameters():
            axis = rank_dim(name)
            if axis is None or not param.requires_grad:
                continue
            self._lora_params.append((name, param))
            param.register_hook(self._masker(axis))

    def _masker(self, axis: int):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            # read the buffer at call time: .to(device / dtype) replaces it with a new tensor, and a mask held
            # from construction would stay on the CPU (a device error on CUDA) and miss later set_rank calls
            mask = self.rank_mask.to(device=grad.device, dtype=grad.dtype)
            return grad * (mask.view(-1, 1) if axis == 0 else mask.view(1, -1))

        return hook

    # ---- forward
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return pool(hidden, attention_mask, self.pooling).to(self._head_dtype)

    @property
    def _head_dtype(self) -> torch.dtype:
        return next(self.head.parameters()).dtype

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pair_ids: Optional[torch.Tensor] = None,
        pair_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        pooled = self.embed(input_ids, attention_mask)
        if self.siamese:
            if pair_ids is None:
                raise ValueError("a siamese model needs the second text of each pair (pair_ids, pair_mask)")
            pooled = pair_features(pooled, self.embed(pair_ids, pair_mask))
        return self.head(pooled)

    # ---- rank masking
    @torch.no_grad()
    def set_rank(self, rank: int) -> None:
        """Activate the first `rank` LoRA dimensions; zero the rest and block their gradients."""
        if not 1 <= rank <= self.r_max:
            raise ValueError(f"rank {rank} outside [1, {self.r_max}]")
        self.rank = int(rank)
        self.rank_mask.zero_()
        self.rank_mask[:rank] = 1.0
        for name, param in self._lora_params:
            param.narrow(rank_dim(name), rank, self.r_max - rank).zero_()

    # ---- the parameters that travel (LoRA factors + head)
    def trainable_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def adapter_state(self) -> State:
        """Detached copies of every trainable tensor at full r_max."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def load_adapter_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy a (possibly truncated) adapter in; LoRA dims beyond the given rank become zero."""
        params = dict(self.named_parameters())
        for name, tensor in state.items():
            if name not in params:
                raise KeyError(f"unknown adapter tensor {name!r}")
            target = params[name]
            axis = rank_dim(name)
            if axis is None:
                target.copy_(tensor)
            else:
                r = tensor.shape[axis]
                target.narrow(axis, 0, r).copy_(tensor)
                target.narrow(axis, r, target.shape[axis] - r).zero_()

    def lora_scaling(self) -> float:
        """The scale peft applies to B @ A (alpha / r_max), identical for every active rank."""
        from peft.tuners.lora import LoraLayer

        for module in self.backbone.modules():
            if isinstance(module, LoraLayer):
                return float(next(iter(module.scaling.values())))
        raise ModelError("no LoRA layer found")

    def memory_profile(self) -> MemoryProfile:
        frozen = sum(p.numel() * p.element_size() for p in self.parameters() if not p.requires_grad)
        lora_per_rank = sum(p.numel() // self.r_max for _, p in self._lora_params)
        head = sum(p.numel() for p in self.head.parameters() if p.requires_grad)  # a verbalizer's LM head is frozen
        cfg = self.backbone.base_model.model.config
        return MemoryProfile(
            frozen_bytes=frozen,
            lora_params_per_rank=lora_per_rank,
            head_params=head,
            hidden_size=cfg.hidden_size,
            num_layers=getattr(cfg, "num_hidden_layers", 1),
        )


def build_model(
    cfg, num_labels: int, label_names: Optional[list[str]] = None, num_texts: Optional[int] = None
) -> FedModel:
    """The FedModel a Config describes, seeded so every process builds the same initial adapter.
    `label_names`: the data's class names (the default label words of a verbalizer); `num_texts`: texts per
    row in the data (default: len(data.text_columns); a GLUE task names its own columns)."""
    torch.manual_seed(cfg.seed)
    m = cfg.model
    backbone = load_backbone(
        m.name, m.pooling, m.quantization, cfg.seed, getattr(m, "cache_dir", None), with_lm_head=m.head != "linear"
    )
    try:
        return _build(cfg, backbone, num_labels, label_names, num_texts or len(cfg.data.text_columns))
    except VerbalizerError as exc:  # a template or label words this task or tokenizer cannot use: one line
        raise ModelError(str(exc)) from None


def _build(cfg, backbone: Backbone, num_labels: int, label_names: Optional[list[str]], num_texts: int) -> FedModel:
    v = cfg.model.verbalizer
    template, words, values = v.template, v.label_words, v.label_values
    if cfg.data.source == "glue" and template is None and words is None:  # the GLUE task's prompt
        from fedranklite.data.glue import PROMPTS, get_task

        prompt = PROMPTS[get_task(cfg.data.name).name]
        template, words, values = prompt["template"], prompt["label_words"], prompt.get("label_values")
    verbalizer = choose_verbalizer(
        cfg.model.head,
        template,
        words,
        values,
        backbone.causal,
        num_texts,
        num_labels,
        label_names or cfg.data.label_names,
        cfg.data.task == "regression",
        v.regression_loss,
    )
    lora = cfg.model.lora
    torch.manual_seed(cfg.seed)
    model = FedModel(
        backbone,
        num_labels,
        lora.r_max,
        lora.alpha,
        lora.dropout,
        list(lora.target_modules),
        cfg.model.head_dropout,
        quantized=cfg.model.quantization != "none",
        siamese=use_siamese(cfg.model.pair_encoding, backbone, num_texts),
        verbalizer=verbalizer,
    )
    if getattr(cfg.training, "freeze_head", False) and model.siamese:
        # the pair head starts at zero (a constant prediction), so frozen it gives the LoRA factors no gradient
        raise ModelError(
            "training.freeze_head: this pair task uses the siamese pair head, which starts at zero and so would "
            "train nothing when frozen; set model.pair_encoding: cross, or training.freeze_head: false"
        )
    return model


def use_siamese(pair_encoding: str, backbone: Backbone, num_text_columns: int) -> bool:
    """model.pair_encoding -> encode the two texts of a pair apart? `auto`: yes for sentence-transformers
    checkpoints (bi-encoders), no otherwise. Single-text tasks are always one sequence."""
    if num_text_columns != 2:
        return False
    if pair_encoding == "auto":
        return backbone.sentence_encoder
    return pair_encoding == "siamese"
