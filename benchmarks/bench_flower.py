"""Per-round cost of the same experiment on the local engine, Flower's simulation engine and a Flower
deployment (SuperLink + SuperNodes as processes on 127.0.0.1), 'before' (a git revision) and 'after' (this
tree), and where a deployment's per-message time goes.

Every measurement runs in its own process with one torch thread (OMP_NUM_THREADS=1, inherited by Ray workers
and ClientApp processes) and its own empty cache folder (FEDRANKLITE_CACHE: the token cache starts cold, as
in a first run). "before" is the source tree of a git revision (default: the last one whose SuperNodes
started a fresh `flwr-clientapp` process per message; this tree runs one resident ClientApp worker per
SuperNode), unpacked into a temporary folder with `git archive` and run from there (PYTHONPATH); "after" is this tree.

    backends    local / simulation / deployment: the engine's own per-round wall seconds (training of the
                round's clients + evaluation + bookkeeping, in the process running the Engine), round 1
                apart (the ClientApps build their side then) from rounds 2..N, and the set-up (total - rounds)
    cold        (--cold) one fresh process doing what a per-message `flwr-clientapp` does for a train
                message, stage by stage: interpreter start, imports (torch, Flower, our ClientApp module,
                transformers + peft), config parse, data + partitions, model build, tokenisation, training
                of one client. "after" twice: empty token cache, then filled
    deployment  the ClientApps' own timing of every client-round, from flower.json

    python benchmarks/bench_flower.py [--rounds 4] [--before 3f8071d] [--no-before] [--cold] [--markdown-only]
Writes benchmarks/results/flower.json and flower.md (`--markdown-only` rewrites flower.md from the JSON; a
list `earlier_runs` of {created, per_round_seconds} added to the JSON by hand is shown as the spread).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, ROOT, write

EXPERIMENT = "configs/experiments/lite_iid.yaml"
DEFAULT_BEFORE = "3f8071d"  # main with a fresh `flwr-clientapp` process per deployment message


COMMON = [
    "federation.clients_per_round=5",
    "training.max_local_steps=4",
    "evaluation.max_samples=200",
    "timing.mode=analytic",
]
FLOWER = [
    "engine.backend=flower",
    "engine.flower.num_supernodes=3",
    "engine.flower.superlink_port=0",
    "engine.flower.supernode_base_port=0",
    "engine.flower.round_timeout=600",
]
BACKEND = {
    "local": ["engine.backend=local"],
    "simulation": [*FLOWER, "engine.flower.mode=simulation"],
    "deployment": [*FLOWER, "engine.flower.mode=deployment"],
}


def overrides(rounds: int, out: str, name: str, backend: str) -> list[str]:
    """The small lite_iid: 10 clients, 5 per round, 4 local steps, 200 eval rows, analytic time (the same ranks
    on every backend, so every backend does the same work), 3 SuperNodes (cid % 3)."""
    return [
        f"federation.num_rounds={rounds}",
        *COMMON,
        f"output_dir={out}",
        f"experiment_name={name}",
        *BACKEND[backend],
    ]


# ================================================================== workers (run in a child process)
def worker_backend(backend: str, rounds: int, out: str) -> dict:
    """One backend's run of the experiment of the tree under test (its configs: the current directory)."""
    import torch

    torch.set_num_threads(1)
    from fedranklite.config.files import load_config

    cfg = load_config(Path.cwd() / EXPERIMENT, overrides(rounds, out, f"bench_{backend}", backend))
    start = time.perf_counter()
    report = None
    if backend == "local":
        from fedranklite.run.engine import build_engine

        engine = build_engine(cfg)
        engine.run()
        records = engine.state.records
    elif backend == "simulation":
        from fedranklite.backends.flower.launch import simulate

        engine, _ = simulate(cfg)
        records = engine.state.records
    else:
        from fedranklite.backends.flower.launch import Deployment
        from fedranklite.core.results_io import RoundLog

        dep = Deployment(cfg, Path(out) / "deployment")
        try:
            dep.start()
            rc = dep.submit(timeout=900)
        finally:
            dep.stop()
        if rc != 0:
            raise RuntimeError(f"flwr run exited with {rc}: see {Path(out) / 'deployment' / 'logs'}")
        records = RoundLog.read(cfg.results_dir / "rounds.jsonl")
        report = json.loads((cfg.results_dir / "flower.json").read_text())
    total = time.perf_counter() - start
    walls = [r.wall_seconds for r in records]
    out_ = {
        "round_wall_seconds": walls,
        "total_seconds": total,
        "setup_seconds": total - sum(walls),
        "ranks": [{str(c): k for c, k in r.ranks.items()} for r in records],
        "final_score": records[-1].score,
    }
    if report is not None and report.get("client_timings"):
        out_["client_timings"] = report["client_timings"]
    return out_


