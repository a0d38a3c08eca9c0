/* The exec child: what runs between fork and execve, in the order docs/protocol.md gives.
 *
 * What it is. A plain fork of PID 1, not a vfork: the init goes on serving while the child
 * starts, so nothing a container process does to the child (SIGSTOP, ptrace, slowness) can
 * freeze the init. The init is single-threaded, so the fork copied a whole, consistent process:
 * no lock of the libc is held by a thread that did not come along.
 *
 * What it may do. Call the libc freely (malloc, stdio, asprintf, getenv...): the memory is the
 * child's own copy, and what it allocates is gone at its execve or _exit; the init's memory is
 * untouched. It leaves by execve or by _exit, never exit(): the init's stdio buffers and atexit
 * handlers are not its to run.
 *
 * What it must not do. Touch the control socket (fd 3: a packet from it would pass for the
 * init's, and a read would steal a request) or send anything to the host: everything it has to
 * say goes on the error pipe, as one child_err, and the init reports it. Let the container see
 * any fd of the init's: fd 3 and the hostname sysctl are closed first thing, the per-exec cgroup
 * directories (host fds) as soon as they are used, and every other fd of the init is O_CLOEXEC.
 *
 * What it inherits from the init. Its credentials (uid 0 of the container with the init's
 * capabilities, given up by the privilege steps below, in the order they explain); its bounding
 * set and seccomp filter (the container's confinement, once the init carries it: a child can
 * only narrow them); its non-dumpable state, so until execve no container process may trace it
 * or open its /proc files and fds (execve resets it from the new program's credentials); its
 * root and working directory (the container's "/"); its signal mask (SIGCHLD blocked) and
 * ignored SIGPIPE, both reset below; its own copy of the request (struct spec, in the arena).
 *
 * How it reports. Anything that fails before execve is written to the error pipe, which closes
 * on execve (O_CLOEXEC): the init reads either a child_err or end of file. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cleanup.h"
#include "exec.h"
#include "init.h"
#include "user.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static const char *env_get(char **env, const char *key)
{
	size_t n = strlen(key);
	for (; *env; env++)
		if (strncmp(*env, key, n) == 0 && (*env)[n] == '=')
			return *env + n + 1;
	return NULL;
}

static __attribute__((noreturn)) void child_fail(int pipefd, const char *kind, int no,
						 const char *fmt, const char *arg)
{
	struct child_err ce = { .no = no };
	char eb[128];
	snprintf(ce.kind, sizeof(ce.kind), "%s", kind);
	snprintf(ce.msg, sizeof(ce.msg), fmt, lc_strerror(no, eb, sizeof(eb)), arg);
	(void)!write(pipefd, &ce, sizeof(ce));
	_exit(127);
}

static int capset_all(uint64_t mask)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct c[2];
	for (int k = 0; k < 2; k++) {
		/* Inheritable stays empty (CVE-2022-24769): file capabilities of a program must not
		 * combine with it to grant more than the process had. */
		c[k].effective = c[k].permitted = (uint32_t)(mask >> (32 * k));
		c[k].inheritable = 0;
	}
	return (int)syscall(SYS_capset, &h, c);
}

static void exec_search(struct spec *s, int pipefd)
{
	const char *file = s->argv[0], *path;
	char buf[4096];
	int seen_eacces = 0;

	if (strchr(file, '/')) {
		execve(file, s->argv, s->env);
		child_fail(pipefd, errno == ENOENT ? "notfound" : "noexec", errno, "%s: \"%s\"",
			   file);
	}
	path = env_get(s->env, "PATH");
	if (!path)
		path = DEFAULT_PATH;
	for (const char *p = path;; p++) {
		const char *end = strchrnul(p, ':');
		int n = (int)(end - p);
		snprintf(buf, sizeof(buf), "%.*s%s%s", n, p, n ? "/" : "", file);
		execve(buf, s->argv, s->env);
		if (errno == EACCES)
			seen_eacces = 1;
		else if (errno != ENOENT && errno != ENOTDIR)
			child_fail(pipefd, "noexec", errno, "%s: \"%s\"", buf);
		if (!*end)
			break;
		p = end;
	}
	if (seen_eacces)
		child_fail(pipefd, "noexec", EACCES, "%s: \"%s\"", file);
	child_fail(pipefd, "notfound", ENOENT, "executable file not found in $PATH%.0s: \"%s\"",
		   file);
}

