"""`fedranklite plot` and `fedranklite compare` on real (tiny) runs."""

from __future__ import annotations

import pytest

from fedranklite.cli import main as cli
from fedranklite.run.engine import build_engine


@pytest.fixture
def two_runs(tiny_config):
    folders = []
    for name, sched in (("run_lite", "lite"), ("run_fixed", "fixed")):
        cfg = tiny_config(
            experiment_name=name,
            federation={"num_rounds": 3, "scheduler": {"type": sched}},
            deadline={"seconds": 5.0, "straggler_policy": "drop"},
        )
        build_engine(cfg).run()
        folders.append(cfg.results_dir)
    return folders


def test_plot_writes_five_readable_pngs(two_runs, capsys):
    assert cli.main(["plot", str(two_runs[0])]) == 0
    printed = capsys.readouterr().out.split()
    names = sorted(p.rsplit("/", 1)[1] for p in printed)
    assert names == [
        "bytes_per_round.png",
        "client_loss_percentiles.png",
        "rank_energy.png",
        "ranks_heatmap.png",
        "score_vs_time.png",
    ]
    from matplotlib.image import imread

    for path in printed:
        image = imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 300
        assert image[..., :3].std() > 0.01  # not a blank canvas


def test_compare_prints_a_row_per_run_and_an_overlay_plot(two_runs, capsys, tmp_path):
    out = tmp_path / "cmp.png"
    assert cli.main(["compare", *map(str, two_runs), "--plot", str(out)]) == 0
    text = capsys.readouterr().out
    assert "run_lite" in text and "run_fixed" in text and "lite" in text and "fixed" in text
    assert out.exists() and out.stat().st_size > 10_000


def test_plot_of_a_folder_without_results_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "metrics.json: not found" in capsys.readouterr().err
