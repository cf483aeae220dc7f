/* System V semaphores: ordering a parent and its children, waits for zero,
 * SEM_UNDO at exit, removal and signals waking sleepers, and the errors a guest
 * can provoke.  Every set it makes is removed before it exits. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEY 0x5e3a
#define SHOW(expr)                                                                     \
    do {                                                                               \
        long r_ = (long)(expr);                                                        \
        printf("%s = %ld %s\n", #expr, r_, r_ == -1 ? strerrorname_np(errno) : "");    \
    } while (0)

union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

static int op(int id, unsigned short num, short delta, short flags) {
    struct sembuf b = {num, delta, flags};
    return semop(id, &b, 1);
}

/* Wait until COUNT guests sleep on semaphore NUM (GETNCNT or GETZCNT). */
static void until_waiting(int id, int num, int cmd, int count) {
    while (semctl(id, num, cmd) != count)
        usleep(2000);
}

static void all(int id, const char *when) {
    unsigned short v[3];
    union semun a = {.array = v};
    semctl(id, 0, GETALL, a);
    printf("%s: %d %d %d\n", when, v[0], v[1], v[2]);
}

static void on_usr1(int sig) { (void)sig; }

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int id = semget(IPC_PRIVATE, 3, IPC_CREAT | 0600);
    printf("id %d\n", id);
    struct semid_ds ds;
    union semun a = {.buf = &ds};
    SHOW(semctl(id, 0, IPC_STAT, a));
    printf("nsems %lu mode %o otime %ld ctime-set %d\n", ds.sem_nsems, ds.sem_perm.mode, ds.sem_otime, ds.sem_ctime != 0);
    unsigned short init[3] = {0, 0, 1};
    a.array = init;
    SHOW(semctl(id, 0, SETALL, a));
    all(id, "set");
    SHOW(op(id, 0, -1, IPC_NOWAIT));
    SHOW(semctl(id, 0, GETPID) == getpid());

    /* The child waits for semaphore 0, then answers on semaphore 1.  The parent
     * prints only once the child is gone, so the lines come in one order. */
    pid_t child = fork();
    if (child == 0) {
        int got = op(id, 0, -1, 0);
        printf("child: released %d, answered %d\n", got, op(id, 1, 1, 0));
        _exit(0);
    }
    until_waiting(id, 0, GETNCNT, 1);
    int ncnt = semctl(id, 0, GETNCNT), zcnt = semctl(id, 0, GETZCNT);
    int released = op(id, 0, 1, 0);
    /* The sleeper's operation is done by the time semop returns. */
    int value = semctl(id, 0, GETVAL), after = semctl(id, 0, GETNCNT);
    int answer = op(id, 1, -1, 0);
    int st;
    waitpid(child, &st, 0);
    printf("parent: ncnt %d zcnt %d; release %d; then value %d ncnt %d; answer %d\n", ncnt, zcnt, released, value,
           after, answer);
    printf("parent: GETPID is the child %d, is me %d\n", semctl(id, 1, GETPID) == child,
           semctl(id, 1, GETPID) == getpid());

    /* Two children wait for semaphore 2 to be zero. */
    for (int i = 0; i < 2; i++)
        if (fork() == 0) {
            struct sembuf z = {2, 0, 0};
            int r = semop(id, &z, 1);
            printf("zero-waiter: %d\n", r);
            _exit(0);
        }
    until_waiting(id, 2, GETZCNT, 2);
    zcnt = semctl(id, 2, GETZCNT);
    released = op(id, 2, -1, 0);
    while (wait(NULL) > 0)
        ;
    printf("zcnt %d; release %d\n", zcnt, released);

    /* Several operations at once: all or nothing. */
    struct sembuf two[2] = {{0, 2, 0}, {1, -1, IPC_NOWAIT}};
    SHOW(semop(id, two, 2));
    all(id, "all or nothing");
    two[1].sem_op = 0;
    SHOW(semop(id, two, 2));
    all(id, "both done");

    /* SEM_UNDO: what an exiting process did is undone. */
    child = fork();
    if (child == 0) {
        SHOW(op(id, 2, 5, SEM_UNDO));
        SHOW(op(id, 0, -1, SEM_UNDO));
        all(id, "undo child");
        _exit(0);
    }
    waitpid(child, &st, 0);
    all(id, "after undo child");
    printf("GETPID after exit is the child %d\n", semctl(id, 2, GETPID) == child);
    /* SETVAL forgets the undo values of that semaphore. */
    child = fork();
    if (child == 0) {
        op(id, 2, 3, SEM_UNDO);
        op(id, 1, 4, SEM_UNDO);
        a.val = 1;
        semctl(id, 2, SETVAL, a);
        _exit(0);
    }
    waitpid(child, &st, 0);
    all(id, "after SETVAL child");

    /* A signal ends the wait (EINTR, SA_RESTART or not); a timeout gives EAGAIN. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    child = fork();
    if (child == 0) {
        SHOW(op(id, 1, -100, 0));
        struct timespec t = {0, 20000000};
        struct sembuf b = {1, -100, 0};
        SHOW(semtimedop(id, &b, 1, &t));
        t.tv_nsec = 2000000000;
        SHOW(semtimedop(id, &b, 1, &t));
        _exit(0);
    }
    until_waiting(id, 1, GETNCNT, 1);
    kill(child, SIGUSR1);
    waitpid(child, &st, 0);
    printf("after EINTR: ncnt %d\n", semctl(id, 1, GETNCNT));

    /* Removal wakes the sleepers with EIDRM. */
    child = fork();
    if (child == 0) {
        SHOW(op(id, 1, -100, 0));
        _exit(0);
    }
    until_waiting(id, 1, GETNCNT, 1);
    int removed = semctl(id, 0, IPC_RMID);
    waitpid(child, &st, 0);
    printf("removed %d\n", removed);
    SHOW(semctl(id, 0, GETVAL));

    /* Keys and errors. */
    int kid = semget(KEY, 2, IPC_CREAT | 0644);
    printf("keyed id %d\n", kid);
    SHOW(semget(KEY, 2, IPC_CREAT | IPC_EXCL | 0644));
    SHOW(semget(KEY, 3, 0));
    SHOW(semget(KEY, 0, 0) == kid);
    SHOW(semget(KEY + 1, 1, 0));
    SHOW(semget(IPC_PRIVATE, 0, 0600));
    SHOW(semget(IPC_PRIVATE, 32001, 0600));
    SHOW(semget(IPC_PRIVATE, -1, 0600));
    SHOW(op(kid, 2, 1, 0));
    SHOW(semop(kid, two, 0));
    SHOW(semop(kid, two, 501));
    SHOW(semop(kid, (struct sembuf *)8, 1));
    SHOW(semop(-1, two, 1));
    SHOW(op(kid, 0, 32767, 0));
    SHOW(op(kid, 0, 1, 0));
    struct timespec bad = {0, 1000000000};
    SHOW(semtimedop(kid, two, 1, &bad));
    a.val = 32768;
    SHOW(semctl(kid, 0, SETVAL, a));
    a.val = -1;
    SHOW(semctl(kid, 0, SETVAL, a));
    SHOW(semctl(kid, 2, GETVAL));
    SHOW(semctl(kid, -1, GETNCNT));
    SHOW(semctl(kid, 0, 99));
    SHOW(semctl(-3, 0, GETVAL));
    a.array = (unsigned short *)8;
    SHOW(semctl(kid, 0, GETALL, a));
    SHOW(semctl(kid, 0, SETALL, a));
    unsigned short big[2] = {1, 40000};
    a.array = big;
    SHOW(semctl(kid, 0, SETALL, a));
    a.buf = &ds;
    semctl(kid, 0, IPC_STAT, a);
    ds.sem_perm.mode = 0600;
    SHOW(semctl(kid, 0, IPC_SET, a));
    semctl(kid, 0, IPC_STAT, a);
    printf("keyed: key %#x nsems %lu mode %o otime-set %d\n", ds.sem_perm.__key, ds.sem_nsems, ds.sem_perm.mode, ds.sem_otime != 0);
    SHOW(semctl(kid, 0, IPC_RMID));
    SHOW(semctl(kid, 0, IPC_RMID));
    return 0;
}
