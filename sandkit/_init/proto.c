/* Packets on the control socket: one msgpack map per SOCK_SEQPACKET packet, fds as SCM_RIGHTS. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "init.h"

/* The decoder needs at most one node per byte. */
static struct mp_obj nodes[MAX_PACKET + 1];

/* Everything a request needs lives in one arena, reset between requests: no frees to forget in
 * a process that runs as long as the container. A 64 KiB packet cannot need more than this. */
static _Alignas(16) char arena[512 * 1024];
static size_t arena_used;

void arena_reset(void)
{
	arena_used = 0;
}

void *arena_alloc(size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (n > sizeof(arena) - arena_used)
		return NULL;
	arena_used += n;
	return arena + arena_used - n;
}

int seterr(struct err *e, int no, const char *fmt, ...)
{
	va_list ap;
	e->no = no;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return -1;
}

const char *lc_strerror(int no, char *buf, size_t len)
{
	snprintf(buf, len, "%s", strerror(no));
	if (buf[0] >= 'A' && buf[0] <= 'Z')
		buf[0] = (char)(buf[0] - 'A' + 'a');
	return buf;
}

void close_fds(int *fds, int n)
{
	for (int k = 0; k < n; k++)
		if (fds[k] >= 0) {
			close(fds[k]);
			fds[k] = -1;
		}
}

int recv_req(struct req *r)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(MAX_FDS * sizeof(int))];
	} ctl;
	struct iovec iov = { r->buf, sizeof(r->buf) };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b) };
	ssize_t n;

	r->nfds = 0;
	r->id = 0;
	r->doc.o = nodes;
	r->doc.cap = sizeof(nodes) / sizeof(nodes[0]);
	r->doc.err = NULL;
	do
		n = recvmsg(CTRL_FD, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? -2 : 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int *p = (int *)CMSG_DATA(c);
		for (size_t j = 0; j < k; j++) {
			if (r->nfds < MAX_FDS)
				r->fds[r->nfds++] = p[j];
			else
				close(p[j]);
		}
	}
	if (n == 0 && r->nfds == 0) {
		/* A zero-length read is either EOF or an empty packet; only the hangup tells. */
		struct pollfd pf = { CTRL_FD, POLLIN, 0 };
		if (poll(&pf, 1, 0) >= 0 && (pf.revents & (POLLHUP | POLLERR)))
			return 0;
	}
	r->len = (size_t)n;
	if (mh.msg_flags & MSG_TRUNC) {
		r->doc.err = "packet larger than 65536 bytes";
		return -1;
	}
	if (mh.msg_flags & MSG_CTRUNC) {
		r->doc.err = "more than 16 file descriptors in one packet";
		return -1;
	}
	if (mp_decode(&r->doc, r->buf, r->len) < 0)
		return -1;
	if (r->doc.o[0].type != MP_MAP) {
		r->doc.err = "packet is not a msgpack map";
		return -1;
	}
	/* Best effort: an id lets the host match even a rejected request. */
	uint32_t i = mp_get(&r->doc, 0, "id");
	if (i && r->doc.o[i].type == MP_INT && r->doc.o[i].v.i > 0)
		r->id = r->doc.o[i].v.i;
	return 1;
}

static int send_packet(const uint8_t *buf, size_t len, const int *fds, int nfds, int flags)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(MAX_FDS * sizeof(int))];
	} ctl;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (nfds > 0) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	}
	do
		n = sendmsg(CTRL_FD, &mh, MSG_NOSIGNAL | flags);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -1 : 0;
}

int send_msg(const uint8_t *buf, size_t len, const int *fds, int nfds)
{
	return send_packet(buf, len, fds, nfds, 0);
}

#define WBUF(w, b)       \
	uint8_t b[2048]; \
	struct mp_w w = { b, sizeof(b), 0, false }

int send_error(int64_t id, const struct err *e)
{
	WBUF(w, b);
	mp_w_map(&w, e->kind ? 5 : 4);
	mp_w_str(&w, "t");
	mp_w_str(&w, "error");
	mp_w_str(&w, "id");
	mp_w_int(&w, id);
	mp_w_str(&w, "errno");
	mp_w_int(&w, e->no);
	mp_w_str(&w, "msg");
	mp_w_str(&w, e->msg);
	if (e->kind) {
		mp_w_str(&w, "kind");
		mp_w_str(&w, e->kind);
	}
	return send_msg(b, w.len, NULL, 0);
}

int send_simple(const char *t, int64_t id)
{
	WBUF(w, b);
	mp_w_map(&w, 2);
	mp_w_str(&w, "t");
	mp_w_str(&w, t);
	mp_w_str(&w, "id");
	mp_w_int(&w, id);
	return send_msg(b, w.len, NULL, 0);
}

int send_ready(void)
{
	WBUF(w, b);
	mp_w_map(&w, 2);
	mp_w_str(&w, "t");
	mp_w_str(&w, "ready");
	mp_w_str(&w, "v");
	mp_w_int(&w, PROTO_VERSION);
	return send_msg(b, w.len, NULL, 0);
}

int send_started(int64_t id, pid_t pid, int fd)
{
	WBUF(w, b);
	mp_w_map(&w, 3);
	mp_w_str(&w, "t");
	mp_w_str(&w, "started");
	mp_w_str(&w, "id");
	mp_w_int(&w, id);
	mp_w_str(&w, "pid");
	mp_w_int(&w, pid);
	return send_msg(b, w.len, &fd, fd >= 0 ? 1 : 0);
}

