"""Spinning on both sides of the handoff: used across CPUs only, bounded, and never changes an answer."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from guestcode import Guest
from test_hostile import _off, _site
from test_soak import ASKER

from aioumm.abi import ffi, lib
from aioumm.errors import StubDied
from aioumm.futex_bridge import Notifications
from aioumm.loop import Controller
from aioumm.stub import Stub

ROUNDS = 2000

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to place the sides apart")


@pytest.fixture
def cpus() -> Iterator[list[int]]:
    """Two CPUs of this process; its mask is given back afterwards."""
    mask = os.sched_getaffinity(0)
    yield sorted(mask)[:2]
    os.sched_setaffinity(0, mask)


async def asker(ctl: Controller, controller_cpu: int, stub_cpu: int, source: str = ASKER) -> tuple[Stub, Guest]:
    """A stub running ``source``, the loop's thread on one CPU and the stub on another (or the same)."""
    stub = await ctl.spawn()
    g = Guest(stub, source)
    os.sched_setaffinity(0, {controller_cpu})
    os.sched_setaffinity(stub.pid, {stub_cpu})
    return stub, g


async def converse(stub: Stub, rounds: int, seen: Callable[[], object] | None = None) -> list[int]:
    """``rounds`` checked answers from the notification's callback; the stub's ``spun`` after each.

    ``seen`` is called at each report."""
    regs = stub.regs
    data = ffi.cast("struct stub_data *", stub._base)
    asked = 0
    spun: list[int] = []

    def answer(report: object) -> bool:
        nonlocal asked
        if seen is not None:
            seen()
        assert regs.rdi == asked  # the guest's counter: no report lost or repeated
        spun.append(data.spun)
        if asked == rounds:
            return False
        regs.rax = 3 * asked + 1
        asked += 1
        return True

    report = await stub.resume()
    assert report.syscall == 500
    answer(report)
    await stub.resume(answer)
    assert asked == rounds
    return spun


@pytest.mark.asyncio
async def test_apart_both_sides_spin_and_every_answer_is_right(cpus: list[int]) -> None:
    async with Controller(spin_ns=200_000) as ctl:
        stub, g = await asker(ctl, cpus[0], cpus[1])
        before = ctl.notifications.wakes
        spun = await converse(stub, ROUNDS)
        wakes = ctl.notifications.wakes - before
        g.close()
        # Most reports were taken by the controller's spin, and the stub saw most answers spinning.
        assert ctl.notifications.spun > ROUNDS // 2
        assert sum(s != lib.STUB_SPUN_SLEPT for s in spun) > ROUNDS // 2
        # A stub answered while it spins never said it sleeps: no FUTEX_WAKE for it.  (The one
        # more is the flush of the guest's mappings, before the first report.)
        assert wakes <= sum(s == lib.STUB_SPUN_SLEPT for s in spun) + 1
        assert wakes < ROUNDS // 2
        assert all(s == lib.STUB_SPUN_SLEPT or s <= lib.STUB_SPIN_MAX for s in spun)


class LoopTurns:
    """Counts the running loop's iterations: a callback due at once runs in every one."""

    def __init__(self) -> None:
        self.count = 0
        self._loop = asyncio.get_running_loop()
        self._loop.call_soon(self._turn)

    def _turn(self) -> None:
        self.count += 1
        self._loop.call_soon(self._turn)


@pytest.mark.asyncio
async def test_a_task_awaiting_each_report_spins_too_and_the_loop_still_runs(cpus: list[int]) -> None:
    """``await stub.resume()`` per report, apart: the task takes most reports by spinning before
    it would suspend, and yet the loop runs at least once every CHAIN reports."""
    async with Controller(spin_ns=200_000) as ctl:
        stub, g = await asker(ctl, cpus[0], cpus[1])
        regs = stub.regs
        turns = LoopTurns()
        report = await stub.resume()
        seen = []  # the loop's iteration count at each report
        for i in range(ROUNDS):
            assert report.syscall == 500 and regs.rdi == i
            regs.rax = 3 * i + 1
            report = await stub.resume()
            seen.append(turns.count)
        assert regs.rdi == ROUNDS  # the last answer passed the guest's check
        g.close()
        notifications = ctl.notifications
        assert notifications.spun > ROUNDS // 2
        # Reports in a row while the loop did not run: one it delivered, then at most CHAIN
        # taken by spinning.
        longest = max(len(list(run)) for _, run in itertools.groupby(seen))
        assert longest <= notifications.CHAIN + 1


