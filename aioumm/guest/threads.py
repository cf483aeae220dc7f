"""Guest threads: ``clone(CLONE_VM | CLONE_THREAD | ...)``, as glibc's ``pthread_create`` calls it.

A thread is a stub of its own (a host process: one address space each) that maps
the same guest memory as its process's other threads.  Every backing the guest
sees is a file both sides map ``MAP_SHARED`` (the physmem file, shared anonymous
memory, the program's file): so a store by one thread is a store into the file,
and every other thread's stub sees it at once.  Only the *mappings* are per stub,
and they must stay the same in all of them.

Mappings: the ordering argument
-------------------------------

A mapping change (``mmap``, ``munmap``, ``mprotect``, ``mremap``, ``brk``...)
is made in the controller's :class:`~aioumm.guest.memory.AddressSpace`, which
queues the same records on every stub of the process (its ``_Mirror``).  A stub
runs its queued records before it runs guest code again (``Stub.resume`` flushes
first), so a thread stopped in the controller (waiting in a syscall, or between
two reports) can never see an old mapping.  The only threads that could are those
running guest code at the moment of the change.  So, before the thread that made
the change gets its answer (:meth:`ThreadGroup.settle`):

1. every other thread whose stub is running (guest code, or a batch of records
   that it will follow with guest code) is interrupted (``Stub.interrupt``: a
   ``SIGALRM`` report), and
2. the change's thread waits until each of them has reported: from then on that
   stub is stopped, and it flushes the new records before it runs again.

A thread can observe a mapping only by running guest code after the change's
syscall returned, and none of them does with a stale mapping after step 2.

Pages are the second half.  ``munmap`` gives the range's physmem pages back, and
a later ``mmap`` may hand them out at another address; a thread still running with
the old mapping (before step 2 stops it) could then write into the new mapping.
So while a process has threads, freed physmem ranges are held back
(``PhysMem.defer_release``) and given back only when a :meth:`settle` started
after the free has seen every other stub stop.

Everything else a thread shares is one Python object named by each thread
(descriptor table, file system context, signal dispositions, the process state
of :class:`~aioumm.guest.process._ProcessState`); what is its own is the thread's
:class:`~aioumm.guest.process.GuestProcess`: tid, stub and registers (``fs_base``
is the TLS pointer), signal mask and pending set, alternate stack,
``clear_child_tid``.

Ends: ``exit`` ends one thread (its ``clear_child_tid`` word is zeroed and woken,
which ``pthread_join`` waits for); ``exit_group``, a fatal signal or ``execve``
end the others, which stop wherever they are as they would for ``SIGKILL``.  The
last thread out ends the process, with the group's status if one was set.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
from typing import TYPE_CHECKING

from aioumm.errors import AioummError

from .errors import SyscallError
from .futex import wake_cleared_tid
from .signals import SignalState, sigbit

if TYPE_CHECKING:
    from .process import GuestProcess

__all__ = ["ThreadGroup", "clone_thread", "start_clone"]

log = logging.getLogger("aioumm.guest")

CLONE_SETTLS = 0x80000
CLONE_PARENT_SETTID = 0x100000
CLONE_CHILD_CLEARTID = 0x200000
CLONE_CHILD_SETTID = 0x1000000


def start_clone(
    parent: GuestProcess, child: GuestProcess, new_id: int, flags: int, newsp: int, tls: int, ptid: int, ctid: int
) -> None:
    """What ``clone`` sets up in a new process or thread before it runs: its stack pointer,
    TLS, and the tid stores and clear-on-exit address its flags ask for."""
    regs = child.stub.regs
    if newsp:
        regs.rsp = newsp
    if flags & CLONE_SETTLS:
        regs.fs_base = tls
    # A bad tid pointer is no error: Linux ignores the failed store too.
    if flags & CLONE_CHILD_SETTID:
        with contextlib.suppress(SyscallError):
            child.mm.write_i32(ctid, new_id)
    if flags & CLONE_PARENT_SETTID:
        with contextlib.suppress(SyscallError):
            parent.mm.write_i32(ptid, new_id)
    if flags & CLONE_CHILD_CLEARTID:
        child.clear_child_tid = ctid


class ThreadGroup:
    """The live threads of one process, and how the process ends."""

    def __init__(self, leader: GuestProcess) -> None:
        #: The thread the run's process table holds for the process (the first, or one that exec'd).
        self.leader = leader
        #: Live threads by tid, oldest first.
        self.live: dict[int, GuestProcess] = {leader.tid: leader}
        #: The process's wait status once ``exit_group`` or a fatal signal ended it.
        self.exit_status: int | None = None
        self.ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._alone: list[asyncio.Future[None]] = []
        #: While set, no thread but the holder runs guest code (:meth:`hold_others`).
        self.hold: asyncio.Future[None] | None = None

    def add(self, thread: GuestProcess) -> None:
        """A new thread of this process."""
        self.live[thread.tid] = thread

    def signal_target(self, sig: int) -> GuestProcess:
        """Which thread a process-directed signal goes to: the first that does not block it."""
        for t in self.live.values():
            if sig == signal.SIGKILL or not t.signals.blocked & sigbit(sig):
                return t
        # Every thread blocks it: it waits on the oldest one (until that one unblocks it).
        return next(iter(self.live.values()), self.leader)

    def end_all(self, status: int) -> None:
        """The whole process ends with ``status`` (``exit_group``, a fatal signal): stop every thread."""
        if self.exit_status is None:
            self.exit_status = status
        for t in self.live.values():
            t.kick_now()

    # ---------------------------------------------------------- mappings

    async def settle(self, thread: GuestProcess, result: int) -> int:
        """Wait until no other thread runs with an old mapping, then answer ``result``.

        See the module docstring for why this is enough.
        """
        physmem = thread.mm.physmem
        held = physmem.take_deferred()
        try:
            waits = [t.stop_running() for t in list(self.live.values()) if t is not thread]
            pending = [w for w in waits if w is not None]
            if pending:
                await asyncio.gather(*pending)
        finally:
            if physmem.fd >= 0:
                for offset, length in held:
                    physmem.release_now(offset, length)
        return result

    async def hold_others(self, thread: GuestProcess) -> None:
        """Stop every other thread and keep it stopped until :meth:`release` (``fork``
        copies the memory in one step that no thread's store can come between, as
        Linux's copy of the address space is)."""
        while self.hold is not None:
            await asyncio.shield(self.hold)
        self.hold = asyncio.get_running_loop().create_future()
        try:
            # A stopped thread is not answered from its stub's callback while the hold
            # lasts, and its task waits for the hold before it resumes the stub.
            waits = [t.stop_running() for t in list(self.live.values()) if t is not thread]
            pending = [w for w in waits if w is not None]
            if pending:
                await asyncio.gather(*pending)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        hold, self.hold = self.hold, None
        if hold is not None and not hold.done():
            hold.set_result(None)

    # ------------------------------------------------------------- exits

    def thread_over(self, thread: GuestProcess, status: int) -> int | None:
        """``thread`` is over (its stub is killed); the process's status if it was the last one."""
        thread.thread_done = True
        self.live.pop(thread.tid, None)
        if not thread.thread_exit_only:
            self.end_all(status)
        thread.kernel.futexes.forget(thread)
        if thread.clear_child_tid and self.live:
            wake_cleared_tid(thread, thread.clear_child_tid)
        thread.signals.cancel_timer()
        if thread.mm.unshare(thread.stub):
            thread.mm.close()
        if len(self.live) <= 1:
            waiters, self._alone = self._alone, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)
        if self.live:
            return None
        final = self.exit_status if self.exit_status is not None else status
        thread.close_process()
        thread.kernel.exited(self.leader, final)
        if not self.ended.done():
            self.ended.set_result(final)
        return final

    async def wait_end(self) -> int:
        """The process's wait status, once its last thread is over."""
        try:
            return await asyncio.shield(self.ended)
        except asyncio.CancelledError:
            self.end_all(int(signal.SIGKILL))  # the run is being shut down
            raise

    async def end_others(self, thread: GuestProcess) -> None:
        """``execve`` in ``thread``: every other thread ends first (``de_thread``)."""
        if len(self.live) <= 1:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._alone.append(fut)
        saved = self.exit_status
        self.exit_status = int(signal.SIGKILL)
        for t in self.live.values():
            if t is not thread:
                t.kick_now()
        try:
            await fut
        finally:
            self.exit_status = saved
        self.take_over(thread)

    def take_over(self, thread: GuestProcess) -> None:
        """``thread`` is the process's only one now: it takes the pid, as after Linux's ``execve``."""
        old = self.leader
        if old is thread:
            return
        kernel = thread.kernel
        del self.live[thread.tid]
        thread.tid = thread.pid
        self.live[thread.tid] = thread
        self.leader = thread
        if kernel.procs.get(thread.pid) is old:
            kernel.procs[thread.pid] = thread
        parent = thread.parent
        if parent is not None and parent.children.get(thread.pid) is old:
            parent.children[thread.pid] = thread
        for child in thread.children.values():
            child.parent = thread
        if kernel.init is old:
            kernel.init = thread
        thread.vfs.proc_pid = thread.stub.pid


