"""aioumm: drive many seccomp-trapped stub address spaces from one asyncio loop.

The core API::

    from aioumm import Controller, run

    async def main() -> None:
        async with Controller() as ctl:
            stub = await ctl.spawn()          # an empty address space, stopped
            stub.mmap(addr, length, prot, fd, offset)
            await stub.flush()                # the stub runs the batch
            stub.regs.rip = entry
            report = await stub.resume()      # runs until a syscall, fault or interrupt

    run(main())
"""

from aioumm.errors import (
    AioummError,
    BadArgument,
    BatchError,
    ControllerClosed,
    FdPassingError,
    SpawnError,
    StubBusy,
    StubCorrupt,
    StubDied,
    StubError,
    StubTimeout,
)
from aioumm.loop import Controller, new_event_loop, run
from aioumm.report import Registers, Report
from aioumm.stub import ExitStatus, State, Stub

__all__ = [
    "AioummError",
    "BadArgument",
    "BatchError",
    "Controller",
    "ControllerClosed",
    "ExitStatus",
    "FdPassingError",
    "Registers",
    "Report",
    "SpawnError",
    "State",
    "Stub",
    "StubBusy",
    "StubCorrupt",
    "StubDied",
    "StubError",
    "StubTimeout",
    "new_event_loop",
    "run",
]
