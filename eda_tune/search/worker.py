"""Runners: where a trial's measurement (``objective.evaluate``) runs.

:class:`IsolatedRunner` (the default) keeps one long-lived worker process (``spawn``: a fresh
interpreter, no inherited CUDA context) and sends it one job at a time through a pipe. The driver
waits at most ``trial_timeout`` seconds; a worker that hangs is killed, one that dies (a CUDA
illegal address, a segfault in a compiler) is noticed by the closed pipe. Either way the trial is
recorded as failed (``timeout`` / ``crash``) and the next trial gets a fresh worker, so nothing a
kernel does can stop the study. :class:`InProcessRunner` runs jobs in the driver (debugging only).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any, Protocol


class WorkerStartError(RuntimeError):
    """The worker process died or hung before it was ready for a job."""


class Runner(Protocol):
    def run(self, job: Mapping[str, Any], timeout: float | None) -> dict[str, Any]: ...

    def close(self) -> None: ...


class InProcessRunner:
    """Evaluate in this process: no isolation, no timeout (for debugging and quick tests)."""

    def run(self, job: Mapping[str, Any], timeout: float | None) -> dict[str, Any]:
        from eda_tune.search.objective import evaluate

        return evaluate(job)

    def close(self) -> None:
        pass


def _worker_main(conn: Connection) -> None:
    """The worker's loop: receive a job, evaluate it, send the result; exit on None or a closed pipe."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from eda_tune.search.objective import evaluate

    conn.send({"ready": True})
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        result = evaluate(job)
        conn.send(result)
        if result.get("restart"):
            return  # a CUDA error poisons the context: let the driver start a fresh worker


class IsolatedRunner:
    """One worker process at a time, restarted after a crash, a timeout or a CUDA error."""

    def __init__(self, start_timeout: float = 300.0) -> None:
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None
        self.start_timeout = start_timeout
        self.starts = 0

    def _start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child,), daemon=True, name="eda-tune-worker")
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self.starts += 1
        # the interpreter's start and the imports are not the trial's time: wait for "ready" first
        try:
            ok = parent.poll(self.start_timeout) and parent.recv().get("ready")
        except (EOFError, OSError):
            ok = False
        if not ok:
            code = proc.exitcode
            self._stop(kill=True)
            raise WorkerStartError(f"the worker process did not start within {self.start_timeout:g} s "
                                   f"(exit code {code})")

    def _stop(self, kill: bool = False) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            if not kill:
                try:
                    conn.send(None)
                except (OSError, ValueError):
                    pass
            conn.close()
        if proc is not None:
            if kill:
                proc.kill()
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)

    def run(self, job: Mapping[str, Any], timeout: float | None) -> dict[str, Any]:
        if self._proc is None or not self._proc.is_alive():
            self._stop(kill=True)
            try:
                self._start()
            except WorkerStartError as err:
                return {"ok": False, "kind": "crash", "phase": "start", "reason": f"crash: {err}"}
        assert self._conn is not None and self._proc is not None
        t0 = time.perf_counter()
        try:
            self._conn.send(dict(job))
        except (OSError, ValueError) as err:
            self._stop(kill=True)
            return {"ok": False, "kind": "crash", "phase": "send",
                    "reason": f"crash: the worker process was gone before the trial ({err})"}
        try:
            ready = self._conn.poll(timeout)
        except (OSError, EOFError):
            ready = True
        if not ready:
            self._stop(kill=True)
            return {"ok": False, "kind": "timeout", "phase": "run", "wall_s": round(time.perf_counter() - t0, 3),
                    "reason": f"timeout: no result within {timeout:g} s; the worker was killed"}
        try:
            result = self._conn.recv()
        except (EOFError, OSError):
            proc = self._proc
            proc.join(timeout=10)
            code = proc.exitcode
            self._stop(kill=True)
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            return {"ok": False, "kind": "crash", "phase": "run", "wall_s": round(time.perf_counter() - t0, 3),
                    "reason": f"crash: the worker process died during the trial ({how})"}
        if result.get("restart"):
            self._stop(kill=True)
        return dict(result)

    def close(self) -> None:
        self._stop(kill=False)

    def __enter__(self) -> IsolatedRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
