"""Each client's own hardware, and what the server learns about it.

Clients of one tier are not clones. A client's compute factor and bandwidths are its tier's figures
times a lognormal deviation drawn once per run (`speed_sigma`, `bandwidth_sigma`); each round its compute
time is multiplied by a lognormal jitter (`jitter_sigma`), and a selected client answers with probability
`availability`. A trace file (one row per client) replaces the drawn values with real ones. All of it is
seeded by the run's seed and hidden from the schedulers: they see the tier prior and, once a client has
reported, the server's running estimate from its telemetry (`Telemetry`), the same for every scheduler.

Trace file (`federation.client_trace`, CSV or JSON lines, at most 16 MiB), one row for every client id:
    cid, compute_factor, uplink_mbps, downlink_mbps, availability
Any column but `cid` may be left out (or empty) to keep the tier's value for it; a client without a row, or
an id that is not a client, is refused. A FedScale trace maps
onto it as: compute_factor = fastest `computation` / this client's `computation` (FedScale gives
inference ms per sample), uplink_mbps = downlink_mbps = `communication` / 1000 (kbit/s, symmetric),
availability = total active time / `finish_time` of the client_behave_trace entry.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

TRACE_COLUMNS = ("compute_factor", "uplink_mbps", "downlink_mbps", "availability")


class TraceError(ValueError):
    """A client trace file that cannot be used; the message names the file and the row or column."""


@dataclass(frozen=True)
class Hardware:
    """The hidden truth about every client (index = client id)."""

    compute_factor: np.ndarray
    uplink_mbps: np.ndarray  # NaN: communication not simulated
    downlink_mbps: np.ndarray
    availability: np.ndarray  # probability of answering when selected
    jitter_sigma: np.ndarray  # per-round lognormal sigma of compute time

    def __len__(self) -> int:
        return int(self.compute_factor.size)


def _lognormal(rng: np.random.Generator, sigma: np.ndarray) -> np.ndarray:
    """Multiplicative deviations with median 1 (sigma 0: exactly 1)."""
    return np.exp(sigma * rng.standard_normal(sigma.size))


def tier_arrays(cfg: Any, tier_of: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-client copies of the tier figures (the prior every scheduler sees): one value per tier, spread to the
    clients by their tier's index (a million clients cost one integer array, not a million Python lookups)."""
    names = list(cfg.tiers)
    index = {name: i for i, name in enumerate(names)}
    codes = np.fromiter((index[t] for t in tier_of), dtype=np.intp, count=len(tier_of))

    def column(get) -> np.ndarray:
        values = [get(cfg.tiers[name]) for name in names]
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)[codes]

    return {
        "compute_factor": column(lambda t: t.compute_factor),
        "uplink_mbps": column(lambda t: t.uplink),
        "downlink_mbps": column(lambda t: t.downlink),
        "availability": column(lambda t: t.availability),
        "speed_sigma": column(lambda t: t.speed_sigma),
        "bandwidth_sigma": column(lambda t: t.bandwidth_sigma),
        "jitter_sigma": column(lambda t: t.jitter_sigma),
    }


def draw_hardware(cfg: Any, tier_of: Sequence[str], trace: Optional[dict[str, np.ndarray]] = None) -> Hardware:
    """Every client's hardware for this run: tier figures x seeded lognormal deviations, then the trace."""
    prior = tier_arrays(cfg, tier_of)
    rng = np.random.default_rng([int(cfg.seed), 4099])  # its own stream: selection and training are unaffected
    speed = _lognormal(rng, prior["speed_sigma"])
    band = _lognormal(rng, prior["bandwidth_sigma"])
    values = {
        "compute_factor": prior["compute_factor"] * speed,
        "uplink_mbps": prior["uplink_mbps"] * band,
        "downlink_mbps": prior["downlink_mbps"] * band,
        "availability": prior["availability"].copy(),
    }
    for name, column in (trace or {}).items():
        given = ~np.isnan(column)
        values[name] = np.where(given, column, values[name])
    return Hardware(jitter_sigma=prior["jitter_sigma"], **values)


