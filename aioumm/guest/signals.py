"""Guest signal state: dispositions, the blocked mask, pending signals, the alternate stack.

This module is the bookkeeping; :mod:`.sigframe` acts on it (signal frames on the
guest's stack, ``rt_sigreturn``, default actions).  The rules are Linux's:

* an ignored signal (``SIG_IGN``, or ``SIG_DFL`` for a signal whose default is to
  be ignored) is dropped when it is sent, and a pending one is dropped when its
  disposition becomes "ignore";
* a standard signal is pending at most once: while it is pending, sending it
  again changes nothing (the first ``siginfo`` is kept);
* a real-time signal (``SIGRTMIN``..``SIGRTMAX``, 32..64 to the kernel) queues:
  every instance sent is delivered, in the order sent, each with its own
  ``siginfo``; the entries queued for one user are bounded by its
  ``RLIMIT_SIGPENDING`` (see :meth:`SignalState.post`);
* of several deliverable signals the synchronous ones (faults) go first, then the
  lowest numbered (so standard signals before real-time ones);
* stop signals and ``SIGCONT`` cancel each other: sending a stop signal discards
  a pending ``SIGCONT``, sending ``SIGCONT`` discards pending stop signals, even
  when the new signal is then ignored (the stop and the resume themselves are
  the process's business: :mod:`.process`);
* a signal *forced* by a fault, or by a signal frame that cannot be written, is
  delivered even when the guest blocks or ignores it: then it takes its default
  action.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import struct
from collections import deque
from dataclasses import dataclass, field

from .errors import GuestExit, SyscallError

__all__ = [
    "NSIG",
    "SigAction",
    "SigInfo",
    "SignalState",
    "default_dumps_core",
    "default_is_fatal",
    "default_stops",
    "sigbit",
]

NSIG = 64
SIG_DFL = 0
SIG_IGN = 1
SS_ONSTACK = 1
SS_DISABLE = 2
SS_AUTODISARM = 1 << 31
MINSIGSTKSZ = 2048

SA_NOCLDSTOP = 0x00000001
SA_NOCLDWAIT = 0x00000002
SA_SIGINFO = 0x00000004
SA_RESTORER = 0x04000000
SA_ONSTACK = 0x08000000
SA_RESTART = 0x10000000
SA_NODEFER = 0x40000000
SA_RESETHAND = 0x80000000

#: si_code values (<asm-generic/siginfo.h>).
SI_USER = 0
SI_KERNEL = 0x80
SI_QUEUE = -1
SI_TIMER = -2
SI_MESGQ = -3
SI_TKILL = -6

#: struct kernel_sigaction on x86-64: handler, flags, restorer, mask.
SIGACTION = struct.Struct("<QQQQ")
#: stack_t: ss_sp, ss_flags (int, padded), ss_size.
STACK_T = struct.Struct("<Qi4xQ")
SIGINFO_SIZE = 128
#: The part of a ``siginfo_t`` Linux keeps (``struct kernel_siginfo``); the rest is zeros.
KERNEL_SIGINFO_SIZE = 48
#: The first real-time signal as the kernel numbers it (glibc keeps 32 and 33 for itself).
SIGRTMIN_KERNEL = 32

_IGNORED_BY_DEFAULT = frozenset({signal.SIGCHLD, signal.SIGURG, signal.SIGWINCH, signal.SIGCONT})
_STOP = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
#: Signals whose default action dumps core (``SIG_KERNEL_COREDUMP_MASK``).
_CORE = frozenset(
    {
        signal.SIGQUIT,
        signal.SIGILL,
        signal.SIGTRAP,
        signal.SIGABRT,
        signal.SIGBUS,
        signal.SIGFPE,
        signal.SIGSEGV,
        signal.SIGXCPU,
        signal.SIGXFSZ,
        signal.SIGSYS,
    }
)
#: Delivered before any other pending signal (``SYNCHRONOUS_MASK``).
_SYNCHRONOUS: tuple[int, ...] = (
    signal.SIGSEGV,
    signal.SIGBUS,
    signal.SIGILL,
    signal.SIGTRAP,
    signal.SIGFPE,
    signal.SIGSYS,
)
UNBLOCKABLE = (1 << (signal.SIGKILL - 1)) | (1 << (signal.SIGSTOP - 1))
#: The stop signals' bits (``SIG_KERNEL_STOP_MASK``).
STOP_MASK = sum(1 << (s - 1) for s in _STOP)


def sigbit(sig: int) -> int:
    """The bit of ``sig`` in a signal mask."""
    return 1 << (sig - 1)


def default_is_fatal(sig: int) -> bool:
    """Whether the default action of ``sig`` ends the process."""
    return sig not in _IGNORED_BY_DEFAULT and sig not in _STOP


def default_stops(sig: int) -> bool:
    """Whether the default action of ``sig`` stops the process (job control)."""
    return sig in _STOP


def is_realtime(sig: int) -> bool:
    """Whether ``sig`` is a real-time signal (one that queues)."""
    return sig >= SIGRTMIN_KERNEL


def default_dumps_core(sig: int) -> bool:
    """Whether the default action of ``sig`` is "core" rather than plain "terminate"."""
    return sig in _CORE


def signame(sig: int) -> str:
    """``SIGUSR1``; real-time signals as strace names them (``SIGRT_2``)."""
    if sig == SIGRTMIN_KERNEL:
        return "SIGRTMIN"
    if SIGRTMIN_KERNEL < sig <= NSIG:
        return f"SIGRT_{sig - SIGRTMIN_KERNEL}"
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


_SI_CODES = {
    SI_USER: "SI_USER",
    SI_KERNEL: "SI_KERNEL",
    SI_QUEUE: "SI_QUEUE",
    SI_TIMER: "SI_TIMER",
    SI_TKILL: "SI_TKILL",
}
_FAULT_CODES: dict[int, dict[int, str]] = {
    signal.SIGSEGV: {1: "SEGV_MAPERR", 2: "SEGV_ACCERR", 3: "SEGV_BNDERR", 4: "SEGV_PKUERR"},
    signal.SIGBUS: {1: "BUS_ADRALN", 2: "BUS_ADRERR", 3: "BUS_OBJERR"},
    signal.SIGILL: {
        1: "ILL_ILLOPC",
        2: "ILL_ILLOPN",
        3: "ILL_ILLADR",
        4: "ILL_ILLTRP",
        5: "ILL_PRVOPC",
        6: "ILL_PRVREG",
        7: "ILL_COPROC",
        8: "ILL_BADSTK",
    },
    signal.SIGFPE: {
        1: "FPE_INTDIV",
        2: "FPE_INTOVF",
        3: "FPE_FLTDIV",
        4: "FPE_FLTOVF",
        5: "FPE_FLTUND",
        6: "FPE_FLTRES",
        7: "FPE_FLTINV",
        8: "FPE_FLTSUB",
    },
    signal.SIGTRAP: {1: "TRAP_BRKPT", 2: "TRAP_TRACE", 3: "TRAP_BRANCH", 4: "TRAP_HWBKPT"},
}
_CLD_CODES = {1: "CLD_EXITED", 2: "CLD_KILLED", 3: "CLD_DUMPED", 4: "CLD_TRAPPED", 5: "CLD_STOPPED", 6: "CLD_CONTINUED"}
_FAULTS = frozenset(_FAULT_CODES)


@dataclass(frozen=True)
class SigInfo:
    """A ``siginfo_t``: who sent the signal, or what fault raised it."""

    signo: int
    code: int = SI_USER
    pid: int = 0
    uid: int = 0
    #: ``si_addr`` of a fault (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP raised by the CPU).
    addr: int | None = None
    #: ``si_status`` of a SIGCHLD (exit code or signal number).
    status: int | None = None
    #: A ``siginfo`` a guest made (``rt_sigqueueinfo``): its first 48 bytes, as given.
    raw: bytes | None = None

    @classmethod
    def from_guest(cls, signo: int, raw: bytes) -> SigInfo:
        """The ``siginfo`` a guest passed to ``rt_sigqueueinfo``: its own bytes, with
        ``si_signo`` the signal sent (as Linux overwrites it)."""
        _signo, _errno, code, pid, uid = struct.unpack_from("<iii4xiI", raw)
        head = struct.pack("<i", signo) + raw[4:KERNEL_SIGINFO_SIZE]
        return cls(signo, code, pid, uid, raw=head)

    def pack(self) -> bytes:
        """The 128 bytes of ``siginfo_t`` as Linux lays them out on x86-64."""
        if self.raw is not None:
            return self.raw.ljust(SIGINFO_SIZE, b"\0")
        head = struct.pack("<iii4x", self.signo, 0, self.code)
        if self.addr is not None:
            body = struct.pack("<Q", self.addr & 0xFFFFFFFFFFFFFFFF)
        elif self.status is not None:
            body = struct.pack("<iIi4xqq", self.pid, self.uid, self.status, 0, 0)
        else:
            body = struct.pack("<iI", self.pid, self.uid)
        return (head + body).ljust(SIGINFO_SIZE, b"\0")

    def strace(self) -> str:
        """As strace shows it: ``{si_signo=SIGUSR1, si_code=SI_TKILL, si_pid=1000, si_uid=0}``."""
        name = signame(self.signo)
        if self.code > 0 and self.signo in _FAULTS and self.code != SI_KERNEL:
            code = _FAULT_CODES[self.signo].get(self.code, str(self.code))
        elif self.code > 0 and self.signo == signal.SIGCHLD and self.code != SI_KERNEL:
            code = _CLD_CODES.get(self.code, str(self.code))
        else:
            code = _SI_CODES.get(self.code, str(self.code))
        out = f"{{si_signo={name}, si_code={code}"
        if self.addr is not None:
            out += ", si_addr=NULL" if self.addr == 0 else f", si_addr={self.addr:#x}"
        elif self.status is not None:
            status = signame(self.status) if self.code in (2, 3) else str(self.status)
            out += f", si_pid={self.pid}, si_uid={self.uid}, si_status={status}, si_utime=0, si_stime=0"
        elif self.code <= 0:
            out += f", si_pid={self.pid}, si_uid={self.uid}"
            if self.raw is not None and self.code in (SI_QUEUE, SI_TIMER, SI_MESGQ):
                (value,) = struct.unpack_from("<Q", self.raw, 24)
                out += f", si_int={struct.unpack_from('<i', self.raw, 24)[0]}, si_ptr={value:#x}"
        return out + "}"


@dataclass
class SigAction:
    """One recorded disposition (``struct kernel_sigaction``)."""

    handler: int = SIG_DFL
    flags: int = 0
    restorer: int = 0
    mask: int = 0

    def pack(self) -> bytes:
        return SIGACTION.pack(self.handler, self.flags, self.restorer, self.mask)

    @classmethod
    def unpack(cls, raw: bytes) -> SigAction:
        return cls(*SIGACTION.unpack(raw))

    @property
    def is_handler(self) -> bool:
        """Whether a guest function runs for the signal (not SIG_DFL nor SIG_IGN)."""
        return self.handler not in (SIG_DFL, SIG_IGN)


@dataclass
class SignalState:
    """Dispositions, mask, pending set and alternate stack of one guest."""

    actions: dict[int, SigAction] = field(default_factory=dict)
    blocked: int = 0
    pending: int = 0
    #: ``(ss_sp, ss_flags, ss_size)`` as last set (a size of 0: none); the flags as
    #: given, which is what a signal frame's ``uc_stack`` shows.
    altstack: tuple[int, int, int] = (0, 0, 0)
    #: The ``siginfo`` of each pending standard signal that has one.
    info: dict[int, SigInfo] = field(default_factory=dict)
    #: The queued instances of each pending real-time signal, oldest first.  A
    #: signal may be pending with an empty queue: a ``kill`` that found the queue
    #: full (Linux keeps such a signal, without its ``siginfo``).
    queue: dict[int, deque[SigInfo]] = field(default_factory=dict)
    #: The mask to put back once a signal was handled (``rt_sigsuspend``, ``pselect``...).
    saved_mask: int | None = None
    #: The signals ``rt_sigtimedwait`` is waiting for (they wake it rather than act).
    waiting: int = 0
    #: The ``ITIMER_REAL`` / ``alarm`` timer: its loop handle, deadline and interval.
    timer: asyncio.TimerHandle | None = None
    timer_deadline: float = 0.0
    timer_interval: float = 0.0

    def action(self, sig: int) -> SigAction:
        return self.actions.get(sig, SigAction())

    def is_ignored(self, sig: int) -> bool:
        """Whether ``sig`` would be dropped if it were sent now."""
        act = self.action(sig)
        return act.handler == SIG_IGN or (act.handler == SIG_DFL and sig in _IGNORED_BY_DEFAULT)

    def post(self, sig: int, info: SigInfo | None = None, *, queue_room: bool = True) -> bool:
        """Make ``sig`` pending (False: it is ignored and was dropped).

        A real-time signal adds an entry to its queue when ``queue_room`` says the
        receiving process's user is under its ``RLIMIT_SIGPENDING``; with no room it is still
        pending when ``kill`` sent it (``SI_USER``), without a ``siginfo``, and
        any other sender (``sigqueue``, ``tgkill``) gets ``EAGAIN``.

        A blocked signal is never dropped as ignored (its disposition may change
        before it is unblocked, and ``sigwaitinfo`` may take it), as on Linux.
        """
        if sig in _STOP:
            self.discard(sigbit(signal.SIGCONT))
        elif sig == signal.SIGCONT:
            self.discard(STOP_MASK)
        bit = sigbit(sig)
        if sig != signal.SIGKILL and not self.blocked & bit and self.is_ignored(sig):
            return False
        if is_realtime(sig):
            entries = self.queue.setdefault(sig, deque())
            if queue_room:
                entries.append(info if info is not None else SigInfo(sig, SI_KERNEL))
            elif info is not None and info.code != SI_USER:
                if not entries and not self.pending & bit:
                    del self.queue[sig]
                raise SyscallError(errno.EAGAIN)
            self.pending |= bit
            return True
        if not self.pending & bit:
            self.pending |= bit
            if info is not None:
                self.info[sig] = info
        return True

    def queued(self) -> int:
        """How many real-time ``siginfo`` entries wait here (``RLIMIT_SIGPENDING`` counts them)."""
        return sum(len(q) for q in self.queue.values())

    def force(self, sig: int, info: SigInfo | None = None) -> None:
        """A signal the guest cannot refuse (a fault): blocked or ignored, it gets the default action."""
        act = self.action(sig)
        blocked = bool(self.blocked & sigbit(sig))
        if blocked or act.handler == SIG_IGN:
            self.actions[sig] = SigAction()
            self.blocked &= ~sigbit(sig)
        self.pending |= sigbit(sig)
        if info is not None:
            self.info[sig] = info

    def send(self, sig: int, info: SigInfo | None = None) -> None:
        """A signal the guest caused itself (``SIGPIPE``): pending, acted on after the syscall."""
        if sig == signal.SIGKILL:
            raise GuestExit.killed(sig)
        self.post(sig, info)

    def next_signal(self, mask: int) -> int:
        """The signal :meth:`take` would give among the pending ones in ``mask`` (0: none)."""
        ready = self.pending & mask
        if not ready:
            return 0
        for first in _SYNCHRONOUS:
            if ready & sigbit(first):
                return first
        return (ready & -ready).bit_length()

    def take(self, sig: int) -> SigInfo | None:
        """Take one pending instance of ``sig`` off the pending set, with its ``siginfo``."""
        bit = sigbit(sig)
        entries = self.queue.get(sig)
        if entries is None:
            self.pending &= ~bit
            return self.info.pop(sig, None)
        info = entries.popleft() if entries else SigInfo(sig, SI_USER)
        if not entries:
            del self.queue[sig]
            self.pending &= ~bit
        return info

    def dequeue(self) -> tuple[int, SigInfo | None] | None:
        """Take the next deliverable signal (faults first, then the lowest number)."""
        sig = self.next_signal(~self.blocked)
        if not sig:
            return None
        return sig, self.take(sig)

    def discard(self, mask: int) -> None:
        """Forget every pending signal in ``mask`` (queued instances too)."""
        self.pending &= ~mask
        for sig in [s for s in self.info if mask & sigbit(s)]:
            del self.info[sig]
        for sig in [s for s in self.queue if mask & sigbit(s)]:
            del self.queue[sig]

    def drop_ignored(self, sig: int) -> None:
        """``sig`` became ignored: forget it if it is pending."""
        if self.is_ignored(sig):
            self.discard(sigbit(sig))

    def has_deliverable(self) -> bool:
        """Whether a pending signal would act now (not blocked, not being waited for)."""
        return bool(self.pending & ~self.blocked & ~self.waiting)

    # ------------------------------------------------------ alternate stack

    def on_altstack(self, sp: int) -> bool:
        """Whether ``sp`` is inside the alternate stack (``on_sig_stack``)."""
        base, _flags, size = self.altstack
        return size != 0 and base < sp and sp - base <= size

    def altstack_flags(self, sp: int) -> int:
        """``ss_flags`` as ``sigaltstack`` reports it for a thread whose stack pointer is ``sp``."""
        _base, flags, size = self.altstack
        if size == 0:
            return SS_DISABLE
        return (SS_ONSTACK if self.on_altstack(sp) else 0) | (flags & SS_AUTODISARM)

    # ---------------------------------------------------------------- timer

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # ----------------------------------------------------- fork and execve

    def fork_copy(self) -> SignalState:
        """A forked child's state: the same dispositions, mask and alternate stack, nothing pending."""
        actions = {sig: SigAction(a.handler, a.flags, a.restorer, a.mask) for sig, a in self.actions.items()}
        return SignalState(actions=actions, blocked=self.blocked, pending=0, altstack=self.altstack)

    def reset_for_exec(self) -> None:
        """After ``execve``: handled signals go back to their default action (ignored
        ones stay ignored), flags and masks are cleared, the alternate stack is
        disabled; the blocked mask and the pending set are kept."""
        for sig, act in list(self.actions.items()):
            handler = SIG_IGN if act.handler == SIG_IGN else SIG_DFL
            self.actions[sig] = SigAction(handler)
        self.altstack = (0, SS_DISABLE, 0)
