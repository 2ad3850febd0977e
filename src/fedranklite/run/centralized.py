"""The centralized reference of any federated config: one client holding all the clients' training data,
the same model, LoRA rank and sample budget, no deadline. FL results are reported next to it.

`centralized_config(cfg)` is a pure function Config -> Config, so any runner can use it:

    engine = build_engine(centralized_config(load_config(path)))

Matching the budget: every round the federation trains `clients_per_round` clients for up to
`max_local_steps` steps each, so the central client trains `clients_per_round * max_local_steps` steps per
round for the same `num_rounds` (the same number of training samples, batch size and learning rate). It
holds the union of the rows the clients could hold (`samples_per_client * num_clients` when capped), at
the full rank `r_max` (the rank of the global adapter that every evaluation scores), on one tier with the
fastest compute factor and the largest memory of the federation's tiers.
"""

from __future__ import annotations

import math

from fedranklite.config.files import validate
from fedranklite.config.schema import Config

SUFFIX = "_centralized"


def centralized_config(cfg: Config, name_suffix: str = SUFFIX) -> Config:
    tree = cfg.to_dict()
    t, f, d = cfg.training, cfg.federation, cfg.data
    n, per_round = cfg.num_clients, f.clients_per_round
    if t.max_local_steps is not None:
        steps = per_round * t.max_local_steps
    elif d.samples_per_client is not None:
        steps = per_round * t.local_epochs * math.ceil(d.samples_per_client / t.batch_size)
    else:  # whole local epochs over uncapped partitions: clients_per_round / num_clients of the data a round
        steps = None
    tree["experiment_name"] = cfg.experiment_name + name_suffix
    tree["tiers"] = {
        "central": {
            "compute_factor": max(x.compute_factor for x in cfg.tiers.values()),
            "num_clients": 1,
            "memory_gb": max(x.memory_gb for x in cfg.tiers.values()),
            "bandwidth_mbps": None,
        }
    }
    tree["federation"].update({"num_clients": None, "clients_per_round": 1, "aggregation": "fedavg"})
    # a fresh scheduler section: the federated scheduler's own parameters mean nothing to `fixed`
    tree["federation"]["scheduler"] = {
        "type": "fixed",
        "rank": cfg.r_max,
        "r_min": 1,
        "r_bar": float(cfg.r_max),
        "r_max": cfg.federation.scheduler.r_max,
    }
    if steps is not None:
        tree["training"]["max_local_steps"] = steps
    else:
        tree["training"]["local_epochs"] = max(1, round(t.local_epochs * per_round / n))
    if d.samples_per_client is not None:
        tree["data"]["samples_per_client"] = d.samples_per_client * n
    tree["data"]["partition"] = {"type": "iid"}  # not type alone: iid takes none of another partitioner's parameters
    tree["deadline"] = {"seconds": None, "straggler_policy": "wait"}
    return validate(tree, origin=f"centralized reference of {cfg.experiment_name}")
