"""A fake installed distribution for entry point tests: its package files and a `*.dist-info` folder with
METADATA and entry_points.txt, in a folder that a test puts on sys.path (or PYTHONPATH for a subprocess)."""

from __future__ import annotations

from pathlib import Path

BOOST_SCHEDULER = '''
"""A scheduler of another distribution: the first selected client gets `boost` times the others' rank."""

import numpy as np
from pydantic import Field

from fedranklite.federation.schedulers import Clients, Scheduler, SchedulerParams, repair_to_budget


class BoostParams(SchedulerParams):
    boost: float = Field(3.0, gt=0)  # rank multiplier of the first selected client


class BoostScheduler(Scheduler):
    """Gives the first selected client `boost` times the rank of the others."""

    config_class = BoostParams

    def __init__(self, r_min, r_max, r_bar, boost=3.0):
        super().__init__(r_min, r_max, r_bar)
        self.boost = boost

    def assign(self, clients: Clients) -> np.ndarray:
        lo, hi = self.bounds(clients)
        weight = np.ones(len(clients))
        weight[:1] = self.boost
        budget = self.budget(len(clients))
        return repair_to_budget(weight / weight.sum() * budget, lo, hi, budget)
'''


def write_distribution(root: Path, name: str, entry_points: dict[str, dict[str, str]], files: dict[str, str]) -> Path:
    """Write distribution `name` (version 0.1) under `root`: `files` (relative path -> text) and its metadata
    declaring `entry_points` (group -> {entry point name: value}). Returns `root`."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = []
    for group, points in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{ep} = {value}" for ep, value in points.items()]
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines))
    return root
