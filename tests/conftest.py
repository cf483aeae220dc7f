"""Shared fixtures: both event loops for every async test, and a leak check for every test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import uvloop


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs twice: on asyncio's default loop and on uvloop (a test of what
    only asyncio's loop does, marked ``asyncio_loop_only``, on that one)."""
    if item.get_closest_marker("asyncio_loop_only") is not None:
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "asyncio_loop_only: a test of asyncio's own loop, not run on uvloop")


def _warm_up_loops() -> None:
    """Run each loop once: uvloop opens a process-wide pipe on first use and keeps it.

    Doing that before any test keeps it out of the leak check's counts.
    """
    for factory in (asyncio.new_event_loop, uvloop.new_event_loop):
        loop = factory()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


_warm_up_loops()


def _default_interrupts() -> None:
    """Give SIGINT and SIGQUIT their defaults back if whoever started the suite ignored them.

    A shell starts a background job without job control with both ignored, and an ignored
    signal stays ignored through fork and exec: the programs the tests run (natively and
    under ``aioumm run``, which keeps an inherited ignore as exec does) would never see the
    SIGINT the tests send them.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)


_default_interrupts()


def _open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the directory's own descriptor
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


def _children() -> list[str]:
    """Every child process of this one, with its state (Z = zombie)."""
    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids = f.read().split()
        except FileNotFoundError:
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
            except FileNotFoundError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            state = stat[stat.rindex(")") + 2]
            out.append(f"{pid} {comm} state {state}")
    return out


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves a child process, a zombie or a descriptor behind."""
    before = _open_fds()
    yield
    leaked = {fd: target for fd, target in _open_fds().items() if before.get(fd) != target}
    children = _children()
    problems = []
    if leaked:
        problems.append(f"leaked descriptors: {leaked}")
    if children:
        problems.append(f"child processes left behind: {children}")
    if problems:
        pytest.fail("; ".join(problems))
