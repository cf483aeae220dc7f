"""The end of a run: guests left running by the first one, compared with native runs."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import compile_prog
from test_guest_run import RUN, guest, native, same_as_native

from aioumm.guest.runner import run_program
from aioumm.loop import Controller


def test_a_background_job_outlives_its_shell(busybox: str) -> None:
    """The second line comes after the shell exited; a caller reading to EOF gets both."""
    got = same_as_native([busybox, "sh", "-c", "(sleep 0.3; echo late) & echo early"])
    assert got.stdout == b"early\nlate\n"


def test_the_status_is_the_first_guests(busybox: str) -> None:
    got = same_as_native([busybox, "sh", "-c", "(sleep 0.2; echo child; exit 3) & exit 5"])
    assert (got.returncode, got.stdout) == (5, b"child\n")


def test_orphans_that_fork_again_are_waited_for(busybox: str) -> None:
    script = "(sleep 0.1; (sleep 0.2; echo grandchild) & echo child) & echo parent"
    same_as_native([busybox, "sh", "-c", script])


def test_kill_leftovers_ends_the_run_with_the_first_guest(busybox: str) -> None:
    cmd = [busybox, "sh", "-c", "(sleep 5; echo late) & echo early"]
    want = native(cmd)
    start = time.monotonic()
    got = subprocess.run([*RUN[:-1], "--kill-leftovers", "--", *cmd], capture_output=True, timeout=60)
    assert time.monotonic() - start < 4
    # What the shell itself printed before it exited, and its status; the job is gone.
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout.split(b"\n")[0] + b"\n", b"")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_runner_ends_the_guests_left(busybox: str, sig: signal.Signals) -> None:
    proc = subprocess.Popen([*RUN, busybox, "sh", "-c", "sleep 30 & echo started"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        time.sleep(0.2)  # the shell has exited: only the sleep is left
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out) == (0, b"")


@pytest.mark.asyncio
async def test_run_program_waits_or_kills_as_asked(busybox: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = f"(sleep 0.3; echo late >> {out}) & echo early >> {out}"
    native([busybox, "sh", "-c", script])
    want = out.read_bytes()
    out.unlink()
    async with Controller() as ctl:
        assert await run_program(ctl, busybox, [busybox, "sh", "-c", script], {}) == 0
        assert out.read_bytes() == want
        out.unlink()
        assert await run_program(ctl, busybox, [busybox, "sh", "-c", script], {}, wait_for_all=False) == 0
    time.sleep(0.5)
    assert out.read_bytes() == want.split(b"\n")[0] + b"\n"


def test_comm_after_exec_of_proc_self_exe(prog_dir: Path) -> None:
    """Linux names the new program after the path it was executed by: ``exe``."""
    prog = compile_prog("reexec_comm", prog_dir)
    want = native([str(prog)])
    got = guest([str(prog)])
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
    assert b"comm=exe" in got.stdout


def test_a_script_whose_interpreter_is_missing(busybox: str, tmp_path: Path) -> None:
    """Each shell's message and status for a ``#!`` naming no file, as natively."""
    for name, line in (("missing", "#!/nonexistent/interpreter"), ("relative", "#!no-such-interpreter -x")):
        script = tmp_path / name
        script.write_text(f"{line}\necho never\n")
        script.chmod(0o755)
    cmd = f"cd {tmp_path}; ./missing; echo $?; ./relative a; echo $?; PATH={tmp_path}; missing; echo $?"
    for shell in ([busybox, "sh"], ["/bin/bash-static"]):
        got = same_as_native([*shell, "-c", cmd])
        assert got.stdout == b"127\n127\n127\n", shell
