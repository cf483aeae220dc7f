"""One guest process: its stub, address space, descriptors, and the serve loop.

:meth:`GuestProcess.serve` is the guest's kernel: it resumes the stub, and for each
report either answers a trapped syscall (``SIGSYS``) through the handler table,
lets a preempted guest go on (``SIGALRM``: also how another guest's signal reaches
one that is running), or ends the guest for a fault it did not (yet) get to handle
(``SIGSEGV``, ``SIGILL``...: it dies of that signal, as it would natively with no
handler).

A process lives in a :class:`~aioumm.guest.kernel.ProcessTable` with the other
guests of its run; :meth:`GuestProcess.run` serves it until it exits and then
releases everything it held (a zombie is only its wait status).

Signals from elsewhere (another guest's ``kill``, a child's exit) go through
:meth:`GuestProcess.post_signal`.  A signal that must act now interrupts the
process wherever it is: a guest running in its stub is stopped with ``SIGALRM``;
a guest waiting in a syscall (a pipe, ``wait4``, a sleep) has its wait cancelled,
the syscall answers ``EINTR``, and the signal takes effect on the way out, as
Linux does it.  The calls that build or replace a process (``fork``, ``vfork``,
``execve``) are never interrupted; the signal acts when they are done.

A threaded process is one such object per thread (:mod:`.threads`): each serves
its own stub; what the threads share is named by all of them (see
:class:`_Shared`).  A syscall that changed the mappings is answered only once no
other thread can run with the old ones (``ThreadGroup.settle``).

Job control: a stop signal whose action is the default one (``SIGSTOP``, and
``SIGTSTP``, ``SIGTTIN``, ``SIGTTOU`` unless the process group is orphaned)
stops the process where it acts (:func:`.sigframe.deliver_signals`): its stub
is simply not resumed until ``SIGCONT`` (which resumes it whatever its
disposition, blocked or not) or ``SIGKILL``.  A syscall a stop cut short is
settled after the stop, as if the stop signal had been any signal without a
handler: it is restarted (``nanosleep`` through ``restart_syscall``, so it ends
at its first deadline), and a signal that came while stopped acts first.  The
parent learns of each stop and resume as Linux tells it: a ``SIGCHLD`` with
``CLD_STOPPED``/``CLD_CONTINUED`` (unless it set ``SA_NOCLDSTOP``) and one
report each for ``wait4``'s ``WUNTRACED``/``WCONTINUED`` and ``waitid``.  In a threaded
process a stop stops every thread, and ``SIGCONT`` resumes them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import resource
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TextIO, TypeVar, overload

from aioumm.report import SIGCONTEXT_REGISTERS
from aioumm.stub import State

from .binfmt import ExecPlan
from .elf import ElfImage
from .errors import GuestError, GuestExit, PartlyDone, SyscallError
from .files import FdTable, OpenFile, Vfs
from .kernel import ChildInfo, ProcessTable
from .layout import Layout, default_layout
from .loader import Interpreter, LoadedProgram, UnloadableInterpreter, load_program, setup_stack
from .memory import NULL_MAPPER, AddressSpace, PhysMem
from .sigframe import NO_RESTART, deliver_fault, deliver_signals, restart_text
from .signalfd import SignalFile
from .signals import SA_NOCLDSTOP, SigInfo, SignalState, is_realtime, sigbit
from .stack import StackImage
from .strace import Strace
from .table import NUMBERS

if TYPE_CHECKING:
    from .threads import ThreadGroup

__all__ = ["UNINTERRUPTIBLE", "GuestProcess", "Handler", "RegsLike", "ReportLike", "StubLike"]

log = logging.getLogger("aioumm.guest")

_U64 = 0xFFFFFFFFFFFFFFFF
_RESTART_SYSCALL = NUMBERS["restart_syscall"]
#: si_code of the SIGCHLD a stop or a resume sends (``<asm-generic/siginfo.h>``).
CLD_STOPPED = 5
CLD_CONTINUED = 6


class RegsLike(Protocol):
    """The stub's writable register view (see ``aioumm.report.Registers``)."""

    rax: int
    rbx: int
    rcx: int
    rdx: int
    rsi: int
    rdi: int
    rbp: int
    rsp: int
    r8: int
    r9: int
    r10: int
    r11: int
    r12: int
    r13: int
    r14: int
    r15: int
    rip: int
    eflags: int
    fs_base: int


class ReportLike(Protocol):
    """Why the stub stopped (see ``aioumm.report.Report``)."""

    @property
    def signal(self) -> int: ...
    @property
    def code(self) -> int: ...
    @property
    def addr(self) -> int: ...
    @property
    def syscall(self) -> int: ...


class StubLike(Protocol):
    """The core's stub, as far as a guest process uses it."""

    @property
    def regs(self) -> RegsLike: ...
    @property
    def pid(self) -> int: ...

    def mmap(
        self, addr: int, length: int, prot: int, fd: int = -1, offset: int = 0, *, shared: bool = True
    ) -> None: ...
    def munmap(self, addr: int, length: int) -> None: ...
    def mprotect(self, addr: int, length: int, prot: int) -> None: ...
    async def flush(self) -> None: ...
    async def resume(self, answer: Callable[[Any], bool] | None = None) -> ReportLike: ...
    def kill(self) -> None: ...
    def interrupt(self) -> None: ...
    async def wait_exit(self) -> object: ...


