"""``signalfd``: a descriptor that reads a process's pending signals as records.

Linux's signalfd is readable while the *reading* process has a pending signal in
the descriptor's mask, and a read takes such signals off that process's pending
set (blocked or not), each as a 128-byte ``struct signalfd_siginfo``.

Guest descriptors are host descriptors (``poll`` asks the host), so a
:class:`SignalFile` holds a host eventfd that stands for its readiness: it is
made readable when a signal in the mask is posted to a process holding the
descriptor (:meth:`GuestProcess.post_signal`), and brought in line with the
polling process's pending set before every ``poll`` looks at it
(:func:`refresh`).  A descriptor shared by several processes (after ``fork``)
shows, while nobody polls it, the readiness of the last process that touched it.
The read itself never uses the host descriptor: it takes the reader's signals.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections.abc import Sequence

from .errors import SyscallError
from .files import OpenFile
from .signals import SigInfo, SignalState

__all__ = ["SIGNALFD_SIGINFO_SIZE", "SignalFile", "record"]

SIGNALFD_SIGINFO_SIZE = 128
#: ssi_signo, ssi_errno, ssi_code, ssi_pid, ssi_uid, ssi_fd, ssi_tid, ssi_band,
#: ssi_overrun, ssi_trapno, ssi_status, ssi_int, ssi_ptr, ssi_utime, ssi_stime, ssi_addr.
_RECORD = struct.Struct("<IiiIIiIIIIiiQQQQ")

_SI_TIMER = -2


def record(info: SigInfo) -> bytes:
    """``struct signalfd_siginfo`` for ``info``, filled as Linux fills it for its kind."""
    raw = info.pack()
    pid = uid = tid = overrun = status = value = addr = 0
    if info.addr is not None:  # a fault
        addr = info.addr & 0xFFFFFFFFFFFFFFFF
    elif info.status is not None:  # SIGCHLD
        pid, uid, status = info.pid & 0xFFFFFFFF, info.uid, info.status
    elif info.code == _SI_TIMER:
        tid, overrun, value = struct.unpack_from("<IIQ", raw, 16)
    else:
        pid, uid = info.pid & 0xFFFFFFFF, info.uid
        if info.code < 0:  # sigqueue, tgkill...: the value they carry
            (value,) = struct.unpack_from("<Q", raw, 24)
    fields = (info.signo, 0, info.code, pid, uid, 0, tid, 0, overrun, 0, status, _s32(value), value, 0, 0, addr)
    return _RECORD.pack(*fields).ljust(SIGNALFD_SIGINFO_SIZE, b"\0")


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


class SignalFile(OpenFile):
    """The open file behind a guest's signalfd: its mask, and an eventfd for ``poll``."""

    def __init__(self, mask: int, *, nonblocking: bool) -> None:
        host = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            super().__init__(host, "anon_inode:[signalfd]", flags=os.O_RDWR)
        except BaseException:
            os.close(host)
            raise
        #: The signals this descriptor reads.
        self.mask = mask
        # The host eventfd is always non-blocking; what the guest sees is its own flag.
        self.nonblocking = nonblocking

    def set_status_flags(self, flags: int, mask: int) -> None:
        # The host eventfd stays non-blocking (the controller reads it to reset it).
        host_mask = mask & ~os.O_NONBLOCK
        if host_mask:
            super().set_status_flags(flags, host_mask)
        if mask & os.O_NONBLOCK:
            self.nonblocking = bool(flags & os.O_NONBLOCK)

    def ready(self, st: SignalState) -> bool:
        """Whether a process with signal state ``st`` has something to read here."""
        return bool(st.pending & self.mask)

    def refresh(self, st: SignalState) -> None:
        """Make the host eventfd readable exactly when ``st`` has a signal in the mask."""
        if self.host_fd < 0:
            return
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.host_fd)  # back to "not readable"
        if self.ready(st):
            os.eventfd_write(self.host_fd, 1)

    def take(self, st: SignalState, count: int) -> bytes:
        """Up to ``count`` records of ``st``'s pending signals in the mask (lowest first)."""
        out = []
        for _ in range(count):
            sig = st.next_signal(self.mask)
            if not sig:
                break
            info = st.take(sig) or SigInfo(sig, 0x80)  # SI_KERNEL
            out.append(record(info))
        self.refresh(st)
        return b"".join(out)

    # A signalfd is read only through :meth:`take` (its reader's signals) and never written.

    async def readv(self, views: Sequence[memoryview], offset: int | None = None) -> int:
        raise SyscallError(errno.EINVAL)

    async def writev(self, views: Sequence[memoryview], offset: int | None = None) -> int:
        raise SyscallError(errno.EINVAL)
