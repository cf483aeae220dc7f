"""System V IPC between guests (shared memory, semaphores, message queues), compared
with native runs.

A run's guests have an IPC namespace of their own, so each native run happens in a
fresh IPC namespace too (``unshare --ipc``, which needs root): then even the ids
the programs print must match, and the host is left as it was found.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import compile_prog
from test_guest_run import guest

from aioumm.guest.runner import run_program
from aioumm.loop import Controller

IPC_CREAT = 0o1000
IPC_RMID = 0


def native_in_own_namespace(cmd: list[str]) -> subprocess.CompletedProcess[bytes]:
    """``cmd`` run natively in a new, empty IPC namespace (gone when it exits)."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.fail("comparing IPC with native runs needs unshare(1) and root (a fresh IPC namespace)")
    return subprocess.run([unshare, "--ipc", *cmd], capture_output=True, timeout=60)


def same_as_native(cmd: list[str]) -> subprocess.CompletedProcess[bytes]:
    want, got = native_in_own_namespace(cmd), guest(cmd)
    assert want.returncode == 0, want.stderr
    assert (got.returncode, got.stdout.decode(), got.stderr) == (want.returncode, want.stdout.decode(), want.stderr)
    return got


@pytest.fixture(scope="module")
def ipc_progs(prog_dir: Path) -> dict[str, Path]:
    return {name: compile_prog(name, prog_dir) for name in ("ipc_shm", "ipc_sem", "ipc_msg", "ipc_proc")}


def test_shared_memory_after_fork_by_key_and_its_errors(ipc_progs: dict[str, Path]) -> None:
    out = same_as_native([str(ipc_progs["ipc_shm"])]).stdout.decode()
    # The program did what it is about (not only the same as natively).
    assert 'parent sees "child was here"' in out
    assert 'parent reads "written by the exec\'d program"' in out
    assert "removed: key 0 segsz 8192 nattch 1 mode 1640" in out
    assert "shmat(id, (void *)0x7ffffffff000UL, 0) = -1 ENOMEM\n" in out


@pytest.mark.parametrize("mode", ["ping-pong", "full"])
def test_blocked_message_calls_are_woken_however_the_guests_interleave(prog_dir: Path, mode: str) -> None:
    """msgrcv on an empty queue (or msgsnd on a full one) may sleep only once its task has
    looked again: the other guest's call, answered before that task ran, must not be lost."""
    prog = str(compile_prog("ipc_msg_pingpong", prog_dir))
    out = same_as_native([prog] + (["full"] if mode == "full" else [])).stdout.decode()
    assert out == f"{'full queue' if mode == 'full' else 'ping-pong'}: 400 of 400 messages, child status 0\n"


def test_semaphores_order_parent_and_children(ipc_progs: dict[str, Path]) -> None:
    out = same_as_native([str(ipc_progs["ipc_sem"])]).stdout.decode()
    assert "parent: ncnt 1 zcnt 0; release 0; then value 0 ncnt 0; answer 0" in out
    assert "op(id, 1, -100, 0) = -1 EINTR" in out
    assert "op(id, 1, -100, 0) = -1 EIDRM" in out


def test_message_queue_ping_pong_and_selection(ipc_progs: dict[str, Path]) -> None:
    out = same_as_native([str(ipc_progs["ipc_msg"])]).stdout.decode()
    assert "parent got: 15 2 pong to ping 2" in out
    assert "receiver woken by removal exited 42" in out


def test_the_hosts_objects_are_not_the_guests(ipc_progs: dict[str, Path]) -> None:
    """A segment the host has under a key is invisible to a guest looking for that key."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    host_id = libc.shmget(0x5EED1, 4096, IPC_CREAT | 0o600)  # the key ipc_shm's exec'd part looks for
    assert host_id >= 0, os.strerror(ctypes.get_errno())
    try:
        cmd = [str(ipc_progs["ipc_shm"]), "by-key"]
        want, got = native_in_own_namespace(cmd), guest(cmd)
        assert (got.returncode, got.stdout) == (want.returncode, want.stdout) == (1, b"")
    finally:
        assert libc.shmctl(host_id, IPC_RMID, None) == 0


def test_proc_sysvipc_lists_the_runs_objects_not_the_hosts(ipc_progs: dict[str, Path]) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    host_id = libc.shmget(0x5EED2, 4096, IPC_CREAT | 0o600)
    assert host_id >= 0, os.strerror(ctypes.get_errno())
    try:
        out = same_as_native([str(ipc_progs["ipc_proc"])]).stdout.decode()
    finally:
        assert libc.shmctl(host_id, IPC_RMID, None) == 0
    assert str(0x5EED2) not in out
    # The removed segment (key private, SHM_DEST), its size, one attach and two pages resident.
    assert "  0 0 1640 10000 1 0 0 0 0 8192 0\n  0 1 600 4096 0 0 0 0 0 0 0\n" in out
    assert "  22136 0 600 9 2 0 0 0 0\n" in out  # two messages, 9 bytes
    assert out.count("/proc/sysvipc/shm:\n  key shmid perms size nattch uid gid cuid cgid rss swap\n/") == 2


@pytest.mark.asyncio
async def test_objects_left_behind_go_with_the_run(busybox: str, prog_dir: Path, tmp_path: Path) -> None:
    """A guest that exits attached and without IPC_RMID leaves nothing: the leak check
    sees no descriptor of a segment after the run; the strace lines name the calls."""
    src = tmp_path / "leave.c"
    src.write_text(
        "#include <sys/ipc.h>\n#include <sys/shm.h>\n#include <sys/sem.h>\n#include <sys/msg.h>\n"
        "int main(void) {\n"
        "  int id = shmget(0x1234, 100000, IPC_CREAT | 0600);\n"
        "  char *p = shmat(id, 0, 0); p[0] = 1;\n"
        "  shmget(IPC_PRIVATE, 4096, 0600);\n"
        "  semget(IPC_PRIVATE, 2, 0600);\n"
        "  msgget(0x99, IPC_CREAT | IPC_EXCL | 0640);\n"
        "  return shmctl(id, 1234, 0) == -1 ? 0 : 1;\n"
        "}\n"
    )
    prog = prog_dir / "ipc_leave"
    subprocess.run(["gcc", "-O1", "-static", "-o", str(prog), str(src)], check=True, capture_output=True)
    trace = io.StringIO()
    async with Controller() as ctl:
        status = await run_program(ctl, str(prog), [str(prog)], {}, strace=trace)
    assert status == 0
    lines = trace.getvalue().splitlines()
    assert "shmget(0x1234, 100000, IPC_CREAT|0600) = 0" in lines
    assert "shmget(IPC_PRIVATE, 4096, 0600) = 1" in lines
    assert "semget(IPC_PRIVATE, 2, 0600) = 0" in lines
    assert "msgget(0x99, IPC_CREAT|IPC_EXCL|0640) = 0" in lines
    assert any(line.startswith("shmat(0, NULL, 0) = 0x") for line in lines)
    assert "shmctl(0, 1234, NULL) = -1 EINVAL (Invalid argument)" in lines
