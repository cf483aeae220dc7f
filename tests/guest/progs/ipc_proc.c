/* /proc/sysvipc/{shm,sem,msg}: the objects of the IPC namespace, and only those.
 * Pids and times differ between two runs: every other column is printed. */
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

static void show(const char *path, const int *cols, int ncols) {
    char line[512];
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return;
    }
    printf("%s:\n", path);
    while (fgets(line, sizeof line, f)) {
        char *tok[32];
        int n = 0;
        for (char *t = strtok(line, " \n"); t && n < 32; t = strtok(NULL, " \n")) tok[n++] = t;
        for (int i = 0; i < ncols; i++) printf("%s%s", i ? " " : "  ", cols[i] < n ? tok[cols[i]] : "?");
        printf("\n");
    }
    fclose(f);
}

static const int shm_cols[] = {0, 1, 2, 3, 6, 7, 8, 9, 10, 14, 15};
static const int sem_cols[] = {0, 1, 2, 3, 4, 5, 6, 7};
static const int msg_cols[] = {0, 1, 2, 3, 4, 7, 8, 9, 10};

static void show_all(void) {
    show("/proc/sysvipc/shm", shm_cols, 11);
    show("/proc/sysvipc/sem", sem_cols, 8);
    show("/proc/sysvipc/msg", msg_cols, 9);
}

int main(void) {
    show_all();
    int shm = shmget(0x1234, 10000, IPC_CREAT | 0640);
    int shm2 = shmget(IPC_PRIVATE, 4096, 0600);
    int msg = msgget(0x5678, IPC_CREAT | 0600);
    int sem = semget(IPC_PRIVATE, 3, 0666);
    struct {
        long mtype;
        char text[16];
    } m = {7, "hello"};
    msgsnd(msg, &m, 6, 0);
    msgsnd(msg, &m, 3, 0);
    char *at = shmat(shm, NULL, 0);
    memset(at, 1, 5000); /* two pages touched: rss */
    shmctl(shm, IPC_RMID, NULL);
    show_all();
    shmdt(at);
    shmctl(shm2, IPC_RMID, NULL);
    msgctl(msg, IPC_RMID, NULL);
    semctl(sem, 0, IPC_RMID);
    show_all();
    return 0;
}
