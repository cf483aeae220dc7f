"""cffi builder (out-of-line API mode) for ``aioumm._native``.

The cdef is ``stub_src/stub_abi.h`` itself, with the parts marked C-only
dropped and every ``#define`` turned into ``#define NAME ...`` so the C
compiler, not a second copy, supplies each value.  The struct declarations
are given in full: cffi then checks every field against the compiler's layout
when the module is built, and a layout mismatch fails the build.
"""

from __future__ import annotations

import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
ABI_HEADER = HERE / "stub_src" / "stub_abi.h"

HELPERS_CDEF = """
#define AIOUMM_REPORT_BAD_SIGNAL ...
#define AIOUMM_REPORT_BAD_SIGINFO ...
#define AIOUMM_REPORT_BAD_UCONTEXT ...
#define AIOUMM_REPORT_SIGNO_MISMATCH ...
#define AIOUMM_SPUN_TIMEOUT ...
#define AIOUMM_SPUN_REPORT ...
#define AIOUMM_SPUN_NOT_HERE ...
#define AIOUMM_SPUN_NOT_RUNNING ...
#define AIOUMM_SPUN_ALREADY ...
#define AIOUMM_PASS_MAX ...
#define AIOUMM_BATCH_FULL ...
#define AIOUMM_BATCH_QUEUED ...
#define AIOUMM_BATCH_REFUSED ...
#define F_DUPFD_QUERY ...
int aioumm_read_report(const struct stub_data *d, struct aioumm_report *r);
uint32_t aioumm_load_handoff(const struct stub_data *d);
int aioumm_hand_back(struct stub_data *d, uint32_t command, uint32_t spin_limit);
int aioumm_wake(struct stub_data *d);
int aioumm_hand_back_later(struct stub_data *d, uint32_t command, uint32_t spin_limit);
int aioumm_spin_for_report(const struct stub_data *d, int64_t budget_ns);
int aioumm_watch(int epfd, int eventfd, struct stub_data *d);
int aioumm_take_handovers(int epfd, struct stub_data **ready, int max, struct stub_data **last);
double aioumm_pause_ns(void);
int aioumm_wake_many(struct stub_data **ds, int n);
int aioumm_same_file(int a, int b);
int aioumm_batch_add(struct aioumm_batch *b, uint32_t op, uint64_t addr, uint64_t length,
                     uint32_t prot, int32_t fd, uint64_t offset, uint32_t flags);
extern int aioumm_no_dupfd_query;
int aioumm_batch_close(struct aioumm_batch *b);
uint32_t aioumm_batch_load(struct stub_data *d, const struct aioumm_batch *b, uint32_t seq);
int aioumm_send_fds(int sock, const int32_t *fds, uint32_t n, uint32_t seq);
void *aioumm_map_shared(int fd, size_t length);
int aioumm_unmap(void *addr, size_t length);
int aioumm_probe_mseal(void);
int aioumm_current_cpu(void);
int aioumm_has_rdtscp(void);
"""

# The helpers' own structs are declared once, in _native.c: their text goes into the cdef as it stands.
_NATIVE_STRUCTS = ("aioumm_report", "aioumm_batch")

_C_ONLY = re.compile(r"/\* STUB_ABI_C_ONLY_BEGIN \*/.*?/\* STUB_ABI_C_ONLY_END \*/", re.S)
_DEFINE = re.compile(r"^#define[ \t]+(\w+)[ \t]+\S.*$", re.M)


def abi_cdef(text: str) -> str:
    """The ABI header as cffi cdef source."""
    text = _C_ONLY.sub("", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = _DEFINE.sub(lambda m: f"#define {m.group(1)} ...", text)
    kept = [
        line for line in text.splitlines() if not re.match(r"\s*#\s*(if|endif|else|include|define\s+\w+\s*$)", line)
    ]
    return "\n".join(kept)


def make_ffi() -> FFI:
    ffibuilder = FFI()
    native = (HERE / "_native.c").read_text()
    structs = []
    for name in _NATIVE_STRUCTS:
        found = re.search(rf"^struct {name} \{{.*?^\}};$", native, re.S | re.M)
        if found is None:
            raise RuntimeError(f"_native.c: no `struct {name} {{ ... }};` at the start of a line")
        structs.append(found.group(0))
    ffibuilder.cdef(abi_cdef(ABI_HEADER.read_text()) + "\n" + "\n".join(structs) + HELPERS_CDEF)
    ffibuilder.set_source(
        "aioumm._native",
        native,
        include_dirs=[str(HERE)],
        extra_compile_args=["-O2", "-Wall"],
    )
    return ffibuilder


ffibuilder = make_ffi()

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE.parent / "build" / "cffi"), verbose=True)
