"""The guest processes of one run: pids, parents and children, exits and reaping.

A :class:`ProcessTable` is the part of the guest's kernel that knows about more
than one process.  Every guest process of a run (the program ``run_program``
started, and everything it forks) is in it, from the ``fork`` that made it until
its parent reaps it.  Each live process is served by its own task on the event
loop (:meth:`GuestProcess.run`); a process waiting for anything (a pipe, a child,
a sleep) simply keeps its stub stopped while its task awaits, so a pipeline of
guests runs concurrently and the loop never blocks.

Pids are virtual: numbers handed out by the table from :data:`FIRST_PID` up and
never reused within a run.  The first process plays ``init``: orphans are
reparented to it while it lives.  When it exits, the guests still running may
be served until they exit too (:meth:`ProcessTable.wait_all`: a background job
outlives its shell, as natively) or killed (:meth:`ProcessTable.shutdown`).  It belongs to a process group and a
session that no guest leads (:data:`OUTER_GROUP`), like a program started by a
shell without job control.

Exit and reaping follow Linux:

* a process that exits closes its descriptors and frees its memory and stub at
  once, and stays a *zombie* (its wait status only) until its parent waits;
* its parent gets its exit signal (``SIGCHLD`` normally) as a pending-signal
  record with the ``siginfo`` a handler would see (:class:`ChildInfo`);
* a parent that ignores ``SIGCHLD`` (or set ``SA_NOCLDWAIT``) never sees zombies:
  its children are reaped as they exit;
* the exiting process's children go to ``init`` (zombies among them notify it);
* a process group that an exit leaves *orphaned* (no member has a parent in
  another group of the same session) while one of its members is stopped gets
  ``SIGHUP`` then ``SIGCONT`` (POSIX's rule; Linux's ``kill_orphaned_pgrp``).
  A process handed to ``init`` counts as having no such parent, as Linux counts
  a child of the global ``init``; the first guest's group (:data:`OUTER_GROUP`)
  has members outside the run and is never orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .futex import FutexTable
from .signals import SI_KERNEL, SIG_IGN, SigInfo

if TYPE_CHECKING:
    from .ipc import IpcNamespace
    from .process import GuestProcess, StubLike

__all__ = ["FIRST_PID", "OUTER_GROUP", "ChildInfo", "ProcessTable", "Spawner"]

log = logging.getLogger("aioumm.guest")

#: The first guest's pid; later ones count up from it.
FIRST_PID = 1000
#: Process group and session of the first guest: led by no guest (the runner's caller's).
OUTER_GROUP = FIRST_PID - 1

SA_NOCLDWAIT = 2
CLD_EXITED = 1
CLD_KILLED = 2
CLD_DUMPED = 3


class Spawner(Protocol):
    """What the table needs from the core's ``Controller``: new stubs for ``fork``."""

    async def spawn(self) -> StubLike: ...


@dataclass(frozen=True)
class ChildInfo:
    """The ``siginfo`` of a ``SIGCHLD``: which child, and how it ended."""

    pid: int
    uid: int
    #: ``CLD_EXITED``, ``CLD_KILLED`` or ``CLD_DUMPED``.
    code: int
    #: The exit code, or the signal number.
    status: int

    @classmethod
    def of(cls, child: GuestProcess) -> ChildInfo:
        st = child.status or 0
        if st & 0x7F:
            return cls(child.pid, child.uid, CLD_DUMPED if st & 0x80 else CLD_KILLED, st & 0x7F)
        return cls(child.pid, child.uid, CLD_EXITED, (st >> 8) & 0xFF)


