"""``ocr-server --processes N``: N server processes on one port, each on its own CPUs.

Why: one Python process has one GIL for its event loop and for the Python around every
inference run. On 16 cores a v6 tiny server kept only 6-10 of them busy and answered
0.23-0.58x of the raw ONNX Runtime limit, where processes of 2-4 cores each reached 0.65-0.91x
(docs/benchmarks.md, "Line recognition on 16 cores"). Several processes used to mean a shell
loop with ``--reuse-port``; this does it with the CPUs split between them and one process
for an orchestrator to start, signal and watch.

What it does: split this process's CPUs into N contiguous shares, start each child
(``ocr-server`` with the same flags, ``--processes 1 --reuse-port``) with its share as its
CPU affinity, so its default ``--workers`` is its share and ``--pin-workers auto`` pins its
workers one to one. SIGTERM or SIGINT is passed on to every child as SIGTERM, and each
child shuts down as a single server does (NOT_SERVING, in-flight calls get ``--grace-s``).
A child that exits on its own (a crash, a failed start) stops the others and the
supervisor exits 1: the orchestrator restarts the whole server, rather than it serving on
with a share of its CPUs idle. With ``--metrics-port P`` child i serves metrics on P + i.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from ocr_core.cpus import usable_cpus
from ocr_server.config import ServerConfig

log = logging.getLogger("ocr_server.supervisor")


def cpu_shares(cpus: Sequence[int], processes: int) -> list[list[int]]:
    """``cpus`` in ``processes`` contiguous shares, as even as they go (larger ones first)."""
    if processes > len(cpus):
        raise ValueError(
            f"--processes {processes} needs at least {processes} CPUs; this process may use "
            f"{len(cpus)} ({', '.join(map(str, cpus))})"
        )
    size, extra = divmod(len(cpus), processes)
    shares: list[list[int]] = []
    start = 0
    for i in range(processes):
        end = start + size + (1 if i < extra else 0)
        shares.append(list(cpus[start:end]))
        start = end
    return shares


def child_command(argv: Sequence[str], config: ServerConfig, index: int) -> list[str]:
    """Child ``index``'s command: the same flags, one process, the shared port, its metrics port.

    Flags appended last win over the same flags earlier in ``argv`` and over environment
    variables (``OCR_PROCESSES`` too), which the child inherits.
    """
    command = [sys.executable, "-m", "ocr_server.main", *argv, "--processes", "1"]
    command += ["--reuse-port", "true"]
    if config.metrics_port:
        command += ["--metrics-port", str(config.metrics_port + index)]
    return command


_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send the child SIGTERM when ``parent`` dies.

    A supervisor killed with SIGKILL (OOM killer, systemd's KillMode=process) left its
    children serving, orphaned, on the shared port, where a restarted server joined them.
    None where ``prctl`` is not there (not Linux): children then outlive a killed parent.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # it died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def supervise(config: ServerConfig, argv: Sequence[str]) -> int:
    """Run ``config.processes`` children until they exit; 0 when all stopped cleanly."""
    cpus = usable_cpus()
    if not cpus:
        log.error("cannot start: --processes needs CPU affinity (Linux)")
        return 1
    try:
        shares = cpu_shares(cpus, config.processes)
    except ValueError as exc:
        log.error("cannot start: %s", exc)
        return 1
    # pid -> (index, process) until reaped. The Popen objects are kept so that none is
    # collected while running: subprocess would then poll it and might reap it first.
    children: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}
    stopping = False

    def stop_all(signum: int | None = None, _frame: FrameType | None = None) -> None:
        nonlocal stopping
        if signum is not None and not stopping:
            log.info("%s: stopping %d server processes", signal.Signals(signum).name, len(children))
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop_all) for sig in (signal.SIGTERM, signal.SIGINT)}
    own = os.sched_getaffinity(0)
    try:
        for index, share in enumerate(shares):
            if stopping:
                break
            # A child inherits the affinity of the process that forks it.
            os.sched_setaffinity(0, share)
            try:
                child = subprocess.Popen(
                    child_command(argv, config, index), preexec_fn=_die_with(os.getpid())
                )
            finally:
                os.sched_setaffinity(0, own)
            children[child.pid] = (index, child)
            log.info(
                "server process %d of %d: pid %d on CPUs %s",
                index + 1,
                len(shares),
                child.pid,
                ",".join(map(str, share)),
            )
        if stopping:
            stop_all()  # a signal between one child's start and its entry above missed it
        failed = False
        while children:
            # Reaped here only (os.wait, never Popen.poll), so every exit is seen once.
            pid, status = os.wait()
            reaped = children.pop(pid, None)
            if reaped is None:
                continue
            index, child = reaped
            code = child.returncode = os.waitstatus_to_exitcode(status)
            # -SIGTERM: a child stopped before its server set its SIGTERM handler (a stop
            # right after the start) ended as asked, like one that drained and exited 0.
            if stopping and code in (0, -signal.SIGTERM):
                continue
            failed = True
            log.error(
                "server process %d (pid %d) exited with status %d%s",
                index + 1,
                pid,
                code,
                "" if stopping else "; stopping the others",
            )
            stop_all()
        return 1 if failed else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
