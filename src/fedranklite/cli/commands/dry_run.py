"""`fedranklite run --dry-run`: what a run would do, without loading the model.

Printed to standard output as YAML: the resolved config (so the output can be saved and run as is), then, as
comment lines, where compute prices come from, every client's rows and labels, and an estimate of the run's
simulated and wall time with the assumptions it rests on. The data is loaded and partitioned exactly as the
run would (`run.prepare.plan`); no backbone weights are read and no rank profile is measured.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from fedranklite.cli.display import error

SHOWN_CLIENTS = 20  # more clients than this: the first ones, then a summary line


def dry_run(cfg, args: argparse.Namespace, console) -> int:
    import yaml

    from fedranklite.backends.surrogate.engine import CalibrationError
    from fedranklite.cli.offline import offline_when_local
    from fedranklite.data.textsplit import DataError
    from fedranklite.run.rank_profile import ProfileError

    offline_when_local(cfg)
    try:
        lines = surrogate_report(cfg) if cfg.engine.backend == "surrogate" else report(cfg)
    except (DataError, ProfileError, CalibrationError) as exc:
        return error(console, exc)
    print(f"# resolved config of {cfg.experiment_name} (fedranklite run --dry-run)")
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), end="")
    print()
    print("\n".join(f"# {line}" if line else "#" for line in [*lines, "", *results_folder(cfg)]))
    return 0


@dataclass
class Costs:
    """What the estimate prices with: (a, b) of t(r) = a + b r simulated seconds per sample at compute_factor 1
    (None: not known before the run), the bytes sent each way (fixed, per rank; None: not known before the model
    loads) and (a, b) of this machine's wall seconds per sample (None: no measurement to go by)."""

    price: Optional[tuple[float, float]]
    comm_bytes: Optional[tuple[int, int]]
    wall: Optional[tuple[float, float]]
    bytes_source: str = ""
    no_wall: str = (
        "wall time: no estimate without a rank profile for this backbone, batch shape and device "
        "(`fedranklite profile --config CONFIG` measures one)"
    )


def report(cfg) -> list[str]:
    """Price source, clients and estimate of a run that trains a model (local or Flower backend)."""
    from fedranklite.run.prepare import plan

    lines = compute_prices(cfg)
    stage1 = plan(cfg)
    lines += [""] + clients(cfg, stage1)
    profile = _load_profile(_profile(cfg)[0])
    t = cfg.timing
    if t.mode == "profile" and profile is not None:
        from fedranklite.run.pricing import priced_fit

        price: Optional[tuple[float, float]] = priced_fit(cfg, profile)
    elif t.mode == "profile":
        price = None
    else:
        price = (t.sec_per_sample, t.sec_per_sample_per_rank)
    costs = Costs(
        price,
        (profile.bytes_fixed, profile.bytes_per_rank) if profile is not None else None,
        (max(profile.time_fit.intercept, 0.0), max(profile.time_fit.slope, 0.0)) if profile is not None else None,
        "from the profile",
    )
    regression = stage1.data.task == "regression"
    return lines + [""] + estimate(cfg, stage1.rows, stage1.tier_of, regression, costs)


def surrogate_report(cfg) -> list[str]:
    """The same for engine.backend surrogate: its calibration prices compute and bytes, and with
    engine.surrogate.rows_per_client no data is split."""
    from fedranklite.backends.surrogate.engine import CalibrationError, SurrogateFit, surrogate_config
    from fedranklite.data.scoring import SCORE_METRICS
    from fedranklite.run.pricing import pricing, pricing_lines

    sur = cfg.engine.surrogate
    if not sur.calibration:
        raise CalibrationError("engine.backend: surrogate needs engine.surrogate.calibration")
    fit = SurrogateFit.load(sur.calibration)
    priced = surrogate_config(cfg, fit)
    lines = [
        f"compute prices: engine.backend surrogate, the calibration {sur.calibration} fitted a = "
        f"{fit.sec_per_sample:.4g} s, b = {fit.sec_per_sample_per_rank:.4g} s per rank per sample",
        "tiers:",
        *[f"  {line}" for line in pricing_lines(pricing(cfg))],
        "",
    ]
    regression = SCORE_METRICS[fit.metric].task == "regression"
    if sur.rows_per_client is not None:
        tier_of = cfg.client_tiers()
        rows = np.full(len(tier_of), sur.rows_per_client, dtype=np.int64)
        counts = ", ".join(f"{name} {tier.num_clients}" for name, tier in cfg.tiers.items())
        lines.append(
            f"clients: {len(tier_of)} ({cfg.federation.clients_per_round} per round; {counts}), "
            f"{sur.rows_per_client} rows each (engine.surrogate.rows_per_client: no data is split)"
        )
    else:
        from fedranklite.run.prepare import plan

        stage1 = plan(cfg)
        tier_of, rows = stage1.tier_of, stage1.rows
        lines += clients(cfg, stage1)
    costs = Costs(
        (fit.sec_per_sample, fit.sec_per_sample_per_rank),
        (fit.head_bytes, fit.bytes_per_rank),
        None,
        "from the calibration",
        "wall time: the surrogate trains no model; its wall time is the round loop's alone (not estimated)",
    )
    return lines + [""] + estimate(priced, rows, tier_of, regression, costs)


