/* System V message queues: a ping-pong between a parent and its child by message
 * type, the ways msgrcv picks a message, a full queue, removal waking a receiver,
 * and the errors a guest can provoke.  Every queue it makes is removed before it
 * exits.  The parent prints only while no child runs, so the lines come in one order. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEY 0x3e55a6e
#define SHOW(expr)                                                                     \
    do {                                                                               \
        long r_ = (long)(expr);                                                        \
        printf("%s = %ld %s\n", #expr, r_, r_ == -1 ? strerrorname_np(errno) : "");    \
    } while (0)

struct msg {
    long mtype;
    char mtext[64];
};

static int send(int id, long type, const char *text, int flags) {
    struct msg m = {type, ""};
    strcpy(m.mtext, text);
    return msgsnd(id, &m, strlen(text) + 1, flags);
}

static void recv(int id, size_t size, long type, int flags) {
    struct msg m;
    memset(&m, 0, sizeof m);
    long n = msgrcv(id, &m, size, type, flags);
    if (n < 0)
        printf("msgrcv(%zu, %ld, %#o) = -1 %s\n", size, type, flags, strerrorname_np(errno));
    else
        printf("msgrcv(%zu, %ld, %#o) = %ld: type %ld \"%.*s\"\n", size, type, flags, n, m.mtype, (int)n, m.mtext);
}

static void stat_of(int id, const char *when) {
    struct msqid_ds ds;
    if (msgctl(id, IPC_STAT, &ds) < 0) {
        printf("%s: stat %s\n", when, strerrorname_np(errno));
        return;
    }
    printf("%s: key %#x mode %o qnum %lu cbytes %lu qbytes %lu lspid-is-me %d lrpid-is-me %d stime-set %d\n",
           when, ds.msg_perm.__key, ds.msg_perm.mode, ds.msg_qnum, ds.__msg_cbytes, ds.msg_qbytes,
           ds.msg_lspid == getpid(), ds.msg_lrpid == getpid(), ds.msg_stime != 0);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int id = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    printf("id %d\n", id);
    stat_of(id, "fresh");

    /* Ping-pong: pings are type 1, pongs type 2; the child waits before each ping is sent. */
    pid_t child = fork();
    if (child == 0) {
        for (int i = 0; i < 3; i++) {
            struct msg m;
            long n = msgrcv(id, &m, sizeof m.mtext, 1, 0);
            char reply[64];
            snprintf(reply, sizeof reply, "pong to %.*s", (int)n, m.mtext);
            send(id, 2, reply, 0);
        }
        _exit(0);
    }
    char log[3][64];
    for (int i = 0; i < 3; i++) {
        char ping[16];
        snprintf(ping, sizeof ping, "ping %d", i);
        send(id, 1, ping, 0);
        struct msg m;
        long n = msgrcv(id, &m, sizeof m.mtext, 2, 0);
        snprintf(log[i], sizeof log[i], "%ld %ld %s", n, m.mtype, m.mtext);
    }
    int st;
    waitpid(child, &st, 0);
    for (int i = 0; i < 3; i++)
        printf("parent got: %s\n", log[i]);
    stat_of(id, "after ping-pong");

    /* Which message msgrcv takes. */
    send(id, 3, "three", 0);
    send(id, 1, "one", 0);
    send(id, 2, "two-a", 0);
    send(id, 5, "five", 0);
    send(id, 2, "two-b", 0);
    stat_of(id, "five queued");
    recv(id, 64, 2, 0);
    recv(id, 64, -4, 0);
    recv(id, 64, 3, MSG_EXCEPT);
    recv(id, 3, 0, 0);
    recv(id, 3, 0, MSG_NOERROR);
    recv(id, 64, 7, IPC_NOWAIT);
    recv(id, 64, 0, 0);
    recv(id, 64, 0, IPC_NOWAIT);
    stat_of(id, "empty");

    /* A full queue: the sender sleeps until a receive makes room. */
    struct msqid_ds ds;
    msgctl(id, IPC_STAT, &ds);
    ds.msg_qbytes = 12;
    SHOW(msgctl(id, IPC_SET, &ds));
    SHOW(send(id, 1, "1234567", 0));
    SHOW(send(id, 1, "abcdefg", IPC_NOWAIT));
    child = fork();
    if (child == 0) {
        int r = send(id, 1, "abcdefg", 0);
        _exit(r == 0 ? 0 : 1);
    }
    while (1) { /* until the child sleeps in msgsnd (its stat shows S) */
        char path[64], buf[256];
        snprintf(path, sizeof path, "/proc/%d/stat", child);
        FILE *f = fopen(path, "r");
        fgets(buf, sizeof buf, f);
        fclose(f);
        if (strchr(buf, ')')[2] == 'S')
            break;
        usleep(2000);
    }
    usleep(20000);
    stat_of(id, "full");
    recv(id, 64, 0, 0);
    waitpid(child, &st, 0);
    printf("blocked sender exited %d\n", WEXITSTATUS(st));
    recv(id, 64, 0, 0);

    /* Removal wakes a sleeping receiver with EIDRM. */
    child = fork();
    if (child == 0) {
        struct msg m;
        _exit(msgrcv(id, &m, sizeof m.mtext, 0, 0) == -1 && errno == EIDRM ? 42 : 1);
    }
    while (1) {
        char path[64], buf[256];
        snprintf(path, sizeof path, "/proc/%d/stat", child);
        FILE *f = fopen(path, "r");
        fgets(buf, sizeof buf, f);
        fclose(f);
        if (strchr(buf, ')')[2] == 'S')
            break;
        usleep(2000);
    }
    usleep(20000);
    SHOW(msgctl(id, IPC_RMID, NULL));
    waitpid(child, &st, 0);
    printf("receiver woken by removal exited %d\n", WEXITSTATUS(st));

    /* Keys and errors. */
    int kid = msgget(KEY, IPC_CREAT | 0640);
    printf("keyed id %d\n", kid);
    SHOW(msgget(KEY, IPC_CREAT | IPC_EXCL));
    SHOW(msgget(KEY, 0) == kid);
    SHOW(msgget(KEY + 1, 0));
    SHOW(send(kid, 0, "x", 0));
    SHOW(send(kid, -3, "x", 0));
    struct msg m = {1, "x"};
    SHOW(msgsnd(kid, &m, 8193, 0));
    SHOW(msgsnd(kid, &m, -1, 0));
    SHOW(msgsnd(kid, (void *)8, 1, 0));
    SHOW(msgsnd(-1, &m, 1, 0));
    SHOW(msgsnd(kid + 1, &m, 1, 0));
    SHOW(msgrcv(kid, &m, -1, 0, 0));
    SHOW(msgrcv(-1, &m, 1, 0, 0));
    SHOW(msgsnd(kid, &m, 0, 0));
    SHOW(msgrcv(kid, &m, 0, 0, 0));
    SHOW(msgctl(kid, 99, &ds));
    SHOW(msgctl(kid, IPC_STAT, (struct msqid_ds *)8));
    msgctl(kid, IPC_STAT, &ds);
    ds.msg_perm.mode = 0600;
    ds.msg_qbytes = 100;
    SHOW(msgctl(kid, IPC_SET, &ds));
    stat_of(kid, "keyed");
    SHOW(msgctl(kid, IPC_RMID, NULL));
    SHOW(msgctl(kid, IPC_RMID, NULL));
    return 0;
}