/* The child_fail format for a failed setresgid (gid) or setresuid: EINVAL means the id has no
 * mapping in the container's user namespace, which its strerror text would not say. */
static const char *id_error(bool gid, int no)
{
	if (gid)
		return no == EINVAL ?
			       "setgid %.0s%s: gid not mapped in the container's user namespace" :
			       "setgid: %s %s";
	return no == EINVAL ? "setuid %.0s%s: uid not mapped in the container's user namespace" :
			      "setuid: %s %s";
}

bool setgroups_deny;

void read_setgroups_policy(void)
{
	char path[32], buf[8] = "";
	autoclose int fd = -1;

	/* The init's own entry: "/proc/self" is a symlink. */
	snprintf(path, sizeof(path), "/proc/%d/setgroups", (int)getpid());
	fd = resolve_at(AT_FDCWD, path, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0,
			RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
	setgroups_deny = fd >= 0 && read(fd, buf, sizeof(buf) - 1) > 0 &&
			 strncmp(buf, "deny", 4) == 0;
}

/* No magic links: "/proc/self/fd/N" or "/proc/1/cwd" as a working directory could point at
 * anything an fd of this process reaches, so only a real path inside the root is accepted. */
static void enter_workdir(const char *cwd, int pipefd)
{
	struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
				.resolve = RESOLVE_NO_MAGICLINKS };
	int fd = (int)syscall(SYS_openat2, AT_FDCWD, cwd, &how, sizeof(how));

	if (fd < 0 || fchdir(fd) < 0)
		child_fail(pipefd, "cwd", errno, "%s: cwd \"%s\"", cwd);
	close(fd);
}

