"""What a tier's compute costs and why: the device a tier models, the rank profile that prices it, the device
that measured that profile, and the conversion between the two with its source.

`timing.mode: profile` prices a client's compute as samples x t(rank) / compute_factor, with t from one
measured rank profile (run/profiling.py). Each tier states its `compute_factor` relative to a named
`compute_reference` device (config/tiers.py). When the profile was measured on another device, t is
converted to the reference device by a measured ratio: two shipped profiles of one setting (backbone, batch,
length, modules), one measured on the profile's device and one on the reference device, give
    conversion = median step time on the profile's device / median step time on the reference device,
and the time model prices seconds on the reference device: t(r) / conversion. A ratio measured on another
backbone than the run's is used as an assumption and said so. Without a reference, or without a measured
conversion, compute_factor is relative to the profile's own device, and a tier that names a GPU priced from a
CPU profile that way is warned about once.

`pricing(cfg)` says all of it per tier, for the run header and metrics.json.
"""

from __future__ import annotations

import logging
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from fedranklite.config.tiers import compute_reference
from fedranklite.federation.timing import ProfileParams, TimeModel
from fedranklite.run.profiling import ensure_profile
from fedranklite.run.rank_profile import (
    SHIPPED_DIR,
    ProfileError,
    RankProfile,
    cache_dir,
    device_label,
    find_profile,
    profile_key,
)

log = logging.getLogger(__name__)

# words that mark a tier (its name or its device) as a GPU
GPU_WORDS = ("gpu", "nvidia", "geforce", "rtx", "tesla", "radeon", "instinct", "a100", "h100", "h200", "v100", "l4")
_warned: set[str] = set()


@dataclass(frozen=True)
class Conversion:
    """Seconds on the profile's device per second on the reference device, and where the ratio comes from."""

    factor: float
    source: str
    assumed: bool = False  # measured on another setting than the run's (another backbone or batch shape)


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.casefold()))


def device_matches(reference: str, device: dict[str, Any]) -> bool:
    """Does a profile's device match a tier's device name? Every word of `reference` is in the profile's
    device label ("NVIDIA H100" matches "NVIDIA H100 80GB HBM3"; "AMD EPYC (2 threads)" only 2 threads)."""
    words = _words(reference)
    return bool(words) and words <= _words(device_label(device))


def _same_device(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a.get("kind"), a.get("name"), a.get("threads")) == (b.get("kind"), b.get("name"), b.get("threads"))


def _setting(key: dict[str, Any]) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in key.items() if k != "device"))


# shipped profiles that only link two devices (a setting measured on a second device, whose file name a run's
# profile already takes): read for conversions, never found by key to price a run
DEVICE_LINKS = "devices"


def shipped_profiles(folder: Optional[Path] = None) -> list[RankProfile]:
    """Every profile shipped with the package, the device links included (a refused one is a packaging error:
    ProfileError)."""
    root = Path(folder or SHIPPED_DIR)
    paths = sorted(root.glob("*.json")) + sorted((root / DEVICE_LINKS).glob("*.json"))
    return [RankProfile.load(p) for p in paths]


def _median_step(profile: RankProfile) -> float:
    return float(statistics.median(profile.sec_per_step))


def conversion_to(
    reference: Optional[str], profile: RankProfile, folder: Optional[Path] = None
) -> Optional[Conversion]:
    """How many times faster the `reference` device trains than the device that measured `profile`, from two
    shipped profiles of one setting measured on those two devices; None where no such pair ships."""
    if reference is None:
        return None
    if device_matches(reference, profile.device):
        return Conversion(1.0, f"the profile was measured on {profile.device_label}")
    shipped = shipped_profiles(folder)
    pairs = _pairs(shipped, lambda d: _same_device(d, profile.device), lambda d: device_matches(reference, d))
    if not pairs:
        return _two_step(reference, profile, shipped)
    own = [p for p in pairs if _setting(p[0].key) == _setting(profile.key)]
    slow, fast = (own or pairs)[0]
    factor = _median_step(slow) / _median_step(fast)
    source = f"measured: {_pair_text(slow, fast)}"
    if not own:
        source += f"; assumed to hold for {profile.key['backbone']}"
    return Conversion(factor, source, assumed=not own)


def _pairs(
    shipped: list[RankProfile], slow_device: Callable[[dict], bool], fast_device: Callable[[dict], bool]
) -> list[tuple[RankProfile, RankProfile]]:
    """Every (slow, fast) pair of shipped profiles of one setting whose devices pass the two tests: what a
    measured conversion between two devices is made of."""
    return [
        (slow, fast)
        for slow in shipped
        if slow_device(slow.device)
        for fast in shipped
        if fast_device(fast.device) and _setting(fast.key) == _setting(slow.key)
    ]


