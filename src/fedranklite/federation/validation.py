"""Checks on client updates before they are aggregated (pure). A rejected update is logged with its
reason and left out of the round; the round goes on with the others.

Rejected: a missing or unexpected tensor, a shape that is not the assigned rank's (a rank above what
was assigned shows up here), NaN/Inf values, and an update whose distance from the global adapter is
more than `max_norm_ratio` times the round's median distance (needs at least 3 updates).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from fedranklite.federation.ranks import rank_dim, truncate


def structural_problem(
    update: Mapping[str, torch.Tensor], rank: int, global_state: Mapping[str, torch.Tensor]
) -> Optional[str]:
    """Why `update` is not a valid rank-`rank` update of `global_state` (None: it is)."""
    missing = sorted(set(global_state) - set(update))
    extra = sorted(set(update) - set(global_state))
    if missing:
        return f"missing tensors: {missing[:3]}{' ...' if len(missing) > 3 else ''}"
    if extra:
        return f"unexpected tensors: {extra[:3]}{' ...' if len(extra) > 3 else ''}"
    for name, ref in global_state.items():
        tensor = update[name]
        axis = rank_dim(name)
        expected = list(ref.shape)
        if axis is not None:
            expected[axis] = rank
        if list(tensor.shape) != expected:
            if axis is not None and tensor.dim() == ref.dim() and tensor.shape[axis] > rank:
                return f"{name}: rank {tensor.shape[axis]} above the assigned rank {rank}"
            return f"{name}: shape {tuple(tensor.shape)}, expected {tuple(expected)}"
        if not torch.isfinite(tensor).all():
            return f"{name}: contains NaN or Inf"
    return None


def update_distance(update: Mapping[str, torch.Tensor], rank: int, global_state: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of (update - the rank-r global it started from), over all tensors."""
    start = truncate(global_state, rank)
    total = 0.0
    for name, tensor in update.items():
        total += float(torch.sum((tensor.double() - start[name].double()) ** 2))
    return total**0.5


def norm_outliers(distances: Sequence[float], max_norm_ratio: float) -> np.ndarray:
    """Bool mask of distances above max_norm_ratio x the median (none flagged with fewer than 3)."""
    d = np.asarray(distances, dtype=np.float64)
    if d.size < 3:
        return np.zeros(d.size, dtype=bool)
    median = float(np.median(d))
    return d > max_norm_ratio * max(median, 1e-12)


def reject_reasons(
    updates: Sequence[Mapping[str, torch.Tensor]],
    ranks: Sequence[int],
    global_state: Mapping[str, torch.Tensor],
    max_norm_ratio: Optional[float],
) -> list[Optional[str]]:
    """One reason per update (None: accepted by these checks)."""
    reasons = [structural_problem(u, r, global_state) for u, r in zip(updates, ranks)]
    if max_norm_ratio is None:
        return reasons
    ok = [i for i, reason in enumerate(reasons) if reason is None]
    distances = [update_distance(updates[i], ranks[i], global_state) for i in ok]
    for i, outlier, dist in zip(ok, norm_outliers(distances, max_norm_ratio), distances):
        if outlier:
            reasons[i] = (
                f"update norm {dist:.3g} is more than {max_norm_ratio:g}x the round's median "
                f"{float(np.median(distances)):.3g}"
            )
    return reasons


def sample_problem(claimed: float) -> Optional[str]:
    """Why a client's claimed sample count cannot weigh its update (None: it can)."""
    if not isinstance(claimed, (int, float, np.integer, np.floating)) or not np.isfinite(claimed) or claimed <= 0:
        return f"claims {claimed!r} training samples (needs a positive count)"
    return None


def server_weight(claimed: float, planned: int) -> int:
    """The weight the server gives an update: the client's claimed samples, capped at the samples the server
    planned for it (its partition size x local epochs, capped by max_local_steps). An honest client never
    claims more, so the cap changes nothing for it; a client claiming 1e9 samples weighs as one that did
    all its planned work."""
    return max(1, int(min(float(claimed), float(planned))))


def clip_bounds(distances: Sequence[float], ratio: Optional[float], absolute: Optional[float]) -> Optional[float]:
    """The round's clipping bound on an update's distance from the global adapter: `ratio` x the median
    distance and/or `absolute`, whichever is smaller (None: no clipping)."""
    bounds = []
    if ratio is not None and len(distances):
        bounds.append(ratio * float(np.median(distances)))
    if absolute is not None:
        bounds.append(absolute)
    return min(bounds) if bounds else None


def clip_update(
    update: Mapping[str, torch.Tensor],
    rank: int,
    global_state: Mapping[str, torch.Tensor],
    bound: float,
    distance: Optional[float] = None,
) -> tuple[dict[str, torch.Tensor], float]:
    """`update` with its delta from the rank-r global scaled down to L2 norm <= `bound` (the scale used: 1.0
    when it was already within). `distance`: update_distance(update, rank, global_state) if already known."""
    if distance is None:
        distance = update_distance(update, rank, global_state)
    if distance <= bound:
        return dict(update), 1.0
    scale = bound / distance
    start = truncate(global_state, rank)
    clipped = {
        name: (start[name].double() + scale * (tensor.double() - start[name].double())).to(tensor.dtype)
        for name, tensor in update.items()
    }
    return clipped, scale
