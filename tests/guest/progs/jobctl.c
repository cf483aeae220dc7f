/* Job control: stop signals, SIGCONT, what wait4/waitid and SIGCHLD report.
 * One case per argument; nothing printed depends on pids or timing. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t child;
static char chld_log[512];
static volatile int chld_count;

static void on_chld(int sig, siginfo_t *si, void *uc)
{
    (void)sig, (void)uc;
    static const char *codes[] = {"?", "EXITED", "KILLED", "DUMPED", "TRAPPED", "STOPPED", "CONTINUED"};
    size_t n = strlen(chld_log);
    int code = si->si_code >= 1 && si->si_code <= 6 ? si->si_code : 0;
    snprintf(chld_log + n, sizeof chld_log - n, " %s/%d/%s", codes[code], si->si_status,
             si->si_pid == child ? "child" : "other");
    chld_count++;
}

static void catch_chld(int flags)
{
    struct sigaction sa = {0};
    sa.sa_sigaction = on_chld;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | flags;
    sigaction(SIGCHLD, &sa, NULL);
}

static void show(const char *what, pid_t got, const int *stp)
{
    int st = *stp;
    if (got <= 0)
        printf("%s: returned %d%s\n", what, got, got < 0 ? strerror(errno) : "");
    else if (WIFSTOPPED(st))
        printf("%s: stopped by %s (raw %#x)\n", what, strsignal(WSTOPSIG(st)), st);
    else if (WIFCONTINUED(st))
        printf("%s: continued (raw %#x)\n", what, st);
    else if (WIFEXITED(st))
        printf("%s: exited %d\n", what, WEXITSTATUS(st));
    else
        printf("%s: killed by %s\n", what, strsignal(WTERMSIG(st)));
}

static void show_id(const char *what, int rc, siginfo_t *si)
{
    static const char *codes[] = {"none", "EXITED", "KILLED", "DUMPED", "TRAPPED", "STOPPED", "CONTINUED"};
    if (rc < 0) {
        printf("%s: %s\n", what, strerror(errno));
        return;
    }
    int code = si->si_code >= 0 && si->si_code <= 6 ? si->si_code : 0;
    printf("%s: CLD_%s status=%d pid=%s signo=%d\n", what, codes[code], si->si_status,
           si->si_pid == child ? "child" : si->si_pid == 0 ? "0" : "other", si->si_signo);
}

static void nap(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A child in a process group of its own (so its stops never depend on the caller's group). */
static pid_t spawn_idle(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        for (;;)
            pause();
    }
    setpgid(pid, pid);
    return pid;
}

/* Wait until the child is stopped (reported), without consuming the report. */
static void until_stopped(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    waitid(P_PID, pid, &si, WSTOPPED | WNOWAIT);
}

/* Until the n-th SIGCHLD was handled: a child sends the one of its resume when it
 * runs again, so waiting keeps the next one from merging with it. */
static void chld_settle(int n)
{
    for (int i = 0; i < 500 && chld_count < n; i++)
        nap(10);
}

