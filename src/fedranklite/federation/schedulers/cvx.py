"""`cvx`: minimise the predicted round time of the slowest client under the rank budget.

    minimise   max_i  t_i(r_i) = intercept_i + slope_i * r_i
    subject to sum_i r_i = budget,  lo_i <= r_i <= hi_i,  r_i integer

(budget clipped to [sum lo, sum hi] as `feasible_budget` does; intercept_i, slope_i >= 0 are
`Clients.time_intercept` / `time_per_rank`). `solver` picks how:

- `bisect` (default): `bisect_min_max`, exact and vectorised. A rank above lo costs the time it brings
  its client to; the optimum takes the budget's cheapest such units, so the max time is the K-th
  smallest unit time (K = budget - sum lo), found by bisection on the round time T over the
  non-decreasing count sum_i c_i(T), c_i(T) = clip(floor((T - intercept_i) / slope_i), lo_i, hi_i)
  made float-exact, then an order statistic over the few units left in the bracket. Units at exactly
  the optimal time go to clients in index order, so the ranks equal `greedy_min_max`'s. O(N) per
  bisection step, a handful of steps: well under a millisecond at N = 1,000.
- `greedy`: `greedy_min_max`, integer water-filling with a heap (exact, O(N + B log N)); recorded in
  `notes`.
- `cvxpy` and `auto` (the same thing, `auto` being the former default): the linear programme solved
  with cvxpy (continuous relaxation, epigraph form), then repaired to integers that sum exactly to
  the budget: floor the relaxed ranks and hand the remaining units out greedily to whichever client
  stays fastest. When cvxpy is not installed or the solve fails, `greedy_min_max` is used instead;
  the fallback is logged and recorded in `notes`.

`bisect` falls back to the greedy the same way (logged, in `notes`) when the times are not finite or
a slope is negative. `last_method` says which path produced the last assignment ("bisect", "cvxpy"
or "greedy"); `notes` is empty on the chosen solver's normal path (bisect, cvxpy) and says why
otherwise.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from fedranklite.federation.schedulers.base import SCHEDULERS, Clients, Scheduler, SchedulerParams
from fedranklite.federation.schedulers.minmax import bisect_min_max, feasible_budget, greedy_min_max

log = logging.getLogger(__name__)

SOLVERS = ("bisect", "cvxpy", "greedy", "auto")


class CvxParams(SchedulerParams):
    # bisect: exact vectorised solver; cvxpy / auto: cvxpy LP + integer repair, greedy fallback;
    # greedy: heap water-filling
    solver: Literal["bisect", "cvxpy", "greedy", "auto"] = "bisect"


@SCHEDULERS.register("cvx", CvxParams)
class CvxScheduler(Scheduler):
    def __init__(self, r_min: int, r_max: int, r_bar: float, solver: str = "bisect"):
        super().__init__(r_min, r_max, r_bar)
        if solver not in SOLVERS:
            raise ValueError(f"cvx: unknown solver {solver!r}; expected one of {', '.join(SOLVERS)}")
        self.solver = solver
        self.last_method = ""

    def assign(self, clients: Clients) -> np.ndarray:
        self.notes = []
        lo, hi = self.bounds(clients)
        budget = feasible_budget(self.budget(len(clients)), lo, hi)
        if len(clients) == 0:
            self.last_method = ""
            return np.zeros(0, dtype=np.int64)
        if self.solver == "bisect":
            try:
                ranks = bisect_min_max(clients.time_intercept, clients.time_per_rank, lo, hi, budget)
                self.last_method = "bisect"
                return ranks
            except ValueError as exc:  # non-finite times or a negative slope
                note = f"cvx: bisect cannot solve this round ({exc}); greedy fallback used"
                log.warning(note)
                self.notes.append(note)
        elif self.solver == "greedy":
            self.notes.append("cvx: solver=greedy; integer water-filling used (no cvxpy)")
        else:  # "cvxpy" and "auto"
            try:
                relaxed = solve_relaxed(clients.time_intercept, clients.time_per_rank, lo, hi, budget)
                # Round the relaxed optimum down, with a margin for the solver's tolerance: a start at or
                # below the relaxed ranks is below some integer optimum, from which the water-filling is
                # exact; a start rounded up past it (3 - 1e-7 -> 3) could not be undone.
                start = np.clip(np.floor(relaxed - 1e-6).astype(np.int64), lo, hi)
                # floor can overshoot only through the clip at lo; fall back to lo then
                if start.sum() > budget:
                    start = lo
                self.last_method = "cvxpy"
                return greedy_min_max(clients.time_intercept, clients.time_per_rank, start, hi, budget)
            except ImportError as exc:  # cvxpy is an optional dependency
                note = f"cvx: cvxpy is not installed ({type(exc).__name__}: {exc}); greedy fallback used"
                log.warning(note)
                self.notes.append(note)
            except Exception as exc:  # solver failure, infeasible numerics
                note = f"cvx: cvxpy solve failed ({type(exc).__name__}: {exc}); greedy fallback used"
                log.warning(note)
                self.notes.append(note)
        self.last_method = "greedy"
        return greedy_min_max(clients.time_intercept, clients.time_per_rank, lo, hi, budget)


def solve_relaxed(intercept: np.ndarray, slope: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: int) -> np.ndarray:
    """Continuous min-max ranks. Raises when cvxpy is missing or no optimal solution is found."""
    import cvxpy as cp  # optional dependency (`pip install fedranklite[cvx]`)

    n = len(intercept)
    r = cp.Variable(n)
    t = cp.Variable()
    constraints = [intercept + cp.multiply(slope, r) <= t, cp.sum(r) == budget, r >= lo, r <= hi]
    problem = cp.Problem(cp.Minimize(t), constraints)
    # CLARABEL is an interior-point solver shipped with cvxpy that prints nothing when not verbose
    # (HiGHS prints a banner to stdout).
    solver = cp.CLARABEL if cp.CLARABEL in cp.installed_solvers() else None
    problem.solve(solver=solver, verbose=False)
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or r.value is None or not np.all(np.isfinite(r.value)):
        raise RuntimeError(f"solver status {problem.status}")
    return np.asarray(r.value, dtype=np.float64)
