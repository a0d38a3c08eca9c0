/* Published ports: the host asks for a socket connected to 127.0.0.1:port inside the container's
 * network namespace (the init's own), and gets it back over fd 3. The init never waits for a
 * connect: a TCP connect still in progress is parked here with its socket in the poll set, and
 * its reply goes out when the socket says how the connect ended. The init connects to nothing
 * but the container's own loopback, so a host that forwards a port hands a container process
 * nothing it could not reach itself. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "init.h"

/* At most this many TCP connects in progress at once; one more is refused with EAGAIN (the host
 * caps its connections per port anyway, this bounds the init's table and poll set). */
#define MAX_CONNECTING 64
/* SYNs a connect retransmits before it fails with ETIMEDOUT: 2 make it give up 7 s after it began
 * (1 s, then 2 s, then 4 s), soon after the host stops waiting for it (CONNECT_TIMEOUT, 5 s).
 * The kernel's default (net.ipv4.tcp_syn_retries, 6) would keep a connect to a listener whose
 * backlog is full in the table for over 2 minutes, and a full table refuses the connects of
 * every published port of the container: any client of one slow port could keep them all shut. */
#define CONNECT_SYN_RETRIES 2

struct connecting {
	int fd;
	int64_t id;
	int port;
};
static struct connecting pending[MAX_CONNECTING];
static size_t npending;

static int connect_error(struct err *e, int no, int port, const char *proto)
{
	char buf[128];
	return seterr(e, no, "connect to 127.0.0.1:%d/%s in the container: %s", port, proto,
		      lc_strerror(no, buf, sizeof(buf)));
}

/* The connected socket goes to the host; the init keeps no copy. */
static int reply_connected(int64_t id, int fd)
{
	int rc = send_fd_reply("connected", id, fd);
	close(fd);
	return rc;
}

static int parse_connect(const struct req *r, bool *udp, int *port, struct err *e)
{
	char *proto = NULL;
	int64_t p = 0;

	if (need_str(&r->doc, 0, "proto", &proto, e) < 0 || get_int(&r->doc, 0, "port", &p, e) < 0)
		return -1;
	if (strcmp(proto, "tcp") != 0 && strcmp(proto, "udp") != 0)
		return seterr(e, EPROTO, "\"proto\" must be \"tcp\" or \"udp\"");
	if (p < 1 || p > 65535)
		return seterr(e, EPROTO, "\"port\" must be 1 to 65535");
	*udp = proto[0] == 'u';
	*port = (int)p;
	return 0;
}

int do_connect(struct req *r, struct err *e)
{
	struct sockaddr_in to = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	bool udp = false;
	int port = 0, fd, rc;

	close_fds(r->fds, r->nfds);
	if (parse_connect(r, &udp, &port, e) < 0)
		return -1;
	if (!udp && npending >= MAX_CONNECTING)
		return seterr(e, EAGAIN, "%d connects are in progress already: try again",
			      MAX_CONNECTING);
	fd = socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return connect_error(e, errno, port, udp ? "udp" : "tcp");
	/* Best effort: a custom seccomp profile may forbid setsockopt, and the connect still works
	 * (only its give-up comes as late as the kernel's default). */
	if (!udp)
		setsockopt(fd, IPPROTO_TCP, TCP_SYNCNT, &(int){ CONNECT_SYN_RETRIES }, sizeof(int));
	to.sin_port = htons((uint16_t)port);
	do
		rc = connect(fd, (struct sockaddr *)&to, sizeof(to));
	while (rc < 0 && errno == EINTR);
	if (rc == 0)
		return reply_connected(r->id, fd);
	if (errno != EINPROGRESS) {
		int no = errno;
		close(fd);
		return connect_error(e, no, port, udp ? "udp" : "tcp");
	}
	pending[npending++] = (struct connecting){ fd, r->id, port };
	return 0;
}

size_t connecting_count(void)
{
	return npending;
}

int connecting_fill(struct pollfd *pf)
{
	for (size_t k = 0; k < npending; k++)
		pf[k] = (struct pollfd){ pending[k].fd, POLLOUT, 0 };
	return (int)npending;
}

/* Connects that ended, by the poll set connecting_fill made (n entries). -1: the host could
 * not be told. */
int connecting_ready(const struct pollfd *pf, int n)
{
	int rc = 0;

	/* From the end, so that removing entry k (the last one moves in) skips none. */
	for (int k = n - 1; k >= 0; k--) {
		struct connecting c = pending[k];
		struct err e = { 0 };
		int no = 0;
		socklen_t len = sizeof(no);

		if (!pf[k].revents)
			continue;
		pending[k] = pending[--npending];
		if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &no, &len) < 0)
			no = errno;
		if (no == 0) {
			rc |= reply_connected(c.id, c.fd);
			continue;
		}
		close(c.fd);
		connect_error(&e, no, c.port, "tcp");
		rc |= send_error(c.id, &e);
	}
	return rc < 0 ? -1 : 0;
}
