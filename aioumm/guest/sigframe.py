"""Signals acting on a guest: default actions, signal frames, ``rt_sigreturn``.

A signal with a guest handler is delivered the way Linux x86-64 does it
(``arch/x86/kernel/signal_64.c``): below the interrupted stack pointer (past the
128-byte red zone), or at the top of the alternate stack for ``SA_ONSTACK``, go

* the XSAVE image of the interrupted FPU/vector state, 64-byte aligned, with the
  ``FP_XSTATE_MAGIC2`` word after it;
* the ``rt_sigframe``, ending 8 bytes past a 16-byte boundary: the return
  address (``sa_restorer``), a ``struct ucontext`` (``uc_flags``, ``uc_link``,
  ``uc_stack``, the ``struct sigcontext`` of the interrupted registers with its
  ``fpstate`` pointer, ``uc_sigmask``) and the ``siginfo``.

The handler starts with ``rdi`` = the signal, ``rsi`` = the siginfo, ``rdx`` = the
ucontext, ``rax`` = 0, a clean FPU, and the mask widened by ``sa_mask`` and the
signal itself.  Its ``ret`` goes to the restorer, whose ``rt_sigreturn`` traps
like any syscall: :func:`sigreturn` reads the frame back from guest memory,
checks every value (a bad frame is a ``SIGSEGV`` for the guest, as on Linux, and
never an error of the runner), and puts back the registers (the FS base is left
alone), the vector state, the mask and the alternate-stack settings.
"""

from __future__ import annotations

import errno
import resource
import signal
import struct
from typing import TYPE_CHECKING

from aioumm.report import SIGCONTEXT_REGISTERS

from .errors import GuestExit, GuestFault
from .signals import (
    MINSIGSTKSZ,
    SA_NODEFER,
    SA_ONSTACK,
    SA_RESETHAND,
    SA_RESTART,
    SA_RESTORER,
    SA_SIGINFO,
    SI_KERNEL,
    SI_USER,
    SIG_DFL,
    SIG_IGN,
    SS_AUTODISARM,
    SS_DISABLE,
    SS_ONSTACK,
    UNBLOCKABLE,
    SigAction,
    SigInfo,
    default_dumps_core,
    default_is_fatal,
    default_stops,
    sigbit,
    signame,
)
from .table import NUMBERS

if TYPE_CHECKING:
    from .process import GuestProcess, ReportLike

__all__ = [
    "INTR_ALWAYS",
    "NO_RESTART",
    "deliver_fault",
    "deliver_signals",
    "mask_text",
    "restart_text",
    "set_altstack",
    "sigreturn",
]

_U64 = 0xFFFFFFFFFFFFFFFF
_CANONICAL_TOP = 1 << 47

#: uc_flags as Linux sets them on x86-64.
UC_FP_XSTATE = 1
UC_SIGCONTEXT_SS = 2
UC_STRICT_RESTORE_SS = 4
#: User code and stack segment selectors (``__USER_CS``, ``__USER_DS``).
USER_CS = 0x33
USER_SS = 0x2B
#: The eflags bits ``rt_sigreturn`` takes from the frame (``FIX_EFLAGS``).
FIX_EFLAGS = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x10000 | 0x40000
#: Cleared for the handler: DF, RF, TF.
_HANDLER_CLEARS = 0x400 | 0x10000 | 0x100
REDZONE = 128

_SIGCONTEXT = struct.Struct("<18Q4H4QQ64x")
_UC_HEAD = struct.Struct("<QQQi4xQ")
UCONTEXT_SIZE = _UC_HEAD.size + _SIGCONTEXT.size + 8
#: Offsets inside the rt_sigframe.
UC_OFF = 8
INFO_OFF = UC_OFF + UCONTEXT_SIZE
FRAME_SIZE = INFO_OFF + 128
_REG_ORDER = SIGCONTEXT_REGISTERS

# The XSAVE image (<asm/sigcontext.h>, the SDM's XSAVE layout).
_FXSAVE_SIZE = 512
_SW_BYTES = slice(464, 512)
_FP_XSTATE_MAGIC1 = 0x46505853
_FP_XSTATE_MAGIC2 = 0x46505845
_MXCSR_DEFAULT = 0x1F80
_FCW_DEFAULT = 0x37F
_XSAVE_HEADER = struct.Struct("<QQ48s")

#: Calls that answer EINTR whenever a handler runs, SA_RESTART or not
#: (``-ERESTARTNOHAND`` and ``-ERESTART_RESTARTBLOCK`` in Linux); the other
#: interruptible calls are restarted under SA_RESTART (``-ERESTARTSYS``).
INTR_ALWAYS = frozenset(
    NUMBERS[name]
    for name in (
        "pause",
        "rt_sigsuspend",
        "rt_sigtimedwait",
        "nanosleep",
        "clock_nanosleep",
        "select",
        "pselect6",
        "poll",
        "ppoll",
        "epoll_wait",
        "epoll_pwait",
        "io_getevents",
        "msgrcv",
        "msgsnd",
        "semop",
        "semtimedop",
    )
    if name in NUMBERS
)


