"""Processes in the guest runner: fork, vfork, execve, wait4, pipelines, kill."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import RUN, both, compile_prog, same_as_native
from guest_fakes import FakeStub

from aioumm.guest.binfmt import parse_shebang
from aioumm.guest.errors import SyscallError
from aioumm.guest.files import OpenFile
from aioumm.guest.layout import PAGE_SIZE, default_layout
from aioumm.guest.memory import AddressSpace, PhysMem
from aioumm.guest.process import GuestProcess
from aioumm.guest.runner import run_program
from aioumm.guest.strace import wait_status_text
from aioumm.guest.table import NUMBERS
from aioumm.loop import Controller

RW = 3  # PROT_READ | PROT_WRITE
MASK = (1 << 64) - 1


def sh(busybox: str, script: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    """``busybox sh -c script``, natively and as a guest: the same outputs and status."""
    return same_as_native([busybox, "sh", "-c", script], **kw)


# ------------------------------------------------------------ C programs


def test_fork_copies_memory(prog_dir: Path) -> None:
    got = same_as_native([str(compile_prog("fork_mem", prog_dir))])
    out = got.stdout.decode()
    assert "parent sees: 1 2 parent heap parent private parent bss\n" in out  # the child's writes stayed its own
    assert "shared anonymous memory: 42\n" in out  # MAP_SHARED stays shared across fork
    assert "child of child exit 6, parent global 1\n" in out


def test_a_forked_child_keeps_the_fpu_state(prog_dir: Path) -> None:
    got = same_as_native([str(compile_prog("fork_fpu", prog_dir))])
    assert got.stdout.startswith(b"child: round up 1, 1/3 = 0.33333333333333337, xmm9 = 2.5\n")


def test_vfork_shares_memory_and_posix_spawn_runs(prog_dir: Path, busybox: str) -> None:
    got = same_as_native([str(compile_prog("vfork_spawn", prog_dir)), busybox])
    out = got.stdout.decode()
    assert "after vfork: seen=99 status=3\n" in out  # the child wrote the parent's memory
    assert "exec from a vfork child\nvfork+exec status=0\n" in out
    assert "spawned zero one\nposix_spawn status=5\n" in out


def test_wait_status_encoding_and_kill(prog_dir: Path) -> None:
    got = same_as_native([str(compile_prog("wait_status", prog_dir))])
    out = got.stdout.decode()
    assert "exit 42: exited 42 (raw 0x2a00)\n" in out
    assert "raise SIGTERM: killed by Terminated (raw 0xf)\n" in out
    assert "killed while reading: killed by Killed (raw 0x9)\n" in out
    assert "killed while running: killed by Interrupt (raw 0x2)\n" in out
    assert "group killed: killed by Terminated (raw 0xf)\n" in out


def test_a_wait_into_a_bad_pointer_reaps_the_child(prog_dir: Path) -> None:
    got = same_as_native([str(compile_prog("wait_fault", prog_dir))])
    assert got.stdout.count(b"ECHILD") == 3


def test_sigkill_to_a_process_that_stopped_itself_ends_it_before_it_goes_on(prog_dir: Path) -> None:
    """``raise(SIGSTOP); _exit(6)``, then SIGKILL: killed, never exited 6, whatever the timing
    (the kill may come before the stopped guest's task has run; its stub runs on another CPU)."""
    got = same_as_native([str(compile_prog("stop_kill", prog_dir))])
    assert got.stdout == b"killed while stopped: 60 of 60\n"


@pytest.fixture
def exec_dir(tmp_path: Path, busybox: str) -> Path:
    """A directory of things to execve: scripts, and files that are not programs."""

    def put(name: str, text: str, mode: int = 0o755) -> None:
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(mode)

    put("plain.txt", "hi\n", 0o644)
    put("textexec", "echo hi\n")
    put("badshebang", "#!\n")
    put("badinterp", "#!/nonexistent/interp\n")
    put("loop1", "#!./loop1\n")
    put("script.sh", f'#!{busybox} sh\necho "script: $0 [$1] [$2]"\nexit 3\n')
    put("echoer", f"#!  {busybox}   echo  \n")  # one optional argument, blanks trimmed
    put("nested", "#!./echoer\n")  # an interpreter that is itself a script
    return tmp_path


def test_execve_errors_and_a_binary(prog_dir: Path, exec_dir: Path, busybox: str) -> None:
    prog = str(compile_prog("exec_errors", prog_dir))
    got = same_as_native([prog, busybox, "echo", "replaced", "by busybox"], cwd=exec_dir)
    assert got.stdout.decode().splitlines() == [
        "missing-file: No such file or directory",
        "/etc/hostname/below-a-file: Not a directory",
        "plain.txt: Permission denied",
        "textexec: Exec format error",
        ".: Permission denied",
        "badshebang: Exec format error",
        "badinterp: No such file or directory",
        "loop1: Too many levels of symbolic links",
        "bad pointer: Bad address",
        "replaced by busybox",
    ]


def test_execve_of_scripts(prog_dir: Path, exec_dir: Path) -> None:
    prog = str(compile_prog("exec_errors", prog_dir))
    got = same_as_native([prog, "./script.sh", "one", "two words"], cwd=exec_dir)
    assert got.returncode == 3
    assert got.stdout.decode().endswith("script: ./script.sh [one] [two words]\n")
    # argv: the interpreter, its one argument, the script's name, then argv[1:].
    got = same_as_native([prog, "./echoer", "a", "b"], cwd=exec_dir)
    assert got.stdout.decode().endswith("\n./echoer a b\n")
    got = same_as_native([prog, "./nested", "x", "y"], cwd=exec_dir)
    assert got.stdout.decode().endswith("\n./echoer ./nested x y\n")


def test_shebang_lines_are_read_as_linux_reads_them() -> None:
    assert parse_shebang(b"#!/bin/sh\n") == (b"/bin/sh", None)
    assert parse_shebang(b"#!/bin/sh") == (b"/bin/sh", None)  # no newline, short file
    assert parse_shebang(b"#! /bin/sh  -e  x \nrest") == (b"/bin/sh", b"-e  x")  # one argument
    assert parse_shebang(b"#!/bin/sh\t-x\n") == (b"/bin/sh", b"-x")
    for bad in (b"#!\n", b"#!   \n", b"#!" + b"a" * 300, b"not a script"):
        with pytest.raises(SyscallError):
            parse_shebang(bad)
    # A line longer than the buffer is fine as long as the name ended inside it.
    assert parse_shebang(b"#!/bin/x " + b"y" * 300)[0] == b"/bin/x"


# -------------------------------------------------------------- shells


def test_pipelines_match_native(busybox: str) -> None:
    assert sh(busybox, f"echo hello | {busybox} wc -c").stdout == b"6\n"
    sh(busybox, f"echo abc | {busybox} tr a-z A-Z | {busybox} wc -c")
    sh(busybox, f"{busybox} seq 1 2000 | {busybox} sort -r | {busybox} head -n 3")
    sh(busybox, f"{busybox} seq 1 100000 | {busybox} head -n 2; echo status $?")  # seq dies of SIGPIPE
    sh(busybox, f"{busybox} yes | {busybox} head -n 3")


def test_shell_scripts_with_subshells_and_substitutions(busybox: str, tmp_path: Path) -> None:
    sh(busybox, 'x=$(echo sub; echo two); echo "[$x]"; echo $(( $(echo 3) + $(echo 4) ))')
    sh(busybox, "(echo in a subshell; exit 3); echo rc=$?; (cd / && pwd); pwd", cwd=tmp_path)
    sh(busybox, f"for i in 1 2 3; do (echo $i | {busybox} cat); done; f() {{ echo f $1; }}; f a | {busybox} cat")
    sh(busybox, f"{busybox} false; echo $?; /nonexistent/x; echo $?; exec {busybox} echo replaced")
    sh(busybox, 'umask 027; umask; (umask); trap "echo at exit" EXIT; echo body')
    sh(busybox, 'printf "echo no shebang: \\$0\\n" > s; chmod +x s; ./s; : > e; ./e; echo $?', cwd=tmp_path)


def test_poll_and_the_read_builtin(prog_dir: Path, busybox: str, tmp_path: Path) -> None:
    got = same_as_native([str(compile_prog("poll_pipe", prog_dir))])
    assert got.stdout.decode().splitlines()[2:4] == ["woken: 1 0x1", "hangup: 1 0x10"]
    sh(busybox, f"{busybox} seq 1 5 | while read n; do echo n=$n; done; echo a b c | {{ read x y; echo $y; }}")
    sh(busybox, 'echo hi > f; while read l; do echo "read: $l"; done < f', cwd=tmp_path)


def test_kill_and_wait_between_guests(busybox: str) -> None:
    # Whether ash says "Terminated" for the killed job is a race even natively: stdout only.
    want, got = both([busybox, "sh", "-c", f"{busybox} sleep 5 & kill $!; wait $!; echo status $?"])
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout) == (0, b"status 143\n")
    sh(busybox, f'{busybox} sh -c "kill -9 \\$\\$"; echo rc=$?; {busybox} sleep 0.05 & wait $!; echo $?')
    got = sh(busybox, "kill -TERM $$; echo not reached")
    assert got.returncode == 143


