"""`fedranklite calibrate`: fit the what-if surrogate on a finished real run."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedranklite.cli.display import cannot_write, error


def cmd_calibrate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fedranklite.backends.surrogate.engine import FIT_FILE, CalibrationError, calibrate

    console = Console(stderr=True)
    try:
        fit = calibrate(args.results)
    except CalibrationError as exc:
        return error(console, exc)
    try:
        path = fit.save(args.out or Path(args.results) / FIT_FILE)
    except OSError as exc:
        return cannot_write(console, "--out", exc)
    src = fit.source
    console.print(
        f"fitted on {src['rounds']} rounds / {src['client_rounds']} client-rounds of {src['experiment']}:\n"
        f"  time   per sample = {fit.sec_per_sample:.4g} + {fit.sec_per_sample_per_rank:.4g} x rank s (R^2 "
        f"{src['time_r2']:.3f}, {src['time_mode']} timing)\n"
        f"  score  {fit.metric}: S_0 {fit.score_start:.4f} -> S* {fit.score_limit:.4f}, "
        f"k {fit.rate:.3f} of the gap per "
        f"full-rank round (trend RMSE {src['score_rmse']:.4f} over {src['evaluations']} evaluations)\n"
        f"  drops  phi {fit.drop_fraction:.4f}, beta {fit.rank_exponent:.3f}, noise sd {fit.noise_sigma:.3f} "
        f"({src['drop_points']} positive drops), client spread sd {fit.client_sigma:.3f}\n"
        f"  loss   client loss level = {fit.loss_intercept:.4f} + {fit.loss_slope:.4f} x score",
        highlight=False,
        soft_wrap=True,
    )
    print(path)
    return 0
