// C reference receiver for Scripts/instructions.sh: COUNT 64-byte datagrams are queued on a loopback socket
// first (sent with GSO in runs of 64 for "gro"), then receive_phase() reads them in a libev loop whose
// EV_READ callback makes up to 16 recvmmsg calls of 64 messages per wakeup, as BatchedUDPReader does, with
// each datagram's sender address and, for "gro", the UDP_GRO segment size of each merged read.
// Prints: received bytes calls.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

enum { BATCH = 64, CALLS = 16, SIZE = 64, SLOT = 65536 };

static char *payloads;
static char controls[BATCH][CMSG_SPACE(sizeof(int))];
static struct sockaddr_storage names[BATCH];
static struct iovec iovecs[BATCH];
static struct mmsghdr messages[BATCH];
static long count, received, bytes, calls;
static int gro;

static void on_readable(struct ev_loop *loop, ev_io *w, int revents) {
    (void)revents;
    for (int call = 0; call < CALLS; call++) {
        for (int i = 0; i < BATCH; i++) {
            messages[i].msg_hdr.msg_namelen = sizeof names[i];
            messages[i].msg_hdr.msg_controllen = gro ? sizeof controls[i] : 0;
        }
        int n = recvmmsg(w->fd, messages, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) return;
        calls++;
        for (int i = 0; i < n; i++) {
            long segment = 0;
            if (gro) {
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&messages[i].msg_hdr); c; c = CMSG_NXTHDR(&messages[i].msg_hdr, c)) {
                    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) segment = *(int *)CMSG_DATA(c);
                }
            }
            // Each datagram is visited (its length; a merged read is split by the segment size), as a
            // BatchedUDPReader handler visits each.
            long length = messages[i].msg_len;
            if (segment <= 0) segment = length > 0 ? length : 1;
            for (long offset = 0; offset < length || offset == 0; offset += segment) {
                received++;
                bytes += length - offset < segment ? length - offset : segment;
            }
        }
        if (received >= count) {
            ev_break(loop, EVBREAK_ALL);
            return;
        }
        if (n < BATCH) return;
    }
}

// What is counted: the reads, from the first wakeup until the last datagram.
__attribute__((noinline)) static void receive_phase(struct ev_loop *loop, int fd) {
    ev_io reader;
    ev_io_init(&reader, on_readable, fd, EV_READ);
    ev_io_start(loop, &reader);
    ev_run(loop, 0);
    ev_io_stop(loop, &reader);
}

// Queues COUNT datagrams on the receiving socket: runs of 64 as super-datagrams for "gro".
static void fill(struct sockaddr_in *to) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)to, sizeof *to) != 0) { perror("socket/connect"); exit(1); }
    int run = gro ? 64 : 1;
    char *buffer = calloc((size_t)run, SIZE);
    char control[CMSG_SPACE(sizeof(uint16_t))] = {0};
    for (long sent = 0; sent < count; sent += run) {
        int n = count - sent < run ? (int)(count - sent) : run;
        struct iovec iov = {buffer, (size_t)n * SIZE};
        struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1};
        if (n > 1) {
            message.msg_control = control;
            message.msg_controllen = sizeof control;
            struct cmsghdr *c = CMSG_FIRSTHDR(&message);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            *(uint16_t *)CMSG_DATA(c) = SIZE;
        }
        if (sendmsg(fd, &message, 0) < 0) { perror("sendmsg"); exit(1); }
    }
    free(buffer);
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[2], "gro") != 0 && strcmp(argv[2], "no-gro") != 0)) {
        fprintf(stderr, "usage: %s COUNT gro|no-gro\n", argv[0]);
        return 64;
    }
    count = atol(argv[1]);
    gro = strcmp(argv[2], "gro") == 0;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int buffer = count * 1024 + (1 << 20);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof buffer);
    if (fd < 0 || bind(fd, (struct sockaddr *)&address, sizeof address) != 0) { perror("socket/bind"); return 1; }
    if (gro && setsockopt(fd, SOL_UDP, UDP_GRO, &(int){1}, sizeof(int)) != 0) { perror("UDP_GRO"); return 1; }
    socklen_t length = sizeof address;
    getsockname(fd, (struct sockaddr *)&address, &length);
    payloads = malloc((size_t)BATCH * SLOT);
    for (int i = 0; i < BATCH; i++) {
        iovecs[i] = (struct iovec){payloads + (size_t)i * SLOT, gro ? SLOT : 2048};
        messages[i].msg_hdr = (struct msghdr){.msg_name = &names[i], .msg_namelen = sizeof names[i], .msg_iov = &iovecs[i],
                                              .msg_iovlen = 1, .msg_control = controls[i]};
    }
    fill(&address);
    struct ev_loop *loop = ev_default_loop(EVBACKEND_EPOLL);
    receive_phase(loop, fd);
    printf("%ld %ld %ld\n", received, bytes, calls);
    return received == count && bytes == count * SIZE ? 0 : 1;
}