#: Calls that answer plain EINTR when any signal cuts them short, even one
#: without a handler, such as a stop and a resume (signal(7)): never restarted.
NO_RESTART = frozenset(
    NUMBERS[name]
    for name in ("rt_sigtimedwait", "epoll_wait", "epoll_pwait", "epoll_pwait2", "semop", "semtimedop", "io_getevents")
    if name in NUMBERS
)
_RESTART_SYSCALL = NUMBERS["restart_syscall"]
_RESTARTBLOCK = frozenset(NUMBERS[n] for n in ("nanosleep", "clock_nanosleep", "poll") if n in NUMBERS)


def restart_text(nr: int, block: bool = False) -> str:
    """How strace shows a call a signal interrupted (before the handler decides).

    ``block``: the call left a restart block (a timed futex wait).
    """
    if nr in _RESTARTBLOCK or block:
        return "ERESTART_RESTARTBLOCK (Interrupted by signal)"
    if nr in INTR_ALWAYS:
        return "ERESTARTNOHAND (To be restarted if no handler)"
    return "ERESTARTSYS (To be restarted if SA_RESTART is set)"


def mask_text(mask: int) -> str:
    """A signal mask as strace shows it: ``[INT TERM]``."""
    names = [signame(s).removeprefix("SIG") for s in range(1, 65) if mask & sigbit(s)]
    return "[" + " ".join(names) + "]"


# -------------------------------------------------------------- delivery


def _info_for(sig: int, info: SigInfo | None) -> SigInfo:
    return info if info is not None else SigInfo(sig, SI_KERNEL)


def _trace(p: GuestProcess, info: SigInfo) -> None:
    if p.strace is not None:
        p.strace.emit(f"--- {signame(info.signo)} {info.strace()} ---")


def _restart(p: GuestProcess, nr: int) -> None:
    regs = p.stub.regs
    # A sleep goes on through restart_syscall, towards its first deadline (-ERESTART_RESTARTBLOCK).
    regs.rax = _RESTART_SYSCALL if p.restart_block is not None else nr
    regs.rip = (regs.rip - 2) & _U64  # back onto the 2-byte syscall instruction


def deliver_signals(p: GuestProcess, interrupted: int | None = None) -> None:
    """Act on every pending signal the guest does not block, as Linux does on its
    way back to user mode.

    ``interrupted`` is the number of the syscall a signal just cut short (it
    answered ``-EINTR``): it is restarted when no handler runs, or when the
    handler has ``SA_RESTART`` and the call is one that restarts.  Raises
    :class:`GuestExit` when a signal ends the guest.  A stop signal stops the
    process here (:meth:`GuestProcess.enter_stop`): what is left is done when it
    goes on.
    """
    st = p.signals
    ran = False
    while True:
        got = st.dequeue()
        if got is None:
            break
        sig, raw = got
        info = _info_for(sig, raw)
        act = st.action(sig)
        if act.handler == SIG_IGN:
            continue
        if act.handler == SIG_DFL:
            if default_stops(sig):
                # A terminal's stop signals mean nothing to an orphaned process group.
                if sig != signal.SIGSTOP and p.kernel.orphaned_group(p.pgid):
                    continue
                _trace(p, info)
                if p.strace is not None:
                    p.strace.emit(f"--- stopped by {signame(sig)} ---")
                # The rest (other signals, the cut-short syscall) waits until it goes on.
                p.enter_stop(sig, interrupted)
                return
            if sig != signal.SIGKILL and not default_is_fatal(sig):
                continue  # ignored by default
            _trace(p, info)
            status = sig
            if default_dumps_core(sig) and p.rlimits.get(resource.RLIMIT_CORE, (0, 0))[0] != 0:
                status |= 0x80
            raise GuestExit(status)
        if interrupted is not None:
            # A call that left a restart block (-ERESTART_RESTARTBLOCK) answers EINTR to a handler.
            if act.flags & SA_RESTART and interrupted not in INTR_ALWAYS and p.restart_block is None:
                _restart(p, interrupted)
            interrupted = None
        _trace(p, info)
        if act.flags & SA_RESETHAND:
            st.actions[sig] = SigAction()
        if _setup_frame(p, sig, act, info):
            ran = True
            continue
        # The frame could not be written: SIGSEGV, which kills unless its handler can run.
        if sig == signal.SIGSEGV:
            st.actions[sig] = SigAction()
        st.force(signal.SIGSEGV, SigInfo(signal.SIGSEGV, SI_KERNEL, addr=0))
    if interrupted is not None and interrupted not in NO_RESTART:
        _restart(p, interrupted)  # no handler ran: the call goes on as if nothing happened
    if st.saved_mask is not None and not ran:
        st.blocked, st.saved_mask = st.saved_mask, None


