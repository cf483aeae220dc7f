/* Real-time signal queues: sigqueue, sigwaitinfo/sigtimedwait, rt_sigqueueinfo's
 * rules, RLIMIT_SIGPENDING.  One case per argument; nothing printed depends on
 * pids or timing. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char log_[2048];

static const char *name(int sig)
{
    static char buf[32];
    if (sig >= SIGRTMIN && sig <= SIGRTMAX)
        snprintf(buf, sizeof buf, "RTMIN+%d", sig - SIGRTMIN);
    else
        snprintf(buf, sizeof buf, "%s", sigabbrev_np(sig));
    return buf;
}

static const char *code(int c)
{
    switch (c) {
    case SI_USER: return "SI_USER";
    case SI_QUEUE: return "SI_QUEUE";
    case SI_TKILL: return "SI_TKILL";
    case SI_KERNEL: return "SI_KERNEL";
    default: return "other";
    }
}

static void record(int sig, siginfo_t *si)
{
    size_t n = strlen(log_);
    snprintf(log_ + n, sizeof log_ - n, " %s/%s/%d/%s", name(sig), code(si->si_code),
             si->si_code == SI_QUEUE ? si->si_value.sival_int : -1,
             si->si_pid == getpid() ? "self" : si->si_pid == 0 ? "0" : "other");
}

static void on_sig(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    record(sig, si);
}

static void handle(int sig)
{
    struct sigaction sa = {0};
    sa.sa_sigaction = on_sig;
    sa.sa_flags = SA_SIGINFO;
    sigaction(sig, &sa, NULL);
}

static void block(int sig, int how)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(how, &set, NULL);
}

static void sq(pid_t pid, int sig, int value)
{
    union sigval v = {.sival_int = value};
    if (sigqueue(pid, sig, v) < 0)
        printf("sigqueue(%s, %d): %s\n", name(sig), value, strerrorname_np(errno));
}

static int case_queue(void)
{
    sigset_t pend;
    int rt1 = SIGRTMIN + 1, rt2 = SIGRTMIN + 2;
    handle(rt1);
    handle(rt2);
    handle(SIGUSR1);
    handle(SIGUSR2);
    block(rt1, SIG_BLOCK);
    block(rt2, SIG_BLOCK);
    block(SIGUSR1, SIG_BLOCK);
    block(SIGUSR2, SIG_BLOCK);
    sq(getpid(), rt2, 20);
    for (int i = 1; i <= 5; i++)
        sq(getpid(), rt1, i);
    sq(getpid(), SIGUSR1, 100);
    sq(getpid(), SIGUSR1, 101); /* a standard signal: coalesces, the first siginfo stays */
    kill(getpid(), rt1);        /* queued too, as SI_USER */
    sq(getpid(), SIGUSR2, 200);
    sigpending(&pend);
    printf("pending: RTMIN+1=%d RTMIN+2=%d USR1=%d USR2=%d RTMIN+3=%d\n", sigismember(&pend, rt1),
           sigismember(&pend, rt2), sigismember(&pend, SIGUSR1), sigismember(&pend, SIGUSR2),
           sigismember(&pend, SIGRTMIN + 3));
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL); /* all at once: lowest first */
    printf("delivered:%s\n", log_);
    /* Made ignored while pending: every queued instance goes. */
    log_[0] = 0;
    block(rt1, SIG_BLOCK);
    sq(getpid(), rt1, 1);
    sq(getpid(), rt1, 2);
    signal(rt1, SIG_IGN);
    handle(rt1);
    block(rt1, SIG_UNBLOCK);
    printf("after SIG_IGN:%s\n", log_);
    return 0;
}

static int case_sigwait(void)
{
    sigset_t set;
    siginfo_t si;
    int rt = SIGRTMIN;
    sigemptyset(&set);
    sigaddset(&set, rt);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (int i = 10; i < 14; i++)
        sq(getpid(), rt, i);
    kill(getpid(), SIGUSR1);
    for (int i = 0; i < 5; i++) {
        int sig = sigwaitinfo(&set, &si);
        record(sig, &si);
    }
    printf("sigwaitinfo:%s\n", log_);

    /* Woken by another process's sigqueue. */
    log_[0] = 0;
    pid_t child = fork();
    if (child == 0) {
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
        union sigval v = {.sival_int = 77};
        sigqueue(getppid(), rt, v);
        _exit(0);
    }
    struct timespec to = {5, 0};
    int sig = sigtimedwait(&set, &si, &to);
    printf("from the child: %s code=%s value=%d from child=%d\n", name(sig), code(si.si_code),
           si.si_value.sival_int, si.si_pid == child);
    waitpid(child, NULL, 0);

    /* A signal waited for but not blocked is taken too (its handler does not run). */
    handle(SIGUSR2);
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    child = fork();
    if (child == 0) {
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
        kill(getppid(), SIGUSR2);
        _exit(0);
    }
    sig = sigtimedwait(&usr2, &si, &to);
    printf("unblocked and waited for: %s code=%s handler ran=%d\n", name(sig), code(si.si_code), log_[0] != 0);
    waitpid(child, NULL, 0);
    return 0;
}

