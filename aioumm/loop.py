"""The controller: owns the loop integration, the stub code, the stubs, and shutdown.

    async with Controller() as ctl:
        stub = await ctl.spawn()
        stub.mmap(0x10000, 4096, PROT_READ | PROT_WRITE, memfd, 0)
        await stub.flush()
        ...

``run(main())`` runs a coroutine on uvloop when it is installed and on the
default asyncio loop otherwise; the controller itself works on any asyncio
loop, including anyio's asyncio backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import resource
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aioumm.abi import CODE_IMAGE_FILE, CODE_SIZE, lib
from aioumm.errors import ControllerClosed
from aioumm.futex_bridge import SPIN_NS_DEFAULT, Notifications, spin_time
from aioumm.placement import Placement
from aioumm.stub import Stub

T = TypeVar("T")

_AT_HWCAP2 = 26
_HWCAP2_FSGSBASE = 1 << 1


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when installed, else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def auxv_value(key: int) -> int | None:
    with open("/proc/self/auxv", "rb") as f:
        raw = f.read()
    for k, v in struct.iter_unpack("<QQ", raw):
        if k == key:
            return int(v)
        if k == 0:
            break
    return None


@dataclass(frozen=True, slots=True)
class Features:
    """Kernel and CPU features the stubs use, probed once per process."""

    fsgsbase: bool
    mseal: bool
    rdtscp: bool = True

    @property
    def init_flags(self) -> int:
        return (
            (lib.STUB_INIT_FSGSBASE if self.fsgsbase else 0)
            | (lib.STUB_INIT_SEAL if self.mseal else 0)
            | (lib.STUB_INIT_RDTSCP if self.rdtscp else 0)
        )

    @classmethod
    def probe(cls) -> Features:
        hwcap2 = auxv_value(_AT_HWCAP2) or 0
        return cls(
            fsgsbase=bool(hwcap2 & _HWCAP2_FSGSBASE),
            mseal=lib.aioumm_probe_mseal() == 0,
            rdtscp=bool(lib.aioumm_has_rdtscp()),
        )


_features: Features | None = None


def features() -> Features:
    """The probed features (cached: the mseal probe seals one page for good)."""
    global _features
    if _features is None:
        _features = Features.probe()
    return _features


@dataclass(slots=True)
class Stats:
    """Counters over the controller's life."""

    spawned: int = 0
    round_trips: int = 0
    flushes: int = 0
    fds_passed: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Controller:
    """Spawns and owns stubs on the running event loop.

    Use as ``async with Controller() as ctl``.  On exit (normal, error or
    cancellation) every stub is killed and reaped and every descriptor
    closed.  ``spawn_timeout`` bounds the bootstrap; ``handler_timeout``
    bounds how long a stub may take over a batch before it is woken again
    and then killed.

    ``placement=True`` (or a ``Placement`` with other thresholds) pins the
    loop's thread to its CPU while the controller is open and keeps the
    stubs that report often on that CPU, the others on every CPU the thread
    had (see ``aioumm.placement``): on a virtual machine a round trip across
    CPUs that nobody spins for can cost ten times one within a CPU.
    Anything else the thread starts meanwhile inherits the pinned mask, so
    it is off by default.  ``placement="auto"`` (what ``aioumm run`` uses)
    turns it on only where the two sides cannot spin (``spins``): spinning
    answers a chatty stub across CPUs faster than sharing a CPU does.

    ``spin_ns`` bounds how long either side of a handoff may spin before it
    sleeps, when the stub and the loop's thread run on different CPUs
    (``aioumm.futex_bridge``, "Spinning", which says why 50 us by default);
    0 turns spinning off.
    """

    def __init__(
        self,
        *,
        spawn_timeout: float = 10.0,
        handler_timeout: float = 5.0,
        batch_wakes: bool = True,
        placement: bool | Literal["auto"] | Placement = False,
        spin_ns: int = SPIN_NS_DEFAULT,
    ) -> None:
        self.spawn_timeout = spawn_timeout
        if not (isinstance(placement, (bool, Placement)) or placement == "auto"):
            raise TypeError(f"placement must be True, False, 'auto' or a Placement, not {placement!r}")
        self._placement_wanted = placement
        #: The adaptive placement while open (None: off, or not possible on this machine).
        self.placement: Placement | None = None
        self.batch_wakes = batch_wakes
        self.spin_ns = spin_time(spin_ns)
        self._notifications: Notifications | None = None
        self.handler_timeout = handler_timeout
        self.stats = Stats()
        self._stubs: set[Stub] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False  # aclose has begun: no new stub may start
        self._code_fd = -1
        self.code_size = 0
        self.features = features()

    @property
    def spins(self) -> bool:
        """Whether the two sides of a handoff may spin across CPUs: ``spin_ns`` and a CPU with RDTSCP
        (without it a stub cannot tell which CPU it is on, and nobody spins)."""
        return self.spin_ns > 0 and self.features.rdtscp

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise ControllerClosed("the controller is not open: use `async with Controller() as ctl`")
        return self._loop

    @property
    def notifications(self) -> Notifications:
        """The epoll set through which every stub's hand-overs reach the loop."""
        if self._notifications is None:
            raise ControllerClosed("the controller is not open: use `async with Controller() as ctl`")
        return self._notifications

    @property
    def code_fd(self) -> int:
        return self._code_fd

    @property
    def cpus(self) -> frozenset[int]:
        """The CPUs this controller's stubs may run on (its thread's mask before placement pinned it)."""
        if self.placement is not None:
            return frozenset(self.placement.wide)
        return frozenset(os.sched_getaffinity(0))

    @property
    def stubs(self) -> frozenset[Stub]:
        """The stubs alive now."""
        return frozenset(self._stubs)

    async def __aenter__(self) -> Controller:
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._notifications = Notifications(self._loop, batch_wakes=self.batch_wakes, spin_ns=self.spin_ns)
        _raise_fd_limit()
        wanted = self._placement_wanted
        if wanted == "auto":
            wanted = not self.spins
        if wanted is not False:
            placement = Placement() if wanted is True else wanted
            self.placement = placement if placement.start(self._loop) else None
        try:
            self._code_fd = _sealed_code_memfd()
            self.code_size = os.fstat(self._code_fd).st_size
        except BaseException:
            # No __aexit__ follows a failed __aenter__: give the loop's thread its mask back now.
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def spawn(self) -> Stub:
        """Start a stub and return it once ready.

        A ready stub is stopped at its first report; its address space
        holds nothing but the stub pages.  Raises ``SpawnError`` (with the
        bootstrap's exit code explained) if it cannot start.
        """
        return await self._spawn()

    async def _spawn(self, *, inject_exit: int = 0, mangle_init: Callable[[bytes], bytes] | None = None) -> Stub:
        """``spawn`` with fault injection for tests: die at the step with exit code ``inject_exit``,
        or send ``mangle_init(init message)`` instead of the init message."""
        self.loop  # noqa: B018 - raises ControllerClosed outside the block
        if self._closing:
            # aclose kills only the stubs it knows of; one started now would outlive it.
            raise ControllerClosed("the controller is closing")
        stub = await Stub.spawn(self, inject_exit=inject_exit, mangle_init=mangle_init)
        if self._loop is None:  # closed while it was starting: aclose has killed it
            raise ControllerClosed("the controller closed while the stub was starting")
        self.stats.spawned += 1
        return stub

    def _adopt(self, stub: Stub) -> None:
        """Called by a stub as soon as it has a process: from then on ``aclose`` kills it."""
        self._stubs.add(stub)

    def _forget(self, stub: Stub) -> None:
        self._stubs.discard(stub)

    async def aclose(self) -> None:
        """Kill and reap every stub, close every descriptor (idempotent)."""
        if self._loop is None:
            return
        self._closing = True
        stubs = list(self._stubs)
        for stub in stubs:
            stub.kill()
        try:
            for stub in stubs:
                with contextlib.suppress(Exception):
                    await stub.wait_exit()
        finally:
            # Even when this close is cancelled (the stubs are killed already; a second
            # aclose reaps them), the loop's thread gets its mask back.
            if self.placement is not None:
                self.placement.stop()
                self.placement = None
        if self._code_fd >= 0:
            os.close(self._code_fd)
            self._code_fd = -1
        if self._notifications is not None:
            self._notifications.close()
            self._notifications = None
        self._loop = None


def _sealed_code_memfd() -> int:
    """The stub code image in a memfd sealed against every change: shared by all stubs."""
    with open(CODE_IMAGE_FILE, "rb") as f:
        image = f.read()
    if not 0 < len(image) <= CODE_SIZE:
        raise RuntimeError(f"{CODE_IMAGE_FILE}: {len(image)} bytes, expected 1..{CODE_SIZE}: rebuild the stub")
    fd = os.memfd_create("aioumm-stub-code", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, CODE_SIZE)
        os.pwrite(fd, image, 0)
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL,
        )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _raise_fd_limit() -> None:
    """Each stub costs the controller three descriptors; allow as many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
