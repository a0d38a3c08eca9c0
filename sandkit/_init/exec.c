/* exec, signal and open requests: everything the host asks of a running container. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/openat2.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "init.h"
#include "user.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_RLIMITS 64

/* Pids we owe an `exit` event. Anything else that dies is only reaped. */
static struct track {
	pid_t pid;
	int64_t id;
} *tracked;
static size_t ntracked, captracked;

static int track(pid_t pid, int64_t id)
{
	if (ntracked == captracked) {
		size_t cap = captracked ? 2 * captracked : 16;
		struct track *t = realloc(tracked, cap * sizeof(*t));
		if (!t)
			return -1;
		tracked = t;
		captracked = cap;
	}
	tracked[ntracked++] = (struct track){ pid, id };
	return 0;
}

int64_t tracked_take(pid_t pid)
{
	for (size_t k = 0; k < ntracked; k++)
		if (tracked[k].pid == pid) {
			int64_t id = tracked[k].id;
			tracked[k] = tracked[--ntracked];
			return id;
		}
	return 0;
}

static pid_t tracked_pid(int64_t id)
{
	for (size_t k = 0; k < ntracked; k++)
		if (tracked[k].id == id)
			return tracked[k].pid;
	return 0;
}

struct spec {
	char **argv, **env, *cwd, *user;
	bool pty, capture, nnp;
	int64_t limit;          /* capture: bytes kept per stream, < 0 = all */
	const uint8_t *input;   /* capture: what stdin reads (NULL: /dev/null) */
	uint32_t input_len;
	int has_caps;
	uint64_t caps;
	struct sock_fprog prog;
	bool shared_seccomp; /* prog is the container's own profile, which the init may carry */
	struct rlimit rl[MAX_RLIMITS];
	int rlres[MAX_RLIMITS], nrl;
	int stdio[3], pty_slave;
	int *cg;
	int ncg;
};

/* What the child writes to the error pipe when it cannot reach execve. */
struct child_err {
	int no;
	char kind[12];
	char msg[512];
};

static char **str_array(const struct mp_doc *d, uint32_t arr, const char *what, int extra,
			struct err *e)
{
	uint32_t n = d->o[arr].n;
	char **v = arena_alloc((n + 1 + extra) * sizeof(char *));
	if (!v) {
		seterr(e, ENOMEM, "out of memory");
		return NULL;
	}
	for (uint32_t k = 0; k < n; k++)
		if (!(v[k] = dup_strobj(d, mp_elem(d, arr, k), what, e)))
			return NULL;
	v[n] = NULL;
	return v;
}

/* A "seccomp" field: an array of struct sock_filter, copied into the request's arena. */
static int bpf_program(const struct mp_doc *d, uint32_t sc, struct sock_fprog *prog, struct err *e)
{
	uint32_t n = d->o[sc].n;
	if (n == 0 || n % sizeof(struct sock_filter) || n / sizeof(struct sock_filter) > BPF_MAXINSNS)
		return seterr(e, EPROTO, "\"seccomp\" is not a BPF program");
	prog->len = (unsigned short)(n / sizeof(struct sock_filter));
	prog->filter = arena_alloc(n);
	if (!prog->filter)
		return seterr(e, ENOMEM, "out of memory");
	memcpy(prog->filter, d->o[sc].v.p, n);
	return 0;
}

