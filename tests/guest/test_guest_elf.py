"""ELF parsing and checking on real static programs and on broken copies of them."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from aioumm import abi
from aioumm.errors import AioummError
from aioumm.guest.elf import ET_DYN, ET_EXEC, PF_W, PF_X, PHDR, PT_LOAD, open_program, parse_elf
from aioumm.guest.errors import GuestError
from aioumm.guest.layout import default_layout


def _load(path: Path) -> bytes:
    return path.read_bytes()


def _readelf_loads(path: Path | str) -> list[tuple[int, int, int, int]]:
    """(offset, vaddr, filesz, memsz) of every PT_LOAD, as readelf sees them."""
    out = subprocess.run(["readelf", "-lW", str(path)], check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == "LOAD":
            rows.append((int(parts[1], 16), int(parts[2], 16), int(parts[4], 16), int(parts[5], 16)))
    return rows


def test_static_exec_matches_readelf(hello: Path) -> None:
    image, fd = open_program(str(hello))
    os.close(fd)
    assert image.e_type == ET_EXEC and not image.is_pie
    assert [(s.offset, s.vaddr, s.filesz, s.memsz) for s in image.segments] == _readelf_loads(hello)
    assert any(s.flags & PF_X for s in image.segments)
    assert any(s.flags & PF_W for s in image.segments)
    assert image.tls is not None and image.relro is not None
    assert image.phentsize == PHDR.size and image.phnum >= len(image.segments)
    assert image.phdr_vaddr == image.segments[0].vaddr + image.phoff  # first segment maps the headers
    assert image.load_bias(default_layout()) == 0


def test_static_pie_is_loaded_at_the_pie_base(hello_pie: Path) -> None:
    image, fd = open_program(str(hello_pie))
    os.close(fd)
    layout = default_layout()
    assert image.e_type == ET_DYN and image.is_pie
    bias = image.load_bias(layout)
    assert image.lowest + bias == layout.pie_base
    image.check_placement(layout, bias)


def test_busybox_parses(busybox: str) -> None:
    image, fd = open_program(busybox)
    os.close(fd)
    assert [(s.offset, s.vaddr, s.filesz, s.memsz) for s in image.segments] == _readelf_loads(busybox)


def test_not_an_elf(tmp_path: Path) -> None:
    p = tmp_path / "script"
    p.write_text("#!/bin/sh\necho hi\n")
    p.chmod(0o755)
    with pytest.raises(GuestError, match=rf"{p}: not an ELF file"):
        open_program(str(p))


def test_truncated(hello: Path) -> None:
    data = _load(hello)
    with pytest.raises(GuestError, match="x: truncated ELF file"):
        parse_elf("x", data[:40])
    with pytest.raises(GuestError, match="truncated"):
        parse_elf("x", data[:2000])  # header fine, segments past the end


def test_wrong_class_and_machine(hello: Path) -> None:
    data = bytearray(_load(hello))
    bad = bytearray(data)
    bad[4] = 1  # ELFCLASS32
    with pytest.raises(GuestError, match="wrong ELF class"):
        parse_elf("x", bytes(bad))
    bad = bytearray(data)
    struct.pack_into("<H", bad, 18, 183)  # EM_AARCH64
    with pytest.raises(GuestError, match="wrong machine 183"):
        parse_elf("x", bytes(bad))


def test_dynamic_program_names_its_loader(tmp_path: Path) -> None:
    src = Path(__file__).parent / "progs" / "hello.c"
    out = tmp_path / "dyn"
    subprocess.run(["gcc", "-O1", "-o", str(out), str(src)], check=True)
    image, fd = open_program(str(out))
    os.close(fd)
    shown = subprocess.run(["readelf", "-lW", str(out)], check=True, capture_output=True, text=True).stdout
    assert f"[Requesting program interpreter: {image.interp.decode()}]" in shown
    assert image.is_pie and image.interp == b"/lib64/ld-linux-x86-64.so.2"


def test_shared_library_refused(tmp_path: Path) -> None:
    src = tmp_path / "lib.c"
    src.write_text('#include <stdio.h>\nint f(void) { return puts("x"); }\n')
    out = tmp_path / "lib.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    with pytest.raises(GuestError, match=r"needs shared libraries \(DT_NEEDED\) but names no loader|entry point"):
        open_program(str(out))


def test_segment_in_the_stub_area_refused(hello: Path, tmp_path: Path) -> None:
    data = bytearray(_load(hello))
    phoff, phnum = struct.unpack_from("<Q", data, 32)[0], struct.unpack_from("<H", data, 56)[0]
    last = None
    for i in range(phnum):
        if struct.unpack_from("<I", data, phoff + i * PHDR.size)[0] == PT_LOAD:
            last = phoff + i * PHDR.size
    assert last is not None
    vaddr = struct.unpack_from("<Q", data, last + 16)[0]
    struct.pack_into("<Q", data, last + 16, abi.STUB_START + (vaddr & 0xFFF))
    image = parse_elf("x", bytes(data))
    with pytest.raises(GuestError, match="overlaps the stub area"):
        image.check_placement(default_layout(), 0)


def test_open_errors_name_path_and_reason(hello: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(GuestError, match=rf"{missing}: no such file or directory"):
        open_program(str(missing))
    noexec = tmp_path / "noexec"
    shutil.copy(hello, noexec)
    noexec.chmod(0o644)
    with pytest.raises(GuestError, match=rf"{noexec}: permission denied"):
        open_program(str(noexec))
    with pytest.raises(GuestError, match="is a directory"):
        open_program(str(tmp_path))


def test_guest_error_is_an_aioumm_error() -> None:
    assert issubclass(GuestError, AioummError)
