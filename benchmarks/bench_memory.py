"""Memory: peak RSS of a 10-client vs a 100-client simulation of the same model (one model resident,
not one per client). Each run is a fresh process. Target: ratio <= 1.2."""

from __future__ import annotations

import subprocess
import sys

from common import ROOT, write

CHILD = """
import resource, sys
from fedranklite.cli.main import main
code = main(sys.argv[1:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def peak_rss_mb(num_slow: int) -> float:
    args = [
        "run",
        "--quiet",
        "--config",
        str(ROOT / "configs/experiments/lite_iid.yaml"),
        "--set",
        "federation.num_rounds=1",
        "--set",
        "federation.clients_per_round=10",
        "--set",
        "training.max_local_steps=2",
        "--set",
        "evaluation.max_samples=64",
        "--set",
        f"tiers.cpu_slow.num_clients={num_slow}",
        "--set",
        "output_dir=/tmp/fedranklite-bench",
        "--set",
        f"experiment_name=memory_{num_slow}",
    ]
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, cwd=ROOT, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    kb = int(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("MAXRSS_KB")))
    return kb / 1024


def main():
    small = peak_rss_mb(4)  # 3 + 3 + 4 = 10 clients
    large = peak_rss_mb(94)  # 3 + 3 + 94 = 100 clients
    ratio = large / small
    print(f"peak RSS: 10 clients {small:.0f} MB, 100 clients {large:.0f} MB, ratio {ratio:.3f}")
    write(
        "memory",
        {
            "peak_rss_mb": {"10_clients": small, "100_clients": large},
            "ratio": ratio,
            "target": "<= 1.2",
            "met": ratio <= 1.2,
        },
    )


if __name__ == "__main__":
    main()
