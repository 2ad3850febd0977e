"""Typed records of a run: what a client reported in a round, the round record, and the run summary.

Each has one serializer per on-disk shape. A round's clients are held as columns (one array per field,
cheap for 10,000 clients a round) and written either as a list of per-client objects
(`metrics.client_records: full`, with a `ranks` map) or as those columns (`columns`). `from_json` reads
both shapes, so every reader (summary, plots, trackers, compare, calibrate, report) sees one type.

metrics.json and every rounds.jsonl line carry `schema_version` (SCHEMA_VERSION when written). Readers take
a file without the key as version 1 and refuse one newer than they know (SchemaVersionError).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Optional, Sequence

import numpy as np

CLIENT_STATUSES = ("accepted", "partial", "dropped", "rejected", "lost")

# The format of metrics.json and rounds.jsonl lines. Raise it when a reader of the old format would misread
# the new one (a field renamed, removed or given another meaning); adding a field does not need it.
SCHEMA_VERSION = 2
UNVERSIONED = 1  # what a file without `schema_version` is: written before the key existed


class SchemaVersionError(ValueError):
    """A results file written by a newer FedRankLite than this one (its format may mean other things)."""


def schema_version(data: dict[str, Any]) -> int:
    """The format version of a metrics.json object or a rounds.jsonl line; refuses one newer than SCHEMA_VERSION."""
    version = data.get("schema_version", UNVERSIONED)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"schema_version {version!r} is not a positive integer")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"schema_version {version} is newer than this FedRankLite reads ({SCHEMA_VERSION}); upgrade fedranklite"
        )
    return version


@dataclass
class ClientReport:
    """One client in one round: the work it did, what it cost, and what became of its update."""

    cid: int
    tier: str
    rank: int
    status: str  # one of CLIENT_STATUSES
    straggler: bool  # did not finish its work within the deadline
    steps: int
    planned_steps: int
    samples: int
    loss_before: Optional[float]
    loss_after: Optional[float]
    loss_drop: Optional[float]
    throughput: Optional[float]  # training samples per wall second on this machine
    sim_throughput: Optional[float]  # training samples per simulated compute second on the client's tier
    wall_seconds: float
    sim_seconds: float
    bytes_down: int
    bytes_up: int
    peak_memory_mb: float
    reject_reason: Optional[str] = None
    lost: Optional[str] = None  # why a remote client never answered (timeout, dead node); None: it answered
    loss_rms: Optional[float] = None  # root mean square of its training-batch losses (absent in older records)


CLIENT_FIELDS = tuple(f.name for f in fields(ClientReport))
_INT_FIELDS = {"cid", "rank", "steps", "planned_steps", "samples", "bytes_down", "bytes_up"}
_OPTIONAL = {"reject_reason", "lost", "loss_rms"}


class ClientTable:
    """The clients of one round as columns: `table.rank` is an array with one entry per client."""

    def __init__(self, columns: dict[str, Any]):
        missing = [k for k in CLIENT_FIELDS if k not in columns and k not in _OPTIONAL]
        if missing:
            raise ValueError(f"client columns missing: {missing}")
        n = len(columns["cid"])
        uneven = sorted(k for k in CLIENT_FIELDS if k in columns and len(columns[k]) != n)
        if uneven:
            raise ValueError(f"client columns {uneven} do not have one entry per client ({n})")
        self.columns = {k: _as_column(columns.get(k, [None] * n), k) for k in CLIENT_FIELDS}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClientTable) or len(other) != len(self):
            return False
        return all(_same(self.columns[k], other.columns[k]) for k in CLIENT_FIELDS)

    @classmethod
    def from_reports(cls, reports: Sequence[ClientReport]) -> "ClientTable":
        return cls({k: [getattr(r, k) for r in reports] for k in CLIENT_FIELDS})

    def __len__(self) -> int:
        return len(self.columns["cid"])

    def __getattr__(self, name: str) -> Any:
        columns = self.__dict__.get("columns", {})
        if name in columns:
            return columns[name]
        raise AttributeError(name)

    def rows(self) -> list[ClientReport]:
        return list(self)

    def __iter__(self) -> Iterator[ClientReport]:
        cols = self.columns
        for i in range(len(self)):
            yield ClientReport(**{k: _plain(cols[k][i]) for k in CLIENT_FIELDS})

    def floats(self, name: str) -> np.ndarray:
        """A column as float64 with missing values as NaN."""
        return np.array([np.nan if v is None else v for v in self.columns[name]], dtype=np.float64)


def _as_column(values: Any, name: str) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values
    values = list(values)
    if name in _INT_FIELDS:
        return np.asarray(values, dtype=np.int64)
    if name == "straggler":
        return np.asarray(values, dtype=bool)
    if all(v is None or isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values) and any(
        v is not None for v in values
    ):
        return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.asarray(values, dtype=object)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return [_plain(x) for x in a] == [_plain(x) for x in b]


def _plain(value: Any) -> Any:
    """numpy scalars -> Python values, NaN -> None (missing)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@dataclass
