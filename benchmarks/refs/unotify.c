/*
 * unotify: a supervisor answers the guest's syscalls through seccomp user
 * notification.
 *
 * The guest installs a filter that turns TRAP_NR into SECCOMP_RET_USER_NOTIF
 * (and allows everything else), and passes the listener descriptor to the
 * supervisor over a socket. Each trapped call then blocks the guest in the
 * kernel until the supervisor has taken it with SECCOMP_IOCTL_NOTIF_RECV and
 * answered it with SECCOMP_IOCTL_NOTIF_SEND; resp.val becomes the syscall's
 * result. No registers are read or written, no signal frame is built.
 *
 * Where the kernel has it (6.6 and later), SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
 * is set on the listener: both hand-overs then wake the other side on the
 * waker's CPU, which is what a strictly synchronous guest/supervisor pair
 * wants. "--sync-wakeup off" measures without it.
 */
#include "common.h"

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

/* Newer than the installed uapi headers; the values are the kernel's ABI. */
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

#define EXTRA_USAGE "[--sync-wakeup auto|off]"

static int install_listener(void)
{
	struct sock_filter code[] = {
		/* Another architecture's syscall numbers mean other calls: refuse. */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TRAP_NR, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]), .filter = code};

	/* Required to install a filter without CAP_SYS_ADMIN; harmless with it. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -1;
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
			    SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
}

static int send_fd(int sock, int fd)
{
	char byte = 0;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = ctl.buf,
		.msg_controllen = sizeof(ctl.buf),
	};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	memset(&ctl, 0, sizeof(ctl));
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

static int recv_fd(int sock)
{
	char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = ctl.buf,
		.msg_controllen = sizeof(ctl.buf),
	};
	int fd;

	ssize_t got;
	while ((got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	if (got != 1)
		return -1;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	if ((msg.msg_flags & MSG_CTRUNC) || cm == NULL || cm->cmsg_level != SOL_SOCKET ||
	    cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(int)))
		return -1;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

static void run_guest(int sock, uint64_t n, uint64_t *samples)
{
	int listener = install_listener();

	if (listener < 0 || send_fd(sock, listener) != 0)
		_exit(EXIT_CHILD_SETUP);
	close(listener);
	close(sock);
	guest_loop(n, samples);
	_exit(0);
}

/*
 * A blocked NOTIF_RECV does not return when the guest dies: the filter
 * stays in use until the zombie is reaped, and reaping is what this process
 * would do next. So on SIGCHLD the listener descriptor is replaced by
 * /dev/null: a RECV already asleep returns EINTR (the handler is installed
 * without SA_RESTART), one about to start fails with ENOTTY. Either way the
 * main loop stops and reports the guest's exit status; it never hangs.
 */
static volatile sig_atomic_t listener_fd = -1;
static volatile sig_atomic_t null_fd = -1;

static void on_sigchld(int sig)
{
	int saved = errno;

	(void)sig;
	dup2(null_fd, listener_fd);
	errno = saved;
}

static void __attribute__((noreturn)) guest_died(pid_t pid, uint64_t done)
{
	fprintf(stderr, "unotify: guest ended after %" PRIu64 " answered calls\n", done);
	reap_clean_exit(pid, "guest");
	die("guest exited cleanly without finishing its calls");
}

int main(int argc, char **argv)
{
	struct opts o = {.n = 100000, .same_core = 0, .can_apart = 1};
	int want_sync = 1;

	for (int i = 1; i < argc; i++) {
		if (common_option(&o, argc, argv, &i, EXTRA_USAGE))
			continue;
		if (strcmp(argv[i], "--sync-wakeup") == 0 && i + 1 < argc) {
			const char *v = argv[++i];
			if (strcmp(v, "auto") == 0)
				want_sync = 1;
			else if (strcmp(v, "off") == 0)
				want_sync = 0;
			else
				usage(EXTRA_USAGE);
			continue;
		}
		usage(EXTRA_USAGE);
	}
	apply_placement(&o);

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		die_errno("socketpair");
	uint64_t *samples = shared_samples(o.n);

	null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null_fd < 0)
		die_errno("open /dev/null");
	struct sigaction sa = {.sa_handler = on_sigchld, .sa_flags = SA_NOCLDSTOP};
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGCHLD, &sa, NULL) != 0)
		die_errno("sigaction");

	pid_t pid = fork_child();
	if (pid == 0) {
		close(sv[0]);
		if (apply_child_placement(&o) != 0)
			_exit(EXIT_CHILD_SETUP);
		run_guest(sv[1], o.n, samples);
	}
	close(sv[1]);
	int listener = recv_fd(sv[0]);
	if (listener < 0) {
		reap_clean_exit(pid, "guest");
		die("guest did not send its seccomp listener");
	}
	close(sv[0]);
	listener_fd = listener;

	const char *sync_state = "off";
	if (want_sync) {
		if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS,
			  SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) == 0)
			sync_state = "on";
		else if (errno == EINVAL || errno == ENOTTY)
			sync_state = "unsupported";
		else
			die_errno("SECCOMP_IOCTL_NOTIF_SET_FLAGS");
	}

	/*
	 * The kernel may have grown these structures past the installed
	 * headers; RECV writes the kernel's size, so allocate that much.
	 */
	struct seccomp_notif_sizes sizes;
	if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) != 0)
		die_errno("SECCOMP_GET_NOTIF_SIZES");
	size_t req_size = sizes.seccomp_notif > sizeof(struct seccomp_notif)
				  ? sizes.seccomp_notif : sizeof(struct seccomp_notif);
	size_t resp_size = sizes.seccomp_notif_resp > sizeof(struct seccomp_notif_resp)
				   ? sizes.seccomp_notif_resp : sizeof(struct seccomp_notif_resp);
	struct seccomp_notif *req = calloc(1, req_size);
	struct seccomp_notif_resp *resp = calloc(1, resp_size);
	if (req == NULL || resp == NULL)
		die("out of memory");

	uint64_t start = now_ns();
	for (uint64_t i = 0; i < o.n; i++) {
		/* RECV insists on a zeroed buffer. */
		memset(req, 0, req_size);
		if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, req) != 0) {
			if (errno == EINTR || errno == ENOTTY || errno == ENOENT)
				guest_died(pid, i);
			die_errno("SECCOMP_IOCTL_NOTIF_RECV");
		}
		if (req->data.nr != TRAP_NR || req->data.args[0] != i)
			die("notification %" PRIu64 ": syscall %d with index %llu", i,
			    req->data.nr, (unsigned long long)req->data.args[0]);
		memset(resp, 0, resp_size);
		resp->id = req->id;
		resp->val = (__s64)answer_for(i);
		while (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp) != 0) {
			if (errno == ENOENT || errno == ENOTTY)
				guest_died(pid, i);
			if (errno != EINTR)
				die_errno("SECCOMP_IOCTL_NOTIF_SEND");
		}
	}
	double wall_s = (double)(now_ns() - start) / 1e9;

	reap_clean_exit(pid, "guest");
	struct stats st = compute_stats(samples, o.n);
	print_result("c_seccomp_unotify", &o, &st, wall_s,
		     "\"mechanism\": \"SECCOMP_RET_USER_NOTIF\", \"sync_wakeup\": \"%s\"",
		     sync_state);
	return 0;
}
