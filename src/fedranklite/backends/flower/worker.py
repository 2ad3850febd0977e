"""A resident ClientApp worker: one long-lived process per SuperNode that runs every ClientApp task in itself.

A SuperNode started with `--isolation subprocess` has Flower's SuperExec launch a fresh `flwr-clientapp`
process for every message, which pays interpreter start, torch, Flower, transformers + peft imports and the
model build before a step trains. flwr 1.42 has no long-lived `flwr-clientapp` (it handles the one task its
token names, then exits) and its warm executor pools are for Kubernetes only. So a SuperNode here runs with
`--isolation process` (it starts no SuperExec) and this worker takes the SuperExec's place on the node's
Runtime API: it acquires each ClientApp task (`AcquireTask`, the call `flower-superexec` makes) and runs it
in this process with the steps `flwr-clientapp` takes (pull the task input with the task's token, call the
ClientApp, push the reply and the task's status). The ClientApp is this installed project's: a run whose FAB
names another is refused, and no code from a submitted FAB is imported. The model stack is imported once
at start and the ClientApp's resident side (`task.client_side`, keyed by the run's config) stays built
across messages: a message costs one local training, as in Flower's simulation engine.

    python -m fedranklite.backends.flower.worker --runtime-api-address 127.0.0.1:9310 --insecure \\
        [--superexec-auth-secret-file FILE] [--parent-pid PID]

`--superexec-auth-secret-file`: the secret the SuperNode was started with (`flower-supernode
--superexec-auth-secret-file`): only a holder of it may acquire the node's tasks (and with them their tokens).
One task at a time: a SuperNode hands out one message of a run at a time anyway.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger("fedranklite.flower.worker")

ACQUIRE_METHOD = "/flwr.proto.Runtime/AcquireTask"  # the call SuperExec authentication protects
CLIENTAPP = "fedranklite.backends.flower.client_app:app"  # the only ClientApp a worker runs
# seconds between AcquireTask calls (a local HTTP call) while the node has no task: FAST_POLL right after a
# task (the node's next message of the round follows within a second), growing to DEFAULT_POLL when idle
FAST_POLL = 0.02
DEFAULT_POLL = 0.25


def preload() -> float:
    """Import the model stack and our ClientApp now (once per node, not per message); return the seconds."""
    start = time.perf_counter()
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import fedranklite.backends.flower.client_app  # noqa: F401
    import fedranklite.backends.flower.task  # noqa: F401
    import fedranklite.run.client  # noqa: F401
    import fedranklite.run.prepare  # noqa: F401

    return time.perf_counter() - start


def fab_clientapp(content: bytes) -> str:
    """The ClientApp reference ([tool.flwr.app.components] clientapp) in a FAB's pyproject.toml."""
    import io
    import zipfile

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    with zipfile.ZipFile(io.BytesIO(content)) as z:
        config = tomllib.loads(z.read("pyproject.toml").decode())
    return str(config.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {}).get("clientapp", ""))


def prepare_side(experiment: Path) -> float:
    """Build the resident client side of `experiment` (as the server loads it, so its config key matches the
    messages' and the first message finds it built); return the seconds."""
    from fedranklite.backends.flower.task import client_side, config_json
    from fedranklite.config.files import load_config

    start = time.perf_counter()
    client_side(config_json(load_config(experiment, [])))
    return time.perf_counter() - start