@pytest.mark.asyncio
async def test_on_one_cpu_neither_side_spins(cpus: list[int]) -> None:
    async with Controller(spin_ns=200_000) as ctl:
        stub, g = await asker(ctl, cpus[0], cpus[0])
        spun = await converse(stub, ROUNDS)
        g.close()
        wakes = ctl.notifications
        assert wakes.spun == 0 and wakes.spin_misses == 0  # never waited for a stub that could not run
        # It never spun: it slept, or the answer came before it could (0 pauses, no sleep).
        assert set(spun[1:]) <= {lib.STUB_SPUN_SLEPT, 0}


@pytest.mark.asyncio
async def test_on_one_cpu_a_report_made_before_the_controller_looks_is_taken_at_once(cpus: list[int]) -> None:
    """Woken on the controller's CPU, the stub runs at once and often reports again before the
    controller has returned to its loop: that report is answered there and then (``early``),
    without waiting for the loop to see its eventfd, and every answer is still right."""
    async with Controller(spin_ns=200_000) as ctl:
        stub, g = await asker(ctl, cpus[0], cpus[0])
        notifications = ctl.notifications
        passes = notifications.passes
        await converse(stub, ROUNDS)
        g.close()
        assert notifications.spun == 0 and notifications.spin_misses == 0
        assert notifications.early > 0
        # Each report came through a pass of the loop or was found early: none twice, none lost.
        assert notifications.passes - passes + notifications.early >= ROUNDS


def longest_hold(seen: list[tuple[int, int]]) -> int:
    """The longest the loop was held (ns): from the first to the last report seen in one of
    its iterations, given ``(iteration, time)`` of each report."""
    runs = ([t for _, t in run] for _, run in itertools.groupby(seen, key=lambda s: s[0]))
    return max(run[-1] - run[0] for run in runs)


# ASKER with some computing between its syscalls (300000 turns of a loop: a few hundred
# microseconds here).
COMPUTING_ASKER = ASKER.replace("    inc %r12\n", "    mov $300000, %ecx\n3:  dec %ecx\n    jnz 3b\n    inc %r12\n")


