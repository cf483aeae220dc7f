/* Signals and threads: pthread_kill reaches one thread, a process signal goes to a
 * thread that does not block it, pthread_cancel ends a thread blocked in a wait. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static atomic_long handled_by;
static atomic_long worker_tid;

static void on_signal(int sig) {
    (void)sig;
    atomic_store(&handled_by, syscall(SYS_gettid));
}

static void *spinner(void *arg) {
    (void)arg;
    atomic_store(&worker_tid, syscall(SYS_gettid));
    while (!atomic_load(&handled_by)) {
    }
    return NULL;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
static atomic_int waiting;

static void cleanup(void *arg) {
    (void)arg;
    printf("cleanup handler ran\n");
    pthread_mutex_unlock(&lock);
}

static void *sleeper(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    pthread_cleanup_push(cleanup, NULL);
    atomic_store(&waiting, 1);
    for (;;) pthread_cond_wait(&never, &lock);
    pthread_cleanup_pop(1);
    return NULL;
}

static void *napper(void *arg) {
    (void)arg;
    atomic_store(&waiting, 1);
    sleep(100);
    return (void *)1;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);

    pthread_t t;
    pthread_create(&t, NULL, spinner, NULL);
    while (!atomic_load(&worker_tid)) {
    }
    pthread_kill(t, SIGUSR1);
    pthread_join(t, NULL);
    printf("pthread_kill: handled by the target %d\n", atomic_load(&handled_by) == atomic_load(&worker_tid));

    /* Main blocks SIGUSR2: a signal to the process goes to the worker. */
    atomic_store(&handled_by, 0);
    atomic_store(&worker_tid, 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    sigset_t none;
    sigemptyset(&none);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setsigmask_np(&attr, &none);
    pthread_create(&t, &attr, spinner, NULL);
    while (!atomic_load(&worker_tid)) {
    }
    kill(getpid(), SIGUSR2);
    pthread_join(t, NULL);
    printf("kill to the process: handled by the worker %d\n", atomic_load(&handled_by) == atomic_load(&worker_tid));

    pthread_create(&t, NULL, sleeper, NULL);
    while (!atomic_load(&waiting)) {
    }
    pthread_mutex_lock(&lock); /* the sleeper waits in pthread_cond_wait now */
    pthread_mutex_unlock(&lock);
    pthread_cancel(t);
    void *r;
    pthread_join(t, &r);
    printf("cancel in cond_wait: %s\n", r == PTHREAD_CANCELED ? "canceled" : "not canceled");

    atomic_store(&waiting, 0);
    pthread_create(&t, NULL, napper, NULL);
    while (!atomic_load(&waiting)) {
    }
    usleep(20000);
    pthread_cancel(t);
    pthread_join(t, &r);
    printf("cancel in sleep: %s\n", r == PTHREAD_CANCELED ? "canceled" : "not canceled");
    return 0;
}
