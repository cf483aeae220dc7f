"""Reports of every signal kind, made by tiny real guests, and register edits."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import uvloop
from guestcode import CODE_ADDR, Guest

from aioumm.errors import BadArgument
from aioumm.loop import Controller
from aioumm.stub import State, Stub


@pytest_asyncio.fixture
async def ctl() -> AsyncIterator[Controller]:
    async with Controller() as ctl:
        yield ctl


async def guest(ctl: Controller, source: str) -> tuple[Stub, Guest]:
    stub = await ctl.spawn()
    return stub, Guest(stub, source)


@pytest.mark.asyncio
async def test_both_loops_are_exercised(request: pytest.FixtureRequest) -> None:
    loop = asyncio.get_running_loop()
    if "uvloop" in request.node.name:
        assert isinstance(loop, uvloop.Loop)
    else:
        assert not isinstance(loop, uvloop.Loop)


@pytest.mark.asyncio
async def test_ready_stub_holds_only_the_stub_pages(ctl: Controller) -> None:
    stub = await ctl.spawn()
    assert stub.state is State.STOPPED
    assert stub.report is not None and stub.report.signal == signal.SIGSYS
    with open(f"/proc/{stub.pid}/maps") as f:
        maps = [line.split() for line in f]
    names = [m[5] if len(m) > 5 else "" for m in maps]
    # The bootstrap image, its stack, the vDSO and vvar are gone.
    assert names == ["/memfd:aioumm-stub-code", "/memfd:aioumm-stub-data", "[vsyscall]"], maps
    with open(f"/proc/{stub.pid}/status") as f:
        status = f.read()
    assert "NoNewPrivs:\t1" in status
    assert "Seccomp:\t2" in status
    # Only the FD channel and the eventfd survive in the child.
    assert sorted(os.listdir(f"/proc/{stub.pid}/fd")) == ["0", "1"]


@pytest.mark.asyncio
async def test_sigsys_report_for_a_syscall(ctl: Controller) -> None:
    stub, g = await guest(ctl, "mov $500, %eax\nmov $7, %edi\nsyscall\nud2")
    report = await stub.resume()
    assert report.signal == signal.SIGSYS
    assert report.syscall == 500
    assert report.arch == 0xC000003E  # AUDIT_ARCH_X86_64
    assert stub.regs.rdi == 7
    assert stub.regs.rip == CODE_ADDR + 12  # just after the syscall instruction
    g.close()


@pytest.mark.asyncio
async def test_the_same_call_from_the_same_place_is_the_same_report(ctl: Controller) -> None:
    """Reports equal field for field are one Report object, read again (a guest in a loop);
    any field that differs (here the syscall number, then the place) makes a new one."""
    stub, g = await guest(
        ctl,
        """
        mov $3, %r12d
    1:  mov $500, %eax
        syscall
        dec %r12d
        jnz 1b
        mov $501, %eax
        syscall
        mov $500, %eax
        syscall
        ud2
        """,
    )
    first = await stub.resume()
    again = [await stub.resume(), await stub.resume()]
    assert all(r is first for r in again)
    other = await stub.resume()
    assert other.syscall == 501 and other is not first
    moved = await stub.resume()
    assert moved.syscall == 500 and moved != first and moved.addr == other.addr + 7  # mov $500 + syscall
    assert (await stub.resume()).signal == signal.SIGILL
    g.close()


@pytest.mark.asyncio
async def test_sigsegv_report_has_the_faulting_address(ctl: Controller) -> None:
    stub, g = await guest(ctl, "movabs $0x5000000123, %rax\nmovq (%rax), %rbx\nud2")
    report = await stub.resume()
    assert report.signal == signal.SIGSEGV
    assert report.addr == 0x5000000123
    assert report.code == 1  # SEGV_MAPERR
    g.close()


@pytest.mark.asyncio
async def test_sigtrap_report_from_int3(ctl: Controller) -> None:
    stub, g = await guest(ctl, "nop\nint3\nud2")
    report = await stub.resume()
    assert report.signal == signal.SIGTRAP
    assert stub.regs.rip == CODE_ADDR + 2
    g.close()


@pytest.mark.asyncio
async def test_sigill_report_from_ud2(ctl: Controller) -> None:
    stub, g = await guest(ctl, "nop\nud2")
    report = await stub.resume()
    assert report.signal == signal.SIGILL
    assert report.addr == CODE_ADDR + 1
    assert stub.regs.rip == CODE_ADDR + 1
    g.close()


@pytest.mark.asyncio
async def test_sigfpe_report_from_division_by_zero(ctl: Controller) -> None:
    stub, g = await guest(ctl, "xor %ecx, %ecx\nmov $1, %eax\ncqo\nidiv %rcx\nud2")
    report = await stub.resume()
    assert report.signal == signal.SIGFPE
    assert report.code == 1  # FPE_INTDIV
    g.close()


@pytest.mark.asyncio
async def test_sigalrm_report_from_interrupt(ctl: Controller) -> None:
    stub, g = await guest(ctl, "1: inc %rbx\njmp 1b")
    task = asyncio.ensure_future(stub.resume())
    await asyncio.sleep(0.05)
    assert not task.done()
    assert stub.state is State.RUNNING
    stub.interrupt()
    report = await asyncio.wait_for(task, 10)
    assert report.signal == signal.SIGALRM
    assert report.pid == os.getpid()
    assert stub.regs.rbx > 0  # the guest really ran
    g.close()


@pytest.mark.asyncio
async def test_register_edits_take_effect(ctl: Controller) -> None:
    stub, g = await guest(
        ctl,
        "lea (%rdi,%rsi), %rax\nimul %rdx, %rax\nmov $500, %r15\nxchg %r15, %rax\nsyscall\nud2\n"
        ".org 0x100\nmov $502, %eax\nsyscall\nud2",
    )
    regs = stub.regs
    regs.rdi, regs.rsi, regs.rdx = 40, 2, 1000
    await stub.resume()
    assert stub.report is not None and stub.report.syscall == 500
    assert regs.r15 == 42000
    # Redirect the guest: the new RIP is where it continues.
    regs.rip = CODE_ADDR + 0x100
    report = await stub.resume()
    assert report.syscall == 502
    assert regs.rip == CODE_ADDR + 0x107
    g.close()


@pytest.mark.asyncio
async def test_syscall_answer_reaches_the_guest(ctl: Controller) -> None:
    # The guest traps, then reports the answer it got back in r12 through a second trap.
    stub, g = await guest(ctl, "mov $500, %eax\nsyscall\nmov %rax, %r12\nmov $501, %eax\nsyscall\nud2")
    await stub.resume()
    stub.regs.rax = 0x1234_5678_9ABC
    report = await stub.resume()
    assert report.syscall == 501
    assert stub.regs.r12 == 0x1234_5678_9ABC
    g.close()


@pytest.mark.asyncio
async def test_fs_base_round_trips(ctl: Controller) -> None:
    # Controller -> guest: the guest reads %fs:0 from a page the controller set up as its TLS.
    stub, g = await guest(
        ctl,
        "mov %fs:0, %rax\nmov %rax, %r12\nmov $500, %eax\nsyscall\n"
        # guest -> controller: the guest sets its own FS base, which the report shows
        "movabs $0x3000000, %rdi\nwrfsbase %rdi\nmov $501, %eax\nsyscall\nud2",
    )
    tls = os.memfd_create("tls", os.MFD_CLOEXEC)
    os.ftruncate(tls, 4096)
    os.pwrite(tls, (0xC0FFEE_0DDBA11).to_bytes(8, "little"), 0)
    stub.mmap(0x400000, 4096, 1, tls, 0)
    stub.regs.fs_base = 0x400000
    await stub.resume()
    assert stub.regs.r12 == 0xC0FFEE_0DDBA11
    assert stub.regs.fs_base == 0x400000
    await stub.resume()
    assert stub.report is not None and stub.report.syscall == 501
    assert stub.regs.fs_base == 0x3000000
    os.close(tls)
    g.close()


@pytest.mark.asyncio
async def test_vector_registers_survive_round_trips(ctl: Controller) -> None:
    # xmm and MXCSR belong to the guest: the handler never touches them.
    stub, g = await guest(
        ctl,
        "mov $0x4142434445464748, %rax\nmovq %rax, %xmm8\n"
        "stmxcsr -8(%rsp)\norl $0x6000, -8(%rsp)\nldmxcsr -8(%rsp)\n"
        "mov $500, %eax\nsyscall\nmov $500, %eax\nsyscall\n"
        "movq %xmm8, %r12\nstmxcsr -8(%rsp)\nmov -8(%rsp), %r13d\nmov $501, %eax\nsyscall\nud2",
    )
    for _ in range(3):
        await stub.resume()
    assert stub.report is not None and stub.report.syscall == 501
    assert stub.regs.r12 == 0x4142434445464748
    assert stub.regs.r13 & 0x6000 == 0x6000
    g.close()


@pytest.mark.asyncio
async def test_kill_and_exit_status(ctl: Controller) -> None:
    stub = await ctl.spawn()
    stub.kill()
    status = await stub.wait_exit()
    assert status.signal == signal.SIGKILL
    assert stub.state is State.DEAD
    assert stub not in ctl.stubs


@pytest.mark.asyncio
async def test_cancelled_resume_kills_the_stub(ctl: Controller) -> None:
    stub, g = await guest(ctl, "1: jmp 1b")
    task = asyncio.ensure_future(stub.resume())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await stub.wait_exit()).signal == signal.SIGKILL
    g.close()


@pytest.mark.asyncio
async def test_fpstate_can_be_saved_and_restored(ctl: Controller) -> None:
    """What a guest signal frame needs: copy the vector state out, let it change, put it back."""
    stub, g = await guest(
        ctl,
        "mov $0x1111111111111111, %rax\nmovq %rax, %xmm3\nmov $500, %eax\nsyscall\n"
        "mov $0x2222222222222222, %rax\nmovq %rax, %xmm3\nmov $501, %eax\nsyscall\n"
        "movq %xmm3, %r12\nmov $502, %eax\nsyscall\nud2",
    )
    await stub.resume()
    saved = stub.regs.fpstate()
    assert len(saved) >= 512
    assert saved[160 + 3 * 16 : 160 + 3 * 16 + 8] == b"\x11" * 8  # xmm3 in the FXSAVE layout
    await stub.resume()
    assert stub.report is not None and stub.report.syscall == 501
    stub.regs.set_fpstate(saved)
    await stub.resume()
    assert stub.regs.r12 == 0x1111111111111111  # the state from the first report is back
    with pytest.raises(BadArgument, match="set_fpstate"):
        stub.regs.set_fpstate(saved[:100])
    g.close()
