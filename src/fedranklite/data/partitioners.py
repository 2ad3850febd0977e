"""Client partitions as plugins: how the training rows are split among the clients (`data.partition`).

Each partitioner is a config class holding its own parameters, registered in `PARTITIONERS` next to its
implementation; the implementations are Flower's partitioners (flwr-datasets), so `iid`, `dirichlet`
and `label_skew` mean here what they mean in Flower baselines:

    iid         IidPartitioner: the shuffled rows in equal contiguous shards
    dirichlet   DirichletPartitioner: per class, the clients' shares ~ Dirichlet(alpha)
    label_skew  PathologicalPartitioner: each client holds rows of `labels_per_client` classes only

`split_clients` is the one entry point: labels (class ids, or regression targets, which are cut into
`num_bins` quantile bins first) -> the sorted row indices of each client, deterministic under the seed,
every client non-empty or a DataError naming `data.partition`.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, Literal, Optional, Sequence

import numpy as np
from pydantic import Field

from fedranklite.core.registry import PluginConfig, Registry
from fedranklite.data.textsplit import DataError

log = logging.getLogger(__name__)


class PartitionParams(PluginConfig):
    """Parameters every partitioner takes."""

    num_bins: int = Field(5, ge=2)  # regression targets are cut into this many quantile bins for label-based partitions


# (class ids, number of clients, the plugin's params, seed) -> row indices of each client
Partitioner = Callable[[np.ndarray, int, Any, int], list[np.ndarray]]
PARTITIONERS: Registry[Partitioner] = Registry("partitioner", base=PartitionParams)


def partition_labels(labels: np.ndarray, task: str, num_bins: int) -> np.ndarray:
    """Class ids for label-based partitions; regression targets are cut into quantile bins."""
    if task != "regression":
        return np.asarray(labels, dtype=np.int64)
    edges = np.quantile(labels, np.linspace(0, 1, num_bins + 1)[1:-1])
    return np.searchsorted(edges, labels, side="right").astype(np.int64)


def _flower_split(partitioner, labels: np.ndarray, num_clients: int, seed: int) -> list[np.ndarray]:
    """Run a flwr-datasets partitioner over a table of (label, row index) and read each partition's
    row indices. The table is shuffled with the seed first, as Flower's FederatedDataset does before it
    partitions (so IID shards are random rows, and which rows of a class a client gets is random)."""
    import datasets  # heavy: kept off the config path (config loading imports this module for the registry)

    perm = np.random.default_rng(seed).permutation(len(labels))
    partitioner.dataset = datasets.Dataset.from_dict({"label": labels[perm], "idx": perm})
    return [np.asarray(partitioner.load_partition(i)["idx"], dtype=np.int64) for i in range(num_clients)]


# ================================================================== iid
@PARTITIONERS.register("iid")
def split_iid(labels: np.ndarray, num_clients: int, params: PartitionParams, seed: int) -> list[np.ndarray]:
    """Equal shares of the shuffled rows (sizes differ by at most one); labels play no part."""
    from flwr_datasets.partitioner import IidPartitioner  # heavy: kept off the config path

    return _flower_split(IidPartitioner(num_partitions=num_clients), labels, num_clients, seed)


# ================================================================== dirichlet
class DirichletParams(PartitionParams):
    """Per class, the clients' shares ~ Dirichlet(alpha): smaller alpha, more skew. Draws are repeated until
    every client holds at least `min_partition_size` rows (rejection sampling, as Flower's partitioner does
    for its first 11 draws), up to `max_draws` draws."""

    alpha: float = Field(0.5, gt=0)  # concentration
    # lowered to rows // clients (at least 1) when the data holds fewer rows per client than this
    min_partition_size: int = Field(2, ge=1)
    # Flower's balancing: a client already above the average size takes no rows of the remaining classes
    self_balancing: bool = False
    # Why more than Flower's 11: at alpha 0.1 with 2 classes a client is left (almost) empty in ~1 draw of 4
    # per client, so 10 clients meet the minimum in ~5 % of draws and 20 clients in ~0.2 %. Rounded up to a
    # multiple of 11 (Flower draws 11 times per seed). The accepted partitions are Dirichlet(alpha) draws
    # conditioned on the minimum size, so less skewed than unconditioned ones: report the realised skew.
    max_draws: int = Field(2002, ge=1)


_FLOWER_DRAWS = 11  # DirichletPartitioner draws once, then retries 10 times before it raises


@PARTITIONERS.register("dirichlet", DirichletParams)
def split_dirichlet(labels: np.ndarray, num_clients: int, params: DirichletParams, seed: int) -> list[np.ndarray]:
    from flwr_datasets.partitioner import DirichletPartitioner  # heavy: kept off the config path

    min_size = max(1, min(params.min_partition_size, len(labels) // num_clients))
    attempts = -(-params.max_draws // _FLOWER_DRAWS)  # Flower draws 11 times per attempt
    for attempt in range(attempts):
        # attempt 0 is Flower's own seed (partitions of runs made before max_draws existed are unchanged);
        # later attempts continue from seeds derived from (seed, attempt)
        draw_seed = seed if attempt == 0 else int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0])
        partitioner = DirichletPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            alpha=params.alpha,
            min_partition_size=min_size,
            self_balancing=params.self_balancing,
            seed=draw_seed,
        )
        try:
            with warnings.catch_warnings():  # Flower warns at every rejected draw
                warnings.simplefilter("ignore", UserWarning)
                return _flower_split(partitioner, labels, num_clients, seed)
        except ValueError as exc:
            if "max number of attempts" not in str(exc):  # a refusal other than "every draw fell short"
                raise DataError(f"data.partition: dirichlet: {exc}") from None
    # with few rows per client (under ~3) this happens at any alpha: Flower cuts every class at the
    # rounded-down cumulative shares, in the same client order, so with few rows per class the same
    # clients (the first among them) get no row of any class
    raise DataError(
        f"data.partition: dirichlet (alpha={params.alpha}) left a client with fewer than "
        f"{min_size} row(s) in each of {attempts * _FLOWER_DRAWS} draws; use more data or fewer clients, a "
        f"larger alpha or a smaller min_partition_size (or raise max_draws)"
    )


# ================================================================== label_skew (Flower: pathological)
class LabelSkewParams(PartitionParams):
    """Each client holds rows of `labels_per_client` classes only (all classes when it exceeds their
    number); each class's rows are split evenly among the clients that hold it. Rows of a class no
    client holds are left out, with a warning."""

    labels_per_client: int = Field(2, ge=1)
    # Flower's class_assignment_mode. first-deterministic (the NIID-Bench paper's): client i holds class
    # i mod C, the others at random (every class is held when there are at least as many clients as
    # classes); random: all at random; deterministic: client i holds classes i, i+1, ... (mod C)
    class_assignment_mode: Literal["first-deterministic", "random", "deterministic"] = "first-deterministic"

    def problems(self, cfg: Any) -> list[tuple[str, str]]:
        data = cfg.data
        if data.task == "classification" and data.num_labels and self.labels_per_client > data.num_labels:
            return [("labels_per_client", f"{self.labels_per_client} exceeds num_labels={data.num_labels}")]
        return []


@PARTITIONERS.register("label_skew", LabelSkewParams)
def split_label_skew(labels: np.ndarray, num_clients: int, params: LabelSkewParams, seed: int) -> list[np.ndarray]:
    from flwr_datasets.partitioner import PathologicalPartitioner  # heavy: kept off the config path

    classes = np.unique(labels)
    k = min(params.labels_per_client, len(classes))  # Flower refuses more classes per client than exist
    partitioner = PathologicalPartitioner(
        num_partitions=num_clients,
        partition_by="label",
        num_classes_per_partition=k,
        class_assignment_mode=params.class_assignment_mode,
        seed=seed,
    )
    try:
        parts = _flower_split(partitioner, labels, num_clients, seed)
    except ValueError:  # Flower refuses a class held by more clients than it has rows
        raise DataError(
            "data.partition: label_skew left clients without data: a class is held by more clients "
            "than it has rows; use more data or fewer clients, another labels_per_client, or "
            "class_assignment_mode: deterministic (spreads the classes evenly)"
        ) from None
    unused = sorted(set(classes.tolist()) - set(np.unique(labels[np.concatenate(parts)]).tolist()))
    if unused:
        log.warning(
            "label_skew: %d clients x %d labels hold %d of the %d classes; the rows of classes %s are not used",
            num_clients,
            k,
            len(classes) - len(unused),
            len(classes),
            unused,
        )
    return parts


# ================================================================== entry point
def split_clients(
    labels: np.ndarray,
    num_clients: int,
    params: PartitionParams,
    seed: int,
    *,
    task: str = "classification",
    max_per_client: Optional[int] = None,
) -> list[np.ndarray]:
    """Row indices of each client (sorted int64 arrays), deterministic under `seed`.

    `params` is the chosen partitioner's config (`cfg.data.partition`; a name or a mapping such as
    {"type": "dirichlet", "alpha": 0.1} is parsed by PARTITIONERS). Regression targets (`task`) are
    binned into `params.num_bins` quantile bins for the label-based partitioners. `max_per_client` keeps
    a seeded random subset of at most that many rows per client. A client that would get no rows is a
    DataError naming data.partition."""
    params = PARTITIONERS.parse(params)
    if num_clients > len(labels):
        raise DataError(
            f"data.partition: {num_clients} clients but only {len(labels)} training rows: every client needs data"
        )
    classes = partition_labels(labels, task, params.num_bins)
    try:
        with warnings.catch_warnings():
            # flwr-datasets warns on every Dirichlet redraw and on unused classes: the outcome is what counts
            # (an error below, or the label_skew warning in our log)
            warnings.simplefilter("ignore", UserWarning)
            parts = PARTITIONERS[params.name](classes, num_clients, params, seed)
    except DataError:
        raise
    except ValueError as exc:  # Flower's refusal, e.g. a class held by more clients than it has rows
        raise DataError(f"data.partition: {params.name} left clients without data ({exc})") from None
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise DataError(
            f"data.partition: {params.name} left clients {empty} without data; use more data or fewer "
            f"clients, or a less skewed partition"
        )
    parts = [np.sort(p) for p in parts]
    if max_per_client is not None:
        rng = np.random.default_rng((seed, 1))  # its own stream: independent of the partition's shuffle
        parts = [np.sort(rng.permutation(p)[:max_per_client]) for p in parts]
    return parts


def label_distribution(labels: np.ndarray, parts: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Row-normalised class histogram per client (clients x classes)."""
    hist = np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts]).astype(np.float64)
    return hist / np.maximum(hist.sum(1, keepdims=True), 1)
