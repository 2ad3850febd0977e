"""The rank arithmetic schedulers share (pure numpy): the round's rank budget, rounding ideal ranks to integers
that meet it exactly, and the exact min-max allocation (every client's round time t_i(r) = a_i + b_i*r is
linear in its rank; the allocation that minimises the slowest client's time under the budget, found by
bisection over the time axis, or by a greedy heap for checks)."""

from __future__ import annotations

import heapq

import numpy as np


def rank_budget(r_bar: float, num_selected: int) -> int:
    """Total rank handed out in a round: r_bar per selected client, rounded to an integer."""
    return int(round(r_bar * num_selected))


def feasible_budget(budget: int, lo: np.ndarray, hi: np.ndarray) -> int:
    """The budget clipped to what the bounds allow (a memory-capped round may not reach it)."""
    low, high = int(lo.sum()), int(hi.sum())
    return low if budget < low else high if budget > high else int(budget)


def repair_to_budget(ideal: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: int) -> np.ndarray:
    """Round `ideal` into [lo, hi] integers that sum exactly to `budget` (clipped to the feasible range).

    Start from clamp(round(ideal)); while the sum is short, add one rank to the clients whose ideal
    exceeds their rank the most (among those below hi); while it is over, take one from those whose
    rank exceeds their ideal the most (among those above lo). Each pass is O(N) (argpartition, no
    sort) and either closes the gap or moves every eligible client by one, so a client is moved at
    most hi - lo times and there are at most max(hi - lo) + 1 <= r_max - r_min + 1 passes, whatever
    N is: O(N * (r_max - r_min + 1)). `repair_with_passes` also returns the number of passes.
    """
    return repair_with_passes(ideal, lo, hi, budget)[0]


def repair_with_passes(ideal: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: int) -> tuple[np.ndarray, int]:
    """`repair_to_budget` plus the number of correction passes it made (for tests and benchmarks)."""
    ideal = np.asarray(ideal, dtype=np.float64)
    lo, hi = np.asarray(lo), np.asarray(hi)
    ranks = np.rint(ideal).astype(np.int64)
    np.minimum(np.maximum(ranks, lo, out=ranks), hi, out=ranks)  # clamp; np.clip is ~5x slower here
    budget = feasible_budget(budget, lo, hi)
    gap = budget - int(ranks.sum())
    passes = 0
    while gap != 0:
        passes += 1
        if gap > 0:
            eligible = np.flatnonzero(ranks < hi)
            priority = ideal[eligible] - ranks[eligible]
        else:
            eligible = np.flatnonzero(ranks > lo)
            priority = ranks[eligible] - ideal[eligible]
        k = min(abs(gap), eligible.size)
        # the k most deserving (largest priority), found in O(N) by argpartition (no full sort)
        chosen = eligible if k == eligible.size else eligible[np.argpartition(-priority, k - 1)[:k]]
        ranks[chosen] += 1 if gap > 0 else -1
        gap -= k if gap > 0 else -k
    return ranks, passes


def greedy_min_max(intercept: np.ndarray, slope: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: int) -> np.ndarray:
    """Integer ranks in [lo, hi] summing to `budget` that minimise max_i (intercept_i + slope_i * r_i).

    Water-filling: start every client at lo and hand out the remaining ranks one at a time to the
    client whose time after the increment is smallest. For this separable problem with increasing
    linear times the greedy is optimal for the max (exchange argument). O(N + B log N) with a heap.
    """
    ranks = np.array(lo, dtype=np.int64)
    budget = feasible_budget(budget, lo, hi)
    remaining = budget - int(ranks.sum())
    heap = [(float(intercept[i] + slope[i] * (ranks[i] + 1)), int(i)) for i in np.flatnonzero(ranks < hi)]
    heapq.heapify(heap)
    while remaining > 0 and heap:
        _, i = heapq.heappop(heap)
        ranks[i] += 1
        remaining -= 1
        if ranks[i] < hi[i]:
            heapq.heappush(heap, (float(intercept[i] + slope[i] * (ranks[i] + 1)), i))
    return ranks


