"""Dynamically linked programs: the host's own, and broken ones, compared with native runs."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROGS, compile_prog

from aioumm.guest.elf import PHDR, PT_INTERP, BadInterpreterPath, parse_elf
from aioumm.guest.errors import GuestError
from aioumm.guest.runner import run_program
from aioumm.loop import Controller

RUN = [sys.executable, "-m", "aioumm", "run", "--"]
LOADER = "/lib64/ld-linux-x86-64.so.2"


def native(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    res: subprocess.CompletedProcess[bytes] = subprocess.run(cmd, capture_output=True, timeout=120, **kw)  # type: ignore[call-overload]
    if res.returncode < 0:  # what a shell (and aioumm run) shows for a death by signal
        res.returncode = 128 - res.returncode
    return res


def guest(cmd: list[str], *, root: str | None = None, **kw: object) -> subprocess.CompletedProcess[bytes]:
    run = RUN if root is None else [*RUN[:-1], "--root", root, "--"]
    res: subprocess.CompletedProcess[bytes] = subprocess.run(run + cmd, capture_output=True, timeout=120, **kw)  # type: ignore[call-overload]
    return res


def same_as_native(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    want, got = native(cmd, **kw), guest(cmd, root=None, **kw)
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
    return got


def compile_dynamic(src: Path, out: Path, *flags: str) -> Path:
    """``gcc -O1`` without ``-static``: a PIE that needs ld.so and libc.so."""
    subprocess.run(["gcc", "-O1", *flags, "-o", str(out), str(src)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def dyn_aux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_dynamic(PROGS / "dyn_aux.c", tmp_path_factory.mktemp("dyn") / "dyn_aux")


@pytest.fixture(scope="module")
def dyn_hello(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_dynamic(PROGS / "hello.c", tmp_path_factory.mktemp("dyn") / "hello")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A directory whose ``ls -l`` is the same every run."""
    d = tmp_path / "tree"
    d.mkdir()
    for i, name in enumerate(["alpha.txt", "beta", "gamma.log", "z z"]):
        f = d / name
        f.write_bytes(b"x" * (i * 1000 + 7))
        f.chmod(0o640 + i)
        os.utime(f, (1_600_000_000 + i, 1_600_000_000 + i * 3600))
    (d / "sub").mkdir()
    os.utime(d / "sub", (1_500_000_000, 1_500_000_000))
    (d / "link").symlink_to("alpha.txt")
    os.utime(d / "link", (1_500_000_000, 1_500_000_000), follow_symlinks=False)
    return d


# ------------------------------------------------------------ programs that work


