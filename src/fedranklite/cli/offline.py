"""Never wait on the network for what lives on this machine.

The modules that load models and data (and so import huggingface_hub, transformers, datasets) are imported
inside the commands, after `offline_when_local` has set HF_HUB_OFFLINE / HF_DATASETS_OFFLINE: those
libraries read the variables once, at import.
"""

from __future__ import annotations

import os
from pathlib import Path


def offline_defaults() -> None:
    # The quick start must work without a network: never wait on the hub unless the user asks for it.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def offline_when_local(cfg) -> None:
    """Nothing of this run lives on the Hub: tell the HF libraries so (set before they are imported),
    so a machine without network never waits on a connection attempt."""
    name = cfg.model.name
    if name.startswith(("bundled:", "tiny:")) or Path(name).expanduser().exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    local_glue = False
    if cfg.data.source == "glue":
        from fedranklite.data.glue import resolve_data_dir

        local_glue = resolve_data_dir(cfg.data.data_dir) is not None  # else the hub fallback needs the network
    if cfg.data.source in ("embedded", "files") or local_glue:
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
