"""The controller works from anyio code on its asyncio backend (with and without uvloop)."""

from __future__ import annotations

import signal

import anyio
import pytest
from guestcode import Guest

from aioumm.loop import Controller


async def _conversation() -> list[int]:
    answers = []
    async with Controller() as ctl, anyio.create_task_group() as tg:

        async def one(k: int) -> None:
            stub = await ctl.spawn()
            g = Guest(stub, "mov $500, %eax\nsyscall\nmov %rax, %r12\nmov $501, %eax\nsyscall\nud2")
            await stub.resume()
            stub.regs.rax = 1000 + k
            report = await stub.resume()
            assert report.signal == signal.SIGSYS and report.syscall == 501
            answers.append(stub.regs.r12)
            g.close()

        for k in range(8):
            tg.start_soon(one, k)
    return sorted(answers)


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_anyio_task_group_drives_stubs(use_uvloop: bool) -> None:
    result = anyio.run(_conversation, backend="asyncio", backend_options={"use_uvloop": use_uvloop})
    assert result == [1000 + k for k in range(8)]


def test_anyio_cancel_scope_kills_a_running_stub() -> None:
    async def main() -> int | None:
        async with Controller() as ctl:
            stub = await ctl.spawn()
            g = Guest(stub, "1: jmp 1b")
            with anyio.move_on_after(0.05):
                await stub.resume()
            status = await stub.wait_exit()
            g.close()
            return status.signal

    assert anyio.run(main, backend="asyncio") == signal.SIGKILL
