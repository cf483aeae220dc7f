/* System V shared memory: sharing after fork and by key, attach counts, removal
 * while attached, read-only attaches and the errors a guest can provoke.
 * Every object it makes is removed before it exits. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEY 0x5eed1
#define SHOW(expr)                                                                     \
    do {                                                                               \
        long r_ = (long)(expr);                                                        \
        printf("%s = %ld %s\n", #expr, r_, r_ == -1 ? strerrorname_np(errno) : "");    \
    } while (0)

static void stat_of(int id, const char *when) {
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) < 0) {
        printf("%s: stat %s\n", when, strerrorname_np(errno));
        return;
    }
    printf("%s: key %#x segsz %zu nattch %lu mode %o cpid-is-me %d lpid-is-me %d atime-set %d\n", when,
           ds.shm_perm.__key, ds.shm_segsz, ds.shm_nattch, ds.shm_perm.mode, ds.shm_cpid == getpid(),
           ds.shm_lpid == getpid(), ds.shm_atime != 0);
}

static void maps_names(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    while (fgets(line, sizeof line, f))
        if (strstr(line, "SYSV"))
            printf("maps: %s %s", strchr(line, ' ') + 1 > line ? (strchr(line, ' ')[1] == 'r' ? "r" : "?") : "",
                   strchr(line, '/'));
    fclose(f);
}

/* Run by exec: find the segment by its key and leave a mark in it. */
static int by_key(void) {
    int id = shmget(KEY, 0, 0);
    char *p = shmat(id, NULL, 0);
    if (p == (void *)-1)
        return 1;
    printf("exec'd: sees \"%s\"\n", p);
    strcpy(p + 100, "written by the exec'd program");
    stat_of(id, "exec'd");
    return shmdt(p) == 0 ? 0 : 2;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc > 1)
        return by_key();

    int id = shmget(IPC_PRIVATE, 10000, IPC_CREAT | 0600);
    printf("private id %d\n", id);
    stat_of(id, "fresh");
    char *p = shmat(id, NULL, 0);
    printf("attached %d, page aligned %d, zeroed %d\n", p != (void *)-1, ((long)p & 4095) == 0, p[9999] == 0);
    strcpy(p, "parent was here");
    stat_of(id, "attached");
    maps_names();

    pid_t child = fork();
    if (child == 0) {
        stat_of(id, "child");
        printf("child sees \"%s\"\n", p);
        strcpy(p, "child was here");
        SHOW(shmdt(p));
        stat_of(id, "child detached");
        _exit(0);
    }
    int st;
    waitpid(child, &st, 0);
    printf("parent sees \"%s\"\n", p);
    stat_of(id, "after child");

    /* A second attach of the same segment, at an address of our choosing. */
    char *hint = mmap(NULL, 3 * 4096 * 4, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(hint, 3 * 4096 * 4);
    char *q = shmat(id, hint + 4096, 0);
    printf("at hint %d, same bytes %d\n", q == hint + 4096, strcmp(q, p) == 0);
    stat_of(id, "two attaches");
    SHOW(shmat(id, hint + 4096, 0) == (void *)-1);      /* overlaps: EINVAL */
    SHOW(shmat(id, hint + 4097, 0) == (void *)-1);      /* unaligned: EINVAL */
    char *r = shmat(id, hint + 4097, SHM_RND | SHM_REMAP);
    printf("SHM_RND|SHM_REMAP rounds down %d\n", r == hint + 4096);
    SHOW(shmdt(q + 1));
    SHOW(shmdt(q + 4096));
    SHOW(shmdt(q));
    SHOW(shmdt(q));

    /* Read-only attach: a write is a SIGSEGV. */
    child = fork();
    if (child == 0) {
        char *ro = shmat(id, NULL, SHM_RDONLY);
        printf("read-only sees \"%s\"\n", ro);
        ro[0] = 'X';
        _exit(0);
    }
    waitpid(child, &st, 0);
    printf("read-only writer: signaled %d sig %d\n", WIFSIGNALED(st), WTERMSIG(st));
    shmdt(p);
    stat_of(id, "detached");

    /* A keyed segment, found by another program. */
    int kid = shmget(KEY, 8192, IPC_CREAT | IPC_EXCL | 0640);
    printf("keyed id %d\n", kid);
    SHOW(shmget(KEY, 8192, IPC_CREAT | IPC_EXCL | 0640));
    SHOW(shmget(KEY, 8193, 0));
    SHOW(shmget(KEY, 100, 0) == kid);
    SHOW(shmget(KEY + 1, 100, 0));
    SHOW(shmget(IPC_PRIVATE, 0, 0600));
    SHOW(shmget(IPC_PRIVATE, 1UL << 40, 0600)); /* more than the machine has: ENOMEM */
    SHOW(shmget(IPC_PRIVATE, ~0UL, 0600));
    char *k = shmat(kid, NULL, 0);
    strcpy(k, "left by the parent");
    child = fork();
    if (child == 0) {
        execl(argv[0], argv[0], "by-key", (char *)NULL);
        _exit(127);
    }
    waitpid(child, &st, 0);
    printf("exec'd child status %d; parent reads \"%s\"\n", WEXITSTATUS(st), k + 100);
    stat_of(kid, "keyed");

    /* Removal while attached: the key goes private, the memory stays until the last detach. */
    SHOW(shmctl(kid, IPC_RMID, NULL));
    stat_of(kid, "removed");
    SHOW(shmget(KEY, 0, 0));
    strcpy(k, "still usable");
    printf("after removal: \"%s\"\n", k);
    SHOW(shmdt(k));
    stat_of(kid, "gone");

    /* IPC_SET and bad arguments. */
    struct shmid_ds ds;
    shmctl(id, IPC_STAT, &ds);
    ds.shm_perm.mode = 0604;
    SHOW(shmctl(id, IPC_SET, &ds));
    stat_of(id, "after IPC_SET");
    SHOW(shmctl(id, IPC_STAT, (struct shmid_ds *)8));
    SHOW(shmctl(id, IPC_SET, (struct shmid_ds *)8));
    SHOW(shmctl(id, 77, &ds));
    SHOW(shmctl(-1, IPC_STAT, &ds));
    SHOW(shmctl(id + 1, IPC_STAT, &ds));
    SHOW(shmat(-5, NULL, 0) == (void *)-1);
    SHOW(shmat(id + 32768, NULL, 0) == (void *)-1);
    SHOW((long)shmat(id, (void *)0x7ffffffff000UL, 0)); /* beyond the user range: ENOMEM */
    SHOW((long)shmat(id, (void *)0xffffffffffff0000UL, SHM_REMAP));
    SHOW(shmdt(NULL));
    SHOW(shmctl(id, IPC_RMID, NULL));
    SHOW(shmctl(id, IPC_RMID, NULL));
    return 0;
}
