"""One exception hierarchy for everything aioumm raises.

``AioummError`` is the root.  Errors about one stub carry its pid; an error
in one stub never disturbs another stub or the controller.
"""

from __future__ import annotations

import errno as _errno
import os


class AioummError(Exception):
    """Base class of every aioumm error."""


class BadArgument(AioummError, ValueError):
    """A call was refused before anything reached a stub.

    ``call`` names the API call, ``argument`` the offending argument.
    """

    def __init__(self, call: str, argument: str, problem: str) -> None:
        super().__init__(f"{call}: {argument}: {problem}")
        self.call = call
        self.argument = argument
        self.problem = problem


class ControllerClosed(AioummError):
    """The controller was used outside its ``async with`` block."""


class StubError(AioummError):
    """An error about one stub (``pid`` says which; None before it had a process)."""

    def __init__(self, pid: int | None, message: str) -> None:
        super().__init__(f"stub {pid}: {message}" if pid is not None else f"stub: {message}")
        self.pid = pid


class StubBusy(StubError):
    """The call needs the stub stopped (or running) and it is not."""


class SpawnError(StubError):
    """The bootstrap failed; ``exit_code`` and ``reason`` say at which step."""

    def __init__(self, pid: int | None, message: str, exit_code: int | None = None) -> None:
        super().__init__(pid, message)
        self.exit_code = exit_code


class StubDied(StubError):
    """The stub exited or was killed; ``status`` says how (see ``ExitStatus``)."""

    def __init__(self, pid: int, message: str, status: object = None) -> None:
        super().__init__(pid, message)
        self.reason = message
        self.status = status


class StubCorrupt(StubError):
    """The stub data page failed validation; the stub has been killed.

    Guest code can write that page, so this is what a hostile or broken
    guest gets; no other stub is affected.
    """


class StubTimeout(StubError):
    """The stub did not answer in time, even after a second wake-up; it has been killed."""


class BatchError(StubError):
    """A record of a batch failed.

    ``op`` and ``args`` describe the failing record, ``errno`` is what the
    kernel returned for it and ``done`` how many queued calls ran before it.
    Later records did not run; the stub stays usable.  Contiguous calls are
    merged into one record, so the failing record may stand for several
    calls, and (as with Linux's own munmap/mprotect over a partly unmapped
    range) the kernel may have applied part of it.
    """

    def __init__(self, pid: int, op: str, args: dict[str, int], err: int, done: int) -> None:
        shown = ", ".join(f"{k}={v:#x}" if k in ("addr", "length", "offset") else f"{k}={v}" for k, v in args.items())
        name = _errno.errorcode.get(err, str(err))
        super().__init__(pid, f"{op}({shown}) failed: {name} ({os.strerror(err)}); {done} earlier record(s) ran")
        self.op = op
        self.args_ = args
        self.errno = err
        self.done = done


class FdPassingError(StubError):
    """The descriptors for a batch could not be passed; no record ran."""
