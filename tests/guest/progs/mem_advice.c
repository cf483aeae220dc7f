/* madvise, msync and mlock as Linux checks them, and what madvise does to the memory.
   (Not MADV_GUARD_INSTALL: the runner takes it, but its guard pages do not fault.) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define R(name, expr) do { \
    errno = 0; long r_ = (long)(expr); \
    printf("%-34s %s\n", name, r_ == -1 ? strerrorname_np(errno) : "ok"); \
} while (0)

int main(int argc, char **argv) {
    (void)argc;
    char *m = mmap(0, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(m + 4096, 4096);
    static const int advice[] = {0, 3, 4, 5, 8, 9, 10, 14, 18, 24, 25, 26, 101, 104};
    for (unsigned i = 0; i < sizeof advice / sizeof *advice; i++) {
        char name[40];
        sprintf(name, "madvise %d", advice[i]);
        R(name, syscall(SYS_madvise, m, 4096, advice[i]));
        sprintf(name, "madvise %d over a hole", advice[i]);
        R(name, syscall(SYS_madvise, m, 8192, advice[i]));
    }
    R("madvise, nothing, bad advice", syscall(SYS_madvise, m, 0, 999));
    m[0] = 7;
    R("MADV_REMOVE of private memory", syscall(SYS_madvise, m, 4096, MADV_REMOVE));
    printf("private memory kept: %d\n", m[0]);
    R("MADV_FREE", syscall(SYS_madvise, m, 4096, MADV_FREE));
    char *sh = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    sh[0] = 7;
    R("MADV_FREE of shared memory", syscall(SYS_madvise, sh, 4096, MADV_FREE));
    R("MADV_REMOVE of shared memory", syscall(SYS_madvise, sh, 4096, MADV_REMOVE));
    printf("shared memory removed: %d\n", sh[0]);

    int fd = open(argv[1], O_RDWR);
    char *f = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    memcpy(f, "synced", 6);
    R("msync MS_SYNC", syscall(SYS_msync, f, 4096, MS_SYNC));
    char back[7] = "";
    pread(fd, back, 6, 0);
    printf("file reads %s\n", back);
    char *fp = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    R("MADV_REMOVE of a private file copy", syscall(SYS_madvise, fp, 4096, MADV_REMOVE));
    R("MADV_FREE of a private file copy", syscall(SYS_madvise, fp, 4096, MADV_FREE));
    munmap(m + 4096, 4096);  /* the hole again, whatever was mapped there since */
    R("msync MS_ASYNC", syscall(SYS_msync, m, 4096, MS_ASYNC));
    R("msync no flags", syscall(SYS_msync, m, 4096, 0));
    R("msync MS_SYNC|MS_ASYNC", syscall(SYS_msync, m, 4096, MS_SYNC | MS_ASYNC));
    R("msync bad flag", syscall(SYS_msync, m, 4096, 8));
    R("msync over a hole", syscall(SYS_msync, m, 8192, MS_SYNC));
    R("msync unaligned", syscall(SYS_msync, m + 1, 4096, MS_SYNC));
    R("msync, nothing", syscall(SYS_msync, m, 0, MS_SYNC));
    R("msync wrapping", syscall(SYS_msync, m, -4096L, MS_SYNC));
    R("mlock", syscall(SYS_mlock, m, 4096));
    R("mlock unaligned", syscall(SYS_mlock, m + 1, 100));
    R("mlock over a hole", syscall(SYS_mlock, m, 8192));
    R("mlock2 MLOCK_ONFAULT", syscall(SYS_mlock2, m, 4096, 1));
    R("mlock2 bad flag", syscall(SYS_mlock2, m, 4096, 2));
    R("munlock", syscall(SYS_munlock, m, 4096));
    R("munlock over a hole", syscall(SYS_munlock, m, 8192));
    R("mlockall no flags", syscall(SYS_mlockall, 0));
    R("mlockall MCL_ONFAULT alone", syscall(SYS_mlockall, MCL_ONFAULT));
    R("mlockall bad flag", syscall(SYS_mlockall, 8));
    R("mlockall MCL_CURRENT", syscall(SYS_mlockall, MCL_CURRENT));
    R("munlockall", syscall(SYS_munlockall));
    R("mmap, unknown prot bits", syscall(SYS_mmap, 0, 4096, 0x100 | PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    R("anonymous MAP_SHARED_VALIDATE", syscall(SYS_mmap, 0, 4096, PROT_READ, MAP_SHARED_VALIDATE | MAP_ANONYMOUS, -1, 0));
    R("file MAP_SHARED_VALIDATE, unknown", syscall(SYS_mmap, 0, 4096, PROT_READ, MAP_SHARED_VALIDATE | 0x1000000, fd, 0));
    return 0;
}