static int parse_exec(struct req *r, struct spec *s, struct err *e)
{
	const struct mp_doc *d = &r->doc;
	uint32_t argv = 0, env = 0, sc = 0, rl = 0, in = 0;
	char *stdio = NULL;
	int64_t caps = 0, cg = 0;
	int want;

	memset(s, 0, sizeof(*s));
	s->nnp = true;
	s->pty_slave = -1;
	s->limit = -1;
	if (get_type(d, 0, "argv", MP_ARRAY, &argv, e) <= 0 || d->o[argv].n == 0)
		return e->no ? -1 : seterr(e, EPROTO, "\"argv\" needs at least one element");
	if (!(s->argv = str_array(d, argv, "argv", 0, e)))
		return -1;
	if (get_type(d, 0, "env", MP_ARRAY, &env, e) < 0)
		return -1;
	if (env ? !(s->env = str_array(d, env, "env", 1, e)) : !(s->env = arena_alloc(2 * sizeof(char *))))
		return e->no ? -1 : seterr(e, ENOMEM, "out of memory");
	if (!env)
		s->env[0] = NULL;
	if (get_str(d, 0, "cwd", &s->cwd, e) < 0 || get_str(d, 0, "user", &s->user, e) < 0 ||
	    need_str(d, 0, "stdio", &stdio, e) < 0 || get_bool(d, 0, "nnp", &s->nnp, e) < 0 ||
	    (s->has_caps = get_int(d, 0, "caps", &caps, e)) < 0 ||
	    get_int(d, 0, "cgroups", &cg, e) < 0 || get_type(d, 0, "seccomp", MP_BIN, &sc, e) < 0 ||
	    get_type(d, 0, "rlimits", MP_ARRAY, &rl, e) < 0 ||
	    get_bool(d, 0, "seccomp_shared", &s->shared_seccomp, e) < 0 ||
	    get_type(d, 0, "input", MP_BIN, &in, e) < 0 || get_int(d, 0, "limit", &s->limit, e) < 0)
		return -1;
	s->caps = (uint64_t)caps;
	if (!s->cwd)
		s->cwd = "/";
	if (strcmp(stdio, "pty") == 0)
		s->pty = true;
	else if (strcmp(stdio, "capture") == 0)
		s->capture = true;
	else if (strcmp(stdio, "fds") != 0)
		return seterr(e, EPROTO, "\"stdio\" must be \"fds\", \"pty\" or \"capture\"");
	if (in && !s->capture)
		return seterr(e, EPROTO, "\"input\" goes with \"stdio\": \"capture\" only");
	if (in) {
		s->input = d->o[in].v.p;
		s->input_len = d->o[in].n;
	}
	want = (s->pty || s->capture ? 0 : 3);
	if (cg < 0 || cg > MAX_FDS - want)
		return seterr(e, EPROTO, "bad \"cgroups\" count");
	s->ncg = (int)cg;
	want += s->ncg;
	if (r->nfds < want)
		return seterr(e, EPROTO, "exec expects %d fds, got %d", want, r->nfds);
	close_fds(r->fds + want, r->nfds - want);
	r->nfds = want;
	if (!s->pty && !s->capture)
		memcpy(s->stdio, r->fds, sizeof(s->stdio));
	s->cg = r->fds + (s->pty || s->capture ? 0 : 3);

	if (sc && bpf_program(d, sc, &s->prog, e) < 0)
		return -1;
	if (rl && d->o[rl].n > MAX_RLIMITS)
		return seterr(e, EPROTO, "too many \"rlimits\"");
	for (uint32_t k = 0; rl && k < d->o[rl].n; k++) {
		uint32_t t = mp_elem(d, rl, k), a, b, c;
		if (d->o[t].type != MP_ARRAY || d->o[t].n != 3 ||
		    d->o[a = mp_elem(d, t, 0)].type != MP_INT || d->o[b = mp_elem(d, t, 1)].type != MP_INT ||
		    d->o[c = mp_elem(d, t, 2)].type != MP_INT || d->o[a].v.i < 0 || d->o[a].v.i >= RLIM_NLIMITS)
			return seterr(e, EPROTO, "\"rlimits\" entries must be [resource, soft, hard]");
		s->rlres[k] = (int)d->o[a].v.i;
		s->rl[k].rlim_cur = d->o[b].v.i < 0 ? RLIM_INFINITY : (rlim_t)d->o[b].v.i;
		s->rl[k].rlim_max = d->o[c].v.i < 0 ? RLIM_INFINITY : (rlim_t)d->o[c].v.i;
		s->nrl++;
	}
	return 0;
}

static const char *env_get(char **env, const char *key)
{
	size_t n = strlen(key);
	for (; *env; env++)
		if (strncmp(*env, key, n) == 0 && (*env)[n] == '=')
			return *env + n + 1;
	return NULL;
}

/* "No such file or directory" -> "no such file or directory", as Go tools print errors. */
static const char *lc_strerror(int no, char *buf, size_t len)
{
	snprintf(buf, len, "%s", strerror(no));
	if (buf[0] >= 'A' && buf[0] <= 'Z')
		buf[0] = (char)(buf[0] - 'A' + 'a');
	return buf;
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
		child_fail(pipefd, errno == ENOENT ? "notfound" : "noexec", errno, "%s: \"%s\"", file);
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
	child_fail(pipefd, "notfound", ENOENT, "executable file not found in $PATH%.0s: \"%s\"", file);
}

