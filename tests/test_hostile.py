"""Guest code is hostile: it can write the stub data page and jump into the stub code.

Whatever it does, only its own stub suffers; the controller and every other stub go on.
"""

from __future__ import annotations

import asyncio
import errno
import signal
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from guestcode import Guest

from aioumm import abi
from aioumm.abi import ffi
from aioumm.errors import StubCorrupt, StubDied
from aioumm.loop import Controller
from aioumm.stub import Stub

DATA = abi.DATA_ADDR


def _site(nr: int) -> int:
    """Address of the handler's `syscall` instruction for syscall ``nr``, from the code image header."""
    image = abi.code_image_path().read_bytes()
    header = ffi.cast("struct stub_code_header *", ffi.from_buffer(image))
    for i in range(header.nsites):
        if header.sites[i].nr == nr:
            return int(header.sites[i].ip) - 2
    raise LookupError(nr)


def _off(field: str) -> int:
    return DATA + ffi.offsetof("struct stub_data", field)


@pytest_asyncio.fixture
async def ctl() -> AsyncIterator[Controller]:
    async with Controller() as ctl:
        yield ctl


async def _bystander_works(ctl: Controller, stub: Stub) -> None:
    """Another stub, started before the attack, still answers."""
    g = Guest(stub, "mov $500, %eax\nsyscall\nud2")
    report = await stub.resume()
    assert report.syscall == 500
    g.close()


FORGE = """
    movabs ${signal_addr}, %rbx
    movl ${signal}, (%rbx)
    movabs ${uc_addr}, %rbx
    movabs ${uc}, %rcx
    movq %rcx, (%rbx)
    movabs ${handoff}, %rbx
    movl $1, (%rbx)
    mov $1, %eax
    mov $1, %edi
    lea one(%rip), %rsi
    mov $8, %edx
    movabs ${notify}, %rbx
    call *%rbx
1:  jmp 1b
one: .quad 1
"""


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "signal_value, ucontext, message",
    [(99, None, "signal 99"), (int(signal.SIGSYS), 0x1000, "ucontext address 0x1000")],
    ids=["bad-signal", "bad-ucontext"],
)
async def test_forged_report_kills_only_that_stub(
    ctl: Controller, signal_value: int, ucontext: int | None, message: str
) -> None:
    bystander = await ctl.spawn()
    stub = await ctl.spawn()
    source = FORGE.format(
        signal_addr=_off("signal"),
        signal=signal_value,
        uc_addr=_off("ucontext_addr") if ucontext is not None else _off("_pad0"),
        uc=ucontext or 0,
        handoff=_off("handoff"),
        notify=_site(1),
    )
    g = Guest(stub, source)
    with pytest.raises(StubCorrupt, match=message):
        await stub.resume()
    assert (await stub.wait_exit()).signal == signal.SIGKILL
    await _bystander_works(ctl, bystander)
    g.close()


@pytest.mark.asyncio
async def test_a_disallowed_syscall_from_inside_the_stub_code_kills_the_stub(ctl: Controller) -> None:
    bystander = await ctl.spawn()
    stub = await ctl.spawn()
    # getpid through the mmap instruction: the filter allows only mmap there.
    g = Guest(stub, f"mov $39, %eax\nmovabs ${_site(9)}, %rbx\ncall *%rbx\nud2")
    with pytest.raises(StubDied, match="SIGSYS"):
        await stub.resume()
    assert (await stub.wait_exit()).signal == signal.SIGSYS
    await _bystander_works(ctl, bystander)
    g.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "setup",
    [
        "mov $3, %eax\nxor %edi, %edi",  # close(0) through the close instruction: the channel is protected
        "mov $202, %eax\nmovabs $0x10000, %rdi\nxor %esi, %esi",  # futex on another word
    ],
    ids=["close-channel", "futex-elsewhere"],
)
async def test_argument_checks_of_the_filter(ctl: Controller, setup: str) -> None:
    nr = int(setup.split("$", 1)[1].split(",", 1)[0])
    stub = await ctl.spawn()
    g = Guest(stub, f"{setup}\nmovabs ${_site(nr)}, %rbx\ncall *%rbx\nud2")
    with pytest.raises(StubDied, match="SIGSYS"):
        await stub.resume()
    g.close()


