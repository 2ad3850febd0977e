"""Simulated time: how long a client's round would take on its tier's hardware (pure, no model).

- profile:  compute seconds = samples * t(rank) / compute_factor with t(r) = a + b*r seconds per sample
            from a measured rank sweep of the backbone (run/profiling.py, `fedranklite profile`):
            deterministic and measured. The profile is the config's `timing.profile`, else the
            cached/shipped one for this backbone and batch shape, else measured once and cached. t is in
            seconds on the tiers' `compute_reference` device, converted from the device that measured the
            profile by a measured ratio where one ships (run/pricing.py says which, per tier).
- measured: compute seconds = measured wall seconds / tier compute_factor (depends on machine load; this
            machine's seconds, not converted to the tiers' compute_reference: warned about once)
- analytic: compute seconds = samples * (sec_per_sample + sec_per_sample_per_rank * rank) / compute_factor,
            invented constants, for tests and sensitivity sweeps.
All add communication time when the tier has a bandwidth: bytes * 8 / (bandwidth_mbps * 1e6),
for the download and the upload.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pydantic import Field

from fedranklite.core.registry import PluginConfig, Registry

log = logging.getLogger(__name__)
_warned: set[str] = set()


def comm_seconds(num_bytes: float, bandwidth_mbps: Optional[float]) -> float:
    """Seconds to move `num_bytes` at `bandwidth_mbps`; None, 0 or NaN (a tier without a bandwidth, as
    hardware.py's per-client arrays write it): communication is not simulated."""
    if not bandwidth_mbps or math.isnan(bandwidth_mbps):
        return 0.0
    return float(num_bytes) * 8.0 / (float(bandwidth_mbps) * 1e6)


class TimingParams(PluginConfig):
    """Parameters every timing mode shares (none yet)."""


class ConstantParams(TimingParams):
    # analytic: the cost of a training sample on a compute_factor=1 device, at rank 0 and per rank unit;
    # measured: the same numbers predict client times for the scheduler until the first client is timed
    sec_per_sample: float = Field(0.05, ge=0)
    sec_per_sample_per_rank: float = Field(0.005, ge=0)


class ProfileParams(TimingParams):
    profile: Optional[str] = None  # a profile JSON from `fedranklite profile`; null: shipped/cached, else measured

    def problems(self, cfg) -> list[tuple[str, str]]:
        if self.profile and not Path(self.profile).is_file():
            return [
                (
                    "profile",
                    f"not found: {self.profile} (make one with `fedranklite profile --config X`; relative paths "
                    f"are read from the current directory, {Path.cwd()})",
                )
            ]
        return []


TIMING_MODES: Registry[type["TimeModel"]] = Registry("timing mode", key="mode", base=TimingParams)


@TIMING_MODES.register("measured", ConstantParams)
@TIMING_MODES.register("analytic", ConstantParams)
@dataclass
class TimeModel:
    mode: str = "measured"
    sec_per_sample: float = 0.05
    sec_per_sample_per_rank: float = 0.005
    # measured mode: running estimate of wall seconds per sample on this machine (compute_factor 1),
    # used only to predict times for the scheduler before a client runs
    observed_sec_per_sample: Optional[float] = None
    _observations: int = 0

    def __post_init__(self) -> None:
        if self.mode not in TIMING_MODES:
            raise ValueError(f"unknown time mode {self.mode!r}; known: {sorted(TIMING_MODES)}")

    @classmethod
    def from_config(cls, params: ConstantParams, cfg=None) -> "TimeModel":
        references = sorted({t.compute_reference for t in getattr(cfg, "tiers", {}).values() if t.compute_reference})
        if params.mode == "measured" and references:
            # this machine's wall seconds are not converted to the tiers' reference device (profile mode does that)
            message = (
                f"timing.mode measured prices compute as this machine's wall seconds / compute_factor: the tiers' "
                f"compute_reference {references[0]!r} is not applied (timing.mode profile converts to it)"
            )
            if message not in _warned:
                _warned.add(message)
                log.warning(message)
        return cls(params.mode, params.sec_per_sample, params.sec_per_sample_per_rank)

    @property
    def deterministic(self) -> bool:
        """Simulated time depends only on the work done, not on how fast this machine ran it."""
        return self.mode != "measured"

    def compute_seconds(
        self, samples: int, rank: int, compute_factor: float, measured_wall: Optional[float] = None
    ) -> float:
        if self.mode == "measured":
            if measured_wall is None:
                raise ValueError("measured time mode needs the measured wall time")
            return measured_wall / compute_factor
        return samples * (self.sec_per_sample + self.sec_per_sample_per_rank * rank) / compute_factor

    def observe(self, wall_seconds: float, samples: int) -> None:
        if self.mode != "measured" or samples <= 0 or wall_seconds <= 0:
            return
        per = wall_seconds / samples
        n = self._observations
        prev = self.observed_sec_per_sample
        self.observed_sec_per_sample = per if prev is None else (prev * n + per) / (n + 1)
        self._observations = n + 1

    def predict(
        self,
        samples: int,
        compute_factor: float,
        bandwidth_mbps: Optional[float],
        fixed_bytes: float,
        bytes_per_rank: float,
    ) -> tuple[float, float]:
        """(intercept, slope) of the predicted round time in rank: t(r) = intercept + slope * r."""
        if self.mode == "measured":
            base = self.observed_sec_per_sample if self.observed_sec_per_sample is not None else self.sec_per_sample
            per_rank = 0.0 if self.observed_sec_per_sample is not None else self.sec_per_sample_per_rank
        else:
            base, per_rank = self.sec_per_sample, self.sec_per_sample_per_rank
        intercept = samples * base / compute_factor + comm_seconds(fixed_bytes, bandwidth_mbps)
        slope = samples * per_rank / compute_factor + comm_seconds(bytes_per_rank, bandwidth_mbps)
        return intercept, slope

    def state_dict(self) -> dict:
        return {"observed_sec_per_sample": self.observed_sec_per_sample, "observations": self._observations}

    def load_state_dict(self, state: dict) -> None:
        self.observed_sec_per_sample = state["observed_sec_per_sample"]
        self._observations = int(state["observations"])


# The profile mode's implementation finds or measures a rank profile (it loads backbones) and converts it to
# the tiers' reference device, so it lives with the run's set-up and is imported by name when a run builds its
# time model.
TIMING_MODES.add("profile", "fedranklite.run.pricing:ProfileTime", ProfileParams)