class Worker:
    """Acquires the ClientApp tasks of one SuperNode's Runtime API and runs each in this process."""

    def __init__(
        self,
        runtime_api_address: str,
        insecure: bool = True,
        root_certificates: Optional[str] = None,
        auth_secret: Optional[bytes] = None,
        poll: float = DEFAULT_POLL,
    ):
        self.address = runtime_api_address
        self.insecure = insecure
        self.root_certificates = root_certificates
        self.auth_secret = auth_secret
        self.poll = poll
        self.tasks = 0  # tasks run (done or failed)
        self.failed = 0
        self._apps: dict[str, object] = {}  # FAB hash -> its ClientApp (checked once per FAB)
        self._stop = threading.Event()

    def _client(self, *interceptors):
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient

        return RuntimeHttpClient.from_server_address(
            server_address=self.address,
            insecure=self.insecure,
            root_certificates=None if self.insecure else self.root_certificates,
            interceptors=[*interceptors],
            retry_invoker=make_simple_http_retry_invoker(),
        )

    def stop(self) -> None:
        self._stop.set()

    def serve(self, max_tasks: Optional[int] = None) -> None:
        """Acquire and run tasks until stop() (or `max_tasks` tasks ran)."""
        from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
        from flwr.supercore.constant import TaskType
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor, SuperExecAuthHttpInterceptor

        interceptors = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
        if self.auth_secret:
            interceptors.append(
                SuperExecAuthHttpInterceptor(master_secret=self.auth_secret, protected_methods={ACQUIRE_METHOD})
            )
        client = self._client(*interceptors)
        log.info("resident ClientApp worker (pid %d) serving %s", os.getpid(), self.address)
        try:
            failing, wait = False, FAST_POLL
            while not self._stop.is_set() and (max_tasks is None or self.tasks < max_tasks):
                try:
                    res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
                except Exception as exc:  # noqa: BLE001  (the SuperNode is not up yet, or restarting)
                    if not failing:
                        log.warning("the Runtime API at %s does not answer (%s): retrying", self.address, exc)
                    failing = True
                    self._stop.wait(0.5)
                    continue
                failing = False
                if res.HasField("task") and res.token:
                    self.run_task(res.token)
                    wait = FAST_POLL
                else:
                    self._stop.wait(wait)
                    wait = min(self.poll, wait * 1.3)
        finally:
            client.close()

    def _app(self, run, fab):
        """The ClientApp the run's FAB names, which must be this project's (already imported here): the
        worker runs the installed package's code, never code shipped inside a submitted FAB."""
        app = self._apps.get(fab.hash_str)
        if app is None:
            from flwr.clientapp.client_app import LoadClientAppError

            ref = fab_clientapp(fab.content)
            if ref != CLIENTAPP:
                raise LoadClientAppError(f"the run's ClientApp is {ref!r}; this worker runs only {CLIENTAPP!r}")
            from fedranklite.backends.flower.client_app import app

            self._apps[fab.hash_str] = app
        return app

    def run_task(self, token: str) -> bool:
        """One ClientApp task, as `flwr-clientapp --token TOKEN` runs it, without leaving the process.
        Returns whether it completed; a failure replies with an error Message and the worker goes on."""
        from flwr.app import Message
        from flwr.app.error import Error
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
        from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
        from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

        client = self._client(
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), RuntimeTokenHttpInterceptor(token)
        )
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        message = context = reply = None
        status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
        self.tasks += 1
        try:
            heartbeat.start()
            message, context, run, fab = pull_task_input(client)
            reply = self._app(run, fab)(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except Exception as exc:  # noqa: BLE001  (the ClientApp's error goes back as an error reply)
            from flwr.clientapp.client_app import LoadClientAppError

            log.error("ClientApp raised an exception", exc_info=exc)
            code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            reason = f"{type(exc)}:<'{exc}'>"
            if isinstance(exc, LoadClientAppError):
                code, reason = ErrorCode.LOAD_CLIENT_APP_EXCEPTION, "loading the ClientApp failed"
            details = reason
            if message is not None:
                reply = Message(Error(code=code, reason=reason), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
            except Exception as exc:  # noqa: BLE001
                log.error("pushing the reply failed", exc_info=exc)
                status, details = SubStatus.FAILED, f"pushing the reply failed: {exc}"
            push_task_output(client=client, context=context, sub_status=status, details=details)
            if heartbeat.is_running:
                heartbeat.stop()
            client.close()
        if status != SubStatus.COMPLETED:
            self.failed += 1
        return status == SubStatus.COMPLETED


def _parent_monitor(pid: int) -> None:
    """Stop this worker when its SuperNode (the parent named on the command line) is gone."""
    import psutil

    def watch() -> None:
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.5)
        log.info("SuperNode %d is gone: stopping", pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="parent-monitor").start()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fedranklite.backends.flower.worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's --host:--port")
    security = parser.add_mutually_exclusive_group()
    security.add_argument("--insecure", action="store_true", help="plain HTTP to the Runtime API (loopback)")
    security.add_argument("--root-certificates", help="CA of the Runtime API's TLS certificate")
    parser.add_argument("--superexec-auth-secret-file", help="the secret file the SuperNode was started with")
    parser.add_argument("--parent-pid", type=int, help="exit when this process (the SuperNode) is gone")
    parser.add_argument("--poll", type=float, default=DEFAULT_POLL, help="seconds between task polls")
    parser.add_argument("--no-preload", action="store_true", help="import the model stack at the first task")
    parser.add_argument(
        "--prepare",
        metavar="EXPERIMENT_YAML",
        help="build the run's client side (model, partitions, tokens) at start from the experiment the server "
        "runs, so the first message does not pay it (a different config is built when its first message comes)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.insecure and not args.root_certificates:
        parser.error("give --insecure (a loopback Runtime API) or --root-certificates")
    secret = None
    if args.superexec_auth_secret_file:
        secret = Path(args.superexec_auth_secret_file).expanduser().read_bytes()
        if not secret:
            parser.error("the SuperExec auth secret file is empty")
    if args.parent_pid:
        _parent_monitor(args.parent_pid)
    if not args.no_preload:
        log.info("model stack imported in %.1f s", preload())
    if args.prepare:
        log.info("client side of %s built in %.1f s", args.prepare, prepare_side(Path(args.prepare)))
    worker = Worker(args.runtime_api_address, args.insecure, args.root_certificates, secret, args.poll)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        worker.serve()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
