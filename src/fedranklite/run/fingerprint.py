"""Fingerprints of what a run's results depend on beyond its config, so a resume notices what changed.

The config is compared key by key (checkpoint.check_config); the files and versions it names are not in
it. Each checkpoint records, under one key per input:

    data          the rows the run trains and evaluates on (texts and labels, hashed as loaded), and for
                  local files (data.train_file / eval_file, a GLUE folder's train.tsv / dev.tsv) each file's
                  size and SHA-256
    rank_profile  the rank profile file `timing.mode: profile` uses (configured, cached or shipped)
    client_trace  the file `federation.client_trace` names
    backbone      the files of a bundled or local backbone (weights, config, tokenizer): size and SHA-256
    package       the FedRankLite version
    libraries     the versions of torch, transformers, peft and numpy (bit-identical results need them)

Files up to 64 MiB are hashed whole; a larger file (a backbone's weights) by its size, its first and last
MiB and 16 chunks of 64 KiB spread over the rest ("sampled sha256"): a changed weight file of the same
size whose edit falls between the samples goes unnoticed, the price of not reading gigabytes per resume.
The modification time is left out on purpose: a copied results folder or re-installed package still
resumes.

`check_fingerprints` refuses a resume when any input differs, naming it and how, unless the key is in
`allow_changed`; the accepted changes are returned (the engine logs them and keeps them in the summary).
"""

from __future__ import annotations

import hashlib
import logging
from importlib import metadata
from pathlib import Path
from typing import Any, Optional, Sequence

from fedranklite.core.messages import one_line
from fedranklite.run.checkpoint import ResumeError

log = logging.getLogger(__name__)

FINGERPRINT_KEYS = ("data", "rank_profile", "client_trace", "backbone", "package", "libraries")
FULL_HASH_BYTES = 64 * 2**20
EDGE_BYTES, CHUNK_BYTES, CHUNKS = 2**20, 64 * 2**10, 16
MAX_BACKBONE_FILES = 200
LIBRARIES = ("torch", "transformers", "peft", "numpy")


def file_fingerprint(path: str | Path) -> str:
    """'<size> bytes, sha256 <hex>' (or 'sampled sha256' for a file over 64 MiB); 'missing' / 'unreadable'."""
    path = Path(path)
    try:
        size = path.stat().st_size
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            if size <= FULL_HASH_BYTES:
                for block in iter(lambda: fh.read(2**20), b""):
                    h.update(block)
                how = "sha256"
            else:
                h.update(size.to_bytes(8, "little"))
                h.update(fh.read(EDGE_BYTES))
                step = (size - 2 * EDGE_BYTES) // (CHUNKS + 1)
                for k in range(1, CHUNKS + 1):
                    fh.seek(EDGE_BYTES + k * step)
                    h.update(fh.read(CHUNK_BYTES))
                fh.seek(size - EDGE_BYTES)
                h.update(fh.read(EDGE_BYTES))
                how = "sampled sha256"
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    return f"{size} bytes, {how} {h.hexdigest()[:16]}"