def bisect_min_max(intercept: np.ndarray, slope: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: int) -> np.ndarray:
    """The assignment `greedy_min_max` returns (optimal for the max time), found by bisection on T.

    Every rank above lo is a "unit" that costs the time it brings its client to: unit r of client i
    costs t_i(r) = intercept_i + slope_i * r, computed with the very float operations of
    `Clients.predicted_time`, so every comparison is exact (no tolerance) and ties are ties. With
    slope_i >= 0 each client's unit times never decrease, so the greedy takes the K = budget - sum(lo)
    cheapest units in (time, client index) order (budget clipped as `feasible_budget` does), and the
    optimal max time is max(max_i t_i(lo_i), tau), tau the K-th smallest unit time. The count
        c_i(T) = the largest r in [lo_i, hi_i] with r == lo_i or t_i(r) <= T
    is a vectorised floor((T - intercept_i) / slope_i), made exact by checking t_i(r) <= T < t_i(r + 1)
    and binary-searching the few clients where rounding moved it (slope_i = 0: hi_i if intercept_i <= T,
    else lo_i); sum_i c_i(T) - lo_i, the number of units costing <= T, never decreases in T. tau is
    bracketed, (t_lo, t_hi] with units(t_lo) < K <= units(t_hi), by probes at T placed from the unit
    times of an evenly spaced sample of clients, then by interpolation, with every fourth step halving
    the bracket; clients whose count agrees at both ends are settled. Once the bracket holds at most
    ~2 units per open client they are listed and tau is an order statistic (np.partition); if the
    bracket's ends become adjacent floats, tau = t_hi. The answer: every unit costing < tau, plus as
    many units costing exactly tau as the budget still needs, handed out in client index order, each
    client taking all its units at tau before the next one (the greedy heap's tie-break), so the
    ranks equal `greedy_min_max`'s exactly.

    O(N) per step over the clients still open; the step count is bounded (value halving in the first
    64 steps, then halving of the float's bit pattern: at most ~130 steps) and is 2 to 6 in practice.
    Raises ValueError for non-finite times or a negative slope.
    """
    a = np.asarray(intercept, dtype=np.float64).reshape(-1)
    b = np.asarray(slope, dtype=np.float64).reshape(-1)
    lo = np.asarray(lo, dtype=np.int64).reshape(-1)
    hi = np.asarray(hi, dtype=np.int64).reshape(-1)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("bisect_min_max: intercepts and slopes must be finite")
    if np.any(b < 0):
        raise ValueError("bisect_min_max: slopes must be >= 0 (times must not fall as the rank grows)")
    ranks = lo.copy()
    k = feasible_budget(budget, lo, hi) - int(lo.sum())  # units to hand out above lo
    if k <= 0:
        return ranks
    if k >= int((hi - lo).sum()):
        return hi.copy()
    idx = np.flatnonzero(hi > lo)  # open clients, ascending (the tie-break order)
    c_lo, c_hi = lo, hi  # never written to in place
    if idx.size < lo.size:
        a, b, c_lo, c_hi = a.take(idx), b.take(idx), lo.take(idx), hi.take(idx)
    with np.errstate(divide="ignore"):
        inv = 1.0 / b  # only for estimates (inf where the slope is 0); every count is checked exactly
    # the bracket (t_lo, t_hi] with counts c_lo = c(t_lo), c_hi = c(t_hi): no unit costs <= t_lo at
    # first, every unit costs <= t_hi; then always below = #units costing <= t_lo < k <= #units <= t_hi
    first = c_lo + 1.0
    first *= b
    first += a  # a + b * (lo + 1): each client's cheapest unit
    t_lo = float(np.nextafter(first.min(), -np.inf))
    last = np.multiply(b, c_hi, out=first)
    last += a
    t_hi = float(last.max())
    below = 0  # units (of all clients, settled ones included) costing <= t_lo
    steps, side = 0, 0  # side: +1 after a probe moved t_lo up, -1 after one moved t_hi down
    # first probes: the unit times of an evenly spaced sample of the open clients, at ranks a little
    # below and above where the k-th unit should sit among them
    probes = _sample_probes(a, b, c_lo, c_hi, k / int((c_hi - c_lo).sum()))
    while True:
        d = c_hi - c_lo
        open_ = d > 0
        n_open = int(np.count_nonzero(open_))
        if n_open < 0.5 * idx.size:  # drop settled clients: their count is the same at both ends
            done = np.flatnonzero(~open_)
            ranks[idx.take(done)] = c_lo.take(done)
            keep = np.flatnonzero(open_)
            idx, a, b, inv = idx.take(keep), a.take(keep), b.take(keep), inv.take(keep)
            c_lo, c_hi, d = c_lo.take(keep), c_hi.take(keep), d.take(keep)
        units = int(d.sum())
        if units <= _ENUMERATE_PER_CLIENT * n_open + _ENUMERATE_EXTRA:
            _tau, c_lt, c_le = _kth_unit_time(a, b, c_lo, c_hi, k - below)
            break
        # the next probe aims half an open client count past the k-th unit, on the side of it that the
        # bracket did not move from last, so that the next bracket is narrow on both sides
        aim = k - 0.5 + side * _AIM_PAST * n_open
        mid = None
        while probes and mid is None:
            guess = probes.pop()
            mid = guess if t_lo < guess < t_hi else None
        if mid is None and steps < 64 and steps % 4 != 3:
            # interpolate: where that unit would cost if the bracket's units were spread evenly over it
            guess = t_lo + (t_hi - t_lo) * min(max((aim - below) / units, 0.0), 1.0)
            mid = guess if t_lo < guess < t_hi else None
        if mid is None:  # halve the bracket (by value, then by bit pattern): the step count stays bounded
            mid = 0.5 * t_lo + 0.5 * t_hi if steps < 64 else _bit_midpoint(t_lo, t_hi)
            if not t_lo < mid < t_hi:
                mid = float(np.nextafter(t_lo, np.inf))
                if not mid < t_hi:  # adjacent floats: every unit in the bracket costs exactly t_hi
                    c_lt, c_le = c_lo, c_hi  # (tau = t_hi)
                    break
        c_mid = _ranks_within(mid, a, b, inv, c_lo, c_hi)
        at_mid = below + int((c_mid - c_lo).sum())
        if at_mid >= k:
            t_hi, c_hi, side = mid, c_mid, -1
        else:
            t_lo, c_lo, below, side = mid, c_mid, at_mid, 1
        steps += 1
    # every unit costing < tau, then the units costing exactly tau in client index order
    need = k - below - int((c_lt - c_lo).sum())
    tied = c_le - c_lt
    take = np.minimum(np.maximum(need - (np.cumsum(tied) - tied), 0), tied)
    ranks[idx] = c_lt + take
    return ranks


