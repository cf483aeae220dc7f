"""C and Python agree on the stub ABI: sizes, offsets and constants, checked by compiling C."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from aioumm import abi
from aioumm._native_build import ABI_HEADER
from aioumm.abi import ffi, lib

STRUCTS = [
    "stub_init",
    "stub_arg_check",
    "stub_site",
    "stub_code_header",
    "stub_record",
    "stub_sigcontext",
    "stub_ucontext",
    "stub_siginfo",
    "stub_data",
]


def _fields(struct: str) -> list[str]:
    return [name for name, _ in ffi.typeof(f"struct {struct}").fields]


def _constants() -> list[str]:
    text = ABI_HEADER.read_text()
    names = re.findall(r"^#define[ \t]+(STUB_\w+)[ \t]+\S", text, re.M)
    names += re.findall(r"^\t(STUB_[A-Z0-9_]+) = ", text, re.M)
    return sorted(set(names))


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """What the C compiler says, for every struct size, field offset and constant."""
    lines = ["#include <stdio.h>", "#include <stddef.h>", f'#include "{ABI_HEADER}"', "int main(void) {"]
    for struct in STRUCTS:
        lines.append(f'printf("sizeof {struct} %zu\\n", sizeof(struct {struct}));')
        for field in _fields(struct):
            lines.append(f'printf("offsetof {struct}.{field} %zu\\n", offsetof(struct {struct}, {field}));')
    for name in _constants():
        lines.append(f'printf("const {name} %lld\\n", (long long)({name}));')
    lines.append("return 0; }")
    tmp = tmp_path_factory.mktemp("abi")
    src = tmp / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp / "layout"
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {key: int(value) for key, value in (line.rsplit(" ", 1) for line in out.splitlines())}


def test_struct_sizes_and_offsets_agree(c_layout: dict[str, int]) -> None:
    checked = 0
    for struct in STRUCTS:
        assert ffi.sizeof(f"struct {struct}") == c_layout[f"sizeof {struct}"], struct
        for field in _fields(struct):
            assert ffi.offsetof(f"struct {struct}", field) == c_layout[f"offsetof {struct}.{field}"], field
            checked += 1
    assert checked > 60


def test_constants_agree(c_layout: dict[str, int]) -> None:
    names = _constants()
    assert "STUB_MAX_FDS" in names and "STUB_EXIT_SECCOMP" in names and "STUB_HANDOFF_CONTROLLER" in names
    for name in names:
        assert getattr(lib, name) == c_layout[f"const {name}"], name


def test_python_names_come_from_the_header(c_layout: dict[str, int]) -> None:
    assert abi.MAX_FDS == c_layout["const STUB_MAX_FDS"] == 4
    assert c_layout["const STUB_AREA_START"] == abi.STUB_START
    assert c_layout["const STUB_AREA_END"] == abi.STUB_END
    assert {e.value for e in abi.StubExit} == {v for k, v in c_layout.items() if k.startswith("const STUB_EXIT_")}
    for code in abi.StubExit:
        assert code.explanation


def test_the_kernel_agrees_with_our_signal_frame_structs(tmp_path: Path) -> None:
    """stub_sigcontext / stub_ucontext / stub_siginfo mirror the kernel's and glibc's own."""
    src = tmp_path / "kernel.c"
    src.write_text(
        f"""
#define _GNU_SOURCE
#include <signal.h>
#include <stddef.h>
#include <sys/ucontext.h>
#include "{ABI_HEADER}"
#define SAME(a, b) _Static_assert((a) == (b), #a)
SAME(sizeof(siginfo_t), sizeof(struct stub_siginfo));
SAME(offsetof(siginfo_t, si_addr), offsetof(struct stub_siginfo, u.addr));
SAME(offsetof(siginfo_t, si_pid), offsetof(struct stub_siginfo, u.kill.pid));
SAME(offsetof(siginfo_t, si_call_addr), offsetof(struct stub_siginfo, u.sys.call_addr));
SAME(offsetof(siginfo_t, si_syscall), offsetof(struct stub_siginfo, u.sys.syscall));
SAME(offsetof(siginfo_t, si_arch), offsetof(struct stub_siginfo, u.sys.arch));
SAME(offsetof(ucontext_t, uc_mcontext), offsetof(struct stub_ucontext, mcontext));
SAME(offsetof(ucontext_t, uc_mcontext.gregs[REG_RIP]), offsetof(struct stub_ucontext, mcontext.rip));
SAME(offsetof(ucontext_t, uc_mcontext.gregs[REG_RAX]), offsetof(struct stub_ucontext, mcontext.rax));
SAME(offsetof(ucontext_t, uc_mcontext.gregs[REG_R8]), offsetof(struct stub_ucontext, mcontext.r8));
SAME(offsetof(ucontext_t, uc_mcontext.gregs[REG_EFL]), offsetof(struct stub_ucontext, mcontext.eflags));
SAME(offsetof(ucontext_t, uc_mcontext.gregs[REG_CR2]), offsetof(struct stub_ucontext, mcontext.cr2));
SAME(offsetof(ucontext_t, uc_mcontext.fpregs), offsetof(struct stub_ucontext, mcontext.fpstate));
SAME(offsetof(ucontext_t, uc_sigmask), offsetof(struct stub_ucontext, sigmask));
int main(void) {{ return 0; }}
"""
    )
    subprocess.run(["gcc", "-fsyntax-only", str(src)], check=True)


def test_a_report_is_read_from_the_leading_fields_of_the_native_struct() -> None:
    """``ReportReader`` unpacks a Report straight from ``struct aioumm_report``'s bytes."""
    from aioumm.report import _REPORT_FIELDS, Report

    names = ["signal", "code", "errno_", "addr", "syscall", "arch", "pid"]
    assert len(names) == len(Report._fields)
    assert [ffi.offsetof("struct aioumm_report", n) for n in names] == [8 * i for i in range(len(names))]
    assert _REPORT_FIELDS.size == ffi.offsetof("struct aioumm_report", "si_signo")
    r = ffi.new("struct aioumm_report *")
    r.signal, r.code, r.errno_, r.addr, r.syscall, r.arch, r.pid = 31, -1, 0, 2**64 - 8, 500, 0xC000003E, 7
    assert Report._make(_REPORT_FIELDS.unpack_from(ffi.buffer(r))) == (31, -1, 0, 2**64 - 8, 500, 0xC000003E, 7)
