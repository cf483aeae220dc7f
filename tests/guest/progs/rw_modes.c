/* read and write check the access mode, and a negative count, as Linux does.
   An alarm without SA_RESTART cuts short a wait that should not be (EINTR). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#define R(name, expr) do { \
    alarm(1); errno = 0; long r_ = (long)(expr); alarm(0); \
    printf("%-28s %ld %s\n", name, r_, r_ < 0 ? strerrorname_np(errno) : ""); \
} while (0)

static void on_alarm(int sig) { (void)sig; }

int main(int argc, char **argv) {
    struct sigaction sa = {.sa_handler = on_alarm};  /* no SA_RESTART */
    sigaction(SIGALRM, &sa, NULL);
    char buf[16] = "x";
    struct iovec iov = {buf, 1};
    int p[2];
    pipe(p);
    R("read of a write end", syscall(SYS_read, p[1], buf, 1));
    R("write to a read end", syscall(SYS_write, p[0], "x", 1));
    R("readv of a write end", syscall(SYS_readv, p[1], &iov, 1));
    R("writev to a read end", syscall(SYS_writev, p[0], &iov, 1));
    R("pipe still empty", syscall(SYS_read, p[0], buf, 1));
    R("pread of a pipe", syscall(SYS_pread64, p[1], buf, 1, 0));
    R("pwritev to a pipe", syscall(SYS_pwritev, p[0], &iov, 1, 0, 0));
    R("read, negative count", syscall(SYS_read, p[0], buf, -1L));
    R("write, negative count", syscall(SYS_write, p[1], buf, -1L));
    int dir = open("/", O_PATH);
    R("read of O_PATH", syscall(SYS_read, dir, buf, 1));
    R("pread of O_PATH", syscall(SYS_pread64, dir, buf, 1, 0));
    int fifo = open(argv[1], O_PATH);
    R("read of O_PATH FIFO", syscall(SYS_read, fifo, buf, 1));
    R("write to O_PATH FIFO", syscall(SYS_write, fifo, buf, 1));
    int ro = open(argv[2], O_RDONLY);
    R("write to O_RDONLY", syscall(SYS_write, ro, buf, 1));
    R("pwrite to O_RDONLY", syscall(SYS_pwrite64, ro, buf, 1, 0));
    R("pread, negative count", syscall(SYS_pread64, ro, buf, -1L, 0));
    R("pread, negative offset", syscall(SYS_pread64, p[1], buf, 1, -1L));
    R("sendfile from a write end", syscall(SYS_sendfile, 1, p[1], NULL, 1));
    R("sendfile to O_RDONLY", syscall(SYS_sendfile, ro, p[0], NULL, 1));
    int null = open("/dev/null", O_RDWR);
    R("pwrite to /dev/null", syscall(SYS_pwrite64, null, buf, 1, 5));
    R("pread of /dev/null", syscall(SYS_pread64, null, buf, 1, 5));
    return 0;
}