def worker_cold(out: str) -> dict:
    """A train message's work in a fresh process, as `flwr-clientapp` does it, with a clock on each stage."""
    import psutil

    t: dict[str, float] = {"interpreter_start": time.time() - psutil.Process().create_time()}

    def lap(name, since):
        now = time.perf_counter()
        t[name] = now - since
        return now

    now = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    now = lap("import_torch", now)
    import flwr.app  # noqa: F401
    import flwr.clientapp  # noqa: F401
    import flwr.supernode.runtime.run_clientapp  # noqa: F401  (flwr-clientapp's own module)

    now = lap("import_flower", now)
    from fedranklite.backends.flower import client_app  # noqa: F401

    now = lap("import_our_clientapp_module", now)
    import fedranklite  # what the train handler imports (before: already imported with the module)
    from fedranklite.backends.flower import task
    from fedranklite.config.files import load_config
    from fedranklite.run.client import train_client
    from fedranklite.run.runners import client_seed

    now = lap("import_our_package", now)
    import peft  # noqa: F401  (imported by the model build: split out to show the build itself)
    import transformers  # noqa: F401

    now = lap("import_transformers_peft", now)

    stages = {"load_data": "data_load", "partition": "partition", "build_model": "model_build", "encode": "tokenise"}
    if hasattr(task, "prepare"):  # after: the set-up goes through prepare.py, tokenising through its cache
        import fedranklite.run.prepare  # noqa: F401

        stages = {**{k: v for k, v in stages.items() if k != "encode"}, "tokenise": "tokenise"}
    for mod in [m for n, m in list(sys.modules.items()) if n.startswith("fedranklite") and m is not None]:
        for fn, stage in stages.items():
            real = getattr(mod, fn, None)
            if (
                real is not None
                and getattr(real, "__module__", "").startswith("fedranklite")
                and not hasattr(real, "_timed")
            ):
                setattr(mod, fn, _timed_fn(real, stage, t))
    cfg = load_config(Path.cwd() / EXPERIMENT, overrides(1, out, "cold", "deployment"))
    text = task.config_json(cfg)
    now = time.perf_counter()
    side = task.client_side(text)
    setup = time.perf_counter() - now
    t["config_parse_and_rest_of_setup"] = setup - sum(t.get(s, 0.0) for s in stages.values())
    cid = 0
    now = time.perf_counter()
    res = train_client(
        side.model,
        side.model.adapter_state(),
        cid,
        8,
        side.train,
        side.partitions[cid],
        side.settings,
        side.device,
        client_seed(cfg.seed, 1, cid),
        None,
    )
    now = lap("train_one_client", now)
    task.result_content(res)
    lap("reply_encode", now)
    ours = (
        "import_our_clientapp_module",
        "import_our_package",
        "data_load",
        "partition",
        "model_build",
        "tokenise",
        "config_parse_and_rest_of_setup",
    )
    return {
        "seconds": t,
        "steps": res.steps,
        "source": fedranklite.__file__,
        "total": sum(t.values()),
        "ours": sum(t.get(k, 0.0) for k in ours),
    }


def worker_query() -> dict:
    """A `query.partition` message's work in a fresh process: start, Flower's imports, loading our ClientApp."""
    import psutil

    t = {"interpreter_start": time.time() - psutil.Process().create_time()}
    now = time.perf_counter()
    import flwr.app  # noqa: F401
    import flwr.clientapp  # noqa: F401
    import flwr.supernode.runtime.run_clientapp  # noqa: F401

    t["import_flower"] = time.perf_counter() - now
    now = time.perf_counter()
    from fedranklite.backends.flower import client_app  # noqa: F401

    t["import_our_clientapp_module"] = time.perf_counter() - now
    return {"seconds": t, "total": sum(t.values()), "torch_imported": "torch" in sys.modules}


def _timed_fn(real, stage, into):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            into[stage] = into.get(stage, 0.0) + time.perf_counter() - start

    wrapper._timed = True
    return wrapper


