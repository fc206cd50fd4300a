// C reference echo server for echo-relay: a libev loop whose EV_READ callback reads up to 64 datagrams per
// recvmmsg (at most 16 calls per wakeup, as BatchedUDPReader does) and sends them straight back to their
// senders with one sendmmsg. What the socket does not take waits, in order, for EV_WRITE while reading
// pauses, so nothing is dropped by the server itself. Prints "listening on HOST:PORT" to stderr; runs
// until SIGINT/SIGTERM, then prints: received sent.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

enum { BATCH = 64, CALLS = 16, SLOT = 2048 };

static char payloads[BATCH][SLOT];
static struct sockaddr_storage names[BATCH];
static struct iovec iovecs[BATCH];
static struct mmsghdr messages[BATCH];
static int pending_from, pending_to;  // messages[pending_from..<pending_to] still to send
static long received, sent;
static ev_io reader, writer;

static int flush_pending(struct ev_loop *loop) {
    while (pending_from < pending_to) {
        int rc = sendmmsg(reader.fd, messages + pending_from, (unsigned)(pending_to - pending_from), MSG_DONTWAIT);
        if (rc < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == ENOBUFS) {
                ev_io_stop(loop, &reader);
                ev_io_start(loop, &writer);
                return 0;
            }
            pending_from++;  // a per-datagram error: drop that one, as a server must
            continue;
        }
        pending_from += rc;
        sent += rc;
    }
    return 1;
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents) {
    (void)revents;
    if (flush_pending(loop)) {
        ev_io_stop(loop, w);
        ev_io_start(loop, &reader);
    }
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents) {
    (void)revents;
    for (int call = 0; call < CALLS; call++) {
        for (int i = 0; i < BATCH; i++) {
            iovecs[i].iov_len = SLOT;
            messages[i].msg_hdr.msg_namelen = sizeof names[i];
        }
        int n = recvmmsg(w->fd, messages, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) return;
        received += n;
        for (int i = 0; i < n; i++) iovecs[i].iov_len = messages[i].msg_len;
        pending_from = 0;
        pending_to = n;
        if (!flush_pending(loop)) return;
        if (n < BATCH) return;
    }
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
    (void)w; (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
        return 64;
    }
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &address.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 64; }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int buffer = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof buffer);
    if (fd < 0 || bind(fd, (struct sockaddr *)&address, sizeof address) != 0) { perror("socket/bind"); return 1; }
    socklen_t length = sizeof address;
    getsockname(fd, (struct sockaddr *)&address, &length);
    for (int i = 0; i < BATCH; i++) {
        iovecs[i] = (struct iovec){payloads[i], SLOT};
        messages[i].msg_hdr = (struct msghdr){.msg_name = &names[i], .msg_namelen = sizeof names[i], .msg_iov = &iovecs[i], .msg_iovlen = 1};
    }
    struct ev_loop *loop = ev_default_loop(EVBACKEND_EPOLL);
    ev_io_init(&reader, on_readable, fd, EV_READ);
    ev_io_init(&writer, on_writable, fd, EV_WRITE);
    ev_io_start(loop, &reader);
    ev_signal term, interrupt;
    ev_signal_init(&term, on_signal, SIGTERM);
    ev_signal_init(&interrupt, on_signal, SIGINT);
    ev_signal_start(loop, &term);
    ev_signal_start(loop, &interrupt);
    char text[INET_ADDRSTRLEN];
    fprintf(stderr, "listening on %s:%d\n", inet_ntop(AF_INET, &address.sin_addr, text, sizeof text), ntohs(address.sin_port));
    ev_run(loop, 0);
    printf("%ld %ld\n", received, sent);
    return 0;
}
