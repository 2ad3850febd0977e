"""`flower-supernode` with shorter waits: `python -m fedranklite.backends.flower.supernode <flower-supernode args>`.

flwr 1.42's SuperNode loop (flwr/supernode/start_client_internal.py) sleeps a hard-coded 3 s after every
pull from the SuperLink that found no message, and polls its own state every 0.5 s for the ClientApp's reply.
Between rounds every node is idle, so a round's first message waits 1.5 s on average (up to 3 s) before its
node even sees it, and every message waits up to 0.5 s more before its reply leaves: at a few seconds of
training per round that is most of a deployment's overhead over the simulation. This entry point runs the
same `flower-supernode` with those two waits shortened (IDLE_PULL_SECONDS, REPLY_POLL_SECONDS). It replaces
only that module's `time` reference, and only on the flwr version it was written against; on any other it
runs Flower unchanged and says so.
"""

from __future__ import annotations

import sys
import time as _time
import types

IDLE_PULL_SECONDS = 0.3  # instead of 3 s: one small HTTPS pull per node this often while idle
REPLY_POLL_SECONDS = 0.05  # instead of 0.5 s: a check of the node's in-process state
PATCHED_FOR = "1.42."


def _sleep(seconds: float) -> None:
    _time.sleep(IDLE_PULL_SECONDS if seconds >= 3 else min(seconds, REPLY_POLL_SECONDS))


def patch() -> bool:
    """Shorten the SuperNode loop's waits; return whether it was patched."""
    import flwr.supernode.start_client_internal as loop
    from flwr.supercore.version import package_version

    if not str(package_version).startswith(PATCHED_FOR) or not isinstance(
        getattr(loop, "time", None), types.ModuleType
    ):
        print(f"fedranklite: flwr {package_version}: SuperNode waits left as they are", file=sys.stderr)
        return False
    shim = types.ModuleType("time")
    shim.__dict__.update(_time.__dict__)
    shim.sleep = _sleep
    loop.time = shim
    return True


def main() -> None:
    patch()
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
