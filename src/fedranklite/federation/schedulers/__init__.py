"""Rank schedulers, chosen by `federation.scheduler.type`. Each lives in its own file and registers
itself in SCHEDULERS; importing this package registers the built-in ones."""

from __future__ import annotations

import inspect

from fedranklite.federation.schedulers import cvx, fixed, lite, uniform  # noqa: F401  (registration)
from fedranklite.federation.schedulers.base import (
    SCHEDULERS,
    Clients,
    Reports,
    Scheduler,
    SchedulerParams,
)
from fedranklite.federation.schedulers.minmax import (
    bisect_min_max,
    feasible_budget,
    greedy_min_max,
    rank_budget,
    repair_to_budget,
    repair_with_passes,
)


def build_scheduler(cfg) -> Scheduler:
    """The scheduler a Config names, built from its own section. The round deadline goes only to a scheduler
    whose `from_config` takes it, so a plugin written as `from_config(params, r_max)` keeps working."""
    section = cfg.federation.scheduler
    from_config = SCHEDULERS[section.name].from_config
    takes_deadline = "deadline" in inspect.signature(from_config).parameters
    extra = {"deadline": cfg.deadline.seconds} if takes_deadline else {}
    return SCHEDULERS.build(section, r_max=cfg.r_max, **extra)


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