static int case_stop(void)
{
    int st;
    catch_chld(0);
    child = spawn_idle();
    kill(child, SIGSTOP);
    show("WUNTRACED after SIGSTOP", waitpid(child, &st, WUNTRACED), &st);
    chld_settle(1);
    show("again (reported once)", waitpid(child, &st, WUNTRACED | WNOHANG), &st);
    show("WCONTINUED while stopped", waitpid(child, &st, WCONTINUED | WNOHANG), &st);
    kill(child, SIGSTOP); /* already stopped: nothing new to report */
    show("second SIGSTOP", waitpid(child, &st, WUNTRACED | WNOHANG), &st);
    kill(child, SIGCONT);
    show("WCONTINUED after SIGCONT", waitpid(child, &st, WCONTINUED), &st);
    chld_settle(2);
    show("again (reported once)", waitpid(child, &st, WCONTINUED | WNOHANG), &st);
    show("WUNTRACED while running", waitpid(child, &st, WUNTRACED | WNOHANG), &st);
    kill(child, SIGTSTP); /* default action: stop */
    show("SIGTSTP", waitpid(child, &st, WUNTRACED), &st);
    chld_settle(3);
    kill(child, SIGCONT);
    show("continued", waitpid(child, &st, WCONTINUED), &st);
    chld_settle(4);
    kill(child, SIGTTIN);
    until_stopped(child);
    chld_settle(5);
    kill(child, SIGCONT); /* the stop not yet reported is forgotten: the resume is */
    show("stopped, continued, both asked", waitpid(child, &st, WUNTRACED | WCONTINUED), &st);
    chld_settle(6);
    kill(child, SIGTERM);
    show("SIGTERM", waitpid(child, &st, WUNTRACED | WCONTINUED), &st);
    chld_settle(7);
    printf("SIGCHLD:%s\n", chld_log);
    return 0;
}

static int case_waitid(void)
{
    siginfo_t si;
    int st, go[2];
    char x;
    pipe(go);
    child = fork();
    if (child == 0) {
        setpgid(0, 0);
        raise(SIGTSTP);
        read(go[0], &x, 1); /* once the resume was seen */
        raise(SIGTTOU);
        read(go[0], &x, 1);
        _exit(7);
    }
    setpgid(child, child);
    memset(&si, 0, sizeof si);
    show_id("WSTOPPED|WNOWAIT", waitid(P_PID, child, &si, WSTOPPED | WNOWAIT), &si);
    memset(&si, 0, sizeof si);
    show_id("WSTOPPED|WNOWAIT again", waitid(P_PID, child, &si, WSTOPPED | WNOWAIT), &si);
    memset(&si, 0, sizeof si);
    show_id("WSTOPPED", waitid(P_ALL, 0, &si, WSTOPPED), &si);
    memset(&si, 0, sizeof si);
    show_id("WSTOPPED|WNOHANG (reported)", waitid(P_PID, child, &si, WSTOPPED | WNOHANG), &si);
    kill(child, SIGCONT);
    memset(&si, 0, sizeof si);
    show_id("WCONTINUED", waitid(P_PGID, child, &si, WCONTINUED), &si);
    write(go[1], "", 1);
    /* The child stops again (SIGTTOU); this time the stop goes to wait4. */
    show("WUNTRACED", waitpid(-child, &st, WUNTRACED), &st);
    kill(child, SIGCONT);
    memset(&si, 0, sizeof si);
    show_id("WEXITED|WCONTINUED", waitid(P_PID, child, &si, WEXITED | WCONTINUED), &si);
    write(go[1], "", 1);
    memset(&si, 0, sizeof si);
    show_id("WEXITED", waitid(P_PID, child, &si, WEXITED), &si);
    memset(&si, 0, sizeof si);
    show_id("no children", waitid(P_ALL, 0, &si, WSTOPPED | WCONTINUED), &si);
    return 0;
}

static int case_nocldstop(void)
{
    int st;
    catch_chld(SA_NOCLDSTOP);
    child = spawn_idle();
    kill(child, SIGSTOP);
    show("stopped", waitpid(child, &st, WUNTRACED), &st);
    kill(child, SIGCONT);
    show("continued", waitpid(child, &st, WCONTINUED), &st);
    kill(child, SIGKILL);
    show("killed", waitpid(child, &st, 0), &st);
    printf("SIGCHLD:%s\n", chld_log);
    return 0;
}

static volatile int cont_handled;
static void on_cont(int sig)
{
    (void)sig;
    cont_handled++;
}

