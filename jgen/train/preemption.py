"""Stopping a run cleanly on preemption: SIGTERM or a first Ctrl-C ends it at a saved step.

How preemption arrives: a TPU VM, Kubernetes or Slurm sends SIGTERM and kills the process some
seconds to minutes later. While `train` runs its steps, `StopRequest` turns the first SIGTERM or
SIGINT into a request; the loop finishes the step in flight, writes a checkpoint of that step,
waits until it is committed (async saves included), logs what it did and raises `Preempted`, a
`SystemExit` with code `EXIT_PREEMPTED` (75, `EX_TEMPFAIL` of sysexits.h: "try again later").
Running the same command again resumes from that step. A second signal aborts at once
(`KeyboardInterrupt` for SIGINT, exit code 143 = 128 + SIGTERM for SIGTERM); an async save in
flight is then left in Orbax's temporary directory, which is never taken for a checkpoint, so
the resume starts from the last committed step.

Under `--distributed`, `jax.distributed.initialize()` has XLA's preemption notifier catch
SIGTERM (it swallows the signal: Python never sees it) and broadcast the notice to every host;
`jax.experimental.multihost_utils.reached_preemption_sync_point(step)` then returns True on all
hosts at the same step (the maximum step any host had reached, plus one), so every host saves
the same step. There `StopRequest` polls the sync point every step and leaves SIGTERM to XLA;
a Ctrl-C on one host is forwarded to XLA's notifier as a SIGTERM to the own process, so it too
stops every host at one agreed step.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

from jax.experimental import multihost_utils

log = logging.getLogger("jgen")

EXIT_PREEMPTED = 75

__all__ = ["EXIT_PREEMPTED", "Preempted", "StopRequest", "preemption_sync_available"]


class Preempted(SystemExit):
  """The run stopped on request after committing the checkpoint of `step`.

  A `SystemExit` with code `EXIT_PREEMPTED`, so `launch.py` exits with it and schedulers can
  requeue the job; library callers can catch it to tell a preemption from a finished run.
  """

  def __init__(self, step: int, reason: str):
    super().__init__(EXIT_PREEMPTED)
    self.step = step
    self.reason = reason

  def __str__(self) -> str:
    return (f"stopped at step {self.step} on {self.reason}; its checkpoint is committed: run "
            f"the same command again to resume (exit code {EXIT_PREEMPTED})")


def preemption_sync_available() -> bool:
  """True when `jax.distributed` runs with its preemption service (XLA catches SIGTERM)."""
  from jax._src import distributed  # noqa: PLC0415 (only multi-process runs; no public API)
  # Private, but the only record of whether initialize() started the preemption sync manager;
  # getattr keeps a future rename from breaking single-process runs.
  state = getattr(distributed, "global_state", None)
  return getattr(state, "preemption_sync_manager", None) is not None


class StopRequest:
  """A context manager that turns the first SIGTERM/SIGINT into a stop request.

  Use `requested(step)` once per step, on every host, with the step just finished.

  Attributes:
    reason: the signal that asked to stop ("SIGTERM", "SIGINT"), or None.
  """

  def __init__(self):
    self.reason: str | None = None
    self._sync = False
    self._previous: dict[int, object] = {}

  def __enter__(self) -> "StopRequest":
    self._sync = preemption_sync_available()
    if threading.current_thread() is not threading.main_thread():
      log.warning("training outside the main thread: SIGTERM/SIGINT are not caught, so a "
                  "preemption loses the steps since the last checkpoint")
      return self
    signals = (signal.SIGINT,) if self._sync else (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous.clear()

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if self.reason is not None:  # the second signal: abort now
      log.warning("second %s: aborting without a checkpoint", name)
      self.__exit__()
      if signum == signal.SIGINT:
        raise KeyboardInterrupt
      os._exit(128 + signum)  # pylint: disable=protected-access
    self.reason = name
    log.warning("%s received: finishing this step, saving a checkpoint of it and exiting with "
                "code %d; send it again to abort at once", name, EXIT_PREEMPTED)
    if self._sync and signum != signal.SIGTERM:
      os.kill(os.getpid(), signal.SIGTERM)  # to XLA's notifier: every host stops at one step

  def requested(self, step: int) -> bool:
    """Whether to stop after `step` (the same answer on every host under jax.distributed)."""
    if self._sync:
      if multihost_utils.reached_preemption_sync_point(step):
        self.reason = self.reason or "SIGTERM (jax preemption notice)"
        return True
      return False
    return self.reason is not None
