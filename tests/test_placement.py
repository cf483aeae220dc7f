"""Adaptive placement: chatty stubs share the controller's CPU, busy ones are let out."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace

import pytest
from guestcode import Guest

from aioumm.loop import Controller, features
from aioumm.placement import Placement
from aioumm.report import Report
from aioumm.stub import Stub

# Asks syscall 500 (RDI = round), or spins for ever once RDI reaches 1 << 40.
CHATTY_THEN_SPIN = """
    xor %r12d, %r12d
1:  mov $500, %eax
    mov %r12, %rdi
    syscall
    mov %rax, %r12
    cmp $0, %r12
    jge 1b
2:  jmp 2b
"""

WIDE = os.sched_getaffinity(0)


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="chatty_ns < busy_ns"):
        Placement(chatty_ns=5_000_000, busy_ns=1_000_000)


@pytest.mark.asyncio
async def test_placement_is_off_by_default_and_leaves_the_thread_alone() -> None:
    async with Controller() as ctl:
        assert ctl.placement is None
        assert os.sched_getaffinity(0) == WIDE
        stub = await ctl.spawn()
        assert os.sched_getaffinity(stub.pid) == WIDE


@pytest.mark.asyncio
async def test_auto_placement_is_on_exactly_where_nobody_spins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(WIDE) >= 2, "this machine has one CPU: nothing to place"
    async with Controller(placement="auto", spin_ns=0) as ctl:
        assert not ctl.spins
        assert ctl.placement is not None and os.sched_getaffinity(0) == {ctl.placement.home}
    assert os.sched_getaffinity(0) == WIDE
    async with Controller(placement="auto") as ctl:
        assert ctl.spins is ctl.features.rdtscp
        assert (ctl.placement is None) is ctl.spins
    # A CPU without RDTSCP: the stubs cannot tell their CPU, nobody spins, so the stubs are placed.
    monkeypatch.setattr("aioumm.loop._features", replace(features(), rdtscp=False))
    async with Controller(placement="auto") as ctl:
        assert not ctl.spins and ctl.placement is not None
        stub = await ctl.spawn()
        assert os.sched_getaffinity(stub.pid) == {ctl.placement.home}


def test_placement_must_be_a_known_choice() -> None:
    with pytest.raises(TypeError, match="placement must be True, False, 'auto' or a Placement, not 'yes'"):
        Controller(placement="yes")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_chatty_stubs_stay_home_and_busy_ones_are_let_out() -> None:
    assert len(WIDE) >= 2, "this machine has one CPU: nothing to place"
    async with Controller(placement=Placement(chatty_ns=200_000, busy_ns=20_000_000)) as ctl:
        placement = ctl.placement
        assert placement is not None and placement.home is not None
        home = {placement.home}
        # The loop's thread is pinned; new stubs inherit its CPU; the guests' CPUs are the wide set.
        assert os.sched_getaffinity(0) == home
        assert ctl.cpus == frozenset(WIDE)
        stub = await ctl.spawn()
        g = Guest(stub, CHATTY_THEN_SPIN)
        assert os.sched_getaffinity(stub.pid) == home
        rounds = 0

        def answer(report: Report) -> bool:
            nonlocal rounds
            rounds += 1
            stub.regs.rax = rounds if rounds < 2000 else -1  # -1: spin from now on
            return rounds < 2000

        await stub.resume(answer)
        assert os.sched_getaffinity(stub.pid) == home  # 2000 short runs: chatty
        assert placement.moves == 0
        stub.regs.rax = -1
        task = asyncio.ensure_future(stub.resume())
        # A run longer than busy_ns is let out by the placement's timer, while it still runs.
        for _ in range(100):
            await asyncio.sleep(0.01)
            if os.sched_getaffinity(stub.pid) == WIDE:
                break
        assert os.sched_getaffinity(stub.pid) == WIDE
        assert placement.moves == 1
        stub.interrupt()
        assert (await task).signal == signal.SIGALRM
        g.close()
    # Closed: the thread has its mask back.
    assert os.sched_getaffinity(0) == WIDE


@pytest.mark.asyncio
async def test_a_stub_comes_home_when_its_runs_become_short_again() -> None:
    assert len(WIDE) >= 2, "this machine has one CPU: nothing to place"
    async with Controller(placement=Placement(chatty_ns=200_000, busy_ns=2_000_000)) as ctl:
        placement = ctl.placement
        assert placement is not None
        stub = await ctl.spawn()
        g = Guest(stub, CHATTY_THEN_SPIN)
        stub._run_avg = 50_000_000  # as after a long computation
        placement._move(stub, home=False)
        assert os.sched_getaffinity(stub.pid) == WIDE
        rounds = 0

        def answer(report: Report) -> bool:
            nonlocal rounds
            rounds += 1
            stub.regs.rax = rounds
            return os.sched_getaffinity(stub.pid) != {placement.home} and rounds < 5000

        await stub.resume(answer)
        # The average decays by 1/8 per short run: back home after a few dozen, not thousands.
        assert os.sched_getaffinity(stub.pid) == {placement.home}
        assert 20 < rounds < 200, rounds
        g.close()


@pytest.mark.asyncio
async def test_a_controller_that_fails_to_open_gives_the_thread_its_mask_back(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(WIDE) >= 2, "this machine has one CPU: nothing to place"

    def no_code() -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr("aioumm.loop._sealed_code_memfd", no_code)
    with pytest.raises(OSError, match="Too many open files"):
        async with Controller(placement=True):
            pass
    assert os.sched_getaffinity(0) == WIDE


@pytest.mark.asyncio
async def test_a_cancelled_close_gives_the_thread_its_mask_back() -> None:
    assert len(WIDE) >= 2, "this machine has one CPU: nothing to place"
    ctl = Controller(placement=True)
    await ctl.__aenter__()
    assert ctl.placement is not None and os.sched_getaffinity(0) == {ctl.placement.home}
    stub = await ctl.spawn()
    closing = asyncio.ensure_future(ctl.aclose())
    await asyncio.sleep(0)  # it has killed the stub and waits to reap it
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert os.sched_getaffinity(0) == WIDE
    await ctl.aclose()  # a second close reaps what is left
    assert stub.exit_status is not None and stub.exit_status.signal == signal.SIGKILL


@pytest.mark.asyncio
async def test_chatty_stubs_are_let_out_while_many_run_at_once_and_come_home_after() -> None:
    """A crowd on the home CPU: chatty stubs leave it; one stub alone again comes back."""
    assert len(WIDE) >= 2, "this machine has one CPU: nothing to place"
    async with Controller(placement=Placement(crowd=2.5)) as ctl:
        placement = ctl.placement
        assert placement is not None and placement.home is not None
        home = {placement.home}
        stubs = [await ctl.spawn() for _ in range(6)]
        guests = [Guest(s, CHATTY_THEN_SPIN) for s in stubs]

        peak = 0.0
        let_out: set[int] = set()

        async def converse(stub: Stub, rounds: int) -> None:
            done = 0

            def answer(report: Report) -> bool:
                nonlocal done, peak
                done += 1
                peak = max(peak, placement.running_avg)
                if os.sched_getaffinity(stub.pid) == WIDE:
                    let_out.add(stub.pid)
                stub.regs.rax = done
                return done < rounds

            await stub.resume(answer)

        await asyncio.gather(*(converse(s, 300) for s in stubs))
        assert peak > 2.5
        assert let_out == {s.pid for s in stubs}  # each was let out while the crowd lasted
        # One of them alone: the average falls, and the short runs bring it home again.
        await converse(stubs[0], 300)
        assert placement.running_avg < 1.25
        assert os.sched_getaffinity(stubs[0].pid) == home
        for g in guests:
            g.close()
