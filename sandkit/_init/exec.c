/* exec, signal and open requests: everything the host asks of a running container. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/openat2.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "exec.h"
#include "init.h"


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

/* The container's confinement from its setup message, kept until the init applies it to itself:
 * at the end of set-up, or, for a container to be named later that cannot keep its hostname
 * sysctl (rootless), right after the name is set (the filter may forbid sethostname) and in any
 * case before anything else a request asks for. It must never depend on what an exec asks. */
static struct {
	bool pending;
	int has_caps;
	uint64_t caps;
	struct sock_filter *prog;
	unsigned short len;
} confinement;

int confine_prepare(const struct mp_doc *d, struct err *e)
{
	struct sock_fprog prog = { 0 };
	uint32_t sc = 0;
	int64_t caps = 0;
	size_t bytes;

	if ((confinement.has_caps = get_int(d, 0, "caps", &caps, e)) < 0 ||
	    get_type(d, 0, "seccomp", MP_BIN, &sc, e) < 0 || (sc && bpf_program(d, sc, &prog, e) < 0))
		return -1;
	confinement.caps = (uint64_t)caps;
	bytes = prog.len * sizeof(struct sock_filter);
	if (bytes && !(confinement.prog = malloc(bytes)))
		return seterr(e, ENOMEM, "out of memory");
	if (bytes)
		memcpy(confinement.prog, prog.filter, bytes);
	confinement.len = prog.len;
	/* Absent keys leave the init as it is (each exec then carries its own, as without set-up). */
	confinement.pending = confinement.has_caps || confinement.len;
	return 0;
}

int confine_now(struct err *e)
{
	struct spec s;

	if (!confinement.pending)
		return 0;
	memset(&s, 0, sizeof(s));
	s.has_caps = confinement.has_caps;
	s.caps = confinement.caps;
	s.prog = (struct sock_fprog){ confinement.len, confinement.prog };
	s.shared_seccomp = true;
	if ((s.has_caps && limit_bounding_set(&s, e) < 0) || share_seccomp(&s, e) < 0)
		return -1;
	confinement.pending = false;
	free(confinement.prog); /* share_seccomp keeps its own copy */
	confinement.prog = NULL;
	return 0;
}

/* Execs whose child has not reached execve yet. The init never waits for one: it goes on
 * serving, and each child's error pipe, in the poll set, says how its start ended. */
static struct starting {
	int64_t id;
	pid_t pid;
	int errfd;   /* the error pipe's read end */
	int master;  /* pty: sent with `started` */
	int rd[2];   /* capture: stdout and stderr read ends */
	int64_t limit;
	bool capture;
} *starting;
static size_t nstarting, capstarting;

static int starting_add(const struct starting *st)
{
	if (nstarting == capstarting) {
		size_t cap = capstarting ? 2 * capstarting : 8;
		struct starting *grown = realloc(starting, cap * sizeof(*grown));
		if (!grown)
			return -1;
		starting = grown;
		capstarting = cap;
	}
	starting[nstarting++] = *st;
	return 0;
}

static void starting_drop(size_t k)
{
	struct starting *st = &starting[k];
	close(st->errfd);
	if (st->master >= 0)
		close(st->master);
	close_fds(st->rd, 2);
	starting[k] = starting[--nstarting];
}

static pid_t starting_pid(int64_t id)
{
	for (size_t k = 0; k < nstarting; k++)
		if (starting[k].id == id)
			return starting[k].pid;
	return 0;
}

size_t starting_count(void)
{
	return nstarting;
}

int starting_fill(struct pollfd *pf)
{
	for (size_t k = 0; k < nstarting; k++)
		pf[k] = (struct pollfd){ starting[k].errfd, POLLIN, 0 };
	return (int)nstarting;
}

/* Reads the end of one child's start: a child_err (it failed before execve: an `error` reply),
 * or end of file (it exec'd, or died on a signal before it could: either way a process the host
 * will get an `exit` for). 0: not ended yet; -1: the host could not be told. */
