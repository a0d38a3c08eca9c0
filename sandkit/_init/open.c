/* open requests: a file of the container opened by the init and passed to the host. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "init.h"

int do_open(struct req *r, struct err *e)
{
	char *path = NULL, *mode = NULL;
	int64_t perm = 0644;
	int flags, fd, rootfd;
	struct stat st;

	close_fds(r->fds, r->nfds);
	r->nfds = 0;
	if (need_str(&r->doc, 0, "path", &path, e) < 0 ||
	    need_str(&r->doc, 0, "mode", &mode, e) < 0 || get_int(&r->doc, 0, "perm", &perm, e) < 0)
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
	if (fstat(fd, &st) < 0 ||
	    (flags & O_DIRECTORY ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))) {
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
