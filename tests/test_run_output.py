"""What a run tells its user: `--version`, the terminal at 80 columns (a line per round kept in the
scrollback, a live bar with an ETA, the set-up steps), and notices that are said once (a capped evaluation
split, the cvx scheduler's fallback)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import yaml
from conftest import tiny_tree

import fedranklite
from fedranklite.cli.main import RoundLines, _ClientProgress, _run_with_progress

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "fedranklite", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_version_prints_the_package_version():
    proc = cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"fedranklite {fedranklite.__version__}"
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)  # py3.10: no tomllib
    assert declared and declared.group(1) == fedranklite.__version__


def test_the_terminal_at_80_columns_keeps_every_rounds_line(tmp_path):
    tree = tiny_tree(tmp_path)
    tree["federation"]["num_rounds"] = 3
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tree))
    proc = cli("run", "--config", str(path), env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    too_wide = [line for line in lines if len(line) > 80]
    assert not too_wide, "\n".join(too_wide)
    header = next(i for i, line in enumerate(lines) if "ranks min/med/max" in line)
    assert "accuracy" in lines[header] and "best" in lines[header] and "stragglers" in lines[header]
    rows = [line for line in lines if re.match(r"\s+\d+/3\s", line)]
    assert [row.split()[0] for row in rows] == ["1/3", "2/3", "3/3"]
    assert all(len(row.split()) == 7 for row in rows)  # round, score, best, sim, wall, ranks, stragglers
    assert any("ETA" in line and "3/3" in line for line in lines)  # the bar, done
    assert "trivial baseline" in proc.stderr  # the summary names what to beat
    # the header says, per tier, what prices its compute (here: no device named, analytic constants)
    assert any(line.startswith("  fast: device not stated = 1 x") for line in lines)
    assert "analytic constants are seconds at compute_factor 1" in " ".join(proc.stderr.split())  # wrapped at 80


def record(r, score, ranks, stragglers=0, selected=None, sim=12.5, wall=3.25):
    ranks = np.asarray(ranks, dtype=np.int64)
    return SimpleNamespace(
        round=r,
        score=score,
        clients=SimpleNamespace(rank=ranks),
        stragglers=list(range(stragglers)),
        selected=list(range(selected if selected is not None else len(ranks))),
        round_sim_seconds=sim,
        wall_seconds=wall,
    )


def test_round_lines_hold_the_best_so_far_and_fit_80_columns_at_the_extremes():
    lines = RoundLines("accuracy", 8)
    first = lines.line(record(1, 0.6, [2, 8, 16], stragglers=1))
    assert first.split() == ["1/8", "0.6000", "0.6000", "12.5", "3.2", "2/8/16", "1/3"]
    assert lines.line(record(2, 0.5, [4])).split()[1:3] == ["0.5000", "0.6000"]
    assert lines.line(record(3, None, [4])).split()[1:3] == ["-", "0.6000"]  # not evaluated this round
    lower = RoundLines("mse", 3, higher_is_better=False)
    lower.line(record(1, 0.4, [4]))
    assert lower.line(record(2, 0.2, [4])).split()[2] == "0.2000"
    huge = RoundLines("f1_macro_long_name", 100_000).line(
        record(100_000, 0.12345, [1024] * 5000, stragglers=5000, selected=5000, sim=99_999.9, wall=9_999.9)
    )
    assert len(huge) <= 80 and len(lines.header()) <= 80
    assert lines.line(record(4, 0.7, [])).split()[5] == "-"  # no client ran


class FakeRun:
    """A run object as `backends.start` returns one: rounds with records, no model."""

    def __init__(self, rounds):
        self.rounds, self.metric, self.higher_is_better = rounds, "accuracy", True

    def run(self, on_round=None, resume=False):
        for r in range(1, self.rounds + 1):
            on_round(record(r, 0.5 + r / 100, [2, 4, 8]))
        return "summary"


def test_the_live_bar_and_the_round_lines_in_a_terminal_of_80_columns():
    import io

    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, width=80, force_terminal=True, color_system=None)
    out = _run_with_progress(FakeRun(12), SimpleNamespace(resume=False), console, RoundLines("accuracy", 12))
    assert out == "summary"
    # what a terminal shows: the text between line feeds, carriage returns and erase-line / cursor codes
    shown = [part for part in re.split(r"\r|\n|\x1b\[[0-9;?]*[A-Za-z]", screen.getvalue()) if part.strip()]
    assert all(len(part) <= 80 for part in shown), [part for part in shown if len(part) > 80]
    for r in range(1, 13):
        assert any(part.split()[:1] == [f"{r}/12"] for part in shown), r
    bars = [part for part in shown if "ETA" in part]
    assert bars and "12/12" in bars[-1] and "━" in bars[-1]


def test_the_local_runner_is_told_one_client_at_a_time_in_the_same_order():
    calls, shown = [], []

    class Inner:
        def run(self, round_idx, state, tasks):
            calls.append([t.cid for t in tasks])
            return [f"result {t.cid}" for t in tasks]

    wrapped = _ClientProgress(Inner(), lambda r, done, of: shown.append((r, done, of)))
    tasks = [SimpleNamespace(cid=c) for c in (7, 3, 5)]
    assert wrapped.run(2, {}, tasks) == ["result 7", "result 3", "result 5"]
    assert calls == [[7], [3], [5]]
    assert shown == [(2, 0, 3), (2, 1, 3), (2, 2, 3), (2, 3, 3)]


def test_a_capped_evaluation_split_is_said_in_one_line(tiny_config, caplog):
    from fedranklite.run.prepare import eval_split, plan

    cfg = tiny_config(evaluation={"max_samples": 10})
    data = plan(cfg).data
    with caplog.at_level(logging.WARNING, logger="fedranklite.run.prepare"):
        split = eval_split(cfg, data)
    assert len(split) == 10
    notices = [r.getMessage() for r in caplog.records if "evaluation uses" in r.getMessage()]
    assert notices == [
        "evaluation uses 10 of the 64 evaluation rows, a seeded sample (evaluation.max_samples: 10; null = all)"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fedranklite.run.prepare"):
        eval_split(tiny_config(evaluation={"max_samples": None}), data)
    assert not [r for r in caplog.records if "evaluation uses" in r.getMessage()]


def test_the_cvx_fallback_notice_is_logged_once_per_run(tiny_config, caplog, monkeypatch):
    from fedranklite.run.engine import build_engine

    monkeypatch.setitem(sys.modules, "cvxpy", None)  # `import cvxpy` raises ImportError: cvxpy not installed
    cfg = tiny_config(
        federation={"num_rounds": 3, "scheduler": {"type": "cvx", "solver": "cvxpy", "r_min": 1, "r_bar": 4}},
        training={"max_local_steps": 1, "probe_samples": 0},
    )
    engine = build_engine(cfg)
    with caplog.at_level(logging.WARNING, logger="fedranklite.federation.schedulers.cvx"):
        summary = engine.run()
    assert summary.rounds_completed == 3
    logged = [r for r in caplog.records if "cvxpy is not installed" in r.getMessage()]
    assert len(logged) == 1
    # every round's record still carries the note
    assert all(any("cvxpy is not installed" in n for n in rec.scheduler_notes) for rec in engine.state.records)
    # and the next run logs it again (once)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fedranklite.federation.schedulers.cvx"):
        build_engine(cfg.model_copy(update={"experiment_name": "again"})).run()
    assert len([r for r in caplog.records if "cvxpy is not installed" in r.getMessage()]) == 1
