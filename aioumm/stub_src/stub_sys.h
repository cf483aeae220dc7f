/*
 * stub_sys.h - raw syscalls and kernel constants for the freestanding stub.
 *
 * The stub links no libc: everything it needs from the kernel is spelled out
 * here, from the UAPI headers where they are freestanding-safe.
 */
#ifndef AIOUMM_STUB_SYS_H
#define AIOUMM_STUB_SYS_H

#include <stddef.h>
#include <stdint.h>
#include <asm/unistd.h>
#include <asm/sigcontext.h>
#include <asm/prctl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/mman.h>
#include <linux/prctl.h>
#include <linux/seccomp.h>
#include <linux/signal.h>
#include <linux/fcntl.h>
#include <linux/errno.h>

#include "stub_abi.h"

#ifndef __NR_mseal
#define __NR_mseal 462
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#define STUB_AT_NULL 0
#define STUB_AT_MINSIGSTKSZ 51

/* Socket bits the handler needs; <linux/socket.h> does not define them. */
#define STUB_SOL_SOCKET 1
#define STUB_SCM_RIGHTS 1
#define STUB_MSG_CTRUNC 0x08
#define STUB_MSG_DONTWAIT 0x40
#define STUB_MSG_CMSG_CLOEXEC 0x40000000

struct stub_iovec {
	void *base;
	size_t len;
};

struct stub_msghdr {
	void *name;
	int namelen;
	struct stub_iovec *iov;
	size_t iovlen;
	void *control;
	size_t controllen;
	unsigned int flags;
};

struct stub_cmsghdr {
	size_t len;
	int level;
	int type;
};

/* The kernel's struct sigaction for rt_sigaction on x86-64. */
struct stub_sigaction {
	void *handler;
	unsigned long flags;
	void *restorer;
	uint64_t mask;
};

struct stub_stack_t {
	void *sp;
	int flags;
	size_t size;
};

static inline long stub_syscall6(long nr, long a, long b, long c, long d, long e, long f)
{
	long ret;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "0"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

#define stub_syscall0(nr) stub_syscall6(nr, 0, 0, 0, 0, 0, 0)
#define stub_syscall1(nr, a) stub_syscall6(nr, (long)(a), 0, 0, 0, 0, 0)
#define stub_syscall2(nr, a, b) stub_syscall6(nr, (long)(a), (long)(b), 0, 0, 0, 0)
#define stub_syscall3(nr, a, b, c) stub_syscall6(nr, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define stub_syscall4(nr, a, b, c, d) \
	stub_syscall6(nr, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)

#endif /* AIOUMM_STUB_SYS_H */
