"""Tokenised inputs are cached on disk (`tokenise`): a short-lived process (a Flower deployment starts one
ClientApp process per message) reads the token ids instead of running the tokenizer again. The cache key is
the content, not the configuration: a digest of the texts, of the tokenizer (its full pipeline, vocabulary
included) and of the encoding settings (max_length, pair encoding), so any change that could change a token
id misses, and nothing else does. Files live in `<cache root>/tokens/` (`model.cache_dir`, else
$FEDRANKLITE_CACHE, else ~/.cache/fedranklite); FEDRANKLITE_TOKEN_CACHE=0 turns the cache off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from fedranklite.config.schema import Config
from fedranklite.data.textsplit import DataError, TextSplit
from fedranklite.model.backbones import cache_root
from fedranklite.model.verbalizer import VerbalizerError
from fedranklite.run.client import Encoded, encode

log = logging.getLogger(__name__)

TOKEN_CACHE_ENV = "FEDRANKLITE_TOKEN_CACHE"  # "0": tokenise every time, read and write no cache file
TOKEN_CACHE_VERSION = 1  # bump when the file layout or the key changes


def token_cache_dir(cfg: Config) -> Optional[Path]:
    """Where tokenised inputs are cached (None: the cache is off)."""
    if os.environ.get(TOKEN_CACHE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    return cache_root(cfg.model.cache_dir) / "tokens"


def tokenizer_fingerprint(tokenizer) -> Optional[str]:
    """A digest of everything that decides a fast tokenizer's ids (normaliser, pre-tokeniser, model and
    vocabulary, post-processor, added tokens), without its current truncation/padding state (set per call).
    None for a tokenizer without a serialisable backend (not cached)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        if backend.truncation is not None or backend.padding is not None:  # left over from the last call
            from tokenizers import Tokenizer

            backend = Tokenizer.from_str(backend.to_str())
            backend.no_truncation()
            backend.no_padding()
        spec = backend.to_str()  # deterministic: ordered fields, vocabulary and merges in id order
    except Exception:  # a backend that cannot serialise itself: tokenise every time
        return None
    import tokenizers
    import transformers

    versions = [type(tokenizer).__name__, transformers.__version__, tokenizers.__version__]
    h = hashlib.sha256(json.dumps(versions).encode())
    h.update(spec.encode())
    return h.hexdigest()


def token_cache_key(
    split: TextSplit, tokenizer, max_length: int, siamese: bool, prompt: Optional[str] = None
) -> Optional[str]:
    """`prompt`: what turns each row into the text that is tokenised (a verbalizer's template and words)."""
    fingerprint = tokenizer_fingerprint(tokenizer)
    if fingerprint is None:
        return None
    h = hashlib.sha256()
    head = [TOKEN_CACHE_VERSION, fingerprint, int(max_length), bool(siamese)] + ([prompt] if prompt else [])
    h.update(json.dumps(head).encode())
    h.update(json.dumps(split.texts, ensure_ascii=False).encode())
    return h.hexdigest()[:32]


def tokenise(
    split: TextSplit,
    tokenizer,
    max_length: int,
    siamese: bool = False,
    cache_dir: Optional[Path] = None,
    verbalizer=None,
) -> Encoded:
    """`client.encode`, read from / written to the token cache in `cache_dir` (None: no cache). With a
    `verbalizer`, each row is first written into its prompt (verbalizer.render); the key covers the raw rows and
    the prompt, so a cached split skips the rendering too (it tokenises every prompt to measure it).

    The ids are identical either way (the key covers all they depend on); labels always come from `split`."""
    prompt = None if verbalizer is None else json.dumps(dataclasses.asdict(verbalizer), sort_keys=True)

    def encoded() -> Encoded:
        rows = split
        if verbalizer is not None:  # each row becomes one prompt; its texts are cut, never the template
            try:
                prompts = verbalizer.render(split.texts, tokenizer, max_length)
            except VerbalizerError as exc:
                raise DataError(str(exc)) from None
            rows = TextSplit([(p,) for p in prompts], split.labels, split.label_names)
        return encode(rows, tokenizer, max_length, siamese)

    key = token_cache_key(split, tokenizer, max_length, siamese, prompt) if cache_dir is not None else None
    if key is None:
        return encoded()
    path = Path(cache_dir) / f"{key}.npz"
    if path.exists():
        try:
            return _read_tokens(path, split)
        except Exception as exc:  # a truncated or foreign file: tokenise again and overwrite it
            log.warning("token cache %s unreadable (%s): tokenising again", path, exc)
    enc = encoded()
    try:
        _write_tokens(path, enc)
    except OSError as exc:  # a read-only or full disk costs speed, not the run
        log.warning("token cache %s not written: %s", path, exc)
    return enc


def _flat(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    flat = np.fromiter((i for r in rows for i in r), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths


def _rows(flat: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    values = flat.tolist()
    ends = np.cumsum(lengths).tolist()
    starts = [0] + ends[:-1]
    return [values[s:e] for s, e in zip(starts, ends)]


def _write_tokens(path: Path, enc: Encoded) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    arrays["ids"], arrays["lengths"] = _flat(enc.input_ids)
    if enc.pair_ids is not None:
        arrays["pair_ids"], arrays["pair_lengths"] = _flat(enc.pair_ids)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: concurrent ClientApps may write the same key


def _read_tokens(path: Path, split: TextSplit) -> Encoded:
    with np.load(path, allow_pickle=False) as f:
        ids = _rows(f["ids"], f["lengths"])
        pair = _rows(f["pair_ids"], f["pair_lengths"]) if "pair_ids" in f.files else None
    if len(ids) != len(split):
        raise ValueError(f"{len(ids)} rows cached, the split has {len(split)}")
    return Encoded(ids, split.labels, pair)