# ---------------------------------------------------------------------------------------- compute prices
def _profile(cfg) -> tuple[Optional[Path], str]:
    """The rank profile file a run of `cfg` would read, and where it comes from (None: none exists)."""
    from fedranklite.run.rank_profile import SHIPPED_DIR, cache_dir, find_profile, key_file_name, profile_key

    named = getattr(cfg.timing, "profile", None)
    if named:
        return Path(named), "named by timing.profile"
    found = find_profile(profile_key(cfg))
    if found is None:
        return None, f"none yet; it would be measured and cached as {cache_dir() / key_file_name(profile_key(cfg))}"
    if found.parent == SHIPPED_DIR:
        return found, "shipped with the package, measured on another machine"
    return found, "cached on this machine by an earlier `fedranklite profile` or run"


def _load_profile(path: Optional[Path]):
    from fedranklite.run.rank_profile import RankProfile

    return RankProfile.load(path) if path is not None else None


def compute_prices(cfg) -> list[str]:
    from fedranklite.run.pricing import priced_fit, pricing, pricing_lines

    t = cfg.timing
    path, source = _profile(cfg)
    key = _key_text(cfg)
    if t.mode == "profile":
        lines = [
            "compute prices: timing.mode profile, t(r) = a + b x rank seconds per sample from a rank profile",
            f"rank profile for {key}: {path if path is not None else '-'} ({source})",
        ]
        if path is not None:
            a, b = priced_fit(cfg, _load_profile(path))
            lines.append(f"priced at a = {a:.4g} s, b = {b:.4g} s per rank (on the tiers' reference device)")
    elif t.mode == "analytic":
        lines = [
            "compute prices: timing.mode analytic, seconds = samples x (a + b x rank) / compute_factor with "
            f"a = {t.sec_per_sample:g} s, b = {t.sec_per_sample_per_rank:g} s per rank (constants of the config)",
            f"rank profile for {key} (used only for the wall-time estimate below): "
            f"{path if path is not None else 'none'}" + (f" ({source})" if path is not None else ""),
        ]
    else:
        lines = [
            f"compute prices: timing.mode {t.mode}, simulated seconds = the measured wall seconds of each client's "
            f"training / its compute_factor; until a client reports, the scheduler predicts with a = "
            f"{getattr(t, 'sec_per_sample', '-')} s, b = {getattr(t, 'sec_per_sample_per_rank', '-')} s per rank",
            f"rank profile for {key} (used only for the estimate below): "
            f"{path if path is not None else 'none'}" + (f" ({source})" if path is not None else ""),
        ]
    return lines + ["tiers:"] + [f"  {line}" for line in pricing_lines(pricing(cfg, _load_profile(path)))]


def _key_text(cfg) -> str:
    from fedranklite.run.rank_profile import profile_key

    k = profile_key(cfg)
    return f"{k['backbone']}, batch {k['batch_size']} x {k['max_length']} tokens, {k['device']}"


# ---------------------------------------------------------------------------------------- clients
def _labels_text(labels: np.ndarray, regression: bool, names: Optional[list[str]]) -> str:
    if len(labels) == 0:
        return "-"
    if regression:
        return f"mean {labels.mean():.3g}, min {labels.min():.3g}, max {labels.max():.3g}"
    ids, counts = np.unique(labels.astype(np.int64), return_counts=True)
    return " ".join(
        f"{names[i] if names is not None and i < len(names) else i}:{c}" for i, c in zip(ids.tolist(), counts.tolist())
    )


def clients(cfg, stage1) -> list[str]:
    from fedranklite.run.client import TrainSettings

    data = stage1.data
    regression = data.task == "regression"
    settings = TrainSettings.from_config(cfg, regression)
    labels, names = data.train.labels, data.train.label_names
    rows = stage1.rows
    out = [
        f"clients: {stage1.num_clients} ({cfg.federation.clients_per_round} per round), "
        f"{len(data.train)} training rows split by data.partition {cfg.data.partition.type}, "
        f"{len(data.eval)} evaluation rows, task {data.task}",
        f"{'client':>6}  {'tier':<12} {'rows':>7} {'samples/round':>13}  labels",
    ]
    for cid, part in enumerate(stage1.partitions[:SHOWN_CLIENTS]):
        out.append(
            f"{cid:>6}  {stage1.tier_of[cid]:<12} {len(part):>7} {settings.planned_samples(len(part)):>13}  "
            f"{_labels_text(labels[part], regression, names)}"
        )
    if stage1.num_clients > SHOWN_CLIENTS:
        out.append(
            f"... and {stage1.num_clients - SHOWN_CLIENTS} more; rows per client min {rows.min()}, "
            f"median {int(np.median(rows))}, max {rows.max()}"
        )
    return out


