/* AF_UNIX by path and by abstract name: bind, listen, accept, connect, names as
 * getsockname/getpeername/accept/recvfrom give them, datagrams and records.
 * Run in an empty directory (the first argument): the names are relative. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static socklen_t unix_addr(struct sockaddr_un *a, const char *name, int abstract) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (abstract) {
        memcpy(a->sun_path + 1, name, strlen(name));
        return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name);
    }
    strcpy(a->sun_path, name);
    return offsetof(struct sockaddr_un, sun_path) + strlen(name) + 1;
}

static void show(const char *what, struct sockaddr_un *a, socklen_t len) {
    if (len <= offsetof(struct sockaddr_un, sun_path)) {
        printf("%s: len %u, unnamed\n", what, (unsigned)len);
    } else if (a->sun_path[0] == 0) {
        printf("%s: len %u, @%.*s\n", what, (unsigned)len, (int)(len - 3), a->sun_path + 1);
    } else {
        printf("%s: len %u, %s\n", what, (unsigned)len, a->sun_path);
    }
}

static void result(const char *what, int r) { printf("%s: %d %s\n", what, r, r < 0 ? strerror(errno) : ""); }

static void stream(const char *name, int abstract) {
    struct sockaddr_un a, got;
    socklen_t len = unix_addr(&a, name, abstract), glen;
    int srv = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    result("bind", bind(srv, (struct sockaddr *)&a, len));
    result("listen", listen(srv, 4));
    glen = sizeof got;
    getsockname(srv, (struct sockaddr *)&got, &glen);
    show("listener name", &got, glen);
    pid_t child = fork();
    if (child == 0) {
        int c = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(c, (struct sockaddr *)&a, len) < 0) _exit(1);
        write(c, "hello server", 12);
        char buf[32];
        ssize_t n = read(c, buf, sizeof buf);
        _exit(n == 5 && memcmp(buf, "hello", 5) == 0 ? 0 : 2);
    }
    glen = sizeof got;
    int conn = accept(srv, (struct sockaddr *)&got, &glen);
    show("accepted from", &got, glen);
    glen = sizeof got;
    getsockname(conn, (struct sockaddr *)&got, &glen);
    show("accepted socket's name", &got, glen);
    char buf[32];
    ssize_t n = read(conn, buf, sizeof buf);
    printf("server read %zd: %.*s\n", n, (int)n, buf);
    write(conn, "hello", 5);
    int status;
    waitpid(child, &status, 0);
    printf("client status %d\n", WEXITSTATUS(status));
    int again = socket(AF_UNIX, SOCK_STREAM, 0);
    result("bind the same name again", bind(again, (struct sockaddr *)&a, len));
    result("bind a bound socket", bind(srv, (struct sockaddr *)&a, len));
    int c2 = socket(AF_UNIX, SOCK_STREAM, 0);
    result("connect", connect(c2, (struct sockaddr *)&a, len));
    glen = sizeof got;
    getpeername(c2, (struct sockaddr *)&got, &glen);
    show("peer name", &got, glen);
    glen = 4; /* too short: cut, but the full length is told */
    memset(&got, 'x', sizeof got);
    getpeername(c2, (struct sockaddr *)&got, &glen);
    printf("short room: len %u, bytes %.2s\n", (unsigned)glen, got.sun_path);
    close(c2);
    close(again);
    close(conn);
    close(srv);
}

