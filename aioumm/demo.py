"""``aioumm demo``: several real programs at once, each in its own stub, on one loop.

The programs are the C sources in ``examples/`` (compiled with
``gcc -O1 -static`` into ``build/examples/`` when missing or older than their
source), where ``/bin/busybox`` is a static busybox, a few of its applets, and
two of the host's dynamically linked programs (``ls``, ``md5sum``) when their
loader is there.
Every program is first run natively, then all of them are started together
under one :class:`~aioumm.loop.Controller` with ``asyncio.gather``; each
guest's stdout and stderr go to files of its own
(``run_program(..., stdio=(in, out, err))``), and each result is compared
with the native run: same exit status, same stdout, same stderr.

The exit status is 0 when every guest behaved exactly as natively.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from aioumm.errors import AioummError
from aioumm.loop import Controller, Stats, run

__all__ = ["DemoError", "DemoProgram", "Outcome", "build_examples", "main"]

#: How the demo programs are compiled: static, so the guest runner can load them.
CFLAGS = ("-O1", "-static")
BUSYBOX = "/bin/busybox"
#: Host programs that are usually dynamically linked: (label, path, argv).
DYNAMIC = (
    ("ls -1 (dynamically linked)", "/bin/ls", ("ls", "-1")),
    ("md5sum text.txt (dynamically linked)", "/usr/bin/md5sum", ("md5sum", "text.txt")),
)
#: A guest (or native run) that takes longer than this has hung.
TIMEOUT_S = 120.0
#: Output lines shown per stream; the comparison always uses all of it.
SHOWN_LINES = 8

_PACKAGE_DIR = Path(__file__).resolve().parent


class DemoError(AioummError):
    """The demo could not be set up (no examples, a compiler error)."""


@dataclass(frozen=True, slots=True)
class DemoProgram:
    """One program of the scenario: ``argv[0]`` is run from ``path``."""

    label: str
    path: str
    argv: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one run produced; ``error`` is set when the guest runner itself failed."""

    status: int | None
    stdout: bytes
    stderr: bytes
    seconds: float
    error: str | None = None

    def differences(self, native: Outcome) -> list[str]:
        """How this run differs from ``native`` (empty: the same)."""
        if self.error is not None:
            return [self.error]
        out = []
        if self.status != native.status:
            out.append(f"exit status {self.status}, natively {native.status}")
        for name, mine, theirs in (("stdout", self.stdout, native.stdout), ("stderr", self.stderr, native.stderr)):
            if mine != theirs:
                out.append(f"{name} differs from the native run{_first_difference(mine, theirs)}")
        return out


def _first_difference(a: bytes, b: bytes) -> str:
    for n, (x, y) in enumerate(zip(a.splitlines(), b.splitlines(), strict=False), 1):
        if x != y:
            return f" at line {n}: {x[:60]!r} vs {y[:60]!r}"
    return f" in length: {len(a)} vs {len(b)} bytes"


# --------------------------------------------------------------------- set-up


def default_examples_dir() -> Path:
    """``examples/`` of the source tree the package lives in, else of the working directory."""
    beside = _PACKAGE_DIR.parent / "examples"
    return beside if beside.is_dir() else Path.cwd() / "examples"


def default_build_dir(examples: Path) -> Path:
    """``build/examples/`` next to the ``examples/`` directory."""
    return examples.resolve().parent / "build" / "examples"