# ---------------------------------------------------------------------------------------- estimate
def mean_rank(cfg) -> float:
    """The mean rank per selected client the estimate assumes: a fixed scheduler's rank, else r_bar."""
    s = cfg.federation.scheduler
    rank = getattr(s, "rank", None) or getattr(s, "r_bar", None) or cfg.r_max
    return float(min(rank, cfg.r_max))


def expected_max(times: np.ndarray, k: int) -> float:
    """The expected largest of `k` values drawn without replacement, uniformly, from `times`."""
    t = np.sort(np.asarray(times, dtype=np.float64))
    n = len(t)
    k = min(k, n)
    if k <= 0:
        return 0.0
    # P(max is the j-th smallest) = C(j-1, k-1) / C(n, k), j = k..n, in logs to stay finite for large n
    j = np.arange(k, n + 1)
    logp = _log_comb(j - 1, k - 1) - _log_comb(np.array([n]), k)[0]
    return float(np.sum(np.exp(logp) * t[k - 1 :]))


def _log_comb(n: np.ndarray, k: int) -> np.ndarray:
    return np.array([math.lgamma(x + 1) - math.lgamma(k + 1) - math.lgamma(x - k + 1) for x in n.tolist()])


def estimate(cfg, rows: np.ndarray, tier_of: list[str], regression: bool, costs: Costs) -> list[str]:
    from fedranklite.federation.hardware import tier_arrays
    from fedranklite.federation.stragglers import STRAGGLER_POLICIES
    from fedranklite.federation.timing import comm_seconds
    from fedranklite.run.client import TrainSettings

    settings = TrainSettings.from_config(cfg, regression)
    rank = mean_rank(cfg)
    samples = np.array([settings.planned_samples(int(r)) for r in rows], dtype=np.float64)
    prior = tier_arrays(cfg, tier_of)
    k, rounds = cfg.federation.clients_per_round, cfg.federation.num_rounds
    lines = [
        f"estimate (assumptions: every selected client trains at rank {rank:g}, the scheduler's mean; clients "
        f"are selected uniformly at random; each client's tier figures without its hidden speed deviation, "
        f"jitter or absences)"
    ]
    if costs.price is None:
        lines.append("simulated time: no estimate before the rank profile is measured")
    else:
        a, b = costs.price
        client_time = samples * (a + b * rank) / prior["compute_factor"]
        if costs.comm_bytes is not None:
            size = costs.comm_bytes[0] + rank * costs.comm_bytes[1]
            links = zip(prior["downlink_mbps"], prior["uplink_mbps"])
            client_time += np.array([comm_seconds(size, down) + comm_seconds(size, up) for down, up in links])
            lines.append(
                f"communication: {size:,.0f} bytes each way per client at rank {rank:g} ({costs.bytes_source})"
            )
        elif not np.all(np.isnan(prior["uplink_mbps"])):
            lines.append("communication not included: the adapter's size is known once the model loads")
        deadline = cfg.deadline.seconds
        capped = deadline is not None and STRAGGLER_POLICIES.build(cfg.deadline.straggler_policy).stops_at_deadline
        per_round = expected_max(np.minimum(client_time, deadline) if capped else client_time, k)
        mode = "measured on this machine, scaled" if cfg.timing.mode == "measured" else cfg.timing.mode
        lines.append(
            f"simulated time ({mode}): a client-round takes {client_time.min():.3g} to {client_time.max():.3g} s; "
            f"a round lasts as long as its slowest selected client"
            + (f", at most the deadline {deadline:g} s" if capped else "")
            + f": about {per_round:.3g} s per round, {per_round * rounds:.4g} s for {rounds} rounds"
        )
        if deadline is not None:
            late = int(np.sum(client_time > deadline))
            lines.append(f"deadline {deadline:g} s: {late} of {len(client_time)} clients would miss it at this rank")
    if costs.wall is None:
        lines.append(costs.no_wall)
    else:
        pa, pb = costs.wall
        train = float(np.mean(samples * (pa + pb * rank))) * k
        lines.append(
            f"wall time (local backend, clients trained one after another at the profile's speed, evaluation and "
            f"set-up not included): about {train:.3g} s per round, {train * rounds:.4g} s for {rounds} rounds"
        )
    return lines


def results_folder(cfg) -> list[str]:
    from fedranklite.run.outfolder import existing_results

    folder = cfg.results_dir
    held = existing_results(folder) if folder.is_dir() else []
    state = (
        f"holds earlier results ({', '.join(held)}): run needs --resume, --overwrite or --new-folder"
        if held
        else ("does not exist yet" if not folder.exists() else "holds no earlier results")
    )
    return [f"results folder: {folder} ({state})"]