static bool setgroups_denied(void)
{
	char buf[8] = "";
	int fd = open("/proc/self/setgroups", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	(void)!read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return strncmp(buf, "deny", 4) == 0;
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

/* Runs in the exec child; it never returns. The order follows docs/protocol.md. */
static __attribute__((noreturn)) void child(struct spec *s, int pipefd)
{
	struct user u;
	struct err e = { 0 };
	sigset_t none;
	char num[] = "0", idbuf[16];

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

	for (int k = 0; k < s->nrl; k++)
		if (setrlimit(s->rlres[k], &s->rl[k]) < 0)
			child_fail(pipefd, "setup", errno, "setrlimit: %s%s", "");

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

	/* A user namespace whose setgroups is "deny" (rootless with a single mapping) keeps the
	 * groups it was born with; failing every exec there would help no one. */
	/* Raw syscalls: glibc's set*id wrappers would coordinate with "other threads" through
	 * memory this child shares with the init (CLONE_VM). */
	if (syscall(SYS_setgroups, (size_t)u.ngroups, u.groups) < 0 &&
	    !(errno == EPERM && setgroups_denied()))
		child_fail(pipefd, "setup", errno, "setgroups: %s%s", "");
	snprintf(idbuf, sizeof(idbuf), "%u", u.gid);
	if (syscall(SYS_setresgid, u.gid, u.gid, u.gid) < 0)
		child_fail(pipefd, "user", errno, errno == EINVAL ?
			   "setgid %.0s%s: gid not mapped in the container's user namespace" :
			   "setgid: %s %s", idbuf);
	snprintf(idbuf, sizeof(idbuf), "%u", u.uid);
	if (syscall(SYS_setresuid, u.uid, u.uid, u.uid) < 0)
		child_fail(pipefd, "user", errno, errno == EINVAL ?
			   "setuid %.0s%s: uid not mapped in the container's user namespace" :
			   "setuid: %s %s", idbuf);
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

struct child_args {
	struct spec *s;
	int pipefd;
};

static int child_entry(void *arg)
{
	struct child_args *a = arg;
	child(a->s, a->pipefd);
}

/* The exec child's own stack (it shares the init's memory, so it must not share its stack). */
static _Alignas(64) char child_stack[256 * 1024];

static int open_pty(struct spec *s, int64_t rows, int64_t cols, int *master, struct err *e)
{
	struct winsize ws = { .ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols };
	int unlock = 0, m;

	m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0)
		return seterr(e, errno, "open /dev/ptmx: %s", strerror(errno));
	if (ioctl(m, TIOCSPTLCK, &unlock) < 0 || (rows > 0 && cols > 0 && ioctl(m, TIOCSWINSZ, &ws) < 0) ||
	    (s->pty_slave = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
		int no = errno;
		close(m);
		return seterr(e, no, "set up pty: %s", strerror(no));
	}
	*master = m;
	return 0;
}

/* A captured exec's stdio: stdin is a pipe already holding the request's input (or the init's
 * /dev/null), stdout and stderr are pipes whose read ends the init keeps in rd. */
static int open_capture(struct spec *s, int rd[2], struct err *e)
{
	int p[2];

	s->stdio[0] = 0;
	if (s->input_len) {
		ssize_t n;
		if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
			return seterr(e, errno, "pipe: %s", strerror(errno));
		/* A fresh pipe holds 64 KiB, more than a packet can carry; only a user over its pipe
		 * quota gets a smaller one, and then the input does not fit. */
		n = write(p[1], s->input, s->input_len);
		close(p[1]);
		if (n != (ssize_t)s->input_len) {
			close(p[0]);
			return seterr(e, n < 0 ? errno : ENOSPC, "pass the input to stdin: %s",
				      n < 0 ? strerror(errno) : "the pipe is too small");
		}
		s->stdio[0] = p[0];
	}
	for (int k = 0; k < 2; k++) {
		if (pipe2(p, O_CLOEXEC) < 0 || fcntl(p[0], F_SETFL, O_NONBLOCK) < 0)
			return seterr(e, errno, "pipe: %s", strerror(errno));
		rd[k] = p[0];
		s->stdio[k + 1] = p[1];
	}
	return 0;
}

/* The child's ends of a captured exec's pipes: the init must not hold them, or the streams
 * would never end. */
static void close_capture_ends(struct spec *s)
{
	for (int k = 0; k < 3; k++)
		if (s->stdio[k] > 2) {
			close(s->stdio[k]);
			s->stdio[k] = -1;
		}
}

/* The capabilities the init still has in its bounding set, which every process it starts
 * inherits. Shrunk once, on the first exec, to what the container's processes may have, instead
 * of a few dozen prctl calls in every exec child; the init keeps its own effective set. */
static uint64_t bounding = ~(uint64_t)0;

static int limit_bounding_set(const struct spec *s, struct err *e)
{
	uint64_t keep = s->has_caps ? s->caps : 0;

	if (keep & ~bounding)
		return seterr(e, EPERM, "capabilities beyond the container's first exec were asked for");
	for (int cap = 0; cap < 64 && (bounding & ~keep); cap++) {
		if (!(bounding & ~keep & (uint64_t)1 << cap))
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return seterr(e, errno, "drop bounding capability %d: %s", cap, strerror(errno));
		bounding &= ~((uint64_t)1 << cap); /* EINVAL: past the kernel's last capability */
	}
	return 0;
}

/* The container's own seccomp profile, once the init carries it (see share_seccomp). */
static struct sock_filter *carried;
static unsigned short carried_len;

/* Installing a filter costs the kernel a pass over every syscall number (it precomputes which
 * are always allowed), a good part of a short exec. So the init installs the container's
 * profile on itself at the first exec that uses it, and every later process inherits it
 * instead of installing it again. The init's own remaining work (clone, set*id, capset, kill,
 * wait, sendmsg...) is all allowed by any profile an exec could run under. */
static int share_seccomp(struct spec *s, struct err *e)
{
	size_t bytes = s->prog.len * sizeof(struct sock_filter);

	if (!s->prog.len || !s->shared_seccomp)
		return 0;
	if (!carried) {
		/* CAP_SYS_ADMIN (which the init has) stands in for no_new_privs here: the init's
		 * children may still be started without it. */
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &s->prog) < 0)
			return seterr(e, errno, "install the container's seccomp filter: %s", strerror(errno));
		carried = malloc(bytes);
		if (!carried)
			return seterr(e, ENOMEM, "out of memory");
		memcpy(carried, s->prog.filter, bytes);
		carried_len = s->prog.len;
	}
	if (carried_len == s->prog.len && memcmp(carried, s->prog.filter, bytes) == 0)
		s->prog.len = 0; /* inherited */
	return 0;
}

int confine_init(const struct mp_doc *d, struct err *e)
{
	struct spec s;
	uint32_t sc = 0;
	int64_t caps = 0;

	memset(&s, 0, sizeof(s));
	s.shared_seccomp = true;
	if ((s.has_caps = get_int(d, 0, "caps", &caps, e)) < 0 || get_type(d, 0, "seccomp", MP_BIN, &sc, e) < 0 ||
	    (sc && bpf_program(d, sc, &s.prog, e) < 0))
		return -1;
	s.caps = (uint64_t)caps;
	/* Absent keys leave the init as it is (the first exec then does it, as without set-up). */
	return (s.has_caps && limit_bounding_set(&s, e) < 0) || share_seccomp(&s, e) < 0 ? -1 : 0;
}

int do_exec(struct req *r, struct err *e)
{
	struct spec s;
	struct child_err ce;
	int64_t rows = 0, cols = 0;
	int p[2], master = -1, rc = -1;
	struct child_args ca;
	int rd[2] = { -1, -1 };
	ssize_t n;
	pid_t pid;

	if (parse_exec(r, &s, e) < 0 || get_int(&r->doc, 0, "rows", &rows, e) < 0 ||
	    get_int(&r->doc, 0, "cols", &cols, e) < 0)
		goto out;
	if (limit_bounding_set(&s, e) < 0 || share_seccomp(&s, e) < 0)
		goto out;
	if (s.pty && open_pty(&s, rows, cols, &master, e) < 0)
		goto out;
	if (s.capture && open_capture(&s, rd, e) < 0)
		goto out;
	if (pipe2(p, O_CLOEXEC) < 0) {
		seterr(e, errno, "pipe: %s", strerror(errno));
		goto out;
	}
	/* Like vfork: the child borrows the init's memory until it execs, so starting a process
	 * costs no page-table copy; the init sleeps meanwhile, and on return the pipe already says
	 * whether the exec happened. */
	ca = (struct child_args){ &s, p[1] };
	pid = clone(child_entry, child_stack + sizeof(child_stack), CLONE_VM | CLONE_VFORK | SIGCHLD, &ca);
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		seterr(e, errno, "start process: %s", strerror(errno));
		goto out;
	}
	/* The write end closes on execve: EOF means the program is running. */
	do
		n = read(p[0], &ce, sizeof(ce));
	while (n < 0 && errno == EINTR);
	close(p[0]);
	if (n == (ssize_t)sizeof(ce)) {
		/* The child is left for the SIGCHLD reaper; it was never tracked, so no exit event. */
		ce.kind[sizeof(ce.kind) - 1] = 0;
		ce.msg[sizeof(ce.msg) - 1] = 0;
		seterr(e, ce.no, "%s", ce.msg);
		e->kind = strcmp(ce.kind, "notfound") == 0 ? "notfound" :
			  strcmp(ce.kind, "noexec") == 0   ? "noexec" :
			  strcmp(ce.kind, "user") == 0     ? "user" :
			  strcmp(ce.kind, "cwd") == 0      ? "cwd" : "setup";
		goto out;
	}
	if (n != 0) {
		seterr(e, EIO, "exec child died before execve");
		e->kind = "setup";
		goto out;
	}
	if (track(pid, r->id) < 0 || (s.capture && capture_new(r->id, pid, s.limit, rd) < 0)) {
		tracked_take(pid);
		kill(pid, SIGKILL);
		seterr(e, ENOMEM, "out of memory");
		goto out;
	}
	if (s.capture)
		rd[0] = rd[1] = -1; /* the capture has them now; no started event, its exit says it all */
	else
		send_started(r->id, pid, master);
	rc = 0;
out:
	if (s.capture) {
		close_capture_ends(&s);
		close_fds(rd, 2);
	}
	if (master >= 0)
		close(master);
	if (s.pty_slave >= 0)
		close(s.pty_slave);
	close_fds(r->fds, r->nfds);
	r->nfds = 0;
	return rc;
}

