"""The handoff between a stub and the event loop.

Some facts about the mechanism
------------------------------
A 32-bit word at the start of each stub data page says who owns the page
(``Handoff.CHILD``, or ``Handoff.CONTROLLER`` and ``Handoff.SLEEPING``, which
is the controller's too and says the stub sleeps).  Only the owner writes the
page, but for the stub's one swap of the word from CONTROLLER to SLEEPING.
The stub sleeps in ``FUTEX_WAIT`` on that word; the kernel compares the
word with the expected value under the futex bucket lock before it sleeps,
so a ``FUTEX_WAKE`` that follows a store can never be missed: either the
waiter sees the new value and does not sleep (``EAGAIN``), or it is already
queued and the wake finds it.

An event loop cannot sleep in ``FUTEX_WAIT``: it waits in ``epoll``.  So the
stub's hand-over has to become something epoll can see.  Two bridges were
considered:

(a) the stub writes an eventfd it was given (the seccomp filter allows
    ``write`` from one instruction of the handler, to that fd number only),
    and the loop watches the eventfd with ``add_reader``;
(b) one native helper thread waits on up to 128 words at once with
    ``futex_waitv`` and signals one eventfd the loop watches.

Measured on this kind of machine (2 vCPUs, kernel 6.18;
``benchmarks/refs/bridge_choice.c``, 100 000 checked round trips per child,
both sides pinned to one core):

=========  =====================  =====================
children   (a) eventfd per child  (b) futex_waitv helper
=========  =====================  =====================
1          ~330 k rt/s, 2.6 us    ~175 k rt/s, 5.1 us
16         ~315 k rt/s            ~318 k rt/s
64         ~300 k rt/s            ~335 k rt/s
=========  =====================  =====================

(a) needs two wake-ups per round trip (stub -> loop, loop -> stub); (b)
needs four (stub -> helper, helper -> loop, loop -> stub, and the loop
re-arming the helper), which halves single-stub speed and, unpinned, puts a
cross-CPU wake-up on every round trip as the helper drifts to the other
core.  (b) gains 5-12 % only at 64 busy stubs on one core, where one scan
answers many stubs - a saving of one cheap syscall per round trip, small
next to the several microseconds a Python controller spends per answer.
(b) also needs a thread, a re-arm protocol (waiting on a word with a stale
expected value loses hand-overs: the helper must wait only on words the
children hold) and one helper per 128 stubs.  So this module implements (a).

Why no wake-up is lost
----------------------
Stub side (``hand_over_and_wait`` in ``stub_code.c``):

1. write the report into the page;
2. store ``CONTROLLER`` into the word with release ordering;
3. ``write(eventfd, 1)``;
4. (maybe spin on the word, see "Spinning"; then) swap the word from
   ``CONTROLLER`` to ``SLEEPING``; if the swap finds ``CHILD``, go on without
   sleeping; else while the word (acquire load) is not ``CHILD``:
   ``FUTEX_WAIT(word, SLEEPING)``.

Controller side (this module):

5. ``epoll_wait`` on the controller's own epoll set returns the eventfd: it is
   registered edge-triggered, so returning it takes it off the ready list;
6. loads the word with acquire ordering; only if it is ``CONTROLLER`` or
   ``SLEEPING`` does it read the page (both steps in C:
   ``aioumm_take_handovers``);
7. to hand back: write the command and edits, exchange the word for ``CHILD``
   (release and acquire), and ``FUTEX_WAKE`` only if the exchange found
   ``SLEEPING`` (``_native.c: aioumm_hand_back``).

Step 3 follows step 2 in the stub's program order and the eventfd write is a
syscall (a full barrier), so when step 5 returns the eventfd the store of
step 2 is visible at step 6: a notification always finds its report.  Every
eventfd write calls the epoll set's wake-up callback, which puts the eventfd
back on the ready list, so a notification that arrives after step 5 is
returned by the next ``epoll_wait``: nothing posted after the check is
missed.  (The counter itself is never read: edge-triggered epoll needs no
reset, which saves a ``read`` per round trip; at one write per report it
cannot reach its limit of 2^64 - 2.)  In the other direction, the swap of
step 4 and the exchange of step 7 are atomic operations on one word, so one
of them comes first: either the exchange finds ``SLEEPING`` and wakes (the
futex argument above: the wait sees ``CHILD`` or is queued), or the swap
finds ``CHILD`` and the stub never sleeps.  A stub answered before it said it
sleeps is not woken at all, which spares a ``FUTEX_WAKE`` per round trip
whenever the answer comes while it spins.  The stub hands over only once per report or
batch result, and waits for ``CHILD`` before it can hand over again, so
notifications never outnumber hand-overs; extra ones (a guest that jumps to
the notify instruction, or writes the word itself) are harmless because step
6 re-checks the word and the controller validates everything else it reads.

Many stubs, one wake-up
-----------------------
All the stubs' eventfds sit in one epoll set of the controller's
(``Notifications``), and the loop watches that set's descriptor alone.  One
readiness of it is one pass: up to ``Notifications.PASS`` ready stubs are
taken with one ``epoll_wait`` that does not sleep and answered one after the
other, without going back to the loop in between.  Each event carries the
address of the controller's mapping of the stub's page, so the look at the
words (steps 5 and 6) is one native call that hands Python only the stubs
to answer; a page stays mapped until its eventfd has left the set.  The stubs answered in a
pass are woken together at its end: a stub woken at once would preempt the
controller (when they share a CPU) before the next answer is written, two
context switches per stub.  The delay cannot lose a wake-up: the word
already says ``CHILD``, and the stub's ``FUTEX_WAIT(word == SLEEPING)``
either sees that and does not sleep, or sleeps and gets the wake a moment
later.  A hand-back from anywhere else (a task answering a report) wakes at
once.

Spinning
--------
Across two CPUs of a virtual machine a wake-up costs tens of microseconds,
several times what either side spends on a round trip (``placement.py``).
A lone stub in a ping-pong with the controller therefore gains most from
nobody sleeping, so both sides may spin for up to ``spin_ns`` before they do:

* the stub, after its notification, spins on the word for as many
  ``pause``s as the controller's last hand-back allowed (``spin_limit``,
  clamped by the stub to ``STUB_SPIN_MAX`` whatever the page says), unless it
  runs on the CPU the controller ran on then (``controller_cpu``): there it
  would only keep the controller from answering;
* the controller, after a pass that answered that stub straight from the
  pass (no task waits to run), spins on its word until its
  next report (``aioumm_spin_for_report``), unless the stub last reported from
  the controller's own CPU.  A report taken so is answered at once, as if its
  eventfd had been seen; the eventfd write that follows is a spare
  notification, harmless by the re-check of step 6.  A task that answers a
  lone stub and awaits its next report spins the same way before it
  suspends (``spin_after_hand_back``).  A stub on the controller's own CPU
  is not spun for, but it is looked at once: woken there, it usually runs
  at once (the scheduler lets the woken task preempt the waker) and has
  reported again by the time the controller looks, and that report is
  answered then and there (``early``) instead of after a sleep in epoll
  and a pass: a fifth of a round trip on one CPU.  At most ``CHAIN``
  reports are taken by spinning or early before the loop runs a pass again,
  and none once ``CHAIN_NS`` has passed since the first of them (a spin's
  budget bounds the wait for each report taken by spinning, but nothing
  bounds how long a stub that preempted the controller computes before its
  early report).  A chain cut short by ``CHAIN_NS`` leaves its report to the
  next pass, which answers it without chaining: the loop may run that pass
  before the timers and callbacks that fell due meanwhile (asyncio's runs
  the I/O callbacks of an iteration first), and they must not wait for a
  second chain.  So they wait at most ``CHAIN_NS`` plus one spin and one
  answer.  Spinning is also only ever for a stub the controller handed back
  (``running``), never for one whose report it holds, whatever its
  notifications say.

Spinning is adaptive and off when it cannot pay: spinning happens only while one
stub alone runs (``running``: handed back and not handed over since), as
with many running the controller is busy and a spinning stub would hold a
CPU the others need; a controller
spin that runs out of time (a stub that computes, or waits for something
else) stops the controller's spinning for 1, 2, 4... up to ``BACKOFF_MAX``
passes.  ``spin_ns=0`` turns it off on both sides.  None of it changes the
ordering argument above: a spinning side only reads the word, and a stub
that stops spinning says so with its swap before it sleeps in
``FUTEX_WAIT``, which re-checks the word.

How long to spin (``SPIN_NS_DEFAULT``): a report the controller's spin
misses costs two wake-ups across CPUs, the loop's from epoll and then the
stub's, whose own spin has run out by the time the late answer comes;
about 45 us here (``aioumm bench``: c_unotify and c_ptrace, which never
spin, take 42-45 us a round trip apart).  Spinning about as long as a miss costs
loses at most half of what a perfect guess would save, whatever the stub
does between its reports.  Measured here: ``busybox sha256sum`` of 20 MB
(a 4 KiB read after each ~18 us of hashing) took 0.26 s with 30 us spins
(80 misses, 700 wakes) and 0.24 s with 50 us (4 misses), using less CPU
time; 80 us gained nothing more, and a busybox pipeline took the same
0.14 s with any of them.

Bounded waits
-------------
A stub that is working for the controller (running a batch, or on its way
to its first report) must answer in bounded time.  ``wait`` takes a
deadline: when it passes the word is re-kicked with another ``FUTEX_WAKE``
(guards against a wake that found no waiter because of a bug elsewhere), and
when a second period passes the caller is told, and kills the stub.  Waits
for a running guest have no deadline unless the caller gives one.
"""

