"""Every way a stub can fail to start is reported with its own code and a readable reason."""

from __future__ import annotations

import struct

import pytest

from aioumm import abi
from aioumm.abi import StubExit
from aioumm.errors import BadArgument, SpawnError, StubDied
from aioumm.loop import Controller
from aioumm.stub import State

# Codes of steps that come after the init message arrived: each is made to fail for real
# at that step by the init message's inject_exit field.
INJECTABLE = [code for code in StubExit if code < StubExit.HANDLER_WAIT and code is not StubExit.INIT_READ]


@pytest.mark.asyncio
@pytest.mark.parametrize("code", INJECTABLE, ids=lambda c: c.name)
async def test_every_bootstrap_failure_code(code: StubExit) -> None:
    async with Controller() as ctl:
        with pytest.raises(SpawnError) as info:
            await ctl._spawn(inject_exit=code)
        assert info.value.exit_code == code
        assert code.name in str(info.value)
        assert code.explanation in str(info.value)
        assert not ctl.stubs
        # The controller is unharmed: the next stub starts.
        stub = await ctl.spawn()
        assert stub.state is State.STOPPED


@pytest.mark.asyncio
async def test_short_init_message() -> None:
    async with Controller() as ctl:
        with pytest.raises(SpawnError, match="INIT_READ") as info:
            await ctl._spawn(mangle_init=lambda b: b[:5])
        assert info.value.exit_code == StubExit.INIT_READ


@pytest.mark.asyncio
async def test_wrong_magic_and_version() -> None:
    async with Controller() as ctl:
        with pytest.raises(SpawnError, match="INIT_MAGIC"):
            await ctl._spawn(mangle_init=lambda b: struct.pack("<I", 0xBAD) + b[4:])
        with pytest.raises(SpawnError, match="INIT_VERSION"):
            await ctl._spawn(mangle_init=lambda b: b[:4] + struct.pack("<I", 999) + b[8:])


@pytest.mark.asyncio
async def test_handler_rejects_an_unknown_command() -> None:
    async with Controller() as ctl:
        stub = await ctl.spawn()
        assert stub._bridge is not None
        stub._bridge.hand_back(77)  # type: ignore[arg-type]
        status = await stub.wait_exit()
        assert status.code == StubExit.HANDLER_COMMAND
        assert "HANDLER_COMMAND" in status.describe()


@pytest.mark.asyncio
async def test_a_non_canonical_fs_base_is_refused_before_it_reaches_the_stub() -> None:
    async with Controller() as ctl:
        stub = await ctl.spawn()
        with pytest.raises(BadArgument, match="registers: fs_base: 0x1000000000000000"):
            stub.regs.fs_base = 1 << 60
        with pytest.raises(BadArgument, match="gs_base"):
            stub.regs.gs_base = -1
        # Forced into the page anyway (as a hostile page could), the handler refuses to load it and says where.
        stub._data.fs_base = 1 << 60
        with pytest.raises(StubDied, match=r"HANDLER_FSBASE.*stub_code\.c:\d+"):
            await stub.resume()


@pytest.mark.asyncio
async def test_stubs_die_with_their_controller_process() -> None:
    """PR_SET_PDEATHSIG: a stub whose controller dies is killed by the kernel."""
    import subprocess
    import sys

    code = (
        "import asyncio, os, sys\n"
        "from aioumm.loop import Controller\n"
        "async def main():\n"
        "    ctl = Controller(); await ctl.__aenter__()\n"
        "    stub = await ctl.spawn()\n"
        "    print(stub.pid, flush=True)\n"
        "    os._exit(0)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    pid = int(out)
    import time

    for _ in range(200):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break  # dead, waiting for init to reap it
        time.sleep(0.01)
    else:
        pytest.fail(f"stub {pid} outlived its controller")


def test_exit_codes_are_distinct_and_explained() -> None:
    values = [c.value for c in StubExit]
    assert len(values) == len(set(values))
    assert all(64 <= v < 128 for v in values)
    assert all(c.explanation and c.explanation[0].islower() for c in StubExit)
    assert abi.lib.STUB_EXIT_SECCOMP == StubExit.SECCOMP
