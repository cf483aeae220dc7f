/*
 * _native.c - the controller's native helpers, compiled by cffi.
 *
 * Only what Python cannot do itself, or not cheaply: the release store plus
 * FUTEX_WAKE that hands a stub data page back, the acquire load that reads
 * the handoff word, and mapping the data memfd in the controller.
 */
#include <errno.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "stub_src/stub_abi.h"

static uint32_t aioumm_load_handoff(const struct stub_data *d)
{
	return __atomic_load_n(&d->handoff, __ATOMIC_ACQUIRE);
}

/*
 * Give the page back to the stub.  The command and everything else written
 * to the page happen before the release store; FUTEX_WAKE comes after it, so
 * a stub that sleeps in FUTEX_WAIT(word == CONTROLLER) either sees CHILD
 * before sleeping (the kernel compares under its lock) or is woken.
 * Returns 0, or -errno from the wake.
 */
static int aioumm_hand_back(struct stub_data *d, uint32_t command)
{
	d->command = command;
	__atomic_store_n(&d->handoff, STUB_HANDOFF_CHILD, __ATOMIC_RELEASE);
	if (syscall(SYS_futex, &d->handoff, FUTEX_WAKE, 1, NULL, NULL, 0) < 0)
		return -errno;
	return 0;
}

static void *aioumm_map_shared(int fd, size_t length)
{
	void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	return p == MAP_FAILED ? NULL : p;
}

static int aioumm_unmap(void *addr, size_t length)
{
	return munmap(addr, length) == 0 ? 0 : -errno;
}

/* mseal(2) probe on a throw-away page: 0 when the kernel has it, else -errno. */
static int aioumm_probe_mseal(void)
{
	void *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	long res;

	if (p == MAP_FAILED)
		return -errno;
	res = syscall(462, p, 4096, 0);
	if (res != 0) {
		int err = errno;

		munmap(p, 4096);
		return -err;
	}
	/* A sealed page can never be unmapped: one page of address space, once. */
	return 0;
}
