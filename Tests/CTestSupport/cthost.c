#define EV_COMPAT3 0
#include <ev.h>

#include "CTestSupport.h"

#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

struct cthost {
    struct ev_loop *loop;
    ev_timer timer;
    ev_io io;
    int timer_limit, timer_fired;
    int read_limit, reads_done;  // in bytes
};

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)revents;
    cthost *host = w->data;
    if (++host->timer_fired >= host->timer_limit) ev_timer_stop(loop, w);
}

// Counts bytes, not read() calls: two one-byte writes to a stream socket can arrive as one read
// (libev may run a timer that writes before the io callback that reads, in one loop iteration).
static void on_read(struct ev_loop *loop, ev_io *w, int revents) {
    (void)revents;
    cthost *host = w->data;
    char buffer[256];
    ssize_t n = read(w->fd, buffer, sizeof buffer);
    if (n > 0 && (host->reads_done += (int)n) >= host->read_limit) ev_io_stop(loop, w);
}

cthost *cthost_create(int timer_fires, double timer_interval, int read_fd, int reads) {
    cthost *host = calloc(1, sizeof *host);
    if (!host) return NULL;
    host->loop = ev_loop_new(EVBACKEND_EPOLL);
    if (!host->loop) { free(host); return NULL; }
    host->timer_limit = timer_fires;
    host->read_limit = reads;
    ev_timer_init(&host->timer, on_timer, timer_interval, timer_interval);
    host->timer.data = host;
    if (timer_fires > 0) ev_timer_start(host->loop, &host->timer);
    ev_io_init(&host->io, on_read, read_fd, EV_READ);
    host->io.data = host;
    if (reads > 0 && read_fd >= 0) ev_io_start(host->loop, &host->io);
    return host;
}

struct ev_loop *cthost_loop(cthost *host) { return host->loop; }
int cthost_run(cthost *host) { return ev_run(host->loop, 0); }
int cthost_timer_fired(const cthost *host) { return host->timer_fired; }
int cthost_reads_done(const cthost *host) { return host->reads_done; }

void cthost_destroy(cthost *host) {
    ev_timer_stop(host->loop, &host->timer);
    ev_io_stop(host->loop, &host->io);
    ev_loop_destroy(host->loop);
    free(host);
}

int ctest_pin_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}

int ctest_unpin(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}

int ctest_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }
