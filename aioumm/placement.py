"""Which CPUs the controller and its stubs run on.

Where the two sides of a handoff can spin (``futex_bridge.py``), a lone
chatty stub is answered faster on another CPU than on the controller's, and
this placement only costs: a busybox pipeline took 0.15 s placed against
0.13 s left to the scheduler, ``busybox sha256sum`` of 20 MB 0.31 s against
0.23 s; without spinning 0.21 s against 0.22 s and 0.32 s against 0.52 s.
So ``Controller(placement="auto")`` uses it only where nobody spins.

A round trip is two wake-ups: the stub's notification wakes the loop, the
hand-back wakes the stub.  When both sides share a CPU each wake-up is a
context switch on that CPU (a few microseconds).  When they sit on different
CPUs, each one is a wake-up of an idle CPU, which on a virtual machine costs
tens of microseconds (measured on a 2-vCPU virtual machine: one stub
answered in 6.4 us with both sides on one CPU, 77 us apart without
spinning; see ``benchmarks/README.md``).  Spinning (``futex_bridge.py``)
takes both wake-ups away from a lone stub's ping-pong across CPUs, but
a stub that computes for longer than a spin between its syscalls pays them
again; on one CPU they stay cheap whatever the stub does, so this placement
keeps chatty stubs there.  Leaving it to the scheduler puts the two sides
wherever they last ran, usually apart.

But a stub that computes for long stretches between reports should run on
another CPU, in parallel with the controller and the other stubs: sharing
the controller's CPU would halve both.  So the adaptive placement watches how
long each stub runs between a resume and its next report:

* the loop's thread is pinned to the CPU it is on when the controller opens
  (its previous mask is restored on close); new stubs inherit that CPU;
* a stub whose runs average (EWMA, 1/8 weight) above ``busy_ns``, or whose
  current run has lasted longer than that, is let out to every CPU of the
  controller's original mask;
* a stub whose runs average below ``chatty_ns`` again is brought back.

The two thresholds are far apart so that a stub does not flip back and
forth; a change costs one ``sched_setaffinity`` and happens only on a
change of behaviour.

One CPU is cheap only while few stubs want it: with many guests running at
once (pipelines side by side), chatty stubs kept home wait behind each other
and the controller while the other CPUs idle (measured: 8 busybox pipelines
at once took 1.5 s placed so, 1.05 s left to the scheduler; one pipeline
alone 0.19 s against 0.23 s).  So the placement also keeps an average of how
many stubs are running guest code at each resume (EWMA, 1/16 weight): above
``crowd`` a chatty stub that resumes is let out like a busy one, and chatty
stubs come home again only once the average is back below half of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING

from aioumm.abi import lib

if TYPE_CHECKING:
    from aioumm.stub import Stub

__all__ = ["Placement"]

_clock = time.perf_counter_ns


class Placement:
    """The adaptive placement of one controller's stubs (see the module docstring)."""

    def __init__(self, *, chatty_ns: int = 200_000, busy_ns: int = 2_000_000, crowd: float = 2.5) -> None:
        if not 0 < chatty_ns < busy_ns:
            raise ValueError(f"Placement: need 0 < chatty_ns < busy_ns, got {chatty_ns} and {busy_ns}")
        if not crowd >= 1:
            raise ValueError(f"Placement: crowd is a number of running stubs, at least 1, not {crowd}")
        self.chatty_ns = chatty_ns
        self.busy_ns = busy_ns
        self.crowd = crowd
        self._live: set[Stub] = set()  # every stub running guest code, home or not
        #: Stubs running guest code at a resume, on average (EWMA, 1/16 weight).
        self.running_avg = 0.0
        self.home: int | None = None  # the controller's CPU, once started
        #: The controller thread's mask before it was pinned (where free stubs go).
        self.wide: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: dict[Stub, int] = {}  # stubs on the home CPU running guest code: since when
        self._timer: asyncio.TimerHandle | None = None
        self.moves = 0  # affinity changes made (how often a stub changed behaviour)

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Pin the calling (loop) thread to its CPU.  False: placement is off (one CPU only,
        or the affinity cannot be changed), and nothing was changed."""
        wide = os.sched_getaffinity(0)
        cpu = lib.aioumm_current_cpu()
        if len(wide) < 2 or cpu not in wide:
            return False
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            return False
        self.wide, self.home, self._loop = wide, cpu, loop
        return True

    def stop(self) -> None:
        """Give the loop thread its mask back (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._running.clear()
        self._live.clear()
        if self.home is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, self.wide)
            self.home = None

    def resumed(self, stub: Stub, now: int) -> None:
        """``stub`` runs guest code from ``now`` on."""
        live = self._live
        live.add(stub)
        self.running_avg += (len(live) - self.running_avg) / 16
        if not stub._at_home:
            return
        if self.running_avg > self.crowd:
            self._move(stub, home=False)
            return
        self._running[stub] = now
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(self.busy_ns / 1e9, self._tick)

    def ran(self, stub: Stub, run_ns: int) -> None:
        """``stub`` reported after running ``run_ns``: update its average, move it if it changed."""
        self._running.pop(stub, None)
        self._live.discard(stub)
        avg = stub._run_avg = stub._run_avg + ((run_ns - stub._run_avg) >> 3)
        if stub._at_home:
            if avg > self.busy_ns:
                self._move(stub, home=False)
        elif avg < self.chatty_ns and self.running_avg < self.crowd / 2:
            self._move(stub, home=True)

    def forget(self, stub: Stub) -> None:
        self._running.pop(stub, None)
        self._live.discard(stub)

    def _tick(self) -> None:
        """Let out the stubs whose current run on the home CPU has lasted too long."""
        self._timer = None
        now = _clock()
        for stub, since in list(self._running.items()):
            if now - since > self.busy_ns:
                del self._running[stub]
                self._move(stub, home=False)
        if self._running and self._loop is not None:
            self._timer = self._loop.call_later(self.busy_ns / 1e9, self._tick)

    def _move(self, stub: Stub, *, home: bool) -> None:
        if self.home is None:
            return
        try:
            os.sched_setaffinity(stub.pid, {self.home} if home else self.wide)
        except OSError:  # gone, or not ours to move: it stays where it is
            return
        stub._at_home = home
        self.moves += 1
