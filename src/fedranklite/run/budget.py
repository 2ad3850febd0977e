"""Honest labels for capped runs: what a laptop budget left out, as plain data for metrics.json.

`budget_report(cfg, train_rows, eval_rows, partitions)` says, for the training data, the local work and
the evaluation, how much was available and how much was used, and `capped: true` wherever a cap cut
something. The summary of a run should carry it (metrics.json `budget`), so no number from a capped run
is mistaken for a full-data GLUE score.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np


def budget_report(
    cfg,
    train_rows: int,
    eval_rows: int,
    partitions: Optional[Sequence[np.ndarray]] = None,
    partition_rows: Optional[Sequence[int]] = None,
) -> dict[str, Any]:
    """`train_rows`/`eval_rows`: rows of the loaded splits before any cap; `partitions` (or just their
    sizes): each client's rows after `data.samples_per_client`."""
    t, d, e, f = cfg.training, cfg.data, cfg.evaluation, cfg.federation
    sizes = [len(p) for p in partitions] if partitions is not None else list(partition_rows or [])
    n = len(sizes)
    held = int(sum(sizes))
    # training data: how many training rows any client holds at all
    data = {
        "train_rows_available": int(train_rows),
        "train_rows_held_by_clients": held,
        "samples_per_client_cap": d.samples_per_client,
        "capped": held < train_rows,
    }
    # local work: steps per client per round vs one full local epoch over the client's rows
    epoch_steps = [t.local_epochs * math.ceil(s / t.batch_size) for s in sizes] or [0]
    steps = [min(s, t.max_local_steps) if t.max_local_steps else s for s in epoch_steps]
    per_round = [min(s * t.batch_size, r * t.local_epochs) for s, r in zip(steps, sizes)] if sizes else [0]
    local = {
        "local_epochs": t.local_epochs,
        "max_local_steps": t.max_local_steps,
        "batch_size": t.batch_size,
        "steps_per_client_round_full": int(max(epoch_steps)),
        "steps_per_client_round": int(max(steps)),
        "samples_per_client_round": int(max(per_round)),
        "capped": any(s < full for s, full in zip(steps, epoch_steps)),
    }
    # the most training samples the whole run can use (every selected client runs its planned steps)
    mean_per_round = float(np.mean(per_round)) if sizes else 0.0
    total = {
        "rounds": f.num_rounds,
        "clients_per_round": f.clients_per_round,
        "max_training_samples": int(round(f.num_rounds * f.clients_per_round * mean_per_round)),
        "epochs_of_available_data": round(f.num_rounds * f.clients_per_round * mean_per_round / max(train_rows, 1), 4),
    }
    used_eval = min(eval_rows, e.max_samples) if e.max_samples else eval_rows
    evaluation = {
        "eval_rows_available": int(eval_rows),
        "eval_rows_used": int(used_eval),
        "max_samples": e.max_samples,
        "capped": used_eval < eval_rows,
    }
    capped = [
        k for k, v in (("training data", data), ("local steps", local), ("evaluation", evaluation)) if v["capped"]
    ]
    label = ("capped: " + ", ".join(capped)) if capped else "full data, full local epochs, full evaluation split"
    return {"label": label, "train": data, "local": local, "total": total, "eval": evaluation, "num_clients": n}
