"""Real static programs run end to end in stubs, compared with native runs."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compile_prog

from aioumm.guest.errors import GuestError
from aioumm.guest.runner import run_program
from aioumm.loop import Controller

RUN = [sys.executable, "-m", "aioumm", "run", "--"]


def native(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, capture_output=True, timeout=60, **kw)  # type: ignore[call-overload,no-any-return]


def guest(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(RUN + cmd, capture_output=True, timeout=60, **kw)  # type: ignore[call-overload,no-any-return]


def same_as_native(cmd: list[str], stdin_path: Path | None = None, **kw: object) -> subprocess.CompletedProcess[bytes]:
    if stdin_path is not None:
        with stdin_path.open("rb") as a, stdin_path.open("rb") as b:
            want, got = native(cmd, stdin=a, **kw), guest(cmd, stdin=b, **kw)
    else:
        want, got = native(cmd, **kw), guest(cmd, **kw)
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
    return got


@pytest.mark.asyncio
async def test_hello_in_process(hello: Path, capfd: pytest.CaptureFixture[str]) -> None:
    trace = io.StringIO()
    async with Controller() as ctl:
        status = await run_program(ctl, str(hello), [str(hello)], {"A": "b"}, strace=trace)
    assert status == 0
    assert capfd.readouterr().out == "hello world\n"
    lines = trace.getvalue().splitlines()
    assert 'write(1, "hello world\\n", 12) = 12' in lines
    assert lines[-2:] == ["exit_group(0) = ?", "+++ exited with 0 +++"]
    assert any(line.startswith("arch_prctl(ARCH_SET_FS, ") for line in lines)


@pytest.mark.asyncio
async def test_busybox_in_process(busybox: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "f.txt"
    f.write_text("line one\nline two\n")
    async with Controller() as ctl:
        assert await run_program(ctl, busybox, ["busybox", "echo", "hi"], {}) == 0
        assert await run_program(ctl, busybox, ["busybox", "true"], {}) == 0
        assert await run_program(ctl, busybox, ["busybox", "false"], {}) == 1
        assert await run_program(ctl, busybox, ["busybox", "cat", str(f)], {}) == 0
    assert capfd.readouterr().out == "hi\nline one\nline two\n"


@pytest.mark.asyncio
async def test_load_errors_name_path_and_reason(hello: Path, tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.write_text("not a program\n")
    text.chmod(0o755)
    dyn = tmp_path / "dyn"
    src = Path(__file__).parent / "progs" / "hello.c"
    subprocess.run(["gcc", "-O1", "-Wl,--dynamic-linker=/nonexistent/ld.so", "-o", str(dyn), str(src)], check=True)
    async with Controller() as ctl:
        for path, why in (
            (tmp_path / "missing", "no such file or directory"),
            (text, "not an ELF file"),
            (dyn, "interpreter /nonexistent/ld.so: no such file or directory"),
            (tmp_path, "is a directory"),
        ):
            with pytest.raises(GuestError, match=f"{path}: {why}"):
                await run_program(ctl, str(path), [str(path)], {})
        with pytest.raises(GuestError, match=f"{hello}: argument list too long"):
            await run_program(ctl, str(hello), [str(hello), "x" * 200_000], {})
    assert ctl.stubs == frozenset()


@pytest.mark.asyncio
async def test_the_guest_starts_in_the_directory_it_is_given(
    busybox: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "here.txt").write_text("found relative\n")
    async with Controller() as ctl:
        assert await run_program(ctl, busybox, ["busybox", "sh", "-c", "pwd; cat here.txt"], {}, cwd=str(tmp_path)) == 0
        with pytest.raises(GuestError, match=f"{tmp_path}/missing: no such file or directory"):
            await run_program(ctl, busybox, ["busybox", "true"], {}, cwd=str(tmp_path / "missing"))
    assert capfd.readouterr().out == f"{tmp_path}\nfound relative\n"
    assert ctl.stubs == frozenset()


def test_hello_and_static_pie_match_native(hello: Path, hello_pie: Path) -> None:
    same_as_native([str(hello)])
    same_as_native([str(hello_pie)])


def test_busybox_matches_native(busybox: str, tmp_path: Path) -> None:
    f = tmp_path / "data.txt"
    f.write_bytes(b"".join(b"%d\n" % i for i in range(20000)))
    assert same_as_native([busybox, "echo", "hi"]).stdout == b"hi\n"
    assert same_as_native([busybox, "true"]).returncode == 0
    assert same_as_native([busybox, "false"]).returncode == 1
    assert same_as_native([busybox, "cat", str(f)]).stdout == f.read_bytes()
    same_as_native([busybox, "cat", str(tmp_path / "nope")])  # its error message and status
    same_as_native([busybox, "ls", str(tmp_path)])
    same_as_native([busybox, "sha256sum", str(f)])
    assert same_as_native([busybox, "wc", "-l"], stdin_path=f).stdout.strip() == b"20000"
    same_as_native([busybox, "cat"], input=b"from a pipe\n")  # stdin is a pipe: no blocking


def test_fault_kills_with_the_signal(prog_dir: Path) -> None:
    segv = compile_prog("segv", prog_dir)
    want, got = native([str(segv)]), guest([str(segv)])
    assert want.returncode == -11 and want.stdout == b"about to fault\n"
    assert (got.returncode, got.stdout, got.stderr) == (128 + 11, want.stdout, b"")


def test_memory_syscalls_match_native(prog_dir: Path) -> None:
    memops = compile_prog("memops", prog_dir)
    got = same_as_native([str(memops)])
    assert b": 0" not in got.stdout and got.stdout.count(b"\n") == 11


def test_madvise_msync_and_mlock_match_native(prog_dir: Path, tmp_path: Path) -> None:
    # Unknown advice, holes, MADV_REMOVE of private memory (refused: the memory
    # stays) and of shared memory (gone); msync and mlock checked as Linux does.
    (tmp_path / "file").write_bytes(bytes(4096))
    got = same_as_native([str(compile_prog("mem_advice", prog_dir)), "file"], cwd=tmp_path)
    assert b"private memory kept: 7\n" in got.stdout and b"file reads synced\n" in got.stdout


def test_scheduling_queries_match_native(prog_dir: Path) -> None:
    got = same_as_native([str(compile_prog("sched_info", prog_dir))])
    assert b"on a CPU of its mask 1, node 0\n" in got.stdout


def test_confined_root(busybox: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    (root / "hello.txt").write_text("inside\n")
    (tmp_path / "secret.txt").write_text("outside\n")
    os.symlink("/../../secret.txt", root / "link")
    run = [sys.executable, "-m", "aioumm", "run", "--root", str(root), "--"]
    res = subprocess.run([*run, "/bin/busybox", "cat", "/hello.txt"], capture_output=True, timeout=60)
    assert (res.returncode, res.stdout) == (0, b"inside\n")
    for escape in ("/../secret.txt", "/link", "../../secret.txt"):
        res = subprocess.run([*run, "/bin/busybox", "cat", escape], capture_output=True, timeout=60)
        assert res.returncode == 1 and b"outside" not in res.stdout, escape


def test_proc_cmdline_comm_and_environ_describe_guests(busybox: str) -> None:
    """What /proc/PID/{cmdline,comm,environ} show for the shell itself, read by a child."""
    script = (
        "cat /proc/$$/cmdline | tr '\\0' ' '; echo; cat /proc/$$/comm;"
        " tr '\\0' '\\n' < /proc/$$/environ | grep -c '^AIOUMM_PROC_TEST=yes$'"
    )
    got = same_as_native([busybox, "sh", "-c", script], env={"AIOUMM_PROC_TEST": "yes", "PATH": "/usr/bin:/bin"})
    assert got.stdout.splitlines()[1:] == [b"busybox", b"1"]


def test_a_script_can_be_the_program(busybox: str, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text(f'#!{busybox} sh\necho "args: $0 $*"; exit 7\n')
    script.chmod(0o755)
    got = same_as_native([str(script), "a", "b c"])
    assert (got.returncode, got.stdout) == (7, f"args: {script} a b c\n".encode())


def test_guests_see_every_cpu_of_the_run_whatever_the_placement(busybox: str) -> None:
    """`aioumm run` pins its loop thread and chatty stubs to one CPU; guests still see the run's CPUs."""
    script = "nproc; taskset -c 0 nproc; grep -c ^processor /proc/cpuinfo"
    got = same_as_native([busybox, "sh", "-c", script])
    assert got.stdout.split()[1] == b"1"
    cmd = [*RUN[:-1], "--no-placement", "--", busybox, "sh", "-c", script]
    assert subprocess.run(cmd, capture_output=True, timeout=60).stdout == got.stdout