def test_kill_leftovers_ends_the_run_with_the_first_guest(busybox: str) -> None:
    # By default the run serves the background sleep until it exits, as natively
    # (test_guest_run_end.py); told so, it ends with its first guest and kills the rest.
    start = time.monotonic()
    got = subprocess.run(
        [*RUN[:-1], "--kill-leftovers", "--", busybox, "sh", "-c", f"{busybox} sleep 30 & echo started"],
        capture_output=True,
        timeout=60,
    )
    assert (got.returncode, got.stdout, got.stderr) == (0, b"started\n", b"")
    assert time.monotonic() - start < 20


# ----------------------------------------------------- one loop, many runs


@pytest.mark.asyncio
async def test_32_pipelines_at_once_on_one_loop(busybox: str, tmp_path: Path) -> None:
    scripts = [f"echo line{i} | {busybox} tr a-z A-Z | {busybox} wc -c; x=$(echo {i}); echo got $x" for i in range(32)]
    want = [
        subprocess.run([busybox, "sh", "-c", s], capture_output=True, timeout=60, check=True).stdout for s in scripts
    ]

    async def one(ctl: Controller, i: int) -> tuple[int, bytes]:
        out = tmp_path / f"out{i}"
        with open(out, "wb") as f, open(os.devnull, "rb") as nul:
            status = await run_program(
                ctl,
                busybox,
                ["busybox", "sh", "-c", scripts[i]],
                {"PATH": "/bin"},
                stdio=(nul.fileno(), f.fileno(), f.fileno()),
            )
        return status, out.read_bytes()

    async with Controller() as ctl:
        results = await asyncio.wait_for(asyncio.gather(*(one(ctl, i) for i in range(32))), 120)
        assert ctl.stubs == frozenset()  # every process of every run is gone
    assert [r[0] for r in results] == [0] * 32
    assert [r[1] for r in results] == want


