/* How a threaded process ends: exit from a thread, the main thread leaving first,
 * a fatal signal in a thread, execve from a thread, a threaded child seen by wait. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *self;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;

static void *block_forever(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;) pthread_cond_wait(&never, &lock);
    return NULL;
}

static void nap(int ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static void *exit_soon(void *arg) {
    nap(20);
    printf("thread calls exit(%ld)\n", (long)arg);
    fflush(stdout);
    exit((int)(long)arg);
}

static void *last_one(void *arg) {
    (void)arg;
    nap(30);
    printf("the last thread is still running\n");
    fflush(stdout);
    return NULL;
}

static void *segv_soon(void *arg) {
    (void)arg;
    nap(20);
    *(volatile int *)8 = 1;
    return NULL;
}

static void *exec_soon(void *arg) {
    char pid[32];
    (void)arg;
    nap(20);
    snprintf(pid, sizeof pid, "%d", getpid());
    execl(self, self, "after_exec", pid, (char *)NULL);
    return NULL;
}

int main(int argc, char **argv) {
    self = argv[0];
    const char *mode = argc > 1 ? argv[1] : "";
    pthread_t t, u;
    if (!strcmp(mode, "after_exec")) {
        printf("after exec from a thread: same pid %d, tid is pid %d\n", getpid() == atoi(argv[2]),
               syscall(SYS_gettid) == getpid());
        return 4;
    }
    if (!strcmp(mode, "exit")) {
        pthread_create(&u, NULL, block_forever, NULL);
        pthread_create(&t, NULL, exit_soon, (void *)3L);
        pthread_join(u, NULL);
    } else if (!strcmp(mode, "main_leaves")) {
        pthread_create(&t, NULL, last_one, NULL);
        printf("main thread leaves\n");
        fflush(stdout);
        pthread_exit(NULL);
    } else if (!strcmp(mode, "segv")) {
        pthread_create(&u, NULL, block_forever, NULL);
        pthread_create(&t, NULL, segv_soon, NULL);
        pthread_join(u, NULL);
    } else if (!strcmp(mode, "exec")) {
        pthread_create(&u, NULL, block_forever, NULL);
        pthread_create(&t, NULL, exec_soon, NULL);
        pthread_join(u, NULL);
    } else if (!strcmp(mode, "wait")) {
        pid_t child = fork();
        if (child == 0) {
            pthread_create(&u, NULL, block_forever, NULL);
            pthread_create(&t, NULL, exit_soon, (void *)7L);
            pthread_join(u, NULL);
            _exit(1);
        }
        int st;
        pid_t got = waitpid(-1, &st, 0);
        printf("wait: the child %d, exited %d with %d\n", got == child, WIFEXITED(st), WEXITSTATUS(st));
        printf("wait again: %d\n", (int)waitpid(-1, &st, WNOHANG));
    }
    return 1;
}
