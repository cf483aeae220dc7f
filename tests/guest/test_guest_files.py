"""Files in the guest runner, against native runs: access modes, FIFOs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import RUN, compile_prog, same_as_native

from aioumm.guest import files
from aioumm.guest.runner import run_program
from aioumm.loop import Controller


def test_reads_and_writes_check_the_access_mode_and_the_count(prog_dir: Path, tmp_path: Path) -> None:
    # A read of a pipe's write end is EBADF, not a wait; a write to its read end
    # never reaches the pipe; a negative count is EFAULT; /dev/null has positions.
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_bytes(b"data")
    got = same_as_native([str(compile_prog("rw_modes", prog_dir)), "fifo", "file"], cwd=tmp_path)
    assert b"read of a write end          -1 EBADF" in got.stdout


def test_a_buffer_that_runs_into_a_hole_is_used_up_to_it(prog_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(bytes(8192))
    got = same_as_native([str(compile_prog("rw_buffers", prog_dir)), "file"], cwd=tmp_path)
    assert b"read up to a hole              100 \n" in got.stdout
    assert b"read at the end, bad buffer    0 \n" in got.stdout


def test_a_pipe_write_cut_short_answers_what_it_wrote(prog_dir: Path) -> None:
    # Neither EINTR nor a restart that would write the data again.
    got = same_as_native([str(compile_prog("pipe_partial", prog_dir))])
    assert got.stdout.count(b" 65536 ") == 2


def test_opening_a_fifo_waits_for_its_other_end(prog_dir: Path, tmp_path: Path) -> None:
    # Each side waits for the other (its partner, another guest, runs meanwhile);
    # O_NONBLOCK, O_RDWR, a signal and SA_RESTART act as on Linux.
    os.mkfifo(tmp_path / "fifo")
    got = same_as_native([str(compile_prog("fifo_open", prog_dir)), "fifo"], cwd=tmp_path)
    assert b"writer waits for a reader            ok\nwrote 1\n" in got.stdout


def test_a_shell_writes_to_a_fifo_its_background_job_reads(busybox: str, tmp_path: Path) -> None:
    for script in (
        "cat f & echo hi > f; wait; echo done",
        "echo hi > f & cat f; wait; echo done",
        "{ read a; read b; echo $b $a; } < f & { echo one; echo two; } > f; wait",
    ):
        got = same_as_native([busybox, "sh", "-c", "rm -f f; mkfifo f; " + script], cwd=tmp_path)
        assert got.stdout in (b"hi\ndone\n", b"two one\n")


def test_a_fifo_end_outside_the_run_is_found(busybox: str, tmp_path: Path) -> None:
    # The guest's partner is a host process that comes once the guest waits: a
    # reader (found by trying again), then a writer that holds the FIFO open a
    # while before it writes.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with subprocess.Popen([*RUN, busybox, "sh", "-c", f"echo to host > {fifo}"]) as guest:
        time.sleep(1)
        reader = subprocess.run([busybox, "cat", str(fifo)], capture_output=True, timeout=60)
        assert (guest.wait(timeout=60), reader.stdout) == (0, b"to host\n")
    script = f"sleep 1; exec 3> {fifo}; sleep 0.2; echo from host >&3"
    with subprocess.Popen([busybox, "sh", "-c", script]) as writer:
        got = subprocess.run([*RUN, busybox, "cat", str(fifo)], capture_output=True, timeout=60)
        assert (got.returncode, got.stdout, writer.wait(timeout=60)) == (0, b"from host\n", 0)


@pytest.mark.asyncio
async def test_fifo_waits_on_one_loop_leave_nothing_behind(
    prog_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Two runs at once on one loop, each waiting in FIFO opens (and cut short by
    # signals): every count of a guest's FIFO end goes when its description does.
    prog = str(compile_prog("fifo_open", prog_dir))
    for name in ("a", "b"):
        os.mkfifo(tmp_path / name)
    async with Controller() as ctl:
        runs = [run_program(ctl, prog, [prog, name], {}, cwd=str(tmp_path)) for name in ("a", "b")]
        assert await asyncio.gather(*runs) == [0, 0]
    assert files._FIFOS == {}
    assert capfd.readouterr().out.count("SA_RESTART reader                    ok\n") == 2


# util-linux flock(1), a dynamically linked program (busybox's has no flock applet).
FLOCKS = """
bb=/bin/busybox
fl=/usr/bin/flock
$fl -n lk -c "$fl -n lk true; echo 'a second open, exclusive:' \\$?"
$fl -s lk -c "$fl -s -n lk echo 'a second open, shared:' 0"
exec 3>lk
$fl 3
$bb sh -c "$fl -n 3; echo 'the same open file, forked:' \\$?"
$fl -u 3
($fl lk $bb sh -c "$bb sleep 0.3; echo first done") &
$bb sleep 0.1
$fl lk echo then the second
wait
"""


def test_flock_locks_belong_to_the_open_file(busybox: str, tmp_path: Path) -> None:
    """flock answered ENOSYS: the lock of another open of the file is busy (and waited for),
    the one of the same open file, shared by a fork, is not."""
    (tmp_path / "locks.sh").write_text(FLOCKS)
    got = same_as_native([busybox, "sh", "locks.sh"], cwd=tmp_path)
    assert got.stdout == (
        b"a second open, exclusive: 1\n"
        b"a second open, shared: 0\n"
        b"the same open file, forked: 0\n"
        b"first done\n"
        b"then the second\n"
    )


def test_getcwd_of_a_removed_directory_is_enoent(busybox: str, tmp_path: Path) -> None:
    got = same_as_native([busybox, "sh", "-c", "mkdir z; cd z; rmdir ../z; /bin/busybox pwd -P; echo $?"], cwd=tmp_path)
    assert got.stdout == b"1\n" and b"No such file or directory" in got.stderr
