"""kill -9 at random moments, then --resume: is the final adapter bit-identical to an uninterrupted run?

One reference run, then one run of the same config that is SIGKILLed at a random moment (seeded), resumed,
killed again, ... `--kills` times (each kill lands while the run is alive: at a uniform time in the
reference's wall duration, any moment, set-up and checkpoint writes included), and finally resumed to the
end. Default timing mode (profile) on the tiny model with hidden speed deviations and availability, so
telemetry, lost clients and RNG states all cross the kills. Writes benchmarks/results/kill_resume.json.

    python benchmarks/bench_kill_resume.py [--kills 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from conftest import tiny_tree  # noqa: E402


def config(folder: Path, out: Path) -> Path:
    tree = tiny_tree(
        folder,
        experiment_name="run",
        output_dir=str(out),
        federation={"num_rounds": 8, "clients_per_round": 3},
        training={"max_local_steps": 20, "batch_size": 8},
        data={"embedded_train_size": 600},
        timing={"mode": "profile"},
    )
    for tier in tree["tiers"].values():
        tier.update(speed_sigma=0.3, jitter_sigma=0.1, availability=0.8)
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def command(cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fedranklite", "run", "--config", str(cfg), "--quiet", *extra]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="2 kills (a check that the benchmark runs, not a result)")
    args = ap.parse_args()
    if args.quick:
        args.kills = 2
    import torch

    from fedranklite.run.checkpoint import CHECKPOINT_NAME, load_checkpoint

    rng = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FEDRANKLITE_CACHE": tempfile.mkdtemp(prefix="frl_cache_")}
    with tempfile.TemporaryDirectory(prefix="frl_kill_") as tmp:
        tmp = Path(tmp)
        (tmp / "a").mkdir()
        (tmp / "b").mkdir()
        ref_cfg = config(tmp / "a", tmp / "ref")
        subprocess.run(command(ref_cfg), env=env, check=True, capture_output=True)  # also measures the profile
        began = time.perf_counter()  # timed again with the profile cached, as the killed run will be
        subprocess.run(command(ref_cfg, "--overwrite"), env=env, check=True, capture_output=True)
        duration = time.perf_counter() - began
        cfg = config(tmp / "b", tmp / "killed")
        kills, early = [], 0
        ckpt = tmp / "killed" / "run" / CHECKPOINT_NAME

        def how() -> tuple[str, ...]:  # killed before the first checkpoint: start afresh over what is there
            return ("--resume",) if ckpt.exists() else ("--overwrite",)

        while len(kills) < args.kills:
            extra = how()
            child = subprocess.Popen(command(cfg, *extra), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            delay = rng.uniform(0.2, 0.8 * duration)
            time.sleep(delay)
            if child.poll() is not None:  # finished before the kill (a load change): start over, uncounted
                if child.returncode != 0:
                    raise SystemExit(f"run failed before the kill: {child.stderr.read().decode()[-300:]}")
                shutil.rmtree(tmp / "killed")
                early += 1
                continue
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            done = load_checkpoint(ckpt)["round_idx"] if ckpt.exists() else 0
            kills.append({"after_s": round(delay, 2), "rounds_checkpointed": done})
            print(f"kill {len(kills)}: after {delay:.1f} s, {done} rounds checkpointed", flush=True)
        final = subprocess.run(command(cfg, *how()), env=env, capture_output=True)
        assert final.returncode == 0, final.stderr.decode()[-500:]
        ref = load_checkpoint(tmp / "ref" / "run" / CHECKPOINT_NAME)
        new = load_checkpoint(tmp / "killed" / "run" / CHECKPOINT_NAME)
        identical = ref["round_idx"] == new["round_idx"] and all(
            torch.equal(t, new["global_state"][k]) for k, t in ref["global_state"].items()
        )
        same_scheduler = ref["scheduler"] == new["scheduler"]
    write(
        "kill_resume",
        {
            "kills": kills,
            "reference_wall_s": round(duration, 1),
            "finished_before_the_kill_and_restarted": early,
            "final_adapter_bit_identical": identical,
            "scheduler_state_identical": same_scheduler,
            "rounds": 8,
            "seed": args.seed,
        },
    )
    print(f"{len(kills)} kills; final adapter bit-identical: {identical}; scheduler state identical: {same_scheduler}")
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
