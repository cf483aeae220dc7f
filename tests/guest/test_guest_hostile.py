"""Hostile guests: every handler, fed nonsense, answers with an errno and never raises."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import random
import struct
from pathlib import Path

import pytest
from guest_fakes import FakeStub

from aioumm import abi
from aioumm.guest import syscalls  # noqa: F401  (registers the handlers)
from aioumm.guest.errors import GuestExit, SyscallError
from aioumm.guest.files import OpenFile, Vfs
from aioumm.guest.layout import PAGE_SIZE
from aioumm.guest.memory import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, PhysMem
from aioumm.guest.process import HANDLERS, GuestProcess
from aioumm.guest.table import NAMES, NUMBERS

MASK = (1 << 64) - 1
#: Calls that end the guest: they are allowed to raise GuestExit.
_ENDING = {
    "exit",
    "exit_group",
    "kill",
    "tgkill",
    "tkill",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "rt_sigprocmask",
    "write",
    "writev",
    "pwrite64",
    "pwritev",
    "sendfile",
    "rt_sigreturn",
    "rt_sigsuspend",
    "pause",
}


@pytest.mark.asyncio
async def test_random_arguments_never_escape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "file").write_bytes(b"x" * 100)
    stub = FakeStub()
    proc = GuestProcess(stub, physmem=PhysMem(1 << 30), vfs=Vfs(str(root), cwd="/"))  # type: ignore[arg-type]
    proc.raise_internal_errors = True  # a Python error in a handler fails the test
    try:
        buf = proc.mm.sys_mmap(0, 4 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        rng = random.Random(int(os.environ.get("AIOUMM_FUZZ_SEED", "1234")))
        interesting = [
            0,
            1,
            2,
            3,
            4,
            5,
            8,
            24,
            4096,
            MASK,
            MASK - 99,
            1 << 31,
            1 << 63,
            0x7FFFFFFFF000,
            abi.STUB_START,
            abi.STUB_START + 0x4000,
            buf,
            buf + 4 * PAGE_SIZE - 1,
            buf + 100,
            0x10,
            (1 << 47) - 1,
        ]
        numbers = sorted(HANDLERS)
        ended = 0
        for i in range(4000):
            nr = rng.choice(numbers)
            name = NAMES[nr]
            if name in ("nanosleep", "clock_nanosleep", "alarm", "setitimer"):
                continue
            if name in ("fallocate", "sync", "syncfs"):
                continue  # real work on the host's disks: gigabytes reserved, caches flushed
            if i % 50 == 0:
                # Sometimes the buffer holds a plausible path, sometimes noise.
                noise = bytes(rng.randrange(256) for _ in range(64))
                blob = rng.choice([b"file\0", b"/file\0", b"../../x\0", b"", noise])
                with contextlib.suppress(SyscallError):  # the guest may have unmapped it
                    proc.mm.write(buf, blob.ljust(256, b"\0"))
            args = [rng.choice(interesting) if rng.random() < 0.8 else rng.getrandbits(64) for _ in range(6)]
            regs = stub.regs
            regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9 = args  # type: ignore[attr-defined]
            try:
                await asyncio.wait_for(proc.syscall(nr), 0.05)
            except TimeoutError:
                continue  # a read that waits for data that never comes: fine, and cancellable
            except GuestExit:
                assert name in _ENDING, name
                ended += 1
                proc.signals.discard(MASK)
                proc.signals.blocked = 0
                continue
            rax: int = regs.rax  # type: ignore[attr-defined]
            assert 0 <= rax <= MASK
            # The stub area is never mapped for the guest, whatever it asked for.
            assert not any(proc.layout.touches_stub(v.start, v.end) for v in proc.mm.vmas)
        assert ended < 4000
        # Nothing escaped the root directory.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    finally:
        proc.close()
        proc.kernel.ipc.close()  # segments the random calls made: the run's end would remove them


@pytest.mark.asyncio
async def test_terminal_ioctls_reach_a_real_terminal() -> None:
    import fcntl
    import termios

    master, slave = pty.openpty()
    stub = FakeStub()
    proc = GuestProcess(stub, physmem=PhysMem(1 << 30))  # type: ignore[arg-type]
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("<HHHH", 42, 117, 0, 0))
        proc.fds.install_at(5, OpenFile(os.dup(slave), "/dev/pts/x", flags=os.O_RDWR))
        buf = proc.mm.sys_mmap(0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        regs = stub.regs
        regs.rdi, regs.rsi, regs.rdx = 5, 0x5413, buf  # type: ignore[attr-defined]
        await proc.syscall(NUMBERS["ioctl"])
        assert regs.rax == 0  # type: ignore[attr-defined]
        assert struct.unpack("<HH", proc.mm.read(buf, 4)) == (42, 117)
        regs.rdi, regs.rsi, regs.rdx = 5, 0x5401, buf  # type: ignore[attr-defined]
        await proc.syscall(NUMBERS["ioctl"])
        assert regs.rax == 0  # type: ignore[attr-defined]
        assert proc.mm.read(buf, 36) == fcntl.ioctl(slave, 0x5401, bytes(36))
    finally:
        proc.close()
        os.close(master)
        os.close(slave)


@pytest.mark.asyncio
async def test_proc_and_dev_fd_describe_the_guest_never_the_controller(prog_dir: Path, tmp_path: Path) -> None:
    from conftest import compile_prog

    from aioumm.guest.runner import run_program
    from aioumm.loop import Controller

    prog = compile_prog("procself", prog_dir)
    out = tmp_path / "out"
    with open(out, "wb") as f, open(os.devnull, "rb") as null:
        async with Controller() as ctl:
            status = await run_program(
                ctl, str(prog), [str(prog), str(os.getpid())], {}, stdio=(null.fileno(), f.fileno(), f.fileno())
            )
    assert status == 0
    assert out.read_text().splitlines() == [
        "own mem opens: 1",
        "own mem write: 1",
        "x is now 42",
        "maps show the stub: 0, python: 0, the stack: 1",  # the stub's own pages are hidden
        "/dev/fd/1 opens: 1",
        "controller mem opens: 0",
        "controller environ opens: 0",
        "controller fd 0 opens: 0",
        "self/mem relative to /proc opens: 1",  # the guest's own, as natively
        "/proc/cpuinfo opens: 1",
    ]


@pytest.mark.asyncio
async def test_a_fork_bomb_meets_the_process_limit(prog_dir: Path, tmp_path: Path) -> None:
    from conftest import compile_prog

    from aioumm.guest.runner import run_program
    from aioumm.loop import Controller

    prog = compile_prog("forkbomb", prog_dir)
    out = tmp_path / "out"
    with open(out, "wb") as f, open(os.devnull, "rb") as null:
        async with Controller() as ctl:
            status = await run_program(
                ctl, str(prog), [str(prog)], {}, stdio=(null.fileno(), f.fileno(), f.fileno()), max_processes=12
            )
            assert not ctl.stubs  # every stub of the run is gone with it
    assert status == 0
    assert out.read_text().splitlines() == ["fork failed with EAGAIN after 11 children", "all reaped"]
