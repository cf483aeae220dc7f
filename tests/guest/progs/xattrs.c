/* Reading extended attributes (argv[1]: a file with user.k set, argv[2]: a symlink
 * to it): values, lists, and the errors for short buffers and bad names. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

static void show(const char *what, ssize_t n, const char *buf)
{
    if (n < 0)
        printf("%s: %s\n", what, strerror(errno));
    else
        printf("%s: %zd [%.*s]\n", what, n, (int)n, buf);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    char buf[256], name[300];
    show("getxattr size 0", getxattr(argv[1], "user.k", NULL, 0), "");
    show("getxattr", getxattr(argv[1], "user.k", buf, sizeof buf), buf);
    show("getxattr short buffer", getxattr(argv[1], "user.k", buf, 2), buf);
    show("getxattr missing", getxattr(argv[1], "user.none", buf, sizeof buf), buf);
    show("getxattr empty name", getxattr(argv[1], "", buf, sizeof buf), buf);
    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = 0;
    memcpy(name, "user.", 5);
    show("getxattr long name", getxattr(argv[1], name, buf, sizeof buf), buf);
    show("getxattr bad pointer", getxattr(argv[1], "user.k", (char *)16, sizeof buf), buf);
    show("getxattr via symlink", getxattr(argv[2], "user.k", buf, sizeof buf), buf);
    show("lgetxattr on symlink", lgetxattr(argv[2], "user.k", buf, sizeof buf), buf);
    show("getxattr no file", getxattr("/nonexistent/x", "user.k", buf, sizeof buf), buf);
    ssize_t n = listxattr(argv[1], buf, sizeof buf);
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == 0)
            buf[i] = ',';
    show("listxattr", n, buf);
    show("listxattr size 0", listxattr(argv[1], NULL, 0), "");
    show("llistxattr on symlink", llistxattr(argv[2], buf, sizeof buf), buf);
    int fd = open(argv[1], O_RDONLY);
    show("fgetxattr", fgetxattr(fd, "user.k", buf, sizeof buf), buf);
    n = flistxattr(fd, buf, sizeof buf);
    show("flistxattr", n, buf);
    close(fd);
    fd = open(argv[1], O_PATH);
    show("fgetxattr O_PATH", fgetxattr(fd, "user.k", buf, sizeof buf), buf);
    show("fgetxattr bad fd", fgetxattr(99, "user.k", buf, sizeof buf), buf);
    return 0;
}