from __future__ import annotations

import asyncio
import operator
import os
import select
from collections.abc import Callable
from time import monotonic_ns as _monotonic_ns
from typing import Any

from aioumm.abi import Handoff, ffi, lib

_CHILD = int(Handoff.CHILD)
_SPUN_TIMEOUT = lib.AIOUMM_SPUN_TIMEOUT
_SPUN_REPORT = lib.AIOUMM_SPUN_REPORT
_SPUN_ALREADY = lib.AIOUMM_SPUN_ALREADY


def _pause_ns() -> float:
    """What one ``pause`` costs on this CPU (measured once per process)."""
    global _PAUSE_NS
    if _PAUSE_NS is None:
        _PAUSE_NS = max(lib.aioumm_pause_ns(), 1.0)
    return _PAUSE_NS


_PAUSE_NS: float | None = None

#: The longest spin either side may be asked for: the loop is blocked while the controller spins.
SPIN_NS_MAX = 1_000_000_000
#: ``Controller``'s spin by default: about what a missed report costs (see "Spinning").
SPIN_NS_DEFAULT = 50_000


def spin_time(spin_ns: object) -> int:
    """``spin_ns`` as an int of nanoseconds, or the error saying why it is none.

    The native spin takes an int64 and nothing else: a value refused there would make
    every pass that spins fail, long after the controller was made.
    """
    try:
        ns = operator.index(spin_ns)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"spin_ns must be an integer number of nanoseconds, not {spin_ns!r}") from None
    if not 0 <= ns <= SPIN_NS_MAX:
        raise ValueError(f"spin_ns must be 0 (no spinning) or positive up to {SPIN_NS_MAX} (1 s), not {ns}")
    return ns