static volatile int alarms;
static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

static int case_timedwait(void)
{
    sigset_t set;
    siginfo_t si;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &set, NULL);
    struct timespec zero = {0, 0}, short_ = {0, 200000000}, bad = {0, 2000000000}, neg = {-1, 0};
    int rc = sigtimedwait(&set, &si, &zero);
    printf("zero timeout: %d %s\n", rc, strerrorname_np(errno));
    rc = sigtimedwait(&set, &si, &short_);
    printf("200 ms: %d %s\n", rc, strerrorname_np(errno));
    rc = sigtimedwait(&set, &si, &bad);
    printf("bad nsec: %d %s\n", rc, strerrorname_np(errno));
    rc = sigtimedwait(&set, &si, &neg);
    printf("negative: %d %s\n", rc, strerrorname_np(errno));
    rc = syscall(SYS_rt_sigtimedwait, &set, &si, &zero, 4);
    printf("bad size: %d %s\n", rc, strerrorname_np(errno));
    rc = syscall(SYS_rt_sigtimedwait, (void *)8, &si, &zero, 8);
    printf("bad set: %d %s\n", rc, strerrorname_np(errno));
    rc = syscall(SYS_rt_sigtimedwait, &set, &si, (void *)8, 8);
    printf("bad timeout: %d %s\n", rc, strerrorname_np(errno));
    /* A bad siginfo pointer: EFAULT, and the signal is gone all the same. */
    sq(getpid(), SIGRTMIN, 5);
    rc = syscall(SYS_rt_sigtimedwait, &set, (void *)8, &zero, 8);
    printf("bad info: %d %s\n", rc, strerrorname_np(errno));
    rc = sigtimedwait(&set, NULL, &zero);
    printf("then: %d %s\n", rc, strerrorname_np(errno));
    /* A handled signal outside the set cuts the wait short. */
    signal(SIGALRM, on_alarm);
    struct itimerval it = {{0, 0}, {0, 200000}};
    setitimer(ITIMER_REAL, &it, NULL);
    struct timespec longer = {5, 0};
    rc = sigtimedwait(&set, &si, &longer);
    printf("interrupted: %d %s alarms=%d\n", rc, strerrorname_np(errno), alarms);
    return 0;
}

static int qinfo(pid_t pid, int sig, int si_code, int value)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = sig;
    si.si_code = si_code;
    si.si_pid = getpid();
    si.si_uid = getuid();
    si.si_value.sival_int = value;
    return syscall(SYS_rt_sigqueueinfo, pid, sig, &si);
}

static int tgqinfo(pid_t tgid, pid_t tid, int sig, int si_code, int value)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = SIGUSR2; /* the kernel puts the signal sent here */
    si.si_code = si_code;
    si.si_pid = 4242; /* whatever the sender claims */
    si.si_value.sival_int = value;
    return syscall(SYS_rt_tgsigqueueinfo, tgid, tid, sig, &si);
}

#define SHOW(what, call)                                                                                     \
    do {                                                                                                      \
        int rc_ = (call);                                                                                     \
        printf("%s: %d %s\n", what, rc_, rc_ < 0 ? strerrorname_np(errno) : "");                              \
    } while (0)