static int starting_settle(size_t k)
{
	struct starting *st = &starting[k];
	struct child_err ce;
	struct err e = { 0 };
	ssize_t n;
	int rc = 0;

	do
		n = read(st->errfd, &ce, sizeof(ce));
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return 0;
	if (n == (ssize_t)sizeof(ce)) {
		/* The child is left for the reaper; it is not tracked, so there is no exit event. */
		ce.kind[sizeof(ce.kind) - 1] = 0;
		ce.msg[sizeof(ce.msg) - 1] = 0;
		seterr(&e, ce.no, "%s", ce.msg);
		e.kind = strcmp(ce.kind, "notfound") == 0 ? "notfound" :
			 strcmp(ce.kind, "noexec") == 0   ? "noexec" :
			 strcmp(ce.kind, "user") == 0     ? "user" :
			 strcmp(ce.kind, "cwd") == 0      ? "cwd" : "setup";
		rc = send_error(st->id, &e);
	} else if (n != 0) {
		kill(st->pid, SIGKILL);
		seterr(&e, EIO, "exec child failed before execve without saying why");
		e.kind = "setup";
		rc = send_error(st->id, &e);
	} else if (track(st->pid, st->id) < 0 ||
		   (st->capture && capture_new(st->id, st->pid, st->limit, st->rd) < 0)) {
		tracked_take(st->pid);
		kill(st->pid, SIGKILL);
		rc = send_error(st->id, &(struct err){ .no = ENOMEM, .kind = "setup", .msg = "out of memory" });
	} else if (st->capture) {
		st->rd[0] = st->rd[1] = -1; /* the capture has them now; its exit event says it all */
	} else {
		rc = send_started(st->id, st->pid, st->master);
	}
	starting_drop(k);
	return rc < 0 ? -1 : 1;
}

int starting_ready(const struct pollfd *pf, int n)
{
	int rc = 0;
	/* Backwards: settling one moves the last entry into its slot. */
	for (int k = n - 1; k >= 0; k--)
		if (pf[k].revents && (size_t)k < nstarting && starting[k].errfd == pf[k].fd &&
		    starting_settle((size_t)k) < 0)
			rc = -1;
	return rc;
}

int starting_reaped(pid_t pid)
{
	/* A child reaped before its pipe was seen to end: its end of file is there by now (a dead
	 * process holds no fds), and must be read first so that `started` precedes `exit`. */
	for (size_t k = 0; k < nstarting; k++)
		if (starting[k].pid == pid)
			return starting_settle(k) < 0 ? -1 : 0;
	return 0;
}

