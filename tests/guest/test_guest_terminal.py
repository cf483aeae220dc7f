"""Guests on a terminal: its foreground process group and session, interactive shells.

Each program runs natively and under ``aioumm run`` with a pseudo-terminal as
its controlling terminal, and both runs must print the same and exit alike.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import subprocess
import termios
import time
from pathlib import Path

import pytest
from conftest import RUN, compile_prog

BASH = "/bin/bash-static"


def on_terminal(
    cmd: list[str], keys: bytes = b"", after: float = 0.0, timeout: float = 30.0, cwd: Path | None = None
) -> tuple[int, bytes]:
    """Run ``cmd`` as a session leader whose controlling terminal is a new pseudo-terminal,
    typing ``keys`` there ``after`` seconds; return its status and everything it wrote there.
    A run that outlasts ``timeout`` fails."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            cwd=cwd,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        slave = -1
        out = b""
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            if keys and time.monotonic() >= start + after:
                os.write(master, keys)
                keys = b""
            if select.select([master], [], [], 0.1)[0]:
                try:
                    got = os.read(master, 65536)
                except OSError:  # EIO: every end of the terminal is closed
                    break
                if not got:
                    break
                out += got
            elif proc.poll() is not None:
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(deadline - time.monotonic(), 0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its whole group: the shell and what it started
            proc.wait()
            pytest.fail(f"{cmd} still ran after {timeout} s; it wrote {out!r}")
        return proc.returncode, out
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def same_on_terminal(cmd: list[str], busybox: str) -> bytes:
    """``cmd`` natively and as a guest, each started by a shell without job control on a
    terminal of its own (the guest's place: in the group and session of what started it)."""
    shell = [busybox, "sh", "-c", '"$@"; exit $?', "sh"]
    want = on_terminal(shell + cmd)
    got = on_terminal(shell + RUN + cmd)
    assert got == want
    return got[1]


@pytest.fixture(scope="module")
def tty_pgrp(prog_dir: Path) -> Path:
    return compile_prog("tty_pgrp", prog_dir)


def test_the_terminal_foreground_group_is_the_guests_own(tty_pgrp: Path, busybox: str) -> None:
    """The host's answer named a host group: every interactive shell thought it ran in the
    background, stopped itself with SIGTTIN and never went on."""
    out = same_on_terminal([str(tty_pgrp)], busybox).decode()
    assert "foreground is mine: 1\r\n" in out
    assert "TIOCGSID: ok, is my session: 1\r\n" in out
    assert "TIOCGPGRP of a pipe: ENOTTY\r\n" in out
    assert "tcsetpgrp(job): ok\r\nforeground is the job's: 1\r\n" in out
    assert "job: foreground is mine: 1\r\n" in out
    assert "job: new session: ok, TIOCGPGRP there: ENOTTY\r\n" in out
    assert "tcsetpgrp(no such group): ESRCH\r\ntcsetpgrp(-1): EINVAL\r\n" in out
    assert "foreground is mine again: 1\r\n" in out
    # The group the first guest started in has no guest left in it, and still exists.
    assert "tcsetpgrp(the outer group): ok, setpgid(the outer group): ok\r\n" in out


def test_a_guest_started_in_the_background_sees_another_group_in_the_foreground(
    tty_pgrp: Path, busybox: str, tmp_path: Path
) -> None:
    """With ``aioumm run`` itself a background job (its shell keeps the terminal), the guests
    see a foreground group that is not theirs (0: one outside their pid namespace)."""
    lines = []
    for runner in ("", " ".join(RUN) + " "):
        script = f"set -m; {runner}{tty_pgrp} > out 2>&1 & wait; cat out"
        rc, out = on_terminal([busybox, "sh", "-c", script], cwd=tmp_path)
        assert rc == 0
        lines.append(out.splitlines()[0])
    assert lines == [b"foreground is mine: 0"] * 2


def test_an_interactive_bash_runs_its_commands(busybox: str) -> None:
    # Each command is a job of its own, given the terminal while it runs.
    out = same_on_terminal([BASH, "--norc", "-i", "-c", "echo ok; sleep 0.1; (exit 2); echo $?; exit 3"], busybox)
    assert out.startswith(b"ok\r\n2\r\n")


def test_an_interactive_busybox_shell_runs_its_commands(busybox: str) -> None:
    out = same_on_terminal([busybox, "sh", "-i", "-c", "echo ok $((6 * 7)); busybox sleep 0.1; exit 4"], busybox)
    assert out.endswith(b"ok 42\r\n")


def test_ctrl_c_interrupts_the_job_in_the_foreground() -> None:
    """The terminal's SIGINT reaches the controller, which sends it on to the foreground group
    the guests chose: the job, not the interactive shell that made it a group of its own."""
    # (A non-interactive shell's background sleep ignores SIGINT: the trap ends it.)
    job = 'trap "echo job: interrupted; kill \\$!; exit 7" INT; /bin/busybox sleep 20 & wait'
    cmd = [BASH, "--norc", "-i", "-c", f"/bin/busybox sh -c '{job}'; echo after $?"]
    want = on_terminal(cmd, b"\x03", after=1.0)
    got = on_terminal(RUN + cmd, b"\x03", after=1.0)
    assert got == want
    assert want[1].endswith(b"job: interrupted\r\nafter 7\r\n")
