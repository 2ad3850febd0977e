"""A corpus of bad checkpoints and results folders (issue 15, items 1 and 2): each case is made from a copy of a
finished run's results folder, then `fedranklite run` (with or without --resume) must exit 2 with exactly one
line on stderr that names the key or file, load no model where the problem is known before (everything but the
adapter checks), run nothing from the file, and leave every file that was there before as it was."""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch
import yaml
from conftest import tiny_tree

from fedranklite.cli import main as cli
from fedranklite.run import folder_lock
from fedranklite.run.checkpoint import CHECKPOINT_NAME, digest

NAME = "tiny"
CK = CHECKPOINT_NAME
_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16"}
_DTYPES.update({torch.uint8: "U8", torch.int64: "I64", torch.int32: "I32"})


def safetensors_bytes(tensors: dict, metadata) -> bytes:
    """A safetensors file written by hand, so a test can put anything in its header (non-string metadata too)."""
    header, blobs, at = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        data = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [at, at + len(data)]}
        blobs.append(data)
        at += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


@dataclass
class Ctx:
    tmp: Path

    @property
    def results(self) -> Path:
        return self.tmp / "results"

    @property
    def folder(self) -> Path:
        return self.results / NAME

    @property
    def ckpt(self) -> Path:
        return self.folder / CK

    def config(self, **sections) -> Path:
        """The finished run's config (output_dir: this copy), with `sections` merged in."""
        path = self.tmp / "tiny.yaml"
        if isinstance(sections.get("output_dir"), str):
            sections["output_dir"] = sections["output_dir"].format(tmp=self.tmp)
        path.write_text(yaml.safe_dump(tiny_tree(self.tmp, federation={"num_rounds": 1}, **sections)))
        return path

    def raw(self) -> dict:
        """The checkpoint's parts: format, format_version, sha256, meta (the metadata), global_state, rng_torch."""
        from safetensors import safe_open

        with safe_open(self.ckpt, "pt") as f:
            raw = dict(f.metadata())
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        raw["rng_torch"] = tensors.pop("rng_torch")
        raw["global_state"] = {k.split("/", 1)[1]: v for k, v in tensors.items()}
        return raw

    def save(self, raw, reseal: bool = True) -> None:
        """Write `raw` (see `raw`) as the checkpoint; `reseal`: with a correct checksum, as an attacker (or a bug)
        would. Parts left out of `raw` are left out of the file."""
        if reseal and isinstance(raw.get("meta"), str):
            try:
                raw["sha256"] = digest(raw["meta"], raw["global_state"], raw["rng_torch"])
            except (KeyError, AttributeError, TypeError):
                pass  # a payload too broken to seal: the load refuses it before the checksum
        tensors = {f"global_state/{k}": v for k, v in raw.get("global_state", {}).items()}
        if "rng_torch" in raw:
            tensors["rng_torch"] = raw["rng_torch"]
        tensors.update(raw.get("extra_tensors", {}))
        metadata = {k: raw[k] for k in ("format", "format_version", "sha256", "meta") if k in raw}
        self.ckpt.unlink()
        self.ckpt.write_bytes(safetensors_bytes(tensors, metadata))

    def edit_meta(self, change: Callable[[dict], None]) -> None:
        raw = self.raw()
        meta = json.loads(raw["meta"])
        change(meta)
        raw["meta"] = json.dumps(meta)
        self.save(raw)

    def edit_adapter(self, change: Callable[[dict], None]) -> None:
        raw = self.raw()
        change(raw["global_state"])
        self.save(raw)


