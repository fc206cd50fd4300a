// C reference senders for udp-blast: a libev loop whose EV_WRITE callback sends COUNT datagrams of SIZE
// bytes on a connected, nonblocking UDP socket: one send() per datagram ("send"), sendmmsg in batches of
// 1024 ("sendmmsg"), or hand-written UDP GSO ("gso": sendmmsg of super-datagrams, each up to 64 segments
// and 65,507 bytes in one contiguous buffer with a UDP_SEGMENT control message, 1024 datagrams a call).
// Each datagram's first 8 bytes carry its sequence number, as udp-blast's do.
// Prints: mode count seconds pps.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

enum { BATCH = 1024 };

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

static long count, sent, size;
static int batched, segmented;
static int segments;  // datagrams per super-datagram (gso)
static char controls[BATCH][CMSG_SPACE(sizeof(uint16_t))];
static char *payloads;
static struct mmsghdr messages[BATCH];
static struct iovec iovecs[BATCH];

static void on_writable(struct ev_loop *loop, ev_io *w, int revents) {
    (void)revents;
    while (sent < count) {
        if (segmented) {
            // Up to BATCH datagrams: full super-datagrams, the last one shorter if COUNT ends there.
            long left = count - sent < BATCH ? count - sent : BATCH;
            int n = 0;
            for (long done = 0; done < left && n < BATCH; n++) {
                long run = left - done < segments ? left - done : segments;
                for (long i = 0; i < run; i++) {
                    uint64_t seq = (uint64_t)(sent + done + i);
                    memcpy(payloads + (size_t)(done + i) * size, &seq, 8);
                }
                iovecs[n] = (struct iovec){payloads + (size_t)done * size, (size_t)(run * size)};
                messages[n].msg_hdr.msg_iov = &iovecs[n];
                messages[n].msg_hdr.msg_iovlen = 1;
                if (run > 1) {
                    messages[n].msg_hdr.msg_control = controls[n];
                    messages[n].msg_hdr.msg_controllen = sizeof controls[n];
                    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&messages[n].msg_hdr);
                    cmsg->cmsg_level = SOL_UDP;
                    cmsg->cmsg_type = UDP_SEGMENT;
                    cmsg->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                    uint16_t segment = (uint16_t)size;
                    memcpy(CMSG_DATA(cmsg), &segment, sizeof segment);
                } else {
                    messages[n].msg_hdr.msg_control = NULL;
                    messages[n].msg_hdr.msg_controllen = 0;
                }
                messages[n].msg_len = (unsigned)run;  // remembered: datagrams in this message
                done += run;
            }
            int rc = sendmmsg(w->fd, messages, n, MSG_DONTWAIT);
            if (rc < 0) {
                if (errno == EAGAIN || errno == EINTR || errno == ENOBUFS) return;
                perror("sendmmsg (gso)");
                exit(1);
            }
            for (int i = 0; i < rc; i++) sent += (long)(iovecs[i].iov_len / (size_t)size);
        } else if (batched) {
            int n = (int)(count - sent < BATCH ? count - sent : BATCH);
            for (int i = 0; i < n; i++) {
                uint64_t seq = (uint64_t)(sent + i);
                memcpy(payloads + (size_t)i * size, &seq, 8);
            }
            int rc = sendmmsg(w->fd, messages, n, MSG_DONTWAIT);
            if (rc < 0) {
                if (errno == EAGAIN || errno == EINTR || errno == ENOBUFS) return;
                perror("sendmmsg");
                exit(1);
            }
            sent += rc;
        } else {
            uint64_t seq = (uint64_t)sent;
            memcpy(payloads, &seq, 8);
            if (send(w->fd, payloads, size, MSG_DONTWAIT) < 0) {
                if (errno == EAGAIN || errno == EINTR || errno == ENOBUFS) return;
                perror("send");
                exit(1);
            }
            sent++;
        }
    }
    ev_io_stop(loop, w);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s send|sendmmsg|gso HOST PORT COUNT SIZE\n", argv[0]);
        return 64;
    }
    batched = strcmp(argv[1], "sendmmsg") == 0;
    segmented = strcmp(argv[1], "gso") == 0;
    count = atol(argv[4]);
    size = atol(argv[5]);
    if (size < 8) size = 8;
    segments = (int)(65507 / size < 64 ? 65507 / size : 64);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
    if (inet_pton(AF_INET, argv[2], &to.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 64; }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) != 0) { perror("socket/connect"); return 1; }
    payloads = calloc(BATCH, (size_t)size);
    for (int i = 0; i < BATCH; i++) {
        iovecs[i] = (struct iovec){payloads + (size_t)i * size, (size_t)size};
        messages[i].msg_hdr = (struct msghdr){.msg_iov = &iovecs[i], .msg_iovlen = 1};
    }
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    ev_io writer;
    ev_io_init(&writer, on_writable, fd, EV_WRITE);
    ev_io_start(loop, &writer);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    ev_run(loop, 0);
    clock_gettime(CLOCK_MONOTONIC, &end);
    double seconds = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
    printf("%s %ld %.6f %.0f\n", argv[1], sent, seconds, (double)sent / seconds);
    return 0;
}
