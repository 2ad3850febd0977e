"""Optional experiment tracking (`metrics.tracking: [tensorboard, wandb]`), off by default.

Each tracker receives every round record; a tracker whose package is not installed is skipped with
a warning, never a crash. wandb always runs in offline mode (files under the results folder).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from fedranklite.core.records import RoundRecord

log = logging.getLogger(__name__)


def round_scalars(record: RoundRecord) -> dict[str, float]:
    """The per-round numbers worth plotting in a tracker (either client-record layout)."""
    out = {
        "sim_time": record.sim_time,
        "round_sim_seconds": record.round_sim_seconds,
        "stragglers": len(record.stragglers),
        "compliant": float(record.compliant),
        "bytes_up": record.bytes_up,
        "bytes_down": record.bytes_down,
    }
    if record.score is not None:
        out["score"] = record.score
    if record.eval:
        out["eval_loss"] = record.eval["loss"]
    for key, value in (record.fairness or {}).items():
        if value is not None:
            out[f"client_loss_{key}"] = value
    ranks = record.clients.rank
    if len(ranks):
        out["rank_mean"], out["rank_min"], out["rank_max"] = float(ranks.mean()), int(ranks.min()), int(ranks.max())
    return out


class TensorBoardTracker:
    def __init__(self, out: Path, config: dict):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
        self.writer.add_text("config", f"```\n{config}\n```")

    def log_round(self, record: RoundRecord) -> None:
        for key, value in round_scalars(record).items():
            self.writer.add_scalar(key, value, record.round)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, out: Path, config: dict):
        import wandb

        os.environ.setdefault("WANDB_MODE", "offline")
        self.run = wandb.init(
            project="fedranklite",
            name=config.get("experiment_name"),
            config=config,
            dir=str(out),
            mode="offline",
            reinit=True,
        )

    def log_round(self, record: RoundRecord) -> None:
        self.run.log(round_scalars(record), step=record.round)

    def close(self) -> None:
        self.run.finish()


_TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker}


def open_trackers(names: Sequence[str], out: Path, config: dict) -> list:
    trackers = []
    for name in names:
        try:
            trackers.append(_TRACKERS[name](Path(out), config))
        except ImportError as exc:
            log.warning("tracking with %s skipped: %s (pip install 'fedranklite[track]')", name, exc)
    return trackers
