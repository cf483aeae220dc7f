"""``resume(answer)``: reports answered from the loop's callback, without a task switch each."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from guestcode import PROT_R, PROT_W, Guest

from aioumm.errors import StubDied
from aioumm.loop import Controller
from aioumm.report import Report
from aioumm.stub import State

# Asks syscall 500 with RDI = 0, 1, 2, ...; each answer must be 3 * RDI + 1, else it stops at ud2.
ASKER = """
    xor %r12d, %r12d
1:  mov $500, %eax
    mov %r12, %rdi
    syscall
    lea 1(%r12, %r12, 2), %rcx
    cmp %rcx, %rax
    jne 2f
    inc %r12
    jmp 1b
2:  ud2
"""
DATA_ADDR = 0x400000


@pytest_asyncio.fixture
async def ctl() -> AsyncIterator[Controller]:
    async with Controller() as ctl:
        yield ctl


@pytest.mark.asyncio
async def test_answers_run_until_one_is_declined(ctl: Controller) -> None:
    stub = await ctl.spawn()
    g = Guest(stub, ASKER)
    seen: list[int] = []

    def answer(report: Report) -> bool:
        assert report.syscall == 500
        seen.append(stub.regs.rdi)
        if len(seen) == 1000:
            return False
        stub.regs.rax = 3 * stub.regs.rdi + 1
        return True

    before = ctl.stats.round_trips
    report = await stub.resume(answer)
    # Every answer passed the guest's own check, and the declined report is the one returned.
    assert seen == list(range(1000))
    assert report.syscall == 500 and stub.regs.rdi == 999
    assert stub.state is State.STOPPED and stub.report == report
    assert ctl.stats.round_trips - before == 1000
    # The stub goes on as usual after a declined report: a wrong answer reaches ud2.
    stub.regs.rax = 0
    assert (await stub.resume()).signal == signal.SIGILL
    g.close()


@pytest.mark.asyncio
async def test_a_raising_answer_leaves_the_stub_stopped_at_its_report(ctl: Controller) -> None:
    stub = await ctl.spawn()
    g = Guest(stub, ASKER)

    def answer(report: Report) -> bool:
        if stub.regs.rdi == 5:
            raise LookupError("no answer for 5")
        stub.regs.rax = 3 * stub.regs.rdi + 1
        return True

    with pytest.raises(LookupError, match="no answer for 5"):
        await stub.resume(answer)
    assert stub.state is State.STOPPED and stub.regs.rdi == 5
    stub.regs.rax = 3 * 5 + 1

    def stop_at_7(report: Report) -> bool:
        if stub.regs.rdi == 7:
            return False
        stub.regs.rax = 3 * stub.regs.rdi + 1
        return True

    await stub.resume(stop_at_7)
    assert stub.regs.rdi == 7
    g.close()


@pytest.mark.asyncio
async def test_records_queued_by_an_answer_are_flushed_before_the_stub_runs(ctl: Controller) -> None:
    # The guest loads a word from DATA_ADDR after each ask: the mapping the answer queued must be there.
    stub = await ctl.spawn()
    g = Guest(stub, "1: mov $500, %eax\nsyscall\nmov 0x400000, %r13\nmov $501, %eax\nsyscall\njmp 1b")
    fd = os.memfd_create("test-answer-data", os.MFD_CLOEXEC)
    os.ftruncate(fd, 4096)
    os.pwrite(fd, (0x5EED).to_bytes(8, "little"), 0)
    calls: list[int] = []

    def answer(report: Report) -> bool:
        calls.append(report.syscall)
        if report.syscall == 500:
            stub.mmap(DATA_ADDR, 4096, PROT_R | PROT_W, fd, 0)
            return True
        return False

    report = await stub.resume(answer)
    os.close(fd)
    assert calls == [500, 501] and report.syscall == 501
    assert stub.regs.r13 == 0x5EED
    assert stub.queued == 0
    g.close()


@pytest.mark.asyncio
async def test_a_stub_killed_while_answered_raises_stub_died(ctl: Controller) -> None:
    stub = await ctl.spawn()
    g = Guest(stub, ASKER)

    def answer(report: Report) -> bool:
        if stub.regs.rdi == 3:
            stub.kill()
        stub.regs.rax = 3 * stub.regs.rdi + 1
        return True

    with pytest.raises(StubDied):
        await stub.resume(answer)
    assert (await stub.wait_exit()).signal == signal.SIGKILL
    g.close()
