// CLibev: libev 4.x for Swift.
//
// Swift imports <ev.h> functions fine but none of its function-like macros, so each macro the Swift
// layer needs gets a `cev_`-prefixed static inline twin here. Everything else is ev.h unchanged.
#ifndef CLIBEV_H
#define CLIBEV_H

// The package is Linux-only. Stop here, with one message, rather than with a cascade of missing symbols.
#if !defined(__linux__)
#error "swift-libev-udp supports Linux only: BatchedUDP sends with sendmmsg(2) and UDP GSO and receives with recvmmsg(2) and GRO, which only Linux has"
#else

// With EV_COMPAT3=1 (ev.h's default) `ev_loop` is also a function (the 3.x name of ev_run) and shadows
// the struct name. Turning it off is layout-neutral: it only drops the 3.x compatibility names.
#define EV_COMPAT3 0
#include <ev.h>

#if !EV_MULTIPLICITY
#error "CLibev needs libev built with EV_MULTIPLICITY=1 (loops passed as struct ev_loop *); the system libev.h has it off"
#endif
#if EV_VERSION_MAJOR != 4
#error "CLibev is written against libev 4.x"
#endif

/// The one callback shape libev itself calls every watcher through (`ev_invoke_pending` casts each watcher
/// to `ev_watcher *`). Using it for every watcher type lets Swift keep a single C trampoline.
typedef void (*cev_callback)(struct ev_loop *loop, ev_watcher *w, int revents);

static inline void cev_init(void *w, cev_callback cb) {
    ev_watcher *base = (ev_watcher *)w;
    base->active = 0;
    base->pending = 0;
    base->priority = 0;
    base->cb = cb;
}

static inline void cev_io_set(ev_io *w, int fd, int events) { ev_io_set(w, fd, events); }
static inline void cev_io_init(ev_io *w, cev_callback cb, int fd, int events) {
    cev_init(w, cb);
    ev_io_set(w, fd, events);
}
static inline void cev_io_modify(ev_io *w, int events) { ev_io_modify(w, events); }
static inline int cev_io_fd(const ev_io *w) { return w->fd; }
static inline int cev_io_events(const ev_io *w) { return w->events & ~EV__IOFDSET; }

static inline void cev_timer_set(ev_timer *w, ev_tstamp after, ev_tstamp repeat) { ev_timer_set(w, after, repeat); }
static inline void cev_timer_init(ev_timer *w, cev_callback cb, ev_tstamp after, ev_tstamp repeat) {
    cev_init(w, cb);
    ev_timer_set(w, after, repeat);
}
static inline ev_tstamp cev_timer_repeat(const ev_timer *w) { return w->repeat; }
static inline void cev_timer_set_repeat(ev_timer *w, ev_tstamp repeat) { w->repeat = repeat; }

static inline void cev_signal_init(ev_signal *w, cev_callback cb, int signum) {
    cev_init(w, cb);
    ev_signal_set(w, signum);
}
static inline void cev_async_init(ev_async *w, cev_callback cb) { cev_init(w, cb); w->sent = 0; }
static inline int cev_async_pending(ev_async *w) { return ev_async_pending(w); }
static inline void cev_prepare_init(ev_prepare *w, cev_callback cb) { cev_init(w, cb); }
static inline void cev_check_init(ev_check *w, cev_callback cb) { cev_init(w, cb); }
static inline void cev_idle_init(ev_idle *w, cev_callback cb) { cev_init(w, cb); }

typedef ev_tstamp (*cev_reschedule)(ev_periodic *w, ev_tstamp now);
static inline void cev_periodic_init(ev_periodic *w, cev_callback cb, ev_tstamp offset, ev_tstamp interval,
                                     cev_reschedule reschedule) {
    cev_init(w, cb);
    ev_periodic_set(w, offset, interval, reschedule);
}
static inline void cev_periodic_set(ev_periodic *w, ev_tstamp offset, ev_tstamp interval, cev_reschedule reschedule) {
    ev_periodic_set(w, offset, interval, reschedule);
}
static inline ev_tstamp cev_periodic_at(const ev_periodic *w) { return ev_periodic_at(w); }
static inline ev_tstamp cev_periodic_offset(const ev_periodic *w) { return w->offset; }
static inline ev_tstamp cev_periodic_interval(const ev_periodic *w) { return w->interval; }

static inline void cev_child_init(ev_child *w, cev_callback cb, int pid, int trace) {
    cev_init(w, cb);
    ev_child_set(w, pid, trace);
}
static inline int cev_child_pid(const ev_child *w) { return w->pid; }
static inline int cev_child_rpid(const ev_child *w) { return w->rpid; }
static inline int cev_child_rstatus(const ev_child *w) { return w->rstatus; }

static inline void cev_stat_init(ev_stat *w, cev_callback cb, const char *path, ev_tstamp interval) {
    cev_init(w, cb);
    ev_stat_set(w, path, interval);
}
static inline const ev_statdata *cev_stat_attr(const ev_stat *w) { return &w->attr; }
static inline const ev_statdata *cev_stat_prev(const ev_stat *w) { return &w->prev; }
static inline ev_tstamp cev_stat_interval(const ev_stat *w) { return w->interval; }

static inline void cev_fork_init(ev_fork *w, cev_callback cb) { cev_init(w, cb); }
static inline void cev_cleanup_init(ev_cleanup *w, cev_callback cb) { cev_init(w, cb); }

static inline int cev_is_default_loop(struct ev_loop *loop) { return ev_is_default_loop(loop); }

static inline int cev_is_active(const void *w) { return ev_is_active((ev_watcher *)w); }
static inline int cev_is_pending(const void *w) { return ev_is_pending((ev_watcher *)w); }
static inline int cev_priority(const void *w) { return ev_priority((ev_watcher *)w); }
static inline void cev_set_priority(void *w, int priority) { ev_set_priority((ev_watcher *)w, priority); }
static inline void *cev_data(const void *w) { return ((const ev_watcher *)w)->data; }
static inline void cev_set_data(void *w, void *data) { ((ev_watcher *)w)->data = data; }

/// ev.h's compile-time version, to compare with ev_version_major()/ev_version_minor() at run time.
static inline int cev_header_version_major(void) { return EV_VERSION_MAJOR; }
static inline int cev_header_version_minor(void) { return EV_VERSION_MINOR; }

#endif // __linux__
#endif
