/* sandkit-init: PID 1 of a sandkit container. Builds the root from one `setup` message, then
 * serves exec/signal/open/ping requests on fd 3 until the host goes away. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "init.h"

static struct req req;

static __attribute__((noreturn)) void die_eof(void)
{
	/* The host is gone: nothing in the container may outlive it. */
	kill(-1, SIGKILL);
	_exit(0);
}

static void reap(int sfd)
{
	struct signalfd_siginfo si;
	int status;
	pid_t pid;

	while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		;
	/* Signals coalesce, so one SIGCHLD may stand for many children: reap until none is left.
	 * Orphans reparented to us are reaped too, silently. */
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		int64_t id;
		bool captured;
		int rc;
		if (starting_reaped(pid) < 0)
			die_eof();
		id = tracked_take(pid);
		if (!id)
			continue;
		rc = capture_exited(id, status, &captured);
		if (!captured)
			rc = send_exit(id, status, NULL);
		if (rc < 0 && errno != EAGAIN)
			die_eof();
	}
}

static void protocol_error(int64_t id, const char *why)
{
	struct err e = { 0 };
	seterr(&e, EPROTO, "protocol error: %s", why);
	if (send_error(id, &e) < 0)
		die_eof();
}

/* The container's confinement could not be applied: nothing may run in it. */
static __attribute__((noreturn)) void unconfined(const struct err *e)
{
	send_error(0, e);
	die_eof();
}

static int rename_host(const char *name)
{
	size_t len = strlen(name);
	if (hostname_fd < 0)
		return sethostname(name, len);
	return pwrite(hostname_fd, name, len, 0) == (ssize_t)len ? 0 : -1;
}

/* Why a request without a valid type or id is refused. */
static const char *bad_header(const char *t)
{
	return t ? "missing or invalid \"id\"" : "missing \"t\"";
}

static void serve_one(void)
{
	struct err e = { 0 };
	char *t = NULL;
	int rc;

	arena_reset();
	rc = recv_req(&req);
	if (rc == 0)
		die_eof();
	if (rc == -2)
		return;
	if (rc < 0) {
		close_fds(req.fds, req.nfds);
		protocol_error(req.id, req.doc.err);
		return;
	}
	if (get_str(&req.doc, 0, "t", &t, &e) <= 0 || req.id <= 0) {
		close_fds(req.fds, req.nfds);
		protocol_error(req.id, e.no ? e.msg : bad_header(t));
		return;
	}
	/* Still unconfined only when set up to be named later: nothing but the naming (and a ping)
	 * may happen before the container's confinement is in force. */
	if (strcmp(t, "hostname") != 0 && strcmp(t, "ping") != 0 && confine_now(&e) < 0)
		unconfined(&e);
	if (strcmp(t, "exec") == 0) {
		rc = do_exec(&req, &e);
	} else if (strcmp(t, "signal") == 0) {
		rc = do_signal(&req, &e);
	} else if (strcmp(t, "open") == 0) {
		rc = do_open(&req, &e);
	} else if (strcmp(t, "connect") == 0) {
		rc = do_connect(&req, &e);
	} else if (strcmp(t, "netif") == 0) {
		rc = do_netif(&req, &e);
	} else if (strcmp(t, "hostname") == 0) {
		char *name = NULL;
		close_fds(req.fds, req.nfds);
		rc = need_str(&req.doc, 0, "name", &name, &e);
		if (rc > 0 && rename_host(name) < 0)
			rc = seterr(&e, errno, "set the host name: %s", strerror(errno));
		else if (rc > 0)
			rc = send_simple("ok", req.id);
		if (confine_now(&e) < 0)
			unconfined(&e);
	} else if (strcmp(t, "ping") == 0) {
		close_fds(req.fds, req.nfds);
		rc = send_simple("pong", req.id);
	} else {
		close_fds(req.fds, req.nfds);
		rc = seterr(&e, EPROTO, "unknown message type \"%s\"", t);
	}
	req.nfds = 0;
	if (rc < 0 && e.no && send_error(req.id, &e) < 0)
		die_eof();
}

static int setup(void)
{
	struct err e = { 0 };
	char *t = NULL;
	int rc = recv_req(&req);

	if (rc == 0)
		_exit(1);
	if (rc < 0)
		seterr(&e, EPROTO, "protocol error: %s", req.doc.err);
	else if (get_str(&req.doc, 0, "t", &t, &e) <= 0 || strcmp(t, "setup") != 0)
		seterr(&e, EPROTO, "protocol error: expected a setup message");
	else
		rc = setup_container(&req, &e);
	/* (a persistent layer's directory came with it; mounted now, its fd is not needed) */
	close_fds(req.fds, req.nfds);
	req.nfds = 0;
	if (rc == 0)
		return 0;
	send_error(0, &e);
	return -1;
}

/* Moves an fd the init keeps (-1: none) above the low numbers reset_fds fills. */
static int park_fd(int *fd)
{
	int moved;

	if (*fd < 0 || *fd >= 16)
		return 0;
	if ((moved = fcntl(*fd, F_DUPFD_CLOEXEC, 16)) < 0)
		return -1;
	close(*fd);
	*fd = moved;
	return 0;
}

/* Moves a parked fd (-1: none) to *keep, the next number kept open. */
static int keep_fd(int *fd, int *keep)
{
	if (*fd < 0)
		return 0;
	if (dup3(*fd, *keep, O_CLOEXEC) < 0 || close(*fd) < 0)
		return -1;
	*fd = (*keep)++;
	return 0;
}

/* Everything the init holds open is fd 3, the hostname sysctl and the upper directory (then
 * fds 4 and 5, those it has) or about to be closed; 0..2 point at the container's /dev/null so
 * nothing writes into a host terminal or pipe. */
