"""Syscall handlers against a fake stub's registers and real guest memory."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import signal
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from guest_fakes import FakeStub

from aioumm.guest import syscalls  # noqa: F401  (registers the handlers)
from aioumm.guest.errors import GuestExit
from aioumm.guest.files import FdTable
from aioumm.guest.layout import PAGE_SIZE
from aioumm.guest.memory import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, PhysMem
from aioumm.guest.process import GuestProcess
from aioumm.guest.table import NUMBERS

AT_FDCWD = (1 << 64) - 100
BAD = 0x10  # never mapped
MASK = (1 << 64) - 1


class Guest:
    """A guest process on a fake stub, with one 64 KiB scratch buffer at ``buf``."""

    def __init__(self) -> None:
        self.stub = FakeStub()
        self.trace = io.StringIO()
        self.proc = GuestProcess(self.stub, physmem=PhysMem(1 << 30), strace=self.trace)  # type: ignore[arg-type]
        self.proc.raise_internal_errors = True
        self.proc.inherit_stdio()
        self.buf = self.proc.mm.sys_mmap(0, 16 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        self.mm = self.proc.mm
        self._str_at = 0

    async def call(self, name: str, *args: int) -> int:
        regs = self.stub.regs
        full = [a & MASK for a in args] + [0] * (6 - len(args))
        regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9 = full  # type: ignore[attr-defined]
        await self.proc.syscall(NUMBERS[name])
        rax: int = regs.rax  # type: ignore[attr-defined]
        return rax - (1 << 64) if rax >> 63 else rax

    def cstr(self, text: str) -> int:
        """Store a string in the upper half of the buffer (each at a new place)."""
        raw = text.encode() + b"\0"
        if self._str_at + len(raw) > 0x8000:
            self._str_at = 0
        addr = self.buf + 0x8000 + self._str_at
        self._str_at += len(raw)
        self.mm.write(addr, raw)
        return addr

    def last_trace(self) -> str:
        return self.trace.getvalue().splitlines()[-1]


@pytest_asyncio.fixture
async def g() -> AsyncIterator[Guest]:
    guest = Guest()
    yield guest
    guest.proc.close()


@pytest.mark.asyncio
async def test_pipe_write_read_and_strace(g: Guest) -> None:
    assert await g.call("pipe2", g.buf, os.O_CLOEXEC) == 0
    r, w = struct.unpack("<ii", g.mm.read(g.buf, 8))
    assert (r, w) == (3, 4)  # lowest free numbers after stdio
    assert g.proc.fds.cloexec(r)
    g.mm.write(g.buf + 64, b"hello world\n")
    assert await g.call("write", w, g.buf + 64, 12) == 12
    assert g.last_trace() == 'write(4, "hello world\\n", 12) = 12'
    assert await g.call("read", r, g.buf + 128, 100) == 12
    assert g.mm.read(g.buf + 128, 12) == b"hello world\n"
    assert g.last_trace() == 'read(3, "hello world\\n", 100) = 12'


@pytest.mark.asyncio
async def test_read_of_an_empty_pipe_waits_without_blocking_the_loop(g: Guest) -> None:
    await g.call("pipe2", g.buf, 0)
    r, w = struct.unpack("<ii", g.mm.read(g.buf, 8))
    reader = asyncio.ensure_future(g.call("read", r, g.buf + 64, 100))
    ticks = 0
    for _ in range(5):
        await asyncio.sleep(0.01)
        ticks += 1
    assert not reader.done() and ticks == 5  # the loop kept running
    os.write(g.proc.fds.get(w).host_fd, b"late")
    assert await asyncio.wait_for(reader, 5) == 4
    assert g.mm.read(g.buf + 64, 4) == b"late"
    await g.call("close", w)
    assert await g.call("read", r, g.buf + 64, 100) == 0  # EOF


@pytest.mark.asyncio
async def test_big_write_to_a_full_pipe_does_not_block_the_loop(g: Guest) -> None:
    await g.call("pipe2", g.buf, 0)
    r, w = struct.unpack("<ii", g.mm.read(g.buf, 8))
    size = 64 * PAGE_SIZE  # four times what the pipe holds
    big = g.mm.sys_mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    g.mm.write(big, bytes(range(256)) * (size // 256))
    writer = asyncio.ensure_future(g.call("write", w, big, size))
    await asyncio.sleep(0.02)
    assert not writer.done()
    host_r = g.proc.fds.get(r).host_fd
    os.set_blocking(host_r, False)  # the test's own reader must not block the loop either
    got = b""
    while len(got) < size:
        await asyncio.sleep(0)
        with contextlib.suppress(BlockingIOError):
            got += os.read(host_r, 65536)
    assert await asyncio.wait_for(writer, 5) == size
    assert got == bytes(range(256)) * (size // 256)


@pytest.mark.asyncio
async def test_open_errors_and_strace_lines(g: Guest, tmp_path: Path) -> None:
    missing = g.cstr("/nonexistent/x")
    assert await g.call("openat", AT_FDCWD, missing, os.O_RDONLY, 0) == -errno.ENOENT
    assert g.last_trace() == ('openat(AT_FDCWD, "/nonexistent/x", O_RDONLY) = -1 ENOENT (No such file or directory)')
    assert await g.call("openat", AT_FDCWD, BAD, 0, 0) == -errno.EFAULT
    assert await g.call("openat", AT_FDCWD, g.cstr(""), 0, 0) == -errno.ENOENT
    f = tmp_path / "data"
    f.write_bytes(b"0123456789")
    fd = await g.call("openat", AT_FDCWD, g.cstr(str(f)), os.O_RDONLY, 0)
    assert fd == 3
    assert await g.call("pread64", fd, g.buf, 4, 6) == 4
    assert g.mm.read(g.buf, 4) == b"6789"
    assert await g.call("lseek", fd, -3, os.SEEK_END) == 7
    assert await g.call("read", fd, g.buf, 100) == 3
    assert await g.call("read", fd, BAD, 100) == 0  # at the end: the buffer is never touched
    assert await g.call("lseek", fd, -3, os.SEEK_END) == 7
    assert await g.call("read", fd, BAD, 100) == -errno.EFAULT
    assert await g.call("write", fd, g.buf, 1) == -errno.EBADF  # opened read-only
    assert await g.call("fstat", fd, g.buf) == 0
    (size,) = struct.unpack_from("<q", g.mm.read(g.buf + 48, 8))
    (mode,) = struct.unpack_from("<I", g.mm.read(g.buf + 24, 4))
    assert size == 10 and mode == os.stat(f).st_mode
    assert await g.call("close", fd) == 0
    assert await g.call("close", fd) == -errno.EBADF
    assert await g.call("read", 77, g.buf, 1) == -errno.EBADF
    assert await g.call("read", -1, g.buf, 1) == -errno.EBADF


@pytest.mark.asyncio
async def test_file_system_calls(g: Guest, tmp_path: Path) -> None:
    d = tmp_path / "dir"
    assert await g.call("mkdirat", AT_FDCWD, g.cstr(str(d)), 0o755) == 0
    for name in ("a", "bb", "ccc"):
        (d / name).write_text(name)
    fd = await g.call("openat", AT_FDCWD, g.cstr(str(d)), os.O_RDONLY | os.O_DIRECTORY, 0)
    names = []
    while (n := await g.call("getdents64", fd, g.buf, 64)) > 0:  # small buffer: several calls
        raw = g.mm.read(g.buf, n)
        pos = 0
        while pos < n:
            _ino, _off, reclen, _type = struct.unpack_from("<QqHB", raw, pos)
            names.append(raw[pos + 19 : raw.index(b"\0", pos + 19)].decode())
            pos += reclen
    assert sorted(names) == [".", "..", "a", "bb", "ccc"]
    rel = await g.call("openat", fd, g.cstr("bb"), os.O_RDONLY, 0)  # relative to a dirfd
    assert await g.call("read", rel, g.buf, 10) == 2
    assert await g.call("newfstatat", fd, g.cstr("ccc"), g.buf, 0) == 0
    assert struct.unpack_from("<q", g.mm.read(g.buf + 48, 8))[0] == 3
    assert await g.call("renameat", fd, g.cstr("a"), fd, g.cstr("z"), 0) == 0
    assert (d / "z").exists() and not (d / "a").exists()
    assert await g.call("unlinkat", fd, g.cstr("z"), 0) == 0
    assert await g.call("newfstatat", fd, g.cstr("z"), g.buf, 0) == -errno.ENOENT
    assert await g.call("faccessat", AT_FDCWD, g.cstr(str(d / "bb")), os.R_OK) == 0
    assert await g.call("faccessat", AT_FDCWD, g.cstr(str(d / "zz")), os.R_OK) == -errno.ENOENT
    assert await g.call("chdir", g.cstr(str(d))) == 0
    assert await g.call("getcwd", g.buf, 4096) == len(str(d)) + 1
    assert g.mm.read_cstr(g.buf) == str(d).encode()
    assert await g.call("getcwd", g.buf, 2) == -errno.ERANGE
    assert await g.call("openat", AT_FDCWD, g.cstr("ccc"), os.O_RDONLY, 0) >= 0  # relative to the new cwd
    assert await g.call("readlinkat", AT_FDCWD, g.cstr("/proc/self/exe"), g.buf, 100) == 0
    g.proc.exe = "/usr/bin/prog"
    assert await g.call("readlink", g.cstr("/proc/self/exe"), g.buf, 4) == 4
    assert g.mm.read(g.buf, 4) == b"/usr"


@pytest.mark.asyncio
async def test_descriptor_calls(g: Guest) -> None:
    await g.call("pipe2", g.buf, 0)
    r, w = struct.unpack("<ii", g.mm.read(g.buf, 8))
    assert await g.call("dup2", w, 10) == 10
    assert await g.call("dup3", w, 10, 0) == 10
    assert await g.call("dup3", w, w, 0) == -errno.EINVAL
    assert await g.call("dup", r) == 5
    assert await g.call("fcntl", 10, 1, 0) == 0  # F_GETFD
    assert await g.call("fcntl", 10, 2, 1) == 0  # F_SETFD FD_CLOEXEC
    assert await g.call("fcntl", 10, 1, 0) == 1
    assert await g.call("fcntl", r, 1030, 20) == 20  # F_DUPFD_CLOEXEC
    assert await g.call("fcntl", r, 3, 0) & os.O_ACCMODE == os.O_RDONLY
    assert await g.call("fcntl", r, 9999, 0) == -errno.EINVAL
    assert await g.call("ioctl", r, 0x5401, g.buf) == -errno.ENOTTY  # TCGETS on a pipe
    assert await g.call("close", w) == 0
    g.mm.write(g.buf, b"x")
    assert await g.call("write", 10, g.buf, 1) == 1  # the dup keeps the pipe open
    assert await g.call("pipe2", g.buf, 0x1234) == -errno.EINVAL
    assert await g.call("pipe2", BAD, 0) == -errno.EFAULT
    assert await g.call("dup2", 999, 3) == -errno.EBADF


@pytest.mark.asyncio
async def test_sendfile_file_to_pipe(g: Guest, tmp_path: Path) -> None:
    f = tmp_path / "src"
    f.write_bytes(b"sendfile data")
    src = await g.call("openat", AT_FDCWD, g.cstr(str(f)), os.O_RDONLY, 0)
    await g.call("pipe2", g.buf, 0)
    r, w = struct.unpack("<ii", g.mm.read(g.buf, 8))
    assert await g.call("sendfile", w, src, 0, 1 << 24) == 13
    assert await g.call("sendfile", w, src, 0, 1 << 24) == 0
    assert os.read(g.proc.fds.get(r).host_fd, 100) == b"sendfile data"


@pytest.mark.asyncio
async def test_identity_and_system_calls(g: Guest) -> None:
    assert await g.call("getpid") == FakeStub.pid == await g.call("gettid")
    assert await g.call("getuid") == os.getuid()
    assert await g.call("uname", g.buf) == 0
    raw = g.mm.read(g.buf, 390)
    assert raw[:6] == b"Linux\0" and raw[4 * 65 : 4 * 65 + 7] == b"x86_64\0"
    assert await g.call("uname", BAD) == -errno.EFAULT
    assert await g.call("getrandom", g.buf, 16, 1) == 16
    assert await g.call("getrandom", g.buf, 16, 0x80) == -errno.EINVAL
    assert await g.call("getrandom", BAD, 16, 0) == -errno.EFAULT
    assert await g.call("prlimit64", 0, 3, 0, g.buf) == 0  # RLIMIT_STACK
    assert struct.unpack("<QQ", g.mm.read(g.buf, 16)) == (8 << 20, MASK)
    assert await g.call("prlimit64", 0, 99, 0, g.buf) == -errno.EINVAL
    assert await g.call("set_tid_address", g.buf) == FakeStub.pid
    assert await g.call("set_robust_list", g.buf, 24) == 0
    assert await g.call("set_robust_list", g.buf, 23) == -errno.EINVAL
    assert await g.call("rseq", g.buf, 32, 0, 0) == -errno.ENOSYS
    g.mm.write(g.buf, b"newname\0")
    assert await g.call("prctl", 15, g.buf) == 0
    assert await g.call("prctl", 16, g.buf + 64) == 0
    assert g.mm.read(g.buf + 64, 16) == b"newname".ljust(16, b"\0")


@pytest.mark.asyncio
async def test_arch_prctl(g: Guest) -> None:
    assert await g.call("arch_prctl", 0x1002, 0x12345000) == 0
    assert g.stub.regs.fs_base == 0x12345000  # type: ignore[attr-defined]
    assert await g.call("arch_prctl", 0x1003, g.buf) == 0
    assert g.mm.read_u64(g.buf) == 0x12345000
    assert await g.call("arch_prctl", 0x1003, BAD) == -errno.EFAULT
    assert await g.call("arch_prctl", 0x1001, 0) == -errno.EINVAL  # ARCH_SET_GS
    assert await g.call("arch_prctl", 0x1004, g.buf) == -errno.EINVAL
    assert await g.call("arch_prctl", 0x3001, g.buf) == -errno.EINVAL  # CET
    assert await g.call("arch_prctl", 0x1002, 1 << 63) == -errno.EPERM


@pytest.mark.asyncio
async def test_time_calls(g: Guest) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert await g.call("clock_gettime", 1, g.buf) == 0
    sec, nsec = struct.unpack("<qq", g.mm.read(g.buf, 16))
    assert before <= sec * 10**9 + nsec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert await g.call("clock_gettime", 10, g.buf) == -errno.EINVAL
    assert await g.call("clock_gettime", 1, BAD) == -errno.EFAULT
    assert await g.call("clock_getres", 1, g.buf) == 0
    assert await g.call("gettimeofday", g.buf, 0) == 0
    now = await g.call("time", 0)
    assert abs(now - time.time()) < 2
    g.mm.write(g.buf, struct.pack("<qq", 0, 2_000_000_000))
    assert await g.call("nanosleep", g.buf, 0) == -errno.EINVAL


@pytest.mark.asyncio
async def test_sleeping_guests_sleep_concurrently() -> None:
    guests = [Guest() for _ in range(3)]
    try:
        for x in guests:
            x.mm.write(x.buf, struct.pack("<qq", 0, 200_000_000))
        start = time.monotonic()
        results = await asyncio.gather(*(x.call("nanosleep", x.buf, 0) for x in guests))
        took = time.monotonic() - start
        assert results == [0, 0, 0]
        assert 0.19 <= took < 0.5  # together, not one after another
    finally:
        for x in guests:
            x.proc.close()


@pytest.mark.asyncio
async def test_unknown_syscall_is_enosys_and_said_so(g: Guest) -> None:
    assert await g.call("io_uring_setup", 1, 2) == -errno.ENOSYS
    assert g.last_trace() == (
        "io_uring_setup(0x1, 0x2, 0x0, 0x0, 0x0, 0x0) = -1 ENOSYS (Function not implemented)"
        " (syscall not implemented by aioumm)"
    )
    g.stub.regs.rdi = 0  # type: ignore[attr-defined]
    await g.proc.syscall(100000)
    assert g.stub.regs.rax == (-errno.ENOSYS) & MASK  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_signal_to_self_terminates_when_unblocked(g: Guest) -> None:
    g.mm.write(g.buf, struct.pack("<Q", 1 << (signal.SIGTERM - 1)))
    assert await g.call("rt_sigprocmask", 0, g.buf, 0, 8) == 0  # block SIGTERM
    assert await g.call("tgkill", FakeStub.pid, FakeStub.pid, signal.SIGTERM) == 0
    assert await g.call("kill", FakeStub.pid, signal.SIGCHLD) == 0  # ignored by default
    assert await g.call("kill", 1, signal.SIGTERM) == -errno.ESRCH
    assert await g.call("rt_sigprocmask", 0, g.buf, 0, 7) == -errno.EINVAL
    with pytest.raises(GuestExit) as done:
        await g.call("rt_sigprocmask", 1, g.buf, 0, 8)  # unblock: it is delivered
    assert done.value.wait_status == signal.SIGTERM and done.value.shell_status == 143


@pytest.mark.asyncio
async def test_sigaction_is_recorded(g: Guest) -> None:
    act = struct.pack("<QQQQ", 0x401000, 0x04000000, 0x402000, 1 << 1)
    g.mm.write(g.buf, act)
    assert await g.call("rt_sigaction", signal.SIGINT, g.buf, 0, 8) == 0
    assert await g.call("rt_sigaction", signal.SIGINT, 0, g.buf + 64, 8) == 0
    assert g.mm.read(g.buf + 64, 32) == act
    assert await g.call("rt_sigaction", signal.SIGKILL, g.buf, 0, 8) == -errno.EINVAL
    assert await g.call("rt_sigaction", 65, g.buf, 0, 8) == -errno.EINVAL
    assert await g.call("rt_sigaction", signal.SIGINT, BAD, 0, 8) == -errno.EFAULT
    g.mm.write(g.buf, struct.pack("<Qi4xQ", g.buf, 0, 100))
    assert await g.call("sigaltstack", g.buf, 0) == -errno.ENOMEM


@pytest.mark.asyncio
async def test_exit_group(g: Guest) -> None:
    with pytest.raises(GuestExit) as done:
        await g.call("exit_group", 300)
    assert done.value.shell_status == 300 & 0xFF
    assert g.last_trace() == "exit_group(300) = ?"


@pytest.mark.asyncio
async def test_brk_and_mmap_through_syscalls(g: Guest) -> None:
    g.mm.brk_start = g.mm.brk = 0x800000
    assert await g.call("brk", 0) == 0x800000
    assert await g.call("brk", 0x801234) == 0x801234
    assert g.last_trace() == "brk(0x801234) = 0x801234"
    a = await g.call("mmap", 0, 8192, 3, 0x22, -1, 0)
    assert a > 0 and a % PAGE_SIZE == 0
    assert await g.call("mmap", 0, 8192, 3, 0x02, 99, 0) == -errno.EBADF  # file mapping, bad fd
    assert await g.call("munmap", a, 8192) == 0
    assert await g.call("mprotect", a, 4096, 1) == -errno.ENOMEM


def test_fd_table_limit() -> None:
    from aioumm.guest.files import OpenFile

    table = FdTable(limit=3)
    r, w = os.pipe()
    f = OpenFile(r, "pipe:")
    try:
        assert [table.install(f) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(Exception) as exc:
            table.install(f)
        assert getattr(exc.value, "errno", None) == errno.EMFILE
    finally:
        table.close_all()
        os.close(w)
    assert f.host_fd == -1


@pytest.mark.asyncio
async def test_opening_a_fifo_does_not_block_the_loop(g: Guest, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # The open waits for a writer; the loop goes on meanwhile.
    opener = asyncio.ensure_future(g.call("openat", AT_FDCWD, g.cstr(str(fifo)), os.O_RDONLY, 0))
    await asyncio.sleep(0.02)
    assert not opener.done()
    w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # the waiting open is a reader already
    try:
        os.write(w, b"fifo!")  # a writer outside the run shows by writing
        fd = await asyncio.wait_for(opener, 5)
        assert fd >= 3
        assert await g.call("fcntl", fd, 3, 0) & os.O_NONBLOCK == 0  # blocking, as the guest asked
        assert await asyncio.wait_for(g.call("read", fd, g.buf, 10), 5) == 5
        reader = asyncio.ensure_future(g.call("read", fd, g.buf, 10))
        await asyncio.sleep(0.02)
        assert not reader.done()
        os.write(w, b"more")
        assert await asyncio.wait_for(reader, 5) == 4
    finally:
        os.close(w)
    assert g.mm.read(g.buf, 4) == b"more"


@pytest.mark.asyncio
async def test_link_time_owner_and_special_file_calls(g: Guest, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("data")
    d = await g.call("openat", AT_FDCWD, g.cstr(str(tmp_path)), os.O_RDONLY | os.O_DIRECTORY, 0)
    assert await g.call("symlinkat", g.cstr("f"), d, g.cstr("sym")) == 0
    assert os.readlink(tmp_path / "sym") == "f"
    assert await g.call("symlink", g.cstr(""), g.cstr(str(tmp_path / "x"))) == -errno.ENOENT
    assert await g.call("linkat", d, g.cstr("sym"), d, g.cstr("hard-to-link"), 0) == 0
    assert (tmp_path / "hard-to-link").is_symlink()  # linkat does not follow by default
    assert await g.call("linkat", d, g.cstr("sym"), d, g.cstr("hard"), 0x400) == 0  # AT_SYMLINK_FOLLOW
    assert os.stat(tmp_path / "hard").st_ino == os.stat(f).st_ino
    assert await g.call("link", g.cstr(str(f)), g.cstr(str(tmp_path / "hard"))) == -errno.EEXIST
    assert await g.call("linkat", d, g.cstr("f"), d, g.cstr("y"), 0x1) == -errno.EINVAL
    # utimensat: explicit times, UTIME_OMIT keeps one, UTIME_NOW, a bad nanosecond count.
    g.mm.write(g.buf, struct.pack("<qqqq", 1000, 5, 2000, (1 << 30) - 2))
    before = os.stat(f).st_mtime_ns
    assert await g.call("utimensat", d, g.cstr("f"), g.buf, 0) == 0
    assert (os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns) == (1000 * 10**9 + 5, before)
    g.mm.write(g.buf, struct.pack("<qqqq", 0, (1 << 30) - 1, 7, 0))
    assert await g.call("utimensat", AT_FDCWD, g.cstr(str(f)), g.buf, 0) == 0
    assert os.stat(f).st_mtime_ns == 7 * 10**9 and os.stat(f).st_atime > 1000
    g.mm.write(g.buf, struct.pack("<qqqq", 0, 10**9, 0, 0))
    assert await g.call("utimensat", d, g.cstr("f"), g.buf, 0) == -errno.EINVAL
    g.mm.write(g.buf, struct.pack("<qqqq", 3, 0, 4, 0))
    assert await g.call("utimensat", d, g.cstr("sym"), g.buf, 0x100) == 0  # the link itself
    assert os.lstat(tmp_path / "sym").st_mtime == 4 and os.stat(f).st_mtime == 7
    fd = await g.call("openat", d, g.cstr("f"), os.O_RDWR, 0)
    assert await g.call("utimensat", fd, 0, g.buf, 0) == 0  # NULL path: the descriptor (futimens)
    assert os.stat(f).st_mtime == 4
    assert await g.call("utimensat", AT_FDCWD, 0, g.buf, 0) == -errno.EFAULT
    g.mm.write(g.buf, struct.pack("<qqqq", 10, 0, 20, 1_000_000))
    assert await g.call("utimes", g.cstr(str(f)), g.buf) == -errno.EINVAL  # tv_usec out of range
    g.mm.write(g.buf, struct.pack("<qqqq", 10, 0, 20, 5))
    assert await g.call("utimes", g.cstr(str(f)), g.buf) == 0
    assert os.stat(f).st_mtime_ns == 20 * 10**9 + 5000
    g.mm.write(g.buf, struct.pack("<qq", 30, 40))
    assert await g.call("utime", g.cstr(str(f)), g.buf) == 0
    assert (os.stat(f).st_atime, os.stat(f).st_mtime) == (30, 40)
    # Owners: -1 leaves an id alone; AT_EMPTY_PATH names the descriptor.
    uid, gid = os.getuid(), os.getgid()
    assert await g.call("fchownat", d, g.cstr("f"), -1, gid, 0) == 0
    assert await g.call("fchownat", fd, g.cstr(""), uid, -1, 0x1000) == 0
    assert await g.call("fchown", fd, -1, -1) == 0
    assert await g.call("lchown", g.cstr(str(tmp_path / "sym")), uid, gid) == 0
    assert await g.call("chown", g.cstr(str(tmp_path / "nope")), uid, gid) == -errno.ENOENT
    assert await g.call("fchownat", d, g.cstr("f"), uid, gid, 0x4) == -errno.EINVAL
    # Special files, space, file systems.
    assert await g.call("mknodat", d, g.cstr("fifo"), 0o10644, 0) == 0
    assert (tmp_path / "fifo").is_fifo() and (tmp_path / "fifo").stat().st_mode & 0o777 == 0o644
    assert await g.call("mknod", g.cstr(str(tmp_path / "plain")), 0o600, 0) == 0
    assert (tmp_path / "plain").is_file()
    assert await g.call("mknodat", d, g.cstr("dir"), 0o40755, 0) == -errno.EPERM
    assert await g.call("mknodat", d, g.cstr("bad"), 0o30755, 0) == -errno.EINVAL
    assert await g.call("fallocate", fd, 0, 0, 8192) == 0
    assert os.stat(f).st_size == 8192
    assert await g.call("fallocate", fd, 0, 0, -1) == -errno.EINVAL
    assert await g.call("statfs", g.cstr(str(tmp_path)), g.buf) == 0
    assert await g.call("fstatfs", fd, g.buf + 200) == 0
    # One file system seen both ways.  Its free block and inode counts are left out: the
    # machine's other writers change them between the two calls.
    by_path, by_fd = (struct.unpack("<7q2i7q", g.mm.read(at, 120)) for at in (g.buf, g.buf + 200))
    free = (3, 4, 6)  # f_bfree, f_bavail, f_ffree
    assert [v for i, v in enumerate(by_path) if i not in free] == [v for i, v in enumerate(by_fd) if i not in free]
    assert all(0 <= by_fd[i] <= by_fd[2 if i < 6 else 5] for i in free)  # at most f_blocks / f_files
    assert struct.unpack_from("<qq", g.mm.read(g.buf, 16))[1] == os.statvfs(tmp_path).f_bsize
    assert await g.call("statfs", g.cstr(str(tmp_path)), BAD) == -errno.EFAULT
    assert await g.call("sync") == 0
    assert await g.call("syncfs", fd) == 0
    assert await g.call("syncfs", 999) == -errno.EBADF
    assert g.last_trace() == "syncfs(999) = -1 EBADF (Bad file descriptor)"


@pytest.mark.asyncio
async def test_stat_and_access_of_dev_fd_name_the_guests_own_descriptors(g: Guest) -> None:
    await g.call("pipe2", g.buf, 0)
    r, _w = struct.unpack("<ii", g.mm.read(g.buf, 8))
    assert await g.call("newfstatat", AT_FDCWD, g.cstr(f"/dev/fd/{r}"), g.buf, 0) == 0
    mode = struct.unpack_from("<I", g.mm.read(g.buf + 24, 4))[0]
    assert mode & 0o170000 == 0o010000  # the pipe, not whatever the host's /dev/fd/N is
    assert await g.call("newfstatat", AT_FDCWD, g.cstr("/dev/fd/77"), g.buf, 0) == -errno.ENOENT
    assert await g.call("access", g.cstr(f"/proc/self/fd/{r}"), os.R_OK) == 0
    assert await g.call("access", g.cstr("/dev/fd/77"), os.R_OK) == -errno.ENOENT


@pytest.mark.asyncio
async def test_chroot_keeps_later_lookups_and_symlinks_inside(g: Guest, tmp_path: Path) -> None:
    (tmp_path / "inside").write_text("in")
    (tmp_path / "escape").symlink_to("/etc/hostname")
    assert await g.call("chroot", g.cstr(str(tmp_path / "inside"))) == -errno.ENOTDIR
    assert await g.call("chroot", g.cstr(str(tmp_path))) == 0
    assert await g.call("chdir", g.cstr("/")) == 0
    assert await g.call("getcwd", g.buf, 100) == 2
    assert await g.call("openat", AT_FDCWD, g.cstr("/inside"), os.O_RDONLY, 0) >= 0
    # The symlink resolves inside the new root, where there is no /etc/hostname.
    assert await g.call("utimensat", AT_FDCWD, g.cstr("/escape"), 0, 0) == -errno.ENOENT
    assert await g.call("fchownat", AT_FDCWD, g.cstr("escape"), 0, 0, 0) == -errno.ENOENT
    assert await g.call("linkat", AT_FDCWD, g.cstr("escape"), AT_FDCWD, g.cstr("x"), 0x400) == -errno.ENOENT
    assert await g.call("mknodat", AT_FDCWD, g.cstr("null"), 0o20666, os.makedev(1, 3)) == -errno.EPERM
    g.proc.euid = 1000
    assert await g.call("chroot", g.cstr("/")) == -errno.EPERM


@pytest.mark.asyncio
async def test_personality_priorities_affinity_and_namespaces(g: Guest) -> None:
    assert await g.call("personality", 0xFFFFFFFF) == 0
    assert await g.call("personality", 0x8) == 0  # PER_LINUX32
    assert await g.call("uname", g.buf) == 0
    assert g.mm.read(g.buf + 4 * 65, 5) == b"i686\0"
    assert await g.call("personality", 0xFFFFFFFF) == 0x8
    assert await g.call("getpriority", 0, 0) == 20  # 20 - nice
    assert await g.call("setpriority", 0, 0, 5) == 0
    assert await g.call("getpriority", 0, g.proc.pid) == 15
    assert await g.call("getpriority", 1, 0) == 15  # its process group
    assert await g.call("getpriority", 0, 99999) == -errno.ESRCH
    assert await g.call("getpriority", 7, 0) == -errno.EINVAL
    assert await g.call("setpriority", 0, 0, 99) == 0  # clamped
    assert g.proc.nice == 19
    g.proc.euid = 1000
    assert await g.call("setpriority", 0, 0, 0) == -errno.EACCES  # only root lowers nice
    assert await g.call("ioprio_set", 1, 0, 1 << 13) == -errno.EPERM  # real-time class
    g.proc.euid = 0
    assert await g.call("ioprio_get", 1, 0) == 0
    assert await g.call("ioprio_set", 1, 0, (2 << 13) | 4) == 0
    assert await g.call("ioprio_get", 1, 0) == (2 << 13) | 4
    assert await g.call("ioprio_set", 1, 0, 5) == -errno.EINVAL  # class none takes no level
    first = min(os.sched_getaffinity(0))
    g.mm.write(g.buf, (1 << first).to_bytes(8, "little"))
    assert await g.call("sched_setaffinity", 0, 8, g.buf) == 0
    assert await g.call("sched_getaffinity", 0, 128, g.buf + 64) > 0
    assert int.from_bytes(g.mm.read(g.buf + 64, 8), "little") == 1 << first
    assert await g.call("sched_setaffinity", 0, 0, g.buf) == -errno.EINVAL  # no CPU left
    assert await g.call("sched_setaffinity", 99999, 8, g.buf) == -errno.ESRCH
    assert await g.call("unshare", 0) == 0
    assert await g.call("unshare", 0x400) == 0  # CLONE_FILES: nothing was shared
    assert await g.call("unshare", 0x20000) == -errno.EPERM  # CLONE_NEWNS
    assert g.last_trace().endswith("(namespaces are not supported by aioumm)")
    assert await g.call("unshare", 0x1) == -errno.EINVAL
    assert await g.call("prctl", 39, 0) == 0
    assert await g.call("prctl", 38, 2) == -errno.EINVAL
    assert await g.call("prctl", 38, 1) == 0
    assert await g.call("prctl", 39, 0) == 1


@pytest.mark.asyncio
async def test_socket_calls_on_other_descriptors_are_enotsock(g: Guest) -> None:
    assert await g.call("getpeername", 0, g.buf, g.buf + 64) == -errno.ENOTSOCK
    assert await g.call("shutdown", 1, 2) == -errno.ENOTSOCK
    assert await g.call("getsockname", 99, g.buf, g.buf + 64) == -errno.EBADF
    fd = await g.call("socket", 1, 1, 0)  # AF_UNIX, SOCK_STREAM: a socket of the guest's own
    assert fd >= 0
    g.mm.write(g.buf + 64, struct.pack("<i", 64))
    assert await g.call("getsockname", fd, g.buf, g.buf + 64) == 0
    assert struct.unpack("<i", g.mm.read(g.buf + 64, 4))[0] == 2  # unnamed: the family alone
    assert await g.call("close", fd) == 0


def test_handlers_imported_on_first_call_replace_every_placeholder() -> None:
    from aioumm.guest import syscalls_ipc, syscalls_net  # noqa: F401  (what a first call imports)
    from aioumm.guest.process import HANDLERS

    left = [
        nr
        for nr, handler in HANDLERS.items()
        if handler.__qualname__.endswith("on_first_call.<locals>.register.<locals>.load")
    ]
    assert left == []
