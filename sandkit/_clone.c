/* sandkit/_clone.c: clone3 the container init into new namespaces, then exec it.
 *
 * Called through cffi from a multi-threaded Python process. The child is a fork-like copy
 * (no CLONE_VM) of the calling thread only: any lock another thread held (malloc, stdio, the
 * GIL, glibc's own) stays locked forever in it. So until execveat the child makes only raw
 * system calls through syscall(2); in particular it never calls glibc's setresuid(), which
 * would try to signal the parent's other threads and hang.
 *
 * The child's contract with the init (docs/protocol.md): fd 3 is the control socket, fds 0,
 * 1 and 2 are /dev/null (so no host terminal or pipe reaches the container, and the init's
 * own first open() never lands on a stdio number), no other fd is open, the signal mask is
 * empty and every disposition is the default, the environment is what the caller passed
 * (sandkit passes none), and in user-namespace mode the uids and gids are all 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "_clone.h"

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

/* The kernel's own struct sigaction for rt_sigaction (x86_64 and aarch64 layout): glibc's
 * differs (its mask is 128 bytes), and the raw syscall wants the kernel's. */
struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    uint64_t mask;
};

#define KERNEL_SIGSET_SIZE 8 /* bytes of a kernel sigset_t: 64 signals */
#define KERNEL_NSIG 64
#define CONTROL_FD 3
#define FIRST_FREE_FD 4 /* everything from here up is closed in the child */

/* The namespaces every container gets; user and network ones are optional. */
static const uint64_t ALWAYS_NEW =
    CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;

/* ---- the child: raw syscalls only ------------------------------------------------------- */

static void sys_close(int fd)
{
    syscall(SYS_close, fd);
}

/* Reports {stage, errno} to the parent and exits. Never returns. */
__attribute__((noreturn)) static void child_fail(int err_fd, enum sk_stage stage)
{
    struct sk_child_error e = {.stage = stage, .err = errno};

    syscall(SYS_write, err_fd, &e, sizeof e);
    for (;;)
        syscall(SYS_exit_group, 127);
}

/* Blocks until the parent has written the id maps (and done anything else it needs with
 * our pid) and sends the go byte. EOF means the parent gave up: leave without a report. */
static void wait_for_go(int go_fd, int err_fd)
{
    char byte;
    long n;

    do
        n = syscall(SYS_read, go_fd, &byte, 1);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        child_fail(err_fd, SK_STAGE_WAIT);
    if (n == 0)
        for (;;)
            syscall(SYS_exit_group, 127);
    sys_close(go_fd);
}

/* In a new user namespace we start with the overflow ids until we switch to the mapped 0.
 * setgroups fails with EPERM when the parent wrote "deny" to /proc/<pid>/setgroups (the
 * unprivileged case); the group list is then already empty of anything that matters. */
static void become_root(int err_fd)
{
    if (syscall(SYS_setgroups, 0, NULL) < 0 && errno != EPERM)
        child_fail(err_fd, SK_STAGE_IDS);
    if (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setresuid, 0, 0, 0) < 0)
        child_fail(err_fd, SK_STAGE_IDS);
}

/* close_range over [first, last], a no-op for an empty range. */
static int close_between(unsigned int first, unsigned int last)
{
    if (first > last)
        return 0;
    return (int)syscall(SYS_close_range, first, last, 0);
}

/* Closes every fd from FIRST_FREE_FD up except the two given (both >= FIRST_FREE_FD). */
static int close_all_but(int keep_a, int keep_b)
{
    unsigned int lo = (unsigned int)(keep_a < keep_b ? keep_a : keep_b);
    unsigned int hi = (unsigned int)(keep_a < keep_b ? keep_b : keep_a);

    if (close_between(FIRST_FREE_FD, lo - 1) < 0 || close_between(lo + 1, hi - 1) < 0)
        return -1;
    return close_between(hi + 1, ~0U);
}

/* Duplicates fd to the lowest free number >= FIRST_FREE_FD, close-on-exec, so it cannot be
 * overwritten when the control socket moves to fd 3 and goes away by itself at exec. */
static int dup_high(int fd)
{
    return (int)syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, FIRST_FREE_FD);
}

/* Makes fd 3 the control socket (without close-on-exec) and closes every other fd >= 4
 * except the exec memfd and the error pipe, which are moved out of the way first and are
 * close-on-exec. Returns the new error-pipe fd; *exec_fd is updated. */
static int arrange_fds(int control_fd, int *exec_fd, int err_fd)
{
    int exe = dup_high(*exec_fd);
    int err = dup_high(err_fd);

    if (exe < 0 || err < 0)
        child_fail(err_fd, SK_STAGE_FDS);
    /* dup3 refuses equal fds, and the socket Python made is close-on-exec: clear the flag. */
    if (control_fd == CONTROL_FD) {
        if (syscall(SYS_fcntl, CONTROL_FD, F_SETFD, 0) < 0)
            child_fail(err, SK_STAGE_FDS);
    } else if (syscall(SYS_dup3, control_fd, CONTROL_FD, 0) < 0) {
        child_fail(err, SK_STAGE_FDS);
    }
    if (close_all_but(exe, err) < 0)
        child_fail(err, SK_STAGE_FDS);
    *exec_fd = exe;
    return err;
}

