/* What /proc and /dev/fd show a guest: its own process, never the controller's.
 * argv[1] is the controller's host pid. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile int x = 1;

int main(int argc, char **argv)
{
	char buf[512], path[64];
	int fd = open("/proc/self/mem", O_RDWR);
	int v = 42;

	printf("own mem opens: %d\n", fd >= 0);
	printf("own mem write: %d\n", fd >= 0 && pwrite(fd, &v, sizeof v, (off_t)(unsigned long)&x) == sizeof v);
	printf("x is now %d\n", x);
	close(fd);

	FILE *m = fopen("/proc/self/maps", "r");
	int stub_pages = 0, python = 0, stack = 0;
	while (m && fgets(buf, sizeof buf, m)) {
		stub_pages |= strstr(buf, "aioumm-stub-code") != NULL;
		python |= strstr(buf, "python") != NULL;
		stack |= strstr(buf, "[stack]") != NULL;
	}
	if (m)
		fclose(m);
	printf("maps show the stub: %d, python: %d, the stack: %d\n", stub_pages, python, stack);

	fd = open("/dev/fd/1", O_WRONLY);
	printf("/dev/fd/1 opens: %d\n", fd >= 0);
	if (fd >= 0)
		close(fd);

	snprintf(path, sizeof path, "/proc/%s/mem", argc > 1 ? argv[1] : "1");
	printf("controller mem opens: %d\n", open(path, O_RDONLY) >= 0);
	snprintf(path, sizeof path, "/proc/%s/environ", argc > 1 ? argv[1] : "1");
	printf("controller environ opens: %d\n", open(path, O_RDONLY) >= 0);
	snprintf(path, sizeof path, "/proc/%s/fd/0", argc > 1 ? argv[1] : "1");
	printf("controller fd 0 opens: %d\n", open(path, O_RDONLY) >= 0);
	int dir = open("/proc", O_RDONLY | O_DIRECTORY);
	printf("self/mem relative to /proc opens: %d\n", openat(dir, "self/mem", O_RDONLY) >= 0);
	printf("/proc/cpuinfo opens: %d\n", open("/proc/cpuinfo", O_RDONLY) >= 0);
	return 0;
}
