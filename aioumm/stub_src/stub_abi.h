/*
 * stub_abi.h - the one contract between a stub child and its controller.
 *
 * Everything both sides must agree on lives here and only here: where the
 * stub pages sit, the init message, the layout of the stub data page (the
 * handoff word, the report, the batch), the record format, and every exit
 * code a stub can die with.  The C side includes it; the Python side gets
 * every size, offset and constant from it through cffi (aioumm/_native_build.py
 * feeds this file to cffi's cdef after dropping the preprocessor-only
 * parts), so no offset is ever written twice.
 *
 * Rules for this file, so cffi can read it:
 *   - object-like #defines hold plain integer literals;
 *   - only fixed-width integer types, structs, unions and enums;
 *   - anything cffi must not see goes between the STUB_ABI_C_ONLY markers.
 *
 * Memory the guest can write (the whole stub data page) is untrusted for the
 * controller: every value it reads back from there is checked before use.
 */
#ifndef AIOUMM_STUB_ABI_H
#define AIOUMM_STUB_ABI_H

/* STUB_ABI_C_ONLY_BEGIN */
#include <stdint.h>
/* STUB_ABI_C_ONLY_END */

/* Bumped whenever anything below changes shape or meaning. */
#define STUB_ABI_VERSION 4
#define STUB_INIT_MAGIC 0x756d6d69
#define STUB_CODE_MAGIC 0x65646f63

#define STUB_PAGE_SIZE 4096

/*
 * The stub pages.  They sit at a fixed address 2 TiB below the top of the
 * 47-bit user address space: far above anything a static bootstrap image
 * uses, and below the region where the kernel randomises the initial stack
 * (top 16 GiB) and the mmap base with the vDSO (28 random bits of pages
 * below the stack gap: at most 1 TiB lower).  The bootstrap maps them with
 * MAP_FIXED_NOREPLACE anyway and dies with its own exit code on a clash.
 */
#define STUB_CODE_ADDR 0x7e0000000000
#define STUB_CODE_SIZE 0x4000
#define STUB_DATA_ADDR 0x7e0000004000
#define STUB_DATA_SIZE 0x14000
#define STUB_AREA_START 0x7e0000000000
#define STUB_AREA_END 0x7e0000018000

/* The highest user address on a 4-level page-table x86-64 (TASK_SIZE). */
#define STUB_TASK_TOP 0x7ffffffff000

/*
 * The signal alternate stack is the tail of the data pages.  A signal frame
 * on this CPU (AVX-512, maybe AMX state) needs the kernel's AT_MINSIGSTKSZ,
 * about 12 KiB here; the bootstrap refuses to start unless that plus
 * STUB_ALTSTACK_HEADROOM fits.
 */
#define STUB_ALTSTACK_OFFSET 0x4000
#define STUB_ALTSTACK_SIZE 0x10000
#define STUB_ALTSTACK_HEADROOM 0x2000

/* Descriptors a running stub holds; nothing else survives the bootstrap. */
#define STUB_FD_CHANNEL 0
#define STUB_FD_EVENT 1
#define STUB_FD_CODE 2
#define STUB_FD_DATA 3
/* First descriptor number the FDs of a batch can arrive at. */
#define STUB_FD_FIRST_PASSED 2

/* At most this many descriptors per batch (the seed kernel uses 4 too). */
#define STUB_MAX_FDS 4
/* Stale FD messages one batch skips before it gives up. */
#define STUB_MAX_STALE_MESSAGES 64
/* Records one batch holds; a fuller batch is flushed first. */
#define STUB_BATCH_CAPACITY 256

/* Bits of stub_init.flags. */
#define STUB_INIT_FSGSBASE 1
#define STUB_INIT_SEAL 2
/* The CPU has RDTSCP: the stub can tell which CPU it runs on (and so may spin). */
#define STUB_INIT_RDTSCP 4
/* stub_data.report_cpu of a stub that cannot tell. */
#define STUB_CPU_UNKNOWN 4294967295

/*
 * Spinning before sleeping (see hand_over_and_wait in stub_code.c): the
 * stub spins at most this many `pause`s, whatever stub_data.spin_limit says.
 * stub_data.spun holds STUB_SPUN_SLEPT when the stub slept instead.
 */
#define STUB_SPIN_MAX 65536
#define STUB_SPUN_SLEPT 4294967295

/* Who owns the data page.  Only the owner writes it. */
enum stub_handoff {
	/* The stub runs: guest code, or the handler working through a batch. */
	STUB_HANDOFF_CHILD = 0,
	/* The stub waits in its handler; the controller may read and write. */
	STUB_HANDOFF_CONTROLLER = 1,
	/*
	 * The same, and the stub has stopped spinning: it sleeps (or is about
	 * to) in FUTEX_WAIT, so the hand-back must wake it.  Only the stub sets
	 * it, from CONTROLLER, with a compare-and-swap.
	 */
	STUB_HANDOFF_SLEEPING = 2,
};