/* pid, ppid, pgrp, session of one /proc/<pid>/stat; false for zombies and vanished pids. */
static bool stat_of(pid_t pid, pid_t out[4])
{
	char path[64], buf[1024], *p, state;
	int fd, n;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = (int)read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	/* comm may contain anything, including ") ": the last ')' ends it. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %c %d %d %d", &state, &out[1], &out[2], &out[3]) != 4)
		return false;
	out[0] = pid;
	return state != 'Z' && state != 'X';
}

/* Signals the exec's session, process group and descendants; returns how many were hit. A
 * root that has been reaped is no process any more (its pid may be another's by now), but its
 * session and group stay what they were while any member lives. */
static int signal_tree(pid_t root, bool root_alive, int sig)
{
	pid_t (*ps)[4] = NULL;
	size_t n = 0, cap = 0;
	int hit = 0;
	bool grew = true;
	struct dirent *de;
	DIR *dir = opendir("/proc");

	if (!dir)
		return -1;
	while ((de = readdir(dir))) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 1)
			continue;
		if (n == cap) {
			void *np = realloc(ps, (cap = cap ? 2 * cap : 256) * sizeof(*ps));
			if (!np)
				break;
			ps = np;
		}
		if (stat_of((pid_t)pid, ps[n]))
			n++;
	}
	closedir(dir);
	/* Mark the matches in place (ppid := 0) and grow the set through parent links. */
	for (size_t k = 0; k < n; k++)
		if ((root_alive && ps[k][0] == root) || ps[k][2] == root || ps[k][3] == root)
			ps[k][1] = -ps[k][1] - 1;
	while (grew) {
		grew = false;
		for (size_t k = 0; k < n; k++) {
			if (ps[k][1] < 0)
				continue;
			for (size_t j = 0; j < n; j++)
				if (ps[j][1] < 0 && ps[j][0] == ps[k][1]) {
					ps[k][1] = -ps[k][1] - 1;
					grew = true;
					break;
				}
		}
	}
	for (size_t k = 0; k < n; k++)
		if (ps[k][1] < 0 && kill(ps[k][0], sig) == 0)
			hit++;
	free(ps);
	return hit;
}