int do_exec(struct req *r, struct err *e)
{
	struct spec s;
	struct starting st = { .master = -1, .rd = { -1, -1 } };
	int64_t rows = 0, cols = 0;
	int p[2] = { -1, -1 }, rc = -1;
	pid_t pid;

	if (parse_exec(r, &s, e) < 0 || get_int(&r->doc, 0, "rows", &rows, e) < 0 ||
	    get_int(&r->doc, 0, "cols", &cols, e) < 0)
		goto out;
	if (limit_bounding_set(&s, e) < 0 || share_seccomp(&s, e) < 0)
		goto out;
	if (s.pty && open_pty(&s, rows, cols, &st.master, e) < 0)
		goto out;
	if (s.capture && open_capture(&s, st.rd, e) < 0)
		goto out;
	if (pipe2(p, O_CLOEXEC) < 0 || fcntl(p[0], F_SETFL, O_NONBLOCK) < 0) {
		seterr(e, errno, "pipe: %s", strerror(errno));
		goto out;
	}
	/* A plain fork, not vfork: the init must not sleep until the child execs, since the child
	 * is a process of the container that any other one may stop (SIGSTOP) or slow down. */
	pid = fork();
	if (pid == 0)
		child(&s, p[1]);
	if (pid < 0) {
		seterr(e, errno, "start process: %s", strerror(errno));
		goto out;
	}
	st.id = r->id;
	st.pid = pid;
	st.errfd = p[0];
	st.capture = s.capture;
	st.limit = s.limit;
	if (starting_add(&st) < 0) {
		kill(pid, SIGKILL);
		seterr(e, ENOMEM, "out of memory");
		goto out;
	}
	p[0] = -1;
	st.master = st.rd[0] = st.rd[1] = -1; /* the starting entry holds them now */
	rc = 0;
out:
	close_fds(p, 2);
	if (s.capture)
		close_capture_ends(&s);
	close_fds(st.rd, 2);
	if (st.master >= 0)
		close(st.master);
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

/* One process of the container as the tree walk sees it: /proc/<pid>/stat's pid, ppid, process
 * group and session, and whether it belongs to the tree being signalled. */
struct proc {
	pid_t pid, ppid, pgrp, sid;
	enum { UNKNOWN, WALKING, IN, OUT } mark;
};

static int by_pid(const void *a, const void *b)
{
	pid_t x = ((const struct proc *)a)->pid, y = ((const struct proc *)b)->pid;
	return (x > y) - (x < y);
}

static struct proc *find_proc(struct proc *ps, size_t n, pid_t pid)
{
	struct proc key = { .pid = pid };
	return bsearch(&key, ps, n, sizeof(*ps), by_pid);
}

/* Marks p and its ancestors up to the first one already decided: IN when that one is, OUT
 * otherwise. Each process is walked once, so a whole tree costs O(n log n) however deep or wide
 * a container makes it. A parent link back into the walk (pid reuse between two reads of /proc)
 * ends it as OUT. */
static void mark_tree(struct proc *ps, size_t n, struct proc *p, struct proc **path)
{
	size_t depth = 0;
	int mark = OUT;

	while (p && p->mark == UNKNOWN) {
		p->mark = WALKING;
		path[depth++] = p;
		p = p->ppid > 1 ? find_proc(ps, n, p->ppid) : NULL;
	}
	if (p && p->mark == IN)
		mark = IN;
	while (depth)
		path[--depth]->mark = mark;
}

/* Signals the exec's session, process group and descendants; returns how many were hit. A
 * root that has been reaped is no process any more (its pid may be another's by now), but its
 * session and group stay what they were while any member lives. Every exec root is a subreaper
 * (see child.c), so what it started stays its descendant even after a double fork and setsid. */
static int signal_tree(pid_t root, bool root_alive, int sig)
{
	struct proc *ps = NULL, **path = NULL;
	size_t n = 0, cap = 0;
	int hit = 0;
	struct dirent *de;
	DIR *dir = opendir("/proc");

	if (!dir)
		return -1;
	while ((de = readdir(dir))) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		pid_t st[4];
		if (*end || pid <= 1 || !stat_of((pid_t)pid, st))
			continue;
		if (n == cap) {
			void *np = realloc(ps, (cap = cap ? 2 * cap : 256) * sizeof(*ps));
			if (!np)
				break;
			ps = np;
		}
		ps[n++] = (struct proc){ st[0], st[1], st[2], st[3], UNKNOWN };
	}
	closedir(dir);
	path = malloc((n ? n : 1) * sizeof(*path));
	if (!path) {
		free(ps);
		return -1;
	}
	qsort(ps, n, sizeof(*ps), by_pid);
	for (size_t k = 0; k < n; k++)
		if ((root_alive && ps[k].pid == root) || ps[k].pgrp == root || ps[k].sid == root)
			ps[k].mark = IN;
	for (size_t k = 0; k < n; k++)
		mark_tree(ps, n, &ps[k], path);
	for (size_t k = 0; k < n; k++)
		if (ps[k].mark == IN && kill(ps[k].pid, sig) == 0)
			hit++;
	free(path);
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
	if (!pid)
		pid = starting_pid(target); /* not exec'd yet: a stopped child must not stay so */
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