/* What the controller asks for when it hands the page back. */
enum stub_command {
	/* Restore the (possibly edited) registers and return to the guest. */
	STUB_CMD_RESUME = 1,
	/* Run the queued records, then hand the page back again. */
	STUB_CMD_BATCH = 2,
};

enum stub_op {
	STUB_OP_MMAP = 1,
	STUB_OP_MUNMAP = 2,
	STUB_OP_MPROTECT = 3,
};

/* stub_record.flags for STUB_OP_MMAP (MAP_FIXED is always added). */
#define STUB_MAP_SHARED 1
#define STUB_MAP_PRIVATE 2
/* stub_record.fd_slot of an anonymous mapping. */
#define STUB_SLOT_ANON -1

/*
 * A batch failed before any record ran because the descriptors that came
 * with it were not the ones announced (short, truncated or missing control
 * message): stub_data.batch_errno then holds this, which is no errno.
 */
#define STUB_BATCH_EFDS 4096

/*
 * Exit codes.  Each bootstrap step that can fail has its own, so the
 * controller can say which; the handler's fatal paths follow.  They start
 * at 64 so they never look like a shell's 1/2 or a signal's 128+N.
 */
enum stub_exit {
	STUB_EXIT_PDEATHSIG = 64,
	STUB_EXIT_NO_NEW_PRIVS = 65,
	STUB_EXIT_INIT_READ = 66,
	STUB_EXIT_INIT_MAGIC = 67,
	STUB_EXIT_INIT_VERSION = 68,
	STUB_EXIT_MAP_CODE = 69,
	STUB_EXIT_CODE_IMAGE = 70,
	STUB_EXIT_MAP_DATA = 71,
	STUB_EXIT_SEAL = 72,
	STUB_EXIT_CLOSE_RANGE = 73,
	STUB_EXIT_NONBLOCK = 74,
	STUB_EXIT_ALTSTACK_SIZE = 75,
	STUB_EXIT_SIGALTSTACK = 76,
	STUB_EXIT_SIGACTION_SEGV = 77,
	STUB_EXIT_SIGACTION_SYS = 78,
	STUB_EXIT_SIGACTION_ALRM = 79,
	STUB_EXIT_SIGACTION_TRAP = 80,
	STUB_EXIT_SIGACTION_ILL = 81,
	STUB_EXIT_SIGACTION_FPE = 82,
	STUB_EXIT_SIGMASK = 83,
	STUB_EXIT_FILTER_SIZE = 84,
	STUB_EXIT_SECCOMP = 85,
	STUB_EXIT_NOT_TRAPPED = 86,
	/* Fatal errors inside the handler (stub_data.fatal_line says where). */
	STUB_EXIT_HANDLER_WAIT = 100,
	STUB_EXIT_HANDLER_NOTIFY = 101,
	STUB_EXIT_HANDLER_COMMAND = 102,
	STUB_EXIT_HANDLER_FSBASE = 103,
};

/* Sent once over fd 0 by the controller right after the spawn. */
struct stub_init {
	uint32_t magic;			/* STUB_INIT_MAGIC */
	uint32_t abi_version;		/* STUB_ABI_VERSION */
	uint32_t flags;			/* STUB_INIT_* */
	/* Non-zero: die with this exit code at that step (tests of every code). */
	uint32_t inject_exit;
	uint64_t code_size;		/* bytes of the code image in fd STUB_FD_CODE */
};

/* One syscall the handler may make: its number and the one place it may come from. */
#define STUB_MAX_SITES 12
#define STUB_SITE_MAX_CHECKS 2
/* stub_arg_check.op */
#define STUB_CHECK_EQ 1
#define STUB_CHECK_GE 2

struct stub_arg_check {
	uint32_t arg;			/* argument index 0..5 */
	uint32_t op;			/* STUB_CHECK_* (0: unused) */
	uint64_t value;			/* GE only for values below 2^32 */
};

struct stub_site {
	uint32_t nr;
	uint32_t _pad;
	/* Address right after the `syscall` instruction: what seccomp sees. */
	uint64_t ip;
	struct stub_arg_check checks[2];
};

/* At offset 0 of the code image: the bootstrap reads it to set everything up. */
struct stub_code_header {
	uint32_t magic;			/* STUB_CODE_MAGIC */
	uint32_t abi_version;
	uint64_t handler;		/* address of the signal handler */
	uint64_t restorer;		/* address of the rt_sigreturn trampoline */
	uint32_t nsites;
	uint32_t _pad;
	struct stub_site sites[12];
};

/* One queued mmap / munmap / mprotect. */
struct stub_record {
	uint32_t op;			/* enum stub_op */
	int32_t fd_slot;		/* index into the batch's FD map, or STUB_SLOT_ANON */
	uint32_t prot;
	uint32_t flags;			/* STUB_MAP_* */
	uint64_t addr;
	uint64_t length;
	uint64_t offset;
};

