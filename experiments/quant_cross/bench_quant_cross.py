"""Why does 4-bit SmolLM2 learn less on RTE? Each run's final global adapter scored on both bases, and the
training gradients of the two bases compared on the same rows.

For a task (default RTE), the finished SmolLM2 lite runs of benchmarks/bench_glue.py (fp32 and 4-bit, seeds
0-2: results/bench_glue/seed<N>/glue_<task>_lite_smollm2[_4bit]/, their checkpoints) are loaded, and every final
global adapter, plus peft's initial adapter (B zero: the zero-shot model), is scored on the task's dev rows
under the fp32 weights and under the NF4 weights. This is an analysis of runs already reported, not a choice:
nothing here picks a recipe, and each adapter's score under its own base must reproduce its run's reported dev score
(`reproduces` in the JSON), which checks the cross-scoring itself.

It separates two explanations of the gap:
  * quantization changes the function the adapter sits on: fp32-trained adapters lose their gain under
    NF4 weights (and NF4-trained ones gain under fp32);
  * 4-bit training learns a different (smaller) adapter: NF4-trained adapters score low on both bases.
And it measures the training signal directly: on `--grad-batches` batches of training rows, the cosine
between the LoRA gradient under fp32 and under NF4 weights, at the zero-shot adapter and at the fp32 seed-0
adapter.

    python experiments/quant_cross/bench_quant_cross.py [--task rte] [--seeds 0,1,2] [--grad-batches 8] \
        --glue-dir ../shared/data/glue          # -> experiments/quant_cross/quant_cross.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import machine, stamp  # noqa: E402

from fedranklite.core.results_io import write_json_atomic  # noqa: E402

OUT = HERE / "quant_cross.json"
BASES = {"fp32": "none", "nf4": "4bit"}


def run_folder(runs: Path, task: str, seed: int, base: str) -> Path:
    return runs / f"seed{seed}" / f"glue_{task}_lite_smollm2{'' if base == 'fp32' else '_4bit'}"


def reported_score(folder: Path) -> float:
    return float(json.loads((folder / "metrics.json").read_text())["final_score"])


def gradient(model, state, encoded, rows, settings, device) -> "torch.Tensor":  # noqa: F821
    """The LoRA gradient (flattened, full r_max) of the mean loss over `rows`, at adapter `state`."""
    import torch

    from fedranklite.run.client import collate, loss_fn, pad_token_id

    model.load_adapter_state(state)
    model.set_rank(model.r_max)
    model.eval()  # no dropout: the two bases see the same function up to their weights
    model.zero_grad(set_to_none=True)
    inputs, labels = collate(encoded, rows, pad_token_id(model), device, settings.regression)
    loss_fn(model(**inputs), labels, settings.regression, model.head).backward()
    names = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    params = dict(model.named_parameters())
    return torch.cat([params[n].grad.detach().flatten().float().cpu() for n in names])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="rte", choices=["sst2", "qnli", "mrpc", "stsb", "rte"])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--grad-batches", type=int, default=8)
    ap.add_argument("--runs", type=Path, default=ROOT / "results" / "bench_glue")
    ap.add_argument("--glue-dir", type=Path, default=ROOT.parent / "shared" / "data" / "glue")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    import numpy as np
    import torch

    from fedranklite.config.files import load_config
    from fedranklite.run.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from fedranklite.run.client import evaluate
    from fedranklite.run.prepare import prepare

    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    adapters: dict[str, dict] = {}
    for base in BASES:
        for seed in seeds:
            folder = run_folder(args.runs, args.task, seed, base)
            if not (folder / CHECKPOINT_NAME).is_file():
                sys.exit(f"{folder / CHECKPOINT_NAME}: missing (run bench_glue.py --only-smollm2 first)")
            payload = load_checkpoint(folder / CHECKPOINT_NAME)
            adapters[f"{base}_seed{seed}"] = {
                "state": payload["global_state"],
                "trained_on": base,
                "seed": seed,
                "round": payload["round_idx"],
                "reported": reported_score(folder),
            }
    config = ROOT / "configs" / "experiments" / "glue" / "smollm2" / f"{args.task}_lite.yaml"
    result: dict = {"task": args.task, "machine": machine(), "scores": {}, "gradients": {}, "reproduces": {}}
    grads: dict[str, dict[str, torch.Tensor]] = {}
    for base, quantization in BASES.items():
        start = time.perf_counter()
        cfg = load_config(config, [f"data.data_dir={args.glue_dir}", f"model.quantization={quantization}"])
        prepared = prepare(cfg)
        model, device, settings = prepared.model, prepared.device, prepared.settings
        metric, batch = cfg.evaluation.metric, cfg.evaluation.batch_size
        initial = model.adapter_state()  # peft's initial adapter (A random, B zero, so B @ A = 0): the zero-shot model
        for name, item in [("zero_shot", {"state": initial}), *adapters.items()]:
            out = evaluate(model, item["state"], prepared.eval, metric, batch, device, settings.regression, ["f1"])
            result["scores"].setdefault(name, {})[base] = {k: out[k] for k in ("score", "loss", "f1") if k in out}
            if item.get("trained_on") == base:
                result["reproduces"][name] = {
                    "round": item["round"],
                    "reported": item["reported"],
                    "here": out["score"],
                }
        # gradients on the same training rows: the first grad-batches x batch_size rows of a seeded permutation
        rng = np.random.default_rng(0)
        order = rng.permutation(len(prepared.train))
        size = settings.batch_size
        grads[base] = {}
        for name, state in (("zero_shot", initial), ("fp32_seed0", adapters["fp32_seed0"]["state"])):
            grads[base][name] = torch.stack(
                [
                    gradient(model, state, prepared.train, order[b * size : (b + 1) * size], settings, device)
                    for b in range(args.grad_batches)
                ]
            )
        result.setdefault("wall_seconds", {})[base] = round(time.perf_counter() - start, 1)
        del prepared, model
    for name in grads["fp32"]:
        a, b = grads["fp32"][name], grads["nf4"][name]
        cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
        # a baseline for "how different": two different batches under the same (fp32) base
        across = torch.nn.functional.cosine_similarity(a[:-1], a[1:], dim=1)
        result["gradients"][name] = {
            "cosine_fp32_vs_nf4_per_batch": [round(float(c), 4) for c in cos],
            "cosine_mean": round(float(cos.mean()), 4),
            "norm_ratio_nf4_over_fp32": round(float((b.norm(dim=1) / a.norm(dim=1)).mean()), 4),
            "cosine_between_batches_fp32_mean": round(float(across.mean()), 4),
        }
    result["note"] = (
        "scores: each adapter (zero-shot, the final global adapter of each fp32 and NF4 lite run) on the task's "
        "dev rows under each base; reproduces: the run's reported final score against the same adapter scored "
        "here on its own base; gradients: LoRA gradient of one batch of train rows per entry, fp32 vs NF4 base, "
        "at peft's initial adapter (A random, B zero) and at the fp32 seed-0 final adapter"
    )
    write_json_atomic(args.out, stamp(result, __file__))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
