/* A thread's tid names it outside its process too: /proc/TID (not listed) and kill(TID). */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static _Atomic pid_t tid;
static atomic_int got;

static void on_usr1(int sig) { got = sig; }

static void *thread(void *arg) {
    (void)arg;
    tid = syscall(SYS_gettid);
    for (int i = 0; i < 3000 && !got; i++) usleep(1000); /* bounded: a lost signal fails, never hangs */
    return NULL;
}

int main(void) {
    signal(SIGUSR1, on_usr1);
    pthread_t t;
    pthread_create(&t, NULL, thread, NULL);
    while (!tid) usleep(1000);
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)tid);
    FILE *f = fopen(path, "r");
    printf("/proc/TID/status opens: %d\n", f != NULL);
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "Tgid:", 5)) printf("Tgid is the pid: %d\n", atoi(line + 5) == getpid());
        if (!strncmp(line, "Pid:", 4)) printf("Pid is the tid: %d\n", atoi(line + 4) == tid);
    }
    if (f) fclose(f);
    DIR *d = opendir("/proc");
    int listed = 0;
    for (struct dirent *e; (e = readdir(d));) listed |= atoi(e->d_name) == tid;
    closedir(d);
    printf("listed in /proc: %d\n", listed);
    printf("kill(TID, 0): %d\n", kill(tid, 0));
    printf("kill(TID, SIGUSR1): %d\n", kill(tid, SIGUSR1));
    pthread_join(t, NULL);
    printf("handled: %d\n", got == SIGUSR1);
    return 0;
}
