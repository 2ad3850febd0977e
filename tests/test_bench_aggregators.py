"""The "who wins" lines of benchmarks/bench_aggregators.py compare a gap in mean score with the seeds' spread;
that spread must be the sample sd (ddof=1) the table prints, not the smaller population sd."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_aggregators import markdown  # noqa: E402


def runs_of(aggregator: str, scores: list[float]) -> list[dict]:
    return [
        {
            "task": "rte",
            "scheduler": "lite",
            "aggregator": aggregator,
            "seed": seed,
            "metric": "accuracy",
            "final_score": score,
            "best_score": score,
            "trajectory": None,
            "time_to_target": {"sim_seconds": None},
            "bytes_up_per_client_round": 300e3,
            "deadline_compliance_pct": 100.0,
            "block_effective_rank": 4.0,
            "upper_half_energy_share": 0.1,
        }
        for seed, score in enumerate(scores)
    ]


def verdict_line(runs: list[dict]) -> str:
    (line,) = [x for x in markdown(runs).splitlines() if x.startswith("- rte / lite:")]
    return line


def test_a_gap_between_the_population_and_the_sample_sd_is_within_noise():
    # gap 0.018; population sd 0.0163, sample sd 0.020: only the population sd would call it clear
    runs = runs_of("fedavg", [0.60, 0.62, 0.64]) + runs_of("blockwise", [0.582, 0.602, 0.622])
    line = verdict_line(runs)
    assert "fedavg 0.620, then blockwise 0.602: within noise (gap <= 1 sd)" in line


def test_a_gap_beyond_the_sample_sd_is_clear_and_one_seed_has_no_spread():
    runs = runs_of("fedavg", [0.60, 0.62, 0.64]) + runs_of("blockwise", [0.572, 0.592, 0.612])
    assert "clearly (gap > 1 sd)" in verdict_line(runs)
    single = runs_of("fedavg", [0.62]) + runs_of("blockwise", [0.55])
    assert "single seed, no spread to compare with" in verdict_line(single)
