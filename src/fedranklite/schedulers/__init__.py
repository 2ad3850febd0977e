"""Rank schedulers, chosen by `federation.scheduler.type`. Each lives in its own file and registers
itself in SCHEDULERS; importing this package registers the built-in ones."""
from __future__ import annotations

from .base import (SCHEDULERS, Clients, Reports, Scheduler, feasible_budget, greedy_min_max, rank_budget,
                   repair_to_budget, repair_with_passes)
from . import cvx, fixed, lite  # noqa: F401  (registration)


def build_scheduler(cfg) -> Scheduler:
    """The scheduler a Config names, with its section's parameters."""
    s = cfg.federation.scheduler
    params = s.model_dump()
    kind = params.pop("type")
    params.update(r_max=cfg.r_max)
    return SCHEDULERS[kind](**params)


__all__ = ["SCHEDULERS", "Clients", "Reports", "Scheduler", "build_scheduler", "feasible_budget",
           "greedy_min_max", "rank_budget", "repair_to_budget", "repair_with_passes"]