@pytest.mark.asyncio
async def test_on_one_cpu_a_guest_that_computes_between_syscalls_does_not_keep_the_loop_waiting(
    cpus: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reports found early are answered without the loop running in between, but only for
    ``CHAIN_NS``: a guest that computes between its syscalls would otherwise hold every timer
    and descriptor of the loop for ``CHAIN`` of its computations in a row (about 5 ms here,
    where the scheduler stops letting the stub preempt the controller)."""
    assert COMPUTING_ASKER != ASKER
    monkeypatch.setattr(Notifications, "CHAIN_NS", 200_000)  # well apart from those 5 ms
    async with Controller(spin_ns=200_000) as ctl:
        stub, g = await asker(ctl, cpus[0], cpus[0], COMPUTING_ASKER)
        clock = time.monotonic_ns
        turns = LoopTurns()
        seen: list[tuple[int, int]] = []  # (loop iteration, time) of each report
        await converse(stub, 200, lambda: seen.append((turns.count, clock())))
        g.close()
        # The reports of one loop iteration: the first came through a pass, the others early,
        # and those only while the chain had run for less than CHAIN_NS.
        assert longest_hold(seen) <= Notifications.CHAIN_NS + 2_000_000


@pytest.mark.asyncio
async def test_a_task_awaiting_each_report_holds_the_loop_chain_ns_at_most(cpus: list[int]) -> None:
    """A task that awaits each report spins for the next before it suspends, and its waiter is
    done then, so the loop does not run between its reports: the chains of one such run share
    one deadline (they once had one each, and held the loop for CHAIN reports, 6-8 ms here)."""
    rounds = 300
    async with Controller(spin_ns=200_000) as ctl:
        stub, g = await asker(ctl, cpus[0], cpus[1], COMPUTING_ASKER)
        regs = stub.regs
        turns = LoopTurns()
        seen: list[tuple[int, int]] = []
        await stub.resume()
        for i in range(rounds):
            assert regs.rdi == i
            regs.rax = 3 * i + 1
            await stub.resume()
            seen.append((turns.count, time.monotonic_ns()))
        assert regs.rdi == rounds  # the last answer passed the guest's check
        g.close()
        assert ctl.notifications.spun > rounds // 2  # the reports were taken by spinning
        assert longest_hold(seen) <= Notifications.CHAIN_NS + ctl.spin_ns + 1_000_000


@pytest.mark.asyncio
@pytest.mark.asyncio_loop_only  # uvloop runs the timers due first in each iteration
async def test_a_timer_due_during_a_chain_waits_for_that_chain_only(cpus: list[int]) -> None:
    """A chain cut short by CHAIN_NS leaves its report to the next pass, which asyncio runs
    before the timers that fell due: that pass answers without chaining, so the timers run
    next instead of after a second chain (one of up to CHAIN reports)."""
    loop = asyncio.get_running_loop()
    # About 30 us of computing between syscalls: within the default spin, so chains run long.
    source = ASKER.replace("    inc %r12\n", "    mov $100000, %ecx\n3:  dec %ecx\n    jnz 3b\n    inc %r12\n")
    async with Controller() as ctl:
        stub, g = await asker(ctl, cpus[0], cpus[1], source)
        turns = LoopTurns()
        fired: list[tuple[float, float]] = []  # (due, ran) of each timer
        timer: asyncio.TimerHandle | None = None

        def arm() -> None:
            nonlocal timer
            timer = loop.call_later(0.0007, fire, loop.time() + 0.0007)

        def fire(due: float) -> None:
            fired.append((due, loop.time()))
            arm()

        arm()
        seen: list[tuple[int, float]] = []  # (loop iteration, time) of each report
        await converse(stub, 3000, lambda: seen.append((turns.count, loop.time())))
        assert timer is not None
        timer.cancel()
        g.close()
        assert ctl.notifications.spun > 1500 and len(fired) > 20
        # The reports answered while a timer was due: those of the chain it fell due in, and
        # (asyncio) the one of the pass that does not chain; once, a second chain's too.
        for due, ran in fired:
            waited = collections.Counter(turn for turn, t in seen if due < t <= ran)
            assert sum(1 for n in waited.values() if n > 1) <= 1, waited


# A guest that forges a hand-over (its stub looks stopped to the controller), then keeps
# flipping its word between CHILD and CONTROLLER and notifying, as if it reported again.
FLIPPER = """
    movabs ${handoff}, %r13
    lea one(%rip), %r14
    movl $1, (%r13)
    call notify
1:  movl $0, (%r13)
    call notify
    mov $20000, %ecx
2:  dec %ecx
    jnz 2b
    movl $1, (%r13)
    mov $200, %ecx
3:  dec %ecx
    jnz 3b
    jmp 1b
notify:
    mov $1, %eax
    mov $1, %edi
    mov %r14, %rsi
    mov $8, %edx
    movabs ${notify}, %rbx
    jmp *%rbx
one: .quad 1
"""


@pytest.mark.asyncio
async def test_nobody_spins_for_a_stub_whose_report_the_controller_holds(cpus: list[int]) -> None:
    """Notifications of a stub the controller holds stopped (forged by its guest) make no pass
    chain on it: spinning is only for a stub handed back.  (They once made the controller take
    thousands of flips of its word as reports, at a cost to the stub that really ran.)"""
    async with Controller() as ctl:
        hostile = await ctl.spawn()
        forged = FLIPPER.format(handoff=_off("handoff"), notify=_site(1))
        hostile_guest = Guest(hostile, forged)
        os.sched_setaffinity(hostile.pid, {cpus[1]})
        await hostile.resume()  # its forged hand-over: stopped, as far as the controller knows
        spun = ctl.notifications.spun
        stub, g = await asker(ctl, cpus[0], cpus[0])  # the one running, on the loop's CPU: never spun for
        await converse(stub, 3000)
        assert ctl.notifications.spun == spun
        g.close()
        hostile_guest.close()


@pytest.mark.asyncio
async def test_spin_ns_0_turns_spinning_off(cpus: list[int]) -> None:
    async with Controller(spin_ns=0) as ctl:
        stub, g = await asker(ctl, cpus[0], cpus[1])
        spun = await converse(stub, 200)
        g.close()
        assert ctl.notifications.spun == 0
        assert set(spun[1:]) <= {lib.STUB_SPUN_SLEPT, 0}


@pytest.mark.asyncio
async def test_a_guest_that_rewrites_the_spin_fields_only_spins_within_the_bound(cpus: list[int]) -> None:
    """The spin fields are in the page the guest can write: the stub clamps the limit itself.

    Before each syscall the guest sets spin_limit to 2^32-1 and controller_cpu to a CPU that
    does not exist; each answer comes 20 ms late, far beyond STUB_SPIN_MAX pauses: the stub
    must have given up spinning and slept every time, and the answers still pass its check.
    """
    async with Controller(spin_ns=200_000) as ctl:
        spin_limit = lib.STUB_DATA_ADDR + ffi.offsetof("struct stub_data", "spin_limit")
        # ASKER, with the two fields rewritten before each of its syscalls.
        rewriting = ASKER.replace(
            "1:  mov $500, %eax",
            f"    mov ${spin_limit:#x}, %r13\n"
            "1:  movl $0xffffffff, (%r13)\n    movl $0xfff, 4(%r13)\n    mov $500, %eax",
        )
        assert rewriting != ASKER
        stub, g = await asker(ctl, cpus[0], cpus[1], rewriting)
        data = ffi.cast("struct stub_data *", stub._base)
        regs = stub.regs
        for i in range(6):
            report = await stub.resume()
            assert report.syscall == 500 and regs.rdi == i
            if i:
                assert data.spun == lib.STUB_SPUN_SLEPT
            regs.rax = 3 * i + 1
            await asyncio.sleep(0.02)
        g.close()


@pytest.mark.asyncio
async def test_running_counts_the_stubs_handed_back_and_not_handed_over_since() -> None:
    """What decides whether anyone spins: three computing stubs count, stopped and dead ones do not."""
    async with Controller() as ctl:
        stubs = [await ctl.spawn() for _ in range(4)]
        guests = [Guest(s, "1: jmp 1b") for s in stubs[:3]] + [Guest(stubs[3], "mov $39, %eax\nsyscall\nud2")]
        for s in stubs:
            await s.flush()
        assert ctl.notifications.running == 0
        tasks = [asyncio.ensure_future(s.resume()) for s in stubs]
        await tasks[3]  # the fourth reports its getpid and stops again
        assert ctl.notifications.running == 3
        stubs[0].kill()
        with pytest.raises(StubDied):
            await tasks[0]
        await stubs[0].wait_exit()
        assert ctl.notifications.running == 2
        for s, t in zip(stubs[1:3], tasks[1:3], strict=True):
            s.interrupt()
            assert (await t).signal == 14  # SIGALRM: stopped
        assert ctl.notifications.running == 0
        for g in guests:
            g.close()


@pytest.mark.asyncio
async def test_without_rdtscp_a_stub_cannot_tell_its_cpu_and_nobody_spins(cpus: list[int]) -> None:
    """A CPU without RDTSCP (STUB_INIT_RDTSCP clear): the stub never executes it, never spins."""
    ctl = Controller(spin_ns=200_000)
    ctl.features = replace(ctl.features, rdtscp=False)
    async with ctl:
        stub, g = await asker(ctl, cpus[0], cpus[1])
        spun = await converse(stub, 300)
        data = ffi.cast("struct stub_data *", stub._base)
        assert data.report_cpu == lib.STUB_CPU_UNKNOWN
        g.close()
        assert ctl.notifications.spun == 0 and ctl.notifications.spin_misses == 0
        assert set(spun[1:]) <= {lib.STUB_SPUN_SLEPT, 0}