/*
 * The kernel's x86-64 signal context (struct sigcontext of
 * <asm/sigcontext.h>), field for field; the stub build asserts the offsets.
 */
struct stub_sigcontext {
	uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
	uint64_t rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip;
	uint64_t eflags;
	uint16_t cs, gs, fs, ss;
	uint64_t err, trapno, oldmask, cr2;
	uint64_t fpstate;		/* a child address, inside the alt stack */
	uint64_t reserved1[8];
};

/* The kernel's x86-64 struct ucontext (<asm/ucontext.h>). */
struct stub_ucontext {
	uint64_t uc_flags;
	uint64_t uc_link;
	uint64_t ss_sp;
	int32_t ss_flags;
	int32_t _pad;
	uint64_t ss_size;
	struct stub_sigcontext mcontext;
	uint64_t sigmask;
};

/* The first fields of the kernel's siginfo, with the unions this ABI reads. */
struct stub_siginfo {
	int32_t si_signo;
	int32_t si_errno;
	int32_t si_code;
	int32_t _pad;
	union {
		uint64_t addr;		/* SIGSEGV, SIGILL, SIGFPE, SIGTRAP */
		struct {
			int32_t pid;
			uint32_t uid;
		} kill;			/* SIGALRM from interrupt() */
		struct {
			uint64_t call_addr;
			int32_t syscall;
			uint32_t arch;
		} sys;			/* SIGSYS from the seccomp filter */
	} u;
	uint8_t _rest[96];
};

/* The stub data page. */
struct stub_data {
	/* enum stub_handoff; the futex word.  Flipped with release/acquire. */
	uint32_t handoff;
	/* enum stub_command, written by the controller before handing back. */
	uint32_t command;

	/* The report, written by the handler before it hands over. */
	int32_t signal;
	uint32_t _pad0;
	uint64_t siginfo_addr;		/* child address, inside the alt stack */
	uint64_t ucontext_addr;		/* child address, inside the alt stack */
	/* Not in the signal frame: saved at the trap, restored on resume. */
	uint64_t fs_base;
	uint64_t gs_base;

	/* The batch: records[0..batch_len), and how many descriptors came with it. */
	uint32_t batch_len;
	uint32_t batch_nfds;
	/*
	 * Sequence number of the batch, also the payload of the message that
	 * carries its descriptors: a message left over from a batch that never
	 * ran (the controller failed between sending and handing over) is told
	 * apart, closed and skipped instead of mapping the wrong file.
	 */
	uint32_t batch_seq;
	/* Its result: records that ran, and the errno of the one that failed (0: none). */
	uint32_t batch_done;
	int32_t batch_errno;

	/* Set by the bootstrap from its init message. */
	uint32_t flags;
	/* Source line of a fatal handler error, next to its exit code (as the stub says). */
	uint32_t fatal_line;
	uint32_t _pad1;

	/*
	 * Spinning, written by the controller with each hand-back: how many
	 * `pause`s the stub may spin on the word after its next hand-over
	 * before it sleeps (0: sleep at once), and the CPU the controller ran
	 * on then (the stub never spins on that CPU: it would only keep the
	 * controller from answering).
	 */
	uint32_t spin_limit;
	uint32_t controller_cpu;
	/* Written by the stub with each hand-over: the CPU its handler runs on, and how
	 * many `pause`s its previous wait took (STUB_SPUN_SLEPT: it slept). */
	uint32_t report_cpu;
	uint32_t spun;

	uint8_t _reserved[144];
	struct stub_record records[256];
};

/* STUB_ABI_C_ONLY_BEGIN */
_Static_assert(sizeof(struct stub_data) <= STUB_ALTSTACK_OFFSET,
	       "stub data header and batch must end before the alt stack");
_Static_assert(STUB_ALTSTACK_OFFSET + STUB_ALTSTACK_SIZE == STUB_DATA_SIZE,
	       "the alt stack is the tail of the data pages");
_Static_assert(STUB_CODE_ADDR + STUB_CODE_SIZE == STUB_DATA_ADDR,
	       "data pages follow the code pages");
_Static_assert(STUB_AREA_END == STUB_DATA_ADDR + STUB_DATA_SIZE, "stub area end");
_Static_assert(sizeof(((struct stub_data *)0)->records) / sizeof(struct stub_record)
	       == STUB_BATCH_CAPACITY, "batch capacity");
_Static_assert(sizeof(((struct stub_code_header *)0)->sites) / sizeof(struct stub_site)
	       == STUB_MAX_SITES, "site table size");
_Static_assert(sizeof(struct stub_siginfo) == 128, "siginfo is 128 bytes");
_Static_assert(sizeof(struct stub_record) == 40, "record size");
/* STUB_ABI_C_ONLY_END */

#endif /* AIOUMM_STUB_ABI_H */
