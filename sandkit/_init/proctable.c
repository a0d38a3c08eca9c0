/* The init's process table: the execs it owes an `exit` event (tracked) and those whose child
 * has not reached execve yet (starting), with the error pipes that say how each start ended. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"
#include "init.h"

/* Pids we owe an `exit` event. Anything else that dies is only reaped. */
struct track {
	pid_t pid;
	int64_t id;
};
static struct track *tracked;
static size_t ntracked, captracked;

/* The malloc'd array arr of *cap elements of `size` bytes, with room for `want`: it at least
 * doubles, so it is reallocated only while the number of execs in flight sets a new high. NULL
 * (arr untouched) when out of memory. */
static void *reserve(void *arr, size_t *cap, size_t want, size_t size)
{
	size_t n = *cap ? *cap : 8;

	if (want <= *cap)
		return arr;
	while (n < want)
		n *= 2;
	if ((arr = realloc(arr, n * size)))
		*cap = n;
	return arr;
}

static int track(pid_t pid, int64_t id)
{
	struct track *grown = reserve(tracked, &captracked, ntracked + 1, sizeof(*grown));

	if (!grown)
		return -1;
	tracked = grown;
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

pid_t tracked_pid(int64_t id)
{
	for (size_t k = 0; k < ntracked; k++)
		if (tracked[k].id == id)
			return tracked[k].pid;
	return 0;
}

/* Execs whose child has not reached execve yet. The init never waits for one: it goes on
 * serving, and each child's error pipe, in the poll set, says how its start ended. */
static struct starting *starting;
static size_t nstarting, capstarting;

int starting_add(const struct starting *st)
{
	struct starting *grown = reserve(starting, &capstarting, nstarting + 1, sizeof(*grown));

	if (!grown)
		return -1;
	starting = grown;
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

pid_t starting_pid(int64_t id)
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

/* The error kind a child reported, as one of the init's own strings (what the child wrote is
 * only data). */
static const char *error_kind(const char *kind)
{
	static const char *const known[] = { "notfound", "noexec", "user", "cwd" };

	for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
		if (strcmp(kind, known[k]) == 0)
			return known[k];
	return "setup";
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
		e.kind = error_kind(ce.kind);
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
		seterr(&e, ENOMEM, "out of memory");
		e.kind = "setup";
		rc = send_error(st->id, &e);
	} else if (st->capture) {
		/* The capture has them now; its exit event says it all. */
		st->rd[0] = st->rd[1] = -1;
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
