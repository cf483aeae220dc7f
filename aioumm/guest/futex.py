"""``futex(2)``, served on the loop: the wait queues of one run.

A futex is a 32-bit word of guest memory that threads agree on.  Every guest
thread's syscalls are served by one event loop, so a handler that runs without
awaiting is atomic with respect to every other thread's futex call: reading the
word, comparing it and joining the queue happen in one step, and a waker that
changes the word and calls ``FUTEX_WAKE`` afterwards always finds the waiter
queued.  That is the whole of the "no lost wake-up" argument.

A waiter's key names the word as Linux does:

* a *private* futex (``FUTEX_PRIVATE_FLAG``, what glibc uses inside a process)
  is the pair (address space, address): the threads of a process share one
  :class:`~aioumm.guest.memory.AddressSpace` object;
* a *shared* futex is the pair (backing file, offset in it), so two processes
  mapping the same ``MAP_SHARED`` memory (at any address) meet on one queue.

The wait itself is a future the waiting thread's task awaits; the process's
``_wait`` turns a signal into ``EINTR`` and the ``finally`` takes the waiter out
of its queue.  A thread that ends while queued is taken out by :meth:`forget`.
"""

from __future__ import annotations

import asyncio
import errno
import struct
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from .errors import GuestFault, SyscallError
from .memory import PROT_READ

if TYPE_CHECKING:
    from .memory import AddressSpace
    from .process import GuestProcess

__all__ = ["FUTEX_BITSET_MATCH_ANY", "FutexTable", "futex"]

FUTEX_WAIT = 0
FUTEX_WAKE = 1
FUTEX_FD = 2
FUTEX_REQUEUE = 3
FUTEX_CMP_REQUEUE = 4
FUTEX_WAKE_OP = 5
FUTEX_WAIT_BITSET = 9
FUTEX_WAKE_BITSET = 10
FUTEX_PRIVATE_FLAG = 128
FUTEX_CLOCK_REALTIME = 256
FUTEX_CMD_MASK = ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
FUTEX_BITSET_MATCH_ANY = 0xFFFFFFFF
FUTEX_OP_OPARG_SHIFT = 8

_U32 = struct.Struct("<I")
_TIMESPEC = struct.Struct("<qq")
_NSEC = 1_000_000_000

#: A queue key: (address space, address) or (backing, offset); see the module docstring.
Key = tuple[object, int]


class _Waiter:
    __slots__ = ("bitset", "future", "key", "thread")

    def __init__(self, key: Key, bitset: int, thread: GuestProcess, future: asyncio.Future[int]) -> None:
        self.key = key
        self.bitset = bitset
        self.thread = thread
        self.future = future


class FutexTable:
    """Every thread of a run waiting on a futex, by key, oldest first."""

    def __init__(self) -> None:
        self._queues: dict[Key, list[_Waiter]] = {}

    def waiting(self, key: Key) -> int:
        """How many threads wait on ``key`` (for tests)."""
        return len(self._queues.get(key, ()))

    def enqueue(self, key: Key, bitset: int, thread: GuestProcess, deadline: tuple[int, int] | None) -> Awaitable[int]:
        """Queue ``thread`` on ``key`` now; the awaitable gives 0 when woken, -ETIMEDOUT at
        ``deadline`` (a clock id and the time on it in nanoseconds)."""
        loop = asyncio.get_running_loop()
        w = _Waiter(key, bitset, thread, loop.create_future())
        self._queues.setdefault(key, []).append(w)
        timers: list[asyncio.TimerHandle] = []
        if deadline is not None:
            self._arm(w, deadline, timers)
        return self._wait(w, timers)

    async def _wait(self, w: _Waiter, timers: list[asyncio.TimerHandle]) -> int:
        try:
            return await w.future
        finally:
            for timer in timers:
                timer.cancel()
            self._remove(w)

    def _arm(self, w: _Waiter, deadline: tuple[int, int], timers: list[asyncio.TimerHandle]) -> None:
        if w.future.done():
            return  # woken, or its thread is over
        clock, end = deadline
        left = end - time.clock_gettime_ns(clock)
        if left <= 0:
            if not w.future.done():
                w.future.set_result(-errno.ETIMEDOUT)
            self._remove(w)
            return
        # The loop's timers may fire a little early (whole milliseconds): the clock is read
        # again then, and a timeout never ends before its deadline.
        timers[:] = [asyncio.get_running_loop().call_later(left / 1e9 + 0.0001, self._arm, w, deadline, timers)]

    def _remove(self, w: _Waiter) -> None:
        queue = self._queues.get(w.key)
        if queue is not None and w in queue:
            queue.remove(w)
            if not queue:
                del self._queues[w.key]

    def wake(self, key: Key, n: int, bitset: int = FUTEX_BITSET_MATCH_ANY) -> int:
        """Wake up to ``n`` waiters on ``key`` whose bitset meets ``bitset`` (at least one, as Linux)."""
        woken = 0
        for w in list(self._queues.get(key, ())):
            if not w.bitset & bitset:
                continue
            self._remove(w)
            if not w.future.done():
                w.future.set_result(0)
            woken += 1
            if woken >= n:
                break
        return woken

    def requeue(self, key: Key, key2: Key, n_wake: int, n_requeue: int) -> int:
        """Wake ``n_wake`` waiters of ``key``, move up to ``n_requeue`` more to ``key2``; both counted."""
        count = 0
        for w in list(self._queues.get(key, ())):
            if count - n_wake >= n_requeue:
                break
            count += 1
            self._remove(w)
            if count <= n_wake:
                if not w.future.done():
                    w.future.set_result(0)
                continue
            w.key = key2
            self._queues.setdefault(key2, []).append(w)
        return count

    def forget(self, thread: GuestProcess) -> None:
        """``thread`` is over: it waits no more (its waits may never have been awaited)."""
        for queue in list(self._queues.values()):
            for w in list(queue):
                if w.thread is thread:
                    self._remove(w)
                    w.future.cancel()