@pytest.mark.asyncio
async def test_strace_shows_the_process_calls(busybox: str, capfd: pytest.CaptureFixture[str]) -> None:
    trace = io.StringIO()
    async with Controller() as ctl:
        status = await run_program(
            ctl, busybox, ["busybox", "sh", "-c", f"echo hi | {busybox} cat; exit 4"], {}, strace=trace
        )
    assert status == 4
    assert capfd.readouterr().out == "hi\n"
    text = trace.getvalue()
    assert re.search(
        r"clone\(child_stack=NULL, flags=CLONE_CHILD_CLEARTID\|CLONE_CHILD_SETTID\|SIGCHLD, "
        r"child_tidptr=0x[0-9a-f]+\) = 1001\n",
        text,
    )
    assert re.search(
        rf'\[pid  1002\] execve\("{busybox}", \["{busybox}", "cat"\], 0x[0-9a-f]+ /\* \d+ vars? \*/\) = 0\n', text
    )
    assert re.search(r"wait4\(-1, \[\{WIFEXITED\(s\) && WEXITSTATUS\(s\) == 0\}\], 0, NULL\) = 100[12]\n", text)
    assert re.search(r"pipe2\(\[3, 4\], 0\) = 0\n", text)
    assert "[pid  1001] +++ exited with 0 +++\n" in text
    assert text.endswith("exit_group(4) = ?\n+++ exited with 4 +++\n")


def test_wait_status_text() -> None:
    assert wait_status_text(7 << 8) == "[{WIFEXITED(s) && WEXITSTATUS(s) == 7}]"
    assert wait_status_text(15) == "[{WIFSIGNALED(s) && WTERMSIG(s) == SIGTERM}]"
    assert wait_status_text(0x8B) == "[{WIFSIGNALED(s) && WTERMSIG(s) == SIGSEGV && WCOREDUMP(s)}]"


# ------------------------------------------------------- the parts alone


@pytest.mark.asyncio
async def test_lone_processes_cannot_clone_and_shared_memory_processes_are_not_offered() -> None:
    stub = FakeStub()
    trace = io.StringIO()
    proc = GuestProcess(stub, physmem=PhysMem(1 << 30), strace=trace)  # type: ignore[arg-type]
    try:
        regs = stub.regs
        regs.rdi, regs.rsi = 0x3D0F00, 0x7000  # type: ignore[attr-defined]  # pthread_create's flags
        await proc.syscall(NUMBERS["clone"])  # no controller to spawn a stub from
        assert regs.rax == (-errno.EAGAIN) & MASK  # type: ignore[attr-defined]
        regs.rdi = 0x100 | 17  # type: ignore[attr-defined]  # CLONE_VM | SIGCHLD: a process sharing memory
        await proc.syscall(NUMBERS["clone"])
        assert regs.rax == (-errno.ENOSYS) & MASK  # type: ignore[attr-defined]
        assert trace.getvalue().endswith(
            ") = -1 ENOSYS (Function not implemented)"
            " (processes sharing memory without being threads are not supported by aioumm)\n"
        )
        regs.rdi = 0x10000 | 0x100  # type: ignore[attr-defined]  # CLONE_THREAD without CLONE_SIGHAND
        await proc.syscall(NUMBERS["clone"])
        assert regs.rax == (-errno.EINVAL) & MASK  # type: ignore[attr-defined]
        await proc.syscall(NUMBERS["fork"])  # no controller to spawn a stub from
        assert regs.rax == (-errno.EAGAIN) & MASK  # type: ignore[attr-defined]
        await proc.syscall(NUMBERS["wait4"])
        assert regs.rax == (-errno.ECHILD) & MASK  # type: ignore[attr-defined]
    finally:
        proc.close()


