/* Scope-bound fds and buffers (gcc and clang's cleanup attribute): a variable declared
 * `autoclose int fd = ...` is closed, `autofree char *p = ...` freed, on every way out of its
 * scope, so an early return cannot leak it. A function that hands one on takes it out of the
 * variable with take_fd / take_ptr, which leave -1 / NULL behind. The cleanups keep errno: a
 * caller may still be about to report it. */
#ifndef SK_CLEANUP_H
#define SK_CLEANUP_H

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static inline void close_fd_ref(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

static inline void free_ref(void *p)
{
	int saved = errno;
	free(*(void **)p);
	errno = saved;
}

static inline void closedir_ref(DIR **dir)
{
	if (*dir) {
		int saved = errno;
		closedir(*dir);
		errno = saved;
	}
}

#define autoclose __attribute__((cleanup(close_fd_ref)))
#define autofree __attribute__((cleanup(free_ref)))
#define autoclosedir __attribute__((cleanup(closedir_ref)))

static inline int take_fd(int *fd)
{
	int taken = *fd;
	*fd = -1;
	return taken;
}

static inline void *take_ptr_ref(void **p)
{
	void *taken = *p;
	*p = NULL;
	return taken;
}
#define take_ptr(p) take_ptr_ref((void **)&(p))

#endif
