"""The server's optimizer (`federation.server_optimizer`): what the server does with the aggregate.

Reddi et al. (ICLR 2021, "Adaptive Federated Optimization") read a round of federated averaging as one step of
a server optimizer: the change the aggregator proposes, delta = aggregate - previous global, is a
pseudo-gradient (with the sign of a descent step), and the server may apply it with momentum or Adam instead of
taking it as it is:

- `none` (the default): the aggregate becomes the global adapter, as it always did (nothing is computed).
- `momentum` (FedAvgM, Hsu et al. 2019): v <- momentum * v + delta; x <- x + lr * v. With momentum 0 and lr 1
  this is the aggregate itself. Across rounds whose pseudo-gradients agree the step grows towards
  lr / (1 - momentum) times one round's; pseudo-gradients that flip from round to round (client drift under
  skewed data) partly cancel in v.
- `adam` (FedAdam, Reddi et al. Algorithm 2): m <- beta1 m + (1 - beta1) delta; v <- beta2 v + (1 - beta2)
  delta^2; x <- x + lr * m / (sqrt(v) + eps), without bias correction (as in the paper), m and v starting
  at 0. A step is about lr per coordinate whatever the size of delta.

Every tensor of the adapter (LoRA factors at r_max and the head) is one parameter vector here. With mixed ranks
the pseudo-gradient is whatever the aggregator made of them: under `fedavg` a rank slice few clients trained is
pulled towards zero by the zero padding and momentum carries that pull on; under `blockwise` a slice nobody
trained this round has a zero pseudo-gradient but still moves by its velocity. The product-space aggregators
(`svd`, `stack`) re-factorize the adapter every round (a new basis, signs free), so a difference of factors
between two rounds is no direction to keep; they are refused with a server optimizer (config check).

A round in which no update was accepted leaves the global adapter and the optimizer's state as they were. The
state (float64 tensors named `<buffer>/<parameter>`) is saved in every checkpoint and restored on resume, so a
resumed run continues bit-identically. Everything is computed in float64 and cast back to the adapter's dtype,
so momentum 0 with lr 1 returns the aggregate bit for bit (x + (a - x) is exact in float64 for float32 values).
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from pydantic import Field

from fedranklite.core.registry import PluginConfig, Registry
from fedranklite.federation.ranks import State

# aggregators whose output is a re-factorization (its basis changes every round): no pseudo-gradient in factor space
REFACTORIZING = ("svd", "stack")


class ServerOptimizerParams(PluginConfig):
    """`none` has no parameters; the optimizers subclass this with theirs."""


class _Stateful(ServerOptimizerParams):
    def problems(self, cfg) -> list[tuple[str, str]]:
        out = []
        aggregation = cfg.federation.aggregation.type
        if aggregation in REFACTORIZING:
            out.append(
                (
                    "type",
                    f"{self.name} needs an aggregator that averages factors; {aggregation} re-factorizes the adapter "
                    "every round (SVD), so the change between two rounds is no direction to keep "
                    "(use fedavg, blockwise, hetlora or a robust rule, or server_optimizer none)",
                )
            )
        if cfg.engine.backend == "surrogate":
            out.append(("type", f"{self.name}: the surrogate backend does not model a server optimizer (use none)"))
        return out


class MomentumParams(_Stateful):
    lr: float = Field(1.0, gt=0)  # server learning rate: x <- x + lr * v
    momentum: float = Field(0.9, ge=0, lt=1)  # v <- momentum * v + (aggregate - x)


class AdamParams(_Stateful):
    lr: float = Field(0.01, gt=0)  # server learning rate: a step is about lr per coordinate
    beta1: float = Field(0.9, ge=0, lt=1)  # decay of the first moment m
    beta2: float = Field(0.99, ge=0, lt=1)  # decay of the second moment v
    eps: float = Field(1e-3, gt=0)  # the paper's tau: x <- x + lr * m / (sqrt(v) + eps)


SERVER_OPTIMIZERS: Registry = Registry("server optimizer", base=ServerOptimizerParams, group=None)


# ---------------------------------------------------------------------------------------------- the math (pure)
def pseudo_gradient(previous: torch.Tensor, aggregate: torch.Tensor) -> torch.Tensor:
    """aggregate - previous in float64: the change the aggregator proposes (a descent direction)."""
    return aggregate.to(torch.float64) - previous.to(torch.float64)


def momentum_step(
    x: torch.Tensor, delta: torch.Tensor, velocity: torch.Tensor, lr: float, momentum: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(new x in float64, new velocity) of FedAvgM: v = momentum * v + delta; x = x + lr * v."""
    velocity = momentum * velocity + delta
    return x.to(torch.float64) + lr * velocity, velocity


