"""How large is FedProx's pull against the data gradient on this plan's learner? (SPEC.md, amendment 2: the value
of mu was chosen from this, before any run of the fedprox arm.)

One client's first four local AdamW steps on the learner-stability arm (configs/experiments/lite_noniid_deadline.yaml,
`fixed` at r_bar 8, every client every round) from the initial global adapter, seed 199 (the timing seed, not a
tuning seed), clients 0 and 5. Before each step it prints, over the coordinates that get a gradient, the median
absolute data gradient and the median |w - w0| (w0: the adapter received), for the LoRA factors and the head;
mu * |w - w0| is the size of FedProx's gradient at that step. No federated round is run.

    OMP_NUM_THREADS=1 python experiments/learner_stability/gradient_scale.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from fedranklite.config.files import load_config
from fedranklite.run.client import collate, loss_fn, make_optimizer, pad_token_id
from fedranklite.run.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]
SETS = [
    "seed=199",
    "federation.scheduler.type=fixed",
    "federation.scheduler.r_bar=8",
    "federation.clients_per_round=10",
]


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(ROOT / "configs/experiments/lite_noniid_deadline.yaml", [*SETS, f"output_dir={out}"])
        prep = prepare(cfg)
        model, s, device = prep.model, prep.settings, prep.device
        start = model.adapter_state()
        for cid in (0, 5):
            model.load_adapter_state(start)
            model.set_rank(8)
            model.to(device)
            params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            w0 = {n: p.detach().clone() for n, p in params}
            optimizer = make_optimizer(model, s)
            model.train()
            torch.manual_seed(1)
            order = np.random.default_rng(1).permutation(prep.partitions[cid])
            for step in range(4):
                idx = order[step * s.batch_size : (step + 1) * s.batch_size]
                inputs, labels = collate(prep.train, idx, pad_token_id(model), device, s.regression)
                loss = loss_fn(model(**inputs), labels, s.regression, model.head)
                optimizer.zero_grad()
                loss.backward()
                grad, moved = {"lora": [], "head": []}, {"lora": [], "head": []}
                for name, p in params:
                    group = "lora" if "lora" in name else "head"
                    active = p.grad.abs() > 0  # rank-masked and untouched coordinates left out
                    grad[group].append(p.grad[active].abs())
                    moved[group].append((p.detach() - w0[name])[active].abs())
                print(
                    f"client {cid} step {step + 1}: "
                    + "; ".join(
                        f"{g}: median |data grad| {torch.cat(grad[g]).median():.2e}, "
                        f"median |w - w0| {torch.cat(moved[g]).median():.2e}"
                        for g in grad
                    ),
                    flush=True,
                )
                torch.nn.utils.clip_grad_norm_([p for _, p in params], s.grad_clip)
                optimizer.step()


if __name__ == "__main__":
    main()
