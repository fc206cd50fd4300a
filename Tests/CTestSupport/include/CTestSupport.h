// Test support only: a stand-in for a C library that owns a libev loop, and Linux calls Swift cannot reach
// through Glibc (setns needs _GNU_SOURCE).
#ifndef CTEST_SUPPORT_H
#define CTEST_SUPPORT_H

struct ev_loop;

/// A C "host" that creates its own loop, registers its own C watchers and runs the loop with raw ev_run,
/// as a C library embedding libev would. Swift code only borrows `cthost_loop()`.
typedef struct cthost cthost;

/// Creates the host: ev_loop_new, a repeating C timer that stops itself after `timer_fires` fires, and a C
/// io watcher reading `read_fd` that stops itself once it has read `reads` bytes (counted in bytes:
/// writes to a stream socket may be read together).
cthost *cthost_create(int timer_fires, double timer_interval, int read_fd, int reads);
struct ev_loop *cthost_loop(cthost *host);
/// ev_run(loop, 0): returns when no referenced watcher is active.
int cthost_run(cthost *host);
int cthost_timer_fired(const cthost *host);
/// Bytes the io watcher has read.
int cthost_reads_done(const cthost *host);
void cthost_destroy(cthost *host);

/// Pins the calling thread to `cpu` (sched_setaffinity); 0, or -1 with errno. ctest_unpin restores all CPUs.
int ctest_pin_to_cpu(int cpu);
int ctest_unpin(void);

/// setns(fd, CLONE_NEWNET) for the calling thread: 0, or -1 with errno.
int ctest_setns_net(int fd);

#endif