class RunsCode:
    """A pickled object that would create MARKER if it were ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def first_key(state: dict) -> str:
    return sorted(state)[0]


def _nan(state):
    state[first_key(state)][0, 0] = float("nan")


def _wrong_shape(state):
    k = first_key(state)
    state[k] = torch.zeros(state[k].shape[0] + 1, state[k].shape[1])


def _wrong_dtype(state):
    k = first_key(state)
    state[k] = state[k].double()


def _extra_key(state):
    state["backbone.injected.weight"] = torch.zeros(2, 2)


def _missing_adapter_key(state):
    del state[first_key(state)]


def _flip_tensor_bytes(ctx: Ctx) -> None:
    """Flip one byte inside the stored bytes of an adapter tensor (no re-sealing)."""
    raw = ctx.raw()
    tensor = raw["global_state"][first_key(raw["global_state"])]
    data = bytearray(ctx.ckpt.read_bytes())
    at = bytes(data).find(tensor.contiguous().numpy().tobytes()[:64])
    assert at > 0
    data[at + 5] ^= 0xFF
    ctx.ckpt.write_bytes(bytes(data))


def _many_config_changes(meta: dict) -> None:
    for k in range(12):
        meta["config"][f"zz_extra_{k:02d}"] = k


def _legacy_only(ctx: Ctx) -> None:
    """The folder of an earlier version: checkpoint.pt (torch.save, pickle-based) and no safetensors checkpoint."""
    import numpy as np

    ctx.ckpt.unlink()
    torch.save(
        {"format_version": 2, "round_idx": 1, "rng": {"numpy": np.random.get_state()}}, ctx.folder / "checkpoint.pt"
    )


def _header_offsets_wrong(ctx: Ctx) -> None:
    data = bytearray(ctx.ckpt.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"][1] += 4  # overlaps the next tensor: safetensors refuses it
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    ctx.ckpt.write_bytes(len(text).to_bytes(8, "little") + text + bytes(data[8 + n :]))


def _keep_only(*names: str) -> Callable[[Ctx], None]:
    def make(ctx: Ctx) -> None:
        for p in list(ctx.folder.iterdir()):
            if p.name not in names and p.name != "config.yaml":
                p.unlink()

    return make


@dataclass
class Case:
    id: str
    make: Callable[[Ctx], None]
    expect: str  # in the one line
    resume: bool = True
    args: list = field(default_factory=list)
    loads_model: bool = False  # the adapter checks need the model's adapter; everything else is refused before
    config: dict = field(default_factory=dict)  # sections merged into the run's config
    absent: Optional[str] = None  # a path (relative to the case's folder) that must not be created


def _write(rel: str, data: bytes) -> Callable[[Ctx], None]:
    def make(ctx: Ctx) -> None:
        (ctx.folder / rel).unlink(missing_ok=True)
        (ctx.folder / rel).write_bytes(data)

    return make


CASES = [
    # ---- item 1: checkpoints given to --resume
    Case("ckpt_missing", lambda c: c.ckpt.unlink(), "no checkpoint at"),
    Case("ckpt_is_a_folder", lambda c: (c.ckpt.unlink(), c.ckpt.mkdir()), f"{CK}: not a file"),
    Case("ckpt_is_dev_zero", lambda c: (c.ckpt.unlink(), c.ckpt.symlink_to("/dev/zero")), "not a file"),
    Case("ckpt_dangling_symlink", lambda c: (c.ckpt.unlink(), c.ckpt.symlink_to(c.tmp / "gone")), "not a file"),
    Case("ckpt_empty", _write(CK, b""), f"{CK}: unreadable checkpoint: 0 bytes"),
    Case(
        "ckpt_truncated",
        lambda c: c.ckpt.write_bytes(c.ckpt.read_bytes()[: c.ckpt.stat().st_size // 2]),
        f"{CK}: unreadable checkpoint",
    ),
    Case(
        "ckpt_truncated_in_the_tensors",
        lambda c: c.ckpt.write_bytes(c.ckpt.read_bytes()[:-7]),
        f"{CK}: unreadable checkpoint, damaged",
    ),
    Case("ckpt_random_bytes", _write(CK, random.Random(0).randbytes(4096)), f"{CK}: not a FedRankLite checkpoint"),
    Case("ckpt_text", _write(CK, b"round_idx: 3\n"), f"{CK}:"),
    Case(
        "ckpt_bare_pickle_runs_code",
        lambda c: c.ckpt.write_bytes(pickle.dumps({"format_version": 2, "x": RunsCode(c.tmp / "MARKER")}, protocol=2)),
        "a torch/pickle file, which is never loaded",
    ),
    Case(
        "ckpt_bare_pickle_runs_code_protocol_5",
        lambda c: c.ckpt.write_bytes(pickle.dumps(RunsCode(c.tmp / "MARKER"), protocol=5)),
        "never loaded",
    ),
    Case(
        "ckpt_torch_zip_runs_code",
        lambda c: (c.ckpt.unlink(), torch.save({"meta": RunsCode(c.tmp / "MARKER")}, c.ckpt)),
        "never loaded",
    ),
    Case("ckpt_legacy_pickle_format", _legacy_only, "checkpoint.pt: a checkpoint of an earlier FedRankLite version"),
    Case(
        "ckpt_legacy_says_rerun",
        _legacy_only,
        "rerun the experiment from the start with --overwrite",
    ),
    Case("ckpt_no_metadata", lambda c: c.ckpt.write_bytes(safetensors_bytes({}, None)), "without its metadata"),
    Case(
        "ckpt_other_safetensors",
        lambda c: c.ckpt.write_bytes(safetensors_bytes({"w": torch.zeros(2)}, {"format": "pt"})),
        "without its metadata",
    ),
    Case("ckpt_format_99", lambda c: c.save({**c.raw(), "format_version": "99"}), "checkpoint format '99' is not 3"),
    Case(
        "ckpt_no_format_version",
        lambda c: c.save({k: v for k, v in c.raw().items() if k != "format_version"}),
        "checkpoint format None",
    ),
    Case(
        "ckpt_no_checksum",
        lambda c: c.save({k: v for k, v in c.raw().items() if k != "sha256"}, reseal=False),
        "missing key 'sha256'",
    ),
    Case("ckpt_no_meta", lambda c: c.save({k: v for k, v in c.raw().items() if k != "meta"}), "missing key 'meta'"),
    Case("ckpt_meta_not_a_string", lambda c: c.save({**c.raw(), "meta": 3}), "metadata 'meta' is not a string"),
    Case("ckpt_meta_not_json", lambda c: c.save({**c.raw(), "meta": "{not json"}), "meta is not JSON"),
    Case("ckpt_meta_a_list", lambda c: c.save({**c.raw(), "meta": "[1, 2]"}), "meta is a list"),
    Case("ckpt_missing_records", lambda c: c.edit_meta(lambda m: m.pop("records")), "missing key 'records'"),
    Case("ckpt_missing_config", lambda c: c.edit_meta(lambda m: m.pop("config")), "missing key 'config'"),
    Case("ckpt_negative_round", lambda c: c.edit_meta(lambda m: m.update(round_idx=-1)), "round_idx -1"),
    Case("ckpt_records_short", lambda c: c.edit_meta(lambda m: m.update(records=[])), "records"),
    Case("ckpt_nan_sim_time", lambda c: c.edit_meta(lambda m: m.update(sim_time=float("nan"))), "sim_time"),
    Case("ckpt_bad_numpy_rng", lambda c: c.edit_meta(lambda m: m["rng"]["numpy"].update(keys=[1])), "rng.numpy"),
    Case("ckpt_scheduler_a_list", lambda c: c.edit_meta(lambda m: m.update(scheduler=[1])), "scheduler is a list"),
    Case(
        "ckpt_fingerprints_a_list",
        lambda c: c.edit_meta(lambda m: m.update(fingerprints=[1])),
        "fingerprints is not an object",
    ),
    Case(
        "ckpt_broken_record",
        lambda c: c.edit_meta(lambda m: m.update(records=[{"round": 1}])),
        "round records or plugin states cannot be restored",
        loads_model=True,
    ),
    Case("ckpt_rng_not_bytes", lambda c: c.save({**c.raw(), "rng_torch": torch.zeros(3)}), "rng_torch"),
    Case(
        "ckpt_no_rng_tensor",
        lambda c: c.save({k: v for k, v in c.raw().items() if k != "rng_torch"}, reseal=False),
        "missing tensor 'rng_torch'",
    ),
    Case(
        "ckpt_foreign_tensor",
        lambda c: c.save({**c.raw(), "extra_tensors": {"backbone.weight": torch.zeros(2)}}),
        "unexpected tensor 'backbone.weight'",
    ),
    Case("ckpt_header_offsets_wrong", _header_offsets_wrong, "unreadable checkpoint, damaged"),
    Case("ckpt_flipped_tensor_bytes", _flip_tensor_bytes, "checksum mismatch"),
    Case(
        "ckpt_changed_tensor_not_resealed",
        lambda c: c.save({**c.raw(), "global_state": {k: v + 1 for k, v in c.raw()["global_state"].items()}}, False),
        "checksum mismatch",
    ),
    Case(
        "ckpt_changed_meta_not_resealed",
        lambda c: c.save({**c.raw(), "meta": c.raw()["meta"] + " "}, False),
        "checksum",
    ),
    Case("ckpt_nan_adapter", lambda c: c.edit_adapter(_nan), "holds NaN or infinite values", loads_model=True),
    Case("ckpt_wrong_shape", lambda c: c.edit_adapter(_wrong_shape), "has shape [9, 32]", loads_model=True),
    Case("ckpt_wrong_dtype", lambda c: c.edit_adapter(_wrong_dtype), "is torch.float64", loads_model=True),
    Case(
        "ckpt_extra_adapter_key", lambda c: c.edit_adapter(_extra_key), "unexpected backbone.injected", loads_model=True
    ),
    Case(
        "ckpt_missing_adapter_key", lambda c: c.edit_adapter(_missing_adapter_key), "missing backbone", loads_model=True
    ),
    Case(
        "ckpt_other_package_version",
        lambda c: c.edit_meta(lambda m: m["fingerprints"].update(package="0.0.1")),
        "changed since the checkpoint: package (0.0.1 -> ",
        loads_model=True,
    ),
    Case(
        "ckpt_other_data",
        lambda c: c.edit_meta(lambda m: m["fingerprints"]["data"].update(rows="1 rows, sha256 0")),
        "--allow-changed data",
        loads_model=True,
    ),
    Case("resume_other_config", lambda c: None, "(differing: training.lr)", args=["--set", "training.lr=0.5"]),
    Case("resume_other_seed_file", lambda c: None, "(differing: seed)", config={"seed": 3}),
    Case("resume_many_differences", lambda c: c.edit_meta(_many_config_changes), "zz_extra_09 and 2 more);"),
    # ---- item 2: fresh runs into results folders
    Case("fresh_into_finished_run", lambda c: None, "already holds the results", resume=False),
    Case("fresh_names_the_flags", lambda c: None, "--overwrite replaces it, --new-folder writes to", resume=False),
    Case("fresh_into_metrics_only", _keep_only("metrics.json"), "(metrics.json)", resume=False),
    Case("fresh_into_rounds_only", _keep_only("rounds.jsonl"), "(rounds.jsonl)", resume=False),
    Case("fresh_into_checkpoint_only", _keep_only(CK), f"({CK})", resume=False),
    Case(
        "fresh_into_a_legacy_checkpoint",
        lambda c: (_legacy_only(c), _keep_only("checkpoint.pt")(c)),
        "(checkpoint.pt)",
        resume=False,
    ),
    Case(
        "fresh_into_a_finished_sweep_run",
        lambda c: (
            (c.folder / "sweep_run.log").write_text("== sweep: start\n"),
            (c.folder / "done.json").write_text("{}"),
        ),
        "already holds the results",
        resume=False,
    ),
    Case(
        "fresh_dangling_checkpoint_link",
        lambda c: (_keep_only()(c), c.ckpt.symlink_to(c.tmp / "gone")),
        f"({CK})",
        resume=False,
    ),
    Case(
        "output_dir_is_a_file",
        lambda c: (c.tmp / "afile").write_text("x"),
        "output_dir: ",
        resume=False,
        config={"output_dir": "{tmp}/afile"},
    ),
    Case(
        "output_dir_below_a_file",
        lambda c: (c.tmp / "afile").write_text("x"),
        "afile is a file, not a folder",
        resume=False,
        config={"output_dir": "{tmp}/afile/deeper"},
    ),
    Case(
        "results_folder_is_a_file",
        lambda c: (c.results / "other").write_text("x"),
        "experiment_name: ",
        resume=False,
        config={"experiment_name": "other"},
    ),
    Case(
        "output_dir_unwritable",
        lambda c: None,
        "output_dir: cannot write the results to /proc/fedranklite-no-such/",
        resume=False,
        config={"output_dir": "/proc/fedranklite-no-such"},
    ),
    Case(
        "name_parent", lambda c: None, "experiment_name", resume=False, config={"experiment_name": "../x"}, absent="x"
    ),
    Case(
        "name_deep_parent",
        lambda c: None,
        "experiment_name",
        resume=False,
        config={"experiment_name": "../../escaped"},
        absent="../escaped",
    ),
    Case(
        "name_dotdot",
        lambda c: None,
        "experiment_name: starts with a dot",
        False,
        config={"experiment_name": ".."},
    ),
    Case("name_absolute", lambda c: None, "path separator", resume=False, config={"experiment_name": "/tmp/abs"}),
    Case("name_subfolder", lambda c: None, "path separator", resume=False, config={"experiment_name": "a/b"}),
    Case("name_backslash", lambda c: None, "path separator", resume=False, config={"experiment_name": "a\\b"}),
    Case("name_empty", lambda c: None, "experiment_name: is empty", resume=False, config={"experiment_name": ""}),
    Case("name_blank", lambda c: None, "experiment_name: is empty", resume=False, config={"experiment_name": "   "}),
    Case("name_hidden", lambda c: None, "starts with a dot", resume=False, config={"experiment_name": ".hidden"}),
    Case("name_nul", lambda c: None, "control character", resume=False, config={"experiment_name": "a\x00b"}),
    Case("name_newline", lambda c: None, "control character", resume=False, config={"experiment_name": "a\nb"}),
    Case(
        "name_too_long",
        lambda c: None,
        "has 101 characters (at most 100)",
        resume=False,
        config={"experiment_name": "n" * 101},
    ),
    Case("name_drive", lambda c: None, "absolute path", resume=False, config={"experiment_name": "C:x"}),
    Case("name_via_set", lambda c: None, "experiment_name", resume=False, args=["--set", "experiment_name=../x"]),
]


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and p.name not in ("tiny.yaml", folder_lock.LOCK_NAME)
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The results folder of a finished one-round run of the tiny model."""
    base = tmp_path_factory.mktemp("finished")
    path = Ctx(base).config()
    root = logging.getLogger()
    handlers = root.handlers[:]
    try:
        assert cli.main(["run", "--config", str(path), "--quiet"]) == 0
    finally:
        root.handlers[:] = handlers
    assert (base / "results" / NAME / CK).is_file()
    return base / "results"


