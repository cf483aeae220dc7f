/* socketpair between forked processes: SCM_RIGHTS passing a pipe end, a file and a
 * socket (the same open file description arrives), MSG_PEEK, MSG_DONTWAIT,
 * MSG_WAITALL, MSG_CTRUNC, SIGPIPE and MSG_NOSIGNAL on a dead stream. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The parent's lines, printed once the child is done (so the output has one order). */
static char said[4096];
static size_t said_len;
#define SAY(...) (said_len += snprintf(said + said_len, sizeof said - said_len, __VA_ARGS__))

static int send_fd(int sock, int fd, const char *tag) {
    char space[CMSG_SPACE(sizeof(int))];
    memset(space, 0, sizeof space);
    struct iovec iov = {(void *)tag, strlen(tag)};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space;
    msg.msg_controllen = sizeof space;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    return sendmsg(sock, &msg, 0);
}

static int recv_fd(int sock, char *tag, size_t room, int *flags) {
    char space[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {tag, room - 1};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space;
    msg.msg_controllen = sizeof space;
    ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return -1;
    tag[n] = 0;
    *flags = msg.msg_flags;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_type != SCM_RIGHTS) return -2;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) { perror("socketpair"); return 1; }
    struct stat st;
    fstat(sv[0], &st);
    printf("socketpair: %d %d, S_ISSOCK %d\n", sv[0], sv[1], S_ISSOCK(st.st_mode));

    int p[2];
    pipe(p);
    int other[2];
    socketpair(AF_UNIX, SOCK_DGRAM, 0, other);
    fcntl(other[0], F_SETFL, O_NONBLOCK);
    char path[] = "/tmp/sock_pass_XXXXXX";
    int file = mkstemp(path);
    unlink(path);
    write(file, "0123456789", 10);
    lseek(file, 2, SEEK_SET);

    pid_t child = fork();
    if (child == 0) {
        close(sv[0]);
        char tag[64];
        int flags;
        int rfd = recv_fd(sv[1], tag, sizeof tag, &flags);
        printf("child got '%s' as fd %d, cloexec %d\n", tag, rfd, fcntl(rfd, F_GETFD));
        char buf[64];
        ssize_t n = read(rfd, buf, sizeof buf);
        printf("child read %zd from the passed pipe: %.*s\n", n, (int)n, buf);
        int ffd = recv_fd(sv[1], tag, sizeof tag, &flags);
        n = read(ffd, buf, 3);
        printf("child got '%s', read %.*s at the shared offset\n", tag, (int)n, buf);
        int sfd = recv_fd(sv[1], tag, sizeof tag, &flags);
        printf("child got '%s', O_NONBLOCK %d\n", tag, !!(fcntl(sfd, F_GETFL) & O_NONBLOCK));
        n = recv(sfd, buf, sizeof buf, 0);
        printf("child recv on the passed socket: %zd %s\n", n, n < 0 ? strerror(errno) : "");
        /* A control buffer too small for the descriptor: it is dropped, MSG_CTRUNC. */
        char small[sizeof(struct cmsghdr)];
        struct iovec iov = {buf, sizeof buf};
        struct msghdr msg = {0};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = small;
        msg.msg_controllen = sizeof small;
        n = recvmsg(sv[1], &msg, 0);
        printf("small control: %zd bytes, MSG_CTRUNC %d, controllen %zu\n", n, !!(msg.msg_flags & MSG_CTRUNC),
               (size_t)msg.msg_controllen);
        /* MSG_WAITALL: the parent sends 10 bytes in two pieces, some time apart. */
        n = recv(sv[1], buf, 10, MSG_WAITALL);
        printf("waitall: %zd %.*s\n", n, (int)n, buf);
        n = recv(sv[1], buf, 4, MSG_PEEK);
        printf("peek: %zd %.*s\n", n, (int)n, buf);
        n = recv(sv[1], buf, sizeof buf, 0);
        printf("then read: %zd %.*s\n", n, (int)n, buf);
        n = recv(sv[1], buf, sizeof buf, MSG_DONTWAIT);
        printf("dontwait on an empty socket: %zd %s\n", n, strerror(errno));
        write(sv[1], "ok", 2);
        n = recv(sv[1], buf, sizeof buf, 0);
        printf("end of stream: %zd\n", n);
        _exit(0);
    }
    close(sv[1]);
    SAY("send pipe: %d\n", send_fd(sv[0], p[0], "pipe"));
    close(p[0]);
    write(p[1], "through the pipe", 16);
    close(p[1]);
    SAY("send file: %d\n", send_fd(sv[0], file, "file"));
    SAY("send socket: %d\n", send_fd(sv[0], other[0], "socket"));
    SAY("send with a descriptor for a small buffer: %d\n", send_fd(sv[0], file, "bare"));
    /* Wait for the child to take the bare bytes before the WAITALL pieces follow. */
    usleep(100000);
    send(sv[0], "01234", 5, 0);
    usleep(100000);
    send(sv[0], "56789", 5, 0);
    send(sv[0], "peekaboo", 8, 0);
    char buf[8];
    ssize_t n = read(sv[0], buf, sizeof buf);
    SAY("parent read %zd: %.*s\n", n, (int)n, buf);
    char pos[4] = {0};
    n = pread(file, pos, 3, 0);
    SAY("file offset after the child's read: %ld\n", (long)lseek(file, 0, SEEK_CUR));
    shutdown(sv[0], SHUT_WR);
    int status;
    waitpid(child, &status, 0);
    fputs(said, stdout);
    printf("child status %d\n", WEXITSTATUS(status));

    /* A dead stream: MSG_NOSIGNAL gives EPIPE; a plain write kills with SIGPIPE. */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    close(sv[1]);
    n = send(sv[0], "x", 1, MSG_NOSIGNAL);
    printf("send MSG_NOSIGNAL: %zd %s\n", n, strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    n = write(sv[0], "x", 1);
    printf("write with SIGPIPE ignored: %zd %s\n", n, strerror(errno));
    signal(SIGPIPE, SIG_DFL);
    child = fork();
    if (child == 0) {
        send(sv[0], "x", 1, 0);
        _exit(0);
    }
    waitpid(child, &status, 0);
    printf("plain send: killed %d by signal %d\n", WIFSIGNALED(status), WTERMSIG(status));
    return 0;
}
