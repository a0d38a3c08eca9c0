/* exec requests: the init's side of starting a process (its pty or capture pipes, the fork);
 * the child's side is child.c, the table of starting and running execs proctable.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <termios.h>
#include <unistd.h>

#include "cleanup.h"
#include "exec.h"
#include "init.h"

/* The pty multiplexer of the container's own devpts instance, opened for the init to make a pty
 * in. Not "/dev/ptmx": /dev is the container's tmpfs, where its root may have put a FIFO or a
 * symlink to any file in place of the ptmx symlink. /dev/pts/ptmx is reached without following
 * a symlink, opened without blocking (should it be a FIFO), and used only if it is a character
 * device on a devpts mount. */
static int open_ptmx(struct err *e)
{
	autoclose int m = resolve_at(AT_FDCWD, "/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_NONBLOCK, 0,
				     RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
	struct statfs sf;
	struct stat st;

	if (m < 0)
		return seterr(e, errno, "open /dev/pts/ptmx: %s", strerror(errno));
	if (fstatfs(m, &sf) < 0 || fstat(m, &st) < 0)
		return seterr(e, errno, "open /dev/pts/ptmx: %s", strerror(errno));
	if (sf.f_type != DEVPTS_SUPER_MAGIC || !S_ISCHR(st.st_mode))
		return seterr(e, ENOTTY,
			      "no pty: /dev/pts/ptmx is not the multiplexer of a devpts "
			      "mount (a process of the container replaced /dev/pts)");
	if (fcntl(m, F_SETFL, fcntl(m, F_GETFL) & ~O_NONBLOCK) < 0)
		return seterr(e, errno, "open /dev/pts/ptmx: %s", strerror(errno));
	return take_fd(&m);
}

static int open_pty(struct spec *s, int64_t rows, int64_t cols, int *master, struct err *e)
{
	struct winsize ws = { .ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols };
	autoclose int m = open_ptmx(e);
	int unlock = 0;

	if (m < 0)
		return -1;
	if (ioctl(m, TIOCSPTLCK, &unlock) < 0 ||
	    (rows > 0 && cols > 0 && ioctl(m, TIOCSWINSZ, &ws) < 0) ||
	    (s->pty_slave = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0)
		return seterr(e, errno, "set up pty: %s", strerror(errno));
	*master = take_fd(&m);
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
		if (pipe2(p, O_CLOEXEC) < 0)
			return seterr(e, errno, "pipe: %s", strerror(errno));
		/* Handed over before anything else can fail: the caller closes them on failure. */
		rd[k] = p[0];
		s->stdio[k + 1] = p[1];
		if (fcntl(p[0], F_SETFL, O_NONBLOCK) < 0)
			return seterr(e, errno, "pipe: %s", strerror(errno));
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
	/* In the init, before the fork, in confine_now's order: what the init carries for the
	 * container (bounding set, then filter) is done once, not in every child. */
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
