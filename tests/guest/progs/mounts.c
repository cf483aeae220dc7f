/* umount2 and mount as a guest sees them: every case here leaves the host's mounts alone. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

static void show(const char *what, long res)
{
	printf("%s: %ld %s\n", what, res, res < 0 ? strerror(errno) : "");
}

int main(int argc, char **argv)
{
	show("umount2 missing path", syscall(SYS_umount2, "/no/such/dir", 0));
	show("umount2 not a mount point", syscall(SYS_umount2, "/etc", 0));
	show("umount2 unknown flag", syscall(SYS_umount2, "/etc", 0x100));
	show("umount2 bad pointer", syscall(SYS_umount2, (char *)8, 0));
	show("umount2 not a directory", syscall(SYS_umount2, "/etc/passwd/x", 0));
	if (argc > 1) /* only where the host's mounts cannot be touched: under aioumm */
		show("umount2 a mount point", syscall(SYS_umount2, argv[1], MNT_DETACH));
	return 0;
}