/* More clients than the backlog holds: their blocking connects wait for accepts. */
static void backlog(void) {
    struct sockaddr_un a;
    socklen_t len = unix_addr(&a, "full.sock", 0);
    int srv = socket(AF_UNIX, SOCK_STREAM, 0);
    bind(srv, (struct sockaddr *)&a, len);
    listen(srv, 1);
    for (int i = 0; i < 4; i++) {
        if (fork() == 0) {
            int c = socket(AF_UNIX, SOCK_STREAM, 0);
            if (connect(c, (struct sockaddr *)&a, len) < 0) _exit(1);
            write(c, "c", 1);
            _exit(0);
        }
    }
    usleep(200000);
    int nb = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    result("non-blocking connect to a full backlog", connect(nb, (struct sockaddr *)&a, len));
    close(nb);
    int got = 0;
    for (int i = 0; i < 4; i++) {
        int conn = accept(srv, NULL, NULL);
        char c;
        got += read(conn, &c, 1) == 1;
        close(conn);
    }
    int ok = 0, status;
    for (int i = 0; i < 4; i++) {
        wait(&status);
        ok += WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    printf("backlog 1: %d clients served, %d connected\n", got, ok);
    close(srv);
    unlink("full.sock");
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (chdir(argv[1]) < 0) return 1;
    umask(027);
    stream("srv.sock", 0);
    struct stat st;
    result("stat", stat("srv.sock", &st));
    printf("socket file: S_ISSOCK %d, mode %o\n", S_ISSOCK(st.st_mode), st.st_mode & 0777);
    mkdir("sub", 0755);
    symlink("srv.sock", "link.sock");
    stream("sub/deeper.sock", 0);
    stream("aioumm-test-abstract", 1);
    backlog();

    struct sockaddr_un a;
    socklen_t len;
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    len = unix_addr(&a, "missing.sock", 0);
    result("connect to a missing name", connect(c, (struct sockaddr *)&a, len));
    int fd = open("plain", O_CREAT | O_WRONLY, 0644);
    close(fd);
    len = unix_addr(&a, "plain", 0);
    result("connect to a regular file", connect(c, (struct sockaddr *)&a, len));
    len = unix_addr(&a, "link.sock", 0);
    result("connect through a symlink to a dead socket", connect(c, (struct sockaddr *)&a, len));
    len = unix_addr(&a, "nowhere-abstract", 1);
    result("connect to a missing abstract name", connect(c, (struct sockaddr *)&a, len));
    close(c);

    /* Autobind: an address of the family alone gets an abstract name of five hex digits. */
    int ab = socket(AF_UNIX, SOCK_DGRAM, 0);
    result("autobind", bind(ab, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path)));
    struct sockaddr_un got;
    socklen_t glen = sizeof got;
    getsockname(ab, (struct sockaddr *)&got, &glen);
    printf("autobound: len %u, abstract %d\n", (unsigned)glen, got.sun_path[0] == 0);
    close(ab);

    /* Datagrams by path: the receiver sees the sender's name. */
    int rx = socket(AF_UNIX, SOCK_DGRAM, 0), tx = socket(AF_UNIX, SOCK_DGRAM, 0);
    len = unix_addr(&a, "rx.sock", 0);
    result("bind rx", bind(rx, (struct sockaddr *)&a, len));
    struct sockaddr_un from;
    socklen_t flen = unix_addr(&from, "tx.sock", 0);
    result("bind tx", bind(tx, (struct sockaddr *)&from, flen));
    result("sendto", sendto(tx, "dgram one", 9, 0, (struct sockaddr *)&a, len));
    result("sendto", sendto(tx, "two", 3, 0, (struct sockaddr *)&a, len));
    char buf[64];
    glen = sizeof got;
    ssize_t n = recvfrom(rx, buf, 5, 0, (struct sockaddr *)&got, &glen);
    printf("recvfrom %zd: %.*s\n", n, (int)n, buf);
    show("from", &got, glen);
    struct iovec iov = {buf, sizeof buf};
    struct msghdr msg = {&got, sizeof got, &iov, 1, NULL, 0, 0};
    n = recvmsg(rx, &msg, 0);
    printf("recvmsg %zd: %.*s, flags %x\n", n, (int)n, buf, msg.msg_flags);
    show("msg_name", &got, msg.msg_namelen);
    n = recv(rx, buf, 1, MSG_DONTWAIT);
    result("recv on an empty datagram socket", (int)n);
    /* Truncation is told with MSG_TRUNC. */
    sendto(tx, "0123456789", 10, 0, (struct sockaddr *)&a, len);
    msg.msg_iov[0].iov_len = 4;
    n = recvmsg(rx, &msg, 0);
    printf("short recvmsg %zd, MSG_TRUNC %d\n", n, !!(msg.msg_flags & MSG_TRUNC));
    sendto(tx, "0123456789", 10, 0, (struct sockaddr *)&a, len);
    n = recv(rx, buf, 4, MSG_TRUNC);
    printf("recv MSG_TRUNC gives the real length: %zd\n", n);
    close(rx);
    close(tx);

    /* Records keep their boundaries. */
    int sv[2];
    result("socketpair SEQPACKET", socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv));
    write(sv[0], "abc", 3);
    write(sv[0], "defgh", 5);
    n = read(sv[1], buf, sizeof buf);
    printf("record 1: %zd\n", n);
    n = read(sv[1], buf, sizeof buf);
    printf("record 2: %zd\n", n);
    struct pollfd pfd = {sv[1], POLLIN, 0};
    printf("poll empty: %d\n", poll(&pfd, 1, 0));
    close(sv[0]);
    int ready = poll(&pfd, 1, 1000);
    printf("poll after the peer closed: %d revents %x\n", ready, pfd.revents);
    close(sv[1]);
    unlink("srv.sock");
    unlink("sub/deeper.sock");
    unlink("rx.sock");
    unlink("tx.sock");
    return 0;
}
