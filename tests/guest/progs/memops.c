/* Exercises the memory syscalls the runner serves: mmap hints and MAP_FIXED,
 * MAP_FIXED_NOREPLACE, partial munmap and mprotect, mremap growth, brk.
 * Prints facts only (never addresses). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void)
{
    long pg = sysconf(_SC_PAGESIZE);
    char *a = mmap(NULL, 8 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mmap ok: %d\n", a != MAP_FAILED);
    memset(a, 'x', 8 * pg);
    printf("munmap middle: %d\n", munmap(a + 2 * pg, pg) == 0);
    char *b = mmap(a + 2 * pg, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    printf("noreplace into hole: %d zeroed: %d\n", b == a + 2 * pg, b[0] == 0);
    errno = 0;
    void *c = mmap(a, pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    printf("noreplace over mapping: EEXIST %d\n", c == MAP_FAILED && errno == EEXIST);
    printf("mprotect part read-only: %d\n", mprotect(a + 4 * pg, 2 * pg, PROT_READ) == 0);
    printf("content kept: %d\n", a[4 * pg] == 'x' && a[7 * pg] == 'x');
    char *r = mremap(a + 6 * pg, 2 * pg, 64 * pg, MREMAP_MAYMOVE);
    printf("mremap grow: %d kept: %d\n", r != MAP_FAILED, r != MAP_FAILED && r[pg] == 'x' && r[10 * pg] == 0);
    void *cur = sbrk(0);
    printf("brk grow: %d\n", sbrk(3 * pg) == cur && sbrk(0) == (char *)cur + 3 * pg);
    memset(cur, 7, 3 * pg);
    printf("brk shrink: %d\n", sbrk(-3 * pg) != (void *)-1 && sbrk(0) == cur);
    printf("brk regrow zeroed: %d\n", sbrk(pg) == cur && ((char *)cur)[0] == 0);
    errno = 0;
    printf("munmap unaligned EINVAL: %d\n", munmap(a + 1, pg) == -1 && errno == EINVAL);
    return 0;
}
