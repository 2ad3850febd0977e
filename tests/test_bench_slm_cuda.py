"""The recipe rule of experiments/slm_cuda/bench_slm_cuda.py, fixed before its pilots ran: the highest held-out score at
round 10 or 20; within MARGIN of it, fewer rounds, then the candidate listed first (the config's own)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "experiments" / "slm_cuda"))

from bench_slm_cuda import MARGIN, choose  # noqa: E402


def pilot(scores: dict[int, float]) -> dict:
    return {"curve": [{"round": r, "score": s} for r, s in scores.items()]}


def test_the_best_held_out_score_wins_across_candidates_and_rounds():
    pilots = {"preset": pilot({10: 0.195, 20: 0.773}), "fedavg": pilot({10: 0.753, 20: 0.798})}
    assert choose("stsb", pilots) == ("fedavg", 20, 0.798)


def test_within_the_margin_fewer_rounds_then_the_configs_own_recipe_win():
    best = 0.70
    pilots = {"preset": pilot({10: best - 2 * MARGIN, 20: best}), "fedavg": pilot({10: best - MARGIN / 2})}
    assert choose("rte", pilots)[:2] == ("fedavg", 10)  # 10 rounds within the margin beat 20
    pilots = {"preset": pilot({10: best - MARGIN / 2, 20: best}), "fedavg": pilot({10: best - MARGIN / 2})}
    assert choose("rte", pilots)[:2] == ("preset", 10)  # same rounds, same margin: the config's own
    pilots = {"preset": pilot({10: best - 2 * MARGIN, 20: best}), "fedavg": pilot({10: best - 2 * MARGIN})}
    assert choose("rte", pilots)[:2] == ("preset", 20)  # beyond the margin the better score wins


def test_failed_or_missing_pilots_fall_back_to_the_preset_at_ten_rounds():
    assert choose("mrpc", {"fedavg": pilot({10: 0.9})}) == ("fedavg", 10, 0.9)  # the preset's pilot failed
    cand, rounds, score = choose("mrpc", {})
    assert (cand, rounds) == ("preset", 10) and math.isnan(score)
    assert choose("mrpc", {"preset": pilot({5: 0.9})})[:2] == ("preset", 10)  # no round 10 / 20 measured


def test_the_gpu_rows_are_priced_with_the_same_shipped_profile_as_the_cpu_4bit_rows():
    """bench_slm_cuda names its profiles without importing torch; they must stay the ones bench_glue derives from
    each config's profile key, or GPU and CPU rows would run on different clocks."""
    import bench_glue
    from bench_slm_cuda import CONFIGS, profile_for

    for task in ("sst2", "qnli", "mrpc", "stsb", "rte"):
        derived = bench_glue.fp32_profile(CONFIGS / f"{task}_lite.yaml", [])
        assert profile_for(task) == derived, task
        assert derived.is_file()