# ------------------------------------------------------------------ the call


#: The highest address Linux's ``access_ok`` takes for a word (x86-64, 4-level paging).
_USER_PTR_MAX = (1 << 47) - 4096


def _key(mm: AddressSpace, addr: int, private: bool) -> Key:
    if addr & 3:
        raise SyscallError(errno.EINVAL)
    if addr > _USER_PTR_MAX:
        raise SyscallError(errno.EFAULT)  # not a user address: checked even where no page is looked up
    if private:
        return (mm, addr)
    v = mm.find(addr)
    if v is None or not v.prot & PROT_READ:
        raise SyscallError(errno.EFAULT)  # Linux looks the page up: none there, or PROT_NONE
    return (v.backing, v.offset + (addr - v.start))


def _load(mm: AddressSpace, addr: int) -> int:
    try:
        return int(_U32.unpack(mm.read(addr, 4))[0])
    except GuestFault as exc:
        raise SyscallError(errno.EFAULT) from exc


def _timeout(mm: AddressSpace, addr: int) -> tuple[int, int]:
    try:
        sec, nsec = _TIMESPEC.unpack(mm.read(addr, _TIMESPEC.size))
    except GuestFault as exc:
        raise SyscallError(errno.EFAULT) from exc
    if sec < 0 or not 0 <= nsec < _NSEC:
        raise SyscallError(errno.EINVAL)
    return sec, nsec


#: A timeout further away than this (about 30 years) is no timeout: the loop's timers need not hold it.
_FOREVER = 1e9


def _deadline(cmd: int, op: int, ts: tuple[int, int]) -> tuple[int, int] | None:
    """The clock and the time on it a timeout ends at: relative for FUTEX_WAIT (monotonic),
    absolute on the chosen clock otherwise."""
    clock = time.CLOCK_REALTIME if cmd != FUTEX_WAIT and op & FUTEX_CLOCK_REALTIME else time.CLOCK_MONOTONIC
    end = ts[0] * _NSEC + ts[1]
    now = time.clock_gettime_ns(clock)
    if cmd == FUTEX_WAIT:
        end += now
    if end - now > _FOREVER * _NSEC:
        return None
    return clock, end


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _wake_op(p: GuestProcess, k1: Key, addr2: int, k2: Key, n1: int, n2: int, encoded: int) -> int:
    op, cmp = (encoded >> 28) & 0xF, (encoded >> 24) & 0xF
    oparg = _s32(((encoded >> 12) & 0xFFF) << 20) >> 20
    cmparg = _s32((encoded & 0xFFF) << 20) >> 20
    if op & FUTEX_OP_OPARG_SHIFT:
        oparg = 1 << (oparg & 31)
        op &= ~FUTEX_OP_OPARG_SHIFT
    if op > 4:
        raise SyscallError(errno.ENOSYS)
    try:
        old = _s32(int(_U32.unpack(p.mm.read(addr2, 4))[0]))
        new = (oparg, old + oparg, old | oparg, old & ~oparg, old ^ oparg)[op]
        p.mm.write(addr2, _U32.pack(new & 0xFFFFFFFF))
    except GuestFault as exc:
        raise SyscallError(errno.EFAULT) from exc
    tests = {
        0: old == cmparg,
        1: old != cmparg,
        2: old < cmparg,
        3: old <= cmparg,
        4: old > cmparg,
        5: old >= cmparg,
    }
    if cmp not in tests:
        raise SyscallError(errno.ENOSYS)
    table = p.kernel.futexes
    woken = table.wake(k1, n1)
    if tests[cmp]:
        woken += table.wake(k2, n2)
    return woken


