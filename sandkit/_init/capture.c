/* Captured execs: the init reads a process's stdout and stderr itself and sends what they
 * printed along with the exit event. A short command then costs the host one packet out and
 * one back, instead of three pipes, a start event, two ends of stream and an exit event. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "init.h"

/* Bytes kept per stream before they go to the host as an `output` event. The rest of both
 * streams must fit in one exit packet. */
#define CHUNK (28 * 1024)

struct stream {
	int fd;     /* the pipe's read end; -1 after its end */
	size_t len; /* bytes waiting in buf */
	uint8_t buf[CHUNK];
};

struct capture {
	struct capture *next;
	int64_t id;
	pid_t pid;     /* kept after the process is reaped: its session still names what it left */
	int64_t limit; /* bytes kept per stream; < 0: all */
	uint64_t kept[2];
	bool truncated, reaped, killed;
	int status;
	struct stream s[2]; /* stdout, stderr */
};

static struct capture *captures;
static size_t ncaptures;

/* Which stream each poll slot of the last capture_fill stands for. */
struct slot {
	struct capture *c;
	int k;
};
static struct slot *slots;
static size_t nslots_cap;

int capture_new(int64_t id, pid_t pid, int64_t limit, const int fds[2])
{
	struct capture *c = calloc(1, sizeof(*c));
	if (!c)
		return -1;
	c->id = id;
	c->pid = pid;
	c->limit = limit;
	for (int k = 0; k < 2; k++)
		c->s[k].fd = fds[k];
	c->next = captures;
	captures = c;
	ncaptures++;
	return 0;
}

size_t capture_count(void)
{
	return ncaptures;
}

static struct capture *find(int64_t id)
{
	for (struct capture *c = captures; c; c = c->next)
		if (c->id == id)
			return c;
	return NULL;
}

static void forget(struct capture *c)
{
	for (struct capture **p = &captures; *p; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			break;
		}
	for (int k = 0; k < 2; k++)
		if (c->s[k].fd >= 0)
			close(c->s[k].fd);
	free(c);
	ncaptures--;
}

/* Counts n new bytes at the end of stream k's buffer against the limit; what is over it is
 * read (so the writer never blocks) and dropped. */
static void keep(struct capture *c, int k, size_t n)
{
	size_t room = n;
	if (c->limit >= 0)
		room = c->kept[k] >= (uint64_t)c->limit ? 0 : (uint64_t)c->limit - c->kept[k];
	if (n > room) {
		n = room;
		c->truncated = true;
	}
	c->s[k].len += n;
	c->kept[k] += n;
}

/* Reads until the pipe is empty, at its end, or the buffer is full. */
static void drain(struct capture *c, int k)
{
	struct stream *s = &c->s[k];
	while (s->fd >= 0 && s->len < CHUNK) {
		ssize_t n = read(s->fd, s->buf + s->len, CHUNK - s->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			close(s->fd);
			s->fd = -1;
			return;
		}
		keep(c, k, (size_t)n);
	}
}

static void flush(struct capture *c, int k)
{
	struct stream *s = &c->s[k];
	if (s->len == CHUNK && send_output(c->id, k + 1, s->buf, s->len) == 0)
		s->len = 0;
}

/* The exit event, once the process is reaped and both streams are at their end (or it was
 * killed: then whatever it left running may not hold the exec open). */
static int finish(struct capture *c)
{
	struct output out = { .truncated = c->truncated };
	int rc;

	if (!c->reaped)
		return 0;
	if (c->killed)
		for (int k = 0; k < 2; k++) {
			drain(c, k);
			if (c->s[k].fd >= 0) {
				close(c->s[k].fd);
				c->s[k].fd = -1;
			}
		}
	if (c->s[0].fd >= 0 || c->s[1].fd >= 0)
		return 0;
	for (int k = 0; k < 2; k++) {
		out.data[k] = c->s[k].buf;
		out.len[k] = c->s[k].len;
	}
	rc = send_exit(c->id, c->status, &out);
	forget(c);
	return rc;
}

int capture_exited(int64_t id, int status, bool *handled)
{
	struct capture *c = find(id);
	*handled = c != NULL;
	if (!c)
		return 0;
	c->reaped = true;
	c->status = status;
	return finish(c);
}

pid_t capture_pid(int64_t id)
{
	struct capture *c = find(id);
	return c ? c->pid : 0;
}

size_t capture_pipes(int64_t id, ino_t ino[2])
{
	struct capture *c = find(id);
	size_t n = 0;
	struct stat st;

	for (int k = 0; c && k < 2; k++)
		if (c->s[k].fd >= 0 && fstat(c->s[k].fd, &st) == 0)
			ino[n++] = st.st_ino;
	return n;
}

int capture_killed(int64_t id)
{
	struct capture *c = find(id);
	if (!c)
		return 0;
	c->killed = true;
	return finish(c);
}

bool capture_backlog(void)
{
	for (struct capture *c = captures; c; c = c->next)
		if (c->s[0].len == CHUNK || c->s[1].len == CHUNK)
			return true;
	return false;
}

int capture_fill(struct pollfd *pf)
{
	int n = 0;

	if (nslots_cap < 2 * ncaptures) {
		struct slot *grown = realloc(slots, 2 * ncaptures * sizeof(*slots));
		if (!grown)
			return -1;
		slots = grown;
		nslots_cap = 2 * ncaptures;
	}
	for (struct capture *c = captures; c; c = c->next)
		for (int k = 0; k < 2; k++)
			if (c->s[k].fd >= 0 && c->s[k].len < CHUNK) {
				pf[n] = (struct pollfd){ c->s[k].fd, POLLIN, 0 };
				slots[n++] = (struct slot){ c, k };
			}
	return n;
}

int capture_ready(const struct pollfd *pf, int n)
{
	for (int i = 0; i < n; i++)
		if (pf[i].revents) {
			drain(slots[i].c, slots[i].k);
			flush(slots[i].c, slots[i].k);
		}
	/* Finished only now: finishing frees a capture that later slots may point at. */
	for (struct capture *c = captures, *next; c; c = next) {
		next = c->next;
		if (c->reaped && c->s[0].fd < 0 && c->s[1].fd < 0 && finish(c) < 0)
			return -1;
	}
	return 0;
}

void capture_flush(void)
{
	for (struct capture *c = captures; c; c = c->next)
		for (int k = 0; k < 2; k++)
			flush(c, k);
}