@pytest.mark.asyncio
async def test_the_stub_pages_cannot_be_remapped_even_from_the_stub_code(ctl: Controller) -> None:
    if not ctl.features.mseal:
        pytest.fail("mseal is expected on this kernel")
    stub = await ctl.spawn()
    # mmap(STUB_DATA_ADDR, 4096, RW, MAP_FIXED|MAP_PRIVATE|MAP_ANONYMOUS) through the handler's own mmap
    g = Guest(
        stub,
        f"mov $9, %eax\nmovabs ${DATA}, %rdi\nmov $4096, %esi\nmov $3, %edx\nmov $0x32, %r10d\n"
        f"mov $-1, %r8\nxor %r9d, %r9d\nmovabs ${_site(9)}, %rbx\ncall *%rbx\n"
        "mov %rax, %r12\nmov $500, %eax\nsyscall\n"
        f"mov $11, %eax\nmovabs ${DATA}, %rdi\nmov $4096, %esi\nsyscall\nud2",
    )
    report = await stub.resume()
    assert report.syscall == 500
    assert stub.regs.r12 == (-errno.EPERM) & (2**64 - 1)
    # And the guest's own munmap of the stub area never reaches the kernel: it is just a report.
    assert (await stub.resume()).syscall == 11
    with open(f"/proc/{stub.pid}/maps") as f:
        assert "aioumm-stub-data" in f.read()
    g.close()


@pytest.mark.asyncio
async def test_scribbling_over_the_whole_data_page_is_harmless(ctl: Controller) -> None:
    stub = await ctl.spawn()
    g = Guest(
        stub,
        f"movabs ${DATA + 4}, %rdi\nmov $0x41, %eax\nmov ${abi.DATA_SIZE - 4}, %ecx\nrep stosb\n"
        "mov $500, %eax\nsyscall\nmov $501, %eax\nsyscall\nud2",
    )
    assert (await stub.resume()).syscall == 500
    assert (await stub.resume()).syscall == 501
    g.close()


def _forged_sigreturn(then: str) -> str:
    """Guest code: rt_sigreturn through the stub's restorer with a frame of its own, whose
    mask blocks SIGALRM and whose rip is the label ``then`` (the code that follows)."""
    frame = 0x1F0000  # a fake ucontext on the guest stack page
    mcontext = ffi.offsetof("struct stub_ucontext", "mcontext")
    off = {f: mcontext + ffi.offsetof("struct stub_sigcontext", f) for f in ("rip", "rsp", "eflags", "cs", "ss")}
    sigmask = ffi.offsetof("struct stub_ucontext", "sigmask")
    return f"""
        movabs ${frame}, %rdi
        xor %eax, %eax
        mov $512, %ecx
        rep stosb
        movabs ${frame}, %rsp
        lea then(%rip), %rax
        mov %rax, {off["rip"]}(%rsp)
        movq ${frame + 0x800}, {off["rsp"]}(%rsp)
        movq $0x202, {off["eflags"]}(%rsp)
        movw $0x33, {off["cs"]}(%rsp)
        movw $0x2b, {off["ss"]}(%rsp)
        movq ${1 << (signal.SIGALRM - 1)}, {sigmask}(%rsp)
        movabs ${_restorer()}, %rax
        jmp *%rax
    then:
        {then}
    """


@pytest.mark.asyncio
async def test_a_guest_that_blocks_sigalrm_cannot_dodge_interrupt(ctl: Controller) -> None:
    """A forged signal return that blocks SIGALRM, then a loop without syscalls."""
    stub = await ctl.spawn()
    g = Guest(stub, _forged_sigreturn("1: jmp 1b"))
    task = asyncio.ensure_future(stub.resume())
    await asyncio.sleep(0.1)
    with open(f"/proc/{stub.pid}/status") as f:
        blocked = next(line for line in f if line.startswith("SigBlk:"))
    assert int(blocked.split()[1], 16) == 1 << (signal.SIGALRM - 1)  # the guest really blocked it
    stub.interrupt(timeout=0.2)
    with pytest.raises(StubDied, match=r"did not stop within 0.2s of interrupt\(\)"):
        await asyncio.wait_for(task, 5)
    g.close()


@pytest.mark.asyncio
async def test_every_report_unblocks_signals_again(ctl: Controller) -> None:
    """The same forged frame, then a syscall: the handler's return leaves nothing blocked."""
    stub = await ctl.spawn()
    g = Guest(stub, _forged_sigreturn("mov $500, %eax\n        syscall\n    1:  jmp 1b"))
    assert (await stub.resume()).syscall == 500
    task = asyncio.ensure_future(stub.resume())
    await asyncio.sleep(0.05)
    stub.interrupt()
    assert (await asyncio.wait_for(task, 5)).signal == signal.SIGALRM
    g.close()


def _restorer() -> int:
    image = abi.code_image_path().read_bytes()
    return int(ffi.cast("struct stub_code_header *", ffi.from_buffer(image)).restorer)
