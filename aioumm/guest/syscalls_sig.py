"""The signal calls: dispositions, masks, the alternate stack, waiting for a
signal, coming back from a handler, queueing a signal with its ``siginfo``, and
the real-time interval timer.

Registered with the rest of the handlers (:mod:`.syscalls` imports this module).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import struct
import time
from collections.abc import Awaitable

from .errors import SyscallError
from .process import GuestProcess
from .sigframe import mask_text, set_altstack, sigreturn
from .signalfd import SignalFile
from .signals import (
    KERNEL_SIGINFO_SIZE,
    NSIG,
    SI_KERNEL,
    SI_TKILL,
    SIGACTION,
    SIGINFO_SIZE,
    STACK_T,
    UNBLOCKABLE,
    SigAction,
    SigInfo,
)
from .syscalls import s32, syscall

_U64 = struct.Struct("<Q")
_TIMESPEC = struct.Struct("<qq")
#: Longest single wait handed to the loop.
_MAX_STEP = float(1 << 30)
#: struct itimerval: interval and value, each a struct timeval.
_ITIMERVAL = struct.Struct("<qqqq")
ITIMER_REAL = 0


def _fail(err: int) -> SyscallError:
    return SyscallError(err)


def _check_sig(sig: int) -> int:
    signo = s32(sig)
    if not 1 <= signo <= NSIG:
        raise _fail(errno.EINVAL)
    return signo


@syscall("rt_sigaction")
def sys_rt_sigaction(p: GuestProcess, sig: int, act: int, oact: int, size: int, *_: int) -> int:
    if size != 8:
        raise _fail(errno.EINVAL)
    signo = _check_sig(sig)
    new = SigAction.unpack(p.mm.read(act, SIGACTION.size)) if act else None
    if new is not None and signo in (signal.SIGKILL, signal.SIGSTOP):
        raise _fail(errno.EINVAL)
    if oact:
        p.mm.write(oact, p.signals.action(signo).pack())
    if new is not None:
        new.mask &= ~UNBLOCKABLE
        p.signals.actions[signo] = new
        p.signals.drop_ignored(signo)  # a pending signal that is now ignored is gone
    return 0


@syscall("rt_sigprocmask")
def sys_rt_sigprocmask(p: GuestProcess, how: int, set_: int, oset: int, size: int, *_: int) -> int:
    if size != 8:
        raise _fail(errno.EINVAL)
    how = s32(how)
    new = _U64.unpack(p.mm.read(set_, 8))[0] if set_ else None
    if new is not None and how not in (0, 1, 2):  # SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK
        raise _fail(errno.EINVAL)
    if oset:
        p.mm.write(oset, _U64.pack(p.signals.blocked))
    if new is not None:
        cur = p.signals.blocked
        mask = cur | new if how == 0 else cur & ~new if how == 1 else new
        p.signals.blocked = mask & ~UNBLOCKABLE
    return 0


@syscall("rt_sigpending")
def sys_rt_sigpending(p: GuestProcess, set_: int, size: int, *_: int) -> int:
    if size > 8:
        raise _fail(errno.EINVAL)
    p.mm.write(set_, _U64.pack(p.signals.pending & p.signals.blocked)[:size])
    return 0


@syscall("sigaltstack")
def sys_sigaltstack(p: GuestProcess, ss: int, oss: int, *_: int) -> int:
    st = p.signals
    sp = p.stub.regs.rsp
    base, _flags, size = st.altstack
    old = STACK_T.pack(base, st.altstack_flags(sp), size)
    if ss:
        new_sp, new_flags, new_size = STACK_T.unpack(p.mm.read(ss, STACK_T.size))
        err = set_altstack(p, new_sp, new_flags, new_size)
        if err:
            raise _fail(err)
    if oss:
        p.mm.write(oss, old)
    return 0


@syscall("rt_sigreturn")
def sys_rt_sigreturn(p: GuestProcess, *_: int) -> int:
    return sigreturn(p)


async def _suspend(p: GuestProcess) -> int:
    # Until a signal acts (the wait is cut short, see GuestProcess.kick).
    if not p.signals.has_deliverable():
        await asyncio.get_running_loop().create_future()
    return -errno.EINTR


@syscall("pause")
def sys_pause(p: GuestProcess, *_: int) -> Awaitable[int]:
    return _suspend(p)


@syscall("rt_sigsuspend")
def sys_rt_sigsuspend(p: GuestProcess, mask: int, size: int, *_: int) -> Awaitable[int]:
    if size != 8:
        raise _fail(errno.EINVAL)
    new = _U64.unpack(p.mm.read(mask, 8))[0]
    st = p.signals
    st.saved_mask = st.blocked  # back once a handler ran (its frame holds it) or on restart
    st.blocked = new & ~UNBLOCKABLE
    return _suspend(p)


# ------------------------------------------------- queued signals, sigwait


def _guest_siginfo(p: GuestProcess, sig: int, uinfo: int) -> SigInfo:
    # Linux keeps the first 48 bytes; the rest of a siginfo must be zeros.
    raw = p.mm.read(uinfo, SIGINFO_SIZE)
    if any(raw[KERNEL_SIGINFO_SIZE:]):
        raise _fail(errno.E2BIG)
    return SigInfo.from_guest(s32(sig), raw)


def _may_forge(p: GuestProcess, info: SigInfo, pid: int) -> None:
    # Nobody may pass off a signal to another process as the kernel's, a kill's or a tgkill's.
    if (info.code >= 0 or info.code == SI_TKILL) and pid != p.pid:
        raise _fail(errno.EPERM)


def _queue(p: GuestProcess, target: GuestProcess | None, sig: int, info: SigInfo) -> int:
    if target is None:
        raise _fail(errno.ESRCH)  # a zombie is still there: the signal is just dropped
    if not 0 <= sig <= NSIG:
        raise _fail(errno.EINVAL)
    if sig:
        target.post_signal(sig, info)  # EAGAIN when the queue is full
    return 0


@syscall("rt_sigqueueinfo")
def sys_rt_sigqueueinfo(p: GuestProcess, tgid: int, sig: int, uinfo: int, *_: int) -> int:
    info = _guest_siginfo(p, sig, uinfo)
    pid = s32(tgid)
    _may_forge(p, info, pid)
    return _queue(p, p.kernel.get(pid) if pid > 0 else None, s32(sig), info)


@syscall("rt_tgsigqueueinfo")
def sys_rt_tgsigqueueinfo(p: GuestProcess, tgid: int, tid: int, sig: int, uinfo: int, *_: int) -> int:
    info = _guest_siginfo(p, sig, uinfo)
    tgid, tid = s32(tgid), s32(tid)
    if tgid <= 0 or tid <= 0:
        raise _fail(errno.EINVAL)
    _may_forge(p, info, tid)
    target = p.kernel.get(tid) if tgid == tid else None  # one thread per process
    return _queue(p, target, s32(sig), info)


def _take_waited(p: GuestProcess, which: int, uinfo: int, uts: int) -> int:
    st = p.signals
    sig = st.next_signal(which)
    if sig:
        info = st.take(sig) or SigInfo(sig, SI_KERNEL)
        if p.strace is not None:
            shown = info.strace() if uinfo else "NULL"
            p.trace_args = f"{mask_text(which)}, {shown}, {'NULL' if not uts else hex(uts)}, 8"
        if uinfo:
            p.mm.write(uinfo, info.pack())  # EFAULT, the signal taken all the same (as Linux)
    return sig


async def _sigwait(p: GuestProcess, which: int, uinfo: int, uts: int, timeout: float | None) -> int:
    # Linux unblocks the waited-for signals while it sleeps: they wake this wait (and
    # are taken), while any other signal that acts cuts it short with EINTR.
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    st = p.signals
    st.waiting = which
    try:
        while True:
            if deadline is None:
                await p.signal_event()
            else:
                left = deadline - loop.time()
                if left <= 0:
                    raise _fail(errno.EAGAIN)
                with contextlib.suppress(TimeoutError):
                    # In steps: an event-loop timer overflows past some limit.
                    await asyncio.wait_for(p.signal_event(), min(left, _MAX_STEP))
            sig = _take_waited(p, which, uinfo, uts)
            if sig:
                return sig
    finally:
        st.waiting = 0


@syscall("rt_sigtimedwait")
def sys_rt_sigtimedwait(p: GuestProcess, these: int, uinfo: int, uts: int, size: int, *_: int) -> int | Awaitable[int]:
    if size != 8:
        raise _fail(errno.EINVAL)
    which = _U64.unpack(p.mm.read(these, 8))[0] & ~UNBLOCKABLE
    timeout: float | None = None
    if uts:
        sec, nsec = _TIMESPEC.unpack(p.mm.read(uts, _TIMESPEC.size))
        if sec < 0 or not 0 <= nsec < 1_000_000_000:
            raise _fail(errno.EINVAL)
        timeout = sec + nsec / 1e9
    sig = _take_waited(p, which, uinfo, uts)
    if sig:
        return sig
    if timeout == 0:
        raise _fail(errno.EAGAIN)
    return _sigwait(p, which, uinfo, uts, timeout)


# ---------------------------------------------------------------- signalfd

_SFD_CLOEXEC = 0o2000000
_SFD_NONBLOCK = 0o4000


@syscall("signalfd4")
def sys_signalfd4(p: GuestProcess, fd: int, mask: int, size: int, flags: int, *_: int) -> int:
    if size != 8:
        raise _fail(errno.EINVAL)
    sigs = _U64.unpack(p.mm.read(mask, 8))[0] & ~UNBLOCKABLE
    flags &= 0xFFFFFFFF
    if flags & ~(_SFD_CLOEXEC | _SFD_NONBLOCK):
        raise _fail(errno.EINVAL)
    if s32(fd) == -1:
        file = SignalFile(sigs, nonblocking=bool(flags & _SFD_NONBLOCK))
        try:
            return p.fds.install(file, cloexec=bool(flags & _SFD_CLOEXEC))
        except SyscallError:
            file.close()
            raise
    existing = p.fds.get(s32(fd))
    if not isinstance(existing, SignalFile):
        raise _fail(errno.EINVAL)
    existing.mask = sigs  # a new mask for the same descriptor
    existing.refresh(p.signals)
    return s32(fd)


@syscall("signalfd")
def sys_signalfd(p: GuestProcess, fd: int, mask: int, size: int, *_: int) -> int:
    return sys_signalfd4(p, fd, mask, size, 0)


# -------------------------------------------------------- interval timer


def _expire(p: GuestProcess) -> None:
    st = p.signals
    st.timer = None
    if p.status is not None:
        return
    early = st.timer_deadline - time.monotonic()
    if early > 0:
        # The loop's timers may fire up to a millisecond early (libuv counts whole
        # milliseconds); an alarm never comes before its time.
        st.timer = asyncio.get_running_loop().call_later(early + 0.0001, _expire, p)
        return
    if st.timer_interval > 0:
        _arm(p, st.timer_interval, st.timer_interval)
    p.post_signal(signal.SIGALRM, SigInfo(signal.SIGALRM, SI_KERNEL))


def _arm(p: GuestProcess, value: float, interval: float) -> None:
    st = p.signals
    st.cancel_timer()
    st.timer_interval = interval if value > 0 else 0.0
    if value > 0:
        st.timer_deadline = time.monotonic() + value
        st.timer = asyncio.get_running_loop().call_later(value, _expire, p)


def _left(p: GuestProcess) -> float:
    st = p.signals
    if st.timer is None:
        return 0.0
    return max(st.timer_deadline - time.monotonic(), 1e-6)


def _timeval(seconds: float) -> tuple[int, int]:
    usec = round(seconds * 1e6)
    return usec // 1_000_000, usec % 1_000_000


def _itimerval(p: GuestProcess) -> bytes:
    return _ITIMERVAL.pack(*_timeval(p.signals.timer_interval), *_timeval(_left(p)))


@syscall("alarm")
def sys_alarm(p: GuestProcess, seconds: int, *_: int) -> int:
    left = _left(p)
    old = int(left) + (1 if left - int(left) >= 0.5 else 0)
    if left > 0 and old == 0:
        old = 1  # a pending alarm never reads as "none"
    _arm(p, float(seconds & 0xFFFFFFFF), 0.0)
    return old


@syscall("getitimer")
def sys_getitimer(p: GuestProcess, which: int, cur: int, *_: int) -> int:
    which = s32(which)
    if which != ITIMER_REAL:
        raise _fail(errno.EINVAL if which not in (1, 2) else errno.ENOSYS)
    p.mm.write(cur, _itimerval(p))
    return 0


def _read_itimerval(p: GuestProcess, addr: int) -> tuple[float, float]:
    isec, iusec, vsec, vusec = _ITIMERVAL.unpack(p.mm.read(addr, _ITIMERVAL.size))
    if min(isec, vsec) < 0 or not 0 <= iusec < 1_000_000 or not 0 <= vusec < 1_000_000:
        raise _fail(errno.EINVAL)
    return isec + iusec / 1e6, vsec + vusec / 1e6


@syscall("setitimer")
def sys_setitimer(p: GuestProcess, which: int, new: int, old: int, *_: int) -> int:
    which = s32(which)
    if which != ITIMER_REAL:
        raise _fail(errno.EINVAL if which not in (1, 2) else errno.ENOSYS)
    interval, value = _read_itimerval(p, new) if new else (0.0, 0.0)
    before = _itimerval(p)
    _arm(p, value, interval)
    if old:
        p.mm.write(old, before)
    return 0