def rows_fingerprint(splits: Sequence[Any]) -> str:
    """SHA-256 over the loaded rows of `splits` (TextSplits: texts, labels, label names), with the row counts."""
    h = hashlib.sha256()

    def put(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    counts = []
    for split in splits:
        counts.append(len(split))
        for row in split.texts:
            put(b"\x1e".join(str(t).encode("utf-8", "surrogatepass") for t in row))
        put(str(split.labels.dtype).encode())
        put(split.labels.tobytes())
        put(repr(split.label_names).encode())
    return f"{' + '.join(map(str, counts))} rows, sha256 {h.hexdigest()[:16]}"


def _data_files(cfg: Any) -> dict[str, Path]:
    d = cfg.data
    if d.source == "files":
        files = {"train_file": d.train_file, "eval_file": d.eval_file}
        return {k: Path(v).expanduser() for k, v in files.items() if v}
    if d.source == "glue":
        from fedranklite.data.glue import get_task, resolve_data_dir

        folder = resolve_data_dir(d.data_dir)
        if folder is None:
            return {}
        try:
            task = get_task(d.name)
        except ValueError:
            return {}
        return {f"{task.folder}/{n}.tsv": folder / task.folder / f"{n}.tsv" for n in ("train", "dev")}
    return {}


def _backbone_files(name: str, cache_dir: Optional[str]) -> dict[str, str]:
    if name.startswith("tiny:"):
        return {"source": f"{name} (random weights from the seed)"}
    try:
        if name == "bundled:smollm2-135m":
            from fedranklite.model.backbones import smollm2_gguf_file

            path = smollm2_gguf_file()
            return {path.name: file_fingerprint(path)}
        if name.startswith("bundled:"):
            from fedranklite.model.backbones import bundled_path

            folder = bundled_path(name, cache_dir)
        else:
            folder = Path(name).expanduser()
    except Exception as exc:  # a bundled package that is not installed: the run itself says so
        return {"source": f"{name} (not available: {one_line(str(exc), 80)})"}
    if not folder.exists():
        return {"source": f"{name} (from the Hugging Face hub; files not fingerprinted)"}
    if folder.is_file():
        return {folder.name: file_fingerprint(folder)}
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if len(out) >= MAX_BACKBONE_FILES:
            out["..."] = "more files not fingerprinted"
            break
        out[str(rel)] = file_fingerprint(path)
    return out


def _rank_profile(cfg: Any) -> Optional[str]:
    if getattr(cfg.timing, "mode", None) != "profile":
        return None
    configured = getattr(cfg.timing, "profile", None)
    if configured:
        return file_fingerprint(Path(configured).expanduser())
    from fedranklite.run.rank_profile import find_profile, profile_key

    found = find_profile(profile_key(cfg))
    return "none (measured by the run)" if found is None else file_fingerprint(found)


def _versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def input_fingerprints(cfg: Any, data: Any = None) -> dict[str, Any]:
    """The fingerprint of every input of the run `cfg` describes; `data`: its LoadedData (None: not loaded, as
    for the surrogate backend, which reads no rows)."""
    from fedranklite import __version__

    data_fp: dict[str, str] = {}
    if data is not None:
        data_fp["rows"] = rows_fingerprint([data.train, data.eval])
    for key, path in _data_files(cfg).items():
        data_fp[key] = file_fingerprint(path)
    trace = cfg.federation.client_trace
    return {
        "data": data_fp,
        "rank_profile": _rank_profile(cfg),
        "client_trace": None if not trace else file_fingerprint(Path(trace).expanduser()),
        "backbone": _backbone_files(cfg.model.name, getattr(cfg.model, "cache_dir", None)),
        "package": __version__,
        "libraries": _versions(),
    }


def _show(value: Any) -> str:
    return "none" if value is None else one_line(str(value), 60)


def differences(saved: dict, current: dict) -> dict[str, str]:
    """{key: what changed} for every fingerprint key whose value differs (a key recorded on one side only counts
    as changed)."""
    out = {}
    for key in [*FINGERPRINT_KEYS, *sorted((saved.keys() | current.keys()) - set(FINGERPRINT_KEYS))]:
        a, b = saved.get(key), current.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            parts = [
                f"{k}: {_show(a.get(k))} -> {_show(b.get(k))}"
                for k in sorted(a.keys() | b.keys())
                if a.get(k) != b.get(k)
            ]
            out[key] = "; ".join(parts[:2]) + (f"; and {len(parts) - 2} more" if len(parts) > 2 else "")
        else:
            out[key] = f"{_show(a)} -> {_show(b)}"
    return out


def check_fingerprints(
    path: Path, saved: Optional[dict], current: dict, allow_changed: Sequence[str] = ()
) -> list[str]:
    """Refuse (ResumeError, one line) a resume whose inputs differ from those the checkpoint recorded, unless every
    differing key is in `allow_changed`; returns the accepted changes as 'key (what changed)' strings."""
    unknown = [k for k in allow_changed if k not in FINGERPRINT_KEYS]
    if unknown:
        raise ResumeError(
            f"--allow-changed: unknown input {unknown[0]!r}; the inputs a checkpoint records are "
            f"{', '.join(FINGERPRINT_KEYS)}"
        )
    if saved is None:
        log.warning("%s records no input fingerprints: changed data or backbone files cannot be noticed", path)
        return []
    diff = differences(saved, current)
    refused = [k for k in diff if k not in allow_changed]
    if refused:
        shown = "; ".join(f"{k} ({diff[k]})" for k in refused[:3]) + (
            f"; and {len(refused) - 3} more" if len(refused) > 3 else ""
        )
        raise ResumeError(
            f"{path}: what the results depend on changed since the checkpoint: {shown}; resume with "
            f"--allow-changed {','.join(refused)} to continue on the changed inputs anyway, or start afresh "
            "with --overwrite"
        )
    return [f"{k} ({diff[k]})" for k in diff]
