"""`fedranklite plot` and `fedranklite compare`: figures and tables from a run's results folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fedranklite.config.files import flatten
from fedranklite.core.records import RoundRecord, RunSummary
from fedranklite.core.results_io import ResultsError, read_run

__all__ = ["ResultsError", "compare_rows", "config_differences", "flatten", "load_run", "plot_compare", "plot_run"]


def load_run(folder: str | Path) -> tuple[RunSummary, list[RoundRecord]]:
    """(metrics.json summary, rounds.jsonl records) of a results folder."""
    return read_run(folder)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _label(summary: RunSummary, folder: Path) -> str:
    return summary.run.get("experiment_name") or folder.name


def plot_run(folder: str | Path, out_dir: Optional[str | Path] = None) -> list[Path]:
    """Write the standard figures of one run (four, plus rank_energy.png when the records have
    `rank_energy`); returns their paths."""
    folder = Path(folder)
    summary, records = load_run(folder)
    out = Path(out_dir) if out_dir else folder / "plots"
    out.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    name = _label(summary, folder)
    metric = summary.metric
    written = []

    # 1. score vs simulated time, with the target line
    fig, ax = plt.subplots(figsize=(7, 4.2))
    evaluated = [r for r in records if r.score is not None]
    ax.plot([r.sim_time for r in evaluated], [r.score for r in evaluated], marker="o", label=name)
    if summary.target is not None:
        ax.axhline(summary.target, color="red", linestyle="--", linewidth=1, label=f"target {summary.target}")
    ttt = summary.time_to_target
    if ttt.sim_seconds is not None:
        ax.axvline(
            ttt.sim_seconds,
            color="gray",
            linestyle=":",
            linewidth=1,
            label=f"reached at round {ttt.round} ({ttt.sim_seconds:.0f} s)",
        )
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(metric)
    ax.set_title(f"{name}: {metric} vs simulated time")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(save_figure(fig, out / "score_vs_time.png", plt))

    # 2. rank per client per round (heatmap; blank = not selected, x = straggler, o = rejected/out of memory);
    # beyond HEATMAP_MAX_CLIENTS clients (surrogate what-if runs) the distribution of ranks per round instead
    num_clients = int(summary.run.get("num_clients") or 0)
    if records and num_clients <= HEATMAP_MAX_CLIENTS:
        written.append(_rank_heatmap(records, summary, name, out, plt))
    elif records:
        written.append(_rank_distribution(records, name, out, plt))

    # 3. per-client loss percentiles per round
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rounds = [r.round for r in records]
    keys = list((records[0].fairness if records else {}).keys())
    for key in keys:
        ax.plot(
            rounds,
            [r.fairness.get(key) if r.fairness.get(key) is not None else np.nan for r in records],
            marker=".",
            label=key,
        )
    if len(keys) >= 2:
        lo = [r.fairness.get(keys[0]) or np.nan for r in records]
        hi = [r.fairness.get(keys[-1]) or np.nan for r in records]
        ax.fill_between(rounds, lo, hi, alpha=0.15)
    ax.set_xlabel("round")
    ax.set_ylabel("client loss (global model, before local training)")
    ax.set_title(f"{name}: per-client loss percentiles")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(save_figure(fig, out / "client_loss_percentiles.png", plt))

    # 4. bytes per round
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = np.arange(len(records))
    ax.bar(x - 0.2, [r.bytes_down / 1e6 for r in records], width=0.4, label="down (server to clients)")
    ax.bar(x + 0.2, [r.bytes_up / 1e6 for r in records], width=0.4, label="up (clients to server)")
    ax.set_xticks(x, [str(r) for r in rounds])
    ax.set_xlabel("round")
    ax.set_ylabel("MB per round (all clients)")
    ax.set_title(f"{name}: communication per round")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    written.append(save_figure(fig, out / "bytes_per_round.png", plt))

    # 5. rank-collapse diagnostics: energy of each rank block of the global adapter vs round
    if any(r.rank_energy for r in records):
        written.append(_plot_rank_energy(records, out / "rank_energy.png", name, plt))
    return written


def _plot_rank_energy(records: list[RoundRecord], path: Path, name: str, plt) -> Path:
    """One panel per LoRA module group: energy ||B[:, j]||^2 ||A[j, :]||^2 of rank block j (summed over
    layers) vs round, one line per block, log scale; the title gives the last round's effective ranks."""
    with_key = [r for r in records if r.rank_energy]
    groups = list(with_key[-1].rank_energy)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), squeeze=False)
    for ax, group in zip(axes[0], groups):
        rounds = [r.round for r in with_key if group in r.rank_energy]
        energy = [r.rank_energy[group]["energy"] for r in with_key if group in r.rank_energy]
        blocks = max(len(e) for e in energy)
        grid = np.full((len(energy), blocks), np.nan)
        for i, e in enumerate(energy):
            grid[i, : len(e)] = e
        grid[grid <= 0] = np.nan  # zero energy cannot sit on a log axis: the line stops
        colors = plt.get_cmap("viridis")(np.linspace(0, 0.95, blocks))
        for j in range(blocks):
            ax.plot(rounds, grid[:, j], marker=".", color=colors[j], label=f"block {j}")
        if np.isfinite(grid).any():
            ax.set_yscale("log")
        last = with_key[-1].rank_energy.get(group, {})
        ax.set_title(
            f"{name}: {group}\neffective rank {last.get('effective_rank', float('nan')):.2f} "
            f"(blocks {last.get('block_effective_rank', float('nan')):.2f}) at the last round"
        )
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("round")
        ax.set_ylabel("energy of rank block (sum over layers)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path, plt)


def save_figure(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare_rows(folders: Sequence[str | Path]) -> tuple[list[str], list[list[str]]]:
    """Header and one row of headline metrics per run."""
    header = [
        "run",
        "scheduler",
        "aggregation",
        "final",
        "best",
        "target at round / sim s",
        "compliance %",
        "stragglers",
        "loss p50",
        "KB up/client-round",
        "sim s",
    ]
    rows = []
    for folder in folders:
        s, _ = load_run(folder)
        ttt = s.time_to_target
        p50 = (s.fairness_final or {}).get("p50")
        rows.append(
            [
                _label(s, Path(folder)),
                str(s.run.get("scheduler", "")),
                str(s.run.get("aggregation", "")),
                _fmt(s.final_score),
                _fmt(s.best_score),
                "not reached" if ttt.round is None else f"{ttt.round} / {ttt.sim_seconds:.1f}",
                _fmt(s.deadline_compliance_pct, 0),
                str(s.stragglers_total),
                _fmt(p50),
                _fmt(s.bytes["up_per_client_per_round"] / 1024, 1),
                _fmt(s.sim_time_total, 1),
            ]
        )
    return header, rows


COMPARE_IGNORES = ("experiment_name", "output_dir", "federation.scheduler")


def config_differences(folders: Sequence[str | Path]) -> list[str]:
    """One line per run whose config.yaml differs from the first run's in more than the scheduler (and the
    run's name and output folder): the keys and both values. Runs without a readable config.yaml are skipped."""
    import yaml

    configs = []
    for folder in folders:
        try:
            configs.append((Path(folder), flatten(yaml.safe_load((Path(folder) / "config.yaml").read_text()) or {})))
        except (OSError, yaml.YAMLError):
            continue
    if len(configs) < 2:
        return []
    (first, ref), lines = configs[0], []
    for folder, cfg in configs[1:]:
        keys = sorted(
            k
            for k in set(ref) | set(cfg)
            if ref.get(k) != cfg.get(k) and not any(k == p or k.startswith(p + ".") for p in COMPARE_IGNORES)
        )
        if keys:
            shown = ", ".join(f"{k}={cfg.get(k)!r} (vs {ref.get(k)!r})" for k in keys[:8])
            more = f" and {len(keys) - 8} more" if len(keys) > 8 else ""
            lines.append(f"warning: {folder} differs from {first} in more than the scheduler: {shown}{more}")
    return lines


def _fmt(x, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def plot_compare(folders: Sequence[str | Path], path: str | Path) -> Path:
    """Several runs' score vs simulated time on one figure."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    target = None
    metric = "score"
    for folder in folders:
        s, records = load_run(folder)
        evaluated = [r for r in records if r.score is not None]
        ax.plot(
            [r.sim_time for r in evaluated], [r.score for r in evaluated], marker="o", label=_label(s, Path(folder))
        )
        target = s.target if s.target is not None else target
        metric = s.metric
    if target is not None:
        ax.axhline(target, color="red", linestyle="--", linewidth=1, label=f"target {target}")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs simulated time")
    ax.grid(alpha=0.3)
    ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, plt)


HEATMAP_MAX_CLIENTS = 200


def _rank_heatmap(records, summary, name, out, plt):
    seen = [int(c) for r in records for c in r.clients.cid]
    num_clients = int(summary.run.get("num_clients") or (1 + max(seen, default=0)))
    grid = np.full((num_clients, max(len(records), 1)), np.nan)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(records) + 3), max(3, 0.3 * num_clients + 1.5)))
    for j, rec in enumerate(records):
        for cid, rank in rec.ranks.items():
            grid[cid, j] = rank
        for cid in rec.stragglers:
            ax.text(j, int(cid), "x", ha="center", va="center", color="white", fontsize=9, fontweight="bold")
    image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="LoRA rank")
    ax.set_xticks(range(len(records)), [str(r.round) for r in records])
    ax.set_yticks(range(num_clients))
    ax.set_xlabel("round   (blank: not selected, x: straggler)")
    ax.set_ylabel("client")
    ax.set_title(f"{name}: rank per client per round")
    return save_figure(fig, out / "ranks_heatmap.png", plt)


def _rank_distribution(records, name, out, plt):
    """Mean and 10-90 % band of the assigned ranks per round, and the share of stragglers."""
    rounds = [r.round for r in records]
    ranks = [np.asarray(r.clients.rank, dtype=np.float64) for r in records]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.plot(rounds, [x.mean() if x.size else np.nan for x in ranks], marker=".", label="mean rank")
    ax.fill_between(
        rounds,
        [np.percentile(x, 10) if x.size else np.nan for x in ranks],
        [np.percentile(x, 90) if x.size else np.nan for x in ranks],
        alpha=0.2,
        label="p10-p90",
    )
    ax.set_xlabel("round")
    ax.set_ylabel("LoRA rank")
    share = ax.twinx()
    share.plot(
        rounds,
        [100 * len(r.stragglers) / max(len(x), 1) for r, x in zip(records, ranks)],
        color="red",
        linestyle="--",
        label="stragglers %",
    )
    share.set_ylabel("stragglers (% of selected)")
    ax.legend(loc="upper left")
    share.legend(loc="upper right")
    ax.set_title(f"{name}: ranks per round ({len(ranks[0]) if ranks else 0} clients per round)")
    return save_figure(fig, out / "ranks_distribution.png", plt)