class Notifications:
    """The controller's epoll set of stub eventfds, and its passes (see "Many stubs, one wake-up").

    ``batch_wakes=False`` wakes every stub as soon as it is answered, also
    within a pass.  ``spin_ns`` bounds the spinning on both sides of the
    handoff (see "Spinning"); 0 turns it off.
    """

    #: Ready stubs taken per pass at most; more stay ready for the next pass.
    PASS = lib.AIOUMM_PASS_MAX
    #: Reports one pass may take by spinning (or early) before the loop runs again...
    CHAIN = 64
    #: ...and for how long (ns): a stub on this CPU that computes between its syscalls runs while
    #: the controller is preempted, and its early reports are not bounded by a spin's budget.
    CHAIN_NS = 1_000_000
    #: Passes without spinning after a spin that timed out, at most.
    BACKOFF_MAX = 1024

    __slots__ = (
        "_backoff",
        "_bridges",
        "_chain_deadline",
        "_cut",
        "_deferring",
        "_epoll",
        "_last",
        "_loop",
        "_next_backoff",
        "_pending",
        "_ready",
        "_ready_keys",
        "_spin_limit",
        "_unlooped",
        "batch_wakes",
        "deferred",
        "early",
        "passes",
        "running",
        "spin_misses",
        "spin_ns",
        "spun",
        "wakes",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, *, batch_wakes: bool = True, spin_ns: int = 0) -> None:
        spin_ns = spin_time(spin_ns)
        self._loop = loop
        self._epoll: select.epoll | None = select.epoll()
        self._bridges: dict[int, HandoffBridge] = {}  # by the address of the stub's page
        # A pass's ready pages, written natively and read back as ints (the keys of _bridges).
        self._ready = ffi.new("struct stub_data *[]", lib.AIOUMM_PASS_MAX)
        self._ready_keys = memoryview(ffi.buffer(self._ready)).cast("Q")
        self._last = ffi.new("struct stub_data **")
        self._pending: list[Any] = []  # pages handed back in this pass, not woken yet
        self._deferring = False  # hand-backs store the word now and wake at the end of the pass
        self.batch_wakes = batch_wakes
        self.spin_ns = spin_ns
        # The stub spins in pauses: the same time, counted as it counts.
        self._spin_limit = min(round(spin_ns / _pause_ns()), lib.STUB_SPIN_MAX) if spin_ns else 0
        self.running = 0  # stubs handed back and not handed over again: one alone is a ping-pong
        self._unlooped = 0  # reports taken by spinning since the loop last ran a pass
        self._chain_deadline = 0  # when the chains since that pass must stop (0: none began)
        self._cut = False  # a chain stopped at its deadline: the next pass answers but does not chain
        self._backoff = 0  # passes left without spinning
        self._next_backoff = 1
        self.deferred = 0  # hand-backs whose wake waited for a later answer of their pass
        self.passes = 0
        self.spun = 0  # reports taken by spinning instead of from epoll
        self.early = 0  # reports found already made, right after a hand-back, instead of from epoll
        self.spin_misses = 0  # spins that ran out of time
        self.wakes = 0  # FUTEX_WAKEs made: hand-backs to a stub that had stopped spinning
        loop.add_reader(self._epoll.fileno(), self._pass)

    def watch(self, eventfd: int, bridge: HandoffBridge) -> None:
        """Deliver ``eventfd``'s notifications to ``bridge`` (one already readable counts too).

        The bridge's page must stay mapped until ``unwatch``: a pass reads
        the word of every page whose eventfd it sees.
        """
        if self._epoll is None:
            raise RuntimeError("the controller's notifications are closed")
        res = lib.aioumm_watch(self._epoll.fileno(), eventfd, bridge._data)
        if res:
            raise OSError(-res, os.strerror(-res), "epoll_ctl(EPOLL_CTL_ADD)")
        self._bridges[bridge._key] = bridge

    def unwatch(self, eventfd: int, bridge: HandoffBridge) -> None:
        """Stop delivering ``eventfd``'s notifications (before it is closed, and its page unmapped)."""
        if self._bridges.pop(bridge._key, None) is not None and self._epoll is not None:
            self._epoll.unregister(eventfd)

    def _pass(self) -> None:
        assert self._epoll is not None
        taken = lib.aioumm_take_handovers(self._epoll.fileno(), self._ready, self.PASS, self._last)
        if taken < 0:
            raise OSError(-taken, os.strerror(-taken), "epoll_wait")
        self.passes += 1
        self._unlooped = 0
        self._chain_deadline = 0
        cut, self._cut = self._cut, False
        bridges = self._bridges
        woken = 0
        # Deferring the wakes pays only when there is a second answer to write before them.
        self._deferring = self.batch_wakes and taken > 1
        try:
            for key in self._ready_keys[:taken]:
                bridge = bridges.get(key)  # None: a stub released by an earlier answer of this pass
                if bridge is None:
                    continue
                try:
                    if bridge.handed_over():
                        woken += 1
                except Exception as exc:
                    # Edge-triggered: an event not handled now is never returned again, so one
                    # failure must not cost the other stubs of the pass their notifications.
                    self._loop.call_exception_handler(
                        {"message": "aioumm: a stub's notification failed", "exception": exc}
                    )
            if not woken and self.running == 1 and self._spin_limit and not cut:
                # The last stub seen (a spare notification included) may be the lone one running.
                last = bridges.get(int(ffi.cast("uintptr_t", self._last[0])))
                if last is not None:
                    self._chain(last)
        finally:
            if woken > 1 and self.batch_wakes:
                # The tasks woken run next, in the order woken; this callback runs after them.
                self._loop.call_soon(self._end_deferral)
            else:
                self._end_deferral()

    def _chain(self, bridge: HandoffBridge) -> None:
        """Spin for the next reports of a lone stub just answered, and answer them (see "Spinning")."""
        if self._backoff:
            self._backoff -= 1
            return
        # Each turn is on the guest's critical path: locals, and the counters written once at the end.
        data, spin_ns, spin, handed_over = bridge._data, self.spin_ns, lib.aioumm_spin_for_report, bridge.handed_over
        unlooped = before = self._unlooped
        early = 0
        # One deadline for every chain until the loop runs a pass again: a task that awaits
        # each report chains once per report, and the loop does not run in between.
        deadline = self._chain_deadline
        if not deadline:
            deadline = self._chain_deadline = _monotonic_ns() + self.CHAIN_NS
        try:
            while unlooped < self.CHAIN:
                if self._pending:
                    self.wake_pending()  # a stub asleep must be woken before its next report can come
                if bridge._eventfd < 0 or not bridge._running:
                    # Released, or stopped (a spare notification, or one a guest forged while
                    # its report waits for a task): no report of its can be waited for.
                    return
                got = spin(data, spin_ns)
                if got != _SPUN_REPORT and got != _SPUN_ALREADY:
                    if got == _SPUN_TIMEOUT:  # it computes longer than a spin: stop spinning for a while
                        if unlooped != before:
                            self._next_backoff = 1  # the reports of this chain count as a success
                        self.spin_misses += 1
                        self._backoff = self._next_backoff
                        self._next_backoff = min(2 * self._next_backoff, self.BACKOFF_MAX)
                    return
                if _monotonic_ns() > deadline:
                    # The loop has waited long enough: its next pass answers this report, and
                    # does not chain, so that what fell due meanwhile (timers, callbacks,
                    # other descriptors) runs before another chain can begin.
                    self._cut = True
                    return
                early += got == _SPUN_ALREADY  # it ran on this CPU as soon as it was woken
                unlooped += 1
                if handed_over():
                    return  # a task takes it from here
        finally:
            if unlooped != before:
                self.spun += unlooped - before - early
                self.early += early
                self._unlooped = unlooped
                if not self._backoff:
                    self._next_backoff = 1

    def spin_after_hand_back(self, bridge: HandoffBridge) -> None:
        """A task gave ``bridge``'s page back and is about to wait: spin for the report first.

        The spin of a pass (see "Spinning"), for the coroutine that awaits
        each report: a report taken so completes the wait before the task
        suspends.  The reports a task takes this way count with the pass's
        towards ``CHAIN``, so the loop still runs after that many.
        """
        if self.running == 1 and self._spin_limit:
            self._chain(bridge)

    def hand_back(self, bridge: HandoffBridge, command: int) -> None:
        """Give ``bridge``'s page back with ``command``; within a pass its wake waits for the pass's end."""
        if not bridge._running:
            bridge._running = True
            self.running += 1
        data = bridge._data
        spin = self._spin_limit if self.running == 1 else 0
        if self._deferring:
            if lib.aioumm_hand_back_later(data, command, spin):  # it sleeps: wake it at the end
                self._pending.append(data)
            return
        res = lib.aioumm_hand_back(data, command, spin)
        if res:
            if res < 0:
                raise OSError(-res, os.strerror(-res), "futex(FUTEX_WAKE)")
            self.wakes += 1

    def _end_deferral(self) -> None:
        self._deferring = False
        self.wake_pending()

    def wake_pending(self) -> None:
        """The FUTEX_WAKEs of the pages handed back in the pass so far."""
        pending, self._pending = self._pending, []
        if pending:
            lib.aioumm_wake_many(pending, len(pending))
            self.wakes += len(pending)
            self.deferred += len(pending) - 1

    def close(self) -> None:
        """Stop watching (every stub's bridge is closed by then); safe to call twice."""
        if self._epoll is not None:
            self.wake_pending()
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
            self._bridges.clear()


