"""The fixed parts of a run, built by one code path for every backend, in two stages.

    plan(cfg)             stage 1, no model: seeds the global RNGs, loads the data, splits the training rows
                          into client partitions, and names each client's tier. The surrogate needs only
                          this (`Plan.rows`, the partition sizes).
    prepare(cfg, plan)    stage 2: the model on its device, the train settings, memory profile, per-tier rank
                          caps and adapter bytes; the tokenised training rows and the capped, seeded
                          evaluation split are computed on first use (`Prepared.train`, `Prepared.eval`), so
                          a backend pays only for what it reads: the local engine reads both, the Flower
                          server only `eval`, a Flower ClientApp only `train`.

`engine.build_engine`, the Flower ClientApp (`flower.task.client_side`) and the surrogate
(`surrogate.build_surrogate_engine`) all call these functions, so a client's partition, token ids and
initial adapter are the same whatever backend built them (tests/test_prepare.py). This module is the one
place that seeds the global RNGs and calls `data.partition` and `models.build_model`.

Tokenised inputs are cached on disk (`tokenise`): a short-lived process (a Flower deployment starts one
ClientApp process per message) reads the token ids instead of running the tokenizer again. The cache key is
the content, not the configuration: a digest of the texts, of the tokenizer (its full pipeline, vocabulary
included) and of the encoding settings (max_length, pair encoding), so any change that could change a token
id misses, and nothing else does. Files live in `<cache root>/tokens/` (`model.cache_dir`, else
$FEDRANKLITE_CACHE, else ~/.cache/fedranklite); FEDRANKLITE_TOKEN_CACHE=0 turns the cache off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from fedranklite.config.schema import Config
from fedranklite.data.load import LoadedData, load_data
from fedranklite.data.partitioners import split_clients
from fedranklite.data.textsplit import DataError, TextSplit
from fedranklite.federation.memory import MemoryProfile
from fedranklite.federation.ranks import State, num_bytes, truncate
from fedranklite.model.backbones import cache_root
from fedranklite.model.device import pick_device
from fedranklite.model.fedmodel import FedModel, build_model
from fedranklite.model.verbalizer import VerbalizerError
from fedranklite.run.client import Encoded, TrainSettings, encode

log = logging.getLogger(__name__)

TOKEN_CACHE_ENV = "FEDRANKLITE_TOKEN_CACHE"  # "0": tokenise every time, read and write no cache file
TOKEN_CACHE_VERSION = 1  # bump when the file layout or the key changes


# ================================================================== stage 1: data, partitions, tiers
def seed_everything(seed: int) -> None:
    """The global torch / numpy RNGs, seeded before anything of a run is built."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


class PartitionError(DataError):
    """Data that loaded but cannot be split into the configured clients."""


def client_partitions(cfg: Config, data: LoadedData) -> list[np.ndarray]:
    """Training row indices of every client, as the config's `data.partition` says (seeded)."""
    try:
        return split_clients(
            data.train.labels,
            cfg.num_clients,
            cfg.data.partition,
            cfg.seed,
            task=data.task,
            max_per_client=cfg.data.samples_per_client,
        )
    except PartitionError:
        raise
    except DataError as exc:
        raise PartitionError(str(exc)) from None


@dataclass
class Plan:
    """Stage 1: the data, each client's rows and tier. No model."""

    cfg: Config
    data: LoadedData
    partitions: list[np.ndarray]
    tier_of: list[str]

    @property
    def num_clients(self) -> int:
        return len(self.tier_of)

    @property
    def rows(self) -> np.ndarray:
        """Training rows per client (the partition sizes)."""
        return np.array([len(p) for p in self.partitions], dtype=np.int64)


def plan(cfg: Config) -> Plan:
    seed_everything(cfg.seed)
    data = load_data(cfg)
    return Plan(cfg, data, client_partitions(cfg, data), cfg.client_tiers())


# ================================================================== stage 2: model and what derives from it
def adapter_bytes(state: State) -> tuple[int, int]:
    """(bytes of non-rank tensors, bytes of one rank slice of the LoRA factors), as sent."""
    head = num_bytes({k: v for k, v in state.items() if "lora_" not in k})
    lora = {k: v for k, v in state.items() if "lora_" in k}
    per_rank = num_bytes(truncate(lora, 1))
    return head, per_rank


def tier_rank_caps(cfg: Config, profile: MemoryProfile) -> dict[str, int]:
    """Largest rank a client of each tier can train in its memory (0: none)."""
    return {
        name: profile.max_rank(t.memory_gb, cfg.r_max, cfg.training.batch_size, cfg.model.max_length)
        for name, t in cfg.tiers.items()
    }


