/* Socket calls fed bad arguments: each line is the call and the errno it gets. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

static void check(const char *what, long r) {
    printf("%-44s %ld %s\n", what, r, r < 0 ? strerrorname_np(errno) : "");
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    void *bad = (void *)16;
    char *unmapped = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int p[2];
    pipe(p);
    int tcp = socket(AF_INET, SOCK_STREAM, 0), udp = socket(AF_INET, SOCK_DGRAM, 0);
    int ux = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_in in = {AF_INET, htons(0), {htonl(INADDR_LOOPBACK)}};
    struct sockaddr_un un = {AF_UNIX, "x"};
    char buf[64];
    socklen_t len = sizeof buf;
    int sv[2];

    check("socket(unknown family)", syscall(SYS_socket, 12345, SOCK_STREAM, 0));
    check("socket(AF_MAX)", syscall(SYS_socket, 46, SOCK_STREAM, 0));
    check("socket(-1)", syscall(SYS_socket, -1, SOCK_STREAM, 0));
    check("socket(AF_INET, bad type)", syscall(SYS_socket, AF_INET, 99, 0));
    check("socket(AF_INET, unknown flag)", syscall(SYS_socket, AF_INET, SOCK_STREAM | 0x100000, 0));
    check("socket(AF_INET, STREAM, UDP)", syscall(SYS_socket, AF_INET, SOCK_STREAM, IPPROTO_UDP));
    check("socket(AF_UNIX, RAW)", syscall(SYS_socket, AF_UNIX, SOCK_RAW, 0));
    check("socketpair(AF_INET)", syscall(SYS_socketpair, AF_INET, SOCK_STREAM, 0, sv));
    check("socketpair(bad sv)", syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, bad));
    check("socketpair(unknown family)", syscall(SYS_socketpair, 12345, SOCK_STREAM, 0, sv));
    check("bind(bad fd)", syscall(SYS_bind, 999, &in, sizeof in));
    check("bind(-1)", syscall(SYS_bind, -1, &in, sizeof in));
    check("bind(pipe)", syscall(SYS_bind, p[0], &in, sizeof in));
    check("bind(bad address)", syscall(SYS_bind, tcp, bad, sizeof in));
    check("bind(unmapped address)", syscall(SYS_bind, tcp, unmapped, sizeof in));
    check("bind(addrlen -1)", syscall(SYS_bind, tcp, &in, -1));
    check("bind(addrlen 129)", syscall(SYS_bind, tcp, &in, 129));
    check("bind(addrlen 4)", syscall(SYS_bind, tcp, &in, 4));
    check("bind(AF_INET, unix address)", syscall(SYS_bind, tcp, &un, sizeof un));
    check("bind(AF_UNIX, addrlen 1)", syscall(SYS_bind, ux, &un, 1));
    check("bind(AF_UNIX, addrlen 111)", syscall(SYS_bind, ux, &un, 111));
    check("bind(AF_UNIX, inet address)", syscall(SYS_bind, ux, &in, sizeof in));
    check("bind(AF_UNIX, missing dir)", syscall(SYS_bind, ux, &(struct sockaddr_un){AF_UNIX, "/no/such/dir/s"},
                                                sizeof(struct sockaddr_un)));
    check("connect(bad fd)", syscall(SYS_connect, 999, &in, sizeof in));
    check("connect(pipe)", syscall(SYS_connect, p[1], &in, sizeof in));
    check("connect(bad address)", syscall(SYS_connect, tcp, bad, sizeof in));
    check("connect(addrlen -5)", syscall(SYS_connect, tcp, &in, -5));
    check("connect(addrlen 8)", syscall(SYS_connect, tcp, &in, 8));
    check("connect(AF_UNIX, addrlen 2)", syscall(SYS_connect, ux, &un, 2));
    check("listen(pipe)", syscall(SYS_listen, p[0], 1));
    check("listen(udp)", syscall(SYS_listen, udp, 1));
    check("listen(bad fd)", syscall(SYS_listen, 999, 1));
    check("accept(bad fd)", syscall(SYS_accept, 999, NULL, NULL));
    check("accept(pipe)", syscall(SYS_accept, p[0], NULL, NULL));
    check("accept(not listening)", syscall(SYS_accept, tcp, NULL, NULL));
    check("accept(udp)", syscall(SYS_accept, udp, NULL, NULL));
    check("accept4(bad flags)", syscall(SYS_accept4, tcp, NULL, NULL, 0x4));
    check("accept4(bad flags, bad fd)", syscall(SYS_accept4, 999, NULL, NULL, 0x4));
    check("getsockname(pipe)", syscall(SYS_getsockname, p[0], buf, &len));
    check("getsockname(bad address)", syscall(SYS_getsockname, tcp, bad, &len));
    check("getsockname(bad length pointer)", syscall(SYS_getsockname, tcp, buf, bad));
    check("getsockname(NULL address)", syscall(SYS_getsockname, tcp, NULL, &len));
    len = -1;
    check("getsockname(length -1)", syscall(SYS_getsockname, tcp, buf, &len));
    len = 0;
    check("getsockname(length 0)", syscall(SYS_getsockname, tcp, NULL, &len));
    printf("  told length %u\n", (unsigned)len);
    len = sizeof buf;
    check("getpeername(not connected)", syscall(SYS_getpeername, tcp, buf, &len));
    check("getpeername(unix, not connected)", syscall(SYS_getpeername, ux, buf, &len));
    check("shutdown(not connected)", syscall(SYS_shutdown, tcp, SHUT_RDWR));
    check("shutdown(how 7)", syscall(SYS_shutdown, tcp, 7));
    check("shutdown(pipe)", syscall(SYS_shutdown, p[0], SHUT_RD));
    int one = 1;
    check("setsockopt(bad value)", syscall(SYS_setsockopt, tcp, SOL_SOCKET, SO_REUSEADDR, bad, 4));
    check("setsockopt(length -1)", syscall(SYS_setsockopt, tcp, SOL_SOCKET, SO_REUSEADDR, &one, -1));
    check("setsockopt(length 2)", syscall(SYS_setsockopt, tcp, SOL_SOCKET, SO_REUSEADDR, &one, 2));
    check("setsockopt(unknown option)", syscall(SYS_setsockopt, tcp, SOL_SOCKET, 12345, &one, 4));
    check("setsockopt(pipe)", syscall(SYS_setsockopt, p[0], SOL_SOCKET, SO_REUSEADDR, &one, 4));
    len = 4;
    check("getsockopt(bad value)", syscall(SYS_getsockopt, tcp, SOL_SOCKET, SO_TYPE, bad, &len));
    check("getsockopt(bad length pointer)", syscall(SYS_getsockopt, tcp, SOL_SOCKET, SO_TYPE, &one, bad));
    len = -1;
    check("getsockopt(length -1)", syscall(SYS_getsockopt, tcp, SOL_SOCKET, SO_TYPE, &one, &len));
    len = 2;
    check("getsockopt(length 2)", syscall(SYS_getsockopt, tcp, SOL_SOCKET, SO_TYPE, &one, &len));
    printf("  told length %u\n", (unsigned)len);
    check("sendto(bad fd)", syscall(SYS_sendto, 999, buf, 1, 0, NULL, 0));
    check("sendto(pipe)", syscall(SYS_sendto, p[1], buf, 1, 0, NULL, 0));
    check("sendto(bad buffer)", syscall(SYS_sendto, udp, bad, 1, 0, &in, sizeof in));
    check("sendto(bad address)", syscall(SYS_sendto, udp, buf, 1, 0, bad, sizeof in));
    check("sendto(addrlen 200)", syscall(SYS_sendto, udp, buf, 1, 0, &in, 200));
    check("sendto(not connected, no address)", syscall(SYS_sendto, udp, buf, 1, 0, NULL, 0));
    check("sendto(tcp, not connected)", syscall(SYS_sendto, tcp, buf, 1, MSG_NOSIGNAL, NULL, 0));
    check("recvfrom(bad buffer)", syscall(SYS_recvfrom, udp, bad, 1, MSG_DONTWAIT, NULL, NULL));
    len = sizeof buf;
    check("recvfrom(bad length pointer)", syscall(SYS_recvfrom, udp, buf, 1, MSG_DONTWAIT, buf, bad));
    check("recvfrom(tcp, not connected)", syscall(SYS_recvfrom, tcp, buf, 1, 0, NULL, NULL));
    check("recvfrom(unix, not connected)", syscall(SYS_recvfrom, ux, buf, 1, 0, NULL, NULL));
    struct iovec iov = {buf, 1};
    struct msghdr msg = {NULL, 0, &iov, 1, NULL, 0, 0};
    check("sendmsg(bad msghdr)", syscall(SYS_sendmsg, udp, bad, 0));
    check("recvmsg(bad msghdr)", syscall(SYS_recvmsg, udp, bad, MSG_DONTWAIT));
    msg.msg_iovlen = 1025;
    check("sendmsg(iovlen 1025)", syscall(SYS_sendmsg, udp, &msg, 0));
    msg.msg_iovlen = 1;
    msg.msg_iov = bad;
    check("sendmsg(bad iovec)", syscall(SYS_sendmsg, udp, &msg, 0));
    msg.msg_iov = &iov;
    msg.msg_name = &in;
    msg.msg_namelen = -1;
    check("sendmsg(namelen -1)", syscall(SYS_sendmsg, udp, &msg, 0));
    msg.msg_name = NULL;
    msg.msg_namelen = 0;
    socketpair(AF_UNIX, SOCK_DGRAM, 0, sv);
    char space[CMSG_SPACE(sizeof(int))] = {0};
    struct cmsghdr *c = (struct cmsghdr *)space;
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    int badfd = 999;
    memcpy(CMSG_DATA(c), &badfd, sizeof badfd);
    msg.msg_control = space;
    msg.msg_controllen = sizeof space;
    check("sendmsg(SCM_RIGHTS of a bad fd)", syscall(SYS_sendmsg, sv[0], &msg, 0));
    c->cmsg_len = sizeof space + 8;
    check("sendmsg(cmsg_len past the end)", syscall(SYS_sendmsg, sv[0], &msg, 0));
    c->cmsg_len = 4;
    check("sendmsg(cmsg_len 4)", syscall(SYS_sendmsg, sv[0], &msg, 0));
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &p[0], sizeof p[0]);
    check("sendmsg(SCM_RIGHTS over udp)", syscall(SYS_sendmsg, udp, &msg, 0));
    msg.msg_control = bad;
    check("sendmsg(bad control)", syscall(SYS_sendmsg, sv[0], &msg, 0));
    msg.msg_control = NULL;
    msg.msg_controllen = 0;
    check("sendmmsg(bad vector)", syscall(SYS_sendmmsg, udp, bad, 2, 0));
    check("recvmmsg(bad vector)", syscall(SYS_recvmmsg, udp, bad, 2, MSG_DONTWAIT, NULL));
    check("recvmmsg(bad timeout)", syscall(SYS_recvmmsg, udp, &msg, 1, MSG_DONTWAIT, bad));
    /* A stream keeps the data a bad buffer could not take (a datagram would be dropped). */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    check("write(sv, 1 byte)", write(sv[0], "z", 1));
    check("read(sv, bad buffer)", syscall(SYS_read, sv[1], bad, 1));
    check("read(sv)", read(sv[1], buf, sizeof buf));
    check("pread(socket)", pread(sv[1], buf, 1, 0));
    check("lseek(socket)", lseek(sv[1], 0, SEEK_SET));
    return 0;
}
