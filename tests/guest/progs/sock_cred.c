/* SO_PEERCRED: the pid (and ids) of the process at the other end, as Linux
 * records it: the maker of a socketpair, the client that connected, the server
 * that listened. */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static struct ucred cred(int fd) {
    struct ucred c = {-1, -1, -1};
    socklen_t len = sizeof c;
    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len);
    return c;
}

static int ids_ok(struct ucred c) { return c.uid == getuid() && c.gid == getgid(); }

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (chdir(argv[1]) < 0) return 1;
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    pid_t maker = getpid();
    struct ucred c = cred(sv[0]);
    printf("socketpair: pid is the maker %d, ids %d\n", c.pid == maker, ids_ok(c));
    pid_t child = fork();
    if (child == 0) {
        c = cred(sv[1]);
        printf("socketpair in the child: pid is the maker %d\n", c.pid == maker);
        _exit(0);
    }
    waitpid(child, NULL, 0);

    struct sockaddr_un a = {AF_UNIX, "cred.sock"};
    int srv = socket(AF_UNIX, SOCK_STREAM, 0);
    bind(srv, (struct sockaddr *)&a, sizeof a);
    listen(srv, 4);
    c = cred(srv);
    printf("listener: pid is its own %d\n", c.pid == getpid());
    int ready[2];
    pipe(ready);
    child = fork();
    if (child == 0) {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        connect(s, (struct sockaddr *)&a, sizeof a);
        c = cred(s);
        printf("client: pid is the server %d, ids %d\n", c.pid == getppid(), ids_ok(c));
        write(ready[1], "x", 1);
        char b;
        read(s, &b, 1);
        _exit(0);
    }
    char b;
    read(ready[0], &b, 1);
    int conn = accept(srv, NULL, NULL);
    c = cred(conn);
    printf("server: pid is the client %d, ids %d\n", c.pid == child, ids_ok(c));
    write(conn, "x", 1);
    waitpid(child, NULL, 0);
    unlink("cred.sock");

    int unconnected = socket(AF_UNIX, SOCK_STREAM, 0);
    c = cred(unconnected);
    printf("unconnected: pid %d uid %d gid %d\n", c.pid, (int)c.uid, (int)c.gid);
    int tcp = socket(AF_INET, SOCK_STREAM, 0);
    c = cred(tcp);
    printf("tcp: pid %d uid %d gid %d\n", c.pid, (int)c.uid, (int)c.gid);
    return 0;
}