def adam_step(
    x: torch.Tensor,
    delta: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(new x in float64, new m, new v) of FedAdam (Reddi et al. 2021, Algorithm 2, no bias correction)."""
    m = beta1 * m + (1 - beta1) * delta
    v = beta2 * v + (1 - beta2) * delta.square()
    return x.to(torch.float64) + lr * m / (v.sqrt() + eps), m, v


# ---------------------------------------------------------------------------------------------- the optimizers
class ServerOptimizer:
    """`step(previous global, aggregate) -> new global`, with its state as named float64 tensors."""

    buffers: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.state: dict[str, dict[str, torch.Tensor]] = {}  # buffer -> parameter name -> tensor

    @classmethod
    def from_config(cls, params: ServerOptimizerParams) -> "ServerOptimizer":
        return cls(**{k: v for k, v in params.model_dump().items() if k != params.plugin_key})

    def step(self, previous: Mapping[str, torch.Tensor], aggregate: State) -> State:
        raise NotImplementedError

    def _buffer(self, kind: str, name: str, like: torch.Tensor) -> torch.Tensor:
        found = self.state.get(kind, {}).get(name)
        return torch.zeros(like.shape, dtype=torch.float64, device=like.device) if found is None else found

    # ---- checkpoints
    def state_dict(self) -> dict[str, torch.Tensor]:
        """`<buffer>/<parameter>` -> tensor (empty before the first step, and always for `none`)."""
        return {f"{kind}/{name}": t for kind, tensors in self.state.items() for name, t in tensors.items()}

    def load_state_dict(self, saved: Mapping[str, torch.Tensor], like: Mapping[str, torch.Tensor]) -> None:
        """Restore `state_dict()`'s tensors; each must name one of this optimizer's buffers and a parameter of
        `like` (the global adapter), with its shape, in float64 and finite (ValueError otherwise)."""
        state: dict[str, dict[str, torch.Tensor]] = {}
        for key, t in saved.items():
            kind, _, name = key.partition("/")
            if kind not in self.buffers or name not in like:
                raise ValueError(f"server optimizer state {key!r} is not a buffer of {type(self).__name__}")
            if tuple(t.shape) != tuple(like[name].shape) or t.dtype != torch.float64:
                raise ValueError(f"server optimizer state {key!r} has shape {list(t.shape)} and dtype {t.dtype}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"server optimizer state {key!r} holds NaN or infinite values")
            state.setdefault(kind, {})[name] = t.to(like[name].device)
        self.state = state


@SERVER_OPTIMIZERS.register("none")
class NoServerOptimizer(ServerOptimizer):
    """The aggregate becomes the global adapter as it is (no server optimizer)."""

    def step(self, previous: Mapping[str, torch.Tensor], aggregate: State) -> State:
        return aggregate  # the aggregate itself, untouched: runs without the option are what they always were


@SERVER_OPTIMIZERS.register("momentum", MomentumParams)
class ServerMomentum(ServerOptimizer):
    """FedAvgM (Hsu et al. 2019): v <- momentum * v + (aggregate - x); x <- x + lr * v. Momentum 0 with lr 1 is
    the aggregate itself."""

    buffers = ("velocity",)

    def __init__(self, lr: float = 1.0, momentum: float = 0.9) -> None:
        super().__init__()
        self.lr, self.momentum = lr, momentum

    def step(self, previous: Mapping[str, torch.Tensor], aggregate: State) -> State:
        out, velocity = {}, {}
        for name, x in previous.items():
            delta = pseudo_gradient(x, aggregate[name])
            new, velocity[name] = momentum_step(x, delta, self._buffer("velocity", name, x), self.lr, self.momentum)
            out[name] = new.to(aggregate[name].dtype)
        self.state = {"velocity": velocity}
        return out


@SERVER_OPTIMIZERS.register("adam", AdamParams)
class ServerAdam(ServerOptimizer):
    """FedAdam (Reddi et al. 2021, Algorithm 2): Adam's moments of delta = aggregate - x, then
    x <- x + lr * m / (sqrt(v) + eps); no bias correction, m and v start at 0."""

    buffers = ("m", "v")

    def __init__(self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, eps: float = 1e-3) -> None:
        super().__init__()
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps

    def step(self, previous: Mapping[str, torch.Tensor], aggregate: State) -> State:
        out, m, v = {}, {}, {}
        for name, x in previous.items():
            delta = pseudo_gradient(x, aggregate[name])
            new, m[name], v[name] = adam_step(
                x,
                delta,
                self._buffer("m", name, x),
                self._buffer("v", name, x),
                self.lr,
                self.beta1,
                self.beta2,
                self.eps,
            )
            out[name] = new.to(aggregate[name].dtype)
        self.state = {"m": m, "v": v}
        return out


def build_server_optimizer(params: Optional[ServerOptimizerParams]) -> ServerOptimizer:
    """The configured optimizer (`none` when `params` is None)."""
    return NoServerOptimizer() if params is None else SERVER_OPTIMIZERS.build(params)
