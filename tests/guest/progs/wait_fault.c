/* wait4 and waitid reap the child before they store its status: a bad pointer is
   EFAULT, and the child is gone all the same (a stop report too is used up). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static void show(const char *what, long r) {
    printf("%-28s %s\n", what, r < 0 ? strerrorname_np(errno) : r ? "a child" : "0");
}

int main(void) {
    pid_t pid = fork();
    if (pid == 0) _exit(3);
    show("wait4, bad status", syscall(SYS_wait4, pid, (void *)1, 0, NULL));
    show("wait4 again", syscall(SYS_wait4, pid, NULL, WNOHANG, NULL));
    pid = fork();
    if (pid == 0) _exit(4);
    show("waitid, bad siginfo", syscall(SYS_waitid, P_PID, pid, (void *)1, WEXITED, NULL));
    show("waitid again", syscall(SYS_waitid, P_PID, pid, NULL, WEXITED | WNOHANG, NULL));
    pid = fork();
    if (pid == 0) _exit(5);
    show("wait4, bad rusage", syscall(SYS_wait4, pid, NULL, 0, (void *)1));
    show("wait4 again", syscall(SYS_wait4, pid, NULL, WNOHANG, NULL));
    pid = fork();
    if (pid == 0) { raise(SIGSTOP); _exit(6); }
    show("stop, bad status", syscall(SYS_wait4, pid, (void *)1, WUNTRACED, NULL));
    show("stop reported again?", syscall(SYS_wait4, pid, NULL, WUNTRACED | WNOHANG, NULL));
    kill(pid, SIGKILL);
    int st;
    show("killed", syscall(SYS_wait4, pid, &st, 0, NULL));
    printf("status %#x\n", st);
    return 0;
}