static int case_pending(void)
{
    int st, p[2];
    sigset_t set, pend;
    pipe(p);
    child = fork();
    if (child == 0) {
        char line[128];
        setpgid(0, 0);
        signal(SIGCONT, on_cont);
        sigemptyset(&set);
        sigaddset(&set, SIGCONT);
        sigaddset(&set, SIGTSTP);
        sigprocmask(SIG_BLOCK, &set, NULL);
        /* A stop signal discards a pending SIGCONT, and SIGCONT a pending stop. */
        kill(getpid(), SIGCONT);
        kill(getpid(), SIGTSTP);
        sigpending(&pend);
        snprintf(line, sizeof line, "child: after TSTP: CONT=%d TSTP=%d\n", sigismember(&pend, SIGCONT),
                 sigismember(&pend, SIGTSTP));
        write(p[1], line, strlen(line));
        kill(getpid(), SIGCONT);
        sigpending(&pend);
        snprintf(line, sizeof line, "child: after CONT: CONT=%d TSTP=%d\n", sigismember(&pend, SIGCONT),
                 sigismember(&pend, SIGTSTP));
        write(p[1], line, strlen(line));
        /* Stopped with SIGCONT blocked: the resume happens all the same, the handler waits. */
        raise(SIGSTOP);
        sigpending(&pend);
        snprintf(line, sizeof line, "child: resumed: CONT pending=%d handled=%d\n", sigismember(&pend, SIGCONT),
                 cont_handled);
        write(p[1], line, strlen(line));
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        snprintf(line, sizeof line, "child: unblocked: handled=%d\n", cont_handled);
        write(p[1], line, strlen(line));
        _exit(0);
    }
    close(p[1]);
    show("stopped", waitpid(child, &st, WUNTRACED), &st);
    kill(child, SIGCONT);
    show("exit", waitpid(child, &st, 0), &st);
    char buf[1024];
    ssize_t n;
    while ((n = read(p[0], buf, sizeof buf)) > 0)
        fwrite(buf, 1, n, stdout);
    return 0;
}

static int case_killstopped(void)
{
    int st;
    child = spawn_idle();
    kill(child, SIGSTOP);
    show("stopped", waitpid(child, &st, WUNTRACED), &st);
    kill(child, SIGTERM); /* waits: a stopped process does not act on it */
    nap(100);
    show("SIGTERM while stopped", waitpid(child, &st, WNOHANG), &st);
    kill(child, SIGCONT); /* now it dies of SIGTERM */
    show("after SIGCONT", waitpid(child, &st, 0), &st);
    child = spawn_idle();
    kill(child, SIGSTOP);
    until_stopped(child);
    kill(child, SIGKILL);
    show("SIGKILL while stopped", waitpid(child, &st, 0), &st);
    /* Stopped while running its own code, not in a syscall. */
    child = fork();
    if (child == 0) {
        setpgid(0, 0);
        for (volatile unsigned long spin = 0;; spin++)
            ;
    }
    setpgid(child, child);
    nap(50);
    kill(child, SIGSTOP);
    show("stopped while running", waitpid(child, &st, WUNTRACED), &st);
    kill(child, SIGCONT);
    show("continued", waitpid(child, &st, WCONTINUED), &st);
    kill(child, SIGKILL);
    show("killed", waitpid(child, &st, 0), &st);
    return 0;
}