def deliver_fault(p: GuestProcess, report: ReportLike) -> None:
    """A fault the stub reported (SIGSEGV, SIGILL, SIGFPE, SIGTRAP, SIGBUS): the guest's
    handler runs if it has one and does not block the signal; otherwise it dies."""
    sig = report.signal
    info = SigInfo(sig, report.code if report.code != SI_USER else SI_KERNEL, addr=report.addr)
    trap = getattr(p.stub.regs, "trap_state", None)
    p.trap = trap() if trap is not None else (0, 0, report.addr if sig == signal.SIGSEGV else 0)
    p.signals.force(sig, info)
    try:
        deliver_signals(p)
    finally:
        p.trap = (0, 0, 0)


def _fpstate(p: GuestProcess) -> bytes | None:
    get = getattr(p.stub.regs, "fpstate", None)
    if get is None:
        return None
    state = get()
    assert isinstance(state, bytes)
    return state


def _init_fpstate(cur: bytes) -> bytes:
    """The FPU state a handler starts with: everything in its initial state."""
    b = bytearray(len(cur))
    struct.pack_into("<H", b, 0, _FCW_DEFAULT)
    struct.pack_into("<I", b, 24, _MXCSR_DEFAULT)
    b[28:32] = cur[28:32]  # MXCSR_MASK: the CPU's
    b[_SW_BYTES] = cur[_SW_BYTES]
    return bytes(b)  # an XSAVE header of zeros: every component in its initial state


def _setup_frame(p: GuestProcess, sig: int, act: SigAction, info: SigInfo) -> bool:
    """Build the rt_sigframe and point the registers at the handler; False if it cannot be."""
    st = p.signals
    regs = p.stub.regs
    if not act.flags & SA_RESTORER or act.handler >= _CANONICAL_TOP:
        return False  # x86-64 has no default restorer
    saved = {name: getattr(regs, name) for name in _REG_ORDER}
    orig_sp = saved["rsp"]
    uc_stack = st.altstack
    nested = st.on_altstack(orig_sp)
    sp = orig_sp - REDZONE
    entering = False
    if act.flags & SA_ONSTACK and st.altstack_flags(sp) & (SS_ONSTACK | SS_DISABLE) == 0:
        base, _flags, size = st.altstack
        sp = base + size
        entering = True
    fp = _fpstate(p)
    fp_addr = 0
    if fp is not None:
        extra = 4 if len(fp) > _FXSAVE_SIZE else 0
        sp = (sp - (len(fp) + extra)) & ~63
        fp_addr = sp
    frame = ((sp - FRAME_SIZE) & ~15) - 8
    if (nested or entering) and not st.on_altstack(frame):
        return False  # it would overflow the alternate stack
    if frame < 0:
        return False
    mask = st.saved_mask if st.saved_mask is not None else st.blocked
    err, trapno, cr2 = p.trap
    mctx = _SIGCONTEXT.pack(
        *(saved[name] & _U64 for name in _REG_ORDER),
        USER_CS,
        0,
        0,
        USER_SS,
        err & _U64,
        trapno & _U64,
        mask & _U64,
        cr2 & _U64,
        fp_addr,
    )
    flags = UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS | (UC_FP_XSTATE if fp is not None and len(fp) > 512 else 0)
    uc = _UC_HEAD.pack(flags, 0, *uc_stack) + mctx + struct.pack("<Q", mask & _U64)
    try:
        if fp is not None:
            tail = struct.pack("<I", _FP_XSTATE_MAGIC2) if len(fp) > _FXSAVE_SIZE else b""
            p.mm.write(fp_addr, fp + tail)
        p.mm.write(frame, struct.pack("<Q", act.restorer) + uc)
        if act.flags & SA_SIGINFO:
            p.mm.write(frame + INFO_OFF, info.pack())
    except GuestFault:
        return False
    if st.altstack[1] & SS_AUTODISARM:
        st.altstack = (0, SS_DISABLE, 0)
    st.saved_mask = None
    regs.rdi = sig
    regs.rsi = frame + INFO_OFF
    regs.rdx = frame + UC_OFF
    regs.rax = 0
    regs.rsp = frame
    regs.rip = act.handler
    regs.eflags = saved["eflags"] & ~_HANDLER_CLEARS
    if fp is not None:
        p.stub.regs.set_fpstate(_init_fpstate(fp))  # type: ignore[attr-defined]
    blocked = st.blocked | act.mask
    if not act.flags & SA_NODEFER:
        blocked |= sigbit(sig)
    st.blocked = blocked & ~UNBLOCKABLE
    return True


