/* open requests: a file of the container opened by the init and passed to the host. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "init.h"

/* The open(2) flags of an open request's mode; -1 for an unknown mode. */
static int mode_flags(const char *mode)
{
	if (strcmp(mode, "r") == 0)
		return O_RDONLY;
	if (strcmp(mode, "w") == 0)
		return O_WRONLY | O_CREAT | O_TRUNC;
	if (strcmp(mode, "a") == 0)
		return O_WRONLY | O_CREAT | O_APPEND;
	if (strcmp(mode, "dir") == 0)
		return O_RDONLY | O_DIRECTORY;
	return -1;
}

/* Opens a path of the container, resolved inside its root, as a regular file (or a directory
 * with O_DIRECTORY); anything else (a FIFO, a device, a socket) is refused unopened or closed. */
static int open_in_container(const char *path, int flags, mode_t perm, struct err *e)
{
	autoclose int rootfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	autoclose int fd = -1;
	struct stat st;
	char eb[128];

	if (rootfd < 0)
		return seterr(e, errno, "open /: %s", strerror(errno));
	/* O_NONBLOCK keeps a FIFO swapped in after any check from blocking the init; the type is
	 * then checked on what was actually opened. */
	fd = resolve(rootfd, path, flags | O_NONBLOCK | O_NOCTTY, perm);
	if (fd < 0 && errno == ENXIO)
		return seterr(e, EINVAL, "not a regular file: \"%s\"", path);
	if (fd < 0)
		return seterr(e, errno, "%s: \"%s\"", lc_strerror(errno, eb, sizeof(eb)), path);
	if (fstat(fd, &st) < 0 ||
	    (flags & O_DIRECTORY ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)))
		return seterr(e, EINVAL, "not a regular file: \"%s\"", path);
	if ((flags & O_TRUNC && ftruncate(fd, 0) < 0) ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
		return seterr(e, errno, "open %s: %s", path, strerror(errno));
	return take_fd(&fd);
}

/* The writable layer's upper directory, for commit and diff: opened anew (a dup would share
 * the directory's read position with the init's fd and with every other request's). */
static int open_upper(struct req *r, struct err *e)
{
	autoclose int fd = -1;

	if (upper_fd < 0)
		return seterr(e, ENOENT, "this container's root has no writable layer of its own");
	if ((fd = openat(upper_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return seterr(e, errno, "open the writable layer: %s", strerror(errno));
	send_fd_reply("opened", r->id, fd);
	return 0;
}

int do_open(struct req *r, struct err *e)
{
	char *path = NULL, *mode = NULL;
	int64_t perm = 0644;
	autoclose int fd = -1;
	int flags;

	close_fds(r->fds, r->nfds);
	r->nfds = 0;
	if (need_str(&r->doc, 0, "path", &path, e) < 0 ||
	    need_str(&r->doc, 0, "mode", &mode, e) < 0 || get_int(&r->doc, 0, "perm", &perm, e) < 0)
		return -1;
	if (strcmp(mode, "upper") == 0)
		return open_upper(r, e);
	if ((flags = mode_flags(mode)) < 0)
		return seterr(e, EPROTO, "\"mode\" must be r, w, a, dir or upper");
	if (perm < 0 || perm > 07777)
		return seterr(e, EINVAL, "bad \"perm\"");
	if ((fd = open_in_container(path, flags, (mode_t)perm, e)) < 0)
		return -1;
	send_fd_reply("opened", r->id, fd);
	return 0;
}