/* One exit event: the status, and for a captured exec what is left of its output. */
int send_exit(int64_t id, int status, const struct output *out)
{
	static uint8_t b[MAX_PACKET];
	struct mp_w w = { b, sizeof(b), 0, false };
	bool sig = WIFSIGNALED(status);

	mp_w_map(&w, (sig ? 4 : 3) + (out ? 3 : 0));
	mp_w_str(&w, "t");
	mp_w_str(&w, "exit");
	mp_w_str(&w, "id");
	mp_w_int(&w, id);
	if (sig) {
		mp_w_str(&w, "signal");
		mp_w_int(&w, WTERMSIG(status));
		mp_w_str(&w, "core");
		mp_w_bool(&w, WCOREDUMP(status));
	} else {
		mp_w_str(&w, "code");
		mp_w_int(&w, WEXITSTATUS(status));
	}
	if (out) {
		mp_w_str(&w, "stdout");
		mp_w_bin(&w, out->data[0], out->len[0]);
		mp_w_str(&w, "stderr");
		mp_w_bin(&w, out->data[1], out->len[1]);
		mp_w_str(&w, "truncated");
		mp_w_bool(&w, out->truncated);
	}
	if (w.overflow)
		return errno = EMSGSIZE, -1;
	return send_msg(b, w.len, NULL, 0);
}

/* A chunk of a captured exec's output (stream 1 or 2). Never blocks: with the socket full it
 * fails with EAGAIN, and the caller keeps the chunk (and stops reading that pipe) until the
 * host has read. A blocked init could serve nobody. */
int send_output(int64_t id, int stream, const uint8_t *data, size_t len)
{
	static uint8_t b[MAX_PACKET];
	struct mp_w w = { b, sizeof(b), 0, false };

	mp_w_map(&w, 4);
	mp_w_str(&w, "t");
	mp_w_str(&w, "output");
	mp_w_str(&w, "id");
	mp_w_int(&w, id);
	mp_w_str(&w, "fd");
	mp_w_int(&w, stream);
	mp_w_str(&w, "data");
	mp_w_bin(&w, data, len);
	if (w.overflow)
		return errno = EMSGSIZE, -1;
	return send_packet(b, w.len, NULL, 0, MSG_DONTWAIT);
}

/* The index of `key`'s value in `map`: 0 if absent, -1 (err set) if not of `type`. */
static int64_t lookup(const struct mp_doc *d, uint32_t map, const char *key, int type,
		      const char *want, struct err *e)
{
	uint32_t v = mp_get(d, map, key);
	if (v && d->o[v].type != type)
		return seterr(e, EPROTO, "\"%s\" must be %s", key, want);
	return v;
}

int get_type(const struct mp_doc *d, uint32_t map, const char *key, int type, uint32_t *out,
	     struct err *e)
{
	const char *want = type == MP_ARRAY ? "an array" : type == MP_MAP ? "a map" : "bytes";
	int64_t v = lookup(d, map, key, type, want, e);
	if (v > 0)
		*out = (uint32_t)v;
	return v > 0 ? 1 : (int)v;
}

int get_int(const struct mp_doc *d, uint32_t map, const char *key, int64_t *out, struct err *e)
{
	int64_t v = lookup(d, map, key, MP_INT, "an integer", e);
	if (v > 0)
		*out = d->o[v].v.i;
	return v > 0 ? 1 : (int)v;
}

int get_bool(const struct mp_doc *d, uint32_t map, const char *key, bool *out, struct err *e)
{
	int64_t v = lookup(d, map, key, MP_BOOL, "a bool", e);
	if (v > 0)
		*out = d->o[v].v.b;
	return v > 0 ? 1 : (int)v;
}

char *dup_strobj(const struct mp_doc *d, uint32_t idx, const char *what, struct err *e)
{
	const struct mp_obj *o = &d->o[idx];
	char *s;
	if (o->type != MP_STR && o->type != MP_BIN) {
		seterr(e, EPROTO, "\"%s\" must be a string", what);
		return NULL;
	}
	/* A NUL inside would silently cut a path or argument short. */
	if (memchr(o->v.p, 0, o->n)) {
		seterr(e, EPROTO, "\"%s\" contains a NUL byte", what);
		return NULL;
	}
	s = arena_alloc(o->n + 1);
	if (!s) {
		seterr(e, ENOMEM, "out of memory");
		return NULL;
	}
	memcpy(s, o->v.p, o->n);
	s[o->n] = 0;
	return s;
}

int get_str(const struct mp_doc *d, uint32_t map, const char *key, char **out, struct err *e)
{
	uint32_t v = mp_get(d, map, key);
	if (!v)
		return 0;
	*out = dup_strobj(d, v, key, e);
	return *out ? 1 : -1;
}

int need_str(const struct mp_doc *d, uint32_t map, const char *key, char **out, struct err *e)
{
	int rc = get_str(d, map, key, out, e);
	return rc == 0 ? seterr(e, EPROTO, "missing \"%s\"", key) : rc;
}

int send_fd_reply(const char *t, int64_t id, int fd)
{
	WBUF(w, b);
	mp_w_map(&w, 2);
	mp_w_str(&w, "t");
	mp_w_str(&w, t);
	mp_w_str(&w, "id");
	mp_w_int(&w, id);
	return send_msg(b, w.len, &fd, 1);
}
