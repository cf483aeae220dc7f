"""Guest threads (``clone`` with ``CLONE_THREAD``) and ``futex``: every program is run
natively too, and the guest's outputs and status must be the native ones."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import pytest
from conftest import compile_prog

from aioumm.guest.runner import run_program
from aioumm.loop import Controller


@pytest.fixture(scope="module")
def progs(prog_dir: Path) -> dict[str, Path]:
    names = (
        "threads_join",
        "threads_condvar",
        "threads_tls",
        "threads_mmap",
        "threads_signals",
        "threads_exit",
        "futex_calls",
        "timeouts",
        "threads_fork",
        "threads_tid",
        "threads_many",
        "threads_stop",
    )
    return {name: compile_prog(name, prog_dir, "-pthread") for name in names}


async def same_as_native(
    prog: Path, capfd: pytest.CaptureFixture[str], *args: str, strace: io.StringIO | None = None
) -> str:
    """Run ``prog args`` natively, then as a guest on this test's loop: the same stdout, stderr and status."""
    want = subprocess.run([str(prog), *args], capture_output=True, timeout=60)
    status = 128 - want.returncode if want.returncode < 0 else want.returncode
    capfd.readouterr()
    async with Controller() as ctl:
        got = await run_program(ctl, str(prog), [str(prog), *args], {}, strace=strace)
    out = capfd.readouterr()
    assert (got, out.out, out.err) == (status, want.stdout.decode(), want.stderr.decode())
    return out.out


@pytest.mark.asyncio
async def test_threads_return_values_to_join(progs: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    out = await same_as_native(progs["threads_join"], capfd)
    assert out.count("join 0 value") == 12
    assert "same pid 1 own tid 1" in out
    assert "main tid is pid: 1\n" in out
    assert "/proc/self/task: 4 entries, the main thread listed 1; status Threads: 4\n" in out


@pytest.mark.asyncio
async def test_mutex_and_condition_variables(progs: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    out = await same_as_native(progs["threads_condvar"], capfd)
    assert out == "consumed 2000 items, sum 2001000\ntimedwait: ETIMEDOUT\n"


@pytest.mark.asyncio
async def test_thread_local_storage_and_errno(progs: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    out = await same_as_native(progs["threads_tls"], capfd)
    assert "thread 3: counter 103 errno 9 name worker3\n" in out
    assert out.endswith("main: counter 100 errno 0 name main\n")


@pytest.mark.asyncio
async def test_mapping_changes_reach_running_threads(progs: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    # Readers spin in guest code while the main thread maps and unmaps; a thread
    # spinning when another one unmaps or protects a page faults on it afterwards.
    out = await same_as_native(progs["threads_mmap"], capfd)
    assert out.count("saw 40 good rounds") == 3
    assert "after munmap: SIGSEGV\n" in out
    assert "after mprotect PROT_NONE: SIGSEGV\n" in out
    assert "after a new mapping in place: read 42\n" in out


@pytest.mark.asyncio
async def test_signals_reach_threads(progs: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    out = await same_as_native(progs["threads_signals"], capfd)
    assert "pthread_kill: handled by the target 1\n" in out
    assert "kill to the process: handled by the worker 1\n" in out
    assert "cancel in cond_wait: canceled\n" in out
    assert "cancel in sleep: canceled\n" in out


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("mode", "expect"),
    [
        ("exit", "thread calls exit(3)\n"),
        ("main_leaves", "the last thread is still running\n"),
        ("segv", ""),
        ("exec", "after exec from a thread: same pid 1, tid is pid 1\n"),
        ("wait", "wait: the child 1, exited 1 with 7\nwait again: -1\n"),
    ],
)
async def test_how_a_threaded_process_ends(
    progs: dict[str, Path], capfd: pytest.CaptureFixture[str], mode: str, expect: str
) -> None:
    out = await same_as_native(progs["threads_exit"], capfd, mode)
    assert out.endswith(expect)


@pytest.mark.asyncio
async def test_futex_calls_and_errors(progs: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    out = await same_as_native(progs["futex_calls"], capfd)
    for line in (
        "wait bad address: -1 EFAULT",
        "bad op: -1 ENOSYS",
        "wake unmapped private: 0",
        "wake private above the user range: -1 EFAULT",
        "wake private at the user range's end: -1 EFAULT",
        "requeue private to a kernel address: -1 EFAULT",
        "wait on PROT_NONE: -1 EFAULT",
        "shared wake on PROT_NONE: -1 EFAULT",
        "private wake on PROT_NONE: 0",
        "wait value mismatch: -1 EAGAIN",
        "wait relative timeout: -1 ETIMEDOUT",
        "wait_bitset monotonic deadline: -1 ETIMEDOUT",
        "cmp_requeue wake 1 move 5: 3",
        "wake on the requeued word: 2",
    ):
        assert line + "\n" in out


@pytest.mark.asyncio
async def test_sleeps_and_timed_waits_never_end_early(
    progs: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    out = await same_as_native(progs["timeouts"], capfd)
    assert out == (
        "early: nanosleep 0, clock_nanosleep 0, timedwait 0, poll 0, semtimedop 0, setitimer 0; timed out 30 of 30\n"
    )


@pytest.mark.asyncio
async def test_fork_copies_one_moment_of_a_threaded_process(
    progs: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    out = await same_as_native(progs["threads_fork"], capfd)
    assert out == "torn copies: 0 of 20\n"


@pytest.mark.asyncio
async def test_a_tid_names_the_thread_in_proc_and_kill(
    progs: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    out = await same_as_native(progs["threads_tid"], capfd)
    assert out == (
        "/proc/TID/status opens: 1\nTgid is the pid: 1\nPid is the tid: 1\nlisted in /proc: 0\n"
        "kill(TID, 0): 0\nkill(TID, SIGUSR1): 0\nhandled: 1\n"
    )


@pytest.mark.asyncio
async def test_strace_names_the_thread(progs: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    trace = io.StringIO()
    await same_as_native(progs["threads_join"], capfd, strace=trace)
    lines = trace.getvalue().splitlines()
    clones = [line for line in lines if "clone(" in line and "CLONE_THREAD" in line]
    assert len(clones) == 15  # 12 workers, then 3 at a barrier
    tids = {int(m.group(1)) for m in (re.match(r"\[pid +(\d+)\] ", line) for line in lines) if m}
    created = {int(line.rsplit("= ", 1)[1]) for line in clones}
    assert created <= tids  # each thread's own calls carry its tid
    assert sum(1 for line in lines if line.endswith("exit(0) = ?")) == 15


@pytest.mark.asyncio
async def test_more_threads_than_processes_a_run_allows(
    progs: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """300 threads alive at once: threads count against the run's task limit, not its process limit."""
    out = await same_as_native(progs["threads_many"], capfd, "300")
    assert out == f"300 threads, sum of squares {sum(i * i for i in range(300))}\n"


@pytest.mark.asyncio
async def test_a_stop_signal_stops_every_thread(progs: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    """SIGSTOP to a process whose main thread waits in pause() while another computes: both stop."""
    out = await same_as_native(progs["threads_stop"], capfd)
    assert "every thread stopped: yes\n" in out and "killed: 1 by SIGKILL\n" in out