def test_umount2_is_checked_as_linux_checks_it_and_never_reaches_the_host(prog_dir: Path) -> None:
    prog = str(compile_prog("mounts", prog_dir))
    before = Path("/proc/self/mountinfo").read_bytes()
    same_as_native([prog])
    # A real mount point: Linux (as root) would unmount it; a guest gets EPERM, and nothing changes.
    got = guest([prog, "/proc"])
    assert got.returncode == 0
    assert got.stdout.splitlines()[-1] == b"umount2 a mount point: -1 Operation not permitted"
    assert Path("/proc/self/mountinfo").read_bytes() == before


def _ignore_and_block() -> None:
    # What nohup and a shell's "trap '' SIG" leave to the programs they start; 34 is SIGRTMIN.
    for sig in (signal.SIGHUP, signal.SIGUSR2, 34):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1, signal.SIGALRM])


def test_ignored_and_blocked_signals_are_inherited(busybox: str) -> None:
    """As through exec: the guest starts with the signals ``aioumm run`` was started with ignored and blocked."""
    cmd = [busybox, "sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status; kill -HUP $$; echo alive"]
    got = same_as_native(cmd, preexec_fn=_ignore_and_block)
    # What this test set (the caller of the test may have passed on more).
    masks = dict(re.findall(rb"(SigIgn|SigBlk):\t([0-9a-f]+)", got.stdout))
    assert int(masks[b"SigIgn"], 16) & 0x200000801 == 0x200000801  # SIGHUP, SIGUSR2, 34
    assert int(masks[b"SigBlk"], 16) & 0x2200 == 0x2200  # SIGUSR1, SIGALRM
