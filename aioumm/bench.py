"""``aioumm bench``: aioumm measured side by side with its references (``benchmarks/README.md``).

One run builds the reference programs of ``benchmarks/refs`` and the static
test programs of ``benchmarks/progs``, runs every reference and measures
aioumm itself in this process (on uvloop when installed), then prints one
table with every figure and each aioumm figure's ratio to each reference.
``--json FILE`` writes the figures (schema: ``benchmarks/README.md``),
``--plot FILE.png`` draws the round trips of every reference, the distribution of
aioumm's round trips and its scaling curve (matplotlib, from the ``bench`` extra).

What is measured, and how each figure is defined:

* round trip, one stub: the guest asks with syscall 500 (RDI = i) and checks
  the answer 3*i+1; a sample is the time between two consecutive reports the
  controller receives, so it holds the controller's own work on the report.
  The references time the same ping-pong (most of them from the guest side,
  around the ``syscall`` instruction: in a strict ping-pong the two agree).
  Three placements: everything pinned to CPU 0; unpinned; and apart, the
  controller alone on CPU 0 and the guest on the other CPUs (where a
  spinning controller and stub answer each other without a wake-up).
* aggregate round trips per second with K stubs on one loop, and the
  per-round-trip latency each stub saw (p50/p99), against ``c_stub --stubs
  K`` (the same protocol driven from C: the floor);
* a flush of 64 one-page mmaps spread over 4 memfds (one sendmsg), timed
  from queueing the first record to the batch result;
* memory per idle stub (the stub's VmRSS + VmPTE, plus the controller's own
  RSS growth per stub over 256 idle stubs);
* wall time of whole programs under ``aioumm run``, natively and under
  ``strace -f``.

Nothing here changes how aioumm runs: the figures are what a user gets.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import functools
import importlib
import importlib.util
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aioumm.loop import Controller, new_event_loop
from aioumm.report import Report
from aioumm.stub import Stub

USAGE = 2

SECTIONS = ("roundtrip_ns", "throughput_rt_per_s", "flush_ns", "stub_memory_kib", "programs_s")
REFERENCES = ("aioumm", "c_stub", "c_ptrace", "c_unotify", "python_ptrace", "native", "strace")
# Where the controller and what it drives run: all on CPU 0; wherever the scheduler puts them;
# and apart, the controller alone on CPU 0 and the rest on the other CPUs.
PLACEMENTS = {"same": "same_core", "none": "unpinned", "apart": "apart"}
# A flush waits for 64 mmaps, longer than any spin: apart would only add a cross-CPU wake-up.
FLUSH_PLACEMENTS = {pin: PLACEMENTS[pin] for pin in ("same", "none")}

# The guest: the ASKER loop of the tests, assembled once by hand (as in c_stub.c).
#   xor %r12d,%r12d; 1: mov $500,%eax; mov %r12,%rdi; syscall
#   lea 1(%r12,%r12,2),%rbx; cmp %rbx,%rax; jne 2f; inc %r12; jmp 1b; 2: ud2
ASKER = bytes.fromhex("4531e4 b8f4010000 4c89e7 0f05 4b8d5c6401 4839d8 7505 49ffc4 ebe7 0f0b")
GUEST_SYSCALL = 500
CODE_ADDR = 0x10000
STACK_TOP = 0x200000
STACK_SIZE = 0x10000
PROT_R, PROT_W, PROT_X = 1, 2, 4

FLUSH_PAGES = 64
FLUSH_FDS = 4
FLUSH_ADDR = 0x40000000
PAGE = 4096

MEMORY_STUBS = 256
SPAWN_CHUNK = 128  # stubs started at once: bounds the burst of forks and descriptors
REF_TIMEOUT = 300.0


class BenchError(Exception):
    """A measurement could not be made; the message says why."""


@dataclass(frozen=True, slots=True)
class Settings:
    """How much work each measurement does."""

    n_c: int  # round trips for the C references
    n_python_ptrace: int
    n_aioumm: int
    n_flush_c: int
    n_flush_aioumm: int
    stub_counts: tuple[int, ...]
    skipped_counts: tuple[int, ...]
    rt_total: int  # round trips per throughput figure, spread over the stubs
    program_repeats: int
    file_mb: int
    compute_rounds: int  # at least; see compute_native_s
    compute_native_s: float | None  # rounds are raised until compute takes about this long natively
    pipeline_lines: int  # lines the busybox pipeline's shell loop writes (one fork-free echo each)

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        if quick:
            return cls(
                n_c=20000,
                n_python_ptrace=2000,
                n_aioumm=20000,
                n_flush_c=1000,
                n_flush_aioumm=500,
                stub_counts=(1, 16, 256),
                skipped_counts=(1024,),
                rt_total=30000,
                program_repeats=1,
                file_mb=20,
                compute_rounds=10,
                compute_native_s=None,
                pipeline_lines=300,
            )
        return cls(
            n_c=100000,
            n_python_ptrace=20000,
            n_aioumm=100000,
            n_flush_c=10000,
            n_flush_aioumm=3000,
            stub_counts=(1, 16, 256, 1024),
            skipped_counts=(),
            rt_total=300000,
            program_repeats=5,
            file_mb=20,
            compute_rounds=40,
            # Start-up (see busybox_true) stays small next to it, on a fast machine as on a slow one.
            compute_native_s=2.0,
            pipeline_lines=2000,
        )


# --------------------------------------------------------------------- results


class Results:
    """The figures, section -> reference -> figure (nested dicts of numbers).

    A figure that could not be measured is ``{"unavailable": reason}`` at the
    place the number would have been, so the JSON always says why.
    """

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {s: {r: {} for r in REFERENCES} for s in SECTIONS}
        #: aioumm's own round-trip samples (ns) by label, for the plot's distributions (not in the JSON).
        self.samples: dict[str, list[int]] = {}

    def put(self, section: str, ref: str, path: tuple[str, ...], value: Any) -> None:
        node = self.data[section][ref]
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value

    def unavailable(self, section: str, ref: str, path: tuple[str, ...], reason: str) -> None:
        if path:
            self.put(section, ref, path, {"unavailable": reason})
        else:
            self.data[section][ref] = {"unavailable": reason}

    def get(self, section: str, ref: str, *path: str) -> float | None:
        node: Any = self.data[section].get(ref)
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return float(node) if isinstance(node, int | float) else None

    def finish(self) -> None:
        """Give every reference left empty in a section its reason."""
        for section, refs in self.data.items():
            for ref, node in refs.items():
                if not node:
                    refs[ref] = {"unavailable": _NOT_APPLICABLE.get((section, ref), "not measured")}


# Why a reference has no figure in a section, when that is by its nature.
_SINGLE = "drives exactly one guest: only its one-stub figures (from its round-trip runs)"
_NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("roundtrip_ns", "strace"): "strace traces whole programs; it cannot answer a syscall",
    ("throughput_rt_per_s", "native"): "no controller: a native syscall has no round trip to count",
    ("throughput_rt_per_s", "strace"): "strace traces whole programs; it cannot answer a syscall",
    ("flush_ns", "c_ptrace"): "no batched mmap in this reference",
    ("flush_ns", "c_unotify"): "no batched mmap in this reference",
    ("flush_ns", "python_ptrace"): "no batched mmap in this reference",
    ("flush_ns", "native"): "no batched mmap in this reference",
    ("flush_ns", "strace"): "no batched mmap in this reference",
    ("stub_memory_kib", "c_stub"): "the same stub binary as aioumm's: its figure is aioumm's stub_rss + stub_pte",
    ("stub_memory_kib", "c_ptrace"): "no stub process",
    ("stub_memory_kib", "c_unotify"): "no stub process",
    ("stub_memory_kib", "python_ptrace"): "no stub process",
    ("stub_memory_kib", "native"): "no stub process",
    ("stub_memory_kib", "strace"): "no stub process",
    ("programs_s", "c_stub"): "runs a fixed guest loop, not programs",
    ("programs_s", "c_ptrace"): "runs a fixed guest loop, not programs",
    ("programs_s", "c_unotify"): "runs a fixed guest loop, not programs",
    ("programs_s", "python_ptrace"): "runs a fixed guest loop, not programs",
}


def percentile(sorted_samples: list[int], pct: int) -> int:
    """Nearest-rank percentile, as the C references compute it (common.h)."""
    rank = (len(sorted_samples) * pct + 99) // 100
    return sorted_samples[max(rank - 1, 0)]


def summary(samples: list[int]) -> dict[str, int]:
    s = sorted(samples)
    return {"median": percentile(s, 50), "p99": percentile(s, 99)}


# --------------------------------------------------------------------- progress


class Progress:
    """One line per step on stderr; on a terminal it rewrites a single line."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        self.done += 1
        head = f"[{self.done:2}/{self.total or '?'}] {label}"
        if self.tty:
            sys.stderr.write(f"\r\x1b[K{head} ...")
        else:
            sys.stderr.write(f"{head} ...\n")
        sys.stderr.flush()
        t = time.monotonic()
        try:
            yield
        finally:
            if self.tty:
                sys.stderr.write(f"\r\x1b[K{head} ({time.monotonic() - t:.1f}s)\n")
                sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write(f"benchmarks done in {time.monotonic() - self.t0:.1f}s\n")
        sys.stderr.flush()


