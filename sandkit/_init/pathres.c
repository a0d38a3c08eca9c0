/* Container paths are resolved by the kernel inside the container root (RESOLVE_IN_ROOT), so a
 * symlink in an image can never point a mount or a file at the host. Before pivot_root that is
 * the only thing standing between an image and the host: the init's own root is still the
 * host's, so a plain openat would follow an absolute symlink of the image out of the container.
 * Nothing in the init may open a container path any other way. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cleanup.h"
#include "init.h"

void fdpath(char buf[32], int fd)
{
	snprintf(buf, 32, "/proc/self/fd/%d", fd);
}

int resolve_at(int dirfd, const char *path, int oflags, mode_t mode, uint64_t rflags)
{
	struct open_how how = {
		.flags = (uint64_t)(oflags | O_CLOEXEC),
		.mode = (oflags & O_CREAT) ? mode : 0,
		.resolve = rflags,
	};
	int fd;
	do
		fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
	while (fd < 0 && (errno == EINTR || errno == EAGAIN));
	return fd;
}

int resolve(int rootfd, const char *path, int oflags, mode_t mode)
{
	return resolve_at(rootfd, path, oflags, mode, IN_ROOT);
}

/* Walks the path one prefix at a time: each existing prefix is resolved from the root (with
 * rflags, IN_ROOT or IN_ROOT_NO_SYMLINKS), and a missing component is created with mkdirat
 * relative to the already-resolved parent, which never follows a symlink in the component it
 * creates. */
int mkdir_p(int rootfd, const char *path, mode_t mode, uint64_t rflags)
{
	char buf[4096];
	size_t n = strlen(path);
	autoclose int cur = -1;
	int next;

	if (n >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, path, n + 1);
	cur = resolve_at(rootfd, "/", O_PATH | O_DIRECTORY, 0, rflags);
	if (cur < 0)
		return -1;
	for (size_t k = 0; k <= n; k++) {
		if (k < n && buf[k] != '/')
			continue;
		if (k == 0 || buf[k - 1] == '/')
			continue;
		size_t start = k;
		while (start > 0 && buf[start - 1] != '/')
			start--;
		char save = buf[k];
		buf[k] = 0;
		next = resolve_at(rootfd, buf, O_PATH | O_DIRECTORY, 0, rflags);
		if (next < 0 && errno == ENOENT) {
			if (mkdirat(cur, buf + start, mode) < 0 && errno != EEXIST)
				return -1;
			next = resolve_at(rootfd, buf, O_PATH | O_DIRECTORY, 0, rflags);
		}
		buf[k] = save;
		if (next < 0)
			return -1;
		close(cur);
		cur = next;
	}
	return take_fd(&cur);
}

/* An empty file to bind a file mount onto; an existing entry is simply resolved. */
int make_file(int rootfd, const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	autoclose int dfd = -1;
	int fd;

	fd = resolve(rootfd, path, O_PATH, 0);
	if (fd >= 0 || errno != ENOENT)
		return fd;
	if (!slash || (size_t)(slash - path) >= sizeof(dir)) {
		errno = EINVAL;
		return -1;
	}
	memcpy(dir, path, slash - path);
	dir[slash - path] = 0;
	dfd = mkdir_p(rootfd, dir[0] ? dir : "/", 0755, IN_ROOT);
	if (dfd < 0)
		return -1;
	fd = openat(dfd, slash + 1, O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0 && errno != EEXIST)
		return -1;
	if (fd >= 0)
		close(fd);
	return resolve(rootfd, path, O_PATH, 0);
}