def _pair_text(slow: RankProfile, fast: RankProfile) -> str:
    k = slow.key
    return (
        f"{k['backbone']} ({k['quantization']}, batch {k['batch_size']} x {k['max_length']} tokens), median step "
        f"{_median_step(slow):.3g} s on {slow.device_label} vs {_median_step(fast):.3g} s on {fast.device_label} "
        f"(profiles/{_shipped_name(slow)}, profiles/{_shipped_name(fast)})"
    )


def _shipped_name(profile: RankProfile) -> str:
    path = Path(profile.source)
    return f"{DEVICE_LINKS}/{path.name}" if path.parent.name == DEVICE_LINKS else path.name


def _two_step(reference: str, profile: RankProfile, shipped: list[RankProfile]) -> Optional[Conversion]:
    """profile's device -> a middle device -> the reference, each step a shipped pair of one setting: used where
    no pair links the profile's device to the reference directly (a CPU whose only link is to another CPU that
    has a GPU pair). Steps on the run's own setting are preferred; the factor is the product of the two ratios."""
    own = _setting(profile.key)
    best: Optional[tuple[int, float, str]] = None
    # step 1: the profile's device -> a middle device that is neither it nor the reference (those pairs are direct)
    first = _pairs(
        shipped,
        lambda d: _same_device(d, profile.device),
        lambda d: not _same_device(d, profile.device) and not device_matches(reference, d),
    )
    for a, m in first:
        for m2, f in _pairs(shipped, lambda d: _same_device(d, m.device), lambda d: device_matches(reference, d)):
            borrowed = (_setting(a.key) != own) + (_setting(m2.key) != own)
            if best is None or borrowed < best[0]:
                factor = _median_step(a) / _median_step(m) * _median_step(m2) / _median_step(f)
                source = f"measured in two steps: {_pair_text(a, m)}; then {_pair_text(m2, f)}"
                best = (borrowed, factor, source)
    if best is None:
        return None
    borrowed, factor, source = best
    if borrowed:
        source += f"; assumed to hold for {profile.key['backbone']}"
    return Conversion(factor, source, assumed=bool(borrowed))


def _gpu_labelled(name: str, device: Optional[str]) -> bool:
    return bool(_words(f"{name} {device or ''}".replace("_", " ")) & set(GPU_WORDS))


def _profile_name(profile: RankProfile) -> str:
    """The profile's file as a reader can find it: profiles/<name> when shipped, cache:<name> when cached on
    this machine, else as the config gave it."""
    if profile.source is None:
        return "measured for this run"
    path = Path(profile.source)
    if path.parent == Path(SHIPPED_DIR):
        return f"profiles/{path.name}"
    if path.parent == cache_dir():
        return f"cache:{path.name}"
    return profile.source


def _resolve(cfg) -> Optional[RankProfile]:
    """The run's profile without measuring one (None when it would be measured at the start of the run)."""
    if getattr(cfg.timing, "profile", None):
        return RankProfile.load(cfg.timing.profile)
    found = find_profile(profile_key(cfg))
    if found is None:
        return None
    try:
        return RankProfile.load(found)
    except ProfileError:
        if found.parent == Path(SHIPPED_DIR):
            raise
        return None  # a cached profile this version refuses: the run measures it again (ensure_profile)


