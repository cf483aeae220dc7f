"""The native halves of a pass and of a spin (futex_bridge.py), on pages made here: no stub needed."""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Iterator
from typing import Any

import pytest

from aioumm.abi import DATA_SIZE, Handoff, ffi, lib


class Pages:
    """Stub data pages in this process, each with an eventfd in one edge-triggered epoll set."""

    def __init__(self, n: int) -> None:
        self.epoll = select.epoll()
        self.buffers = [ffi.new("char[]", DATA_SIZE) for _ in range(n)]
        self.pages = [ffi.cast("struct stub_data *", b) for b in self.buffers]
        self.eventfds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(n)]
        for fd, page in zip(self.eventfds, self.pages, strict=True):
            assert lib.aioumm_watch(self.epoll.fileno(), fd, page) == 0
        self.ready = ffi.new("struct stub_data *[]", lib.AIOUMM_PASS_MAX)
        self.last = ffi.new("struct stub_data **")

    def notify(self, i: int, word: Handoff) -> None:
        """What a stub does when it hands over: the word, then its eventfd."""
        self.pages[i].handoff = word
        os.eventfd_write(self.eventfds[i], 1)

    def take(self, most: int = lib.AIOUMM_PASS_MAX) -> tuple[set[int], int | None]:
        """One look: the indexes of the pages handed over, and of the last one seen."""
        n = lib.aioumm_take_handovers(self.epoll.fileno(), self.ready, most, self.last)
        assert n >= 0, os.strerror(-n)
        found = {self.pages.index(self.ready[i]) for i in range(n)}
        last = None if self.last[0] == ffi.NULL else self.pages.index(self.last[0])
        return found, last

    def close(self) -> None:
        for fd in self.eventfds:
            os.close(fd)
        self.epoll.close()


@pytest.fixture
def pages() -> Iterator[Pages]:
    made = Pages(3)
    yield made
    made.close()


def test_a_look_hands_python_only_the_pages_the_controller_owns(pages: Pages) -> None:
    pages.notify(0, Handoff.CONTROLLER)
    pages.notify(1, Handoff.SLEEPING)  # handed over, then asleep: the controller's too
    pages.notify(2, Handoff.CHILD)  # a spare notification: its report was taken by spinning
    found, last = pages.take()
    assert found == {0, 1}
    assert last in {0, 1, 2}  # some notification was the last one seen, spare or not
    # Edge-triggered: nothing new was written, so nothing is seen again (the counters stay unread).
    assert pages.take() == (set(), None)
    pages.notify(2, Handoff.CONTROLLER)
    assert pages.take() == ({2}, 2)


def test_a_look_takes_at_most_what_it_is_asked_for_and_leaves_the_rest_ready(pages: Pages) -> None:
    for i in range(3):
        pages.notify(i, Handoff.CONTROLLER)
    first, _ = pages.take(2)
    second, _ = pages.take()
    assert len(first) == 2 and len(second) == 1 and first | second == {0, 1, 2}


def test_a_closed_epoll_set_is_an_errno_not_a_crash(pages: Pages) -> None:
    fd = os.dup(pages.epoll.fileno())
    os.close(fd)
    assert lib.aioumm_take_handovers(fd, pages.ready, 4, pages.last) == -errno.EBADF


def _spin(page: Any, budget_ns: int = 1_000_000) -> int:
    return int(lib.aioumm_spin_for_report(page, budget_ns))


@pytest.fixture
def here() -> Iterator[int]:
    """The CPU this thread is pinned to for the test (a spin compares it with the stub's)."""
    mask = os.sched_getaffinity(0)
    cpu = lib.aioumm_current_cpu()
    os.sched_setaffinity(0, {cpu})
    yield cpu
    os.sched_setaffinity(0, mask)


def test_a_spin_waits_only_for_a_page_the_stub_holds(pages: Pages, here: int) -> None:
    page = pages.pages[0]
    page.report_cpu = (here + 1) % 4096  # a CPU this thread is not on
    for word in (Handoff.CONTROLLER, Handoff.SLEEPING):
        page.handoff = word
        assert _spin(page) == lib.AIOUMM_SPUN_ALREADY  # the controller's already: nothing to wait for
    page.handoff = 0xDEAD  # written by guest code: no state at all
    assert _spin(page) == lib.AIOUMM_SPUN_NOT_RUNNING
    page.handoff = Handoff.CHILD
    assert _spin(page) == lib.AIOUMM_SPUN_TIMEOUT  # the stub computes: the budget runs out


def test_a_spin_never_waits_for_a_stub_on_this_cpu_or_one_that_cannot_tell(pages: Pages, here: int) -> None:
    page = pages.pages[0]
    page.handoff = Handoff.CHILD
    for cpu in (here, lib.STUB_CPU_UNKNOWN):
        page.report_cpu = cpu
        # A budget of a whole second: returning at all shows no spin was tried.
        assert _spin(page, 1_000_000_000) == lib.AIOUMM_SPUN_NOT_HERE
