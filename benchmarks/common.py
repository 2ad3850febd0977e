"""Shared helpers of the benchmarks (benchmarks/bench_*.py) and the studies (experiments/<question>/*.py): machine
facts, JSON output that names the script that wrote it, and the mean ± sd format of the result tables.

A study imports this module with `sys.path.insert(0, <repository>/benchmarks)`; no script imports another
script's private names. Results go to RESULTS (benchmarks/results/, or $FEDRANKLITE_BENCH_RESULTS where
`run_all.py --quick` points it) unless a study passes its own folder."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("FEDRANKLITE_BENCH_RESULTS") or Path(__file__).resolve().parent / "results").resolve()
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `--quick` (as run_all.py --quick passes it): a check that a benchmark runs end to end at a toy budget, not a result
QUICK = "--quick" in sys.argv[1:]


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


def script_name(file: str | os.PathLike | None = None) -> str:
    """The repository-relative path of a script (`file`, default: the running program), as every results
    file records it under "script"."""
    if file is None:
        main = sys.modules.get("__main__")
        file = getattr(main, "__file__", None) or sys.argv[0]
    path = Path(file).resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


def portable(value):
    """`value` (JSON-like) with machine paths made portable: the repository's own prefix dropped (paths become
    repository-relative), the interpreter's site-packages and the temporary folder replaced by <site-packages>
    and <tmp>, the home folder by ~. A results file then reads the same whichever machine wrote it."""
    import site
    import tempfile

    prefixes = [(str(ROOT) + os.sep, "")]
    prefixes += [(str(Path(p)) + os.sep, "<site-packages>/") for p in site.getsitepackages() if p]
    prefixes += [(str(Path(tempfile.gettempdir()).resolve()) + os.sep, "<tmp>/"), ("/tmp/", "<tmp>/")]
    prefixes += [(str(Path.home()) + os.sep, "~/")]
    prefixes.sort(key=lambda p: -len(p[0]))  # the longest first: site-packages inside the repository's .venv

    def fix(v):
        if isinstance(v, str):
            for old, new in prefixes:
                v = v.replace(old, new)
            return v
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [fix(x) for x in v]
        return v

    return fix(value)


def stamp(payload: dict, script: str | os.PathLike | None = None) -> dict:
    """`payload` led by the "script" that wrote it (repository-relative) and made portable (machine paths)."""
    return portable({"script": script_name(script), **{k: v for k, v in payload.items() if k != "script"}})


def write(name: str, payload: dict, folder: Path | None = None, script: str | os.PathLike | None = None) -> Path:
    """<folder>/<name>.json (folder: RESULTS; a study passes its own) with the script that wrote it, when,
    and the machine, before `payload`."""
    folder = RESULTS if folder is None else Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    payload = stamp(
        {
            "benchmark": name,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(),
            **payload,
        },
        script,
    )
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return path


def sample_sd(values) -> float:
    """The sample sd over seeds (ddof=1); 0 for a single seed, which has no spread."""
    import numpy as np

    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def mean_sd(values) -> str:
    """`mean ± sample sd` of the values that are not None, to 3 decimals; one value alone; "-" for none."""
    import numpy as np

    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {sample_sd(values):.3f}"


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
