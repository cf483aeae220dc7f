#define _GNU_SOURCE
/* AF_INET and AF_INET6 on the loopback: UDP datagrams (sendto/recvfrom,
 * sendmmsg/recvmmsg, MSG_TRUNC), TCP connect (blocking, non-blocking with
 * EINPROGRESS, refused), socket options and SO_RCVTIMEO. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void result(const char *what, long r) { printf("%s: %ld %s\n", what, r, r < 0 ? strerror(errno) : ""); }

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int port_of(int fd) {
    struct sockaddr_storage a;
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    return a.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&a)->sin_port)
                                  : ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
}

static void udp(void) {
    int rx = socket(AF_INET, SOCK_DGRAM, 0), tx = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = loopback(0);
    result("udp bind", bind(rx, (struct sockaddr *)&a, sizeof a));
    a = loopback(port_of(rx));
    result("udp sendto", sendto(tx, "datagram", 8, 0, (struct sockaddr *)&a, sizeof a));
    char buf[64];
    struct sockaddr_in from;
    socklen_t flen = sizeof from;
    ssize_t n = recvfrom(rx, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
    printf("udp recvfrom %zd: %.*s, from len %u, 127.0.0.1 %d, the sender's port %d\n", n, (int)n, buf,
           (unsigned)flen, from.sin_addr.s_addr == htonl(INADDR_LOOPBACK), ntohs(from.sin_port) == port_of(tx));
    /* Three datagrams at once each way. */
    struct mmsghdr msgs[3];
    struct iovec iov[3];
    const char *words[3] = {"one", "three", "five!"};
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < 3; i++) {
        iov[i].iov_base = (void *)words[i];
        iov[i].iov_len = strlen(words[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &a;
        msgs[i].msg_hdr.msg_namelen = sizeof a;
    }
    result("sendmmsg", sendmmsg(tx, msgs, 3, 0));
    printf("sent lengths %u %u %u\n", msgs[0].msg_len, msgs[1].msg_len, msgs[2].msg_len);
    char bufs[3][8];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < 3; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = 4;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    result("recvmmsg", recvmmsg(rx, msgs, 3, 0, NULL));
    for (int i = 0; i < 3; i++)
        printf("  %u bytes %.*s, MSG_TRUNC %d\n", msgs[i].msg_len, (int)msgs[i].msg_len, bufs[i],
               !!(msgs[i].msg_hdr.msg_flags & MSG_TRUNC));
    result("recvmmsg MSG_DONTWAIT on nothing", recvmmsg(rx, msgs, 3, MSG_DONTWAIT, NULL));
    /* poll sees a datagram come. */
    struct pollfd pfd = {rx, POLLIN, 0};
    int ready = poll(&pfd, 1, 0);
    printf("poll before: %d\n", ready);
    sendto(tx, "x", 1, 0, (struct sockaddr *)&a, sizeof a);
    ready = poll(&pfd, 1, 1000);
    printf("poll after: %d revents %x\n", ready, pfd.revents);
    /* A timeout on receiving: EAGAIN once it runs out. */
    recv(rx, buf, sizeof buf, 0);
    struct timeval tv = {0, 100000};
    result("SO_RCVTIMEO", setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    n = recv(rx, buf, sizeof buf, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("recv timed out: %zd %s, waited about 0.1 s: %d\n", n, strerror(errno), took > 0.08 && took < 2);
    close(rx);
    close(tx);
}

static void udp6(void) {
    int rx = socket(AF_INET6, SOCK_DGRAM, 0), tx = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 a = {0};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    if (bind(rx, (struct sockaddr *)&a, sizeof a) < 0) {
        printf("udp6 bind: %s\n", strerror(errno)); /* no IPv6 loopback: the same natively */
        return;
    }
    a.sin6_port = htons(port_of(rx));
    result("udp6 sendto", sendto(tx, "six", 3, 0, (struct sockaddr *)&a, sizeof a));
    char buf[16], host[64];
    struct sockaddr_in6 from;
    socklen_t flen = sizeof from;
    ssize_t n = recvfrom(rx, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
    printf("udp6 recvfrom %zd: %.*s from %s, len %u\n", n, (int)n, buf,
           inet_ntop(AF_INET6, &from.sin6_addr, host, sizeof host), (unsigned)flen);
    close(rx);
    close(tx);
}

static void tcp(void) {
    int srv = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    result("SO_REUSEADDR", setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    struct sockaddr_in a = loopback(0);
    result("tcp bind", bind(srv, (struct sockaddr *)&a, sizeof a));
    result("tcp listen", listen(srv, 8));
    a = loopback(port_of(srv));
    int type = 0, domain = 0, accepting = 0;
    socklen_t len = sizeof type;
    getsockopt(srv, SOL_SOCKET, SO_TYPE, &type, &len);
    len = sizeof domain;
    getsockopt(srv, SOL_SOCKET, SO_DOMAIN, &domain, &len);
    len = sizeof accepting;
    getsockopt(srv, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len);
    printf("SO_TYPE %d SO_DOMAIN %d SO_ACCEPTCONN %d\n", type, domain, accepting);

    /* Non-blocking connect: EINPROGRESS, then writable, then SO_ERROR 0. */
    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int r = connect(c, (struct sockaddr *)&a, sizeof a);
    printf("non-blocking connect: %s\n", r == 0 ? "at once" : errno == EINPROGRESS ? "EINPROGRESS" : strerror(errno));
    struct pollfd pfd = {c, POLLOUT, 0};
    int ready = poll(&pfd, 1, 2000);
    printf("poll for the connection: %d revents %x\n", ready, pfd.revents);
    int err = -1;
    len = sizeof err;
    getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &len);
    printf("SO_ERROR %d\n", err);
    result("TCP_NODELAY", setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    int nodelay = 0;
    len = sizeof nodelay;
    getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len);
    printf("TCP_NODELAY now %d (len %u)\n", nodelay, (unsigned)len);
    struct sockaddr_in peer;
    socklen_t plen = sizeof peer;
    int conn = accept4(srv, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
    printf("accepted: len %u, the client's port %d, cloexec %d\n", (unsigned)plen,
           ntohs(peer.sin_port) == port_of(c), fcntl(conn, F_GETFD));
    plen = sizeof peer;
    getpeername(c, (struct sockaddr *)&peer, &plen);
    printf("client's peer is the server: %d\n", ntohs(peer.sin_port) == port_of(srv));
    /* A big write from a forked writer, read here: the stream carries it all. */
    pid_t child = fork();
    if (child == 0) {
        static char big[1 << 20];
        memset(big, 'b', sizeof big);
        int fl = fcntl(c, F_GETFL);
        fcntl(c, F_SETFL, fl & ~O_NONBLOCK);
        ssize_t n = write(c, big, sizeof big);
        _exit(n == sizeof big ? 0 : 1);
    }
    close(c);
    static char got[1 << 20];
    ssize_t total = recv(conn, got, sizeof got, MSG_WAITALL);
    int status;
    waitpid(child, &status, 0);
    printf("big transfer: %zd, writer status %d\n", total, WEXITSTATUS(status));
    result("shutdown", shutdown(conn, SHUT_RDWR));
    close(conn);
    close(srv);

    /* Refused: nobody listens on the port any more. */
    c = socket(AF_INET, SOCK_STREAM, 0);
    result("connect to a closed port", connect(c, (struct sockaddr *)&a, sizeof a));
    close(c);
}

static void tcp6(void) {
    int srv = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a = {0};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    if (bind(srv, (struct sockaddr *)&a, sizeof a) < 0) {
        printf("tcp6 bind: %s\n", strerror(errno));
        return;
    }
    listen(srv, 1);
    a.sin6_port = htons(port_of(srv));
    int c = socket(AF_INET6, SOCK_STREAM, 0);
    result("tcp6 connect", connect(c, (struct sockaddr *)&a, sizeof a));
    int conn = accept(srv, NULL, NULL);
    write(c, "v6", 2);
    char buf[4];
    ssize_t n = read(conn, buf, sizeof buf);
    printf("tcp6 read %zd: %.*s\n", n, (int)n, buf);
    close(conn);
    close(c);
    close(srv);
}

/* The guest's O_NONBLOCK: from SOCK_NONBLOCK, fcntl and FIONBIO, shared by dups, seen by F_GETFL. */
static void nonblocking(void) {
    int srv = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = loopback(0);
    bind(srv, (struct sockaddr *)&a, sizeof a);
    listen(srv, 4);
    printf("F_GETFL of a SOCK_NONBLOCK socket: %#x\n", fcntl(srv, F_GETFL));
    result("accept with nothing pending", accept(srv, NULL, NULL));
    int c = socket(AF_INET, SOCK_STREAM, 0);
    a = loopback(port_of(srv));
    result("blocking connect", connect(c, (struct sockaddr *)&a, sizeof a));
    struct pollfd pfd = {srv, POLLIN, 0};
    poll(&pfd, 1, 2000);
    int conn = accept4(srv, NULL, NULL, SOCK_NONBLOCK);
    printf("F_GETFL of an accept4(SOCK_NONBLOCK) socket: %#x\n", fcntl(conn, F_GETFL));
    char buf[8];
    result("recv on it, nothing sent", recv(conn, buf, sizeof buf, 0));
    int twin = dup(c);
    int on = 1;
    result("FIONBIO", ioctl(twin, FIONBIO, &on));
    printf("F_GETFL of the dup'd original: %#x\n", fcntl(c, F_GETFL));
    result("read on it, nothing sent", read(c, buf, sizeof buf));
    fcntl(c, F_SETFL, fcntl(c, F_GETFL) & ~O_NONBLOCK);
    printf("F_GETFL after clearing: %#x\n", fcntl(twin, F_GETFL));
    write(conn, "late", 4);
    result("blocking read now", read(c, buf, sizeof buf));
    close(twin);
    close(c);
    close(conn);
    close(srv);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    nonblocking();
    udp();
    udp6();
    tcp();
    tcp6();
    return 0;
}