# bisect_min_max lists the units left in its bracket once there are at most this many per open client
# (plus a constant); tests set both to 0 to drive the bisection down to adjacent floats
_ENUMERATE_PER_CLIENT = 2
_ENUMERATE_EXTRA = 256
_AIM_PAST = 0.5  # probes aim this many units per open client past the K-th unit (see the loop)
_SAMPLE = 1024  # clients sampled to place the first probes (only when there are 4x as many open)
_SAMPLE_SPREAD = 0.75  # the sample probes sit this * units / sqrt(sampled clients) either side


def _sample_probes(a: np.ndarray, b: np.ndarray, c_lo: np.ndarray, c_hi: np.ndarray, frac: float) -> list[float]:
    """Two round times that likely bracket the unit at fraction `frac` of all units, read off the sorted
    units of every (n // _SAMPLE)-th client; none for few clients or when those units are too many to list.
    Only guesses: the bracket checks every probe with exact counts."""
    step = max(1, a.size // _SAMPLE)
    sel = slice(0, None, step)
    cl, ch = c_lo[sel], c_hi[sel]
    total = int((ch - cl).sum())
    if a.size < 4 * _SAMPLE or total > 64 * _SAMPLE:
        return []
    t = np.sort(_unit_times(a[sel], b[sel], cl, ch)[0])
    # a few standard errors of the sampled fraction either side; a probe on the wrong side only costs a step
    half = _SAMPLE_SPREAD * total / np.sqrt(cl.size)
    below, above = int(frac * total - half), int(np.ceil(frac * total + half))
    return [float(t[i]) for i in (above, below) if 0 <= i < total]  # popped from the end: below first


def _ranks_within(
    t: float, a: np.ndarray, b: np.ndarray, inv: np.ndarray, c_lo: np.ndarray, c_hi: np.ndarray
) -> np.ndarray:
    """Per client, the largest r in [c_lo, c_hi] with r == c_lo or a + b * r <= t (float-exact).

    The estimate floor((t - a) / b) (via inv = 1 / b) is checked against the exact times of r and
    r + 1; the few clients where rounding moved it across a boundary are binary-searched."""
    # in place where possible: at N = 100,000 each fresh array costs as much as the arithmetic
    est = np.subtract(t, a)
    with np.errstate(invalid="ignore", over="ignore"):
        est *= inv  # b == 0: +-inf, or nan when t == a (left at c_lo and caught below)
    np.fmax(est, c_lo, out=est)
    np.fmin(est, c_hi, out=est)
    np.floor(est, out=est)
    r = est.astype(np.int64)
    t_r = np.multiply(b, est)
    t_r += a
    too_high = t_r > t
    too_high &= r > c_lo
    est += 1.0
    t_next = np.multiply(b, est, out=t_r)
    t_next += a
    too_low = t_next <= t
    too_low &= r < c_hi
    bad = np.flatnonzero(too_low | too_high)
    if bad.size:
        up = too_low[bad]  # the estimate is too low (else too high)
        lo_r = np.where(up, r[bad] + 1, c_lo[bad])  # always a valid answer
        hi_r = np.where(up, c_hi[bad], r[bad] - 1)  # never below the answer
        ab, bb = a[bad], b[bad]
        while True:
            open_ = lo_r < hi_r
            if not open_.any():
                break
            m = (lo_r + hi_r + 1) // 2
            ok = ab + bb * m.astype(np.float64) <= t
            lo_r = np.where(open_ & ok, m, lo_r)
            hi_r = np.where(open_ & ~ok, m - 1, hi_r)
        r[bad] = lo_r
    return r


def _kth_unit_time(
    a: np.ndarray, b: np.ndarray, c_lo: np.ndarray, c_hi: np.ndarray, j: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """tau, the j-th smallest (1-based) of the unit times a_i + b_i * r, r in (c_lo_i, c_hi_i], and the
    per-client counts of units costing < tau and <= tau, added to c_lo."""
    t, start = _unit_times(a, b, c_lo, c_hi)
    d = c_hi - c_lo
    tau = float(np.partition(t, j - 1)[j - 1])
    c_lt, c_le = c_lo.copy(), c_lo.copy()
    nz = np.flatnonzero(d)  # a client's units are contiguous in t: count them per segment
    c_lt[nz] += np.add.reduceat(t < tau, start[nz], dtype=np.int64)
    c_le[nz] += np.add.reduceat(t <= tau, start[nz], dtype=np.int64)
    return tau, c_lt, c_le


def _unit_times(a: np.ndarray, b: np.ndarray, c_lo: np.ndarray, c_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unit times a_i + b_i * r, r in (c_lo_i, c_hi_i], client after client, and where each client's start."""
    d = c_hi - c_lo
    start = np.cumsum(d) - d
    owner = np.repeat(np.arange(d.size), d)
    r = np.arange(int(d.sum()), dtype=np.int64) - np.repeat(start - c_lo - 1, d)
    return a[owner] + b[owner] * r.astype(np.float64), start


def _bit_midpoint(x: float, y: float) -> float:
    """A float strictly between x < y when one exists, halving the number of floats between them."""

    def key(v: float) -> int:
        i = int(np.array(v, dtype=np.float64).view(np.int64))
        return i if i >= 0 else -(i & 0x7FFFFFFFFFFFFFFF)

    def unkey(i: int) -> float:
        v = float(np.array(abs(i), dtype=np.int64).view(np.float64))
        return v if i >= 0 else -v

    return unkey((key(x) + key(y)) // 2)
