"""Rank schedulers, chosen by `federation.scheduler.type`. Each lives in its own file and registers
itself in SCHEDULERS; importing this package registers the built-in ones."""

from __future__ import annotations

from . import cvx, fixed, lite  # noqa: F401  (registration)
from .base import (
    SCHEDULERS,
    Clients,
    Reports,
    Scheduler,
    SchedulerParams,
    bisect_min_max,
    feasible_budget,
    greedy_min_max,
    rank_budget,
    repair_to_budget,
    repair_with_passes,
)


def build_scheduler(cfg) -> Scheduler:
    """The scheduler a Config names, built from its own section."""
    return SCHEDULERS.build(cfg.federation.scheduler, r_max=cfg.r_max, deadline=cfg.deadline.seconds)


__all__ = [
    "SCHEDULERS",
    "Clients",
    "Reports",
    "Scheduler",
    "SchedulerParams",
    "bisect_min_max",
    "build_scheduler",
    "feasible_budget",
    "greedy_min_max",
    "rank_budget",
    "repair_to_budget",
    "repair_with_passes",
]
