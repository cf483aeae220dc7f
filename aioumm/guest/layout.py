"""Where things go in a guest address space.

The stub pages sit at a fixed address the core chooses (``abi.STUB_START`` ..
``abi.STUB_END``); the guest owns every other user address.  This module decides
the rest of the layout around them:

* Programs: an ``ET_EXEC`` image goes where its headers say; a static-PIE image
  (``ET_DYN``) is loaded at :attr:`Layout.pie_base`, the address Linux itself uses
  for position-independent executables (no randomisation: runs are repeatable).
* The break starts on the page after the highest loaded segment.
* The stack sits directly *below* the stub pages, with one unmapped guard page
  between its top and the stub.  Putting it below (rather than in whatever room the
  core leaves above the stub) keeps the guest's usable space one contiguous range
  ``[mmap_min, stub_start)`` with the stub pages as its top fence: the top-down
  ``mmap`` search and the stack reserve never have to step over the stub, and the
  layout does not depend on how much space, if any, lies above it.  The stack grows
  down, away from the stub; an upward overrun of the initial stack (argv/env
  strings) hits the guard page and faults instead of scribbling on the stub's data.
* ``mmap`` without a usable hint searches top-down from :attr:`Layout.mmap_top`, a
  gap below the stack reserve, like Linux's ``mmap_base``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aioumm import abi

__all__ = ["PAGE_SIZE", "Layout", "default_layout", "page_down", "page_up"]

PAGE_SIZE: int = abi.PAGE_SIZE
PAGE_MASK = PAGE_SIZE - 1

MiB = 1 << 20
GiB = 1 << 30


def page_down(x: int) -> int:
    """Round ``x`` down to a page boundary."""
    return x & ~PAGE_MASK


def page_up(x: int) -> int:
    """Round ``x`` up to a page boundary."""
    return (x + PAGE_MASK) & ~PAGE_MASK


@dataclass(frozen=True)
class Layout:
    """The fixed landmarks of one guest address space (see the module docstring)."""

    stub_start: int = abi.STUB_START
    stub_end: int = abi.STUB_END
    task_top: int = abi.TASK_TOP
    #: The whole stack reserve is mapped up front (sparse: a page costs memory only
    #: once touched), so there is no grow-on-fault; 8 MiB is Linux's usual RLIMIT_STACK.
    stack_size: int = 8 * MiB
    #: Linux's default ``vm.mmap_min_addr``; nothing is mapped below it.
    mmap_min: int = 0x10000
    #: Where a static-PIE image is loaded (Linux's ``ELF_ET_DYN_BASE`` on x86-64).
    pie_base: int = 0x555555554000

    def __post_init__(self) -> None:
        if not (0 < self.stub_start < self.stub_end <= self.task_top):
            raise ValueError("stub area must lie inside the user address space")
        if self.stack_bottom - self.mmap_gap <= self.mmap_min + 256 * MiB:
            raise ValueError("no room below the stub pages for a guest")

    @property
    def stack_top(self) -> int:
        """One past the highest stack byte: a guard page below the stub pages."""
        return page_down(self.stub_start) - PAGE_SIZE

    @property
    def stack_bottom(self) -> int:
        """Lowest address of the stack reserve."""
        return self.stack_top - self.stack_size

    @property
    def mmap_gap(self) -> int:
        """Room kept free between the stack reserve and :attr:`mmap_top`."""
        return 128 * MiB

    @property
    def mmap_top(self) -> int:
        """Top of the region the ``mmap`` search hands out, top-down."""
        return self.stack_bottom - self.mmap_gap

    def touches_stub(self, start: int, end: int) -> bool:
        """True if ``[start, end)`` overlaps the stub pages."""
        return start < self.stub_end and self.stub_start < end

    def user_range_ok(self, start: int, end: int) -> bool:
        """True if ``[start, end)`` is inside user space and clear of the stub pages."""
        return 0 <= start < end <= self.task_top and not self.touches_stub(start, end)


def default_layout() -> Layout:
    """The layout for stubs of the running core."""
    return Layout()