def _wait(
    p: GuestProcess, key: Key, uaddr: int, val: int, bitset: int, deadline: tuple[int, int] | None = None
) -> Awaitable[int]:
    if _load(p.mm, uaddr) != val & 0xFFFFFFFF:
        raise SyscallError(errno.EAGAIN)
    # Compared and queued in one step: no other thread's call runs in between.
    return p.kernel.futexes.enqueue(key, bitset, p, deadline)


async def _timed_wait(p: GuestProcess, key: Key, uaddr: int, val: int, bitset: int, deadline: tuple[int, int]) -> int:
    """A wait with a timeout.  Cut short by a signal it is Linux's ``-ERESTART_RESTARTBLOCK``:
    ``EINTR`` when a handler runs (``SA_RESTART`` or not); otherwise ``restart_syscall``
    compares again and waits until the same deadline."""
    try:
        return await _wait(p, key, uaddr, val, bitset, deadline)
    except asyncio.CancelledError:
        p.restart_block = ("futex", lambda: _timed_wait(p, key, uaddr, val, bitset, deadline))
        raise


def futex(p: GuestProcess, uaddr: int, op: int, val: int, utime: int, uaddr2: int, val3: int) -> int | Awaitable[int]:
    """``futex(2)``: the operations glibc uses (no priority inheritance: ``ENOSYS``)."""
    op &= 0xFFFFFFFF
    cmd = op & FUTEX_CMD_MASK
    private = bool(op & FUTEX_PRIVATE_FLAG)
    waits = cmd in (FUTEX_WAIT, FUTEX_WAIT_BITSET)
    ts = _timeout(p.mm, utime) if waits and utime else None
    if op & FUTEX_CLOCK_REALTIME and not waits:
        raise SyscallError(errno.ENOSYS)
    mm, table = p.mm, p.kernel.futexes
    val3 &= 0xFFFFFFFF
    if waits:
        bitset = FUTEX_BITSET_MATCH_ANY if cmd == FUTEX_WAIT else val3
        if not bitset:
            raise SyscallError(errno.EINVAL)
        key = _key(mm, uaddr, private)
        deadline = None if ts is None else _deadline(cmd, op, ts)
        if deadline is None:
            return _wait(p, key, uaddr, val, bitset)
        return _timed_wait(p, key, uaddr, val, bitset, deadline)
    if cmd in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
        bitset = FUTEX_BITSET_MATCH_ANY if cmd == FUTEX_WAKE else val3
        if not bitset:
            raise SyscallError(errno.EINVAL)
        return table.wake(_key(mm, uaddr, private), _s32(val), bitset)
    if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
        n_wake, n_requeue = _s32(val), _s32(utime)
        if n_wake < 0 or n_requeue < 0:
            raise SyscallError(errno.EINVAL)
        k1, k2 = _key(mm, uaddr, private), _key(mm, uaddr2, private)
        if cmd == FUTEX_CMP_REQUEUE and _load(mm, uaddr) != val3:
            raise SyscallError(errno.EAGAIN)
        return table.requeue(k1, k2, n_wake, n_requeue)
    if cmd == FUTEX_WAKE_OP:
        k1, k2 = _key(mm, uaddr, private), _key(mm, uaddr2, private)
        return _wake_op(p, k1, uaddr2, k2, _s32(val), _s32(utime), val3)
    raise SyscallError(errno.ENOSYS)


def wake_cleared_tid(p: GuestProcess, addr: int) -> None:
    """A thread with a ``clear_child_tid`` address is over: store 0 there and wake one waiter.

    This is how ``pthread_join`` learns of the end.  A bad address is ignored, as Linux ignores it.
    """
    try:
        p.mm.write(addr, _U32.pack(0))
    except (GuestFault, SyscallError):
        return
    p.kernel.futexes.wake((p.mm, addr), 1)
    v = p.mm.find(addr)
    if v is not None:
        p.kernel.futexes.wake((v.backing, v.offset + (addr - v.start)), 1)