# ================================================================== the driver
def run_child(src: Path, args: list[str], cache: Path) -> dict:
    env = dict(
        os.environ,
        PYTHONPATH=str(src),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        FEDRANKLITE_CACHE=str(cache),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
    )
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = Path(f.name)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", *args, "--result", str(result)],
        env=env,
        cwd=src.parent,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{args} on {src} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    out = json.loads(result.read_text())
    result.unlink()
    out["process_seconds"] = time.perf_counter() - start
    return out


def unpack(rev: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src", "configs", "pyproject.toml"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


COLD_REPEATS = 3  # fresh-process measurements are repeated: the median of each stage is reported


def median_run(runs: list[dict]) -> dict:
    """Stage by stage median of repeated fresh-process measurements (a shared machine is noisy)."""
    stages = list(runs[0]["seconds"])
    med = {s: statistics.median(r["seconds"].get(s, 0.0) for r in runs) for s in stages}
    out = {
        **runs[0],
        "seconds": med,
        "total": sum(med.values()),
        "repeats": len(runs),
        "totals": [r["total"] for r in runs],
    }
    if "ours" in runs[0]:
        out["ours"] = statistics.median(r["ours"] for r in runs)
    return out


def summarize(run: dict) -> dict:
    w = run["round_wall_seconds"]
    return {
        "round1": w[0],
        "steady_mean": statistics.mean(w[1:]) if len(w) > 1 else None,
        "setup": run["setup_seconds"],
        "total": run["total_seconds"],
    }


TIMING_KEYS = (
    "roundtrip",
    "to_handler",
    "process_to_handler",
    "setup",
    "config_parse",
    "data_and_partitions",
    "model_build",
    "tokenise_train",
    "train",
    "back",
)


def deployment_breakdown(timings: list[dict]) -> dict:
    """Mean seconds per client-round of each part, round 1 (ClientApps build) and later rounds apart."""
    out = {}
    for label, rows in (
        ("round1", [t for t in timings if t["round"] == 1]),
        ("later_rounds", [t for t in timings if t["round"] > 1]),
    ):
        if rows:
            out[label] = {k: statistics.mean(t.get(k, 0.0) for t in rows) for k in TIMING_KEYS}
            out[label]["client_rounds"] = len(rows)
            out[label]["built"] = sum(bool(t["built"]) for t in rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git revision measured as 'before'")
    parser.add_argument("--no-before", action="store_true")
    parser.add_argument("--cold", action="store_true", help="also time a ClientApp message in a fresh process")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite flower.md from flower.json")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # the tree under test is the one on PYTHONPATH, not the one `common` puts first
        sys.path.remove(str(ROOT / "src"))  # the first occurrence: common's; PYTHONPATH's stays
        kind, out = args.worker[0], args.worker[-1]
        payload = (
            worker_cold(out)
            if kind == "cold"
            else worker_query()
            if kind == "query"
            else worker_backend(kind, int(args.worker[1]), out)
        )
        Path(args.result).write_text(json.dumps(payload))
        return

    if args.markdown_only:
        (RESULTS / "flower.md").write_text(markdown(json.loads((RESULTS / "flower.json").read_text())))
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_flower_") as tmp:
        tmp = Path(tmp)
        trees = {"after": ROOT / "src"}  # first: a failure in this tree shows before the long 'before' runs
        if not args.no_before:
            trees["before"] = unpack(args.before, tmp / "before")
        measured: dict = {label: {} for label in trees}
        # the trees take turns backend by backend, so both see much the same load of the shared machine
        for backend in ("local", "simulation", "deployment"):
            for label, src in trees.items():
                out = tmp / f"{label}_{backend}"
                measured[label][backend] = run_child(src, [backend, str(args.rounds), str(out)], out / "cache")
                s = summarize(measured[label][backend])
                print(
                    f"{label:6s} {backend:10s} round 1 {s['round1']:6.2f} s, rounds 2..{args.rounds} "
                    f"{s['steady_mean']:6.2f} s, set-up {s['setup']:6.1f} s",
                    flush=True,
                )
        cold: dict = {label: [] for label in trees}
        query: dict = {label: [] for label in trees}
        if args.cold and "after" in trees:  # the first message of a run: empty token cache (it writes it)
            measured["after"]["cold_clientapp_token_cache_empty"] = run_child(
                trees["after"], ["cold", str(tmp / "cold0")], tmp / "after_cold_cache"
            )
        for k in range(COLD_REPEATS if args.cold else 0):
            for label, src in trees.items():
                cache = tmp / f"{label}_cold_cache"
                cold[label].append(run_child(src, ["cold", str(tmp / f"{label}_cold{k}")], cache))
                query[label].append(run_child(src, ["query", str(tmp)], cache))
        for label in trees if args.cold else []:
            m = measured[label]
            m["cold_clientapp"], m["query_clientapp"] = median_run(cold[label]), median_run(query[label])
            print(
                f"{label:6s} ClientApp message in a fresh process: train {m['cold_clientapp']['total']:.2f} s "
                f"(ours {m['cold_clientapp']['ours']:.2f} s), partition query "
                f"{m['query_clientapp']['total']:.2f} s",
                flush=True,
            )
    wall = time.perf_counter() - started
    measured = {label: measured[label] for label in ("before", "after") if label in measured}
    table = {
        label: {b: summarize(m[b]) for b in ("local", "simulation", "deployment")} for label, m in measured.items()
    }
    steady = {label: {b: t[b]["steady_mean"] for b in t} for label, t in table.items()}
    payload = {
        "script": "benchmarks/bench_flower.py",
        "experiment": EXPERIMENT,
        "settings": [f"federation.num_rounds={args.rounds}", *COMMON],
        "backend_settings": BACKEND,
        "model": "bundled:minilm-l6 (lite_iid default)",
        "rounds": args.rounds,
        "before_revision": None if args.no_before else args.before,
        "note": "2-core CPU shared with other work (other agents' tests and builds ran at the same time): wall "
        "seconds are approximate; one torch thread per process; a fresh cache folder per run",
        "per_round_seconds": table,
        "deployment_over_simulation_rounds_2_n": {
            label: st["deployment"] / st["simulation"] for label, st in steady.items() if st["simulation"]
        },
        "simulation_over_local_rounds_2_n": {
            label: st["simulation"] / st["local"] for label, st in steady.items() if st["local"]
        },
        "deployment_breakdown": {
            label: deployment_breakdown(m["deployment"].get("client_timings", [])) for label, m in measured.items()
        },
        # per tree: every backend against that tree's local engine (two trees may differ in other code)
        "same_ranks": {
            label: len({json.dumps(m[b]["ranks"], sort_keys=True) for b in BACKEND}) == 1
            for label, m in measured.items()
        },
        "same_final_score": {
            label: len({round(m[b]["final_score"], 9) for b in BACKEND}) == 1 for label, m in measured.items()
        },
        "runs": measured,
        "benchmark_wall_seconds": wall,
    }
    if args.cold:
        payload["cold_clientapp"] = {
            label: {k: v for k, v in m.items() if k.startswith(("cold", "query"))} for label, m in measured.items()
        }
    path = write("flower", payload)
    (RESULTS / "flower.md").write_text(markdown(json.loads(path.read_text())))  # with write()'s machine facts
    print(f"wrote {RESULTS / 'flower.md'} ({wall / 60:.1f} min)")


def markdown(p: dict) -> str:
    before = p["before_revision"]
    lines = [
        "# Flower: per-round cost of local, simulation and deployment",
        "",
        f"Written by `benchmarks/bench_flower.py --rounds {p['rounds']}` on `{p['experiment']}` with "
        f"`{' '.join(p['settings'])}` (engine settings per backend: "
        f"`{' '.join(p['backend_settings']['deployment'])}`; {p['model']}; 10 clients, 5 per round, 3 SuperNodes). "
        f"Machine: {p['machine']['cpus']}-core CPU, {p['machine']['platform']}, torch {p['machine']['torch']}, "
        f"one torch thread per process, **shared with other work while it ran** (load average "
        f"{p['machine']['load_average']}): treat single numbers as approximate. "
        + (
            f"'before' = revision {before} (each SuperNode starts a fresh `flwr-clientapp` process per message), "
            "'after' = this tree (SuperNodes with `--isolation process`, each with one resident ClientApp worker "
            "that builds the model side at start; SuperNode idle pull 0.3 s instead of 3 s; a message's tensors "
            "packed in one array)."
            if before
            else "Only this tree was measured."
        ),
        "",
        "Engine wall seconds per round (training of the round's 5 clients + evaluation + bookkeeping) and "
        "set-up (run total minus rounds: for a deployment, starting the SuperLink, the SuperNodes and their "
        "workers, registering the node keys, `flwr run` and the ServerApp's start):",
        "",
        "| tree | backend | round 1 | rounds 2..N (mean) | set-up |",
        "|---|---|---:|---:|---:|",
    ]
    for label, rows in p["per_round_seconds"].items():
        for backend, s in rows.items():
            lines.append(f"| {label} | {backend} | {s['round1']:.1f} | {s['steady_mean']:.1f} | {s['setup']:.1f} |")
    ratios = p.get("deployment_over_simulation_rounds_2_n", {})
    lines += [
        "",
        "Deployment / simulation, rounds 2..N: "
        + ", ".join(f"{label} {r:.2f}x" for label, r in ratios.items())
        + "; simulation / local: "
        + ", ".join(f"{label} {r:.2f}x" for label, r in p.get("simulation_over_local_rounds_2_n", {}).items())
        + ".",
    ]
    for label, bd in p.get("deployment_breakdown", {}).items():
        if not bd:
            continue
        lines += [
            "",
            f"Deployment ({label}), mean seconds per client-round as the server and its ClientApp clocked it "
            "(`client_timings` in flower.json; `built`: client-rounds whose ClientApp built the model side):",
            "",
            "| part | " + " | ".join(f"{r} ({bd[r]['built']} of {bd[r]['client_rounds']} built)" for r in bd) + " |",
            "|---|" + "---:|" * len(bd),
        ]
        for k in TIMING_KEYS:
            if k == "process_to_handler" and label == "after":
                continue  # a resident worker's age, not a cost of the message
            lines.append(f"| {k} | " + " | ".join(f"{bd[r].get(k, 0.0):.2f}" for r in bd) + " |")
    lines += [
        "",
        "`roundtrip` push to reply; `to_handler` push to our train handler starting (the SuperNode's pull while "
        "idle, every 3 s in 'before' and 0.3 s in 'after', queueing behind the node's earlier message of the "
        "round, and in 'before' the ClientApp process's start, `process_to_handler`); `setup` building the "
        "client side (0 when resident; "
        "`model_build` includes importing transformers + peft where the process had not); `train`; `back` "
        "reply built to reply at the server.",
    ]
    if "cold_clientapp" in p:
        lines += _cold_markdown(p["cold_clientapp"])
    lines += [
        "",
        "Same ranks as the local engine on every backend, per tree: "
        + ", ".join(f"{label} {v}" for label, v in p["same_ranks"].items())
        + "; same final score: "
        + ", ".join(f"{label} {v}" for label, v in p["same_final_score"].items())
        + f". Benchmark wall time {p['benchmark_wall_seconds'] / 60:.1f} min.",
        "",
    ]
    lines += ["", "Written by `benchmarks/bench_flower.py`."]
    return "\n".join(lines)


def _cold_markdown(cold_runs: dict) -> list[str]:
    names = {"cold_clientapp_token_cache_empty": "train, token cache empty", "cold_clientapp": "train"}
    cold = {f"{label} {names[k]}": v for label, m in cold_runs.items() for k, v in m.items() if k in names}
    lines = [
        "",
        "A ClientApp message in a fresh process (what a per-message `flwr-clientapp` does), median seconds per "
        f"stage of {COLD_REPEATS} runs (the empty-cache column: one run):",
        "",
    ]
    stages = []
    for v in cold.values():
        stages += [s for s in v["seconds"] if s not in stages]
    lines.append("| stage | " + " | ".join(cold) + " |")
    lines.append("|---|" + "---:|" * len(cold))
    for s in stages:
        lines.append(f"| {s} | " + " | ".join(f"{v['seconds'].get(s, 0.0):.2f}" for v in cold.values()) + " |")
    lines.append("| **total** | " + " | ".join(f"**{v['total']:.2f}**" for v in cold.values()) + " |")
    lines.append("| of which our code | " + " | ".join(f"{v['ours']:.2f}" for v in cold.values()) + " |")
    query = {label: m["query_clientapp"] for label, m in cold_runs.items() if "query_clientapp" in m}
    lines += [
        "",
        "A `query.partition` message in a fresh process: "
        + ", ".join(f"{label} {q['total']:.2f} s (torch imported: {q['torch_imported']})" for label, q in query.items())
        + ".",
    ]
    return lines


if __name__ == "__main__":
    main()