@pytest.mark.asyncio
async def test_in_process_the_loader_maps_libc(
    dyn_hello: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    trace = io.StringIO()
    async with Controller() as ctl:
        assert await run_program(ctl, str(dyn_hello), [str(dyn_hello)], {}, strace=trace) == 0
        missing = tmp_path / "missing"
        compile_dynamic(PROGS / "hello.c", missing, "-Wl,--dynamic-linker=/nonexistent/ld.so")
        with pytest.raises(GuestError, match=r"interpreter /nonexistent/ld\.so: no such file or directory"):
            await run_program(ctl, str(missing), [str(missing)], {})
    assert capfd.readouterr().out == "hello world\n"
    lines = trace.getvalue().splitlines()
    assert any(line.startswith('openat(AT_FDCWD, "/lib/x86_64-linux-gnu/libc.so.6", ') for line in lines), lines
    assert any("MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE, 3, " in line for line in lines)
    assert lines[-1] == "+++ exited with 0 +++"
    assert ctl.stubs == frozenset()


def test_auxv_exe_maps_and_dlopen_match_native(dyn_aux: Path) -> None:
    got = same_as_native([str(dyn_aux), "one", "two"])
    lines = got.stdout.decode().splitlines()
    assert lines[0] == "argv 3 two"
    assert f"AT_EXECFN {dyn_aux}" in lines
    assert "AT_ENTRY is _start 1" in lines and "AT_PHDR is the program's 1" in lines
    assert f"exe {dyn_aux}" in lines
    assert "AT_BASE maps the loader 1, program mapped 1" in lines
    assert lines[-1] == "cos(1) = 0.540302305868, pow(2, 0.5) = 1.414213562373"


def test_the_loader_run_directly_matches_native(dyn_aux: Path) -> None:
    got = same_as_native([LOADER, str(dyn_aux), "x"])
    assert f"AT_EXECFN {dyn_aux}" in got.stdout.decode().splitlines()
    assert same_as_native([LOADER, "/bin/echo", "via", "the loader"]).stdout == b"via the loader\n"


def test_ls_cat_env_match_native(tree: Path) -> None:
    got = same_as_native(["/bin/ls", "-l", "--time-style=+%s", str(tree)])
    assert b"z z" in got.stdout and b"link -> alpha.txt" in got.stdout
    same_as_native(["/bin/ls", "-la", "/usr"])  # / itself changes while tests run (/tmp)
    same_as_native(["/bin/ls", str(tree / "missing")])  # an error and status 2
    with (tree / "beta").open("rb") as a, (tree / "beta").open("rb") as b:
        want = native(["/bin/cat", "-", str(tree / "alpha.txt")], stdin=a)
        got = guest(["/bin/cat", "-", str(tree / "alpha.txt")], stdin=b)
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
    assert len(got.stdout) == 1007 + 7
    assert same_as_native(["/usr/bin/env", "-i", "A=1", "/usr/bin/env"]).stdout == b"A=1\n"


def test_dash_pipeline_of_dynamic_programs(tree: Path) -> None:
    script = (
        f"/bin/ls {tree} | /usr/bin/sort -r | /usr/bin/head -n 3; "
        f"/bin/cat {tree}/gamma.log | /usr/bin/wc -c; "
        "/usr/bin/readlink /proc/self/exe; /bin/ls /nonexistent 2>&1; echo status $?"
    )
    got = same_as_native(["/bin/sh", "-c", script])
    assert got.stdout.decode().splitlines()[:5] == ["z z", "sub", "link", "2007", "/usr/bin/readlink"]


def test_host_python_matches_native() -> None:
    # The interpreter running these tests (not the virtualenv's link to it): dynamically
    # linked wherever Python is built as usual, and present on every machine the suite runs on.
    python = os.path.realpath(sys.executable)
    code = 'import json, sys; print(json.dumps({"a": sys.argv}))'
    assert same_as_native([python, "-I", "-c", code, "x"]).stdout == b'{"a": ["-c", "x"]}\n'


def test_static_busybox_execs_dynamic_programs(busybox: str, tree: Path) -> None:
    script = f"/bin/ls -l --time-style=+%s {tree}; /bin/sh -c 'echo from dash $0' arg0; echo status $?"
    got = same_as_native([busybox, "sh", "-c", script])
    assert got.stdout.endswith(b"from dash arg0\nstatus 0\n")


def test_the_loader_is_looked_up_inside_the_root(dyn_hello: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(dyn_hello, root / "bin" / "hello")
    got = guest(["/bin/hello"], root=str(root))
    assert got.returncode == 127  # as a shell says "not found" for a missing loader
    assert got.stderr == f"aioumm run: /bin/hello: interpreter {LOADER}: no such file or directory\n".encode()
    # With a loader and libc of its own (the loader's default directory), it runs.
    (root / "lib64").mkdir()
    shutil.copy2(os.path.realpath(LOADER), root / "lib64" / "ld-linux-x86-64.so.2")
    libdir = root / "lib" / "x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    shutil.copy2("/lib/x86_64-linux-gnu/libc.so.6", libdir / "libc.so.6")
    want = native([str(dyn_hello)])
    got = guest(["/bin/hello"], root=str(root))
    assert (
        (got.returncode, got.stdout, got.stderr)
        == (want.returncode, want.stdout, want.stderr)
        == (0, b"hello world\n", b"")
    )


# ------------------------------------------------------------ broken loaders


def _interp_header(data: bytes) -> int:
    phoff, phnum = int(struct.unpack_from("<Q", data, 32)[0]), int(struct.unpack_from("<H", data, 56)[0])
    for i in range(phnum):
        at = phoff + i * PHDR.size
        if struct.unpack_from("<I", data, at)[0] == PT_INTERP:
            return at
    raise AssertionError("no PT_INTERP")


def _patched(
    src: Path, out: Path, *, offset: int | None = None, size: int | None = None, last: bytes | None = None
) -> str:
    data = bytearray(src.read_bytes())
    at = _interp_header(bytes(data))
    p_offset, p_filesz = struct.unpack_from("<Q", data, at + 8)[0], struct.unpack_from("<Q", data, at + 32)[0]
    if last is not None:
        data[p_offset + p_filesz - 1 : p_offset + p_filesz] = last
    if offset is not None:
        struct.pack_into("<Q", data, at + 8, offset)
    if size is not None:
        struct.pack_into("<Q", data, at + 32, size)
    out.write_bytes(data)
    out.chmod(0o755)
    return out.name


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory, dyn_hello: Path, hello: Path, hello_pie: Path) -> Path:
    """A directory of programs whose loader is missing, malformed or not a loader."""
    d = tmp_path_factory.mktemp("broken")
    src = PROGS / "hello.c"

    def with_loader(name: str, loader: str, *flags: str) -> None:
        compile_dynamic(src, d / name, f"-Wl,--dynamic-linker={loader}", *flags)

    (d / "short.txt").write_text("just text\n")  # shorter than an ELF header
    (d / "long.txt").write_bytes(b"#" * 200)
    (d / "noexec-ld").write_bytes(Path(LOADER).read_bytes())
    ldcore = bytearray(Path(LOADER).read_bytes())
    struct.pack_into("<H", ldcore, 16, 4)  # ET_CORE: refused past the point of no return
    (d / "core-ld").write_bytes(ldcore)
    ldarm = bytearray(Path(LOADER).read_bytes())
    struct.pack_into("<H", ldarm, 18, 183)  # EM_AARCH64
    (d / "arm-ld").write_bytes(ldarm)
    ldphnum = bytearray(Path(LOADER).read_bytes())
    struct.pack_into("<H", ldphnum, 56, 0xFFFF)  # a program header table past 64 KiB
    (d / "phnum-ld").write_bytes(ldphnum)
    ldphoff = bytearray(Path(LOADER).read_bytes())
    struct.pack_into("<Q", ldphoff, 32, 1 << 40)  # program headers far past the end
    (d / "phoff-ld").write_bytes(ldphoff)
    for f in ("short.txt", "long.txt", "core-ld", "arm-ld", "phnum-ld", "phoff-ld"):
        (d / f).chmod(0o755)
    (d / "noexec-ld").chmod(0o644)
    os.symlink(os.path.realpath(LOADER), d / "myld")
    with_loader("missing", "/nonexistent/ld.so")
    with_loader("short", str(d / "short.txt"))
    with_loader("long", str(d / "long.txt"))
    with_loader("noexec", str(d / "noexec-ld"))
    with_loader("dir", str(d))
    with_loader("core", str(d / "core-ld"))
    with_loader("arm", str(d / "arm-ld"))
    with_loader("phnum", str(d / "phnum-ld"))
    with_loader("phoff", str(d / "phoff-ld"))
    with_loader("dynamic", str(dyn_hello))  # a loader that itself needs one
    with_loader("relative", "myld")  # looked up from the working directory
    # Static programs as loaders: ET_EXEC at its own addresses (over a non-PIE
    # program: Linux maps it MAP_FIXED), static-PIE in the mmap region.
    with_loader("static-ld", str(hello))
    with_loader("static-ld-nopie", str(hello), "-no-pie")
    with_loader("static-pie-ld", str(hello_pie))
    base = d / "missing"
    _patched(base, d / "nonul", last=b"x")
    _patched(base, d / "toolong", size=5000)
    _patched(base, d / "tooshort", size=1)
    _patched(base, d / "outside", offset=10**7)
    return d


BROKEN = [
    "missing",
    "short",
    "long",
    "noexec",
    "dir",
    "core",
    "arm",
    "phnum",
    "phoff",
    "dynamic",
    "relative",
    "nonul",
    "toolong",
    "tooshort",
    "outside",
    "static-ld",
    "static-ld-nopie",
    "static-pie-ld",
]


def test_broken_loaders_fail_as_on_linux(prog_dir: Path, broken: Path) -> None:
    runner = str(compile_prog("exec_each", prog_dir))
    got = same_as_native([runner, *(f"./{n}" for n in BROKEN)], cwd=broken)
    assert got.stdout.decode().splitlines() == [
        "./missing: No such file or directory",
        "./short: Input/output error",
        "./long: Accessing a corrupted shared library",
        "./noexec: Permission denied",
        "./dir: Permission denied",
        "./core: killed by signal 11",
        "./arm: Accessing a corrupted shared library",
        "./phnum: Accessing a corrupted shared library",
        "./phoff: Accessing a corrupted shared library",
        "./dynamic: killed by signal 11",
        "hello world",
        "./relative: exit 0",
        "./nonul: Exec format error",
        "./toolong: Exec format error",
        "./tooshort: Exec format error",
        "./outside: Input/output error",
        "./static-ld: killed by signal 11",
        "hello world",
        "./static-ld-nopie: exit 0",
        "./static-pie-ld: killed by signal 11",
    ]


def test_shells_report_a_missing_loader_as_not_found(busybox: str, broken: Path) -> None:
    got = same_as_native([busybox, "sh", "-c", "./missing; echo $?; ./core; echo $?; ./relative"], cwd=broken)
    assert got.stdout == b"127\n139\nhello world\n"
    got = same_as_native(["/bin/sh", "-c", "./missing; echo $?"], cwd=broken)
    assert got.stdout == b"127\n"


def test_a_broken_first_program_dies_or_fails_as_a_shell_shows_it(broken: Path) -> None:
    got = guest(["./core"], cwd=broken)
    assert (got.returncode, got.stdout, got.stderr) == (139, b"", b"")
    got = guest(["./arm"], cwd=broken)
    assert got.returncode == 126
    assert (
        got.stderr == f"aioumm run: ./arm: interpreter {broken}/arm-ld: accessing a corrupted shared library\n".encode()
    )


def test_malformed_pt_interp_errors(dyn_hello: Path, tmp_path: Path) -> None:
    data = dyn_hello.read_bytes()
    assert parse_elf("p", data).interp == LOADER.encode()
    for kw, err, why in (
        ({"last": b"x"}, 8, "not NUL-terminated"),
        ({"size": 4097}, 8, "bad PT_INTERP size 4097"),
        ({"size": 0}, 8, "bad PT_INTERP size 0"),
        ({"offset": len(data) - 4}, 5, "past the end"),
    ):
        name = _patched(dyn_hello, tmp_path / "p", **kw)
        with pytest.raises(BadInterpreterPath, match=why) as info:
            parse_elf(name, (tmp_path / name).read_bytes())
        assert info.value.errno == err


# ------------------------------------------------------------ what ls -l asks


def test_extended_attribute_reads_match_native(prog_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    try:
        os.setxattr(f, "user.k", b"value")
    except OSError as exc:
        pytest.fail(f"the test directory needs user extended attributes: {exc}")
    (tmp_path / "l").symlink_to("f")
    prog = str(compile_prog("xattrs", prog_dir))
    got = same_as_native([prog, str(f), str(tmp_path / "l")])
    lines = got.stdout.decode().splitlines()
    assert "getxattr: 5 [value]" in lines
    assert "getxattr short buffer: Numerical result out of range" in lines
    assert "getxattr missing: No data available" in lines
    assert "getxattr bad pointer: Bad address" in lines