class HandoffBridge:
    """The eventfd bridge of one stub (bridge (a) above).

    ``data`` is the controller's ``struct stub_data *`` for the stub; ``eventfd``
    the controller's end of the eventfd the stub writes.  The bridge owns the
    eventfd; the controller's ``Notifications`` watch it for the lifetime of
    the stub: one registration at start, not one per round trip.
    """

    __slots__ = ("_data", "_eventfd", "_key", "_loop", "_notifications", "_running", "_waiter", "offer")

    def __init__(self, notifications: Notifications, data: Any, eventfd: int) -> None:
        self._loop = notifications._loop
        self._notifications = notifications
        self._data = data
        self._key = int(ffi.cast("uintptr_t", data))  # how the notifications know it
        self._eventfd = eventfd
        self._waiter: asyncio.Future[bool] | None = None
        self._running = False  # handed back, not handed over since (counted in notifications.running)
        # Called (if set) when the page is handed over while a wait is pending, before the
        # waiter is woken: True means it answered the stub itself and the wait goes on.
        self.offer: Callable[[], bool] | None = None
        notifications.watch(eventfd, self)

    @property
    def owner(self) -> Handoff | None:
        """Who owns the page right now (acquire load), or None for a value no state has."""
        word = lib.aioumm_load_handoff(self._data)
        return Handoff(word) if word in (Handoff.CHILD, Handoff.CONTROLLER) else None

    def handed_over(self) -> bool:
        """The stub handed its page over (a pass or a spin saw the word); True if it woke the waiting task."""
        if self._running:  # what _stopped does, inline: this is per round trip
            self._running = False
            self._notifications.running -= 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            offer = self.offer
            if offer is not None and offer():
                return False
            waiter.set_result(True)
            return True
        return False

    def _stopped(self) -> None:
        if self._running:
            self._running = False
            self._notifications.running -= 1

    @staticmethod
    def _expire(waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            waiter.set_result(False)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the stub hands the page over.

        Returns True once the controller owns the page.  With a timeout,
        returns False when the stub has not answered after the timeout plus
        one re-kick of the same length.  Cancellation leaves no registration
        behind.  (A timer rather than ``asyncio.wait``: this is the hot path.)
        """
        if self._waiter is not None:
            raise RuntimeError("a wait on this stub is already pending")
        for attempt in range(1 if timeout is None else 2):
            waiter: asyncio.Future[bool] = self._loop.create_future()
            self._waiter = waiter
            timer = None if timeout is None else self._loop.call_later(timeout, self._expire, waiter)
            try:
                if await waiter:
                    return True
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            # The deadline and the notification may have been due in the same loop pass.
            if lib.aioumm_load_handoff(self._data) == Handoff.CONTROLLER:
                return True
            if attempt == 0:
                self.kick()
        return False

    def arm(self) -> asyncio.Future[bool]:
        """The future a ``wait`` without deadline awaits (the caller must ``disarm`` after it)."""
        if self._waiter is not None:
            raise RuntimeError("a wait on this stub is already pending")
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiter = waiter
        return waiter

    def disarm(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.cancel()

    def fail(self, exc: BaseException) -> None:
        """Wake a pending ``wait`` with ``exc`` (the stub died)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def hand_back(self, command: int) -> None:
        """Give the page back with ``command`` (release store, then FUTEX_WAKE, maybe at the pass's end)."""
        self._notifications.hand_back(self, command)

    def spin(self) -> None:
        """Just handed back by a task that will wait for the next report: spin for it a while first."""
        self._notifications.spin_after_hand_back(self)

    def kick(self) -> None:
        """Wake the stub again (a stuck-wait guard).

        Only FUTEX_WAKE: storing the word again could overwrite a hand-over
        made since, and make the stub run its command a second time.
        """
        lib.aioumm_wake(self._data)

    def close(self) -> None:
        """Stop watching and close the eventfd; safe to call twice."""
        if self._eventfd >= 0:
            self._stopped()
            self._notifications.unwatch(self._eventfd, self)
            os.close(self._eventfd)
            self._eventfd = -1
