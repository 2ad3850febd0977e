"""One client's round: load the truncated global adapter, train at the assigned rank, report.

Also the encoding of text into token ids (once per run) and evaluation of the global model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import psutil
import torch
from torch import nn

from fedranklite.data.scoring import SCORE_METRICS
from fedranklite.data.textsplit import TextSplit
from fedranklite.federation.logit_adjustment import adjusted, label_log_prior
from fedranklite.federation.proximal import anchors, proximal_term
from fedranklite.federation.ranks import State, num_bytes, truncate
from fedranklite.model.fedmodel import FedModel
from fedranklite.model.verbalizer import VerbalizerHead


# ================================================================== encoding and batches
@dataclass
class Encoded:
    """Token ids of a split (unpadded, one list per row) and its labels. Siamese pairs keep the second
    text's ids apart in `pair_ids`; otherwise a pair is one sequence in `input_ids`."""

    input_ids: list[list[int]]
    labels: np.ndarray
    pair_ids: Optional[list[list[int]]] = None

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(split: TextSplit, tokenizer, max_length: int, siamese: bool = False) -> Encoded:
    columns = list(zip(*split.texts)) if len(split) else [[]]
    if len(columns) == 1:
        enc = tokenizer(list(columns[0]), truncation=True, max_length=max_length)
    elif siamese:
        first = tokenizer(list(columns[0]), truncation=True, max_length=max_length)
        second = tokenizer(list(columns[1]), truncation=True, max_length=max_length)
        return Encoded(list(first["input_ids"]), split.labels, list(second["input_ids"]))
    else:
        enc = tokenizer(list(columns[0]), list(columns[1]), truncation=True, max_length=max_length)
    return Encoded(list(enc["input_ids"]), split.labels)


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[k, : len(r)] = 1
    return ids, mask


def collate(
    encoded: Encoded, idx: Sequence[int], pad_id: int, device: torch.device, regression: bool
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(model inputs, labels) of a batch, padded to its longest row (dynamic padding keeps short-text
    batches cheap). Call the model as `model(**inputs)`."""
    ids, mask = _pad([encoded.input_ids[i] for i in idx], pad_id)
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if encoded.pair_ids is not None:
        pair_ids, pair_mask = _pad([encoded.pair_ids[i] for i in idx], pad_id)
        inputs.update(pair_ids=pair_ids.to(device), pair_mask=pair_mask.to(device))
    labels = torch.as_tensor(encoded.labels[np.asarray(idx)], dtype=torch.float32 if regression else torch.long)
    return inputs, labels.to(device)


def loss_fn(
    logits: torch.Tensor, labels: torch.Tensor, regression: bool, head: Optional[nn.Module] = None
) -> torch.Tensor:
    """The training loss of a batch; a head with a loss of its own (label-word scoring) computes it."""
    if isinstance(head, VerbalizerHead):
        return head.loss(logits.float(), labels)
    if regression:
        return nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)


def predictions(logits: torch.Tensor, regression: bool, head: Optional[nn.Module] = None) -> torch.Tensor:
    """(batch,) class ids, or predicted values (regression)."""
    if isinstance(head, VerbalizerHead):
        return head.predict(logits.float())
    return logits.squeeze(-1) if regression else logits.argmax(-1)


def pad_token_id(model: FedModel) -> int:
    """The id `collate` pads with: the tokenizer's pad token, else 0 (padded positions are masked anyway)."""
    pad = model.tokenizer.pad_token_id
    return 0 if pad is None else int(pad)


@torch.no_grad()
def mean_loss(
    model: FedModel, encoded: Encoded, idx: Sequence[int], batch_size: int, device: torch.device, regression: bool
) -> float:
    """Mean loss over rows `idx` in eval mode (no dropout)."""
    if len(idx) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(idx), batch_size):
        chunk = idx[start : start + batch_size]
        inputs, labels = collate(encoded, chunk, pad_token_id(model), device, regression)
        total += loss_fn(model(**inputs), labels, regression, model.head).item() * len(chunk)
    model.train(was_training)
    return total / len(idx)


# ================================================================== local training
@dataclass
class TrainSettings:
    local_epochs: int = 1
    max_local_steps: Optional[int] = None
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    momentum: float = 0.0
    grad_clip: Optional[float] = 1.0
    probe_samples: int = 0
    regression: bool = False
    head_lr: Optional[float] = None  # None: lr
    proximal_mu: float = 0.0  # FedProx's mu (federation/proximal.py); 0: no proximal term
    logit_adjustment: float = 0.0  # tau of logit-adjusted training (federation/logit_adjustment.py); 0: off
    freeze_head: bool = False  # FedBABU: the head is not trained (it stays as received, the initial head)

    @classmethod
    def from_config(cls, cfg, regression: bool) -> "TrainSettings":
        t = cfg.training
        return cls(
            t.local_epochs,
            t.max_local_steps,
            t.batch_size,
            t.lr,
            t.optimizer,
            t.weight_decay,
            t.momentum,
            t.grad_clip,
            t.probe_samples,
            regression,
            t.head_lr,
            t.proximal_mu,
            t.logit_adjustment,
            t.freeze_head,
        )

    def planned_steps(self, num_rows: int) -> int:
        steps = self.local_epochs * math.ceil(num_rows / self.batch_size)
        return min(steps, self.max_local_steps) if self.max_local_steps else steps

    def planned_samples(self, num_rows: int) -> int:
        """Rows a client trains on when it does all its planned steps (every epoch counts)."""
        return samples_in_steps(self.planned_steps(num_rows), num_rows, self.batch_size, self.local_epochs)