def build_examples(examples: Path, build_dir: Path) -> dict[str, Path]:
    """Compile every ``examples/*.c`` that is missing or older than its source; name -> binary.

    The compilers run in parallel; a failure raises :class:`DemoError` with
    the compiler's messages.
    """
    sources = sorted(examples.glob("*.c"))
    if not sources:
        raise DemoError(f"no C sources in {examples} (give --examples DIR)")
    build_dir.mkdir(parents=True, exist_ok=True)
    binaries = {src.stem: build_dir / src.stem for src in sources}
    jobs: list[tuple[Path, subprocess.Popen[bytes]]] = []
    try:
        for src in sources:
            out = binaries[src.stem]
            if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
                continue
            cmd = ["gcc", *CFLAGS, "-o", str(out), str(src)]
            jobs.append((src, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
        failed = []
        for src, proc in jobs:
            messages, _ = proc.communicate()
            if proc.returncode != 0:
                failed.append(f"{src.name}: gcc exited with {proc.returncode}\n{messages.decode(errors='replace')}")
    except FileNotFoundError as exc:
        raise DemoError(f"cannot compile the examples: {exc.strerror}: {exc.filename}") from exc
    finally:
        for _, proc in jobs:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
    if failed:
        raise DemoError("compiling the examples failed:\n" + "\n".join(failed))
    return binaries


# The words of the generated text: a fixed list and a fixed-seed generator, so
# every run (native and guest, today and tomorrow) reads the same file.
_TEXT = (
    "the stub waits on its word while the controller reads the report and edits the registers "
    "then hands the page back so the guest can run again until its next syscall traps"
)
_WORDS = _TEXT.split()


def _write_inputs(workdir: Path) -> None:
    state = 12345
    lines = []
    for _ in range(600):
        words = []
        for _ in range(8):
            state = (state * 1103515245 + 12345) % (1 << 31)
            words.append(_WORDS[(state >> 16) % len(_WORDS)])
        lines.append(" ".join(words))
    (workdir / "text.txt").write_text("\n".join(lines) + "\n")
    (workdir / "note.txt").write_text(
        "Each program here runs in a stub of its own.\n"
        "Every syscall it makes is trapped and answered from Python.\n"
        "All of them share one event loop.\n"
    )


def _busybox_usable() -> bool:
    """Whether ``/bin/busybox`` exists and is a static program the runner can load."""
    from aioumm.guest.elf import open_program

    try:
        _image, fd = open_program(BUSYBOX)
    except AioummError:
        return False
    os.close(fd)
    return True


def _dynamic_usable(path: str) -> bool:
    """Whether ``path`` is a dynamically linked program whose loader is there."""
    from aioumm.guest.elf import open_program

    try:
        image, fd = open_program(path)
    except AioummError:
        return False
    os.close(fd)
    return image.interp is not None and os.access(os.fsdecode(image.interp), os.X_OK)


def scenario(binaries: dict[str, Path], *, busybox: bool, dynamic: Sequence[DemoProgram] = ()) -> list[DemoProgram]:
    """The programs of the demo, in the order they are shown."""

    def example(name: str, *args: str) -> DemoProgram:
        path = binaries.get(name)
        if path is None:
            raise DemoError(f"examples/{name}.c is missing")
        return DemoProgram(shlex.join([name, *args]), str(path), (name, *args))

    programs = [
        example("primes", "200000"),
        example("wordfreq", "text.txt"),
        example("checksum", "4096"),
        example("alloc"),
        example("args_env", "one", "two words", ""),
        example("exit_status", "3"),
    ]
    if busybox:
        for args in (
            ("echo", "hello", "from", "busybox"),
            ("cat", "note.txt"),
            ("sha256sum", "text.txt"),
            ("wc", "-l", "text.txt"),
        ):
            programs.append(DemoProgram(shlex.join(["busybox", *args]), BUSYBOX, ("busybox", *args)))
    programs.extend(dynamic)
    return programs


def demo_env() -> dict[str, str]:
    """The environment every program gets, native or guest (the same, so outputs compare)."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "LC_ALL": "C",
        "DEMO_GREETING": "hello",
        "DEMO_STUBS": "one per program",
    }


# --------------------------------------------------------------------- running


def _shell_status(returncode: int) -> int:
    """A ``subprocess`` return code as a shell reports it (128+N for signal N)."""
    return 128 - returncode if returncode < 0 else returncode


def run_native(prog: DemoProgram, env: dict[str, str], cwd: Path) -> Outcome:
    """Run ``prog`` directly on the host."""
    started = time.perf_counter()
    done = subprocess.run(
        list(prog.argv),
        executable=prog.path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env,
        cwd=cwd,
        timeout=TIMEOUT_S,
        check=False,
    )
    return Outcome(_shell_status(done.returncode), done.stdout, done.stderr, time.perf_counter() - started)


async def run_guest(ctl: Controller, prog: DemoProgram, env: dict[str, str]) -> Outcome:
    """Run ``prog`` in a stub of ``ctl``, its stdout and stderr captured in files of its own."""
    from aioumm.guest.runner import run_program

    with contextlib.ExitStack() as stack:
        stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        stack.callback(os.close, stdin)
        out, err = (stack.enter_context(tempfile.TemporaryFile()) for _ in range(2))
        fds = (stdin, out.fileno(), err.fileno())
        started = time.perf_counter()
        try:
            status = await asyncio.wait_for(run_program(ctl, prog.path, list(prog.argv), env, stdio=fds), TIMEOUT_S)
            error = None
        except AioummError as exc:
            status, error = None, f"the guest runner failed: {exc}"
        except TimeoutError:
            status, error = None, f"did not finish within {TIMEOUT_S:g}s"
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return Outcome(status, out.read(), err.read(), seconds, error)


async def run_guests(programs: Sequence[DemoProgram], env: dict[str, str]) -> tuple[list[Outcome], Stats, str]:
    """Run every program at once, each in a stub of its own, on the running loop.

    Returns the outcomes, the controller's counters and the loop's name.
    """
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    async with Controller(placement="auto") as ctl:
        outcomes = await asyncio.gather(*(run_guest(ctl, p, env) for p in programs))
        return list(outcomes), ctl.stats, loop_name


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    # Guests start in the controller's working directory, so the demo moves
    # there for the run: both sides then name their input files the same way.
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# --------------------------------------------------------------------- report


def _show(data: bytes, prefix: str, out: TextIO) -> None:
    lines = data.decode(errors="replace").splitlines()
    for line in lines[:SHOWN_LINES]:
        print(f"    {prefix}{line}", file=out)
    if len(lines) > SHOWN_LINES:
        print(f"    {prefix}... ({len(lines) - SHOWN_LINES} more lines)", file=out)


def report(
    programs: Sequence[DemoProgram],
    guests: Sequence[Outcome],
    natives: Sequence[Outcome],
    stats: Stats,
    loop_name: str,
    wall: float,
    out: TextIO,
) -> int:
    """Print each program's output and verdict, then the summary; 0 when every guest matched."""
    different = 0
    for prog, guest, native in zip(programs, guests, natives, strict=True):
        problems = guest.differences(native)
        verdict = "same as native" if not problems else "DIFFERENT"
        different += bool(problems)
        shown = "-" if guest.status is None else str(guest.status)
        print(f"[{prog.label}] exit {shown}, {verdict} ({guest.seconds:.2f} s in its stub)", file=out)
        _show(guest.stdout, "", out)
        _show(guest.stderr, "stderr: ", out)
        for problem in problems:
            print(f"    ! {problem}", file=out)
    same = len(programs) - different
    print(file=out)
    print(
        f"summary: {len(programs)} programs at once on one {loop_name} loop: "
        f"{same} same as native, {different} DIFFERENT",
        file=out,
    )
    print(
        f"stubs spawned: {stats.spawned}, round trips: {stats.round_trips}, flushes: {stats.flushes}, "
        f"descriptors passed: {stats.fds_passed}",
        file=out,
    )
    print(
        f"wall time: {wall:.2f} s under aioumm; natively {sum(n.seconds for n in natives):.2f} s (one after another)",
        file=out,
    )
    return 0 if different == 0 else 1


def main(
    examples: str | None = None,
    build_dir: str | None = None,
    *,
    build_only: bool = False,
    out: TextIO | None = None,
) -> int:
    """Build the demo programs, run them natively and all at once under aioumm, and report."""
    out = out if out is not None else sys.stdout
    src = Path(examples) if examples is not None else default_examples_dir()
    dest = Path(build_dir) if build_dir is not None else default_build_dir(src)
    binaries = build_examples(src, dest)
    if build_only:
        print(f"{len(binaries)} demo programs built (or already up to date) in {dest}", file=out)
        return 0
    busybox = _busybox_usable()
    dynamic = [DemoProgram(label, path, argv) for label, path, argv in DYNAMIC if _dynamic_usable(path)]
    programs = scenario(binaries, busybox=busybox, dynamic=dynamic)
    env = demo_env()
    note = "" if busybox else f" ({BUSYBOX} is missing or not static: no busybox applets)"
    print(f"aioumm demo: {len(programs)} programs, each in its own stub, all on one event loop{note}", file=out)
    print(file=out, flush=True)
    with tempfile.TemporaryDirectory(prefix="aioumm-demo-") as tmp:
        workdir = Path(tmp)
        _write_inputs(workdir)
        natives = [run_native(p, env, workdir) for p in programs]
        with _working_directory(workdir):
            started = time.perf_counter()
            guests, stats, loop_name = run(run_guests(programs, env))
            wall = time.perf_counter() - started
    return report(programs, guests, natives, stats, loop_name, wall, out)
