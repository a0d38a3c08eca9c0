/* Resolves an exec's `user` string in the container's own /etc/passwd and /etc/group. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "init.h"
#include "user.h"

#define DB_MAX (4 << 20)

/* The files belong to the container and may be anything: a FIFO must not block us, a huge file
 * must not eat memory. A missing or unreadable file is an empty database. */
static char *slurp(const char *path)
{
	struct stat st;
	char *buf;
	ssize_t n;
	size_t len = 0;
	autoclose int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > DB_MAX ||
	    !(buf = malloc((size_t)st.st_size + 1)))
		return NULL;
	while (len < (size_t)st.st_size && (n = read(fd, buf + len, (size_t)st.st_size - len)) > 0)
		len += (size_t)n;
	buf[len] = 0;
	return buf;
}

/* Splits one line into at most `max` ':'-separated fields; returns the line after it. */
static char *fields(char *line, char **f, int max, int *nf)
{
	char *end = strchr(line, '\n');
	if (end)
		*end++ = 0;
	*nf = 0;
	for (char *p = line; *nf < max;) {
		f[(*nf)++] = p;
		p = strchr(p, ':');
		if (!p)
			break;
		*p++ = 0;
	}
	return end;
}

static bool parse_id(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;
	if (!*s || strspn(s, "0123456789") != strlen(s))
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || v >= 0xffffffffUL)
		return false;
	*out = (unsigned)v;
	return true;
}

static bool member(char *list, const char *name)
{
	for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ","))
		if (strcmp(tok, name) == 0)
			return true;
	return false;
}

/* Like initgroups(3): the primary gid leads the supplementary list. */
static void add_group(struct user *u, gid_t g)
{
	for (int k = 0; k < u->ngroups; k++)
		if (u->groups[k] == g)
			return;
	if (u->ngroups < USER_MAX_GROUPS)
		u->groups[u->ngroups++] = g;
}

int resolve_user(const char *spec, struct user *u, struct err *e)
{
	char buf[1024], *grp, *db, *line, *f[7];
	unsigned id;
	bool by_id, found = false;
	int nf;

	memset(u, 0, sizeof(*u));
	u->home = "/";
	snprintf(buf, sizeof(buf), "%s", spec && *spec ? spec : "0");
	grp = strchr(buf, ':');
	if (grp)
		*grp++ = 0;
	by_id = parse_id(buf, &id);
	if (by_id)
		u->uid = id;

	db = slurp("/etc/passwd");
	for (line = db; line && *line && buf[0];) {
		line = fields(line, f, 7, &nf);
		if (nf < 7 || !parse_id(f[2], &u->uid) || !parse_id(f[3], &u->gid))
			continue;
		if (by_id ? u->uid == id : strcmp(f[0], buf) == 0) {
			found = true;
			/* From the request arena, of which this child has its own copy: gone at its
			 * execve, never in the init's memory. */
			char *home = arena_alloc(strlen(f[5]) + 1);
			if (home)
				u->home = strcpy(home, f[5]);
			snprintf(u->name, sizeof(u->name), "%s", f[0]);
			break;
		}
	}
	free(db);
	if (!found) {
		if (buf[0] && !by_id)
			return seterr(e, ENOENT,
				      "unable to find user %s: no matching entries in passwd file",
				      buf);
		u->uid = by_id ? id : 0;
		u->gid = 0;
	}

	if (grp && *grp) {
		/* An explicit group replaces the primary gid and the supplementary list. */
		if (parse_id(grp, &u->gid)) {
			add_group(u, u->gid);
			return 0;
		}
		found = false;
		db = slurp("/etc/group");
		for (line = db; line && *line;) {
			line = fields(line, f, 4, &nf);
			if (nf >= 3 && strcmp(f[0], grp) == 0 && parse_id(f[2], &u->gid)) {
				found = true;
				break;
			}
		}
		free(db);
		if (!found)
			return seterr(e, ENOENT,
				      "unable to find group %s: no matching entries in group file",
				      grp);
		add_group(u, u->gid);
		return 0;
	}
	add_group(u, u->gid);
	if (!u->name[0])
		return 0;
	db = slurp("/etc/group");
	for (line = db; line && *line && u->ngroups < USER_MAX_GROUPS;) {
		unsigned gid;
		line = fields(line, f, 4, &nf);
		if (nf == 4 && parse_id(f[2], &gid) && member(f[3], u->name))
			add_group(u, gid);
	}
	free(db);
	return 0;
}
