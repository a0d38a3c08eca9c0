/* sandkit/_clone.c: clone3 the container init into new namespaces, then exec it.
 *
 * Called through cffi from a multi-threaded Python process. On x86_64 the child shares the
 * caller's memory (CLONE_VM, as posix_spawn does) and runs on a stack of its own until it
 * execs: a fork-like copy would first copy the page tables of the whole Python process, which
 * costs about a millisecond for a few dozen MiB, more than everything else a start does. Such
 * a child may touch nothing but its own stack and the context block handed to it, and makes
 * its system calls through raw_syscall() below, which does not write errno (errno lives in
 * the parent thread's TLS, which the child shares). Elsewhere the child is a fork-like copy
 * and uses syscall(2). Either way it makes only raw system calls until execveat: any lock
 * another thread held (malloc, stdio, the GIL, glibc's own) is held forever from its view.
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
#include <linux/nsfs.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
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
#ifndef P_PIDFD
#define P_PIDFD 3
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

/* ---- raw system calls: the result, or -errno; errno untouched -------------------------- */

#if defined(__x86_64__)
#define SHARED_VM_CHILD 1

static long raw_syscall(long n, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;

    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "0"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

/* clone3 whose child starts in fn(arg) on the stack given in *ca, and exits if fn returns.
 * The child cannot return through this function: its stack holds no frame of ours. */
static long clone3_calling(struct clone_args *ca, void (*fn)(void *), void *arg)
{
    register void (*r12)(void *) __asm__("r12") = fn;
    register void *r13 __asm__("r13") = arg;
    long ret;

    __asm__ volatile("syscall\n\t"
                     "test %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "xor %%ebp, %%ebp\n\t" /* the outermost frame, for unwinders */
                     "mov %%r13, %%rdi\n\t"
                     "call *%%r12\n\t"
                     "mov $60, %%eax\n\t" /* SYS_exit(127) */
                     "mov $127, %%edi\n\t"
                     "syscall\n\t"
                     "ud2\n"
                     "1:"
                     : "=a"(ret)
                     : "0"((long)SYS_clone3), "D"(ca), "S"(sizeof *ca), "r"(r12), "r"(r13)
                     : "rcx", "r11", "memory");
    return ret;
}
#else
#define SHARED_VM_CHILD 0

static long raw_syscall(long n, long a, long b, long c, long d, long e, long f)
{
    long ret = syscall(n, a, b, c, d, e, f);
    return ret < 0 ? -errno : ret;
}
#endif

#define SYS0(n) raw_syscall((n), 0, 0, 0, 0, 0, 0)
#define SYS1(n, a) raw_syscall((n), (long)(a), 0, 0, 0, 0, 0)
#define SYS2(n, a, b) raw_syscall((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define SYS3(n, a, b, c) raw_syscall((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define SYS4(n, a, b, c, d) raw_syscall((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define SYS5(n, a, b, c, d, e) \
    raw_syscall((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

/* ---- the child: raw syscalls only ------------------------------------------------------- */

static void sys_close(int fd)
{
    SYS1(SYS_close, fd);
}

/* Reports {stage, errno} to the parent and exits. Never returns. */
__attribute__((noreturn)) static void child_fail(int err_fd, enum sk_stage stage, long rc)
{
    struct sk_child_error e = {.stage = stage, .err = (int)-rc};

    SYS3(SYS_write, err_fd, &e, sizeof e);
    for (;;)
        SYS1(SYS_exit_group, 127);
}

/* Blocks until the parent has written the id maps (and done anything else it needs with
 * our pid) and sends the go byte. EOF means the parent gave up: leave without a report. */
static void wait_for_go(int go_fd, int err_fd)
{
    char byte;
    long n;

    do
        n = SYS3(SYS_read, go_fd, &byte, 1);
    while (n == -EINTR);
    if (n < 0)
        child_fail(err_fd, SK_STAGE_WAIT, n);
    if (n == 0)
        for (;;)
            SYS1(SYS_exit_group, 127);
    sys_close(go_fd);
}

/* In a new user namespace we start with the overflow ids until we switch to the mapped 0.
 * setgroups fails with EPERM when the parent wrote "deny" to /proc/<pid>/setgroups (the
 * unprivileged case); the group list is then already empty of anything that matters. */
static void become_root(int err_fd)
{
    long rc = SYS2(SYS_setgroups, 0, NULL);

    if (rc < 0 && rc != -EPERM)
        child_fail(err_fd, SK_STAGE_IDS, rc);
    if ((rc = SYS3(SYS_setresgid, 0, 0, 0)) < 0 || (rc = SYS3(SYS_setresuid, 0, 0, 0)) < 0)
        child_fail(err_fd, SK_STAGE_IDS, rc);
}

/* close_range over [first, last], a no-op for an empty range. */
static long close_between(unsigned int first, unsigned int last)
{
    if (first > last)
        return 0;
    return SYS3(SYS_close_range, first, last, 0);
}

/* Closes every fd from FIRST_FREE_FD up except the two given (both >= FIRST_FREE_FD). */
static long close_all_but(int keep_a, int keep_b)
{
    unsigned int lo = (unsigned int)(keep_a < keep_b ? keep_a : keep_b);
    unsigned int hi = (unsigned int)(keep_a < keep_b ? keep_b : keep_a);
    long rc;

    if ((rc = close_between(FIRST_FREE_FD, lo - 1)) < 0 || (rc = close_between(lo + 1, hi - 1)) < 0)
        return rc;
    return close_between(hi + 1, ~0U);
}

/* Duplicates fd to the lowest free number >= FIRST_FREE_FD, close-on-exec, so it cannot be
 * overwritten when the control socket moves to fd 3 and goes away by itself at exec. */
static long dup_high(int fd)
{
    return SYS3(SYS_fcntl, fd, F_DUPFD_CLOEXEC, FIRST_FREE_FD);
}

/* Makes fd 3 the control socket (without close-on-exec) and closes every other fd >= 4
 * except the exec memfd and the error pipe, which are moved out of the way first and are
 * close-on-exec. Returns the new error-pipe fd; *exec_fd is updated. */
static int arrange_fds(int control_fd, int *exec_fd, int err_fd)
{
    long exe = dup_high(*exec_fd);
    long err = dup_high(err_fd);
    long rc;

    if (exe < 0 || err < 0)
        child_fail(err_fd, SK_STAGE_FDS, exe < 0 ? exe : err);
    /* dup3 refuses equal fds, and the socket Python made is close-on-exec: clear the flag. */
    if (control_fd == CONTROL_FD)
        rc = SYS3(SYS_fcntl, CONTROL_FD, F_SETFD, 0);
    else
        rc = SYS3(SYS_dup3, control_fd, CONTROL_FD, 0);
    if (rc < 0 || (rc = close_all_but((int)exe, (int)err)) < 0)
        child_fail((int)err, SK_STAGE_FDS, rc);
    *exec_fd = (int)exe;
    return (int)err;
}

/* Points 0, 1 and 2 at /dev/null. Runs after arrange_fds, so fd 3 is taken and /dev/null
 * lands either on a free stdio number (kept) or on >= 4 (closed again). */
static void null_stdio(int err_fd)
{
    long null = SYS3(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR), rc;

    if (null < 0)
        child_fail(err_fd, SK_STAGE_STDIO, null);
    for (int fd = 0; fd <= 2; fd++)
        if (fd != null && (rc = SYS3(SYS_dup3, null, fd, 0)) < 0)
            child_fail(err_fd, SK_STAGE_STDIO, rc);
    if (null > 2)
        sys_close((int)null);
}

/* Default disposition for every signal (Python ignores SIGPIPE and SIGXFSZ, and ignored
 * signals stay ignored across exec), then an empty mask (the parent blocked everything
 * around clone3, and the mask survives exec). */
static void reset_signals(int err_fd)
{
    struct kernel_sigaction dfl = {.handler = SIG_DFL};
    uint64_t empty = 0;
    long rc;

    for (int sig = 1; sig <= KERNEL_NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if ((rc = SYS4(SYS_rt_sigaction, sig, &dfl, NULL, KERNEL_SIGSET_SIZE)) < 0)
            child_fail(err_fd, SK_STAGE_SIGNALS, rc);
    }
    if ((rc = SYS4(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, KERNEL_SIGSET_SIZE)) < 0)
        child_fail(err_fd, SK_STAGE_SIGNALS, rc);
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
    child_fail(err_fd, SK_STAGE_EXEC,
               SYS5(SYS_execveat, exec_fd, "", a->argv, a->envp, AT_EMPTY_PATH));
}

/* ---- the helper of a nested clone: raw syscalls only ------------------------------------ */

/* What the helper leaves in the context for the parent, which reads it once it reaped the
 * helper. Why memory and not a pipe: the parent must wait for the helper to end anyway (to
 * reap it), and after that the report is simply there; a pipe would cost two more fds and
 * three more system calls on every nested start. The init's pidfd needs no carrying at all:
 * the helper shares the parent's fd table (CLONE_FILES), so clone3 puts it there. */
struct helper_report {
    int pid;   /* the init's, 0 until it exists */
    int pidfd; /* the init's, in the shared fd table, -1 until it exists */
    int stage; /* enum sk_stage of the step that failed, 0 if none did, -1 until it ends */
    int err;   /* its errno */
};

/* Everything a shared-memory child reads lives in one mapping, which stays valid until the
 * caller has seen the child exec or die (EOF on err_fd) and calls sk_release(): the caller's
 * own stack frame and Python's objects may be gone by the time the child reads them. */
#define CHILD_STACK_SIZE (64 * 1024)
#define HELPER_STACK_SIZE (16 * 1024)
#define CTX_MAX_STRINGS 64
#define CTX_STRING_BYTES 4096

struct child_ctx {
    struct sk_clone_args args; /* argv and envp point into the arrays below */
    struct sync_pipes pipes;
    char *init_stack;          /* lowest address of the init-to-be's stack */
    char *helper_stack;        /* the nested clone's helper's, or NULL */
    struct helper_report report;
    char *ptrs[2 * (CTX_MAX_STRINGS + 1)];
    char strings[CTX_STRING_BYTES];
};

static void child_entry(void *arg)
{
    struct child_ctx *c = arg;
    child_main(&c->args, &c->pipes);
}

/* clone3 a child that runs fn(c) on the given stack and exits if fn returns: on x86_64 it
 * shares our memory, elsewhere it is a fork-like copy (and the stack is unused). */
static long clone_running(struct clone_args *ca, char *stack, size_t stack_size,
                          void (*fn)(void *), struct child_ctx *c)
{
#if SHARED_VM_CHILD
    ca->flags |= CLONE_VM;
    ca->stack = (uint64_t)(uintptr_t)stack;
    ca->stack_size = stack_size;
    return clone3_calling(ca, fn, c);
#else
    long pid;

    (void)stack;
    (void)stack_size;
    pid = SYS2(SYS_clone3, ca, sizeof *ca);
    if (pid == 0) {
        fn(c);
        for (;;)
            SYS1(SYS_exit_group, 127);
    }
    return pid;
#endif
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

/* The clone3 arguments of the init-to-be, its pidfd to be stored at *pidfd. */
static void init_clone_args(struct clone_args *ca, const struct sk_clone_args *a, int *pidfd)
{
    memset(ca, 0, sizeof *ca);
    ca->flags = clone_flags(a);
    ca->pidfd = (uint64_t)(uintptr_t)pidfd;
    ca->exit_signal = SIGCHLD;
    ca->cgroup = a->cgroup_fd >= 0 ? (uint64_t)a->cgroup_fd : 0;
}

__attribute__((noreturn)) static void helper_exit(struct helper_report *r, enum sk_stage stage,
                                                  long rc)
{
    r->stage = stage;
    r->err = (int)-rc;
    for (;;)
        SYS1(SYS_exit_group, 0);
}

/* "/proc/<pid>" into buf (at least 24 bytes), without the C library. */
static void proc_dir_path(char *buf, int pid)
{
    char digits[12];
    int n = 0;

    do
        digits[n++] = (char)('0' + pid % 10);
    while ((pid /= 10) > 0);
    memcpy(buf, "/proc/", 6);
    buf += 6;
    while (n > 0)
        *buf++ = digits[--n];
    *buf = '\0';
}

/* Writes text (one write: the kernel takes a map in one) to the file name under dir. */
static long write_at(int dir, const char *name, const char *text)
{
    size_t len = strlen(text);
    long fd = SYS3(SYS_openat, dir, name, O_WRONLY | O_CLOEXEC), rc;

    if (fd < 0)
        return fd;
    rc = SYS3(SYS_write, fd, text, len);
    sys_close((int)fd);
    return rc < 0 ? rc : (size_t)rc == len ? 0 : -EIO;
}

/* The init's ids 0..n-1 are the same ids of the parent user namespace (where we have every
 * capability, so "deny" is not needed for the gid map: it is written so that the container
 * cannot drop supplementary groups, as in every rootless container of one id). A parent that
 * maps a subordinate range maps it here too ("0 0 1\n1 1 65535\n") and allows setgroups, as
 * newgidmap does for a container that is not nested. */
static long write_root_maps(int pid, const char *map, int setgroups)
{
    char path[24];
    long dir, rc;

    proc_dir_path(path, pid);
    dir = SYS3(SYS_openat, AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return dir;
    if (!map)
        map = "0 0 1\n";
    if ((rc = write_at((int)dir, "uid_map", map)) == 0 &&
        (setgroups || (rc = write_at((int)dir, "setgroups", "deny")) == 0))
        rc = write_at((int)dir, "gid_map", map);
    sys_close((int)dir);
    return rc;
}

/* Joins the parent user namespace (which needs a process of its own: no shared fs_struct,
 * no other thread), clones the init-to-be there as the parent's child (CLONE_PARENT), maps
 * its ids and exits. The init waits for the go byte meanwhile, as in a plain clone. */
__attribute__((noreturn)) static void helper_main(struct child_ctx *c)
{
    struct helper_report *r = &c->report;
    struct clone_args ca;
    long rc = SYS2(SYS_setns, c->args.userns_fd, CLONE_NEWUSER);

    if (rc < 0)
        helper_exit(r, SK_STAGE_JOIN_USERNS, rc);
    init_clone_args(&ca, &c->args, &r->pidfd);
    ca.flags |= CLONE_PARENT;
    ca.exit_signal = 0; /* clone3 insists: with CLONE_PARENT it is our own (SIGCHLD) */
    rc = clone_running(&ca, c->init_stack, CHILD_STACK_SIZE, child_entry, c);
    if (rc < 0)
        helper_exit(r, SK_STAGE_NESTED_CLONE, rc);
    r->pid = (int)rc;
    if ((rc = write_root_maps(r->pid, c->args.nested_map, c->args.nested_setgroups)) < 0)
        helper_exit(r, SK_STAGE_MAPS, rc);
    helper_exit(r, 0, 0);
}

static void helper_entry(void *arg)
{
    helper_main(arg);
}

/* ---- the parent ------------------------------------------------------------------------- */

static void close_pair(int p[2])
{
    close(p[0]);
    close(p[1]);
}

static size_t page_round(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) / page * page;
}

/* Copies a NULL-terminated string array into the context; NULL if it does not fit. */
static char **copy_strings(char *const *src, char ***next_ptr, char **next_byte, char *end)
{
    char **start = *next_ptr;

    for (; *src; src++) {
        size_t len = strlen(*src) + 1;
        if (len > (size_t)(end - *next_byte) || *next_ptr - start >= CTX_MAX_STRINGS)
            return NULL;
        memcpy(*next_byte, *src, len);
        *(*next_ptr)++ = *next_byte;
        *next_byte += len;
    }
    *(*next_ptr)++ = NULL;
    return start;
}

/* Maps [context | guard page | helper stack | guard page | init stack], the helper's part
 * only for a nested clone; fills the context. NULL (errno set) on failure. Where the helper
 * is a fork-like copy, the mapping is shared so that its report reaches us. */
static struct child_ctx *make_ctx(const struct sk_clone_args *a, const struct sync_pipes *p,
                                  size_t *size)
{
    size_t head = page_round(sizeof(struct child_ctx)), guard = page_round(1);
    int nested = a->userns_fd >= 0;
    int share = nested && !SHARED_VM_CHILD ? MAP_SHARED : MAP_PRIVATE;
    size_t helper = nested ? HELPER_STACK_SIZE + guard : 0;
    struct child_ctx *c;
    char **next_ptr;
    char *next_byte;

    *size = head + guard + helper + CHILD_STACK_SIZE;
    c = mmap(NULL, *size, PROT_READ | PROT_WRITE, share | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (c == MAP_FAILED)
        return NULL;
    if (mprotect((char *)c + head, guard, PROT_NONE) < 0 ||
        (nested && mprotect((char *)c + head + guard + HELPER_STACK_SIZE, guard, PROT_NONE) < 0)) {
        munmap(c, *size);
        return NULL;
    }
    c->args = *a;
    c->pipes = *p;
    c->init_stack = (char *)c + *size - CHILD_STACK_SIZE;
    c->helper_stack = nested ? (char *)c + head + guard : NULL;
    c->report = (struct helper_report){.pid = 0, .pidfd = -1, .stage = -1};
    next_ptr = c->ptrs;
    next_byte = c->strings;
    c->args.argv = copy_strings(a->argv, &next_ptr, &next_byte, c->strings + CTX_STRING_BYTES);
    c->args.envp = c->args.argv ?
        copy_strings(a->envp, &next_ptr, &next_byte, c->strings + CTX_STRING_BYTES) : NULL;
    if (!c->args.envp) {
        munmap(c, *size);
        errno = E2BIG;
        return NULL;
    }
    return c;
}

/* clone_running with every signal blocked, so that no handler of the host (Python's writes
 * to its wakeup fd, which the child shares) can run in the child before it resets them. */
static long clone_blocked(struct clone_args *ca, char *stack, size_t stack_size,
                          void (*fn)(void *), struct child_ctx *c)
{
    uint64_t all = ~(uint64_t)0, old;
    long pid;

    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, KERNEL_SIGSET_SIZE);
    pid = clone_running(ca, stack, stack_size, fn, c);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, KERNEL_SIGSET_SIZE);
    return pid;
}

/* Waits for the child behind pidfd to end and reaps it. */
static void reap(int pidfd)
{
    siginfo_t info;

    while (syscall(SYS_waitid, P_PIDFD, pidfd, &info, WEXITED, NULL) < 0 && errno == EINTR)
        ;
}

/* Kills, reaps and closes the init a failed nested clone made. */
static void discard_init(int pidfd)
{
    syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
    reap(pidfd);
    close(pidfd);
}

/* setns() accepts pidfds and every kind of namespace fd: take a user namespace only, and one
 * owned by our euid, so that a wrong fd is refused before any process exists. 0, or -EBADF,
 * -EINVAL (not a userns) or -EPERM (someone else's).
 *
 * The owner rule is the kernel's own for everyone but root (joining needs CAP_SYS_ADMIN in
 * the namespace). It also keeps root from one trap: joining a namespace that is not below
 * ours with our euid as owner counts as a change of credentials that makes the joiner's
 * memory non-dumpable (commit_creds), and the helper's memory is the whole host process's. */
static int check_userns_fd(int fd)
{
    int type = ioctl(fd, NS_GET_NSTYPE);
    uid_t owner;

    if (type < 0)
        return errno == EBADF ? -EBADF : -EINVAL;
    if (type != CLONE_NEWUSER)
        return -EINVAL;
    if (ioctl(fd, NS_GET_OWNER_UID, &owner) < 0)
        return -errno;
    return owner == geteuid() ? 0 : -EPERM;
}

/* The nested clone: the helper does the work (see helper_main); we reap it and take its
 * report. The init's pid, or -errno with *failed_stage set. */
static long clone_nested(struct child_ctx *c, int *pidfd, int *failed_stage)
{
    struct helper_report *r = &c->report;
    int helper_pidfd = -1;
    struct clone_args ca;
    long pid;

    memset(&ca, 0, sizeof ca);
    ca.flags = CLONE_FILES | CLONE_PIDFD;
    ca.pidfd = (uint64_t)(uintptr_t)&helper_pidfd;
    ca.exit_signal = SIGCHLD;
    pid = clone_blocked(&ca, c->helper_stack, HELPER_STACK_SIZE, helper_entry, c);
    if (pid < 0)
        return pid;
    reap(helper_pidfd);
    close(helper_pidfd);
    if (r->stage < 0) { /* killed before its last word (by someone else's SIGKILL) */
        r->stage = SK_STAGE_NESTED_CLONE;
        r->err = ECHILD;
    }
    if (r->stage != 0) {
        if (r->pidfd >= 0)
            discard_init(r->pidfd);
        *failed_stage = r->stage;
        return -r->err;
    }
    *pidfd = r->pidfd;
    return r->pid;
}

static long clone_plain(struct child_ctx *c, const struct sk_clone_args *a, int *pidfd)
{
    struct clone_args ca;

    init_clone_args(&ca, a, pidfd);
    return clone_blocked(&ca, c->init_stack, CHILD_STACK_SIZE, child_entry, c);
}

int sk_clone(const struct sk_clone_args *a, struct sk_child *out)
{
    int go[2], err[2], pidfd = -1, saved;
    struct sync_pipes p;
    struct child_ctx *ctx;
    size_t ctx_size;
    long pid;

    out->failed_stage = 0;
    if (a->userns_fd >= 0 && (!a->new_user || (saved = check_userns_fd(a->userns_fd)) < 0)) {
        out->failed_stage = SK_STAGE_JOIN_USERNS;
        return a->new_user ? saved : -EINVAL;
    }
    if (pipe2(go, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(err, O_CLOEXEC) < 0) {
        saved = errno;
        close_pair(go);
        return -saved;
    }
    p = (struct sync_pipes){.go_read = go[0], .go_write = go[1],
                            .err_read = err[0], .err_write = err[1]};
    ctx = make_ctx(a, &p, &ctx_size);
    if (!ctx) {
        saved = errno;
        close_pair(go);
        close_pair(err);
        return -saved;
    }
    if (a->userns_fd >= 0)
        pid = clone_nested(ctx, &pidfd, &out->failed_stage);
    else
        pid = clone_plain(ctx, a, &pidfd);
    close(go[0]);
    close(err[1]);
    if (pid < 0) {
        munmap(ctx, ctx_size);
        close(go[1]);
        close(err[0]);
        return (int)pid;
    }
    out->pid = (int)pid;
    out->pidfd = pidfd;
    out->go_fd = go[1];
    out->err_fd = err[0];
    out->region = (unsigned long)(uintptr_t)ctx;
    out->region_size = (unsigned long)ctx_size;
    return 0;
}

void sk_release(struct sk_child *c)
{
    if (c->region) {
        munmap((void *)(uintptr_t)c->region, (size_t)c->region_size);
        c->region = 0;
    }
}