static int case_perm(void)
{
    int rt = SIGRTMIN;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, rt);
    sigprocmask(SIG_BLOCK, &set, NULL);
    pid_t child = fork();
    if (child == 0) {
        siginfo_t si;
        struct timespec to = {5, 0};
        int sig = sigtimedwait(&set, &si, &to);
        /* Told through the exit status: a print here would race with the parent's. */
        _exit(sig == rt && si.si_code == SI_QUEUE ? si.si_value.sival_int : 100);
    }
    SHOW("SI_USER to another", qinfo(child, rt, SI_USER, 1));
    SHOW("SI_KERNEL to another", qinfo(child, rt, SI_KERNEL, 1));
    SHOW("SI_TKILL to another", qinfo(child, rt, SI_TKILL, 1));
    SHOW("bad signal", qinfo(child, 65, SI_QUEUE, 1));
    SHOW("no such pid", qinfo(999999, rt, SI_QUEUE, 1));
    SHOW("pid 0", qinfo(0, rt, SI_QUEUE, 1));
    SHOW("bad info", (int)syscall(SYS_rt_sigqueueinfo, child, rt, (void *)8));
    SHOW("signal 0", qinfo(child, 0, SI_QUEUE, 1));
    SHOW("SI_USER to self", qinfo(getpid(), rt, SI_USER, 3));
    SHOW("SI_QUEUE to another", qinfo(child, rt, SI_QUEUE, 2));
    int st;
    waitpid(child, &st, 0);
    printf("the child got the SI_QUEUE one, value %d\n", WEXITSTATUS(st));
    siginfo_t si;
    struct timespec zero = {0, 0};
    int sig = sigtimedwait(&set, &si, &zero);
    printf("self got %s code=%s signo=%d\n", name(sig), code(si.si_code), si.si_signo);

    SHOW("tg: bad tgid", tgqinfo(0, getpid(), rt, SI_QUEUE, 1));
    SHOW("tg: bad tid", tgqinfo(getpid(), -1, rt, SI_QUEUE, 1));
    SHOW("tg: other group", tgqinfo(getppid(), getpid(), rt, SI_QUEUE, 1));
    SHOW("tg: SI_TKILL to self", tgqinfo(getpid(), getpid(), rt, SI_TKILL, 4));
    SHOW("tg: SI_QUEUE to self", tgqinfo(getpid(), getpid(), rt, SI_QUEUE, 5));
    for (int i = 0; i < 2; i++) {
        sig = sigtimedwait(&set, &si, &zero);
        printf("self got %s code=%s value=%d pid=%d signo-ok=%d\n", name(sig), code(si.si_code),
               si.si_value.sival_int, si.si_pid, si.si_signo == rt);
    }
    return 0;
}

static int case_limit(void)
{
    /* In a child, so that nothing else of this program has signals queued.  The
     * limit counts every signal queued for the user (other programs' too), so
     * only what does not depend on them is printed. */
    pid_t child = fork();
    if (child == 0) {
        struct rlimit lim = {32, 32};
        setrlimit(RLIMIT_SIGPENDING, &lim);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGRTMIN + 1);
        sigaddset(&set, SIGRTMIN + 2);
        sigprocmask(SIG_BLOCK, &set, NULL);
        int queued = 0, refused = 0;
        for (int i = 1; i <= 48; i++) {
            union sigval v = {.sival_int = i};
            if (sigqueue(getpid(), SIGRTMIN + 1, v) == 0)
                queued++;
            else if (errno == EAGAIN && queued + refused + 1 == i)
                refused++;
        }
        printf("some queued, then EAGAIN: %d\n", queued > 0 && queued <= 32 && queued + refused == 48);
        SHOW("kill with the queue full", kill(getpid(), SIGRTMIN + 2));
        SHOW("tgkill with the queue full", (int)syscall(SYS_tgkill, getpid(), getpid(), SIGRTMIN + 2));
        siginfo_t si;
        struct timespec zero = {0, 0};
        int sig, in_order = 1;
        for (int i = 1; i <= queued; i++) {
            sig = sigtimedwait(&set, &si, &zero);
            in_order &= sig == SIGRTMIN + 1 && si.si_code == SI_QUEUE && si.si_value.sival_int == i;
        }
        printf("each queued one, in order: %d\n", in_order);
        while ((sig = sigtimedwait(&set, &si, &zero)) > 0)
            record(sig, &si);
        printf("then:%s\n", log_);
        _exit(0);
    }
    waitpid(child, NULL, 0);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2)
        return 2;
    if (!strcmp(argv[1], "queue"))
        return case_queue();
    if (!strcmp(argv[1], "sigwait"))
        return case_sigwait();
    if (!strcmp(argv[1], "timedwait"))
        return case_timedwait();
    if (!strcmp(argv[1], "perm"))
        return case_perm();
    if (!strcmp(argv[1], "limit"))
        return case_limit();
    return 2;
}
