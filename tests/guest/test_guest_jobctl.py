"""Job control and real-time signal queues, each run compared with the same program run natively.

``progs/jobctl.c`` stops and continues children and prints what ``wait4``,
``waitid`` and ``SIGCHLD`` report; ``progs/rtsig.c`` queues real-time signals
and takes them with handlers, ``sigwaitinfo`` and ``sigtimedwait``;
``progs/sigfd.c`` reads them from a signalfd.  busybox
``sh`` and bash-static (``set -m``) drive stops and resumes from a script.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compile_prog

from aioumm.guest.runner import run_program
from aioumm.loop import Controller

RUN = [sys.executable, "-m", "aioumm", "run", "--"]


@pytest.fixture(scope="module")
def jobctl(prog_dir: Path) -> Path:
    return compile_prog("jobctl", prog_dir)


@pytest.fixture(scope="module")
def rtsig(prog_dir: Path) -> Path:
    return compile_prog("rtsig", prog_dir)


def same_as_native(cmd: list[str], **kw: object) -> str:
    """Run ``cmd`` natively and as a guest; both give the same outputs and status."""
    want: subprocess.CompletedProcess[bytes] = subprocess.run(cmd, capture_output=True, timeout=60, **kw)  # type: ignore[call-overload]
    got: subprocess.CompletedProcess[bytes] = subprocess.run(RUN + cmd, capture_output=True, timeout=60, **kw)  # type: ignore[call-overload]
    want_rc = 128 - want.returncode if want.returncode < 0 else want.returncode
    assert (got.returncode, got.stdout.decode(), got.stderr.decode()) == (
        want_rc,
        want.stdout.decode(),
        want.stderr.decode(),
    )
    return got.stdout.decode()


# ------------------------------------------------------------ job control


def test_stop_and_continue_reports(jobctl: Path) -> None:
    out = same_as_native([str(jobctl), "stop"])
    assert "WUNTRACED after SIGSTOP: stopped by Stopped (signal) (raw 0x137f)\n" in out
    assert "WCONTINUED after SIGCONT: continued (raw 0xffff)\n" in out
    assert "SIGCHLD: STOPPED/19/child CONTINUED/18/child" in out


def test_waitid_stopped_continued_and_wnowait(jobctl: Path) -> None:
    out = same_as_native([str(jobctl), "waitid"])
    assert "WSTOPPED|WNOWAIT again: CLD_STOPPED status=20 pid=child" in out
    assert "WCONTINUED: CLD_CONTINUED status=18 pid=child" in out


def test_sa_nocldstop(jobctl: Path) -> None:
    assert "SIGCHLD: KILLED/9/child\n" in same_as_native([str(jobctl), "nocldstop"])


def test_stop_and_continue_cancel_each_other(jobctl: Path) -> None:
    out = same_as_native([str(jobctl), "pending"])
    assert "child: after TSTP: CONT=0 TSTP=1\n" in out
    assert "child: resumed: CONT pending=1 handled=0\n" in out


def test_signals_to_a_stopped_process(jobctl: Path) -> None:
    out = same_as_native([str(jobctl), "killstopped"])
    assert "SIGTERM while stopped: returned 0\n" in out
    assert "SIGKILL while stopped: killed by Killed\n" in out


def test_stopped_in_a_syscall(jobctl: Path) -> None:
    out = same_as_native([str(jobctl), "blocked"])
    assert out.count("while stopped: nothing\n") == 3
    assert "the sleep kept its deadline: yes\n" in out


def test_orphaned_group_gets_hangup_and_continue(jobctl: Path) -> None:
    out = same_as_native([str(jobctl), "orphan"])
    assert "C: SIGHUP\nC: continued\nC: SIGTTOU discarded\n" in out


# Whether ash reports a job killed by a signal on stderr depends on when it
# reaps it (natively too): stderr is left out.
BUSYBOX_SCRIPT = r"""
exec 2>/dev/null
BB=/bin/busybox
$BB sleep 1 & pid=$!
kill -STOP $pid
kill -0 $pid && echo "stopped but alive"
$BB sleep 1.5
kill -CONT $pid
wait $pid; echo "sleep status $?"
$BB sleep 5 & pid=$!
kill -STOP $pid
kill -KILL $pid
wait $pid; echo "killed while stopped: $?"
$BB sleep 5 & pid=$!
kill -STOP $pid
kill -TERM $pid
kill -CONT $pid
wait $pid; echo "terminated once continued: $?"
"""


def test_busybox_stop_and_continue(busybox: str) -> None:
    out = same_as_native([busybox, "sh", "-c", BUSYBOX_SCRIPT])
    assert out == "stopped but alive\nsleep status 0\nkilled while stopped: 137\nterminated once continued: 143\n"


BASH_SCRIPT = r"""
set -m
BB=/bin/busybox
$BB sleep 1.5 &
kill -STOP %1
$BB sleep 0.2
jobs
kill -CONT %1
$BB sleep 0.1
jobs
wait
echo "wait: $?"
$BB sleep 5 &
kill -TSTP %1
$BB sleep 0.2
jobs
kill -CONT %1
$BB sleep 0.2
jobs
kill %1
wait
echo "after kill: $?"
"""


def test_bash_job_control(tmp_path: Path) -> None:
    script = tmp_path / "jobs.sh"
    script.write_text(BASH_SCRIPT)
    out = same_as_native(["/bin/bash-static", str(script)], stdin=subprocess.DEVNULL)
    assert "[1]+  Stopped                 $BB sleep 1.5\n" in out.replace("/bin/busybox", "$BB")


# ------------------------------------------------------ real-time signals


def test_rt_signals_queue_in_order(rtsig: Path) -> None:
    out = same_as_native([str(rtsig), "queue"])
    assert " RTMIN+1/SI_QUEUE/1/self RTMIN+1/SI_QUEUE/2/self RTMIN+1/SI_QUEUE/3/self" in out


def test_sigwaitinfo_takes_each_instance(rtsig: Path) -> None:
    out = same_as_native([str(rtsig), "sigwait"])
    assert "from the child: RTMIN+0 code=SI_QUEUE value=77 from child=1\n" in out


def test_sigtimedwait_timeouts_and_errors(rtsig: Path) -> None:
    out = same_as_native([str(rtsig), "timedwait"])
    assert "200 ms: -1 EAGAIN\n" in out
    assert "interrupted: -1 EINTR alarms=1\n" in out


def test_sigqueueinfo_permissions(rtsig: Path) -> None:
    out = same_as_native([str(rtsig), "perm"])
    assert "SI_USER to another: -1 EPERM\n" in out
    assert "tg: SI_QUEUE to self: 0 \n" in out


def test_rlimit_sigpending(rtsig: Path) -> None:
    out = same_as_native([str(rtsig), "limit"])
    assert "some queued, then EAGAIN: 1\n" in out
    assert "then: RTMIN+2/SI_USER/-1/0\n" in out


def test_signalfd(prog_dir: Path) -> None:
    out = same_as_native([str(compile_prog("sigfd", prog_dir))])
    assert "  RTMIN+0 code=-1 pid=self uid-ok=1 int=30 ptr=30 status=0\n" in out
    assert "  CHLD code=1 pid=child uid-ok=1 int=0 ptr=0 status=3\n" in out
    assert "poll woken by the exit: 1\n" in out


# ---------------------------------------------------------------- strace


@pytest.mark.asyncio
async def test_strace_shows_stops_and_queued_signals(
    jobctl: Path, rtsig: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    trace = io.StringIO()
    async with Controller() as ctl:
        status = await run_program(ctl, str(jobctl), [str(jobctl), "blocked"], {}, strace=trace)
        assert status == 0
        text = trace.getvalue()
        assert "--- stopped by SIGSTOP ---" in text
        assert "ERESTART_RESTARTBLOCK (Interrupted by signal)" in text
        assert "restart_syscall(<... resuming interrupted clock_nanosleep ...>) = 0" in text
        assert "wait4(" in text and "[{WIFSTOPPED(s) && WSTOPSIG(s) == SIGSTOP}]" in text
        trace = io.StringIO()
        status = await run_program(ctl, str(rtsig), [str(rtsig), "sigwait"], {}, strace=trace)
    assert status == 0
    lines = trace.getvalue().splitlines()
    queued = [line for line in lines if line.startswith("rt_sigqueueinfo(")]
    assert queued and queued[0].startswith("rt_sigqueueinfo(1000, SIGRT_2, 0x")
    taken = [line for line in lines if line.startswith("rt_sigtimedwait([USR1 RT_2], ")]
    assert taken[0].endswith("{si_signo=SIGUSR1, si_code=SI_USER, si_pid=1000, si_uid=0}, NULL, 8) = 10")
    assert "{si_signo=SIGRT_2, si_code=SI_QUEUE, si_pid=1000" in taken[1] and "si_int=10," in taken[1]
    capfd.readouterr()