def eval_split(cfg: Config, data: LoadedData) -> TextSplit:
    """The evaluation rows: at most `evaluation.max_samples`, a seeded sample in the data's order (a
    one-line notice says so when it cuts the evaluation split)."""
    split = data.eval
    if cfg.evaluation.max_samples and len(split) > cfg.evaluation.max_samples:
        log.warning(
            "evaluation uses %d of the %s evaluation rows, a seeded sample (evaluation.max_samples: %d; null = all)",
            cfg.evaluation.max_samples,
            f"{len(split):,}",
            cfg.evaluation.max_samples,
        )
        keep = np.random.default_rng(cfg.seed).permutation(len(split))[: cfg.evaluation.max_samples]
        split = split.subset(np.sort(keep))
    return split


@dataclass
class Prepared:
    """Stage 2: the model and everything fixed that derives from it, plus stage 1 (`plan`).

    `train` / `eval` (token ids) are computed on first access, through the token cache."""

    plan: Plan
    model: FedModel
    device: torch.device
    settings: TrainSettings
    profile: MemoryProfile
    rank_caps: dict[str, int]  # tier -> largest rank its memory holds
    head_bytes: int  # bytes of the non-rank tensors (the head), one way
    bytes_per_rank: int  # bytes of one rank slice of all LoRA factors, one way
    timings: dict = field(default_factory=dict)  # seconds of each set-up step done so far (profiling)

    @property
    def cfg(self) -> Config:
        return self.plan.cfg

    @property
    def data(self) -> LoadedData:
        return self.plan.data

    @property
    def partitions(self) -> list[np.ndarray]:
        return self.plan.partitions

    @property
    def max_rank(self) -> np.ndarray:
        """Per client: the largest rank its tier's memory holds."""
        return np.array([self.rank_caps[t] for t in self.plan.tier_of], dtype=np.int64)

    @functools.cached_property
    def train(self) -> Encoded:
        return self._tokenise("tokenise_train", self.data.train)

    @functools.cached_property
    def eval(self) -> Encoded:
        return self._tokenise("tokenise_eval", eval_split(self.cfg, self.data))

    def _tokenise(self, step: str, split: TextSplit) -> Encoded:
        with _timed(self.timings, step):
            return tokenise(
                split,
                self.model.tokenizer,
                self.cfg.model.max_length,
                self.model.siamese,
                cache_dir=token_cache_dir(self.cfg),
                verbalizer=self.model.verbalizer,
            )


def prepare(cfg: Config, stage1: Optional[Plan] = None) -> Prepared:
    """Stage 2 on top of stage 1 (`plan(cfg)` unless given): build the model, move it to its device."""
    timings: dict = {}
    if stage1 is None:
        with _timed(timings, "data_and_partitions"):
            stage1 = plan(cfg)
    with _timed(timings, "model_build"):
        train = stage1.data.train
        model = build_model(cfg, stage1.data.num_labels, train.label_names, len(train.texts[0]) if len(train) else None)
        device = pick_device(cfg.device)
        model.to(device)
    profile = model.memory_profile()
    head_bytes, per_rank = adapter_bytes(model.adapter_state())
    return Prepared(
        stage1,
        model,
        device,
        TrainSettings.from_config(cfg, stage1.data.task == "regression"),
        profile,
        tier_rank_caps(cfg, profile),
        head_bytes,
        per_rank,
        timings,
    )


# What each set-up step does, for a caller that shows it (the command line's spinner: `stage_listener`).
STAGES = {
    "data_and_partitions": "loading the data and splitting it among the clients",
    "model_build": "loading the model",
    "tokenise_train": "tokenising the training rows",
    "tokenise_eval": "tokenising the evaluation rows",
}
_stage_listeners: list[Callable[[str], None]] = []


@contextlib.contextmanager
def stage_listener(listener: Callable[[str], None]) -> Iterator[None]:
    """Within the block, `listener(step)` is called as each set-up step (a key of STAGES) begins."""
    _stage_listeners.append(listener)
    try:
        yield
    finally:
        _stage_listeners.remove(listener)


class _timed:
    """Adds the seconds of a `with` block to `into[name]` (and tells the stage listeners it began)."""

    def __init__(self, into: dict, name: str):
        self.into, self.name = into, name

    def __enter__(self) -> None:
        for listener in list(_stage_listeners):
            listener(self.name)
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.into[self.name] = self.into.get(self.name, 0.0) + time.perf_counter() - self.start


# ================================================================== the token cache
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
