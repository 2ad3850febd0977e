"""Aggregation scaling: fedavg and blockwise over 10 / 100 / 1,000 client updates with MiniLM's
adapter shapes (6 layers x query/value, r_max 16, hidden 384, 2-class head) and mixed ranks."""

from __future__ import annotations

import numpy as np
import torch
from common import quiet_clock, write

clock = quiet_clock()


def shapes(r_max=16, hidden=384, layers=6, modules=("query", "value"), labels=2):
    out = {}
    for layer in range(layers):
        for m in modules:
            base = f"encoder.layer.{layer}.attention.self.{m}"
            out[f"{base}.lora_A.default.weight"] = (r_max, hidden)
            out[f"{base}.lora_B.default.weight"] = (hidden, r_max)
    out["head.1.weight"] = (labels, hidden)
    out["head.1.bias"] = (labels,)
    return out


def main():
    from fedranklite.federation.aggregation import AGGREGATORS, Contribution
    from fedranklite.federation.ranks import truncate

    r_max = 16
    glob = {n: torch.randn(s) for n, s in shapes(r_max).items()}
    rng = np.random.default_rng(0)
    rows = []
    for k in (10, 100, 1000):
        ranks = rng.integers(2, r_max + 1, size=k)
        contribs = [
            Contribution(
                truncate({n: t + 0.01 * torch.randn_like(t) for n, t in glob.items()}, int(r)),
                int(r),
                float(rng.integers(50, 200)),
            )
            for r in ranks
        ]
        for name in ("fedavg", "blockwise"):
            fn = AGGREGATORS[name]
            fn(glob, contribs[:2])  # warm-up
            best = float("inf")
            for _ in range(3):
                start = clock()
                fn(glob, contribs)
                best = min(best, clock() - start)
            rows.append({"aggregator": name, "clients": k, "seconds": best, "ms_per_client": 1000 * best / k})
            print(f"{name:9s} K={k:5d}: {best * 1000:8.1f} ms ({1000 * best / k:.3f} ms/client)")
        del contribs
    per = {}
    for name in ("fedavg", "blockwise"):
        r = [x for x in rows if x["aggregator"] == name]
        per[name] = r[-1]["ms_per_client"] / r[1]["ms_per_client"]  # 1000 vs 100: ~1 when linear
    write(
        "aggregation",
        {
            "settings": {
                "r_max": r_max,
                "tensors": len(glob),
                "clock": "process CPU time, 1 torch thread",
                "params": int(sum(t.numel() for t in glob.values())),
            },
            "rows": rows,
            "per_client_cost_ratio_1000_vs_100": per,
            "target": "time linear in clients (per-client cost ratio ~1)",
            "met": all(0.5 <= v <= 2.0 for v in per.values()),
        },
    )


if __name__ == "__main__":
    main()
