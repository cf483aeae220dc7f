"""Stand-ins for the core's stub, for tests that need no child process."""

from __future__ import annotations

from aioumm.report import SIGCONTEXT_REGISTERS

# The core's register view has every sigcontext register and the FS base.
_REGISTERS = (*SIGCONTEXT_REGISTERS, "fs_base")


class FakeRegs:
    """A register file with the attributes the core's register view has."""

    def __init__(self) -> None:
        for name in _REGISTERS:
            setattr(self, name, 0)


class FakeStub:
    """Records the queued map records instead of running them."""

    pid = 4242

    def __init__(self) -> None:
        self.regs = FakeRegs()
        self.ops: list[tuple[object, ...]] = []

    def mmap(self, addr: int, length: int, prot: int, fd: int = -1, offset: int = 0, *, shared: bool = True) -> None:
        assert addr % 4096 == 0 and length % 4096 == 0 and length > 0 and offset % 4096 == 0
        self.ops.append(("mmap", addr, length, prot, fd, offset, shared))

    def munmap(self, addr: int, length: int) -> None:
        self.ops.append(("munmap", addr, length))

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        self.ops.append(("mprotect", addr, length, prot))

    async def flush(self) -> None:
        pass

    async def resume(self, answer: object = None) -> object:
        raise AssertionError("a fake stub never runs")

    def take(self) -> list[tuple[object, ...]]:
        ops, self.ops = self.ops, []
        return ops