def samples_in_steps(steps: int, rows: int, batch: int, epochs: int) -> int:
    """Rows trained in the first `steps` batches of `epochs` passes over `rows` rows (the last batch of an
    epoch is short), as train_client walks them."""
    per_epoch = math.ceil(rows / batch) if rows else 0
    full_epochs, rest = divmod(steps, per_epoch) if per_epoch else (0, 0)
    full_epochs = min(full_epochs, epochs)
    return full_epochs * rows + (min(rest * batch, rows) if full_epochs < epochs else 0)


@dataclass
class ClientResult:
    """A client's rank-r update and what it measured (the telemetry of the round)."""

    cid: int
    rank: int
    update: State  # rank-r LoRA factors + head, as sent to the server
    num_samples: int  # rows actually trained on (the aggregation weight)
    steps: int
    planned_steps: int
    loss_before: float
    loss_after: float
    wall_seconds: float  # measured time of the local training loop
    peak_memory_mb: float
    bytes_down: int
    bytes_up: int
    lost: Optional[str] = None  # why a remote client never answered (its update is then empty); None: it did
    loss_rms: float = float("nan")  # root mean square of the training-batch losses (lite's utility: loss_level)
    extra: dict = field(
        default_factory=dict
    )  # backend diagnostics (e.g. Flower's worker pid), never read by the engine

    @property
    def loss_drop(self) -> float:
        return self.loss_before - self.loss_after

    @property
    def throughput(self) -> float:
        return self.num_samples / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    @property
    def finished(self) -> bool:
        return self.steps >= self.planned_steps


