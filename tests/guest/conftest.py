"""Fixtures for the guest runner's tests: compiled guest programs and a fake stub."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from guest_fakes import FakeStub

from aioumm.guest.memory import AddressSpace, PhysMem

PROGS = Path(__file__).parent / "progs"
BUSYBOX = "/bin/busybox"


#: ``aioumm run`` as a command, with the Python that runs the suite.
RUN = [sys.executable, "-m", "aioumm", "run", "--"]


def both(cmd: list[str], **kw: object) -> tuple[subprocess.CompletedProcess[bytes], subprocess.CompletedProcess[bytes]]:
    """The native run and the guest run of ``cmd``."""
    want: subprocess.CompletedProcess[bytes] = subprocess.run(cmd, capture_output=True, timeout=60, **kw)  # type: ignore[call-overload]
    got: subprocess.CompletedProcess[bytes] = subprocess.run(RUN + cmd, capture_output=True, timeout=60, **kw)  # type: ignore[call-overload]
    return want, got


def same_as_native(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    """Same outputs and status as natively (a native death by signal N is the runner's 128 + N)."""
    want, got = both(cmd, **kw)
    status = 128 - want.returncode if want.returncode < 0 else want.returncode
    assert (got.returncode, got.stdout.decode(), got.stderr.decode()) == (
        status,
        want.stdout.decode(),
        want.stderr.decode(),
    )
    return got


def compile_prog(name: str, out_dir: Path, *flags: str) -> Path:
    """Compile ``progs/NAME.c`` statically (``gcc -O1 -static``, or ``-static-pie``)."""
    out = out_dir / (name + "".join(f.replace("-", "_") for f in flags))
    link = [] if "-static-pie" in flags else ["-static"]
    subprocess.run(
        ["gcc", "-O1", *link, *flags, "-o", str(out), str(PROGS / f"{name}.c")],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def prog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc (with static glibc, libc6-dev) is needed to build guest programs")
    return tmp_path_factory.mktemp("guest-progs")


@pytest.fixture(scope="session")
def hello(prog_dir: Path) -> Path:
    return compile_prog("hello", prog_dir)


@pytest.fixture(scope="session")
def hello_pie(prog_dir: Path) -> Path:
    return compile_prog("hello", prog_dir, "-static-pie")


@pytest.fixture(scope="session")
def busybox() -> str:
    if not os.access(BUSYBOX, os.X_OK):
        pytest.fail("busybox-static is required by the tests: apt-get install busybox-static")
    return BUSYBOX


@pytest.fixture
def fake_stub() -> FakeStub:
    return FakeStub()


@pytest.fixture
def mm(fake_stub: FakeStub) -> Iterator[AddressSpace]:
    from aioumm.guest.layout import default_layout

    space = AddressSpace(fake_stub, default_layout(), PhysMem(1 << 30))
    yield space
    space.close()
