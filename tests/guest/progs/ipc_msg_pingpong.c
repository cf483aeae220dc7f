/* Two processes bounce a message through one queue, each blocking in msgrcv (or, with
   "full", the sender blocking in msgsnd on a queue that holds one message): every
   message must arrive, however the two guests' calls interleave. */
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/wait.h>
#include <unistd.h>

struct msg {
    long mtype;
    char text[8];
};

int main(int argc, char **argv) {
    int full = argc > 1 && !strcmp(argv[1], "full");
    int id = msgget(IPC_PRIVATE, IPC_CREAT | 0600), rounds = 400, got = 0;
    struct msg m = {1, "1234567"};
    if (full) {
        struct msqid_ds ds;
        msgctl(id, IPC_STAT, &ds);
        ds.msg_qbytes = sizeof m.text;
        msgctl(id, IPC_SET, &ds);
    }
    pid_t child = fork();
    if (child == 0) {
        for (int i = 0; i < rounds; i++) {
            if (full) {
                m.mtype = 1;
                msgsnd(id, &m, sizeof m.text, 0);
            } else {
                msgrcv(id, &m, sizeof m.text, 1, 0);
                m.mtype = 2;
                msgsnd(id, &m, sizeof m.text, 0);
            }
        }
        _exit(0);
    }
    for (int i = 0; i < rounds; i++) {
        if (full) {
            got += msgrcv(id, &m, sizeof m.text, 0, 0) == sizeof m.text;
        } else {
            m.mtype = 1;
            msgsnd(id, &m, sizeof m.text, 0);
            got += msgrcv(id, &m, sizeof m.text, 2, 0) == sizeof m.text;
        }
    }
    int status;
    waitpid(child, &status, 0);
    msgctl(id, IPC_RMID, NULL);
    printf("%s: %d of %d messages, child status %d\n", full ? "full queue" : "ping-pong", got, rounds, status);
    return 0;
}