def pricing(cfg, profile: Optional[RankProfile] = None) -> dict[str, dict[str, Any]]:
    """Per tier: the device it models, its compute_factor and the device that factor is relative to (with its
    source), the profile that prices compute and the device that measured it, the conversion between that
    device and the reference (with its source), and `x_profile_device`: the tier's speed as a multiple of the
    profile's device, what the time model divides the profile's time by."""
    mode = cfg.timing.mode
    if getattr(cfg.engine, "backend", "local") == "surrogate":
        mode = "surrogate"  # its calibration's fitted time model prices compute, not the profile
    reference = compute_reference(cfg.tiers)
    if mode == "profile" and profile is None:
        profile = _resolve(cfg)
    conversion = conversion_to(reference, profile) if mode == "profile" and profile is not None else None
    out: dict[str, dict[str, Any]] = {}
    for name, tier in cfg.tiers.items():
        entry: dict[str, Any] = {
            "device": tier.device,
            "compute_factor": tier.compute_factor,
            "relative_to": reference or ("the profile's device" if mode == "profile" else "compute_factor 1"),
            "compute_source": tier.compute_source,
            "timing": mode,
        }
        if mode == "profile":
            entry["profile"] = _profile_name(profile) if profile is not None else "measured at the start of the run"
            entry["profile_device"] = profile.device_label if profile is not None else None
            entry["conversion"] = conversion.factor if conversion else (None if reference else 1.0)
            entry["conversion_source"] = (
                conversion.source
                if conversion
                else (
                    f"none: no shipped profile pair measures the profile's device against {reference}"
                    if reference
                    else "none: compute_factor is relative to the profile's device"
                )
            )
            if conversion and conversion.assumed:
                entry["conversion_assumed"] = True
            factor = conversion.factor if conversion else 1.0
            entry["x_profile_device"] = tier.compute_factor * factor
        elif mode == "surrogate":
            entry["conversion_source"] = (
                "none: the surrogate's calibration (engine.surrogate.calibration) fitted seconds per sample at "
                "compute_factor 1 of the tiers of the run it was calibrated on"
            )
        elif mode == "measured":
            entry["conversion_source"] = "none: measured wall seconds of this machine / compute_factor"
        else:
            entry["conversion_source"] = "none: analytic constants are seconds at compute_factor 1"
        out[name] = entry
    return out


def pricing_lines(table: dict[str, dict[str, Any]]) -> list[str]:
    """One line per tier for a terminal header."""
    lines = []
    for name, e in table.items():
        device = e["device"] or "device not stated"
        line = f"{name}: {device} = {e['compute_factor']:g} x {e['relative_to']}"
        if e.get("profile_device") is not None and e.get("conversion") is not None:
            line += f" = {e['x_profile_device']:.3g} x {e['profile_device']} ({e['profile']})"
            if e.get("conversion_assumed"):
                line += ", the conversion measured on another setting"
        elif e["timing"] == "profile":
            line += f", priced from {e['profile']}: {e['conversion_source']}"
        else:
            line += f" ({e['timing']} timing: {e['conversion_source'].removeprefix('none: ')})"
        lines.append(line)
    return lines


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def warn_unconverted(cfg, profile: RankProfile, conversion: Optional[Conversion]) -> None:
    """One warning per process for tiers priced from a profile measured on another kind of device without a
    conversion: a GPU-labelled tier from a CPU profile, or any tier whose reference has no conversion."""
    reference = compute_reference(cfg.tiers)
    if reference is not None and conversion is None:
        _warn_once(
            f"tiers price compute relative to {reference!r}, but the rank profile {_profile_name(profile)} was "
            f"measured on {profile.device_label} and no shipped profile pair measures one against the other: "
            f"compute is priced at compute_factor x {profile.device_label}, unconverted"
        )
        return
    if reference is None and profile.device.get("kind") == "cpu":
        gpus = [n for n, t in cfg.tiers.items() if _gpu_labelled(n, t.device)]
        if gpus:
            _warn_once(
                f"tier(s) {', '.join(gpus)} name a GPU but are priced at compute_factor x the CPU that measured "
                f"the rank profile ({profile.device_label}, {_profile_name(profile)}): state each tier's "
                "compute_reference (e.g. 'NVIDIA H100') so the profile is converted to that device"
            )


def priced_fit(cfg, profile: RankProfile) -> tuple[float, float]:
    """(a, b) of t(r) = a + b r seconds per sample on the tiers' reference device, as `timing.mode: profile`
    prices it: the profile's fit (a slope below zero is measurement noise, since a larger adapter is never
    cheaper: priced as zero) divided by the measured conversion, if any (warned about once where none is)."""
    conversion = conversion_to(compute_reference(cfg.tiers), profile)
    warn_unconverted(cfg, profile, conversion)
    factor = conversion.factor if conversion else 1.0
    fit = profile.time_fit
    return max(fit.intercept, 0.0) / factor, max(fit.slope, 0.0) / factor


class ProfileTime:
    """timing.mode: profile: the analytic formula with a and b from a measured rank profile, converted to the
    tiers' reference device."""

    @classmethod
    def from_config(cls, params: ProfileParams, cfg=None) -> TimeModel:
        if cfg is None:
            raise ValueError("timing.mode: profile needs the run's config to find its profile")
        profile = ensure_profile(cfg)
        profile.check_ranks(1, cfg.r_max)
        return TimeModel("profile", *priced_fit(cfg, profile))
