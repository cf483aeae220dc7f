"""What ``execve`` runs: finding the program, ``#!`` scripts, the new ``argv``.

:func:`prepare_exec` does everything ``execve`` may still fail at without harm:
it opens the file, checks that it may be executed, follows ``#!`` lines to the
interpreter, and parses the ELF image that will be loaded.  Only when it returns
does the caller replace the old program (the point of no return).

The failures are Linux's:

* the lookup's own errors (``ENOENT``, ``ENOTDIR``, ``ELOOP``, ``ENAMETOOLONG``,
  ``EACCES`` for a directory on the way that cannot be searched);
* ``EACCES`` for a directory, a file that is not regular, or one without execute
  permission;
* ``ENOEXEC`` for a file that is neither an ELF program nor a ``#!`` script, or a
  ``#!`` line with no interpreter name or one cut off by the 256-byte limit;
* ``ELOOP`` past five levels of interpreters.

A dynamically linked program's loader (``PT_INTERP``) is opened here too, looked
up inside the guest's root relative to its working directory like every path,
with ``load_elf_binary``'s checks and errors:

* a ``PT_INTERP`` shorter than 2 or longer than ``PATH_MAX`` bytes, or not
  ending with a NUL: ``ENOEXEC``; one reaching past the end of the file: ``EIO``;
* the loader's lookup and open: ``ENOENT`` (a shell says "not found"),
  ``EACCES`` for a file that is not regular or not executable...;
* a loader shorter than an ELF header: ``EIO``; not ELF, not x86-64, or with
  unusable program headers: ``ELIBBAD``.

Anything else wrong with the loader (not ``ET_EXEC``/``ET_DYN``, bad segments,
itself dynamically linked) Linux only finds once the old program is gone: the
exec succeeds and the new program dies of ``SIGSEGV`` (:class:`.Interpreter`
with no image).  An ``ET_DYN`` image without ``PT_INTERP`` that still lists
``DT_NEEDED`` libraries fails with ``ELIBBAD`` (never ``ENOEXEC``, which would
make a shell run the binary as a shell script).

``#!`` lines are read as ``fs/binfmt_script.c`` reads them: the first 256 bytes;
the interpreter is the first word after ``#!`` (blanks are spaces and tabs), and
everything after it up to the end of the line, blanks trimmed at both ends, is
*one* optional argument.  The new ``argv`` is the interpreter, the argument if
any, the file name ``execve`` was given, then the old ``argv`` without its first
entry.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from .elf import (
    EHDR,
    ELFMAG,
    EM_X86_64,
    MAX_PHDR_BYTES,
    PHDR,
    BadInterpreterPath,
    DynamicProgram,
    ElfImage,
    parse_elf,
)
from .errors import GuestError, SyscallError
from .files import Loc, Vfs
from .loader import Interpreter

__all__ = ["ExecPlan", "open_interpreter", "parse_shebang", "prepare_exec"]

#: How much of a file Linux looks at to recognise its format (``BINPRM_BUF_SIZE``).
BINPRM_BUF_SIZE = 256
#: Interpreter levels Linux follows before ``ELOOP``.
MAX_INTERP_DEPTH = 5

_BLANKS = b" \t"


@dataclass
class ExecPlan:
    """A program ready to be loaded: the caller owns (and closes) ``fd``."""

    image: ElfImage
    #: A controller descriptor of the ELF file (``O_RDONLY``).
    fd: int
    #: The program's ``argv`` (with any interpreter and its argument in front).
    argv: list[bytes]
    #: The guest path of the program loaded (what ``/proc/self/exe`` names).
    exe: str
    #: The file name ``execve`` was given (``AT_EXECFN``; ``comm`` is its last part).
    filename: bytes
    #: The loader of a dynamically linked program.
    interp: Interpreter | None = None

    def close(self) -> None:
        """Close the descriptors the plan holds."""
        os.close(self.fd)
        if self.interp is not None:
            os.close(self.interp.fd)
            self.interp = None


def _spacetab(c: int) -> bool:
    return c in (0x20, 0x09)


def parse_shebang(head: bytes) -> tuple[bytes, bytes | None]:
    """``(interpreter, argument or None)`` from the first bytes of a ``#!`` file.

    Follows ``load_script`` step by step.  Raises :class:`SyscallError`
    (``ENOEXEC``) when there is no interpreter name, or when the line does
    not end within the first 256 bytes and the name may have been cut there.
    """
    buf = head[:BINPRM_BUF_SIZE].ljust(BINPRM_BUF_SIZE, b"\0")
    if buf[:2] != b"#!":
        raise SyscallError(errno.ENOEXEC)
    buf_end = BINPRM_BUF_SIZE - 1

    def next_terminator(a: int, b: int) -> int | None:
        return next((i for i in range(a, b) if _spacetab(buf[i]) or buf[i] == 0), None)

    def next_non_spacetab(a: int, b: int) -> int | None:
        return next((i for i in range(a, b) if not _spacetab(buf[i])), None)

    i_end: int | None = None
    for i in range(BINPRM_BUF_SIZE):  # strnchr: the search stops at a NUL too
        if buf[i] in (0, 0x0A):
            i_end = i if buf[i] == 0x0A else None
            break
    if i_end is None:
        first = next_non_spacetab(2, buf_end)
        if first is None or next_terminator(first, buf_end) is None:
            raise SyscallError(errno.ENOEXEC)  # all blanks, or a name that may be cut
        i_end = buf_end
    while _spacetab(buf[i_end - 1]):
        i_end -= 1
    i_name = next_non_spacetab(2, i_end)
    if i_name is None or i_name == i_end:
        raise SyscallError(errno.ENOEXEC)
    i_sep = next_terminator(i_name, i_end)
    arg: bytes | None = None
    if i_sep is not None and buf[i_sep] != 0:
        i_arg = next_non_spacetab(i_sep, i_end)
        if i_arg is not None:
            arg = buf[i_arg:i_end].split(b"\0", 1)[0]
    name = buf[i_name : i_sep if i_sep is not None else i_end]
    return name, arg


def _open_exec(vfs: Vfs, where: Loc | int, *, nofollow: bool = False) -> int:
    """Open a file to execute it, with Linux's checks; the caller owns the descriptor.

    ``where`` is a located path, or a host descriptor of the file itself.
    """
    if isinstance(where, int):
        fd = os.open(f"/proc/self/fd/{where}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    else:
        fd = vfs.open(where, os.O_RDONLY | (os.O_NOFOLLOW if nofollow else 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SyscallError(errno.EACCES)  # a directory, a device, a FIFO...
        if not st.st_mode & 0o111 or not os.access(f"/proc/self/fd/{fd}", os.X_OK):
            raise SyscallError(errno.EACCES)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _parse_elf(path: str, fd: int) -> ElfImage:
    size = os.fstat(fd).st_size
    if size == 0:
        raise SyscallError(errno.ENOEXEC)
    try:
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as data:
            return parse_elf(path, data)
    except DynamicProgram as exc:
        raise SyscallError(errno.ELIBBAD) from exc
    except BadInterpreterPath as exc:
        raise SyscallError(exc.errno) from exc
    except GuestError as exc:
        raise SyscallError(errno.ENOEXEC) from exc


def prepare_exec(
    vfs: Vfs,
    locate: Callable[[str], Loc],
    first: Loc | int,
    filename: bytes,
    argv: list[bytes],
    *,
    nofollow: bool = False,
) -> ExecPlan:
    """Open and check what ``execve(filename, argv, ...)`` runs.

    ``first`` is where ``filename`` was found (``execveat`` may look it up
    relative to a directory, or name a descriptor: a host descriptor then);
    ``nofollow`` refuses a symbolic link there (``ELOOP``).  An interpreter
    named by a ``#!`` line is found with ``locate`` (relative to the working
    directory, as Linux does).  Raises :class:`SyscallError` or
    :class:`OSError` with the errno of the failure; nothing has changed then.
    """
    args = list(argv) if argv else [b""]  # Linux gives a program with no argv an empty argv[0]
    where: Loc | int = first
    shown = filename  # the name the next level sees in its argv (bprm->interp)
    for depth in range(MAX_INTERP_DEPTH + 1):
        fd = _open_exec(vfs, where, nofollow=nofollow and depth == 0)
        try:
            head = os.pread(fd, BINPRM_BUF_SIZE, 0)
            if head[:2] != b"#!":
                image = _parse_elf(os.fsdecode(shown), fd)
                interp = open_interpreter(vfs, locate, image) if image.interp is not None else None
                return ExecPlan(image, fd, args, vfs.path_of(fd), filename, interp)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        name, arg = parse_shebang(head)
        args = [name, *([arg] if arg is not None else []), shown, *args[1:]]
        shown = name
        where = locate(os.fsdecode(name))
    raise SyscallError(errno.ELOOP)


def open_interpreter(vfs: Vfs, locate: Callable[[str], Loc], image: ElfImage) -> Interpreter:
    """Open and read the loader ``image`` names in ``PT_INTERP`` (see the module docstring).

    Raises :class:`SyscallError` or :class:`OSError` with the errno ``execve``
    fails with; the caller owns the returned descriptor.
    """
    assert image.interp is not None
    name = os.fsdecode(image.interp)
    fd = _open_exec(vfs, locate(name))
    try:
        head = os.pread(fd, EHDR.size, 0)
        if len(head) < EHDR.size:
            raise SyscallError(errno.EIO)
        fields = EHDR.unpack(head)
        machine, phoff, phentsize, phnum = fields[2], fields[5], fields[9], fields[10]
        if head[:4] != ELFMAG or machine != EM_X86_64:
            raise SyscallError(errno.ELIBBAD)
        size = os.fstat(fd).st_size
        table = phnum * PHDR.size
        if phentsize != PHDR.size or not 0 < table <= MAX_PHDR_BYTES or phoff + table > size:
            raise SyscallError(errno.ELIBBAD)
        loader: ElfImage | None
        try:
            with mmap.mmap(fd, size, prot=mmap.PROT_READ) as data:
                loader = parse_elf(name, data)
        except GuestError:
            loader = None  # Linux finds out past the point of no return
        if loader is not None and loader.interp is not None:
            loader = None  # a loader that needs a loader cannot start
        return Interpreter(loader, fd, vfs.path_of(fd))
    except BaseException:
        os.close(fd)
        raise
