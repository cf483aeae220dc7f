"""Many stubs on one loop: every answer checked, no lost wake-up, bounded waits."""

from __future__ import annotations

import asyncio
import time

import pytest
from guestcode import Guest

from aioumm.abi import Handoff, lib
from aioumm.errors import StubTimeout
from aioumm.futex_bridge import HandoffBridge
from aioumm.loop import Controller
from aioumm.stub import Stub

# The guest asks with syscall 500 (rdi = its counter) and checks the answer is 3*counter+1;
# a wrong answer ends in ud2 (SIGILL), which the controller would see as a non-SIGSYS report.
ASKER = """
    xor %r12d, %r12d
1:  mov $500, %eax
    mov %r12, %rdi
    syscall
    lea 1(%r12,%r12,2), %rbx
    cmp %rbx, %rax
    jne 2f
    inc %r12
    jmp 1b
2:  ud2
"""


async def _converse(stub: Stub, rounds: int) -> int:
    g = Guest(stub, ASKER)
    try:
        regs = stub.regs
        for i in range(rounds):
            report = await stub.resume()
            assert report.syscall == 500, report
            assert regs.rdi == i  # the guest's counter: no report lost or repeated
            regs.rax = 3 * i + 1
        # One more round: the last answer was checked by the guest too.
        report = await stub.resume()
        assert report.syscall == 500 and regs.rdi == rounds
        return rounds
    finally:
        g.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_wakes", [True, False], ids=["batched-wakes", "immediate-wakes"])
async def test_64_stubs_1000_round_trips_each(batch_wakes: bool) -> None:
    async with Controller(batch_wakes=batch_wakes) as ctl:
        stubs = [await ctl.spawn() for _ in range(64)]
        before = ctl.stats.round_trips
        t0 = time.monotonic()
        done = await asyncio.gather(*(_converse(s, 1000) for s in stubs))
        elapsed = time.monotonic() - t0
        assert done == [1000] * 64
        assert ctl.stats.round_trips - before == 64 * 1001
        # Not a speed assertion: just the figure, for whoever reads the log.
        print(f"64 stubs x 1001 round trips in {elapsed:.2f}s")
        if batch_wakes:
            assert ctl.notifications.deferred > 0  # the batched path ran


@pytest.mark.asyncio
async def test_300_stubs_at_once() -> None:
    async with Controller() as ctl:
        stubs = await asyncio.gather(*(ctl.spawn() for _ in range(300)))
        assert len({s.pid for s in stubs}) == 300
        assert await asyncio.gather(*(_converse(s, 20) for s in stubs)) == [20] * 300


@pytest.mark.asyncio
async def test_a_stub_that_never_answers_is_killed_not_waited_for_forever() -> None:
    async with Controller(handler_timeout=0.1) as ctl:
        stub = await ctl.spawn()
        other = await ctl.spawn()
        # Freeze the stub (SIGSTOP) so it cannot run its batch: the flush must end anyway.
        import os
        import signal

        os.kill(stub.pid, signal.SIGSTOP)
        stub.mmap(0x10000, 4096, 3)
        t0 = time.monotonic()
        with pytest.raises(StubTimeout, match=r"flush: no answer within 0\.2s"):
            await stub.flush()
        assert time.monotonic() - t0 < 5
        assert (await stub.wait_exit()).signal == signal.SIGKILL
        assert await _converse(other, 5) == 5


@pytest.mark.asyncio
async def test_a_lone_stub_is_woken_at_the_end_of_its_own_pass() -> None:
    """Deferring a wake only ever waits for other answers of the same pass, never for a later one.

    A stub that dies at its report leaves that report unanswered; the stub after it is
    still woken as soon as its own answer is written.  (No spinning: every report must come
    through a pass.)
    """
    async with Controller(spin_ns=0) as ctl:
        wakes = ctl.notifications
        dying = await ctl.spawn()
        g = Guest(dying, "mov $39, %eax\nsyscall\n1: jmp 1b")
        await g.stub.resume()  # stopped at its getpid, never answered: killed there
        dying.kill()
        await dying.wait_exit()
        g.close()
        stub = await ctl.spawn()
        g = Guest(stub, "1: mov $39, %eax\nsyscall\njmp 1b")
        before, passes = wakes.deferred, wakes.passes
        for _ in range(50):
            await stub.resume()
        assert wakes.deferred == before
        assert wakes.passes - passes >= 50  # every report came through a pass
        g.close()


@pytest.mark.asyncio
async def test_a_failing_notification_costs_the_other_stubs_of_its_pass_nothing() -> None:
    """Edge-triggered events come once: a pass goes on past one that raises, and says so.

    Four stubs report before the loop runs again, so one pass sees all four; the first
    notification handled raises.  The other three must still be answered.  (No spinning:
    a task that spins takes its stub's report without any pass.)
    """
    async with Controller(spin_ns=0) as ctl:
        loop = asyncio.get_running_loop()
        seen: list[dict[str, object]] = []
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        stubs = [await ctl.spawn() for _ in range(4)]
        guests = [Guest(s, "mov $39, %eax\nsyscall\nud2") for s in stubs]
        for s in stubs:
            await s.flush()
        raised: list[bool] = []

        class FirstRaises:
            def __init__(self, bridge: HandoffBridge) -> None:
                self.bridge = bridge

            def handed_over(self) -> bool:
                if not raised:
                    raised.append(True)
                    raise RuntimeError("broken on purpose")
                return self.bridge.handed_over()

        table = ctl.notifications._bridges
        for key, bridge in list(table.items()):
            table[key] = FirstRaises(bridge)  # type: ignore[assignment]
        waits = [asyncio.ensure_future(s.resume()) for s in stubs]
        await asyncio.sleep(0)  # each task hands its stub back
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            lib.aioumm_load_handoff(s._data) != Handoff.CONTROLLER for s in stubs
        ):
            time.sleep(0.001)  # holding the loop: their four notifications wait for one pass
        done, pending = await asyncio.wait(waits, timeout=2)
        assert len(done) == 3 and len(pending) == 1  # only the one whose notification raised waits
        assert [c.get("exception").__class__ for c in seen] == [RuntimeError]
        for s in stubs:
            s.kill()
        await asyncio.gather(*waits, return_exceptions=True)
        for g in guests:
            g.close()
