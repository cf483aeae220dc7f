"""Run one program in a fresh stub: ``run_program``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Protocol, TextIO

from aioumm.errors import BatchError

from . import syscalls  # noqa: F401  (importing it registers every handler)
from .binfmt import open_interpreter, prepare_exec
from .elf import ElfImage, check_program
from .errors import GuestError, SyscallError
from .files import Vfs
from .kernel import OUTER_GROUP, ProcessTable
from .layout import Layout
from .loader import Interpreter
from .process import GuestProcess, StubLike
from .signals import SI_USER, SIG_IGN, SigAction, SigInfo, sigbit

__all__ = ["run_program"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ControllerLike(Protocol):
    """What ``run_program`` needs from the core's ``Controller``."""

    async def spawn(self) -> StubLike: ...


def _env_list(env: Mapping[str, str] | Sequence[str | bytes]) -> list[bytes]:
    if isinstance(env, Mapping):
        return [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
    return [os.fsencode(e) for e in env]


def _search(vfs: Vfs, name: str, env: list[bytes]) -> str:
    """A name without a slash is looked up in the guest's ``$PATH``, as a shell does."""
    if "/" in name:
        return name
    path = DEFAULT_PATH
    for e in env:
        if e.startswith(b"PATH="):
            path = os.fsdecode(e[5:])
    for d in path.split(":"):
        cand = f"{d or '.'}/{name}"
        try:
            st = vfs.stat(vfs.locate(cand))
        except OSError:
            continue
        if st.st_mode & 0o111 and not os.path.isdir(cand):
            return cand
    raise GuestError(f"{name}: command not found")


def _is_script(fd: int) -> bool:
    """Whether the opened program starts with ``#!`` (a directory or unreadable file is not)."""
    try:
        return os.pread(fd, 2, 0) == b"#!"
    except OSError:
        return False


def _open(vfs: Vfs, path: str) -> int:
    if not path:
        raise GuestError("'': no such file or directory")
    try:
        return vfs.open(vfs.locate(path), os.O_RDONLY)
    except OSError as exc:
        raise GuestError(f"{path}: {os.strerror(exc.errno or 0).lower()}") from exc


def _open_interpreter(vfs: Vfs, path: str, image: ElfImage) -> Interpreter:
    """The loader of the dynamically linked program ``path``, or the error ``execve`` gives."""
    name = os.fsdecode(image.interp or b"")
    try:
        return open_interpreter(vfs, vfs.locate, image)
    except OSError as exc:  # ENOENT keeps its cause: a shell says "not found" (127)
        raise GuestError(f"{path}: interpreter {name}: {os.strerror(exc.errno or 0).lower()}") from exc
    except SyscallError as exc:
        raise GuestError(f"{path}: interpreter {name}: {os.strerror(exc.errno).lower()}") from exc


_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# Python ignores these two itself at start-up, whatever it was given: they are not the caller's.
_SET_BY_PYTHON = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))
_UNBLOCKABLE = (1 << (signal.SIGKILL - 1)) | (1 << (signal.SIGSTOP - 1))


def _inherited_signals() -> tuple[int, int]:
    """The ignored and the blocked signals the guest inherits, as a program ``exec``'d here would.

    Read from ``/proc/thread-self/status``: glibc's ``sigaction`` hides signals 32
    and 33 from ``signal.getsignal``, yet an ignored one is inherited all the same.
    """
    ignored = blocked = 0
    with contextlib.suppress(OSError, ValueError), open("/proc/thread-self/status", "rb") as f:
        for line in f:
            key, _, value = line.partition(b":")
            if key == b"SigIgn":
                ignored = int(value, 16)
            elif key == b"SigBlk":
                blocked = int(value, 16)
    return ignored & ~_SET_BY_PYTHON & ~_UNBLOCKABLE, blocked & ~_UNBLOCKABLE


def _forward(kernel: ProcessTable, sig: int) -> None:
    init = kernel.init
    if init is None:
        return
    if init.status is not None:
        # Only guests left behind by the first one: the runner's caller wants the run over.
        kernel.end_run()
        return
    # A terminal sends SIGINT to its foreground group: the first guest's, unless a guest (an
    # interactive shell running a job) made another one the foreground (TIOCSPGRP).
    targets = kernel.group(kernel.terminal_pgrp) if sig == signal.SIGINT else [init]
    for proc in targets:
        proc.post_signal(sig, SigInfo(sig, SI_USER, 0, os.getuid()))


def _forward_signals(kernel: ProcessTable, ignored: int) -> list[int]:
    """Send the runner's SIGINT, SIGTERM and SIGHUP to the guest; the signals it took over.

    One the runner was told to ignore (``nohup``) stays ignored, as it is in the guest.
    """
    loop = asyncio.get_running_loop()
    done: list[int] = []
    for sig in _FORWARDED:
        if ignored & sigbit(sig):
            continue
        try:
            loop.add_signal_handler(sig, _forward, kernel, sig)
        except (ValueError, RuntimeError, NotImplementedError):
            break  # not the main thread, or a loop without signal support
        done.append(sig)
    return done


