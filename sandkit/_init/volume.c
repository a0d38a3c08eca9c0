/* Docker's copy-up of a named volume: the first time an empty volume is mounted at a path where
 * the image has a directory, that directory's tree is copied into the volume (owners, modes,
 * times but those of directories that receive entries, symlinks, hard links within the tree), and the volume's root takes the owner and mode
 * of the image's directory. Runs during set-up, before the volume is mounted over the path.
 *
 * The volume is host storage another container may be using at the same time, and the init is
 * still in the host's file system view (as real root in root mode): every step goes by fds and
 * single names created with O_EXCL / O_NOFOLLOW, so nothing ever leads out of the volume. The
 * image's side is read the same way, from a directory resolved inside the container's root.
 * Device nodes and sockets are not copied (the volume is mounted nodev; Docker would copy
 * them), nor extended attributes.
 *
 * Only the image's own tree is copied, as Docker copies from the image's layers: the init has
 * mounted /proc, /sys, /dev and more by now, and a volume over one of them, or over a parent of
 * one, would otherwise be filled from the live procfs, the host's sysfs or the init's /dev, read
 * as real root past the container's masked paths (/proc/kcore). What is on another mount than
 * the container's root is left out. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "init.h"
#include "mountid.h"

/* As deep as layers may nest (the host's unpacker allows as much) is not needed here: images
 * put data directories a few levels deep. Deeper trees fail the start with a clear error. */
#define COPY_MAX_DEPTH 128
/* Files with several links whose first copy is remembered, to link the others to it. */
#define COPY_MAX_LINKS 256

struct linked {
	dev_t dev;
	ino_t ino;
	int fd; /* O_PATH fd of the copy */
};

struct copy {
	struct linked links[COPY_MAX_LINKS];
	size_t nlinks;
	uint64_t mnt;    /* the mount of the container's root: the image's tree */
	const char *dst; /* the mount target, for messages */
	struct err *e;
};

static uint8_t copy_buf[1 << 16];

static int fail(struct copy *cp, const char *what, const char *name)
{
	return seterr(cp->e, errno, "fill volume at %s from the image: %s %s: %s", cp->dst, what,
		      name, strerror(errno));
}

/* A file owned by an id the container's user namespace does not map (rootless) shows as the
 * overflow id, which cannot be given: its copy keeps the container root's ownership. */
