"""Bad input is refused with a clear error naming the call and the argument, and loses nothing."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from guestcode import Guest

from aioumm import abi
from aioumm.errors import AioummError, BadArgument, ControllerClosed, SpawnError, StubBusy, StubDied
from aioumm.loop import Controller

PAGE = abi.PAGE_SIZE


@pytest_asyncio.fixture
async def ctl() -> AsyncIterator[Controller]:
    async with Controller() as ctl:
        yield ctl


def _closed_fd() -> int:
    fd = os.memfd_create("closed", os.MFD_CLOEXEC)
    os.close(fd)
    return fd


BAD_CALLS = [
    ("mmap", "addr", lambda s: s.mmap(0x10001, PAGE, 3)),
    ("mmap", "length", lambda s: s.mmap(0x10000, 0, 3)),
    ("mmap", "length", lambda s: s.mmap(0x10000, 100, 3)),
    ("mmap", "addr", lambda s: s.mmap(abi.STUB_START, PAGE, 3)),
    ("mmap", "addr", lambda s: s.mmap(abi.STUB_START - PAGE, 2 * PAGE, 3)),
    ("mmap", "addr", lambda s: s.mmap(abi.STUB_END - PAGE, PAGE, 3)),
    ("mmap", "addr", lambda s: s.mmap(abi.TASK_TOP - PAGE, 2 * PAGE, 3)),
    ("mmap", "prot", lambda s: s.mmap(0x10000, PAGE, 0x10)),
    ("mmap", "offset", lambda s: s.mmap(0x10000, PAGE, 3, -1, 5)),
    ("mmap", "fd", lambda s: s.mmap(0x10000, PAGE, 3, _closed_fd(), 0)),
    ("mmap", "fd", lambda s: s.mmap(0x10000, PAGE, 3, 987654, 0)),
    ("mmap", "fd", lambda s: s.mmap(0x10000, PAGE, 3, -7, 0)),
    ("munmap", "addr", lambda s: s.munmap(0x10800, PAGE)),
    ("munmap", "length", lambda s: s.munmap(0x10000, 0)),
    ("munmap", "addr", lambda s: s.munmap(abi.STUB_START + PAGE, PAGE)),
    ("mprotect", "addr", lambda s: s.mprotect(abi.STUB_START, PAGE, 1)),
    ("mprotect", "prot", lambda s: s.mprotect(0x10000, PAGE, 0xFF)),
    ("mprotect", "prot", lambda s: s.mprotect(0x10000, PAGE, -1)),
    ("mmap", "addr", lambda s: s.mmap(65536.0, PAGE, 3)),
    ("mmap", "addr", lambda s: s.mmap(1 << 80, PAGE, 3)),
    ("mmap", "addr", lambda s: s.mmap(-PAGE, PAGE, 3)),
    ("mmap", "length", lambda s: s.mmap(0x10000, -PAGE, 3)),
    ("mmap", "fd", lambda s: s.mmap(0x10000, PAGE, 3, 3.5, 0)),
    ("mmap", "offset", lambda s: s.mmap(0x10000, PAGE, 3, -1, 1 << 64)),
    ("munmap", "length", lambda s: s.munmap(0x10000, "4096")),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "call, argument, bad", BAD_CALLS, ids=[f"{c}-{a}-{i}" for i, (c, a, _) in enumerate(BAD_CALLS)]
)
async def test_bad_arguments_are_refused_before_anything_is_sent(
    ctl: Controller, call: str, argument: str, bad
) -> None:  # type: ignore[no-untyped-def]
    stub = await ctl.spawn()
    g = Guest(stub, "mov $500, %eax\nsyscall\nud2")
    queued = stub.queued
    with pytest.raises(BadArgument) as info:
        bad(stub)
    assert (info.value.call, info.value.argument) == (call, argument)
    assert str(info.value).startswith(f"{call}: {argument}: ")
    assert stub.queued == queued  # nothing was queued, the earlier records are intact
    assert (await stub.resume()).syscall == 500
    g.close()


@pytest.mark.asyncio
async def test_a_stub_that_dies_mid_batch(ctl: Controller) -> None:
    bystander = await ctl.spawn()
    stub = await ctl.spawn()
    fd = os.memfd_create("m", os.MFD_CLOEXEC)
    os.ftruncate(fd, 64 * PAGE)
    for i in range(200):
        stub.mmap(0x10000000 + 2 * i * PAGE, PAGE, 3, fd, (i % 32) * PAGE)
    task = asyncio.ensure_future(stub.flush())
    stub.kill()
    with pytest.raises(StubDied, match="SIGKILL"):
        await task
    with pytest.raises(StubDied):
        stub.mmap(0x10000, PAGE, 3)
    with pytest.raises(StubDied):
        await stub.resume()
    # The caller's descriptor, the controller and the other stub are untouched.
    os.fstat(fd)
    os.close(fd)
    g = Guest(bystander, "mov $500, %eax\nsyscall\nud2")
    assert (await bystander.resume()).syscall == 500
    g.close()


@pytest.mark.asyncio
async def test_calls_need_the_right_state(ctl: Controller) -> None:
    stub = await ctl.spawn()
    g = Guest(stub, "1: jmp 1b")
    task = asyncio.ensure_future(stub.resume())
    await asyncio.sleep(0.01)
    with pytest.raises(StubBusy, match="resume: the stub is running"):
        await stub.resume()
    with pytest.raises(StubBusy, match="registers"):
        stub.regs.rax = 1
    with pytest.raises(StubBusy, match="flush"):
        await stub.flush()
    stub.interrupt()
    assert (await task).signal == signal.SIGALRM
    stub.kill()
    await stub.wait_exit()
    with pytest.raises(StubDied, match="dead"):
        _ = stub.regs.rip
    g.close()


@pytest.mark.asyncio
async def test_controller_outside_its_block() -> None:
    ctl = Controller()
    with pytest.raises(ControllerClosed):
        await ctl.spawn()
    async with ctl:
        stub = await ctl.spawn()
    assert (await stub.wait_exit()).signal == signal.SIGKILL
    with pytest.raises(ControllerClosed):
        await ctl.spawn()


@pytest.mark.parametrize(
    "spin_ns, error", [(30e3, TypeError), ("30000", TypeError), (-1, ValueError), (2**63, ValueError)]
)
def test_a_spin_time_that_is_no_count_of_nanoseconds_is_refused_at_once(spin_ns: object, error: type) -> None:
    # Taken, it would fail only later, in every notification pass that spins.
    with pytest.raises(error, match="spin_ns"):
        Controller(spin_ns=spin_ns)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_controller_exit_on_error_kills_and_reaps_everything() -> None:
    pids = []
    with pytest.raises(RuntimeError, match="boom"):
        async with Controller() as ctl:
            for _ in range(5):
                pids.append((await ctl.spawn()).pid)
            raise RuntimeError("boom")
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}")


@pytest.mark.asyncio
async def test_integer_like_arguments_are_taken_as_integers(ctl: Controller) -> None:
    class Num:
        def __init__(self, value: int) -> None:
            self.value = value

        def __index__(self) -> int:
            return self.value

    stub = await ctl.spawn()
    stub.mmap(Num(0x10000), Num(PAGE), Num(3))  # type: ignore[arg-type]
    stub.mprotect(Num(0x10000), PAGE, Num(1))  # type: ignore[arg-type]
    await stub.flush()
    with open(f"/proc/{stub.pid}/maps") as f:
        assert f.readline().startswith("00010000-00011000 r--s")


@pytest.mark.asyncio
async def test_a_stub_reaped_by_someone_else_is_released() -> None:
    """SIGCHLD ignored: the kernel reaps the stub itself; the controller must not spin on its pidfd."""
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        async with Controller() as ctl:
            stub = await ctl.spawn()
            stub.kill()
            status = await asyncio.wait_for(stub.wait_exit(), 5)
            assert (status.code, status.signal) == (None, None)
            assert "reaped by someone else" in status.describe()
            assert stub not in ctl.stubs
    finally:
        signal.signal(signal.SIGCHLD, old)


@pytest.mark.asyncio
async def test_a_spawn_pending_when_the_controller_closes_does_not_outlive_it() -> None:
    ctl = Controller()
    async with ctl:
        pending = asyncio.ensure_future(ctl.spawn())
        await asyncio.sleep(0)
    with pytest.raises(AioummError):
        await pending
    assert not ctl.stubs


@pytest.mark.asyncio
async def test_a_spawn_begun_while_the_controller_closes_is_refused_at_once() -> None:
    """``aclose`` waits for the stubs it killed; a spawn asked for meanwhile must start nothing."""
    ctl = Controller()
    async with ctl:
        await ctl.spawn()
        closing = asyncio.ensure_future(ctl.aclose())
        await asyncio.sleep(0)  # aclose has killed its stub and waits for it to be reaped
        t0 = time.monotonic()
        with pytest.raises(ControllerClosed):
            await ctl.spawn()
        assert time.monotonic() - t0 < 1
        await closing
    assert not ctl.stubs


@pytest.mark.asyncio
async def test_spawn_failures_are_spawn_errors_and_leak_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from aioumm import stub as stub_module

    monkeypatch.setattr(stub_module, "BOOTSTRAP_FILE", str(abi.code_image_path().parent / "no-such-stub"))
    async with Controller() as ctl:
        with pytest.raises(SpawnError, match=r"cannot start a stub: executing .*no-such-stub failed: .*ENOENT"):
            await ctl.spawn()


@pytest.mark.asyncio
async def test_out_of_descriptors_is_not_called_a_bad_descriptor(ctl: Controller) -> None:
    import resource

    stub = await ctl.spawn()
    fd = os.memfd_create("m", os.MFD_CLOEXEC)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (fd + 1, hard))  # no room for the batch's duplicate
    try:
        with pytest.raises(OSError, match="duplicating fd") as info:
            stub.mmap(0x10000, PAGE, 3, fd, 0)
        assert not isinstance(info.value, BadArgument)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        os.close(fd)
    assert stub.queued == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("call", ["resume", "flush"])
async def test_a_stub_that_hands_over_and_dies_before_the_task_runs(call: str) -> None:
    """The report is in, then the process is reaped (and its page unmapped) before the awaiting
    task runs again: the task must get StubDied, not touch the unmapped page.  (No spinning:
    a report taken by a spin completes the wait before the task ever suspends.)"""
    async with Controller(spin_ns=0) as ctl:
        await _hand_over_and_die(ctl, call)


async def _hand_over_and_die(ctl: Controller, call: str) -> None:
    stub = await ctl.spawn()
    g = Guest(stub, "mov $500, %eax\nsyscall\nud2")
    await stub.flush()
    bridge = stub._bridge
    assert bridge is not None
    real = bridge.handed_over

    class NotifyThenDie:
        def handed_over(self) -> bool:
            woke = real()
            stub.kill()
            os.waitid(os.P_PID, stub.pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped
            stub._on_exit()  # what the pidfd callback does, before the task resumes
            return woke

    ctl.notifications._bridges[bridge._key] = NotifyThenDie()  # type: ignore[assignment]
    if call == "flush":
        stub.mmap(0x400000, PAGE, 3)
    with pytest.raises(StubDied, match=f"{call}: stub is dead"):
        await (stub.flush() if call == "flush" else stub.resume())
    g.close()


EDGE_ADDRS = [0, PAGE, 0x10000, 0x10001, -PAGE, abi.STUB_START - PAGE, abi.STUB_START, abi.STUB_END - PAGE]
EDGE_ADDRS += [abi.STUB_END, abi.TASK_TOP - PAGE, abi.TASK_TOP, 1 << 63, (1 << 64) - PAGE, 1 << 64]
EDGE_LENGTHS = [0, 100, PAGE, 2 * PAGE, -PAGE, abi.STUB_END - abi.STUB_START, abi.TASK_TOP, (1 << 64) - PAGE]
EDGE_OFFSETS = [0, 5, PAGE, -PAGE, (1 << 63) - 2 * PAGE, (1 << 63) - PAGE, 1 << 63, 1 << 64]


@pytest.mark.asyncio
async def test_the_native_checks_and_the_named_ones_agree(ctl: Controller) -> None:
    """The native batch refuses values, Stub._checked names the wrong one: one rule, written twice.

    Every edge value either queues a record that _checked accepts too, or is refused
    with a BadArgument (never the AssertionError of a native refusal _checked cannot name).
    """
    stub = await ctl.spawn()
    fd = os.memfd_create("m", os.MFD_CLOEXEC)
    accepted = 0
    try:
        for addr in EDGE_ADDRS:
            for length in EDGE_LENGTHS:
                calls: list[tuple[str, dict[str, int], Callable[[], None]]] = [
                    ("munmap", {}, functools.partial(stub.munmap, addr, length))
                ]
                for prot in (0, 7, 8, -1):
                    calls.append(("mprotect", {"prot": prot}, functools.partial(stub.mprotect, addr, length, prot)))
                    for f in (-2, -1, fd):
                        for offset in EDGE_OFFSETS:
                            more = {"prot": prot, "fd": f, "offset": offset}
                            calls.append(("mmap", more, functools.partial(stub.mmap, addr, length, prot, f, offset)))
                for name, more, call in calls:
                    try:
                        call()
                    except BadArgument:
                        continue
                    stub._checked(name, addr, length, **more)  # queued: the named checks accept it too
                    accepted += 1
    finally:
        os.close(fd)
    assert accepted > 0