int do_signal(struct req *r, struct err *e)
{
	int64_t target = 0, sig = 0;
	bool tree = false, alive;
	pid_t pid;

	close_fds(r->fds, r->nfds);
	r->nfds = 0;
	if (get_int(&r->doc, 0, "target", &target, e) <= 0 || get_int(&r->doc, 0, "sig", &sig, e) <= 0 ||
	    get_bool(&r->doc, 0, "tree", &tree, e) < 0)
		return e->no ? -1 : seterr(e, EPROTO, "signal needs \"target\" and \"sig\"");
	if (sig < 0 || sig >= NSIG)
		return seterr(e, EINVAL, "invalid signal %lld", (long long)sig);
	/* An exec that has ended is untracked, so its pid can never be a reused one. A captured
	 * exec whose process ended while what it started still holds its output open is found
	 * through its session: the tree is all that is left to signal. */
	pid = tracked_pid(target);
	alive = pid > 0;
	if (!alive && tree)
		pid = capture_pid(target);
	if (pid > 0) {
		if (!tree) {
			if (kill(pid, (int)sig) < 0 && errno != ESRCH)
				return seterr(e, errno, "kill: %s", strerror(errno));
		} else {
			for (int round = 0; signal_tree(pid, alive, (int)sig) > 0 && sig == SIGKILL && round < 1000;
			     round++) {
				struct timespec ts = { 0, 1000000 };
				nanosleep(&ts, NULL);
			}
		}
	}
	if (tree && sig == SIGKILL)
		capture_killed(target); /* a failed send means the host is gone: the loop sees it */
	return send_simple("ok", r->id);
}