def round_conditions(hw: Hardware, seed: int, round_idx: int, cids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(compute-time multiplier, answers?) of the selected clients in one round, seeded by (seed, round)
    alone so they do not depend on which scheduler ran or in which order clients trained."""
    rng = np.random.default_rng([int(seed), int(round_idx), 6151])
    n_all = len(hw)
    jitter = _lognormal(rng, hw.jitter_sigma)[cids]
    answers = (rng.random(n_all) < hw.availability)[cids]
    return jitter, answers


MAX_TRACE_BYTES = 16 * 2**20  # a row per client is some 60 bytes: 16 MiB holds over 250,000 clients


def read_trace(path: str | Path, num_clients: int) -> dict[str, np.ndarray]:
    """A client trace file as one array per column (NaN where the file leaves the tier's value).

    The file lists every client of the tiers (cid 0..num_clients-1) exactly once; each value is a finite number
    in its range (compute factor and bandwidths positive, availability in (0, 1]). A file over 16 MiB, one that
    is not UTF-8 text, a row that does not parse, an unknown column or client id, a client listed twice or not
    at all is one TraceError naming the file and, where there is one, the line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_TRACE_BYTES:
            raise TraceError(
                f"{path}: {size:,} bytes; a client trace is at most {MAX_TRACE_BYTES // 2**20} MiB (one short row "
                "per client): is this the right file?"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise TraceError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise TraceError(f"{path}: line {line}: binary data (a NUL byte); a trace is CSV or JSON-lines text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TraceError(
            f"{path}: line {line}: not UTF-8 text ({exc.reason}); a trace is CSV or JSON-lines text"
        ) from None
    rows = _json_rows(path, text) if path.suffix.lower() in (".jsonl", ".json") else _csv_rows(path, text)
    if not rows:
        raise TraceError(f"{path}: no client rows")
    out = {name: np.full(num_clients, np.nan) for name in TRACE_COLUMNS}
    seen: dict[int, int] = {}
    for line, row in rows:
        where = f"{path}: line {line}"
        unknown = sorted(k for k in row if k not in ("cid", *TRACE_COLUMNS))
        if unknown:
            raise TraceError(f"{where}: unknown column(s) {unknown}; known: cid, {', '.join(TRACE_COLUMNS)}")
        cid = _cid(row.get("cid"))
        if cid is None:
            raise TraceError(f"{where}: needs an integer cid, got {_show(row.get('cid'))}")
        if not 0 <= cid < num_clients:
            raise TraceError(f"{where}: cid {cid} is not a client of this run (0..{num_clients - 1})")
        if cid in seen:
            raise TraceError(f"{where}: cid {cid} appears twice (first on line {seen[cid]})")
        seen[cid] = line
        for name in TRACE_COLUMNS:
            raw = row.get(name)
            if raw is None or raw == "":
                continue
            value = _number(raw)
            if value is None:
                raise TraceError(f"{where}: {name} {_show(raw)} is not a number")
            ok = math.isfinite(value) and (0 < value <= 1 if name == "availability" else value > 0)
            if not ok:
                bound = "in (0, 1]" if name == "availability" else "a positive finite number"
                raise TraceError(f"{where}: {name} must be {bound}, got {_show(raw)}")
            out[name][cid] = value
    if len(seen) < num_clients:
        missing = [c for c in range(num_clients) if c not in seen]
        shown = ", ".join(map(str, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise TraceError(
            f"{path}: no row for client(s) {shown}; a trace lists every client of the tiers (cid 0..{num_clients - 1}) "
            "exactly once (leave a column empty to keep the tier's value)"
        )
    return out


def _json_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise TraceError(f"{path}: line {i}: not JSON ({getattr(exc, 'msg', exc)})") from None
            if not isinstance(row, dict):
                raise TraceError(f"{path}: line {i}: expected an object with cid, compute_factor, ...")
            rows.append((i, row))
    return rows


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(text))
    rows = []
    try:
        header = next(reader, None)
        if header is None:
            return rows
        header = [h.strip() for h in header]
        if len(set(header)) != len(header):
            raise TraceError(f"{path}: line 1: a column name appears twice in the header {header}")
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise TraceError(
                    f"{path}: line {reader.line_num}: {len(fields)} fields, the header names {len(header)}"
                )
            rows.append((reader.line_num, {h: f.strip() for h, f in zip(header, fields)}))
    except csv.Error as exc:
        raise TraceError(f"{path}: line {reader.line_num}: not CSV ({exc})") from None
    return rows


def _cid(raw: Any) -> Optional[int]:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit() and raw.strip().isascii():
        return int(raw.strip())
    return None


def _number(raw: Any) -> Optional[float]:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return None
    try:
        return float(raw)
    except (ValueError, OverflowError):
        return None


def _show(raw: Any) -> str:
    text = " ".join(repr(raw).split())
    return text if len(text) <= 40 else text[:37] + "..."


class Telemetry:
    """What the server has learnt about each client from its reports: EMAs of its effective compute factor
    and bandwidths. Every scheduler gets its predictions from here (the tier prior until a client has
    reported), so no scheduler knows more than another."""

    def __init__(self, weight: float = 0.5):
        self.weight = float(weight)
        self.compute_factor = np.full(0, np.nan)
        self.uplink_mbps = np.full(0, np.nan)
        self.downlink_mbps = np.full(0, np.nan)

    def _grow(self, n: int) -> None:
        if n > self.compute_factor.size:
            pad = np.full(n - self.compute_factor.size, np.nan)
            self.compute_factor = np.concatenate([self.compute_factor, pad])
            self.uplink_mbps = np.concatenate([self.uplink_mbps, pad])
            self.downlink_mbps = np.concatenate([self.downlink_mbps, pad])

    def observe(
        self, cids: np.ndarray, compute_factor: np.ndarray, uplink_mbps: np.ndarray, downlink_mbps: np.ndarray
    ) -> None:
        """Fold in one round's observations (NaN: nothing observed for that client and quantity)."""
        cids = np.asarray(cids, dtype=np.int64)
        if cids.size == 0:
            return
        self._grow(int(cids.max()) + 1)
        for store, new in (
            (self.compute_factor, compute_factor),
            (self.uplink_mbps, uplink_mbps),
            (self.downlink_mbps, downlink_mbps),
        ):
            new = np.asarray(new, dtype=np.float64)
            old = store[cids]
            blended = np.where(np.isnan(old), new, (1 - self.weight) * old + self.weight * new)
            store[cids] = np.where(np.isnan(new), old, blended)

    def estimate(self, cids: np.ndarray, prior: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per selected client: the telemetry estimate where there is one, else the tier prior."""
        cids = np.asarray(cids, dtype=np.int64)
        self._grow(int(cids.max()) + 1 if cids.size else 0)
        return {
            name: np.where(np.isnan(getattr(self, name)[cids]), prior[name][cids], getattr(self, name)[cids])
            for name in ("compute_factor", "uplink_mbps", "downlink_mbps")
        }

    def state_dict(self) -> dict[str, list]:
        return {
            "weight": self.weight,
            "compute_factor": self.compute_factor.tolist(),
            "uplink_mbps": self.uplink_mbps.tolist(),
            "downlink_mbps": self.downlink_mbps.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weight = float(state["weight"])
        for name in ("compute_factor", "uplink_mbps", "downlink_mbps"):
            setattr(self, name, np.array([np.nan if v is None else v for v in state[name]], dtype=np.float64))
