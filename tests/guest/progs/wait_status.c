/* wait4/waitid status encoding; WNOHANG; process groups; kill between processes. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static void show(const char *what, int st)
{
    if (WIFEXITED(st))
        printf("%s: exited %d (raw %#x)\n", what, WEXITSTATUS(st), st);
    else if (WIFSIGNALED(st))
        printf("%s: killed by %s (raw %#x)\n", what, strsignal(WTERMSIG(st)), st & 0x7f);
    else
        printf("%s: other %#x\n", what, st);
}

int main(void)
{
    int st, p[2];
    pid_t a = fork();
    if (a == 0)
        _exit(42);
    waitpid(a, &st, 0);
    show("exit 42", st);

    pid_t b = fork();
    if (b == 0) {
        raise(SIGTERM);
        _exit(1);
    }
    waitpid(b, &st, 0);
    show("raise SIGTERM", st);

    pid_t c = fork();
    if (c == 0) {
        *(volatile int *)0 = 1;
        _exit(1);
    }
    waitpid(c, &st, 0);
    printf("fault: signaled=%d sig=%s\n", WIFSIGNALED(st), strsignal(WTERMSIG(st)));

    pipe(p);
    pid_t d = fork();
    if (d == 0) {
        close(p[1]);
        char x;
        read(p[0], &x, 1);  /* waits until killed */
        _exit(0);
    }
    printf("WNOHANG while running: %d\n", waitpid(d, &st, WNOHANG));
    kill(d, SIGKILL);
    waitpid(d, &st, 0);
    show("killed while reading", st);

    pid_t e = fork();
    if (e == 0) {
        for (;;)
            ;  /* busy in guest code */
    }
    kill(e, SIGINT);
    struct rusage ru;
    printf("wait4 returned the pid: %d\n", wait4(e, &st, 0, &ru) == e);
    show("killed while running", st);

    /* process groups */
    pid_t f = fork();
    if (f == 0) {
        setpgid(0, 0);
        pause();
        _exit(0);
    }
    setpgid(f, f);  /* either order: no race */
    printf("child leads its group: %d\n", getpgid(f) == f);
    printf("own group unchanged: %d\n", getpgid(0) == getpgrp());
    printf("waitpid(-pgid, WNOHANG): %d\n", waitpid(-f, &st, WNOHANG));
    kill(-f, SIGTERM);
    printf("waitpid(-pgid) is the child: %d\n", waitpid(-f, &st, 0) == f);
    show("group killed", st);

    pid_t g = fork();
    if (g == 0)
        _exit(7);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    waitid(P_PID, g, &si, WEXITED | WNOWAIT);
    printf("waitid WNOWAIT: signo=%d code=%d status=%d pid ok=%d\n", si.si_signo, si.si_code,
           si.si_status, si.si_pid == g);
    memset(&si, 0, sizeof si);
    waitid(P_ALL, 0, &si, WEXITED);
    printf("waitid again: code=%d status=%d\n", si.si_code, si.si_status);
    int r = waitpid(-1, &st, 0);
    printf("no children: %d %s\n", r, strerror(errno));
    r = kill(999999, 0);
    printf("kill of a missing pid: %d %s\n", r, strerror(errno));
    printf("setsid from a group member: %d\n", getpid() == getpgrp() ? 1 : (setsid() == getpid()));
    return 0;
}
