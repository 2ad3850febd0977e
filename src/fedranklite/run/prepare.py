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
Tokenised inputs come from the on-disk token cache (token_cache.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from fedranklite.config.schema import Config
from fedranklite.data.load import LoadedData, load_data
from fedranklite.data.partitioners import split_clients
from fedranklite.data.textsplit import DataError, TextSplit
from fedranklite.federation.memory import MemoryProfile
from fedranklite.federation.ranks import State, num_bytes, truncate
from fedranklite.model.device import pick_device
from fedranklite.model.fedmodel import FedModel, build_model
from fedranklite.run.client import Encoded, TrainSettings
from fedranklite.run.token_cache import token_cache_dir, tokenise

log = logging.getLogger(__name__)


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