def make_optimizer(model: FedModel, s: TrainSettings) -> torch.optim.Optimizer:
    """The optimizer over the trained parameters: LoRA factors at `lr`, the head at `head_lr` (none with
    `freeze_head`)."""
    head = {id(p) for p in model.head.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) not in head]},
        {"params": [] if s.freeze_head else [p for p in trainable if id(p) in head], "lr": s.head_lr or s.lr},
    ]
    groups = [g for g in groups if g["params"]]  # a verbalizer has no trainable head
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(groups, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.AdamW(groups, lr=s.lr, weight_decay=s.weight_decay)


class PeakMemory:
    """Peak memory of the training loop: CUDA allocator peak when on a GPU, else process RSS."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.process = psutil.Process()
        self.peak = 0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
        self.sample()

    def sample(self) -> None:
        if not self.cuda:
            self.peak = max(self.peak, self.process.memory_info().rss)

    def megabytes(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        return self.peak / 2**20


def loss_ends(losses: Sequence[float], window: int = 4) -> tuple[float, float]:
    """(before, after) of a round from its training-batch losses: the mean of the first k and of the last k
    batches, k = min(window, steps // 2), so the two windows never share a batch (with shared batches the
    drop would be 0 at <= 4 steps). The first batch's loss is computed before any update. With one step,
    `before` is that batch's loss (fairness still sees the client) and `after` is NaN: a drop cannot be
    told from one batch, so the scheduler keeps its EMA."""
    if not len(losses):
        return float("nan"), float("nan")
    k = min(window, len(losses) // 2)
    if k == 0:
        return float(losses[0]), float("nan")
    return float(np.mean(losses[:k])), float(np.mean(losses[-k:]))


# a callback asked before each step: (steps done so far, wall seconds so far) -> may another step run?
StepGate = Callable[[int, float], bool]


def train_client(
    model: FedModel,
    global_state: State,
    cid: int,
    rank: int,
    encoded: Encoded,
    rows: np.ndarray,
    settings: TrainSettings,
    device: torch.device,
    seed: int,
    may_step: Optional[StepGate] = None,
) -> ClientResult:
    """Run one client's local training at `rank` and return its rank-r update.

    `seed` fixes the data order and dropout for this (round, client), so the result does not depend
    on which process or in which order clients run. A fresh optimizer is made every round: optimizer
    state never leaks across clients or rank changes.
    """
    if settings.logit_adjustment > 0 and settings.regression:
        raise ValueError("training.logit_adjustment needs a classification task; this one is regression")
    download = truncate(global_state, rank)
    model.load_adapter_state(download)
    model.set_rank(rank)
    model.to(device)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    probe = rows[: settings.probe_samples] if settings.probe_samples else rows[:0]
    loss_before = (
        mean_loss(model, encoded, probe, settings.batch_size, device, settings.regression)
        if len(probe)
        else float("nan")
    )

    params = [p for p in model.parameters() if p.requires_grad]
    frozen_head: list[torch.Tensor] = []
    if settings.freeze_head:  # FedBABU: the head keeps what it received; clipping and FedProx see the body only
        frozen_head = [p for p in model.head.parameters() if p.requires_grad]
        frozen = {id(p) for p in frozen_head}
        params = [p for p in params if id(p) not in frozen]
    # FedProx: the parameters as received (after rank masking), the centre of the proximal term
    start_params = anchors(params) if settings.proximal_mu > 0 else None
    tau = settings.logit_adjustment
    log_prior: Optional[torch.Tensor] = None  # the client's label prior, once the first batch gives the classes
    optimizer = make_optimizer(model, settings)
    planned = settings.planned_steps(len(rows))
    memory = PeakMemory(device)
    model.train()
    steps = samples = 0
    losses: list[float] = []  # every training batch's loss, each computed before that batch's update
    start = time.perf_counter()
    pad_id = pad_token_id(model)
    stopped = False
    for _epoch in range(settings.local_epochs):
        order = rng.permutation(rows)
        for b in range(0, len(order), settings.batch_size):
            if steps >= planned:
                break
            if may_step is not None and not may_step(steps, time.perf_counter() - start):
                stopped = True
                break
            idx = order[b : b + settings.batch_size]
            inputs, labels = collate(encoded, idx, pad_id, device, settings.regression)
            logits = model(**inputs)
            loss = loss_fn(logits, labels, settings.regression, model.head)
            # what the step minimises; the task loss alone is what the client reports (and lite's loss drop reads)
            objective = loss
            if tau > 0:
                if log_prior is None:
                    log_prior = label_log_prior(encoded.labels[np.asarray(rows)], logits.shape[-1])
                objective = loss_fn(adjusted(logits.float(), log_prior, tau), labels, False, model.head)
            if start_params is not None:
                objective = objective + proximal_term(params, start_params, settings.proximal_mu)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            for p in frozen_head:  # not in the optimizer, so zero_grad does not clear them: drop them here
                p.grad = None
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            optimizer.step()
            steps += 1
            samples += len(idx)
            losses.append(loss.item())
            memory.sample()
        if stopped or steps >= planned:
            break
    wall = time.perf_counter() - start
    if len(probe):
        loss_after = mean_loss(model, encoded, probe, settings.batch_size, device, settings.regression)
    else:  # no probe (the default): the training batches' own losses, free of extra forward passes
        loss_before, loss_after = loss_ends(losses)
    update = truncate({k: v.detach().to("cpu") for k, v in model.adapter_state().items()}, rank)
    return ClientResult(
        cid=cid,
        rank=rank,
        update=update,
        num_samples=samples,
        steps=steps,
        planned_steps=planned,
        loss_before=loss_before,
        loss_after=loss_after,
        wall_seconds=wall,
        peak_memory_mb=memory.megabytes(),
        bytes_down=num_bytes(download),
        bytes_up=num_bytes(update),
        loss_rms=math.sqrt(float(np.mean(np.square(losses)))) if losses else float("nan"),
    )


# ================================================================== evaluation of the global model
@torch.no_grad()
def evaluate(
    model: FedModel,
    global_state: State,
    encoded: Encoded,
    metric: str,
    batch_size: int,
    device: torch.device,
    regression: bool,
    extra_metrics: Sequence[str] = (),
) -> dict:
    """Score of the global adapter (at full r_max) on the evaluation split."""
    model.load_adapter_state(global_state)
    model.set_rank(model.r_max)
    model.to(device)
    model.eval()
    preds, total_loss = [], 0.0
    idx = np.arange(len(encoded))
    pad_id = pad_token_id(model)
    for start in range(0, len(idx), batch_size):
        chunk = idx[start : start + batch_size]
        inputs, labels = collate(encoded, chunk, pad_id, device, regression)
        logits = model(**inputs)
        total_loss += loss_fn(logits, labels, regression, model.head).item() * len(chunk)
        preds.append(predictions(logits, regression, model.head).float().cpu().numpy())
    pred = np.concatenate(preds) if preds else np.zeros(0)
    out = {"loss": total_loss / max(len(idx), 1), "num_samples": int(len(idx))}
    if not regression and pred.size:  # a model that predicts one class for every row has collapsed
        out["predicted_classes"] = int(np.unique(pred).size)
    for name in [metric, *[m for m in extra_metrics if m != metric]]:
        out[name] = SCORE_METRICS[name].fn(pred if regression else pred.astype(np.int64), encoded.labels)
    out["score"] = out[metric]
    return out
