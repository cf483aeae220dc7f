"""Signals delivered to guests: handlers, frames, masks, restarts, default actions.

Every expectation is a native run of the same static program (``progs/signals.c``,
one case per argument), compared byte for byte with the run in a stub.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import compile_prog

from aioumm.guest.runner import run_program
from aioumm.loop import Controller

RUN = [sys.executable, "-m", "aioumm", "run", "--"]


@pytest.fixture(scope="module")
def sigprog(prog_dir: Path) -> Path:
    return compile_prog("signals", prog_dir)


def _run(cmd: list[str]) -> tuple[int, bytes, bytes]:
    res = subprocess.run(cmd, capture_output=True, timeout=60)
    return res.returncode, res.stdout, res.stderr


def same_as_native(cmd: list[str]) -> tuple[int, bytes]:
    want = _run(cmd)
    got = _run(RUN + cmd)
    # A shell shows death by signal N as 128 + N; subprocess shows it as -N.
    want_rc = 128 - want[0] if want[0] < 0 else want[0]
    assert (got[0], got[1], got[2]) == (want_rc, want[1], want[2])
    return got[0], got[1]


@pytest.mark.parametrize(
    "case",
    [
        "siginfo",  # SA_SIGINFO handler, frame layout, alignment, restorer, masks
        "altstack",  # SA_ONSTACK, EPERM while on it, ENOMEM below MINSIGSTKSZ, SS_DISABLE
        "segv",  # SIGSEGV handler that siglongjmps out (MAPERR, ACCERR, si_addr)
        "fpe",  # SIGFPE: FPE_INTDIV, si_addr is the instruction
        "mask",  # blocked, pending, delivered at sigprocmask
        "restart",  # SA_RESTART: the pipe read goes on
        "eintr",  # no SA_RESTART: the pipe read fails with EINTR
        "nested",  # a handler's own signals wait; another one nests
        "nodefer",  # SA_NODEFER: the handler nests in itself
        "context",  # the handler changes rip, rax and rbx in its ucontext
        "xmm",  # vector registers and MXCSR survive; the handler starts clean
        "term",  # raise(SIGTERM) with a handler
        "suspend",  # sigsuspend, pause, nanosleep (with the time left) and EINTR
        "chld",  # SIGCHLD with its siginfo from a child's exit
        "sigpipe",  # SIGPIPE handled, then EPIPE
    ],
)
def test_handler_cases_match_native(sigprog: Path, case: str) -> None:
    rc, out = same_as_native([str(sigprog), case])
    assert rc == 0 and out


def test_default_actions_match_native(sigprog: Path) -> None:
    assert same_as_native([str(sigprog), "termdfl"])[0] == 143


@pytest.mark.parametrize("how", ["rsp", "rip", "fp"])
def test_hostile_sigreturn_frame_is_sigsegv(sigprog: Path, how: str) -> None:
    rc, out = same_as_native([str(sigprog), "hostile", how])
    assert (rc, out) == (128 + signal.SIGSEGV, b"start\n")


def test_a_timed_futex_wait_is_not_restarted_for_a_handler(prog_dir: Path) -> None:
    # EINTR to a handler even with SA_RESTART; after a stop, the same deadline.
    _, out = same_as_native([str(compile_prog("futex_intr", prog_dir))])
    assert b"SA_RESTART handler         EINTR, cut short\n" in out


def test_busybox_trap(busybox: str) -> None:
    script = 'trap "echo caught" USR1; kill -USR1 $$; echo after'
    rc, out = same_as_native([busybox, "sh", "-c", script])
    assert (rc, out) == (0, b"caught\nafter\n")


def test_runner_forwards_its_signals(busybox: str) -> None:
    script = 'trap "echo got; exit 3" TERM; while :; do /bin/busybox sleep 0.05; done'
    with subprocess.Popen([*RUN, busybox, "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (3, b"got\n", b"")
    with subprocess.Popen([*RUN, busybox, "sleep", "20"], stderr=subprocess.PIPE) as proc:
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGINT


@pytest.mark.asyncio
async def test_strace_shows_signals(sigprog: Path, capfd: pytest.CaptureFixture[str]) -> None:
    trace = io.StringIO()
    async with Controller() as ctl:
        status = await run_program(ctl, str(sigprog), [str(sigprog), "mask"], {}, strace=trace)
    assert status == 0
    assert "handler 10\n" in capfd.readouterr().out
    lines = trace.getvalue().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("--- SIGUSR1 "))
    uid = os.getuid()
    assert lines[at] == f"--- SIGUSR1 {{si_signo=SIGUSR1, si_code=SI_TKILL, si_pid=1000, si_uid={uid}}} ---"
    assert lines[at - 1].startswith("rt_sigprocmask(")
    assert any(line == "rt_sigreturn({mask=[]}) = 0" for line in lines[at:])


@pytest.mark.asyncio
async def test_strace_shows_interrupted_and_fatal(sigprog: Path, capfd: pytest.CaptureFixture[str]) -> None:
    trace = io.StringIO()
    async with Controller() as ctl:
        status = await run_program(ctl, str(sigprog), [str(sigprog), "eintr"], {}, strace=trace)
        assert status == 0
        text = trace.getvalue()
        assert "ERESTARTSYS (To be restarted if SA_RESTART is set)" in text
        assert "--- SIGALRM {si_signo=SIGALRM, si_code=SI_KERNEL} ---" in text
        trace = io.StringIO()
        status = await run_program(ctl, str(sigprog), [str(sigprog), "hostile", "rsp"], {}, strace=trace)
    assert status == 128 + signal.SIGSEGV
    assert trace.getvalue().splitlines()[-2:] == [
        "--- SIGSEGV {si_signo=SIGSEGV, si_code=SI_KERNEL, si_addr=NULL} ---",
        "+++ killed by SIGSEGV +++",
    ]
    capfd.readouterr()
