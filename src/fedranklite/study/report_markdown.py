"""report.md: the tables of a sweep report (cells, their estimates over seeds, paired differences)."""

from __future__ import annotations

from typing import Optional

from fedranklite.study.stats import (
    MIN_STAR_PAIRS,
)


def _num(x: Optional[float], digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _est(e: dict, digits: int, of: Optional[int] = None) -> str:
    """mean [lo, hi], with (n=k) when the CI has fewer values than `of` (the cell's finished runs: values
    that are missing or not finite are left out) or there is no CI."""
    if e["mean"] is None:
        return "–"
    n = f" (n={e['n']})" if e["ci"] is None or (of is not None and e["n"] < of) else ""
    if e["ci"] is None:
        return f"{_num(e['mean'], digits)}{n}"
    return f"{_num(e['mean'], digits)} [{_num(e['ci'][0], digits)}, {_num(e['ci'][1], digits)}]{n}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _span(values: list) -> str:
    if not values:
        return "?"
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]} (varies)"


def markdown(report: dict) -> str:
    metrics = {m["key"]: m for m in report["metrics"]}
    digits = {"final_score": 4, "best_score": 4, "ttt_seconds": 1, "ttt_rounds": 1, "sec_per_round": 2}
    digits.update({"auc": 4, "ttt_restricted": 1})
    digits.update({"compliance_pct": 1, "kb_up": 1})
    b, runs = report["budget"], report["runs"]
    seeds = b["seeds"]
    direction = "higher" if report["higher_is_better"] else "lower"
    out = [
        f"# Sweep report: {report['sweep_dir']}",
        "",
        f"Budget: {len(seeds)} seeds per cell ({', '.join(map(str, seeds))}), {_span(b['rounds'])} rounds per run, "
        f"{_span(b['clients'])} clients ({_span(b['clients_per_round'])} per round); "
        f"reference cell: **{report['reference']}**. Metric: {report['metric']} ({direction} is better), "
        f"target {report['target']}. Means with 95 % bootstrap CIs over seeds "
        f"({report.get('ci_method', 'percentile')}, {report['resamples']} resamples, RNG seed {report['seed']}). "
        f"Primary metric: the {report['metric']} averaged over the common horizon of "
        f"{_num(report.get('horizon_sim_seconds'), 1)} simulated seconds (AUC / horizon).",
        "",
    ]
    if runs["missing"]:
        failed = f", {len(report['failed'])} of them failed (sweep_error.log)" if report["failed"] else ""
        shown = ", ".join(runs["missing"][:10]) + (" ..." if len(runs["missing"]) > 10 else "")
        out += [
            f"**Incomplete: {runs['finished']} of {runs['total']} runs finished; {len(runs['missing'])} missing"
            f"{failed}:** {shown}",
            "",
        ]
    if report.get("warnings"):
        out += ["**Warnings:**", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    metric = report["metric"]
    rows = []
    for c in report["cells"]:
        m = c["metrics"]
        median = "–" if not c["n"] else _num(c["ttt_median_censored"], 1) if c["ttt_median_reached"] else "not reached"
        rows.append(
            [
                c["group"],
                f"{c['n']}" + ("" if c["n"] == c["planned"] else f" of {c['planned']}"),
                _est(m["auc"], 4, c["n"]) if "auc" in m else "–",
                _est(m["final_score"], 4, c["n"]),
                _est(m["best_score"], 4, c["n"]),
                f"{c['reached']}/{c['n']}",
                _est(m["ttt_seconds"], 1, c["n"]),
                median,
                _est(m["ttt_rounds"], 1, c["n"]),
                _est(m["sec_per_round"], 2, c["n"]),
            ]
        )
    out += [
        "## Per cell: score and time",
        "",
        _table(
            [
                "cell",
                "seeds",
                f"{metric} over the horizon (primary)",
                f"final {metric}",
                f"best {metric}",
                "reached target",
                "time to target, sim s (reached runs only)",
                "median time to target, sim s (unreached = ∞)",
                "rounds to target (reached runs only)",
                "sim s per round",
            ],
            rows,
        ),
        "",
    ]
    fair = [k for k in metrics if k.startswith("loss_")]
    rows = [
        [c["group"], str(c["n"]), _est(c["metrics"]["compliance_pct"], 1, c["n"])]
        + [_est(c["metrics"][k], 4, c["n"]) for k in fair]
        + [_est(c["metrics"]["kb_up"], 1, c["n"])]
        for c in report["cells"]
    ]
    out += [
        "## Per cell: deadline, fairness, communication",
        "",
        _table(
            ["cell", "seeds", "deadline compliance %"]
            + [f"client loss {k[5:]} (final)" for k in fair]
            + ["KB up per client-round"],
            rows,
        ),
        "",
    ]
    if report["paired"]:
        rows = []
        for p in report["paired"]:
            d = digits.get(p["metric"], 4)
            ci = "–" if p["ci"] is None else f"[{_num(p['ci'][0], d)}, {_num(p['ci'][1], d)}]"
            censored = p["metric"] in ("ttt_seconds", "ttt_rounds")
            label = p["label"] + (" (both reached)" if censored else "")
            note = p.get("skipped") or ""
            if not note and censored and p.get("censored_pairs"):
                note = f"{p['censored_pairs']} censored pair(s): no star"
                if p.get("order_unknown"):
                    note += f"; {p['order_unknown']} of unknown order"
            elif not note and p["ci"] is not None and p.get("ci_excludes_zero") and not p["excludes_zero"]:
                note = f"CI excludes 0, no star: {p.get('no_star')}"
            elif not note and not p["excludes_zero"] and p.get("mde") is not None:
                note = f"no difference larger than {_num(p['mde'], d)} detectable"
            test_p = p.get("sign_p") if censored else p.get("wilcoxon_p")
            seeds_ = str(p["n"]) + ("" if p["n"] == p.get("seeds_in_both", p["n"]) else f" of {p['seeds_in_both']}")
            rows.append(
                [
                    p["cell"],
                    p["reference"],
                    label,
                    "lower" if p["lower_is_better"] else "higher",
                    seeds_,
                    "–" if p["mean"] is None else f"{p['mean']:+.{d}f}",
                    ci + (" *" if p["excludes_zero"] else ""),
                    "–" if p["wins"] is None else f"{p['wins']}/{p['losses']}/{p['ties']}",
                    "–" if test_p is None else f"{test_p:.3f}" + (" (sign)" if censored else ""),
                    "–" if p.get("holm_p") is None else f"{p['holm_p']:.3f}",
                    "–" if p.get("mde") is None else _num(p["mde"], d),
                    note,
                ]
            )
        min_pairs = report.get("min_star_pairs", MIN_STAR_PAIRS)
        out += [
            "## Paired differences against the reference (same seed: same data split, selection, client speeds)",
            "",
            "d = cell − reference per seed; mean over seeds in both with a paired bootstrap 95 % CI (BCa). "
            "p: two-sided Wilcoxon signed-rank test of the differences; Holm p: corrected over the comparisons "
            f"of that metric (family-wise error 5 %). * : the CI excludes 0, the Holm p is below 0.05, over at "
            f"least {min_pairs} pairs, and (time and rounds to target) no pair is censored. MDE: the smallest "
            "mean difference a paired test at 5 % would detect with 80 % power at these seeds (paired t, "
            "observed SD of d); a null states it. W/L/T: seeds where the cell is better / worse / equal. "
            "For the two censored metrics (time and rounds to target) p is the exact sign test of W against L "
            "(ties dropped) instead. For time and rounds to target an unreached run counts "
            "as +∞ in W/L/T (sooner wins; two unreached runs tie), while the mean difference uses only seeds "
            "where both reached: with any censored pair (a seed unreached in either arm) that mean is "
            "conditional on reaching and gets no star; read W/L/T and sign p instead. A pair of unknown order: "
            "the unreached run stopped (in simulated time) before the other reached, yet counts as slower.",
            "",
            "Bootstrap CIs over few seeds under-cover; BCa corrects part of it, and a star also needs the test.",
            "",
            _table(
                ["cell", "reference", "metric", "better", "seeds", "mean d", "95 % CI", "W/L/T", "p", "Holm p", "MDE"]
                + ["note"],
                rows,
            ),
            "",
        ]
    return "\n".join(out)