# --------------------------------------------------------------------- references


@dataclass(slots=True)
class Tree:
    """Where the benchmark sources are, and whether they could be built."""

    refs: Path | None
    progs: Path | None
    refs_problem: str = ""
    progs_problem: str = ""


def find_tree() -> Path | None:
    """The ``benchmarks`` directory of the source tree this package was installed from."""
    here = Path(__file__).resolve().parent.parent / "benchmarks"
    return here if (here / "refs" / "Makefile").is_file() else None


def build_tree(progress: Progress) -> Tree:
    root = find_tree()
    if root is None:
        where = Path(__file__).resolve().parent.parent / "benchmarks"
        reason = f"benchmarks/refs not found (looked in {where}): run from a source checkout"
        print(f"aioumm bench: {reason}; measuring aioumm alone", file=sys.stderr)
        return Tree(None, None, reason, reason)
    tree = Tree(root / "refs", root / "progs")
    with progress.step("building benchmarks/refs and benchmarks/progs"):
        for attr in ("refs", "progs"):
            path: Path = getattr(tree, attr)
            problem = _make(path)
            if problem:
                setattr(tree, attr, None)
                setattr(tree, f"{attr}_problem", problem)
                print(f"aioumm bench: {problem}", file=sys.stderr)
    return tree


def _make(path: Path) -> str:
    if shutil.which("make") is None:
        return "make is not installed: cannot build the references"
    res = subprocess.run(["make", "-s", "-C", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["?"]
        return f"building {path} failed: {tail[0]}"
    return ""


def run_json(cmd: list[str]) -> dict[str, Any]:
    """Run a reference and return the one JSON object it prints."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=REF_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{Path(cmd[0]).name}: no result within {REF_TIMEOUT:g}s") from None
    except OSError as exc:
        raise BenchError(f"{cmd[0]}: {exc.strerror}") from None
    if res.returncode != 0:
        lines = res.stderr.strip().splitlines()
        name = Path(cmd[1] if cmd[0] == sys.executable else cmd[0]).name
        raise BenchError(f"{name} failed: {lines[-1] if lines else f'exit status {res.returncode}'}")
    try:
        obj = json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise BenchError(f"{cmd[0]}: no JSON object on stdout") from None
    if not isinstance(obj, dict):
        raise BenchError(f"{cmd[0]}: output is not a JSON object")
    return obj


def python_ptrace_problem() -> str:
    if importlib.util.find_spec("ptrace") is None:
        return "python-ptrace is not installed (pip install 'aioumm[bench]')"
    return ""


# --------------------------------------------------------------------- aioumm in-process


@contextlib.contextmanager
def placement(pin: str) -> Iterator[None]:
    """Pin this process (and so every stub it spawns) to CPU 0 ("same", "apart"), or leave the mask alone."""
    saved = os.sched_getaffinity(0)
    if pin in ("same", "apart"):
        os.sched_setaffinity(0, {0})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def guest_memfd() -> int:
    """The guest code page followed by a stack, in one memfd.

    Several stubs may map the same one: the guest loop never touches its
    stack, and signal frames go to each stub's own alternate stack.
    """
    fd = os.memfd_create("aioumm-bench-guest", os.MFD_CLOEXEC)
    os.ftruncate(fd, PAGE + STACK_SIZE)
    os.pwrite(fd, ASKER, 0)
    return fd


def load_guest(stub: Stub, fd: int) -> None:
    stub.mmap(CODE_ADDR, PAGE, PROT_R | PROT_X, fd, 0)
    stub.mmap(STACK_TOP - STACK_SIZE, STACK_SIZE, PROT_R | PROT_W, fd, PAGE)
    stub.regs.rip = CODE_ADDR
    stub.regs.rsp = STACK_TOP - 64


async def converse(stub: Stub, rounds: int, out: list[int], *, coroutine: bool = False) -> None:
    """Answer ``rounds`` asks of a loaded guest, appending each round trip's ns to ``out``.

    The first resume starts the guest; its last ask (RDI = rounds) proves the
    last answer passed the guest's own check.  By default every ask is
    answered from the loop's callback (``resume(answer)``, the fast path for
    reports that need no waiting); ``coroutine`` makes it one ``await
    stub.resume()`` per ask instead.
    """
    regs = stub.regs
    clock = time.perf_counter_ns
    report = await stub.resume()
    if report.syscall != GUEST_SYSCALL or regs.rdi != 0:
        raise BenchError(f"stub {stub.pid}: first report {report}, rdi={regs.rdi}")
    if coroutine:
        prev = clock()
        for i in range(rounds):
            regs.rax = 3 * i + 1
            report = await stub.resume()
            t = clock()
            if report.syscall != GUEST_SYSCALL or regs.rdi != i + 1:
                raise BenchError(f"stub {stub.pid}: round {i}: {report}, rdi={regs.rdi} (wrong answer seen?)")
            out.append(t - prev)
            prev = t
        return
    asked = 0  # asks answered so far
    prev = 0

    def answer(report: Report) -> bool:
        # A sample runs from one report seen to the next, this work on the report included (as in
        # c_stub, and as the coroutine's samples above).
        nonlocal asked, prev
        t = clock()
        if asked:
            out.append(t - prev)
        prev = t
        if report.syscall != GUEST_SYSCALL or regs.rdi != asked:
            raise BenchError(f"stub {stub.pid}: round {asked - 1}: {report}, rdi={regs.rdi} (wrong answer seen?)")
        if asked == rounds:
            return False
        regs.rax = 3 * asked + 1
        asked += 1
        return True

    answer(report)
    await stub.resume(answer)


async def aioumm_roundtrip(
    n: int, *, coroutine: bool = False, placement: bool | Literal["auto"] = "auto", cpus: set[int] | None = None
) -> list[int]:
    """Round trips of one stub; ``placement``: the controller's (by default what ``aioumm run``
    uses, see placement.py); ``cpus``: where the stub runs (else where it was spawned: this
    process's mask)."""
    async with Controller(placement=placement) as ctl:
        stub = await ctl.spawn()
        if cpus is not None:
            os.sched_setaffinity(stub.pid, cpus)
        fd = guest_memfd()
        try:
            load_guest(stub, fd)
            await stub.flush()
        finally:
            os.close(fd)
        samples: list[int] = []
        await converse(stub, n, samples, coroutine=coroutine)
        return samples


async def aioumm_flush(n: int) -> list[int]:
    async with Controller() as ctl:
        stub = await ctl.spawn()
        fds = []
        try:
            for _ in range(FLUSH_FDS):
                fd = os.memfd_create("aioumm-bench-flush", os.MFD_CLOEXEC)
                fds.append(fd)
                os.ftruncate(fd, PAGE * FLUSH_PAGES // FLUSH_FDS)
            samples = []
            clock = time.perf_counter_ns
            for _ in range(n):
                t0 = clock()
                # Page j from file j % 4: neighbours never share a file, so nothing merges.
                for j in range(FLUSH_PAGES):
                    stub.mmap(FLUSH_ADDR + PAGE * j, PAGE, PROT_R | PROT_W, fds[j % FLUSH_FDS], PAGE * (j // FLUSH_FDS))
                await stub.flush()
                samples.append(clock() - t0)
                # Untimed: empty the range again, so each timed batch maps into nothing (as c_stub does).
                stub.munmap(FLUSH_ADDR, PAGE * FLUSH_PAGES)
                await stub.flush()
            return samples
        finally:
            for fd in fds:
                os.close(fd)


def proc_status_kib(pid: int | str, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {key}")


async def spawn_many(ctl: Controller, k: int) -> list[Stub]:
    stubs: list[Stub] = []
    while len(stubs) < k:
        batch = min(SPAWN_CHUNK, k - len(stubs))
        stubs += await asyncio.gather(*(ctl.spawn() for _ in range(batch)))
    return stubs


async def aioumm_many(settings: Settings, results: Results, progress: Progress) -> None:
    """Memory per idle stub (256 fresh stubs), then throughput with every stub count.

    The K-stub figure drives the first K stubs of the table; the others sit
    idle on the same loop meanwhile (an idle stub costs epoll nothing).  Each
    run restarts every guest at its first instruction, so its counter starts
    at 0 again.
    """
    _raise_nofile()
    # Placement off: each figure's stubs go where its placement says (the adaptive placement
    # would keep stubs this chatty on the controller's CPU: the same_core figure).
    async with Controller(placement=False) as ctl:
        fd = guest_memfd()
        try:
            # Warm up first, so one-time costs (imports, the first loop callbacks) are not charged to stubs.
            warm = await ctl.spawn()
            load_guest(warm, fd)
            await converse(warm, 100, [])
            warm.kill()
            await warm.wait_exit()
            with progress.step(f"aioumm: memory of {MEMORY_STUBS} idle stubs"):
                before = proc_status_kib("self", "VmRSS")
                stubs = await spawn_many(ctl, MEMORY_STUBS)
                grown = proc_status_kib("self", "VmRSS") - before
                measure_memory(results, stubs, grown)
                for stub in stubs:
                    load_guest(stub, fd)
            for k in settings.stub_counts:
                with progress.step(f"aioumm: {k} stubs on one loop"):
                    if k > len(stubs):
                        fresh = await spawn_many(ctl, k - len(stubs))
                        for stub in fresh:
                            load_guest(stub, fd)
                        stubs += fresh
                    for pin, name in PLACEMENTS.items():
                        if pin == "apart" and not os.sched_getaffinity(0) - {0}:
                            results.unavailable("throughput_rt_per_s", "aioumm", (str(k), name), "one CPU only")
                            continue
                        figure = await throughput(stubs[:k], max(20, settings.rt_total // k), pin)
                        results.put("throughput_rt_per_s", "aioumm", (str(k), name), figure)
        finally:
            os.close(fd)
    for k in settings.skipped_counts:
        results.unavailable("throughput_rt_per_s", "aioumm", (str(k),), "skipped by --quick")


async def throughput(active: list[Stub], rounds: int, pin: str) -> dict[str, int]:
    """``rounds`` round trips on each of ``active`` at once: the aggregate rate and the latency each saw.

    Placement is changed on the running stubs too (they were spawned in
    whatever mask this process had then): all on CPU 0, everywhere, or
    ("apart") everywhere but CPU 0, which the controller has to itself.
    """
    wide = os.sched_getaffinity(0)
    mask = {0} if pin == "same" else wide - {0} if pin == "apart" else wide
    with placement(pin):
        for stub in active:
            os.sched_setaffinity(stub.pid, mask)
            # Restart the guest at its first instruction: its counter starts at 0 again.
            stub.regs.rip = CODE_ADDR
        samples: list[int] = []
        t0 = time.perf_counter()
        await asyncio.gather(*(converse(s, rounds, samples) for s in active))
        wall = time.perf_counter() - t0
    # Each stub's first resume (restarting the guest) is a round trip too.
    total = len(active) * (rounds + 1)
    s = summary(samples)
    return {"rt_per_s": round(total / wall), "p50_ns": s["median"], "p99_ns": s["p99"]}


def measure_memory(results: Results, stubs: list[Stub], controller_growth_kib: int) -> None:
    rss = sorted(proc_status_kib(s.pid, "VmRSS") for s in stubs)
    pte = sorted(proc_status_kib(s.pid, "VmPTE") for s in stubs)
    stub_rss, stub_pte = rss[len(rss) // 2], pte[len(pte) // 2]
    per_controller = controller_growth_kib / len(stubs)
    for key, value in (
        ("stub_rss", stub_rss),
        ("stub_pte", stub_pte),
        ("controller_per_stub", round(per_controller, 1)),
        ("per_stub", round(stub_rss + stub_pte + per_controller, 1)),
    ):
        # A figure of zero (RSS growth within the allocator's slack) is recorded as the smallest unit.
        results.put("stub_memory_kib", "aioumm", (key,), value if value > 0 else 0.1)


def _raise_nofile() -> None:
    """1024 stubs need about 4000 descriptors; raise the soft limit as the Controller does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_on_loop(coro: Any) -> Any:
    """Run one measurement on a fresh loop (uvloop when installed)."""
    loop = new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


# --------------------------------------------------------------------- programs


def time_programs(cmds: dict[str, list[str]], repeats: int) -> dict[str, float | str]:
    """Median wall time of each command (by runner name) over ``repeats`` rounds, or why it failed.

    Each round runs every command once, in turn, the first one (native) first: a machine whose
    speed drifts (other work on a shared host) slows every runner alike, where timing one
    runner's repeats after another's would lay the drift on one of them.  Every run's stdout
    must equal the first command's.
    """
    times: dict[str, list[float]] = {name: [] for name in cmds}
    failed: dict[str, str] = {}
    first = next(iter(cmds), None)
    expect: bytes | None = None
    for _ in range(repeats):
        for name, cmd in cmds.items():
            if name in failed:
                continue
            t0 = time.perf_counter()
            try:
                res = subprocess.run(cmd, capture_output=True, timeout=REF_TIMEOUT)
            except (subprocess.TimeoutExpired, OSError) as exc:
                failed[name] = str(exc)
                continue
            times[name].append(time.perf_counter() - t0)
            if res.returncode != 0:
                err = res.stderr.decode(errors="replace").strip().splitlines()
                failed[name] = f"exit status {res.returncode}: {err[-1] if err else ''}".strip()
            elif name == first:
                expect = res.stdout
            elif expect is not None and res.stdout != expect:
                failed[name] = "its output differs from the native run's"
    return {name: failed.get(name) or statistics.median(times[name]) for name in cmds}


def compute_rounds(compute: str, settings: Settings) -> int:
    """The rounds of ``compute`` that take about ``settings.compute_native_s`` natively.

    Timed on three short runs, the fastest counting: a first run, slower by its cold
    page cache and page faults, once made the timed program 20 % shorter than meant.
    """
    rounds = settings.compute_rounds
    if settings.compute_native_s is None:
        return rounds
    took = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        try:
            subprocess.run([compute, str(rounds)], stdout=subprocess.DEVNULL, check=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return rounds  # its own timing step will say what is wrong with it
        took = min(took, time.perf_counter() - t0)
    return max(rounds, round(rounds * settings.compute_native_s / max(took, 1e-3)))


def plan_programs(
    settings: Settings, tree: Tree, results: Results, workdir: Path
) -> list[tuple[str, Callable[[], None]]]:
    """The program timings as steps: one per program, its runners in turn (``time_programs``)."""
    busybox = shutil.which("busybox")
    strace = shutil.which("strace")
    data = workdir / f"data-{settings.file_mb}mb.bin"
    progs: dict[str, list[str] | str] = {}
    if busybox:
        progs[f"sha256sum_{settings.file_mb}mb"] = [busybox, "sha256sum", str(data)]
        progs["busybox_true"] = [busybox, "true"]
        # Syscall-heavy: a shell loop writing line after line into a three-process pipeline.
        script = (
            f"i=0; while [ $i -lt {settings.pipeline_lines} ]; do echo line $i; i=$((i+1)); done"
            f" | {busybox} sort -r | {busybox} uniq -c | {busybox} wc -l"
        )
        progs["busybox_pipeline"] = [busybox, "sh", "-c", script]
    else:
        progs[f"sha256sum_{settings.file_mb}mb"] = progs["busybox_true"] = "busybox is not installed"
        progs["busybox_pipeline"] = "busybox is not installed"
    if tree.progs is not None:
        compute = str(tree.progs / "build" / "compute")
        progs["compute"] = [compute, str(compute_rounds(compute, settings))]
    else:
        progs["compute"] = tree.progs_problem
    runners: dict[str, list[str] | str] = {
        "native": [],
        "aioumm": [sys.executable, "-m", "aioumm", "run", "--"],
        "strace": [strace, "-f", "-o", "/dev/null"] if strace else "strace is not installed",
    }
    steps: list[tuple[str, Callable[[], None]]] = []

    def make_data() -> None:
        with data.open("wb") as f:
            for _ in range(settings.file_mb):
                f.write(os.urandom(1 << 20))

    def timing(name: str, cmds: dict[str, list[str]]) -> None:
        for ref, wall in time_programs(cmds, settings.program_repeats).items():
            if isinstance(wall, str):
                results.unavailable("programs_s", ref, (name,), wall)
            else:
                results.put("programs_s", ref, (name,), round(wall, 4))

    def compile_package() -> None:
        # What an installed package has: the start-up of `aioumm run` is timed, not the
        # compiling of sources edited since (PYTHONDONTWRITEBYTECODE keeps them stale).
        compileall.compile_dir(str(Path(__file__).resolve().parent), quiet=1)

    steps.append(("compiling the aioumm package to bytecode", compile_package))
    if busybox:
        steps.append((f"writing a {settings.file_mb} MB file of random bytes", make_data))
    for name, cmd in progs.items():
        cmds: dict[str, list[str]] = {}
        for ref, prefix in runners.items():
            if isinstance(cmd, str) or isinstance(prefix, str):
                reason = cmd if isinstance(cmd, str) else str(prefix)
                results.unavailable("programs_s", ref, (name,), reason)
            else:
                cmds[ref] = prefix + cmd
        if "native" in cmds:  # the others are checked against its output
            label = f"{name}: {', '.join(f'under {r}' if r != 'native' else 'natively' for r in cmds)}, in turn"
            steps.append((label, functools.partial(timing, name, cmds)))
    return steps


# --------------------------------------------------------------------- the run


def plan(settings: Settings, tree: Tree, results: Results) -> list[tuple[str, Callable[[], None]]]:
    """Every measurement step, in order: (label, action)."""
    steps: list[tuple[str, Callable[[], None]]] = []
    refs = tree.refs
    c_refs = {"native": "native", "c_stub": "c_stub", "c_ptrace": "ptrace_sysemu", "c_unotify": "unotify"}

    tp = "throughput_rt_per_s"

    def record_rt(ref: str, pin: str, obj: dict[str, Any]) -> None:
        results.put("roundtrip_ns", ref, (PLACEMENTS[pin],), {"median": obj["median_ns"], "p99": obj["p99_ns"]})
        figure = _rate(obj)
        if ref not in ("native", "aioumm") and figure is not None:
            results.put(tp, ref, ("1", PLACEMENTS[pin]), figure)
            if ref != "c_stub":  # c_stub drives many stubs too (--stubs, below)
                results.put(tp, ref, ("16+",), {"unavailable": _SINGLE})

    def ref_step(ref: str, cmd: list[str], pin: str, section: str = "roundtrip_ns", stubs: int = 1) -> None:
        name = PLACEMENTS[pin]
        where = (str(stubs), name) if section == tp else (name,)

        def act() -> None:
            try:
                obj = run_json(cmd)
            except BenchError as exc:
                results.unavailable(section, ref, where, str(exc))
                return
            if section == "roundtrip_ns":
                record_rt(ref, pin, obj)
            elif section == tp:
                results.put(section, ref, where, _rate(obj) or {"unavailable": f"{ref} reported no wall time"})
            else:
                results.put(section, ref, where, {"median": obj["median_ns"], "p99": obj["p99_ns"]})

        what = f"{stubs} stubs at once" if section == tp else section.split("_")[0]
        steps.append((f"{ref} {what} ({name})", act))

    def aioumm_rt(pin: str) -> None:
        n = settings.n_aioumm
        if pin == "apart":
            # Controller()'s default (no placement of its own, which would bring the stub home).
            others = os.sched_getaffinity(0) - {0}
            with placement(pin):
                samples = run_on_loop(aioumm_roundtrip(n, placement=False, cpus=others))
                awaited = summary(run_on_loop(aioumm_roundtrip(n, coroutine=True, placement=False, cpus=others)))
            free = placed = None
        else:
            with placement(pin):
                samples = run_on_loop(aioumm_roundtrip(n))
                awaited = summary(run_on_loop(aioumm_roundtrip(n, coroutine=True)))
                free = placed = None
                if pin != "same":
                    free = summary(run_on_loop(aioumm_roundtrip(n, placement=False)))
                    placed = summary(run_on_loop(aioumm_roundtrip(n, placement=True)))
        record_rt("aioumm", pin, {"n": len(samples), "extra": {}, **_ns(summary(samples))})
        results.samples[PLACEMENTS[pin]] = samples
        # The same asks answered by one `await stub.resume()` each: what a task switch per report
        # costs; with the controller's placement off: where the scheduler alone puts both sides;
        # and with it on whether or not the sides spin: what keeping a chatty stub home gives.
        figure = results.data["roundtrip_ns"]["aioumm"][PLACEMENTS[pin]]
        figure.update(coroutine_median=awaited["median"], coroutine_p99=awaited["p99"])
        if free is not None and placed is not None:  # on one CPU there is nothing to place
            figure.update(no_placement_median=free["median"], no_placement_p99=free["p99"])
            figure.update(placed_median=placed["median"], placed_p99=placed["p99"])

    def aioumm_fl(pin: str) -> None:
        with placement(pin):
            samples = run_on_loop(aioumm_flush(settings.n_flush_aioumm))
        results.put("flush_ns", "aioumm", (PLACEMENTS[pin],), summary(samples))

    one_cpu = not os.sched_getaffinity(0) - {0}
    for pin in PLACEMENTS:
        if pin == "apart" and one_cpu:
            for ref in ("aioumm", *c_refs, "python_ptrace"):
                results.unavailable("roundtrip_ns", ref, (PLACEMENTS[pin],), "one CPU only")
            continue
        steps.append((f"aioumm round trip ({PLACEMENTS[pin]})", functools.partial(aioumm_rt, pin)))
        for ref, prog in c_refs.items():
            if refs is None:
                results.unavailable("roundtrip_ns", ref, (PLACEMENTS[pin],), tree.refs_problem)
                continue
            if ref == "native" and pin == "apart":
                results.unavailable("roundtrip_ns", ref, (PLACEMENTS[pin],), "no controller: nothing to place apart")
                continue
            cmd = [str(refs / "build" / prog), "-n", str(settings.n_c), "--pin", pin]
            if ref == "c_stub":  # the same protocol as aioumm's, spinning included
                cmd += ["--spin", str(Controller().spin_ns)]
            ref_step(ref, cmd, pin)
        problem = tree.refs_problem if refs is None else python_ptrace_problem()
        if problem:
            results.unavailable("roundtrip_ns", "python_ptrace", (PLACEMENTS[pin],), problem)
        else:
            assert refs is not None
            cmd = [sys.executable, str(refs / "python_ptrace_ref.py"), "-n", str(settings.n_python_ptrace)]
            ref_step("python_ptrace", [*cmd, "--pin", pin, "--mode", "syscall"], pin)
    for pin in FLUSH_PLACEMENTS:
        steps.append((f"aioumm flush ({PLACEMENTS[pin]})", functools.partial(aioumm_fl, pin)))
        if refs is None:
            results.unavailable("flush_ns", "c_stub", (PLACEMENTS[pin],), tree.refs_problem)
            continue
        cmd = [str(refs / "build" / "c_stub"), "--mode", "flush", "-n", str(settings.n_flush_c), "--pin", pin]
        ref_step("c_stub", cmd, pin, "flush_ns")
    # The floor of aioumm's many-stub figures: c_stub drives K stubs from one thread through the same
    # protocol (one epoll set, wakes at the end of each pass), with aioumm's round trips and placements.
    for k in (k for k in settings.stub_counts if k > 1):  # one stub: from its round-trip runs (record_rt)
        for pin, name in PLACEMENTS.items():
            if refs is None:
                results.unavailable(tp, "c_stub", (str(k), name), tree.refs_problem)
            elif pin == "apart" and not os.sched_getaffinity(0) - {0}:
                results.unavailable(tp, "c_stub", (str(k), name), "one CPU only")
            else:
                cmd = [str(refs / "build" / "c_stub"), "--stubs", str(k), "-n", str(settings.rt_total), "--pin", pin]
                ref_step("c_stub", cmd, pin, tp, k)
    for k in settings.skipped_counts:
        results.unavailable(tp, "c_stub", (str(k),), "skipped by --quick")
    return steps


def _rate(obj: dict[str, Any]) -> dict[str, int] | None:
    """A reference's result as a throughput figure: all its round trips over its wall time."""
    wall = obj.get("extra", {}).get("wall_s") or 0
    if wall <= 0:
        return None
    return {"rt_per_s": round(obj["n"] / wall), "p50_ns": obj["median_ns"], "p99_ns": obj["p99_ns"]}


def _ns(s: dict[str, int]) -> dict[str, int]:
    return {"median_ns": s["median"], "p99_ns": s["p99"]}


def run_all(settings: Settings) -> Results:
    results = Results()
    # The steps are counted once the tree is known (after the build).
    progress = Progress(0)
    tree = build_tree(progress)
    with tempfile.TemporaryDirectory(prefix="aioumm-bench-") as tmp:
        steps = plan(settings, tree, results)
        program_steps = plan_programs(settings, tree, results, Path(tmp))
        progress.total = progress.done + len(steps) + 1 + len(settings.stub_counts) + len(program_steps)
        for label, act in steps:
            with progress.step(label):
                act()
        try:
            run_on_loop(aioumm_many(settings, results, progress))
        except Exception as exc:  # any failure becomes a recorded reason, not a lost run
            reason = f"{type(exc).__name__}: {exc}"
            for section in ("throughput_rt_per_s", "stub_memory_kib"):
                if not results.data[section]["aioumm"]:
                    results.unavailable(section, "aioumm", (), reason)
            for k in settings.stub_counts:
                if results.get("throughput_rt_per_s", "aioumm", str(k), "unpinned", "rt_per_s") is None:
                    results.unavailable("throughput_rt_per_s", "aioumm", (str(k),), reason)
        for label, act in program_steps:
            with progress.step(label):
                act()
    progress.close()
    results.finish()
    return results


# --------------------------------------------------------------------- the table


def flatten(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], float | str]]:
    """(path, number or reason) for every figure under ``node``."""
    if isinstance(node, dict):
        if set(node) == {"unavailable"}:
            yield prefix, str(node["unavailable"])
            return
        for key, value in node.items():
            yield from flatten(value, (*prefix, key))
    elif isinstance(node, int | float):
        yield prefix, float(node)


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(results: Results) -> str:
    """Every figure, one row per figure path, one column per reference; cells of the
    references show ``value (aioumm/value)``."""
    lines = []
    for section in SECTIONS:
        refs = results.data[section]
        rows: dict[tuple[str, ...], dict[str, float | str]] = {}
        for ref in REFERENCES:
            for path, value in flatten(refs[ref]):
                if path:
                    rows.setdefault(path, {})[ref] = value
        # Rows with no number at all (only reasons) are listed below the grid instead.
        rows = {p: cells for p, cells in rows.items() if any(isinstance(v, float) for v in cells.values())}
        present = [r for r in REFERENCES if any(isinstance(rows[p].get(r), float) for p in rows)]
        lines.append(f"\n== {section}  (cells: value, and in brackets aioumm ÷ that reference)")
        header = ["figure", *present]
        body = []
        for path, cells in rows.items():
            mine = cells.get("aioumm")
            row = ["/".join(path)]
            for ref in present:
                v = cells.get(ref)
                if not isinstance(v, float):
                    row.append("-")
                elif ref != "aioumm" and isinstance(mine, float) and v > 0:
                    row.append(f"{_fmt(v)} ({mine / v:.2f}x)")
                else:
                    row.append(_fmt(v))
            body.append(row)
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        for r in [header, *body]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        missing = [(r, p, v) for r in REFERENCES for p, v in flatten(refs[r]) if p and isinstance(v, str)]
        missing += [(r, (), str(refs[r]["unavailable"])) for r in REFERENCES if set(refs[r]) == {"unavailable"}]
        for ref, path, reason in missing:
            lines.append(f"  n/a {ref}{'/' + '/'.join(path) if path else ''}: {reason}")
    return "\n".join(lines)


def targets(results: Results, *, judge_programs: bool = True) -> list[tuple[str, float | None, bool | None]]:
    """The goals aioumm is measured against: (goal, measured value, met?); met is None for a
    figure shown for information only, and wherever the value is missing.

    ``judge_programs=False`` (``--quick``) shows the program ratios for information only: its
    programs run for a few milliseconds, so the start-up of ``aioumm run`` decides them."""
    out: list[tuple[str, float | None, bool | None]] = []

    def ratio(
        goal: str, section: str, ref: str, path: tuple[str, ...], limit: float | None, at_least: bool = False
    ) -> None:
        """aioumm's figure over ref's; ``limit`` None: shown for information, no goal."""
        mine, theirs = results.get(section, "aioumm", *path), results.get(section, ref, *path)
        value = mine / theirs if mine is not None and theirs else None
        met = None if value is None or limit is None else (value >= limit if at_least else value <= limit)
        out.append((goal, value, met))

    def best(ref: str) -> float | None:
        # Each side at its best placement: a reference's unpinned figure on a virtual machine
        # is mostly cross-CPU wake-ups, which a fair comparison must not credit to aioumm.
        # aioumm's unpinned figures are two: its own placement, and none (Controller()'s default).
        found = [results.get("roundtrip_ns", ref, pin, "median") for pin in PLACEMENTS.values()]
        if ref == "aioumm":
            found.append(results.get("roundtrip_ns", ref, "unpinned", "no_placement_median"))
        values = [v for v in found if v is not None]
        return min(values) if values else None

    mine = best("aioumm")
    for ref, limit in (("c_unotify", 1.0), ("c_ptrace", 0.5), ("python_ptrace", 0.2), ("c_stub", 1.2)):
        theirs = best(ref)
        value = mine / theirs if mine is not None and theirs else None
        met = None if value is None else value <= limit
        out.append((f"round trip <= {limit}x {ref} (each at its best)", value, met))
    tp = "throughput_rt_per_s"
    for pin in PLACEMENTS.values():
        rate = results.get(tp, "aioumm", "256", pin, "rt_per_s")
        out.append((f">= 250000 rt/s with 256 stubs ({pin})", rate, None if rate is None else rate >= 250000))
        ratio(f"256 stubs: rt/s ÷ c_stub's ({pin})", tp, "c_stub", ("256", pin, "rt_per_s"), None)
        r1024, r16 = (
            results.get(tp, "aioumm", "1024", pin, "rt_per_s"),
            results.get(tp, "aioumm", "16", pin, "rt_per_s"),
        )
        frac = r1024 / r16 if r1024 is not None and r16 else None
        out.append((f"1024 stubs >= 0.9x the 16-stub rate ({pin})", frac, None if frac is None else frac >= 0.9))
    for pin in PLACEMENTS.values():
        med, p99 = (
            results.get("roundtrip_ns", "aioumm", pin, "median"),
            results.get("roundtrip_ns", "aioumm", pin, "p99"),
        )
        tail = p99 / med if med and p99 is not None else None
        out.append((f"round trip ({pin}) p99 <= 10x median", tail, None if tail is None else tail <= 10))
    for k in ("1", "16", "256", "1024"):
        for pin in PLACEMENTS.values():
            p50, p99 = results.get(tp, "aioumm", k, pin, "p50_ns"), results.get(tp, "aioumm", k, pin, "p99_ns")
            tail = p99 / p50 if p50 and p99 is not None else None
            out.append((f"{k} stubs ({pin}): p99 <= 10x p50", tail, None if tail is None else tail <= 10))
    ratio("flush (same_core) <= 1.5x c_stub", "flush_ns", "c_stub", ("same_core", "median"), 1.5)
    ratio("flush (unpinned) <= 1.5x c_stub", "flush_ns", "c_stub", ("unpinned", "median"), 1.5)
    kib = results.get("stub_memory_kib", "aioumm", "per_stub")
    out.append(("<= 256 KiB per idle stub", kib, None if kib is None else kib <= 256))
    mine_s, strace_s = (results.get("programs_s", r, "busybox_pipeline") for r in ("aioumm", "strace"))
    faster = mine_s / strace_s if mine_s is not None and strace_s else None
    if judge_programs:
        out.append(("busybox pipeline faster than under strace -f", faster, None if faster is None else faster < 1.0))
        ratio("compute-bound program <= 1.05x native", "programs_s", "native", ("compute",), 1.05)
    else:
        out.append(("busybox pipeline ÷ strace -f (too short here)", faster, None))
        ratio("compute-bound program ÷ native (too short here)", "programs_s", "native", ("compute",), None)
    return out


def targets_text(results: Results, *, judge_programs: bool = True) -> str:
    lines = ["\n== targets"]
    for goal, value, met in targets(results, judge_programs=judge_programs):
        state = "n/a" if value is None else "info" if met is None else ("met" if met else "NOT met")
        lines.append(f"  {state:7}  {goal:45}  {'-' if value is None else _fmt(value)}")
    return "\n".join(lines)


# --------------------------------------------------------------------- plot


def load_pyplot() -> Any:
    """matplotlib's pyplot with a file-only backend, or None when matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        return None
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot(pyplot: Any, results: Results, path: str) -> None:
    """Three panels: each reference's round trip (median and p99), the distribution of
    aioumm's round trips, and aioumm's round trips per second against the number of stubs."""
    fig, (rt, dist, scale) = pyplot.subplots(1, 3, figsize=(16, 4.8))
    refs = [r for r in REFERENCES if results.get("roundtrip_ns", r, "same_core", "median") is not None]
    width = 0.8 / len(PLACEMENTS)
    for i, pin in enumerate(PLACEMENTS.values()):
        xs = [x + width * i for x in range(len(refs))]
        medians = [(results.get("roundtrip_ns", r, pin, "median") or 0) / 1000 for r in refs]
        p99s = [(results.get("roundtrip_ns", r, pin, "p99") or 0) / 1000 for r in refs]
        rt.bar(xs, medians, width=width, label=f"{pin} median")
        rt.scatter(xs, p99s, marker="_", s=200, color="black", label="p99" if i == 0 else None)
    rt.set_xticks([x + 0.4 - width / 2 for x in range(len(refs))], refs, rotation=30)
    rt.set_yscale("log")
    rt.set_ylabel("round trip (µs)")
    rt.set_title("one trapped syscall, answered")
    rt.legend(fontsize="small")
    for label, samples in results.samples.items():
        ordered = sorted(samples)
        if ordered:
            dist.plot([v / 1000 for v in ordered], [(i + 1) / len(ordered) for i in range(len(ordered))], label=label)
    dist.set_xscale("log")
    dist.set_xlabel("aioumm round trip (µs)")
    dist.set_ylabel("fraction of round trips at most that")
    dist.set_title("aioumm: distribution of round trips")
    dist.legend(fontsize="small")
    node = results.data["throughput_rt_per_s"]["aioumm"]
    for pin in PLACEMENTS.values():
        counts = sorted(int(k) for k in node if k.isdigit() and isinstance(node[k].get(pin), dict))
        rates = [node[str(k)][pin].get("rt_per_s") for k in counts]
        points = [(k, r) for k, r in zip(counts, rates, strict=True) if isinstance(r, int | float)]
        if points:
            scale.plot([k for k, _ in points], [r for _, r in points], marker="o", label=pin)
    scale.set_xscale("log")
    scale.set_xlabel("stubs on one loop")
    scale.set_ylabel("round trips per second")
    scale.set_title("aioumm: scaling")
    scale.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    pyplot.close(fig)


# --------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioumm bench", description="Measure aioumm side by side with its references (benchmarks/README.md)."
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations, no 1024-stub run (under a minute)")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON (schema: benchmarks/README.md)")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the round-trip figures (needs matplotlib)")
    return parser


def main(argv: list[str]) -> int:
    """Run the benchmarks with ``argv`` (the arguments after ``aioumm bench``); return the exit status."""
    args = build_parser().parse_args(argv)
    pyplot = None
    if args.plot:
        pyplot = load_pyplot()
        if pyplot is None:
            print("aioumm bench: --plot needs matplotlib, which is not installed", file=sys.stderr)
            return USAGE
    # A benchmark interrupted half-way must still leave no stub behind: SIGTERM ends it like Ctrl-C.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        results = run_all(Settings.for_mode(args.quick))
    except KeyboardInterrupt:
        print("aioumm bench: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(table(results))
    print(targets_text(results, judge_programs=not args.quick))
    if args.quick:
        print("  (--quick: the programs are too short for their targets; a full run judges them)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results.data, f, indent=2)
            f.write("\n")
    if pyplot is not None:
        plot(pyplot, results, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0
