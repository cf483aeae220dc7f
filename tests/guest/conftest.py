"""Fixtures for the guest runner's tests: compiled guest programs and a fake stub."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from guest_fakes import FakeStub

from aioumm.guest.memory import AddressSpace, PhysMem

PROGS = Path(__file__).parent / "progs"
BUSYBOX = "/bin/busybox"


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