async def clone_thread(p: GuestProcess, flags: int, newsp: int, ptid: int, ctid: int, tls: int) -> int:
    """A new thread of ``p``'s process, started at ``p``'s registers with stack ``newsp``; its tid."""
    from .process import GuestProcess  # the process layer builds on this module

    kernel = p.kernel
    spawner = kernel.spawner
    if spawner is None:
        raise SyscallError(errno.EAGAIN)  # a process made on its own has no stubs to give
    if kernel.tasks() >= kernel.max_tasks:
        raise SyscallError(errno.EAGAIN)  # as Linux at RLIMIT_NPROC
    try:
        stub = await spawner.spawn()
    except AioummError as exc:
        log.warning("clone in guest %d: no new stub: %s", p.pid, exc)
        raise SyscallError(errno.EAGAIN) from exc
    if p.thread_done or p.status is not None or (p.group is not None and p.group.exit_status is not None):
        stub.kill()  # the process ended while the stub started
        with contextlib.suppress(Exception):
            await stub.wait_exit()
        raise SyscallError(errno.EAGAIN)
    if p.group is None:
        p.group = ThreadGroup(p)
    group = p.group
    mm = p.mm
    mm.share(stub)
    mm.physmem.defer_release = True
    proc_pid = p.vfs.proc_pid
    try:
        t = GuestProcess(
            stub,
            layout=p.layout,
            vfs=p.vfs,
            fds=p.fds,
            strace=p.strace.out if p.strace is not None else None,
            kernel=kernel,
            pid=kernel.new_pid(),
            mm=mm,
            signals=SignalState(actions=p.signals.actions, blocked=p.signals.blocked),
            thread_of=p,
        )
    except BaseException:
        mm.unshare(stub)
        stub.kill()
        with contextlib.suppress(Exception):
            await stub.wait_exit()
        raise
    finally:
        p.vfs.proc_pid = proc_pid  # /proc/self stays the first stub's
    t.copy_identity(p)
    p.copy_registers_to(t)
    start_clone(p, t, t.tid, flags, newsp, tls, ptid, ctid)
    group.add(t)
    kernel.start(t)
    return t.tid
