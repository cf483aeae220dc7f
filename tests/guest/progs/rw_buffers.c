/* Reads and writes with buffers that end in an unmapped page: Linux copies up to
   the bad page and answers that count; EFAULT only when nothing could be copied
   (and a read at the end of a file never touches its buffer).  Pipes copy in
   whole pieces. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#define R(name, expr) do { \
    errno = 0; long r_ = (long)(expr); \
    printf("%-30s %ld %s\n", name, r_, r_ < 0 ? strerrorname_np(errno) : ""); \
} while (0)

int main(int argc, char **argv) {
    (void)argc;
    char *m = mmap(0, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(m + 4096, 4096);
    char *edge = m + 4096 - 100, *bad = m + 4096;
    memset(m, 'm', 4096);
    int fd = open(argv[1], O_RDWR);
    R("read up to a hole", syscall(SYS_read, fd, edge, 1000));
    R("read into the hole", syscall(SYS_read, fd, bad, 10));
    R("pread up to a hole", syscall(SYS_pread64, fd, edge, 1000, 10));
    R("write up to a hole", syscall(SYS_write, fd, edge, 1000));
    R("write from the hole", syscall(SYS_write, fd, bad, 10));
    R("pwrite up to a hole", syscall(SYS_pwrite64, fd, edge, 1000, 0));
    lseek(fd, 0, SEEK_END);
    R("read at the end, bad buffer", syscall(SYS_read, fd, bad, 10));
    R("pread past the end, bad", syscall(SYS_pread64, fd, bad, 10, 1 << 20));
    R("read past user space, at end", syscall(SYS_read, fd, m, 1L << 62));
    struct iovec iov[2] = {{m, 5}, {bad, 5}};
    lseek(fd, 0, SEEK_SET);
    R("readv, second bad", syscall(SYS_readv, fd, iov, 2));
    R("writev, second bad", syscall(SYS_writev, fd, iov, 2));
    struct iovec first_bad[2] = {{bad, 5}, {m, 5}};
    R("readv, first bad", syscall(SYS_readv, fd, first_bad, 2));
    lseek(fd, 0, SEEK_END);
    R("readv at the end, first bad", syscall(SYS_readv, fd, first_bad, 2));
    struct iovec beyond[1] = {{(void *)0x7ffffffff000, 16}};
    R("readv at the end, beyond", syscall(SYS_readv, fd, beyond, 1));
    int null = open("/dev/null", O_RDONLY), zero = open("/dev/zero", O_RDONLY);
    R("/dev/null into the hole", syscall(SYS_read, null, bad, 10));
    R("/dev/zero up to a hole", syscall(SYS_read, zero, edge, 1000));
    R("/dev/zero into the hole", syscall(SYS_read, zero, bad, 10));
    int p[2];
    pipe(p);
    /* A pipe copies whole pieces: nothing of a piece that ends in a hole. */
    R("pipe write up to a hole", syscall(SYS_write, p[1], edge, 1000));
    R("pipe write", syscall(SYS_write, p[1], m, 60));
    R("pipe read up to a hole", syscall(SYS_read, p[0], m + 4096 - 40, 1000));
    R("pipe read what fits", syscall(SYS_read, p[0], m, 30));
    return 0;
}
