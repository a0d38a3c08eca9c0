/* Shared declarations of the container init (PID 1 of every sandkit container). */
#ifndef SK_INIT_H
#define SK_INIT_H

#include <linux/openat2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mpack.h"

#define CTRL_FD 3
#define MAX_PACKET 65536
#define MAX_FDS 16
#define PROTO_VERSION 1

/* One received request: the packet bytes, its decoded form and the fds that came with it. */
struct req {
	uint8_t buf[MAX_PACKET + 1];
	size_t len;
	struct mp_doc doc;
	int fds[MAX_FDS];
	int nfds;
	int64_t id;
};

/* A failure to report: errno plus a plain-words message (and an exec error kind). */
struct err {
	int no;
	const char *kind;
	char msg[512];
};

int seterr(struct err *e, int no, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* "No such file or directory" -> "no such file or directory", as Go tools print errors. */
const char *lc_strerror(int no, char *buf, size_t len);

/* proto.c */
void arena_reset(void);
void *arena_alloc(size_t n);
int recv_req(struct req *r); /* 1 = packet, 0 = EOF, -1 = truncated/bad (err in r->doc.err) */
void close_fds(int *fds, int n);
int send_msg(const uint8_t *buf, size_t len, const int *fds, int nfds);
int send_error(int64_t id, const struct err *e);
int send_simple(const char *t, int64_t id);
int send_fd_reply(const char *t, int64_t id, int fd);
int send_started(int64_t id, pid_t pid, int fd);
/* What a captured exec printed and the host has not been sent yet: stdout, stderr. */
struct output {
	const uint8_t *data[2];
	size_t len[2];
	bool truncated;
};
int send_exit(int64_t id, int status, const struct output *out); /* out: NULL unless captured */
int send_output(int64_t id, int stream, const uint8_t *data, size_t len);
int send_ready(void);

/* Typed accessors for request fields: each returns 0 if absent (leaving *out alone), 1 if
 * present and of the right type, -1 (err filled, EPROTO) on a wrong type. */
int get_int(const struct mp_doc *d, uint32_t map, const char *key, int64_t *out, struct err *e);
int get_bool(const struct mp_doc *d, uint32_t map, const char *key, bool *out, struct err *e);
int get_str(const struct mp_doc *d, uint32_t map, const char *key, char **out, struct err *e);
int need_str(const struct mp_doc *d, uint32_t map, const char *key, char **out, struct err *e);
int get_type(const struct mp_doc *d, uint32_t map, const char *key, int type, uint32_t *out,
	     struct err *e);
char *dup_strobj(const struct mp_doc *d, uint32_t idx, const char *what, struct err *e);

/* pathres.c: every container path resolved inside root, never escaping it. IN_ROOT follows the
 * image's symlinks as if the root were "/" (what Docker does for mount targets); the standard
 * mount points (/proc, /dev, /sys) and what the init opens in them take no symlink at all. */
#define IN_ROOT (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
#define IN_ROOT_NO_SYMLINKS (IN_ROOT | RESOLVE_NO_SYMLINKS)
int resolve_at(int dirfd, const char *path, int oflags, mode_t mode, uint64_t rflags);
int resolve(int rootfd, const char *path, int oflags, mode_t mode); /* resolve_at(IN_ROOT) */
int mkdir_p(int rootfd, const char *path, mode_t mode, uint64_t rflags);
int make_file(int rootfd, const char *path);
void fdpath(char buf[32], int fd);

/* overlay.c */
struct overlay {
	char **lower; /* topmost first */
	uint32_t n;
	const char *scratch; /* holds upper/ and work/ */
	bool userxattr;
};
int mount_overlay(const struct overlay *o, const char *target, struct err *e);

/* net.c: the container's loopback and the interfaces the host moves into its netns */
int loopback_up(struct err *e);
int netif_setup(const struct mp_doc *d, uint32_t map, struct err *e); /* setup's "net" */
int net_keep_socket(void); /* at the end of set-up, for the netif requests */
int do_netif(struct req *r, struct err *e);

/* files.c: the setup's "files", written into the new root before anything is mounted in it */
int write_files(int rootfd, const struct mp_doc *d, uint32_t arr, struct err *e);

/* volume.c: Docker's copy-up of a fresh volume (the image's tree at dst into the empty host
 * directory volume, serialised by a flock on the host file lock), before the volume is mounted
 * there */
int volume_copyup(int rootfd, const char *dst, const char *volume, const char *lock, struct err *e);

/* rootfs.c */
int setup_container(struct req *r, struct err *e);
/* A container set up without a name (a spare, named when taken) keeps its hostname sysctl
 * open for writing, opened before /proc/sys became read-only: renaming it then needs no
 * sethostname, which the container's seccomp profile may forbid. -1 otherwise. */
extern int hostname_fd;
/* An O_PATH fd on the overlay upper directory (the container's writable layer), for the host's
 * "upper" open requests (commit, diff); -1 for a root without one. */
extern int upper_fd;

/* confine.c: the container's capabilities and seccomp profile ("caps", "seccomp" of the setup message),
 * applied to the init itself so that no exec pays for them and every process inherits them:
 * confine_prepare keeps them, confine_now applies them (once; later calls do nothing). */
int confine_prepare(const struct mp_doc *d, struct err *e);
int confine_now(struct err *e);
/* child.c: whether the container's user namespace denies setgroups (rootless with a single
 * mapping), which execs then cannot change their groups in. Read once by the init at the end of
 * set-up, before any process of the container exists (one with CAP_SYS_ADMIN could mount over
 * /proc later), and inherited by every exec child. */
extern bool setgroups_deny;
void read_setgroups_policy(void);

/* exec.c: starts the process and returns at once: its `started` (or `error`) reply follows when its
 * error pipe says how the start ended (starting_*), never blocking the init meanwhile. */
int do_exec(struct req *r, struct err *e);
/* proctable.c */
struct pollfd;
size_t starting_count(void);
int starting_fill(struct pollfd *pf);               /* at most starting_count() */
int starting_ready(const struct pollfd *pf, int n); /* -1: the host could not be told */
int starting_reaped(pid_t pid);                     /* before pid's exit is handled */
int64_t tracked_take(pid_t pid);                    /* exec id of pid, untracked; 0 if not ours */
/* signal.c */
int do_signal(struct req *r, struct err *e);
/* open.c */
int do_open(struct req *r, struct err *e);
/* connect.c: sockets connected to the container's own loopback, for published ports */
int do_connect(struct req *r, struct err *e);
size_t connecting_count(void);
int connecting_fill(struct pollfd *pf);               /* at most connecting_count() */
int connecting_ready(const struct pollfd *pf, int n); /* -1: the host could not be told */

/* capture.c: execs whose output the init collects (stdio "capture") */
int capture_new(int64_t id, pid_t pid, int64_t limit, const int fds[2]);
size_t capture_count(void);
int capture_exited(int64_t id, int status, bool *handled); /* sends exit once output ended */
int capture_killed(int64_t id);                            /* stop waiting for end of output */
pid_t capture_pid(int64_t id);                             /* 0: no such capture */
size_t capture_pipes(int64_t id, ino_t ino[2]);            /* inodes of the pipes still open */
bool capture_backlog(void);                                /* output waits for socket room */
int capture_fill(struct pollfd *pf);                       /* at most 2 * capture_count() */
int capture_ready(const struct pollfd *pf, int n);
void capture_flush(void);

#endif