# ------------------------------------------------------------ sigreturn


def _checked_fpstate(new: bytes, cur: bytes) -> bytes | None:
    """The guest's saved vector state, made safe to load; None if Linux would refuse it."""
    b = bytearray(new)
    mxcsr_mask = struct.unpack_from("<I", cur, 28)[0] or 0xFFBF
    if struct.unpack_from("<I", b, 24)[0] & ~mxcsr_mask:
        return None  # reserved MXCSR bits: XRSTOR would fault
    b[28:32] = cur[28:32]
    guest_magic = struct.unpack_from("<I", b, 464)[0]
    b[_SW_BYTES] = cur[_SW_BYTES]
    if len(cur) <= _FXSAVE_SIZE:
        return bytes(b)
    features = struct.unpack_from("<Q", cur, 464 + 8)[0]
    if guest_magic != _FP_XSTATE_MAGIC1:
        # A plain FXSAVE image: the legacy state from it, the rest initial.
        _XSAVE_HEADER.pack_into(b, _FXSAVE_SIZE, 3 & features, 0, bytes(48))
        return bytes(b)
    xstate_bv, xcomp_bv, reserved = _XSAVE_HEADER.unpack_from(b, _FXSAVE_SIZE)
    if xstate_bv & ~features or xcomp_bv or any(reserved):
        return None
    return bytes(b)


def _bad_frame(p: GuestProcess) -> int:
    p.signals.force(signal.SIGSEGV, SigInfo(signal.SIGSEGV, SI_KERNEL, addr=0))
    return 0


def sigreturn(p: GuestProcess) -> int:
    """``rt_sigreturn``: back from a handler to where the signal came (the return value
    is the restored ``rax``)."""
    regs = p.stub.regs
    st = p.signals
    frame = (regs.rsp - 8) & _U64
    try:
        raw = p.mm.read(frame + UC_OFF, UCONTEXT_SIZE)
    except GuestFault:
        return _bad_frame(p)
    uc_flags, _link, ss_sp, ss_flags, ss_size = _UC_HEAD.unpack_from(raw, 0)
    values = _SIGCONTEXT.unpack_from(raw, _UC_HEAD.size)
    (mask,) = struct.unpack_from("<Q", raw, _UC_HEAD.size + _SIGCONTEXT.size)
    st.blocked = mask & ~UNBLOCKABLE
    if p.strace is not None:
        p.trace_args = f"{{mask={mask_text(st.blocked)}}}"
    restored: dict[str, int] = dict(zip(_REG_ORDER, values[:18], strict=True))
    fp_addr = values[-1]
    for name in _REG_ORDER:
        if name in ("rip", "eflags"):
            continue
        setattr(regs, name, restored[name])
    regs.eflags = (regs.eflags & ~FIX_EFLAGS) | (restored["eflags"] & FIX_EFLAGS)
    cur = _fpstate(p)
    if cur is not None:
        if fp_addr == 0:
            new: bytes | None = _init_fpstate(cur)
        else:
            try:
                new = _checked_fpstate(p.mm.read(fp_addr, len(cur)), cur)
            except GuestFault:
                new = None
        if new is None:
            return _bad_frame(p)
        p.stub.regs.set_fpstate(new)  # type: ignore[attr-defined]
    rip = restored["rip"]
    if rip >= _CANONICAL_TOP:
        # Linux returns there and faults at once (a general protection fault).
        p.signals.force(signal.SIGSEGV, SigInfo(signal.SIGSEGV, SI_KERNEL, addr=0))
        return restored["rax"]
    regs.rip = rip
    _restore_altstack(p, ss_sp, ss_flags, ss_size)
    del uc_flags
    return restored["rax"]


def _restore_altstack(p: GuestProcess, sp: int, flags: int, size: int) -> None:
    """``sigaltstack`` with the frame's ``uc_stack``; its errors are ignored, as Linux does."""
    err = set_altstack(p, sp, flags, size)
    del err


def set_altstack(p: GuestProcess, sp: int, flags: int, size: int) -> int:
    """``sigaltstack``'s change: 0, or the errno (EPERM on the stack, EINVAL, ENOMEM)."""
    st = p.signals
    if st.on_altstack(p.stub.regs.rsp):
        return errno.EPERM
    flags &= 0xFFFFFFFF
    mode = flags & ~SS_AUTODISARM
    if mode not in (0, SS_ONSTACK, SS_DISABLE):
        return errno.EINVAL
    if mode == SS_DISABLE:
        st.altstack = (0, flags, 0)
        return 0
    if size < MINSIGSTKSZ:
        return errno.ENOMEM
    st.altstack = (sp, flags, size)
    return 0