/* A stopped process does not come back from the syscall it was blocked in. */
static int case_blocked(void)
{
    int st, in[2], out[2];
    char buf[64];
    pipe(in);
    pipe(out);
    child = fork();
    if (child == 0) {
        setpgid(0, 0);
        close(in[1]);
        close(out[0]);
        ssize_t n = read(in[0], buf, sizeof buf);
        write(out[1], n == 4 ? "read done\n" : "read failed\n", n == 4 ? 10 : 12);
        struct timespec ts = {1, 0};
        int rc = nanosleep(&ts, NULL);
        write(out[1], rc == 0 ? "sleep done\n" : "sleep failed\n", rc == 0 ? 11 : 13);
        pid_t g = fork();
        if (g == 0) {
            nap(400);
            _exit(3);
        }
        int gst;
        pid_t w = waitpid(g, &gst, 0);
        write(out[1], w == g && WEXITSTATUS(gst) == 3 ? "wait done\n" : "wait failed\n", w == g ? 10 : 12);
        _exit(0);
    }
    close(in[0]);
    close(out[1]);
    struct pollfd pfd = {out[0], POLLIN, 0};

    /* In a pipe read: the data comes while it is stopped. */
    nap(100);
    kill(child, SIGSTOP);
    show("stopped in read", waitpid(child, &st, WUNTRACED), &st);
    write(in[1], "data", 4);
    printf("while stopped: %s\n", poll(&pfd, 1, 300) == 0 ? "nothing" : "something");
    kill(child, SIGCONT);
    ssize_t n = read(out[0], buf, sizeof buf);
    printf("after SIGCONT: %.*s", (int)n, buf);

    /* In nanosleep(1 s): stopped past its end, it ends as soon as it goes on. */
    nap(100);
    kill(child, SIGSTOP);
    show("stopped in nanosleep", waitpid(child, &st, WUNTRACED), &st);
    printf("while stopped: %s\n", poll(&pfd, 1, 1300) == 0 ? "nothing" : "something");
    double t0 = now();
    kill(child, SIGCONT);
    n = read(out[0], buf, sizeof buf);
    printf("after SIGCONT: %.*s", (int)n, buf);
    printf("the sleep kept its deadline: %s\n", now() - t0 < 0.6 ? "yes" : "no");

    /* In wait4: the grandchild exits while it is stopped. */
    nap(100);
    kill(child, SIGSTOP);
    show("stopped in wait4", waitpid(child, &st, WUNTRACED), &st);
    printf("while stopped: %s\n", poll(&pfd, 1, 600) == 0 ? "nothing" : "something");
    kill(child, SIGCONT);
    n = read(out[0], buf, sizeof buf);
    printf("after SIGCONT: %.*s", (int)n, buf);
    show("exit", waitpid(child, &st, 0), &st);
    return 0;
}

static void on_hup(int sig)
{
    (void)sig;
    write(10, "C: SIGHUP\n", 10);
}

/* A process group left orphaned with a stopped member: SIGHUP, then SIGCONT. */
static int case_orphan(void)
{
    int p[2];
    setsid(); /* nothing outside this session can tie the groups below to it */
    pipe(p);
    dup2(p[1], 10);
    close(p[1]);
    pid_t m = fork();
    if (m == 0) {
        setpgid(0, 0);
        child = fork();
        if (child == 0) {
            signal(SIGHUP, on_hup);
            raise(SIGSTOP);
            write(10, "C: continued\n", 13);
            raise(SIGTTOU); /* orphaned group: a terminal stop signal is discarded */
            write(10, "C: SIGTTOU discarded\n", 21);
            _exit(0);
        }
        int st;
        waitpid(child, &st, WUNTRACED);
        write(10, WIFSTOPPED(st) ? "M: C stopped, exiting\n" : "M: C not stopped\n", WIFSTOPPED(st) ? 22 : 17);
        _exit(0);
    }
    close(10);
    char buf[256];
    ssize_t n;
    while ((n = read(p[0], buf, sizeof buf)) > 0)
        fwrite(buf, 1, n, stdout);
    int st;
    show("M", waitpid(m, &st, 0), &st);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2)
        return 2;
    if (!strcmp(argv[1], "stop"))
        return case_stop();
    if (!strcmp(argv[1], "waitid"))
        return case_waitid();
    if (!strcmp(argv[1], "nocldstop"))
        return case_nocldstop();
    if (!strcmp(argv[1], "pending"))
        return case_pending();
    if (!strcmp(argv[1], "killstopped"))
        return case_killstopped();
    if (!strcmp(argv[1], "blocked"))
        return case_blocked();
    if (!strcmp(argv[1], "orphan"))
        return case_orphan();
    return 2;
}