async def run_program(
    ctl: ControllerLike,
    path: str,
    argv: Sequence[str | bytes],
    env: Mapping[str, str] | Sequence[str | bytes],
    *,
    root: str = "/",
    cwd: str | None = None,
    strace: TextIO | bool | None = None,
    layout: Layout | None = None,
    stdio: tuple[int, int, int] | None = None,
    forward_signals: bool = False,
    max_processes: int = ProcessTable.DEFAULT_MAX_PROCESSES,
    wait_for_all: bool = True,
) -> int:
    """Run the x86-64 program ``path`` (static or dynamically linked) in a new stub until it is over.

    ``path`` is the guest's name for the program (resolved inside ``root``; a name
    without a slash is searched in the guest's ``PATH``), ``argv`` its arguments
    (``argv[0]`` included) and ``env`` its environment.  It starts in the guest
    directory ``cwd`` (by default the caller's working directory, when that lies
    inside ``root``, else ``/``).  The guest shares the
    controller's standard input, output and error, or the three host descriptors
    ``stdio`` (duplicated; the caller keeps its own).  ``strace`` (a text stream, or
    True for stderr) gets one line per syscall.

    The guest may fork, exec and wait like any Linux program: every process it
    makes runs in a stub of its own, served concurrently on the running loop.  This
    first guest plays ``init`` (orphans are given to it while it lives).  When it
    exits, the guests still running (a background job of a shell) are served on
    until they have all exited, as natively they outlive it; with ``wait_for_all``
    False they are killed at once instead.  At most ``max_processes``
    guest processes (zombies included) and 4096 threads and processes together
    exist at once: beyond that, fork and clone fail with ``EAGAIN`` as at Linux's
    ``RLIMIT_NPROC``.

    Returns the status a shell would show for the first guest: the exit code, or
    ``128 + N`` when it died of signal N.  With ``forward_signals``, SIGINT, SIGTERM
    and SIGHUP sent to the calling process go to the guest instead (SIGINT to every
    guest of the terminal's foreground process group, as a terminal sends it: the first
    one's, unless a guest chose another with ``TIOCSPGRP``); once the first
    guest is gone, any of them ends the run, killing the guests left.  A program that cannot be loaded (missing, not
    executable, not an x86-64 ELF program, its loader missing or unusable) raises :class:`GuestError` naming the path
    and the reason.

    The guest starts with the signals the calling process ignores and blocks, as a
    program it ``exec``'d would (but ``SIGPIPE`` and ``SIGXFSZ``, which Python ignores
    itself, at their defaults); one of the forwarded signals that is ignored stays so.
    """
    trace: TextIO | None = sys.stderr if strace is True else (strace or None)
    envp = _env_list(env)
    args = [os.fsencode(a) for a in argv]
    try:
        vfs = Vfs(root, cwd)
    except OSError as exc:
        where = exc.filename or (cwd if cwd is not None else root)
        raise GuestError(f"{where}: {os.strerror(exc.errno or 0).lower()}") from exc
    try:
        path = _search(vfs, path, envp)
        fd = _open(vfs, path)
    except BaseException:
        vfs.close()
        raise
    proc: GuestProcess | None = None
    stub: StubLike | None = None
    interp: Interpreter | None = None
    kernel = ProcessTable(ctl, max_processes)
    ignored, blocked = _inherited_signals()
    forwarded = _forward_signals(kernel, ignored) if forward_signals else []
    try:
        if _is_script(fd):
            # A script: what execve would run (the interpreter, argv as Linux builds it).
            try:
                plan = prepare_exec(vfs, vfs.locate, fd, os.fsencode(path), args)
            except (OSError, SyscallError) as exc:  # the errno execve would give
                err = exc.errno or errno.ENOEXEC
                raise GuestError(f"{path}: {os.strerror(err).lower()}") from exc
            os.close(fd)
            fd, image, args, exe, interp = plan.fd, plan.image, plan.argv, plan.exe, plan.interp
        else:
            image = check_program(path, fd)
            exe = vfs.path_of(fd)
            if image.interp is not None:
                interp = _open_interpreter(vfs, path, image)
        stub = await ctl.spawn()
        proc = GuestProcess(stub, layout=layout, vfs=vfs, strace=trace, kernel=kernel, pid=kernel.new_pid())
        proc.pgid = proc.sid = OUTER_GROUP
        # Ignored signals and the signal mask are inherited through exec.
        for sig in range(1, 65):
            if ignored & sigbit(sig):
                proc.signals.actions[sig] = SigAction(handler=SIG_IGN)
        proc.signals.blocked = blocked
        proc.inherit_stdio(stdio or (0, 1, 2))
        try:
            proc.exec_image(image, fd, args, envp, os.fsencode(path), exe, interp)
        except SyscallError as exc:  # E2BIG, ENOMEM: what execve would have failed with
            raise GuestError(f"{path}: {os.strerror(exc.errno).lower()}") from exc
        os.close(fd)
        fd = -1
        if interp is not None:
            os.close(interp.fd)
            interp = None
        try:
            status = await kernel.run_init(proc)
        except BatchError as exc:
            raise GuestError(f"{path}: the stub could not map the guest's memory: {exc}") from exc
        if wait_for_all:
            await kernel.wait_all()
        return 128 + (status & 0x7F) if status & 0x7F else (status >> 8) & 0xFF
    finally:
        loop = asyncio.get_running_loop()
        for sig in forwarded:
            loop.remove_signal_handler(sig)
        if fd >= 0:
            os.close(fd)
        if interp is not None:
            os.close(interp.fd)
        await kernel.shutdown()
        if stub is not None:
            stub.kill()
            with contextlib.suppress(Exception):
                await stub.wait_exit()
        if proc is not None:
            proc.close()
        else:
            vfs.close()
