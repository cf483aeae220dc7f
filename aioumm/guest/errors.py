"""Errors of the guest runner.

:class:`GuestError` is what a caller of the runner sees (a program that cannot be
loaded, a guest address space that cannot be built).  The other classes here never
leave the runner: syscall handlers raise them and the dispatcher turns them into the
negative errno the guest gets, or into the guest's death.
"""

from __future__ import annotations

import asyncio
import errno as _errno

from aioumm.errors import AioummError

__all__ = ["GuestError", "GuestExit", "GuestFault", "PartlyDone", "SyscallError"]


class GuestError(AioummError):
    """A guest program could not be loaded or run (bad file, bad image, no room)."""


class SyscallError(Exception):
    """Raised by a syscall handler to answer the guest with ``-errno``."""

    def __init__(self, err: int) -> None:
        super().__init__(_errno.errorcode.get(err, str(err)))
        self.errno = err


class GuestFault(SyscallError):
    """A guest pointer or length does not name memory the guest may use that way.

    It is an ordinary syscall failure (``EFAULT``), never a controller error.
    """

    def __init__(self, addr: int, length: int = 0) -> None:
        super().__init__(_errno.EFAULT)
        self.addr = addr
        self.length = length


class PartlyDone(asyncio.CancelledError):
    """A signal cut a waiting call short after part of its work was done.

    Raised in place of the cancellation: the call answers ``count`` (what Linux's
    pipe write answers then), not ``EINTR``, and is not restarted.
    """

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


class GuestExit(Exception):
    """The guest process is over: raised by ``exit_group``, fatal signals and faults.

    ``wait_status`` is encoded the way ``wait4`` reports it: ``code << 8`` for a
    normal exit, the signal number for a death by signal.
    """

    def __init__(self, wait_status: int) -> None:
        super().__init__(wait_status)
        self.wait_status = wait_status

    @classmethod
    def exited(cls, code: int) -> GuestExit:
        return cls((code & 0xFF) << 8)

    @classmethod
    def killed(cls, signo: int) -> GuestExit:
        return cls(signo & 0x7F)

    @property
    def shell_status(self) -> int:
        """The status a shell shows: the exit code, or 128 + N after signal N."""
        sig = self.wait_status & 0x7F
        return 128 + sig if sig else (self.wait_status >> 8) & 0xFF
