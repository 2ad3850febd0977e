"""Heterogeneous-rank aggregators, chosen by `federation.aggregation`. One file per method, each
registered in AGGREGATORS; a new method is one function with the `Aggregator` signature."""

from fedranklite.federation.aggregation import blockwise, fedavg, hetlora, robust, stack, svd  # noqa: F401  (registration)
from fedranklite.federation.aggregation.base import AGGREGATORS, Aggregator, AggregatorParams, Contribution

__all__ = ["AGGREGATORS", "Aggregator", "AggregatorParams", "Contribution"]
