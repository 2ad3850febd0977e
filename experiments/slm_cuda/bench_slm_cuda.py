"""SmolLM2-135M GLUE rows on one CUDA GPU, run in parallel: the item-5 CUDA runs (SST-2 lite in fp32, 4-bit and
8-bit, with throughput and memory), the federated recipe chosen on held-out TRAIN rows for the pair tasks that
missed their bars on the CPU, and every task's lite / cvx / centralized rows with that recipe.

    python experiments/slm_cuda/bench_slm_cuda.py --glue-dir DIR --out DIR [--workers 8] [--deadline-s 480] [--smoke]

Simulated time is the CPU's: every run pins `timing.profile` to the CPU rank profile its CPU row used
(both shipped in the package, src/fedranklite/profiles/), so deadlines cut the same clients' steps as on
the CPU and a GPU row differs from its CPU row only by the arithmetic of the device. The 4-bit and 8-bit runs pin
the fp32 profile too, so their gap to fp32 is the quantization's alone.

The recipe of MRPC, STS-B and RTE is chosen before any dev row runs, on 300 held-out TRAIN rows
(bench_slm_budget.py --federated, 20 rounds, evaluated at rounds 5, 10, 15 and 20), by a rule fixed here in
advance: `choose()`. The dev rows then run with it. SST-2 and QNLI keep their configs.

Writes into --out, after every finished run: cuda_glue.json (rows as bench_glue records them, plus device and
recipe), cuda_glue.md, cuda_pilots.json (held-out curves and the choices) and log.txt. `--smoke` runs a two-job
version on the CPU at a toy budget (a check of this script, not a result).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import script_name, stamp  # noqa: E402

from fedranklite.core.results_io import write_text_atomic  # noqa: E402

CONFIGS = ROOT / "configs" / "experiments" / "glue" / "smollm2"
SHIPPED_PROFILES = (
    ROOT / "src" / "fedranklite" / "profiles"
)  # fedranklite.run.profiling.SHIPPED_DIR, without importing torch
PAIR_PROFILE = SHIPPED_PROFILES / "bundled-smollm2-135m_none_b8_l128_q_proj-v_proj_cpu.json"
SST2_PROFILE = SHIPPED_PROFILES / "bundled-smollm2-135m_none_b8_l64_q_proj-v_proj_cpu.json"
FEDAVG = "federation.aggregation=fedavg"
SOFT_CE = "model.verbalizer.regression_loss=soft_ce"
# candidates per task, the config's own recipe first (the GLUE presets aggregate blockwise; the headline
# experiment found blockwise stalls when the high-rank slices are averaged over few clients: 3 clients here)
CANDIDATES: dict[str, dict[str, list[str]]] = {
    "stsb": {"preset": [], "fedavg": [FEDAVG], "soft_ce": [SOFT_CE], "fedavg_soft_ce": [FEDAVG, SOFT_CE]},
    "mrpc": {"preset": [], "fedavg": [FEDAVG]},
    "rte": {"preset": [], "fedavg": [FEDAVG]},
}
PILOT_ROUNDS = 20
CHOICE_ROUNDS = (10, 20)  # the dev budget is one of these
MARGIN = 0.01  # within this of the best held-out score, the cheaper / simpler candidate is taken
DEV_SETS = ["evaluation.max_samples=400"]  # as bench_glue's SmolLM2 rows


def choose(task: str, pilots: dict[str, dict]) -> tuple[str, int, float]:
    """(candidate, rounds, held-out score): the highest held-out score at round 10 or 20; among those within
    MARGIN of it, fewer rounds first, then the candidate listed first (the config's own recipe). Candidates whose
    pilot failed are left out; none at all -> the preset at 10 rounds."""
    options = []
    for order, cand in enumerate(CANDIDATES[task]):
        run = pilots.get(cand)
        if not run:
            continue
        by_round = {p["round"]: p["score"] for p in run["curve"]}
        for rounds in CHOICE_ROUNDS:
            if by_round.get(rounds) is not None:
                options.append((rounds, order, cand, by_round[rounds]))
    if not options:
        return "preset", CHOICE_ROUNDS[0], float("nan")
    best = max(o[3] for o in options)
    rounds, _, cand, score = min(o for o in options if o[3] >= best - MARGIN)
    return cand, rounds, score


def profile_for(task: str) -> Path:
    return SST2_PROFILE if task == "sst2" else PAIR_PROFILE


class Bench:
    def __init__(self, args):
        self.args = args
        self.out: Path = args.out
        self.work: Path = args.work
        self.lock = threading.Lock()
        self.rows: list[dict] = []
        self.pilots: dict[str, dict[str, dict]] = {t: {} for t in CANDIDATES}
        self.choices: dict[str, dict] = {}
        self.failed: list[str] = []
        self.start = time.time()
        self.device = "cpu" if args.smoke else "cuda"
        self.slots = threading.Semaphore(args.workers)  # runs at a time (the pools only queue them)

    def log(self, msg: str) -> None:
        line = f"[{time.time() - self.start:6.0f}s] {msg}"
        print(line, flush=True)
        with self.lock, open(self.out / "log.txt", "a") as f:
            f.write(line + "\n")

    def common_sets(self, task: str) -> list[str]:
        sets = [f"device={self.device}", f"timing.profile={profile_for(task)}"]
        if self.args.smoke:  # toy budget: a check that every path runs, not a result
            sets += ["federation.num_rounds=1", "training.max_local_steps=1", "evaluation.max_samples=8"]
        return sets

    def expired(self) -> bool:
        return time.time() - self.start > self.args.deadline_s

    def _run(self, name: str, argv: list[str]) -> bool:
        logf = self.work / "logs" / f"{name}.log"
        env = {**os.environ, "OMP_NUM_THREADS": str(self.args.threads), "PYTHONUNBUFFERED": "1"}
        with self.slots:
            if self.expired():
                self.log(f"{name}: skipped (past --deadline-s)")
                return False
            self.log(f"{name}: start")
            with open(logf, "w") as f:
                rc = subprocess.run([sys.executable, *argv], stdout=f, stderr=subprocess.STDOUT, env=env).returncode
        if rc != 0:
            tail = logf.read_text(errors="replace").strip().splitlines()[-3:]
            self.log(f"{name}: FAILED rc={rc}: " + " | ".join(tail))
            self.failed.append(name)
            return False
        self.log(f"{name}: done")
        return True

    def profile(self, quant: str) -> None:
        name = f"profile_{quant}"
        argv = ["-m", "fedranklite", "profile", "--config", str(CONFIGS / "sst2_lite.yaml")]
        argv += ["--set", f"device={self.device}", "--set", f"model.quantization={quant}"]
        argv += ["--out", str(self.out / f"cuda_profile_sst2_{quant}.json")]
        if self.args.smoke:
            argv += ["--ranks", "1", "--repeats", "1", "--warmup", "0"]
        self._run(name, argv)

    # --- held-out pilots -------------------------------------------------------------------------------------
    def pilot(self, task: str, cand: str) -> None:
        name = f"pilot_{task}_{cand}"
        out = self.work / "pilots" / f"{name}.json"
        argv = [str(ROOT / "experiments" / "slm_budget" / "bench_slm_budget.py"), "--task", task, "--lr", "0.001"]
        argv += ["--rounds", str(1 if self.args.smoke else PILOT_ROUNDS), "--eval-every", "5", "--local-steps", "8"]
        argv += [
            "--federated",
            "--glue-dir",
            str(self.args.glue_dir),
            "--out",
            str(out),
            "--tag",
            f"{self.device}_{cand}",
        ]
        for s in self.common_sets(task) + CANDIDATES[task][cand]:
            argv += ["--set", s]
        if self._run(name, argv):
            (record,) = json.loads(out.read_text())["runs"].values()
            with self.lock:
                self.pilots[task][cand] = record
        self.save()

    # --- dev rows --------------------------------------------------------------------------------------------
    def dev(self, task: str, kind: str, recipe: list[str], recipe_name: str) -> None:
        config = CONFIGS / f"{task}_{'cvx' if kind == 'cvx' else 'lite'}.yaml"
        sets = [*DEV_SETS, *recipe, *self.common_sets(task), "seed=0", f"output_dir={self.work / 'runs'}"]
        if kind in ("4bit", "8bit"):
            sets.append(f"model.quantization={kind}")
        spec = {"config": str(config), "sets": sets, "centralized": kind == "centralized", "recipe": recipe_name}
        name = f"dev_{task}_{kind}"
        row_file = self.work / "rows" / f"{name}.json"
        argv = [str(Path(__file__).resolve()), "--worker", json.dumps(spec), "--row-out", str(row_file)]
        if self._run(name, argv):
            with self.lock:
                self.rows.append(json.loads(row_file.read_text()))
        self.save()

    def save(self) -> None:
        from bench_glue import markdown

        with self.lock:
            doc = {
                "machine": self.machine,
                "baselines": self.baselines,
                "candidates": CANDIDATES,
                "rule": f"highest held-out score at rounds {CHOICE_ROUNDS}; within {MARGIN}: fewer rounds, then "
                "the candidate listed first",
                "pilots": self.pilots,
                "choices": self.choices,
                "failed": self.failed,
            }
            glue = {"machine": self.machine, "baselines": self.baselines, "runs": self.rows}
            write_text_atomic(self.out / "cuda_pilots.json", json.dumps(stamp(doc, __file__), indent=2, default=str))
            write_text_atomic(self.out / "cuda_glue.json", json.dumps(stamp(glue, __file__), indent=2, default=str))
            if self.rows:
                write_text_atomic(
                    self.out / "cuda_glue.md", markdown(glue) + f"\nWritten by `{script_name(__file__)}`.\n"
                )

    def run(self) -> int:
        from bench_glue import baselines

        for sub in ("logs", "pilots", "rows", "runs"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        self.machine = machine(self.device)
        self.baselines = baselines(["sst2", "qnli", "mrpc", "stsb", "rte"], str(self.args.glue_dir))
        self.log(f"machine: {self.machine}")
        # convert the GGUF once before the parallel runs (each would otherwise convert it at the same time)
        from fedranklite.model.backbones import bundled_path

        bundled_path("bundled:smollm2-135m")
        self.log("SmolLM2 converted")
        # item 5 first, one run at a time so that throughput and memory are the device's alone: the rank
        # profile (step time and peak memory per rank) and the SST-2 lite run, in fp32 and 4-bit
        for quant in ("none", "4bit"):
            self.profile(quant)
            self.dev("sst2", "lite" if quant == "none" else quant, [], "config")
        # then everything else in parallel (--workers runs at a time); pilot_then_dev waits for its pilots
        jobs = [(self.pilot_then_dev, t) for t in CANDIDATES]
        jobs += [
            (self.dev, t, k, [], "config") for t, k in [("sst2", "centralized"), ("qnli", "lite"), ("sst2", "8bit")]
        ]
        jobs += [(self.dev, t, k, [], "config") for t, k in [("sst2", "cvx"), ("qnli", "centralized"), ("qnli", "cvx")]]
        if self.args.smoke:
            jobs = [(self.pilot_then_dev, "rte")]
        with ThreadPoolExecutor(len(jobs)) as pool:
            for f in [pool.submit(*job) for job in jobs]:
                f.result()
        self.save()
        self.log(f"finished: {len(self.rows)} rows, failed: {self.failed or 'none'}")
        return 1 if self.failed else 0

    def pilot_then_dev(self, task: str) -> None:
        """The task's held-out pilots in parallel, then its dev rows with the chosen recipe (this thread waits
        for the pilots on an inner pool so that the outer pool's workers stay free for other runs)."""
        with ThreadPoolExecutor(len(CANDIDATES[task])) as inner:
            list(inner.map(lambda c: self.pilot(task, c), CANDIDATES[task]))
        cand, rounds, score = choose(task, self.pilots[task])
        recipe = [*CANDIDATES[task][cand], *([f"federation.num_rounds={rounds}"] if rounds != 10 else [])]
        with self.lock:
            self.choices[task] = {"candidate": cand, "rounds": rounds, "held_out_score": score, "sets": recipe}
        self.log(f"{task}: chose {cand} at {rounds} rounds (held-out {score:.3f})")
        if self.args.smoke:
            recipe = []  # the smoke run's rounds are 1
        kinds = ["lite", "centralized", "cvx"] + (["4bit", "8bit"] if task == "rte" else [])
        if self.args.smoke:
            kinds = ["lite", "8bit"]
        with ThreadPoolExecutor(len(kinds)) as inner:
            list(inner.map(lambda k: self.dev(task, k, recipe, cand), kinds))


def machine(device: str) -> dict:
    import platform

    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(), "device": device}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    try:
        import bitsandbytes
        import peft
        import transformers

        info.update(transformers=transformers.__version__, peft=peft.__version__, bitsandbytes=bitsandbytes.__version__)
    except ImportError as exc:
        info["missing"] = str(exc)
    return info


def worker(spec: dict, row_out: Path) -> None:
    """One dev run in this process: bench_glue's row plus where it ran and with which recipe."""
    import torch
    from bench_glue import run_one

    row = run_one(Path(spec["config"]), spec["sets"], centralized=spec["centralized"])
    row["recipe"] = spec["recipe"]
    row["device"] = (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() and "device=cuda" in spec["sets"] else "cpu"
    )
    write_text_atomic(row_out, json.dumps(row, indent=2, default=str))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--glue-dir", type=Path, default=ROOT.parent / "shared" / "data" / "glue")
    ap.add_argument("--out", type=Path, default=Path("/tmp/fedranklite_slm_cuda/out"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/fedranklite_slm_cuda/work"))
    ap.add_argument("--workers", type=int, default=12, help="runs at a time")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--deadline-s", type=float, default=480, help="no run starts after this many seconds")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--row-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.worker:
        worker(json.loads(args.worker), args.row_out)
        return 0
    os.environ["FEDRANKLITE_GLUE_DIR"] = str(args.glue_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    return Bench(args).run()


if __name__ == "__main__":
    sys.exit(main())