static int chown_fd(int fd, const struct stat *st)
{
	if (fchownat(fd, "", st->st_uid, st->st_gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 &&
	    errno != EINVAL)
		return -1;
	return 0;
}

/* Owner first: chown clears the setuid and setgid bits that chmod then sets. */
static int set_meta(int fd, const struct stat *st, bool times)
{
	char path[32];
	struct timespec ts[2] = { st->st_atim, st->st_mtim };

	fdpath(path, fd);
	if (chown_fd(fd, st) < 0 || chmod(path, st->st_mode & 07777) < 0)
		return -1;
	return times ? utimensat(AT_FDCWD, path, ts, 0) : 0;
}

/* 1 if fd is on the image's own tree, 0 if on a mount over it (left out), -1 on error. */
static int in_image(struct copy *cp, int fd, const char *name)
{
	uint64_t mnt;

	if (mount_id(fd, &mnt) < 0)
		return fail(cp, "find the mount of", name);
	return mnt == cp->mnt;
}

static int copy_data(int in, int out)
{
	for (;;) {
		ssize_t n = read(in, copy_buf, sizeof(copy_buf));
		if (n <= 0)
			return (int)n;
		for (ssize_t done = 0; done < n;) {
			ssize_t w = write(out, copy_buf + done, (size_t)(n - done));
			if (w < 0)
				return -1;
			done += w;
		}
	}
}

static struct linked *find_link(struct copy *cp, const struct stat *st)
{
	for (size_t k = 0; k < cp->nlinks; k++)
		if (cp->links[k].dev == st->st_dev && cp->links[k].ino == st->st_ino)
			return &cp->links[k];
	return NULL;
}

static void remember_link(struct copy *cp, const struct stat *st, int to, const char *name)
{
	if (st->st_nlink < 2 || cp->nlinks == COPY_MAX_LINKS)
		return; /* past the table, further links become copies of their own */
	int fd = openat(to, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0)
		cp->links[cp->nlinks++] = (struct linked){ st->st_dev, st->st_ino, fd };
}

static int copy_file(struct copy *cp, int from, int to, const char *name, const struct stat *st)
{
	autoclose int in = openat(from, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
	autoclose int out = -1;

	int own;

	if (in < 0)
		return fail(cp, "open", name);
	if ((own = in_image(cp, in, name)) <= 0)
		return own; /* a file mounted over the image's (as /etc/hosts): not the image's */
	out = openat(to, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0 || copy_data(in, out) < 0)
		return fail(cp, "copy", name);
	if (set_meta(out, st, true) < 0)
		return fail(cp, "set owner, mode or times of", name);
	return 0;
}

static int copy_symlink(struct copy *cp, int from, int to, const char *name, const struct stat *st)
{
	char target[4096];
	struct timespec ts[2] = { st->st_atim, st->st_mtim };
	ssize_t n = readlinkat(from, name, target, sizeof(target) - 1);
	autoclose int fd = -1;

	if (n < 0)
		return fail(cp, "read symlink", name);
	target[n] = 0;
	if (symlinkat(target, to, name) < 0)
		return fail(cp, "create symlink", name);
	fd = openat(to, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || chown_fd(fd, st) < 0 || utimensat(to, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return fail(cp, "set owner or times of symlink", name);
	return 0;
}

static int copy_fifo(struct copy *cp, int to, const char *name, const struct stat *st)
{
	autoclose int fd = -1;

	if (mkfifoat(to, name, 0600) < 0)
		return fail(cp, "create fifo", name);
	fd = openat(to, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || set_meta(fd, st, true) < 0)
		return fail(cp, "set owner, mode or times of fifo", name);
	return 0;
}

/* A directory stream of its own for directory fd: a dup would share (and move) fd's offset. */
static DIR *open_stream(int fd)
{
	int own = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = own < 0 ? NULL : fdopendir(own);

	if (own >= 0 && dir == NULL)
		close(own);
	return dir;
}

static int copy_tree(struct copy *cp, int from, int to, int depth);

static int copy_dir(struct copy *cp, int from, int to, const char *name, const struct stat *st,
		    int depth)
{
	autoclose int in = openat(from, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	autoclose int out = -1;

	int own;

	if (in < 0)
		return fail(cp, "open directory", name);
	if ((own = in_image(cp, in, name)) <= 0)
		return own; /* a mount point: what is mounted there is not the image's */
	if (mkdirat(to, name, 0700) < 0)
		return fail(cp, "create directory", name);
	out = openat(to, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (out < 0)
		return fail(cp, "open directory", name);
	/* Before the content, as Docker's copy-up does: a directory that receives entries ends with
	 * the time of the copy, an empty one keeps the image's (tests/cli/test_volume_parity.py).
	 * A mode that forbids writing does not stop the init, root over what it made. */
	if (set_meta(out, st, true) < 0)
		return fail(cp, "set owner, mode or times of directory", name);
	return copy_tree(cp, in, out, depth + 1);
}

static int copy_entry(struct copy *cp, int from, int to, const char *name, int depth)
{
	struct stat st;
	struct linked *first;
	char path[32];

	if (fstatat(from, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return fail(cp, "stat", name);
	if (S_ISDIR(st.st_mode))
		return copy_dir(cp, from, to, name, &st, depth);
	if (st.st_nlink > 1 && (first = find_link(cp, &st)) != NULL) {
		fdpath(path, first->fd);
		if (linkat(AT_FDCWD, path, to, name, AT_SYMLINK_FOLLOW) < 0)
			return fail(cp, "link", name);
		return 0;
	}
	if (S_ISREG(st.st_mode)) {
		if (copy_file(cp, from, to, name, &st) < 0)
			return -1;
	} else if (S_ISLNK(st.st_mode)) {
		if (copy_symlink(cp, from, to, name, &st) < 0)
			return -1;
	} else if (S_ISFIFO(st.st_mode)) {
		if (copy_fifo(cp, to, name, &st) < 0)
			return -1;
	} else {
		return 0; /* device nodes and sockets: see the top of the file */
	}
	remember_link(cp, &st, to, name);
	return 0;
}

static int copy_tree(struct copy *cp, int from, int to, int depth)
{
	autoclosedir DIR *dir = NULL;
	struct dirent *ent;

	if (depth > COPY_MAX_DEPTH)
		return seterr(cp->e, ELOOP,
			      "fill volume at %s from the image: the image's tree there is deeper "
			      "than %d directories; mount the volume elsewhere",
			      cp->dst, COPY_MAX_DEPTH);
	dir = open_stream(from);
	if (dir == NULL)
		return fail(cp, "read directory", "");
	while ((errno = 0, ent = readdir(dir)) != NULL) {
		if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
			continue;
		if (copy_entry(cp, from, to, ent->d_name, depth) < 0)
			return -1;
	}
	return errno ? fail(cp, "read directory", "") : 0;
}

/* Empties directory fd (a failed copy-up: the next start tries again on an empty volume). The
 * init is root in the container's user namespace and owns what it copied, so modes that forbid
 * writing do not stop it. Best effort: the start fails with the copy's error anyway. */
static void empty_dir(int fd, int depth)
{
	autoclosedir DIR *dir = open_stream(fd);
	struct dirent *ent;

	if (dir == NULL)
		return;
	while ((ent = readdir(dir)) != NULL) {
		if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
			continue;
		if (unlinkat(fd, ent->d_name, 0) == 0 || errno != EISDIR || depth > COPY_MAX_DEPTH)
			continue;
		autoclose int sub = openat(fd, ent->d_name,
					   O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub >= 0)
			empty_dir(sub, depth + 1);
		unlinkat(fd, ent->d_name, AT_REMOVEDIR);
	}
}

/* 1 if directory fd holds nothing, 0 if it holds something, -1 on error. */
static int dir_empty(int fd)
{
	autoclosedir DIR *dir = open_stream(fd);
	struct dirent *ent;

	if (dir == NULL)
		return -1;
	while ((errno = 0, ent = readdir(dir)) != NULL)
		if (strcmp(ent->d_name, ".") != 0 && strcmp(ent->d_name, "..") != 0)
			return 0;
	return errno ? -1 : 1;
}

int volume_copyup(int rootfd, const char *dst, const char *volume, const char *lock, struct err *e)
{
	struct copy *cp = NULL;
	struct stat st;
	autoclose int image = -1;
	autoclose int vol = open(volume, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	autoclose int lockfd = open(lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	int empty, rc, own = 0;

	if (vol < 0)
		return seterr(e, errno, "open volume %s: %s", volume, strerror(errno));
	if (lockfd < 0)
		return seterr(e, errno, "open volume lock %s: %s", lock, strerror(errno));
	image = resolve(rootfd, dst, O_RDONLY | O_DIRECTORY, 0);
	if (image < 0)
		return errno == ENOENT || errno == ENOTDIR ?
			       0 :
			       seterr(e, errno, "open %s in the image: %s", dst, strerror(errno));
	/* Two containers starting on one fresh volume: the first fills it, the second finds it
	 * full. A file beside the volume, out of containers' reach (one could flock the volume's
	 * root it mounts and stall every start); released when lockfd is closed. */
	if (flock(lockfd, LOCK_EX) < 0)
		return seterr(e, errno, "lock volume %s: %s", volume, strerror(errno));
	empty = dir_empty(vol);
	if (empty <= 0)
		return empty < 0 ? seterr(e, errno, "read volume %s: %s", volume, strerror(errno)) :
				   0;
	cp = calloc(1, sizeof(*cp));
	if (cp == NULL || fstat(image, &st) < 0)
		return seterr(e, errno ? errno : ENOMEM, "fill volume at %s: %s", dst,
			      strerror(errno));
	cp->dst = dst;
	cp->e = e;
	if (mount_id(rootfd, &cp->mnt) < 0)
		rc = fail(cp, "find the mount of", "the container's root");
	else if ((rc = own = in_image(cp, image, dst)) == 1)
		rc = copy_tree(cp, image, vol, 0);
	if (rc == 0 && own == 1 && set_meta(vol, &st, false) < 0)
		rc = fail(cp, "set owner or mode of", "the volume");
	if (rc < 0)
		empty_dir(vol, 0);
	for (size_t k = 0; k < cp->nlinks; k++)
		close(cp->links[k].fd);
	free(cp);
	return rc;
}
