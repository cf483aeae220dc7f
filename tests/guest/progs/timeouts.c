/* A sleep or a timed wait never ends before its time (a timer may not fire early). */
#include <errno.h>
#include <pthread.h>
#include <sys/sem.h>
#include <stdio.h>
#include <poll.h>
#include <signal.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t rang;
static void ring(int sig) { (void)sig; rang = 1; }

static long long ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

static struct timespec later(clockid_t clk, long delta) {
    struct timespec t;
    clock_gettime(clk, &t);
    t.tv_nsec += delta;
    while (t.tv_nsec >= 1000000000L) t.tv_sec++, t.tv_nsec -= 1000000000L;
    return t;
}

int main(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    int early_sleep = 0, early_abs = 0, early_wait = 0, timed_out = 0, early_poll = 0;
    int fds[2], early_sem = 0, early_alarm = 0;
    signal(SIGALRM, ring);
    pipe(fds);
    int sem = semget(IPC_PRIVATE, 1, 0600);
    for (int i = 0; i < 30; i++) {
        long delta = (2 + i % 5) * 1000000L + 123456L * (i % 4);
        struct timespec a, b, nap = {0, delta};
        clock_gettime(CLOCK_MONOTONIC, &a);
        nanosleep(&nap, NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        early_sleep += ns(b) - ns(a) < delta;

        struct timespec until = later(CLOCK_MONOTONIC, delta);
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        early_abs += ns(b) < ns(until);

        struct timespec deadline = later(CLOCK_REALTIME, delta);
        pthread_mutex_lock(&m);
        int r = pthread_cond_timedwait(&c, &m, &deadline);
        pthread_mutex_unlock(&m);
        clock_gettime(CLOCK_REALTIME, &b);
        timed_out += r == ETIMEDOUT;
        early_wait += r == ETIMEDOUT && ns(b) < ns(deadline);

        struct pollfd pfd = {fds[0], POLLIN, 0};
        clock_gettime(CLOCK_MONOTONIC, &a);
        poll(&pfd, 1, 1 + i % 4);
        clock_gettime(CLOCK_MONOTONIC, &b);
        early_poll += ns(b) - ns(a) < (1 + i % 4) * 1000000LL;

        struct sembuf down = {0, -1, 0};
        clock_gettime(CLOCK_MONOTONIC, &a);
        semtimedop(sem, &down, 1, &nap);
        clock_gettime(CLOCK_MONOTONIC, &b);
        early_sem += ns(b) - ns(a) < delta;

        struct itimerval it = {{0, 0}, {0, delta / 1000}};
        rang = 0;
        clock_gettime(CLOCK_MONOTONIC, &a);
        setitimer(ITIMER_REAL, &it, NULL);
        while (!rang)
            pause();
        clock_gettime(CLOCK_MONOTONIC, &b);
        early_alarm += ns(b) - ns(a) < delta / 1000 * 1000;
    }
    semctl(sem, 0, IPC_RMID);
    printf("early: nanosleep %d, clock_nanosleep %d, timedwait %d, poll %d, semtimedop %d, setitimer %d;"
           " timed out %d of 30\n",
           early_sleep, early_abs, early_wait, early_poll, early_sem, early_alarm, timed_out);
    return 0;
}
