"""A hardware tier of the configuration: what device its clients model, how fast it is against a named
reference device and where that figure comes from, its memory and its network.

Compute is priced by the run's rank profile (run/profiling.py), measured on one device. A tier's
`compute_factor` is its training speed relative to `compute_reference`, a device named by the tier (for
example "NVIDIA H100"); run/pricing.py converts the profile's device to that reference with a measured
conversion (two shipped profiles of one setting, one on each device) and says which it used. Every tier of a
config prices against one reference: a tier that leaves `compute_reference` null takes the one the other
tiers name, and when no tier names one, `compute_factor` is relative to the device that measured the profile.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from fedranklite.core.registry import Section

MAX_CLIENTS = 10_000_000
DEVICE_TEXT_MAX = 200  # a device name ("NVIDIA H100", "Raspberry Pi 5 CPU")
SOURCE_TEXT_MAX = 2_000  # a citation or the measurement a factor comes from


class TierConfig(Section):
    # what the tier's clients are, in words (e.g. "NVIDIA GeForce RTX 4090"); null: not stated
    device: Optional[str] = Field(None, min_length=1, max_length=DEVICE_TEXT_MAX)
    compute_factor: float = Field(..., gt=0)  # training speed relative to compute_reference
    # the device compute_factor is measured against (e.g. "NVIDIA H100"); null: the one the other tiers name,
    # else the device that measured the rank profile
    compute_reference: Optional[str] = Field(None, min_length=1, max_length=DEVICE_TEXT_MAX)
    compute_source: Optional[str] = Field(None, min_length=1, max_length=SOURCE_TEXT_MAX)  # where the factor is from
    num_clients: int = Field(..., ge=1, le=MAX_CLIENTS)
    memory_gb: float = Field(..., gt=0)
    bandwidth_mbps: Optional[float] = Field(None, gt=0)  # both ways; None: communication time not simulated
    uplink_mbps: Optional[float] = Field(None, gt=0)  # client -> server (default: bandwidth_mbps)
    downlink_mbps: Optional[float] = Field(None, gt=0)  # server -> client (default: bandwidth_mbps)
    # clients of a tier are not clones (hardware.py): lognormal sigma of each client's speed and bandwidth
    # around the tier's (drawn once per run), of its compute time each round, and the probability that a
    # selected client answers. Hidden from the schedulers, which learn clients from their telemetry.
    speed_sigma: float = Field(0.0, ge=0, le=3)
    bandwidth_sigma: float = Field(0.0, ge=0, le=3)
    jitter_sigma: float = Field(0.0, ge=0, le=3)
    availability: float = Field(1.0, gt=0, le=1)

    @property
    def uplink(self) -> Optional[float]:
        return self.uplink_mbps if self.uplink_mbps is not None else self.bandwidth_mbps

    @property
    def downlink(self) -> Optional[float]:
        return self.downlink_mbps if self.downlink_mbps is not None else self.bandwidth_mbps


def compute_reference(tiers: dict[str, TierConfig]) -> Optional[str]:
    """The one device every tier's compute_factor is relative to (None: the profile's own device)."""
    named = [t.compute_reference for t in tiers.values() if t.compute_reference is not None]
    return named[0] if named else None


def tier_problems(tiers: dict[str, TierConfig]) -> list[tuple[str, str]]:
    """(dotted key, message) for tiers that price against different reference devices: the time model has one
    clock, so every compute_factor must be relative to the same device."""
    problems: list[tuple[str, str]] = []
    first: Optional[tuple[str, str]] = None
    for name, tier in tiers.items():
        ref = tier.compute_reference
        if ref is None:
            continue
        if first is None:
            first = (name, ref)
        elif _norm(ref) != _norm(first[1]):
            problems.append(
                (
                    f"tiers.{name}.compute_reference",
                    f"{ref!r} differs from tiers.{first[0]}'s {first[1]!r}: every tier's compute_factor must be "
                    "relative to one device (convert this tier's factor to that device)",
                )
            )
    return problems


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())