def test_fork_copy_isolates_and_copies_only_data(fake_stub: FakeStub) -> None:
    lay = default_layout()
    parent = AddressSpace(fake_stub, lay, PhysMem(1 << 30))
    child_stub = FakeStub()
    try:
        a = parent.sys_mmap(0, 64 * PAGE_SIZE, RW, 0x22)  # private anonymous
        s = parent.sys_mmap(0, PAGE_SIZE, RW, 0x21)  # shared anonymous
        parent.write(a, b"parent")
        parent.write(a + 40 * PAGE_SIZE, b"far page")
        parent.write(s, b"shared")
        child = parent.fork_copy(child_stub)
        try:
            assert len(child_stub.take()) == len(parent.vmas)  # every mapping queued on the child
            assert child.read(a, 6) == b"parent" and child.read(a + 40 * PAGE_SIZE, 8) == b"far page"
            child.write(a, b"child!")
            child.write(s, b"SHARED")
            assert parent.read(a, 6) == b"parent"  # a copy...
            assert parent.read(s, 6) == b"SHARED"  # ...except what is shared
            # Only the two touched pages hold data in the child's file.
            data = os.lseek(child.physmem.fd, 0, os.SEEK_DATA)
            assert os.lseek(child.physmem.fd, data, os.SEEK_HOLE) - data == PAGE_SIZE
        finally:
            child.close()
        assert parent.read(s, 6) == b"SHARED"  # still there for the parent
    finally:
        parent.close()


def test_vfork_sharing_mirrors_changes_to_both_stubs(fake_stub: FakeStub) -> None:
    lay = default_layout()
    mm = AddressSpace(fake_stub, lay, PhysMem(1 << 30))
    child_stub = FakeStub()
    try:
        a = mm.sys_mmap(0, PAGE_SIZE, RW, 0x22)
        fake_stub.take()
        mm.share(child_stub)
        assert [op[0] for op in child_stub.take()] == ["mmap"]
        mm.sys_munmap(a, PAGE_SIZE)
        assert fake_stub.take() == child_stub.take() == [("munmap", a, PAGE_SIZE)]
        assert not mm.unshare(child_stub)  # the parent still has it
        mm.sys_mmap(0, PAGE_SIZE, RW, 0x22)
        assert len(fake_stub.take()) == 1 and child_stub.take() == []
        assert mm.unshare(fake_stub)
    finally:
        mm.close()


@pytest.mark.asyncio
async def test_a_wait_leaves_the_guest_and_host_blocking_modes_alone() -> None:
    r, w = os.pipe2(os.O_CLOEXEC)
    file = OpenFile(r, "pipe:")
    try:
        reader = asyncio.ensure_future(file.readv([memoryview(bytearray(10))]))
        await asyncio.sleep(0.02)
        assert not reader.done()
        os.write(w, b"data")
        assert await asyncio.wait_for(reader, 5) == 4
        assert not file.guest_nonblocking()
        assert os.get_blocking(r)  # whatever the loop did to watch it is undone
    finally:
        file.close()
        os.close(w)


@pytest.mark.asyncio
async def test_two_signals_in_one_loop_turn_interrupt_a_wait_once() -> None:
    """SIGINT to the group and the SIGCHLD of a dying child, both kicking one waiting
    process in the same turn: the wait ends with EINTR, never with a stray cancellation."""
    import signal

    proc = GuestProcess(FakeStub(), physmem=PhysMem(1 << 30))  # type: ignore[arg-type]
    try:
        never: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        proc.task = asyncio.ensure_future(proc._wait(never))
        await asyncio.sleep(0)
        proc.signals.post(signal.SIGINT)
        proc.signals.post(signal.SIGCHLD)
        proc._kick_now()
        proc._kick_now()
        assert await asyncio.wait_for(proc.task, 5) == -errno.EINTR
    finally:
        proc.close()