int do_open(struct req *r, struct err *e)
{
	char *path = NULL, *mode = NULL;
	int64_t perm = 0644;
	int flags, fd, rootfd;
	struct stat st;

	close_fds(r->fds, r->nfds);
	r->nfds = 0;
	if (need_str(&r->doc, 0, "path", &path, e) < 0 || need_str(&r->doc, 0, "mode", &mode, e) < 0 ||
	    get_int(&r->doc, 0, "perm", &perm, e) < 0)
		return -1;
	if (strcmp(mode, "r") == 0)
		flags = O_RDONLY;
	else if (strcmp(mode, "w") == 0)
		flags = O_WRONLY | O_CREAT | O_TRUNC;
	else if (strcmp(mode, "a") == 0)
		flags = O_WRONLY | O_CREAT | O_APPEND;
	else if (strcmp(mode, "dir") == 0)
		flags = O_RDONLY | O_DIRECTORY;
	else
		return seterr(e, EPROTO, "\"mode\" must be r, w, a or dir");
	if (perm < 0 || perm > 07777)
		return seterr(e, EINVAL, "bad \"perm\"");

	rootfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return seterr(e, errno, "open /: %s", strerror(errno));
	/* O_NONBLOCK keeps a FIFO swapped in after any check from blocking the init; the type is
	 * then checked on what was actually opened. */
	fd = resolve(rootfd, path, flags | O_NONBLOCK | O_NOCTTY, (mode_t)perm);
	close(rootfd);
	if (fd < 0) {
		char eb[128];
		if (errno == ENXIO)
			return seterr(e, EINVAL, "not a regular file: \"%s\"", path);
		return seterr(e, errno, "%s: \"%s\"", lc_strerror(errno, eb, sizeof(eb)), path);
	}
	if (fstat(fd, &st) < 0 || (flags & O_DIRECTORY ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))) {
		close(fd);
		return seterr(e, EINVAL, "not a regular file: \"%s\"", path);
	}
	if ((strcmp(mode, "w") == 0 && ftruncate(fd, 0) < 0) ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		int no = errno;
		close(fd);
		return seterr(e, no, "open %s: %s", path, strerror(no));
	}
	send_fd_reply("opened", r->id, fd);
	close(fd);
	return 0;
}