#: A syscall handler: ``handler(process, a0, ..., a5)`` -> result, maybe awaitable.
Handler = Callable[..., "int | Awaitable[int]"]
HANDLERS: dict[int, Handler] = {}
#: Syscall numbers whose waits a signal does not interrupt (fork, vfork, execve...).
UNINTERRUPTIBLE: set[int] = set()

#: Registers a new program starts with cleared (rsp and rip are set).
_GENERAL_REGS = [r for r in SIGCONTEXT_REGISTERS if r not in ("rsp", "rip")]
#: What a forked child takes over from its parent (the FPU state is the core's: see README).
_FORK_REGS = [*_GENERAL_REGS, "rsp", "rip", "fs_base"]


_T = TypeVar("_T")


class _ProcessState:
    """What the threads of one process share (one object, named by each thread)."""

    parent: GuestProcess | None
    children: dict[int, GuestProcess]
    pgid: int
    sid: int
    exit_signal: int
    status: int | None
    did_exec: bool
    signal_info: dict[int, ChildInfo]
    child_waiters: list[asyncio.Future[None]]
    rlimits: dict[int, tuple[int, int]]
    personality: int


class _Shared(Generic[_T]):
    """An attribute of the process, not of the thread: kept in its :class:`_ProcessState`."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name.lstrip("_")

    @overload
    def __get__(self, obj: None, owner: type) -> _Shared[_T]: ...
    @overload
    def __get__(self, obj: GuestProcess, owner: type) -> _T: ...
    def __get__(self, obj: GuestProcess | None, owner: type) -> _Shared[_T] | _T:
        if obj is None:
            return self
        value: _T = getattr(obj.process_state, self.name)
        return value

    def __set__(self, obj: GuestProcess, value: _T) -> None:
        setattr(obj.process_state, self.name, value)


class _Waiting:
    """A syscall whose handler gave an awaitable: answered once it is done."""

    __slots__ = ("args", "awaitable", "nr", "settling", "shown", "unknown")

    def __init__(self, nr: int, args: tuple[int, ...], shown: str | None, unknown: bool) -> None:
        self.nr = nr
        self.args = args
        self.shown = shown  # the arguments as shown before the call (execve's memory goes)
        self.unknown = unknown
        self.awaitable: Awaitable[int] | None = None
        #: The call is done; its answer waits for the other threads (not interruptible).
        self.settling = False


#: ``_answer``'s mark for a syscall it answered without letting the stub go on (a stop).
_ANSWERED = _Waiting(-1, (), None, False)


class GuestProcess:
    """A guest thread (the first one of a process: the process) and the loop that serves its syscalls.

    A single-threaded process is one object.  Each thread ``clone`` makes
    (:mod:`.threads`) is another one, with its own stub, registers, signal mask
    and tid; the attributes declared :class:`_Shared` below, the address space,
    the descriptor table, the file system context and the signal dispositions
    are the process's, the same for all its threads.
    """

    process_state: _ProcessState
    pid: int
    tid: int
    #: The parent process (None: the first guest, whose parent is outside).
    parent: _Shared[GuestProcess | None] = _Shared()
    #: Children not yet reaped (zombies too), by pid.
    children: _Shared[dict[int, GuestProcess]] = _Shared()
    pgid: _Shared[int] = _Shared()
    sid: _Shared[int] = _Shared()
    #: Sent to the parent at exit (``clone``'s low byte; 0: none).
    exit_signal: _Shared[int] = _Shared()
    #: The wait status once the process is over (it is a zombie until reaped).
    status: _Shared[int | None] = _Shared()
    #: Whether it has called ``execve`` since it was forked (``setpgid`` cares).
    did_exec: _Shared[bool] = _Shared()
    #: The ``siginfo`` of the last pending ``SIGCHLD`` (for a guest handler).
    signal_info: _Shared[dict[int, ChildInfo]] = _Shared()
    _child_waiters: _Shared[list[asyncio.Future[None]]] = _Shared()
    rlimits: _Shared[dict[int, tuple[int, int]]] = _Shared()
    #: ``personality(2)``'s value (``PER_LINUX32`` makes ``uname`` say i686).
    personality: _Shared[int] = _Shared()

    def __init__(
        self,
        stub: StubLike,
        *,
        layout: Layout | None = None,
        vfs: Vfs | None = None,
        fds: FdTable | None = None,
        strace: TextIO | None = None,
        physmem: PhysMem | None = None,
        ppid: int | None = None,
        kernel: ProcessTable | None = None,
        pid: int | None = None,
        mm: AddressSpace | None = None,
        signals: SignalState | None = None,
        thread_of: GuestProcess | None = None,
    ) -> None:
        #: The process this thread belongs to's shared state (see :class:`_Shared`).
        self.process_state = thread_of.process_state if thread_of is not None else _ProcessState()
        #: The threads of the process, once it has more than one (:mod:`.threads`).
        self.group: ThreadGroup | None = thread_of.group if thread_of is not None else None
        self.stub = stub
        self.layout = layout if layout is not None else default_layout()
        self.mm = mm if mm is not None else AddressSpace(stub, self.layout, physmem)
        self.vfs = vfs if vfs is not None else Vfs("/")
        self.vfs.proc_pid = stub.pid  # what /proc/self means to this guest
        self.fds = fds if fds is not None else FdTable()
        self.signals = signals if signals is not None else SignalState()
        #: The run's processes (a process made on its own gets a table of its own).
        self.kernel = kernel if kernel is not None else ProcessTable()
        #: The thread's tid (the first thread's is the pid).
        self.tid = pid if pid is not None else stub.pid
        #: The guest's pid: virtual, from the table (on its own: the stub's host pid).
        self.pid = thread_of.pid if thread_of is not None else self.tid
        self._outer_ppid = os.getppid() if ppid is None else ppid
        if thread_of is None:
            self.parent = None
            self.children = {}
            self.pgid = self.sid = self.pid
            self.exit_signal = int(signal.SIGCHLD)
            self.status = None
            self.did_exec = False
            self.signal_info = {}
            self._child_waiters = []
            self.personality = 0
        #: Set when a ``vfork`` child execs or exits: its parent may go on.
        self.vfork_done: asyncio.Future[None] | None = None
        #: Whether this thread is over (the process may not be: see :mod:`.threads`).
        self.thread_done = False
        #: Set by ``exit`` (not ``exit_group``): only this thread ends.
        self.thread_exit_only = False
        #: Futures for the stub's next report (a mapping change waits for it: :mod:`.threads`).
        self.report_waiters: list[asyncio.Future[None]] = []
        #: The stop signal while the process is stopped (job control); 0 while it runs.
        self.stopped = 0
        #: A stop (its signal) or a resume that the parent's ``wait`` has not reported yet.
        self.stop_report = 0
        self.cont_report = False
        #: The syscall a stop cut short, settled once the process goes on.
        self.stopped_in: int | None = None
        self._resumed: asyncio.Future[None] | None = None
        #: Whether it was handed to ``init`` when its parent exited (for Linux, a
        #: parent that never ties a process group to its session).
        self.adopted = False
        #: How ``restart_syscall`` goes on with a sleep a signal without a handler
        #: cut short: the call's name and what resumes it (see ``sigframe``).
        self.restart_block: tuple[str, Callable[[], Awaitable[int]]] | None = None
        #: The task serving this process (see ``ProcessTable.start``).
        self.task: asyncio.Task[Any] | None = None
        #: A note for this syscall's strace line (why it failed, when that is ours).
        self.note: str | None = None
        self._signal_waiter: asyncio.Future[None] | None = None
        #: The signals a blocking signalfd read waits for.
        self.signalfd_waiting = 0
        self._in_guest = False
        self._waiting: _Waiting | None = None  # a syscall the fast path left to serve()
        self._interruptible = False
        self._kicked = False
        self._interrupted = False
        self._closed = False
        #: Error code, trap number and CR2 of the fault being delivered (for its sigcontext).
        self.trap: tuple[int, int, int] = (0, 0, 0)
        #: This syscall's arguments as strace should show them, when a handler knows better.
        self.trace_args: str | None = None
        self.uid, self.euid = os.getuid(), os.geteuid()
        self.gid, self.egid = os.getgid(), os.getegid()
        self.exe = ""
        self.comm = b""
        #: What ``/proc/self/cmdline`` and ``environ`` show: the argv and envp of the last exec.
        self.cmdline = b""
        self.environ = b""
        #: The nice value (-20..19) and the I/O priority: kept, not applied to the host.
        self.nice = 0
        self.ioprio = 0
        #: The CPUs ``sched_setaffinity`` chose (None: the controller's).
        self.affinity: frozenset[int] | None = None
        self.no_new_privs = False
        self.clear_child_tid = 0
        self.robust_list = (0, 0)
        if thread_of is None:
            self.rlimits = {}
            for res in range(16):
                try:
                    self.rlimits[res] = _rlim_in(resource.getrlimit(res))
                except (ValueError, OSError):
                    self.rlimits[res] = (_U64, _U64)
            self.rlimits[resource.RLIMIT_STACK] = (self.layout.stack_size, _U64)
            self.rlimits[resource.RLIMIT_NOFILE] = (self.fds.limit, self.fds.limit)
        self.strace = Strace(strace, prefix=self._strace_prefix) if strace is not None else None
        #: Re-raise handler bugs instead of answering ENOSYS (for tests).
        self.raise_internal_errors = False
        if thread_of is None:
            self.kernel.add(self)

    @property
    def ppid(self) -> int:
        """The parent's pid (the first guest's parent is whoever ran the runner)."""
        return self.parent.pid if self.parent is not None else self._outer_ppid

    @property
    def process(self) -> GuestProcess:
        """The object the run's process table holds for this thread's process."""
        if self.group is not None:
            return self.group.leader
        return self

    @property
    def running_code(self) -> bool:
        """Whether the guest is running its own code now (not waiting in a syscall)."""
        return self._in_guest

    @property
    def host_pid(self) -> int:
        """The stub's pid on the host (its CPU clocks are the guest's)."""
        return self.stub.pid

    def _strace_prefix(self) -> str:
        # As strace -f does: lines name their thread once there is more than one.
        many = self.kernel.alive > 1 or (self.group is not None and len(self.group.live) > 1)
        return f"[pid {self.tid:5d}] " if many else ""

    # -------------------------------------------------------------- set-up

    def inherit_stdio(self, stdio: tuple[int, int, int] = (0, 1, 2)) -> None:
        """Guest descriptors 0, 1 and 2 become duplicates of the host descriptors ``stdio``."""
        for guest_fd, fd in enumerate(stdio):
            try:
                host = os.dup(fd)
            except OSError:
                continue  # the controller has no such descriptor: neither has the guest
            try:
                flags = fcntl.fcntl(host, fcntl.F_GETFL) & (os.O_ACCMODE | os.O_APPEND)
            except OSError:
                flags = os.O_RDWR
            self.fds.install_at(guest_fd, OpenFile(host, f"/proc/self/fd/{fd}", flags=flags))

    def exec_image(
        self,
        image: ElfImage,
        fd: int,
        argv: list[bytes],
        envp: list[bytes],
        execfn: bytes,
        exe_path: str,
        interp: Interpreter | None = None,
    ) -> None:
        """Fill the (empty) address space with ``image`` (and its loader ``interp``)
        and set the start registers."""
        loaded = self._load(self.mm, image, fd, exe_path, interp, argv, envp, execfn)
        self.exe = exe_path
        # As Linux: the last part of the name it was started by, not of the file that is (a
        # symlink's name: python3, not python3.11).
        self.comm = os.path.basename(execfn)[:15]
        self.cmdline, self.environ = _nul_joined(argv), _nul_joined(envp)
        self._start_at(loaded)

    def _load(
        self,
        mm: AddressSpace,
        image: ElfImage,
        fd: int,
        exe_path: str,
        interp: Interpreter | None,
        argv: list[bytes],
        envp: list[bytes],
        execfn: bytes,
    ) -> tuple[LoadedProgram, StackImage] | None:
        """Map the program, its loader and its stack into ``mm``.

        None when the loader cannot be mapped: as on Linux, the exec still goes
        ahead (the old mappings are gone by then) and the new program dies of
        ``SIGSEGV`` at once; what ``mm`` got so far is dropped.
        """
        try:
            prog = load_program(mm, image, fd, exe_path, interp)
        except UnloadableInterpreter:
            mm.unmap(0, mm.layout.stub_start)
            return None
        stack = setup_stack(
            mm,
            prog,
            argv,
            envp,
            execfn,
            exec_stack=image.exec_stack,
            creds=(self.uid, self.euid, self.gid, self.egid),
        )
        return prog, stack

    def _start_at(self, loaded: tuple[LoadedProgram, StackImage] | None) -> None:
        regs = self.stub.regs
        for name in _GENERAL_REGS:
            setattr(regs, name, 0)
        regs.fs_base = 0
        if loaded is None:
            # Nothing is mapped: the first instruction fetch faults (SIGSEGV).
            regs.rsp = regs.rip = 0
            return
        prog, stack = loaded
        regs.rsp = stack.sp
        regs.rip = prog.start

    def execve(self, plan: ExecPlan, envp: list[bytes]) -> None:
        """Replace the program (``execve`` once ``plan`` is ready).

        The new image and its stack are built in a fresh address space first; a
        failure there (``E2BIG``, ``ENOMEM``) leaves the old program running.
        Then the old mappings go (a ``vfork`` child just lets go of its parent's),
        the new ones are queued on the stub, close-on-exec descriptors are closed
        and handled signals go back to their defaults.
        """
        new = AddressSpace(NULL_MAPPER, self.layout, PhysMem(self.mm.physmem.size))
        try:
            loaded = self._load(new, plan.image, plan.fd, plan.exe, plan.interp, plan.argv, envp, plan.filename)
        except GuestError as exc:  # the image does not fit in the address space
            new.close()
            raise SyscallError(errno.ENOMEM) from exc
        except BaseException:
            new.close()
            raise
        # The point of no return.
        old, stub, lay = self.mm, self.stub, self.layout
        if old.unshare(stub):
            old.close()
        stub.munmap(0, lay.stub_start)
        stub.munmap(lay.stub_end, lay.task_top - lay.stub_end)
        new.bind(stub)
        self.mm = new
        self._start_at(loaded)
        self.exe = plan.exe
        self.comm = os.path.basename(plan.filename)[:15]
        self.cmdline, self.environ = _nul_joined(plan.argv), _nul_joined(envp)
        self.fds.close_on_exec()
        self.signals.reset_for_exec()
        self.clear_child_tid = 0
        self.robust_list = (0, 0)
        self.did_exec = True
        if self.vfork_done is not None and not self.vfork_done.done():
            self.vfork_done.set_result(None)  # the parent may run again

    def fork(self, stub: StubLike, *, share_memory: bool = False) -> GuestProcess:
        """A child of this process in ``stub`` (stopped and ready), as ``fork`` makes it.

        Its address space is a copy of this one (``share_memory``: this very
        one, for ``vfork``), its descriptor table a copy naming the same open
        files, its working directory, umask, ids, limits, priorities,
        personality and signal dispositions this process's; its registers are
        these, with ``rax`` 0.  The caller starts it (``ProcessTable.start``).
        """
        if share_memory:
            self.mm.share(stub)
            mm = self.mm
        else:
            mm = self.mm.fork_copy(stub)
        vfs: Vfs | None = None
        fds: FdTable | None = None
        try:
            vfs = self.vfs.fork_copy()
            fds = self.fds.fork_copy()
            child = GuestProcess(
                stub,
                layout=self.layout,
                vfs=vfs,
                fds=fds,
                strace=self.strace.out if self.strace is not None else None,
                kernel=self.kernel,
                pid=self.kernel.new_pid(),
                mm=mm,
                signals=self.signals.fork_copy(),
            )
        except BaseException:
            if fds is not None:
                fds.close_all()
            if vfs is not None:
                vfs.close()
            if mm.unshare(stub):
                mm.close()
            raise
        child.parent = self.process
        self.children[child.pid] = child
        child.pgid, child.sid = self.pgid, self.sid
        child.personality = self.personality
        child.rlimits = dict(self.rlimits)
        child.copy_identity(self)
        child.robust_list = self.robust_list
        self.copy_registers_to(child)
        return child

    def copy_identity(self, other: GuestProcess) -> None:
        """Take ``other``'s ids, program names, priorities and flags (a new process or thread)."""
        self.uid, self.euid, self.gid, self.egid = other.uid, other.euid, other.gid, other.egid
        self.exe, self.comm = other.exe, other.comm
        self.cmdline, self.environ = other.cmdline, other.environ
        self.nice, self.ioprio = other.nice, other.ioprio
        self.affinity, self.no_new_privs = other.affinity, other.no_new_privs
        self.raise_internal_errors = other.raise_internal_errors

    def copy_registers_to(self, other: GuestProcess) -> None:
        """``other`` starts where this thread is (``rax`` 0: it returns from the same syscall)."""
        mine, theirs = self.stub.regs, other.stub.regs
        for name in _FORK_REGS:
            setattr(theirs, name, getattr(mine, name))
        theirs.rax = 0
        _copy_fpstate(mine, theirs)

    # ------------------------------------------------------------ signals

    def post_signal(self, sig: int, info: ChildInfo | SigInfo | None = None) -> None:
        """A signal from outside this process (another guest, a child's exit).

        An ignored signal is dropped at once, as Linux drops it; any other is
        made pending (``info`` kept for a handler), and if it has to act now
        the process is interrupted wherever it is (see the module docstring).
        ``SIGCONT`` resumes a stopped process even when it is blocked or
        ignored.  A real-time signal that finds its user's queue full raises
        ``SyscallError(EAGAIN)`` unless ``kill`` sent it.
        """
        if self.status is not None:
            return
        target = self.group.signal_target(sig) if self.group is not None else self
        target.post_to_thread(sig, info)

    def post_to_thread(self, sig: int, info: ChildInfo | SigInfo | None = None) -> None:
        """A signal for this very thread (``tgkill``), or the one a process signal chose."""
        if self.status is not None or self.thread_done:
            return
        if isinstance(info, ChildInfo):
            info = SigInfo(sig, info.code, info.pid, info.uid, status=info.status)
        if sig == signal.SIGCONT:
            self._resume_from_stop()
        if not self.signals.post(sig, info, queue_room=self._queue_room(sig)):
            return
        if sig == signal.SIGKILL and self.stopped:
            self.stopped = 0  # it wakes to die
            self._wake_from_stop()
        if self._waits_for(sig):
            return
        if self._must_act(sig):
            self.kick()

    def _queue_room(self, sig: int) -> bool:
        # RLIMIT_SIGPENDING bounds the siginfo entries queued for this process's user.
        if not is_realtime(sig):
            return True
        queued = sum(q.signals.queued() for q in self.kernel.all() if q.uid == self.uid and q.status is None)
        return queued < self.rlimits.get(resource.RLIMIT_SIGPENDING, (_U64, _U64))[0]

    def _waits_for(self, sig: int) -> bool:
        # rt_sigtimedwait waiting for this signal: it wakes (and takes it) instead of
        # the signal acting; a signalfd read waiting for it just wakes.
        bit = sigbit(sig)
        for fd in self.fds:
            file = self.fds.get(fd)
            if isinstance(file, SignalFile) and file.mask & bit:
                file.refresh(self.signals)  # poll sees it readable
        waiter = self._signal_waiter
        if (self.signals.waiting | self.signalfd_waiting) & bit and waiter is not None and not waiter.done():
            waiter.set_result(None)
        return bool(self.signals.waiting & bit)

    async def signal_event(self) -> None:
        """Wait until one of the signals in ``signals.waiting`` or ``signalfd_waiting`` is
        posted (``rt_sigtimedwait``, a signalfd read)."""
        self._signal_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._signal_waiter
        finally:
            self._signal_waiter = None

    # ---------------------------------------------------------- job control

    def enter_stop(self, sig: int, interrupted: int | None) -> None:
        """A stop signal acts: the process stops (``serve`` stays put) and its parent is told.

        In a threaded process every thread stops: one running guest code is
        interrupted and stays at its next report; one waiting in a syscall may
        finish it, but its stub is not resumed, so the guest sees the call return
        only after ``SIGCONT``.
        """
        self.stopped = self.stop_report = sig
        self.cont_report = False
        self.stopped_in = interrupted
        for t in self._other_threads():
            if not t.stopped:
                t.stopped, t.stopped_in = sig, None
                t.stop_running()
        self._report_to_parent(stop=sig)
        self._tell_parent(CLD_STOPPED, sig)

    def _resume_from_stop(self) -> None:
        if not self.stopped:
            return
        self.stopped = self.stop_report = 0
        self.cont_report = True
        self._wake_from_stop()
        for t in self._other_threads():
            if t.stopped:
                t.stopped = 0
                t._wake_from_stop()
        self._report_to_parent(stop=0)
        self._tell_parent(CLD_CONTINUED, int(signal.SIGCONT))

    def _other_threads(self) -> list[GuestProcess]:
        group = self.group
        return [t for t in group.live.values() if t is not self] if group is not None else []

    def _report_to_parent(self, *, stop: int) -> None:
        # The parent's wait looks at the thread its process table holds (the group's leader).
        group = self.group
        if group is not None and group.leader is not self:
            group.leader.stop_report, group.leader.cont_report = stop, not stop

    def _wake_from_stop(self) -> None:
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)

    def _tell_parent(self, code: int, status: int) -> None:
        parent = self.parent
        if parent is None or parent.status is not None:
            return
        if not parent.signals.action(signal.SIGCHLD).flags & SA_NOCLDSTOP:
            parent.post_signal(signal.SIGCHLD, SigInfo(signal.SIGCHLD, code, self.pid, self.uid, status=status))
        parent.children_changed()

    async def _stay_stopped(self) -> None:
        """Wait, stopped, until ``SIGCONT`` or ``SIGKILL``; then act on what is pending."""
        loop = asyncio.get_running_loop()
        while self.stopped:
            self._resumed = loop.create_future()
            try:
                await self._resumed
            finally:
                self._resumed = None
        interrupted, self.stopped_in = self.stopped_in, None
        deliver_signals(self, interrupted)

    def _must_act(self, sig: int) -> bool:
        # A signal that is not blocked (and not ignored: those are dropped) acts now:
        # its handler runs, or its default action ends the process.
        if sig == signal.SIGKILL:
            return True
        return not self.signals.blocked & sigbit(sig)

    def kick(self) -> None:
        """Make the process look at its pending signals as soon as it can.

        It happens two loop turns later: a wait that the same event also ends
        (``wait4`` woken by the child whose exit sent ``SIGCHLD``) finishes
        first, as on Linux, and the signal then acts on the way out.
        """
        loop = asyncio.get_running_loop()
        loop.call_soon(loop.call_soon, self._kick_now)

    def _kick_now(self) -> None:
        if self.stopped and self._group_exiting():
            self.stopped = 0  # a stopped thread wakes to end with its process
            self._wake_from_stop()
        if (
            self.status is not None
            or self.thread_done
            or not (
                self.signals.has_deliverable() or self.signals.pending & sigbit(signal.SIGKILL) or self._group_exiting()
            )
        ):
            return
        if self._interruptible and self.task is not None and not self.task.done():
            if self._kicked:
                return  # one cancel per wait: _wait takes back exactly one (two signals in one turn)
            self._kicked = True
            self.task.cancel()  # caught in _wait: the syscall answers EINTR
        elif self._in_guest:
            with contextlib.suppress(Exception):
                self.stub.interrupt()  # stops with SIGALRM; serve() delivers

    def kick_now(self) -> None:
        """Interrupt the thread now: its process is ending (:mod:`.threads`), or a signal must act."""
        self._kick_now()

    def _group_exiting(self) -> bool:
        return self.group is not None and self.group.exit_status is not None

    def stop_running(self) -> asyncio.Future[None] | None:
        """Stop the stub if it may be running guest code: a future for its next report (None: stopped).

        A stub running a batch is interrupted too: the interrupt waits and stops it
        before its first guest instruction.
        """
        if self.thread_done or getattr(self.stub, "state", None) is not State.RUNNING:
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.report_waiters.append(fut)
        try:
            self.stub.interrupt()
        except Exception:
            self._reported()  # the stub is dead: nothing runs there any more
        return fut

    def _reported(self) -> None:
        """The stub reported (or died): whoever waited for it to stop may go on."""
        waiters, self.report_waiters = self.report_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    # ------------------------------------------------------------ children

    def children_changed(self) -> None:
        """A child exited (or was given to this process): wake ``wait4``/``waitid``."""
        waiters, self._child_waiters = self._child_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def child_event(self) -> None:
        """Wait until a child changes state (interrupted waits raise as usual)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._child_waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self._child_waiters:
                self._child_waiters.remove(fut)

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Release every descriptor and the address space's files (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.signals.cancel_timer()
        if self.mm.unshare(self.stub):
            self.mm.close()
        self.close_process()

    def close_process(self) -> None:
        """Release what the process's threads share (its last thread is over)."""
        self._closed = True
        self.kernel.ipc_exit(self.pid)  # its SEM_UNDO adjustments
        self.fds.close_all()
        self.vfs.close()

    async def run(self) -> int:
        """Serve the process until it is over, release what it held, and tell the
        table (it becomes a zombie); return its wait status."""
        status = int(signal.SIGKILL)  # what an interrupted life counts as
        process_status: int | None = None
        try:
            status = await self.serve()
        finally:
            self.stub.kill()
            self._reported()
            if self.group is None:
                self.close()  # its pipe ends close now: readers see EOF at once
                self.kernel.exited(self, status)
                process_status = status
            else:
                self._closed = True
                process_status = self.group.thread_over(self, status)
            with contextlib.suppress(Exception):
                await self.stub.wait_exit()
        if process_status is None and self.group is not None:
            # Only this thread is over: the process's status comes with its last thread.
            return await self.group.wait_end()
        return status if process_status is None else process_status

    async def abandon(self) -> None:
        """Release a process whose task never ran (the run ended first)."""
        if self.status is not None:
            return
        self.stub.kill()
        self.close()
        self.kernel.exited(self, int(signal.SIGKILL))
        with contextlib.suppress(Exception):
            await self.stub.wait_exit()

    # --------------------------------------------------------------- serve

    async def serve(self) -> int:
        """Run the guest until it is over; return its ``wait`` status.

        Syscalls whose handler answers at once are answered from the stub's
        notification callback (``resume(answer)``), without waking this task;
        it takes over for the ones that wait, for faults and for interrupts.
        """
        try:
            while True:
                while self.group is not None and self.group.hold is not None:
                    await asyncio.shield(self.group.hold)  # another thread forks: see hold_others
                if self._group_exiting():
                    raise GuestExit(self._exit_status())
                if self.stopped:
                    await self._stay_stopped()
                    continue
                self._in_guest = True
                try:
                    report = await self.stub.resume(self._answer)
                except BaseException:
                    self._drop_waiting()
                    raise
                finally:
                    self._in_guest = False
                waiting, self._waiting = self._waiting, None
                if waiting is _ANSWERED:
                    # Stopped on the way out of a syscall the callback answered.  What ends the
                    # stop (SIGKILL, SIGCONT) may have come before this task ran: it acts now,
                    # before any guest code, as after a stop this task sat through.
                    await self._stay_stopped()
                    continue
                if waiting is not None:
                    await self._finish_waiting(waiting)
                    continue
                sig = report.signal
                if sig == signal.SIGSYS:
                    await self.syscall(report.syscall)
                elif self._group_exiting():
                    raise GuestExit(self._exit_status())
                elif sig == signal.SIGALRM:
                    # Preempted, or stopped so that a signal can act.
                    if self.signals.has_deliverable():
                        deliver_signals(self)
                else:
                    deliver_fault(self, report)
        except GuestExit as done:
            if self.strace is not None:
                sig = done.wait_status & 0x7F
                if sig:
                    core = " (core dumped)" if done.wait_status & 0x80 else ""
                    self.strace.emit(f"+++ killed by {_signame(sig)}{core} +++")
                else:
                    self.strace.emit(f"+++ exited with {done.wait_status >> 8} +++")
            return done.wait_status

    def _exit_status(self) -> int:
        group = self.group
        return group.exit_status if group is not None and group.exit_status is not None else int(signal.SIGKILL)

    def _answer(self, report: ReportLike) -> bool:
        """``resume``'s fast path: answer a syscall now if its handler does not wait."""
        if self.report_waiters:
            self._reported()
        if report.signal != signal.SIGSYS or (self.group is not None and self.group.hold is not None):
            return False
        self._waiting = self._start_syscall(report.syscall)
        if self._waiting is None and self.stopped:
            self._waiting = _ANSWERED  # a stop signal acted on the way out: serve() holds the stub
        return self._waiting is None

    def _drop_waiting(self) -> None:
        """Forget a syscall left by the fast path that will never be awaited (the stub died)."""
        waiting, self._waiting = self._waiting, None
        close = getattr(waiting and waiting.awaitable, "close", None)
        if close is not None:
            close()  # a coroutine never started: no "never awaited" warning

    async def syscall(self, nr: int) -> None:
        """Answer one trapped syscall (the stub is stopped with its registers in view)."""
        waiting = self._start_syscall(nr)
        if waiting is not None:
            await self._finish_waiting(waiting)

    def _start_syscall(self, nr: int) -> _Waiting | None:
        """Run the handler of syscall ``nr``; answer it unless it has to wait.

        Returns what ``_finish_waiting`` needs when the handler gave an
        awaitable, None when the syscall is answered (or the process is over:
        ``GuestExit`` goes through).
        """
        regs = self.stub.regs
        fetch = getattr(regs, "syscall_args", None)  # one frame lookup, when the view offers it
        args: tuple[int, ...] = (
            fetch() if fetch is not None else (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)
        )
        handler = HANDLERS.get(nr)
        # execve's arguments name memory that is gone once it succeeds: shown first.
        shown = self.strace.render_args(nr, args, self.mm) if self.strace is not None else None
        self.note = None
        self.trace_args = None
        self._interrupted = False
        group = self.group
        if group is not None and group.exit_status is not None:
            raise GuestExit(group.exit_status)  # the process is ending: no more syscalls
        records = self.mm.records
        if nr != _RESTART_SYSCALL:
            self.restart_block = None
        try:
            if handler is None:
                result = -errno.ENOSYS
            else:
                res = handler(self, *args)
                if not isinstance(res, int):
                    call = _Waiting(nr, args, shown, False)
                    call.awaitable = res
                    return call
                result = res
        except Exception as exc:
            result = self._failed(_Waiting(nr, args, shown, False), exc)
        if group is not None and (self.mm.records != records or self.mm.physmem.has_deferred):
            # The mappings changed: the other threads' stubs must follow before this one goes on.
            call = _Waiting(nr, args, shown, handler is None)
            call.awaitable = group.settle(self, result)
            call.settling = True
            return call
        self._answered(nr, args, shown, handler is None, result)
        return None

    async def _finish_waiting(self, call: _Waiting) -> None:
        """Await a syscall whose handler waits, then answer it."""
        aw, call.awaitable = call.awaitable, None
        assert aw is not None
        try:
            result = await aw if call.settling or call.nr in UNINTERRUPTIBLE else await self._wait(aw)
        except Exception as exc:
            result = self._failed(call, exc)
        self._answered(call.nr, call.args, call.shown, call.unknown, result)

    def _failed(self, call: _Waiting, exc: Exception) -> int:
        """The answer for a handler that raised (``GuestExit`` and, in tests, bugs go through)."""
        if isinstance(exc, SyscallError):
            return -exc.errno
        if isinstance(exc, GuestExit):
            if self.strace is not None:
                self.strace.call(call.nr, call.args, None, self.mm, shown=call.shown)
            raise exc
        if isinstance(exc, OSError):
            return -(exc.errno or errno.EIO)
        if self.raise_internal_errors:
            raise exc
        log.error("internal error serving syscall %d; answering ENOSYS", call.nr, exc_info=exc)
        return -errno.ENOSYS

    def _answered(self, nr: int, args: tuple[int, ...], shown: str | None, unknown: bool, result: int) -> None:
        """Put ``result`` in rax, trace the call, and let pending signals act."""
        interrupted = self._interrupted and result == -errno.EINTR
        if self.strace is not None:
            if self.trace_args is not None:
                shown = self.trace_args
            if interrupted and nr not in NO_RESTART:
                line = self.strace.line(nr, args, result, self.mm, shown=shown).rsplit(" = ", 1)[0]
                self.strace.emit(f"{line} = ? {restart_text(nr, self.restart_block is not None)}")
            else:
                self.strace.call(nr, args, result, self.mm, unknown=unknown, shown=shown, note=self.note)
        self.stub.regs.rax = result & _U64
        if self.signals.has_deliverable() or interrupted:
            deliver_signals(self, nr if interrupted else None)

    async def _wait(self, aw: Awaitable[int]) -> int:
        """Await a syscall that waits; a signal that must act cuts it short (EINTR)."""
        self._interruptible = True
        try:
            return await aw
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if not self._kicked or task is None:
                raise
            self._kicked = False
            if task.uncancel() > 0:
                raise  # cancelled from outside as well
            if isinstance(exc, PartlyDone):
                return exc.count  # the signal acts on the way out; nothing to restart
            self._interrupted = True
            return -errno.EINTR
        finally:
            self._interruptible = False


def _copy_fpstate(src: RegsLike, dst: RegsLike) -> None:
    """The FPU/vector state (x87, MXCSR, XMM/YMM/ZMM...) goes with the registers to a child.

    Both frames hold the same XSAVE layout on one machine; a register view
    without the state (a test's fake) or a size that differs leaves the child's.
    """
    get, cur = getattr(src, "fpstate", None), getattr(dst, "fpstate", None)
    put = getattr(dst, "set_fpstate", None)
    if get is None or cur is None or put is None:
        return
    state = get()
    if len(state) == len(cur()):
        put(state)


def _rlim_in(lim: tuple[int, int]) -> tuple[int, int]:
    return tuple(_U64 if v == resource.RLIM_INFINITY else v for v in lim)  # type: ignore[return-value]


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _nul_joined(strings: list[bytes]) -> bytes:
    """Strings as ``/proc/PID/cmdline`` shows them: each ended by a NUL."""
    return b"".join(bytes(x) + b"\0" for x in strings)
