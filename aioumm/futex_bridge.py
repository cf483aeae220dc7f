"""The handoff between a stub and the event loop.

Some facts about the mechanism
------------------------------
A 32-bit word at the start of each stub data page says who owns the page
(``Handoff.CHILD`` or ``Handoff.CONTROLLER``).  Only the owner writes the
page.  The stub sleeps in ``FUTEX_WAIT`` on that word; the kernel compares the
word with the expected value under the futex bucket lock before it sleeps,
so a ``FUTEX_WAKE`` that follows a store can never be missed: either the
waiter sees the new value and does not sleep (``EAGAIN``), or it is already
queued and the wake finds it.

An event loop cannot sleep in ``FUTEX_WAIT``: it waits in ``epoll``.  So the
stub's hand-over has to become something epoll can see.  Two bridges were
considered (design §4):

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
4. while the word (acquire load) is not ``CHILD``: ``FUTEX_WAIT(word, CONTROLLER)``.

Controller side (this module):

5. the loop sees the eventfd readable, reads it (resetting the counter to 0);
6. loads the word with acquire ordering; only if it is ``CONTROLLER`` does
   it read the page;
7. to hand back: write the command and edits, store ``CHILD`` with release
   ordering, then ``FUTEX_WAKE`` (``_native.c: aioumm_hand_back``).

Step 3 follows step 2 in the stub's program order and the eventfd write is a
syscall (a full barrier), so when the loop observes the eventfd readable at
step 5 the store of step 2 is visible at step 6: a notification always finds
its report.  The eventfd is read (step 5) *before* the word is inspected
(step 6), so a notification that arrives after that read leaves the counter
non-zero and epoll reports it again: nothing posted after the check is
missed.  In the other direction, steps 7 and 4 are the futex argument above.
The stub hands over only once per report or batch result, and waits for
``CHILD`` before it can hand over again, so notifications never outnumber
hand-overs; extra ones (a guest that jumps to the notify instruction, or
writes the word itself) are harmless because step 6 re-checks the word and
the controller validates everything else it reads.

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
import os
from collections.abc import Callable
from typing import Any

from aioumm.abi import Handoff, lib

_CONTROLLER = int(Handoff.CONTROLLER)


class WakeBatch:
    """Hand-backs of one loop pass, with their FUTEX_WAKEs made together.

    When many stubs are ready in one pass of the loop, waking each as soon as
    it is answered lets it preempt the controller (same core) before the next
    answer is written: two context switches per stub.  So while other
    notifications of the pass are still unanswered, a hand-back only stores
    the word, and the wakes are made together with the last answer of the
    pass (or, should that never come, at the end of the pass).  A lone stub
    is woken at once, as without batching.  No wake-up can be lost by the
    delay: the word already says CHILD, and the stub's
    FUTEX_WAIT(word == CONTROLLER) either sees that and does not sleep, or
    sleeps and gets the wake a moment later.
    """

    __slots__ = ("_expiring", "_loop", "_pending", "_unanswered", "deferred")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[Any] = []
        self._unanswered = 0  # notifications since the last hand-back that had none left
        self._expiring = False  # an _expire is scheduled
        self.deferred = 0  # hand-backs whose wake was deferred (how often batching happened)

    def notified(self) -> None:
        # A notification may never be answered (the stub died at that report, or its
        # caller waits a long time before resuming it): the count is of one pass only.
        # The answers of a pass come from its callbacks and from the tasks they wake,
        # which run in the next pass: the count is dropped in the pass after that.  A
        # count of one defers nothing, so a lone stub's round trip schedules no expiry.
        self._unanswered += 1
        if self._unanswered > 1 and not self._expiring:
            self._expiring = True
            self._loop.call_soon(self._loop.call_soon, self._expire)

    def _expire(self) -> None:
        self._expiring = False
        self._unanswered = 0
        self.flush()

    def hand_back(self, data: Any, command: int) -> None:
        if self._unanswered > 0:
            self._unanswered -= 1
        if self._unanswered:
            lib.aioumm_hand_back_later(data, command)
            if not self._pending:
                self._loop.call_soon(self.flush)
            self._pending.append(data)
            self.deferred += 1
            return
        res = lib.aioumm_hand_back(data, command)
        if self._pending:
            self.flush()
        if res < 0:
            raise OSError(-res, os.strerror(-res), "futex(FUTEX_WAKE)")

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            lib.aioumm_wake_many(pending, len(pending))


class HandoffBridge:
    """The eventfd bridge of one stub (design (a) above).

    ``data`` is the controller's ``struct stub_data *`` for the stub; ``eventfd``
    the controller's end of the eventfd the stub writes.  The bridge owns the
    eventfd and watches it for the lifetime of the stub: one ``add_reader`` at
    start, not one per round trip.
    """

    __slots__ = ("_data", "_eventfd", "_loop", "_waiter", "_wakes", "offer")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, data: Any, eventfd: int, wakes: WakeBatch | None = None
    ) -> None:
        self._loop = loop
        self._wakes = wakes
        self._data = data
        self._eventfd = eventfd
        self._waiter: asyncio.Future[bool] | None = None
        # Called (if set) when the page is handed over while a wait is pending, before the
        # waiter is woken: True means it answered the stub itself and the wait goes on.
        self.offer: Callable[[], bool] | None = None
        loop.add_reader(eventfd, self._on_notify)

    @property
    def owner(self) -> Handoff | None:
        """Who owns the page right now (acquire load), or None for a value no state has."""
        word = lib.aioumm_load_handoff(self._data)
        return Handoff(word) if word in (Handoff.CHILD, Handoff.CONTROLLER) else None

    def _on_notify(self) -> None:
        # The eventfd is read (reset) before the word is loaded: see "Why no wake-up is lost".
        word = lib.aioumm_take_notification(self._eventfd, self._data)
        waiter = self._waiter
        if word == _CONTROLLER and waiter is not None and not waiter.done():
            if self._wakes is not None:
                self._wakes.notified()
            offer = self.offer
            if offer is not None and offer():
                return
            waiter.set_result(True)

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
        """Give the page back with ``command`` (release store, then FUTEX_WAKE, maybe batched)."""
        if self._wakes is not None:
            self._wakes.hand_back(self._data, command)
            return
        res = lib.aioumm_hand_back(self._data, command)
        if res < 0:
            raise OSError(-res, os.strerror(-res), "futex(FUTEX_WAKE)")

    def kick(self) -> None:
        """Wake the stub again (a stuck-wait guard).

        Only FUTEX_WAKE: storing the word again could overwrite a hand-over
        made since, and make the stub run its command a second time.
        """
        lib.aioumm_wake(self._data)

    def close(self) -> None:
        """Stop watching and close the eventfd; safe to call twice."""
        if self._eventfd >= 0:
            self._loop.remove_reader(self._eventfd)
            os.close(self._eventfd)
            self._eventfd = -1