static int reset_fds(void)
{
	int fd, keep = 4;

	/* Out of the way of 0..2 and 4..5 first, should the init have been started with 0..2
	 * closed. */
	if (park_fd(&hostname_fd) < 0 || park_fd(&upper_fd) < 0)
		return -1;
	if ((fd = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
		return -1;
	for (int k = 0; k < 3; k++)
		if (fd != k && dup2(fd, k) < 0)
			return -1;
	if (fd > 3)
		close(fd);
	if (keep_fd(&hostname_fd, &keep) < 0 || keep_fd(&upper_fd, &keep) < 0)
		return -1;
	return close_range((unsigned)keep, ~0U, 0);
}

static bool named(void)
{
	struct err e = { 0 };
	char *name = NULL;
	return get_str(&req.doc, 0, "hostname", &name, &e) > 0 && *name;
}

/* Whether the container has a network namespace of its own ("loopback"), which netif requests
 * may configure; the host's (network "host") is never touched. */
static bool own_netns(void)
{
	struct err e = { 0 };
	bool loopback = false;
	return get_bool(&req.doc, 0, "loopback", &loopback, &e) > 0 && loopback;
}

/* A container given a lifetime ends when it is over, whatever the host does meanwhile. */
static int lifetime_timer(void)
{
	int64_t ms = 0;
	struct err e = { 0 };
	struct itimerspec when = { 0 };
	int fd;

	if (get_int(&req.doc, 0, "lifetime_ms", &ms, &e) <= 0 || ms <= 0)
		return -1;
	fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (fd < 0)
		return -1;
	when.it_value.tv_sec = ms / 1000;
	when.it_value.tv_nsec = (ms % 1000) * 1000000;
	timerfd_settime(fd, 0, &when, NULL);
	return fd;
}

static __attribute__((noreturn)) void lifetime_over(void)
{
	struct err e = { 0 };
	seterr(&e, ETIME, "the container's lifetime is over: it was stopped with everything in it");
	send_error(0, &e);
	die_eof();
}

/* The poll set: the control socket, SIGCHLD, the lifetime timer, then the error pipes of the
 * execs still starting (*nstart of them), then the connects in progress (*nconn), then the
 * captured execs' pipes. */
static struct pollfd *poll_set(int sfd, int tfd, int *n, int *nstart, int *nconn)
{
	static struct pollfd *pf;
	static size_t cap;
	size_t want = 3 + starting_count() + connecting_count() + 2 * capture_count();
	int k;

	if (want > cap) {
		struct pollfd *grown = realloc(pf, want * sizeof(*pf));
		if (!grown)
			return NULL;
		pf = grown;
		cap = want;
	}
	/* With output waiting for room on the socket, its room is worth waking for. */
	pf[0] = (struct pollfd){ CTRL_FD, POLLIN | (capture_backlog() ? POLLOUT : 0), 0 };
	pf[1] = (struct pollfd){ sfd, POLLIN, 0 };
	pf[2] = (struct pollfd){ tfd, POLLIN, 0 }; /* a negative fd is skipped by poll */
	*nstart = starting_fill(pf + 3);
	*nconn = connecting_fill(pf + 3 + *nstart);
	if ((k = capture_fill(pf + 3 + *nstart + *nconn)) < 0)
		return NULL;
	*n = 3 + *nstart + *nconn + k;
	return pf;
}

int main(void)
{
	struct err e = { 0 };
	struct pollfd *pf;
	sigset_t mask;
	int sfd, tfd, n, nstart, nconn;

	if (fcntl(CTRL_FD, F_SETFD, FD_CLOEXEC) < 0)
		return 1;
	/* Exec'd from a memfd, the kernel would call us "memfd:sandkit-i": say who we are in ps. */
	prctl(PR_SET_NAME, "sandkit-init", 0, 0, 0);
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 || signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		return 1;
	if (setup() < 0)
		return 1;
	read_setgroups_policy();
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 || reset_fds() < 0 ||
	    (sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
		seterr(&e, errno, "finish setup: %s", strerror(errno));
		send_error(0, &e);
		return 1;
	}
	tfd = lifetime_timer();
	/* Before the confinement, which may forbid socket(2): see net.c. */
	if (own_netns() && net_keep_socket() < 0) {
		seterr(&e, errno, "keep a socket for the netif requests: %s", strerror(errno));
		send_error(0, &e);
		return 1;
	}
	/* Last, so that set-up itself is not filtered. A container to be named later that cannot
	 * keep its hostname sysctl (rootless) is confined once it is named (see serve_one). */
	if (confine_prepare(&req.doc, &e) < 0 ||
	    ((hostname_fd >= 0 || named()) && confine_now(&e) < 0)) {
		send_error(0, &e);
		return 1;
	}
	if (send_ready() < 0)
		die_eof();

	for (;;) {
		if (!(pf = poll_set(sfd, tfd, &n, &nstart, &nconn)))
			die_eof(); /* out of memory: nothing can be served any more */
		if (poll(pf, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			die_eof();
		}
		/* Output first: a process's last words are read before its exit is reported. */
		if (capture_ready(pf + 3 + nstart + nconn, n - 3 - nstart - nconn) < 0 &&
		    errno != EAGAIN)
			die_eof();
		/* Then starts that ended: `started` comes before anything else about a process. */
		if (starting_ready(pf + 3, nstart) < 0)
			die_eof();
		if (connecting_ready(pf + 3 + nstart, nconn) < 0)
			die_eof();
		if (pf[0].revents & POLLOUT)
			capture_flush();
		/* Exit events are sent before new requests run, so a host sees a pid end first. */
		if (pf[1].revents)
			reap(sfd);
		if (pf[0].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))
			serve_one();
		if (tfd >= 0 && pf[2].revents)
			lifetime_over();
	}
}
