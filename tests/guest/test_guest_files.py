"""Files in the guest runner, against native runs: access modes, FIFOs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import compile_prog

RUN = [sys.executable, "-m", "aioumm", "run", "--"]


def same_as_native(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    """Same outputs and status as natively (a native death by signal N is the runner's 128 + N)."""
    want: subprocess.CompletedProcess[bytes] = subprocess.run(cmd, capture_output=True, timeout=60, **kw)  # type: ignore[call-overload]
    got: subprocess.CompletedProcess[bytes] = subprocess.run(RUN + cmd, capture_output=True, timeout=60, **kw)  # type: ignore[call-overload]
    status = 128 - want.returncode if want.returncode < 0 else want.returncode
    assert (got.returncode, got.stdout.decode(), got.stderr.decode()) == (
        status,
        want.stdout.decode(),
        want.stderr.decode(),
    )
    return got


def test_reads_and_writes_check_the_access_mode_and_the_count(prog_dir: Path, tmp_path: Path) -> None:
    # A read of a pipe's write end is EBADF, not a wait; a write to its read end
    # never reaches the pipe; a negative count is EFAULT; /dev/null has positions.
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_bytes(b"data")
    got = same_as_native([str(compile_prog("rw_modes", prog_dir)), "fifo", "file"], cwd=tmp_path)
    assert b"read of a write end          -1 EBADF" in got.stdout
