"""Shared helpers for the benchmarks: machine facts and JSON output."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def quiet_clock():
    """Timing that other processes on a shared machine do not distort: one torch thread and this
    process's CPU time (wall time would count the time other work holds the cores)."""
    import time

    import torch

    torch.set_num_threads(1)
    return time.process_time


def machine() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return path


def run_fedranklite(config, sets, *flags: str):
    """`fedranklite run --config CONFIG --quiet FLAGS --set S ...` with one torch thread -> (process, wall s)."""
    import subprocess
    import time

    cmd = [sys.executable, "-m", "fedranklite", "run", "--config", str(config), "--quiet", *flags]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return proc, time.perf_counter() - began


def run_outcome(summary: dict, baseline_key: str = "trivial_baseline") -> dict:
    """What the tuning benchmarks record of a finished run's metrics.json: final / best score, every
    evaluated score, the trivial baseline (under `baseline_key`, as each benchmark's JSON has always named
    it), how many classes the final model predicts, and the run's warnings."""
    return {
        "final": summary["final_score"],
        "best": summary["best_score"],
        "scores": [r["score"] for r in summary["rounds"]],
        baseline_key: (summary.get("trivial_baseline") or {}).get("score"),
        "final_pred_classes": (summary.get("final_eval") or {}).get("predicted_classes"),
        "warnings": summary.get("warnings", []),
    }


def base_config(*overrides: str):
    from fedranklite.config.files import load_config

    return load_config(ROOT / "configs" / "base.yaml", list(overrides))