def test_corpus_covers_items_1_and_2():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_checkpoint_or_results_folder_is_one_line(case, finished, tmp_path, capsys, monkeypatch):
    ctx = Ctx(tmp_path)
    shutil.copytree(finished, ctx.results, symlinks=True)
    config = ctx.config(**case.config)
    case.make(ctx)
    before = snapshot(tmp_path)
    if not case.loads_model:
        import fedranklite.model.fedmodel as fedmodel
        import fedranklite.run.engine as engine

        def must_not_load(*_a, **_k):
            raise AssertionError("a model or data was loaded for a problem known before")

        monkeypatch.setattr(engine, "build_engine", must_not_load)
        monkeypatch.setattr(fedmodel, "load_backbone", must_not_load)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # main's basicConfig logs to this test's stderr
    code = cli.main(["run", "--config", str(config), *(["--resume"] if case.resume else []), *case.args])
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    folder_lock.release_all()  # what the process's exit does: a refused run leaves no lock file
    assert not (ctx.folder / folder_lock.LOCK_NAME).exists()
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert case.expect in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "MARKER").exists(), "the checkpoint ran code"
    assert snapshot(tmp_path) == before, "a file that was there before was changed or removed"
    if case.absent:
        assert not (tmp_path / case.absent).exists()


def test_the_message_names_the_file(finished, tmp_path, capsys, monkeypatch):
    """The one line names the checkpoint or results folder (the corpus checks the key; this, the path)."""
    ctx = Ctx(tmp_path)
    shutil.copytree(finished, ctx.results)
    config = ctx.config()
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    ctx.ckpt.write_bytes(b"\x00" * 100)
    assert cli.main(["run", "--config", str(config), "--resume"]) == 2
    assert str(ctx.ckpt) in capsys.readouterr().err
    assert cli.main(["run", "--config", str(config)]) == 2
    assert str(ctx.folder) in capsys.readouterr().err


@pytest.mark.parametrize("seed", range(40))
def test_random_bytes_are_always_named_foreign_whatever_error_the_unpickler_raises(seed, tmp_path):
    # CI once drew os.urandom bytes that made torch's restricted unpickler raise IndexError, and the message
    # then said "damaged" instead of "not a FedRankLite checkpoint"; any byte soup must read the same.
    from fedranklite.run.checkpoint import ResumeError, load_checkpoint

    rng = random.Random(seed)
    path = tmp_path / CK
    blob = rng.randbytes(rng.randint(1, 4096))
    path.write_bytes(blob if not blob.startswith((b"PK\x03\x04", b"\x80")) else b"x" + blob)
    with pytest.raises(ResumeError, match="not a FedRankLite checkpoint"):
        load_checkpoint(path)
