/* signal requests: one process, or an exec's whole tree found by walking /proc. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "exec.h"
#include "init.h"

/* pid, ppid, pgrp, session of one <pid>/stat of the proc mount procfd, read without leaving
 * that mount (no symlink, no other mount on the way); false for zombies and vanished pids. */
static bool stat_of(int procfd, pid_t pid, pid_t out[4])
{
	char path[32], buf[1024], *p, state;
	autoclose int fd = -1;
	int n;

	snprintf(path, sizeof(path), "%d/stat", pid);
	fd = resolve_at(procfd, path, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0,
			RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
				RESOLVE_NO_XDEV);
	if (fd < 0)
		return false;
	n = (int)read(fd, buf, sizeof(buf) - 1);
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

/* The container's proc mount, as a directory to read. After pivot_root, "/proc" is the
 * container's to change: a process with CAP_SYS_ADMIN may have mounted something else there,
 * with a FIFO for a <pid>/stat (whose open would block the init) or made-up processes. So /proc
 * is reached without a symlink, opened without blocking, and used only if it is procfs. */
static DIR *open_proc(void)
{
	autoclose int fd = resolve_at(AT_FDCWD, "/proc", O_RDONLY | O_DIRECTORY | O_NONBLOCK, 0,
				      RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
	struct statfs sf;
	DIR *dir;

	if (fd < 0 || fstatfs(fd, &sf) < 0 || sf.f_type != PROC_SUPER_MAGIC)
		return NULL;
	if ((dir = fdopendir(fd)))
		fd = -1; /* the DIR has it */
	return dir;
}

/* The container's live processes but PID 1, as its proc mount dir shows them now, in a
 * malloc'd array of *n (NULL: none). */
static struct proc *read_procs(DIR *dir, size_t *n)
{
	autofree struct proc *ps = NULL;
	struct dirent *de;
	size_t cap = 0;

	*n = 0;
	while ((de = readdir(dir))) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		pid_t st[4];
		if (*end || pid <= 1 || !stat_of(dirfd(dir), (pid_t)pid, st))
			continue;
		if (*n == cap) {
			void *grown = realloc(ps, (cap = cap ? 2 * cap : 256) * sizeof(*ps));
			if (!grown)
				break;
			ps = grown;
		}
		ps[(*n)++] = (struct proc){ st[0], st[1], st[2], st[3], UNKNOWN };
	}
	return take_ptr(ps);
}

/* Whether process pid holds one of the pipes (by inode) open, as <pid>/fd of the proc mount
 * procfd shows. Reading that directory and its links never blocks on procfs; its length is the
 * process's open files, which the container's limits bound. */
static bool holds_pipe(int procfd, pid_t pid, const ino_t *pipes, size_t npipes)
{
	char path[32], link[64];
	autoclose int fd = -1;
	autoclosedir DIR *dir = NULL;
	struct dirent *de;

	snprintf(path, sizeof(path), "%d/fd", pid);
	fd = resolve_at(procfd, path, O_RDONLY | O_DIRECTORY | O_NONBLOCK, 0,
			RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
				RESOLVE_NO_XDEV);
	if (fd < 0 || !(dir = fdopendir(fd)))
		return false;
	fd = -1; /* the DIR has it */
	while ((de = readdir(dir))) {
		ssize_t n = readlinkat(dirfd(dir), de->d_name, link, sizeof(link) - 1);
		char *end;
		unsigned long long ino;
		if (n <= 0)
			continue;
		link[n] = 0;
		if (strncmp(link, "pipe:[", 6) != 0)
			continue;
		ino = strtoull(link + 6, &end, 10);
		if (strcmp(end, "]") != 0)
			continue;
		for (size_t k = 0; k < npipes; k++)
			if (ino == (unsigned long long)pipes[k])
				return true;
	}
	return false;
}

/* Signals the exec's session, process group and descendants; returns how many were hit. A
 * root that has been reaped is no process any more (its pid may be another's by now), but its
 * session and group stay what they were while any member lives. Every exec root is a subreaper
 * (see child.c), so what it started stays its descendant even after a double fork and setsid,
 * but only while the root lives: once it is gone, what still holds one of the exec's captured
 * pipes (the npipes inodes of pipes) is signalled too, with its descendants. */
static int signal_tree(pid_t root, bool root_alive, const ino_t *pipes, size_t npipes, int sig)
{
	autoclosedir DIR *dir = open_proc();
	size_t n = 0;
	autofree struct proc *ps = dir ? read_procs(dir, &n) : NULL;
	autofree struct proc **path = malloc((n ? n : 1) * sizeof(*path));
	int hit = 0;

	if (!ps) {
		/* Nothing to signal, or no proc mount to read: then the exec's process group (its
		 * root made one, see child.c) is all the init can still find. */
		kill(-root, sig);
		return 0;
	}
	if (!path)
		return -1;
	qsort(ps, n, sizeof(*ps), by_pid);
	for (size_t k = 0; k < n; k++)
		if ((root_alive && ps[k].pid == root) || ps[k].pgrp == root || ps[k].sid == root)
			ps[k].mark = IN;
	/* Only without a root: its fds cost a read per process, and the root's tree has it all. */
	for (size_t k = 0; !root_alive && npipes && k < n; k++)
		if (ps[k].mark != IN && holds_pipe(dirfd(dir), ps[k].pid, pipes, npipes))
			ps[k].mark = IN;
	for (size_t k = 0; k < n; k++)
		mark_tree(ps, n, &ps[k], path);
	for (size_t k = 0; k < n; k++)
		if (ps[k].mark == IN && kill(ps[k].pid, sig) == 0)
			hit++;
	return hit;
}

int do_signal(struct req *r, struct err *e)
{
	int64_t target = 0, sig = 0;
	bool tree = false, alive;
	ino_t pipes[2];
	size_t npipes = 0;
	pid_t pid;

	close_fds(r->fds, r->nfds);
	r->nfds = 0;
	if (get_int(&r->doc, 0, "target", &target, e) <= 0 ||
	    get_int(&r->doc, 0, "sig", &sig, e) <= 0 || get_bool(&r->doc, 0, "tree", &tree, e) < 0)
		return e->no ? -1 : seterr(e, EPROTO, "signal needs \"target\" and \"sig\"");
	if (sig < 0 || sig >= NSIG)
		return seterr(e, EINVAL, "invalid signal %lld", (long long)sig);
	/* An exec that has ended is untracked, so its pid can never be a reused one. A captured
	 * exec whose process ended while what it started still holds its output open is found
	 * through its session and by who holds its pipes: the tree is all that is left to signal. */
	pid = tracked_pid(target);
	if (!pid)
		pid = starting_pid(target); /* not exec'd yet: a stopped child must not stay so */
	alive = pid > 0;
	if (!alive && tree) {
		pid = capture_pid(target);
		npipes = capture_pipes(target, pipes);
	}
	if (pid > 0) {
		if (!tree) {
			if (kill(pid, (int)sig) < 0 && errno != ESRCH)
				return seterr(e, errno, "kill: %s", strerror(errno));
		} else {
			for (int round = 0; signal_tree(pid, alive, pipes, npipes, (int)sig) > 0 &&
					    sig == SIGKILL && round < 1000;
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