__attribute__((noreturn)) void child(struct spec *s, int pipefd)
{
	struct user u;
	struct err e = { 0 };
	sigset_t none;
	char num[] = "0", idbuf[16];

	close(CTRL_FD);
	if (hostname_fd >= 0)
		close(hostname_fd);
	if (upper_fd >= 0)
		close(upper_fd);

	for (int k = 0; k < s->ncg; k++) {
		int fd = openat(s->cg[k], "cgroup.procs", O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, num, 1) != 1)
			child_fail(pipefd, "setup", errno, "join cgroup: %s%s", "");
		close(fd);
		/* A host directory fd must be gone before anything the caller chose (the working
		 * directory: "/proc/self/fd/N" would lead out of the container) is looked up. */
		close(s->cg[k]);
	}
	if (setsid() < 0)
		child_fail(pipefd, "setup", errno, "setsid: %s%s", "");
	/* What the process starts stays in its tree even when an intermediate parent exits (a
	 * double fork with setsid): orphans come to it rather than to PID 1, so a timeout or a
	 * kill of the exec's tree reaches them. A program that never waits for children it did
	 * not start keeps their zombies until it exits, as a container's PID 1 would. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		child_fail(pipefd, "setup", errno, "become a subreaper: %s%s", "");
	if (s->pty) {
		if (ioctl(s->pty_slave, TIOCSCTTY, 0) < 0)
			child_fail(pipefd, "setup", errno, "set controlling terminal: %s%s", "");
		s->stdio[0] = s->stdio[1] = s->stdio[2] = s->pty_slave;
	}
	/* Lift the stdio fds clear of 0..2 first so no dup2 clobbers a later source. */
	for (int k = 0; k < 3; k++)
		if (s->stdio[k] < 3 && (s->stdio[k] = fcntl(s->stdio[k], F_DUPFD_CLOEXEC, 10)) < 0)
			child_fail(pipefd, "setup", errno, "dup stdio: %s%s", "");
	for (int k = 0; k < 3; k++)
		if (dup2(s->stdio[k], k) < 0)
			child_fail(pipefd, "setup", errno, "dup2 stdio: %s%s", "");

	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		child_fail(pipefd, "setup", errno, "reset signal mask: %s%s", "");
	/* execve resets handled signals; an ignored one stays ignored, and SIGPIPE is the only
	 * signal the init ignores. */
	signal(SIGPIPE, SIG_DFL);

	/* While still privileged: raising a hard limit needs CAP_SYS_RESOURCE, which the process
	 * may not keep. */
	for (int k = 0; k < s->nrl; k++)
		if (setrlimit(s->rlres[k], &s->rl[k]) < 0)
			child_fail(pipefd, "setup", errno, "setrlimit: %s%s", "");

	/* As the container's root: its /etc/passwd and /etc/group may be unreadable to the user. */
	if (resolve_user(s->user, &u, &e) < 0) {
		struct child_err ce = { .no = e.no, .kind = "user" };
		memcpy(ce.msg, e.msg, sizeof(ce.msg) - 1);
		(void)!write(pipefd, &ce, sizeof(ce));
		_exit(127);
	}
	if (!env_get(s->env, "HOME")) {
		char **v = s->env;
		while (*v)
			v++;
		if (asprintf(v, "HOME=%s", u.home) < 0)
			child_fail(pipefd, "setup", ENOMEM, "%s%s", "");
		v[1] = NULL;
	}

	/* The privilege steps, in this order:
	 * 1. setgroups, setresgid, setresuid: each needs a capability (CAP_SETGID, CAP_SETUID) that
	 *    the next steps take away. Groups and gid come before the uid: once the uid is not 0
	 *    the kernel clears the permitted and effective sets, and a gid left behind would stay
	 *    root's (0), as would the supplementary groups.
	 * 2. ambient set cleared: ambient capabilities survive the execve of an ordinary program,
	 *    even for a user other than root. After the uid change (which may already have cleared
	 *    them), before capset: nothing below may depend on what was ambient.
	 * 3. capset: effective and permitted become the exec's capabilities for uid 0, none for any
	 *    other user; inheritable stays empty. After the id changes, which need capabilities
	 *    the exec may not have. The bounding set was already reduced by the init (confine.c).
	 * 4. working directory: entered with the process's own credentials, so that a directory its
	 *    user may not search fails as it would under Docker.
	 * 5. no_new_privs: nothing changes before execve, where it stops setuid bits and file
	 *    capabilities from granting more; just before the filter, which it lets a process
	 *    without CAP_SYS_ADMIN install.
	 * 6. seccomp filter last: it may forbid what the steps above need (setgroups, capset, prctl,
	 *    chdir), so only execve itself, and the failure path (write, exit), run under it.
	 *
	 * Raw syscalls: they set this process's ids only (glibc's wrappers would also signal other
	 * threads, and there are none). A user namespace whose setgroups is "deny" (rootless with a
	 * single mapping) keeps the groups it was born with; failing every exec there would help no
	 * one (the init read that policy at set-up, see setgroups_deny). */
	if (syscall(SYS_setgroups, (size_t)u.ngroups, u.groups) < 0 &&
	    !(errno == EPERM && setgroups_deny))
		child_fail(pipefd, "setup", errno, "setgroups: %s%s", "");
	snprintf(idbuf, sizeof(idbuf), "%u", u.gid);
	if (syscall(SYS_setresgid, u.gid, u.gid, u.gid) < 0)
		child_fail(pipefd, "user", errno, id_error(true, errno), idbuf);
	snprintf(idbuf, sizeof(idbuf), "%u", u.uid);
	if (syscall(SYS_setresuid, u.uid, u.uid, u.uid) < 0)
		child_fail(pipefd, "user", errno, id_error(false, errno), idbuf);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		child_fail(pipefd, "setup", errno, "clear ambient capabilities: %s%s", "");
	if (capset_all(u.uid == 0 && s->has_caps ? s->caps : 0) < 0)
		child_fail(pipefd, "setup", errno, "capset: %s%s", "");

	enter_workdir(s->cwd, pipefd);
	if (s->nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		child_fail(pipefd, "setup", errno, "no_new_privs: %s%s", "");
	if (s->prog.len && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &s->prog) < 0)
		child_fail(pipefd, "setup", errno, "install seccomp filter: %s%s", "");
	exec_search(s, pipefd);
	_exit(127);
}