class RoundRecord:
    """One line of rounds.jsonl."""

    round: int
    selected: list[int]  # every selected client, including those whose memory fits no rank
    clients: ClientTable  # the clients that ran
    out_of_memory: list[int]
    rejected: dict[str, str]  # cid -> why its update was rejected
    stragglers: list[int]
    compliant: bool  # no selected client missed the deadline
    round_sim_seconds: float
    sim_time: float  # cumulative simulated seconds at the end of the round
    fairness: dict[str, Optional[float]]  # percentiles of the clients' loss before training
    eval: Optional[dict]  # the evaluation of this round (None: not evaluated)
    score: Optional[float]
    bytes_up: int
    bytes_down: int
    wall_seconds: float
    scheduler_notes: list[str] = field(default_factory=list)
    rank_energy: Optional[dict] = None  # per LoRA module group: energy of each rank block, effective ranks

    @property
    def ranks(self) -> dict[int, int]:
        return {int(c): int(r) for c, r in zip(self.clients.cid, self.clients.rank)}

    def to_json(self, layout: str = "full") -> dict[str, Any]:
        """The record as JSON-ready data (numpy arrays are converted by results_io.json_ready).
        layout full: `clients` is a list of objects plus a `ranks` map; columns: `client_columns`."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "round": self.round, "selected": list(self.selected)}
        if layout == "full":
            rows = []
            for report in self.clients:
                row = dataclasses.asdict(report)
                for optional in ("lost", "loss_rms"):  # absent rather than null: older records round-trip
                    if row[optional] is None:
                        del row[optional]
                rows.append(row)
            out["ranks"] = {str(c): r for c, r in self.ranks.items()}
            out["clients"] = rows
        elif layout == "columns":
            out["client_columns"] = dict(self.clients.columns)
        else:
            raise ValueError(f"unknown client record layout {layout!r}; known: ['columns', 'full']")
        for f in fields(self):
            if f.name not in ("round", "selected", "clients"):
                out[f.name] = getattr(self, f.name)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RoundRecord":
        schema_version(data)
        if "client_columns" in data:
            table = ClientTable(data["client_columns"])
        else:
            rows = data.get("clients", [])
            missing = sorted({k for row in rows for k in CLIENT_FIELDS if k not in row and k not in _OPTIONAL})
            if missing:
                raise ValueError(f"client rows missing: {missing}")
            table = ClientTable({k: [row.get(k) for row in rows] for k in CLIENT_FIELDS})
        known = {f.name for f in fields(cls)} - {"clients"}
        return cls(clients=table, **{k: v for k, v in data.items() if k in known})


@dataclass
class TimeToTarget:
    round: Optional[int] = None  # first round whose evaluation reached the target (None: never)
    sim_seconds: Optional[float] = None  # cumulative simulated seconds at the end of that round


@dataclass
class RunSummary:
    """metrics.json: computed from the round records alone (summary.summarize), plus what the run was."""

    rounds_completed: int
    metric: str
    higher_is_better: bool
    target: Optional[float]
    final_score: Optional[float]
    best_score: Optional[float]
    time_to_target: TimeToTarget
    sim_time_total: float
    wall_time_total: float
    deadline_compliance_pct: Optional[float]  # rounds in which no selected client missed the deadline
    client_compliance_pct: Optional[float]  # client-rounds that met the deadline
    stragglers_total: int
    fairness_final: Optional[dict]
    fairness_mean: dict
    bytes: dict  # up_total, down_total, *_per_client_per_round, per_client
    peak_memory_mb: dict[str, float]
    rounds: list[dict]  # a short line per round
    run: dict[str, Any] = field(default_factory=dict)  # experiment_name, scheduler, backbone, budget, ...

    def to_json(self) -> dict[str, Any]:
        body = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "run"}
        body["time_to_target"] = dataclasses.asdict(self.time_to_target)
        run = {k: v for k, v in self.run.items() if k != "schema_version"}
        return {"schema_version": SCHEMA_VERSION, **run, **body}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunSummary":
        schema_version(data)
        names = {f.name for f in fields(cls)} - {"run"}
        missing = sorted(n for n in names if n not in data and n != "client_compliance_pct")
        if missing:
            raise ValueError(f"not a FedRankLite run summary: missing {', '.join(missing)}")
        values = {k: data.get(k) for k in names}
        values["time_to_target"] = TimeToTarget(**(data["time_to_target"] or {}))
        run = {k: v for k, v in data.items() if k not in names and k != "schema_version"}
        return cls(run=run, **values)