class ProcessTable:
    """Every guest process of one run, by pid (zombies included until reaped)."""

    #: Processes one run may have at once, zombies included (like RLIMIT_NPROC): a guest
    #: fork bomb gets EAGAIN instead of filling the host with stubs.
    DEFAULT_MAX_PROCESSES = 256
    #: Threads and processes one run may have at once: each is a stub (about 40 KiB and
    #: three descriptors of the controller's), so a thread bomb is bounded too.
    DEFAULT_MAX_TASKS = 4096

    def __init__(
        self,
        spawner: Spawner | None = None,
        max_processes: int = DEFAULT_MAX_PROCESSES,
        max_tasks: int = DEFAULT_MAX_TASKS,
    ) -> None:
        #: Where ``fork`` gets new stubs; None: this table cannot fork.
        self.spawner = spawner
        self.max_processes = max_processes
        self.max_tasks = max(max_tasks, max_processes)
        self.procs: dict[int, GuestProcess] = {}
        #: The run's futex wait queues (threads, and processes sharing memory).
        self.futexes = FutexTable()
        #: The first process: reaper of orphans; its status is the run's.
        self.init: GuestProcess | None = None
        self._next_pid = FIRST_PID
        self._tasks: set[asyncio.Task[None]] = set()
        self.alive = 0
        #: The CPUs the run's guests may ask for: the controller's, before it pinned its thread.
        cpus = getattr(spawner, "cpus", None)
        self.cpus: frozenset[int] = cpus if isinstance(cpus, frozenset) else frozenset(os.sched_getaffinity(0))
        #: Set to stop :meth:`wait_all` early (the runner was told to end the run).
        self._ending: asyncio.Event | None = None
        #: The foreground process group of the controller's terminal, as the guests of its
        #: session (:data:`OUTER_GROUP`) see it: theirs to set (``TIOCSPGRP``), never the host's.
        self.terminal_pgrp = OUTER_GROUP
        self._ipc: IpcNamespace | None = None

    @property
    def ipc(self) -> IpcNamespace:
        """The run's System V IPC objects (not the host's); they go with the run.

        Made, and their module imported, when a guest first asks for one: few programs do.
        """
        if self._ipc is None:
            from .ipc import IpcNamespace

            self._ipc = IpcNamespace()
        return self._ipc

    def ipc_exit(self, pid: int) -> None:
        """Undo the ``SEM_UNDO`` adjustments of process ``pid``, if any guest used IPC at all."""
        if self._ipc is not None:
            self._ipc.exit(pid)

    def tasks(self) -> int:
        """Threads of every live process plus the processes (zombies count as one task)."""
        return sum(len(q.group.live) if q.group is not None else 1 for q in self.all())

    # ---------------------------------------------------------------- lookup

    def new_pid(self) -> int:
        """A pid no process of this run has had."""
        while self._next_pid in self.procs:
            self._next_pid += 1
        pid = self._next_pid
        self._next_pid += 1
        return pid

    def add(self, proc: GuestProcess) -> None:
        """Enter a new process (the first one becomes ``init``)."""
        self.procs[proc.pid] = proc
        self.alive += 1
        if self.init is None:
            self.init = proc

    def get(self, pid: int) -> GuestProcess | None:
        """The process with this pid (a zombie too), or None."""
        return self.procs.get(pid)

    def thread(self, tid: int) -> GuestProcess | None:
        """The live thread ``tid`` of the run (a single-threaded process is its own thread)."""
        for q in self._by_pid():
            if q.group is not None:
                t = q.group.live.get(tid)
                if t is not None:
                    return t
            elif q.tid == tid and q.status is None:
                return q
        return None

    def group(self, pgid: int) -> list[GuestProcess]:
        """The processes of process group ``pgid`` (zombies too), oldest first."""
        return [p for p in self._by_pid() if p.pgid == pgid]

    def _by_pid(self) -> Iterator[GuestProcess]:
        return (self.procs[pid] for pid in sorted(self.procs))

    def all(self) -> list[GuestProcess]:
        """Every process, oldest first."""
        return list(self._by_pid())

    # ------------------------------------------------------------- lifetime

    def start(self, proc: GuestProcess) -> asyncio.Task[None]:
        """Serve ``proc`` in a task of its own (a forked child)."""
        task = asyncio.ensure_future(self._life(proc))
        proc.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _life(proc: GuestProcess) -> None:
        try:
            await proc.run()
        except asyncio.CancelledError:
            pass  # the run is over: shutdown
        except Exception:
            log.exception("guest process %d failed; it counts as killed", proc.pid)

    async def run_init(self, proc: GuestProcess) -> int:
        """Serve the first process until it exits; return its wait status.

        Its errors (a stub that could not map its memory...) are raised here.
        """
        task = asyncio.ensure_future(proc.run())
        proc.task = task
        return await task

    def exited(self, proc: GuestProcess, status: int) -> None:
        """``proc`` is over with wait status ``status``: zombie, orphans, parent."""
        if proc.status is not None:
            return
        proc.status = status
        self.alive -= 1
        if proc.vfork_done is not None and not proc.vfork_done.done():
            proc.vfork_done.set_result(None)
        heir = self.init if self.init is not None and self.init.status is None else None
        for child in list(proc.children.values()):
            del proc.children[child.pid]
            child.parent = heir
            if heir is None:
                if child.status is not None:
                    self.procs.pop(child.pid, None)
                continue
            heir.children[child.pid] = child
            child.adopted = True
            if child.status is not None:
                self._notify(child)
            # The child may have been its group's last tie to the session.
            self._hangup_if_orphaned(child, proc, None)
        self._hangup_if_orphaned(proc, proc.parent, proc)
        parent = proc.parent
        if parent is None or parent.status is not None:
            self.procs.pop(proc.pid, None)  # nobody will wait for it
            return
        self._notify(proc)

    # ------------------------------------------------- orphaned process groups

    def orphaned_group(self, pgid: int, ignored: GuestProcess | None = None) -> bool:
        """Whether process group ``pgid`` is orphaned (``ignored`` not counted as a member).

        It is not while one live member has a parent in another group of the
        same session (Linux's ``will_become_orphaned_pgrp``).
        """
        if pgid == OUTER_GROUP:
            return False  # its leader and the rest of it are outside the run
        for p in self.group(pgid):
            if p is ignored or p.status is not None or p.adopted:
                continue
            parent = p.parent
            parent_pgid, parent_sid = (parent.pgid, parent.sid) if parent is not None else (OUTER_GROUP, OUTER_GROUP)
            if parent_pgid != pgid and parent_sid == p.sid:
                return False
        return True

    def _hangup_if_orphaned(
        self, proc: GuestProcess, parent: GuestProcess | None, ignored: GuestProcess | None
    ) -> None:
        # ``parent`` was ``proc``'s tie to the session: if the group is orphaned now and
        # has a stopped member, nobody could ever continue it, so each member gets
        # SIGHUP and SIGCONT.
        parent_pgid, parent_sid = (parent.pgid, parent.sid) if parent is not None else (OUTER_GROUP, OUTER_GROUP)
        pgid = proc.pgid
        if parent_pgid == pgid or parent_sid != proc.sid:
            return
        members = self.group(pgid)
        if not any(p.stopped for p in members) or not self.orphaned_group(pgid, ignored):
            return
        for sig in (signal.SIGHUP, signal.SIGCONT):
            for p in members:
                p.post_signal(sig, SigInfo(sig, SI_KERNEL))

    def _notify(self, child: GuestProcess) -> None:
        parent = child.parent
        assert parent is not None
        act = parent.signals.action(signal.SIGCHLD)
        if child.exit_signal:
            parent.post_signal(child.exit_signal, ChildInfo.of(child))
        if child.exit_signal == signal.SIGCHLD and (act.handler == SIG_IGN or act.flags & SA_NOCLDWAIT):
            self.reap(child)  # the parent does not want zombies
        parent.children_changed()

    def reap(self, child: GuestProcess) -> None:
        """Forget a zombie: its parent waited for it."""
        if child.parent is not None:
            child.parent.children.pop(child.pid, None)
        self.procs.pop(child.pid, None)

    async def wait_all(self) -> bool:
        """Serve the processes still running until every one has exited.

        New processes they fork are waited for too.  Returns False if
        :meth:`end_run` cut the wait short (the caller then shuts the rest down).
        """
        ending = self._ending = asyncio.Event()
        stop = asyncio.ensure_future(ending.wait())
        try:
            while not ending.is_set():
                tasks = [t for t in self._tasks if not t.done()]
                if not tasks:
                    return True
                await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            return False
        finally:
            stop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop
            self._ending = None

    def end_run(self) -> None:
        """Stop :meth:`wait_all` waiting: the run is to end now."""
        if self._ending is not None:
            self._ending.set()

    async def shutdown(self) -> None:
        """End every process still running (the first guest is gone) and release it."""
        procs = [p for p in self.procs.values() if p.status is None]
        for p in procs:
            if p.task is not None and not p.task.done():
                p.task.cancel()
        # Processes already over may still be reaping their stubs: wait for those too.
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for p in procs:
            await p.abandon()  # any that never got to run
        self.procs.clear()
        if self._ipc is not None:
            self._ipc.close()