/* Points 0, 1 and 2 at /dev/null. Runs after arrange_fds, so fd 3 is taken and /dev/null
 * lands either on a free stdio number (kept) or on >= 4 (closed again). */
static void null_stdio(int err_fd)
{
    int null = (int)syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR);

    if (null < 0)
        child_fail(err_fd, SK_STAGE_STDIO);
    for (int fd = 0; fd <= 2; fd++)
        if (fd != null && syscall(SYS_dup3, null, fd, 0) < 0)
            child_fail(err_fd, SK_STAGE_STDIO);
    if (null > 2)
        sys_close(null);
}

/* Default disposition for every signal (Python ignores SIGPIPE and SIGXFSZ, and ignored
 * signals stay ignored across exec), then an empty mask (the parent blocked everything
 * around clone3, and the mask survives exec). */
static void reset_signals(int err_fd)
{
    struct kernel_sigaction dfl;
    uint64_t empty = 0;

    memset(&dfl, 0, sizeof dfl);
    dfl.handler = SIG_DFL;
    for (int sig = 1; sig <= KERNEL_NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (syscall(SYS_rt_sigaction, sig, &dfl, NULL, KERNEL_SIGSET_SIZE) < 0)
            child_fail(err_fd, SK_STAGE_SIGNALS);
    }
    if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, KERNEL_SIGSET_SIZE) < 0)
        child_fail(err_fd, SK_STAGE_SIGNALS);
}

/* The two pipes between parent and child. */
struct sync_pipes {
    int go_read, go_write;   /* parent -> child: the go byte */
    int err_read, err_write; /* child -> parent: a struct sk_child_error, or EOF at exec */
};

__attribute__((noreturn)) static void child_main(const struct sk_clone_args *a,
                                                 const struct sync_pipes *p)
{
    int exec_fd = a->exec_fd, err_fd = p->err_write;

    /* Drop the parent's ends first: holding go_write ourselves would hide the EOF that tells
     * us the parent gave up. */
    sys_close(p->go_write);
    sys_close(p->err_read);
    wait_for_go(p->go_read, err_fd);
    if (a->new_user)
        become_root(err_fd);
    err_fd = arrange_fds(a->control_fd, &exec_fd, err_fd);
    null_stdio(err_fd);
    reset_signals(err_fd);
    syscall(SYS_execveat, exec_fd, "", a->argv, a->envp, AT_EMPTY_PATH);
    child_fail(err_fd, SK_STAGE_EXEC);
}

/* ---- the parent ------------------------------------------------------------------------- */

static void close_pair(int p[2])
{
    close(p[0]);
    close(p[1]);
}

static uint64_t clone_flags(const struct sk_clone_args *a)
{
    uint64_t flags = CLONE_PIDFD | ALWAYS_NEW;

    if (a->new_user)
        flags |= CLONE_NEWUSER;
    if (a->new_net)
        flags |= CLONE_NEWNET;
    if (a->cgroup_fd >= 0)
        flags |= CLONE_INTO_CGROUP;
    return flags;
}

/* clone3 with every signal blocked, so that no handler of the host (Python's writes to its
 * wakeup fd, which the child shares) can run in the child before it resets them. */
static long clone_blocked(struct clone_args *ca, const struct sk_clone_args *a,
                          const struct sync_pipes *p)
{
    uint64_t all = ~(uint64_t)0, old;
    long pid;
    int saved;

    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, KERNEL_SIGSET_SIZE);
    pid = syscall(SYS_clone3, ca, sizeof *ca);
    if (pid == 0)
        child_main(a, p);
    saved = errno;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, KERNEL_SIGSET_SIZE);
    errno = saved;
    return pid;
}

int sk_clone(const struct sk_clone_args *a, struct sk_child *out)
{
    int go[2], err[2], pidfd = -1, saved;
    struct sync_pipes p;
    struct clone_args ca;
    long pid;

    if (pipe2(go, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(err, O_CLOEXEC) < 0) {
        saved = errno;
        close_pair(go);
        return -saved;
    }
    p = (struct sync_pipes){.go_read = go[0], .go_write = go[1],
                            .err_read = err[0], .err_write = err[1]};
    memset(&ca, 0, sizeof ca);
    ca.flags = clone_flags(a);
    ca.pidfd = (uint64_t)(uintptr_t)&pidfd;
    ca.exit_signal = SIGCHLD;
    ca.cgroup = a->cgroup_fd >= 0 ? (uint64_t)a->cgroup_fd : 0;

    pid = clone_blocked(&ca, a, &p);
    saved = errno;
    close(go[0]);
    close(err[1]);
    if (pid < 0) {
        close(go[1]);
        close(err[0]);
        return -saved;
    }
    out->pid = (int)pid;
    out->pidfd = pidfd;
    out->go_fd = go[1];
    out->err_fd = err[0];
    return 0;
}
