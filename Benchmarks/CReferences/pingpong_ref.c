// C reference round-trip client for udp-blast's latency figures: a closed loop with one datagram in
// flight on a connected, blocking socket. The clock is read right before send() and right after recv()
// returns the matching reply, so a round trip is both kernels' paths plus the echo server's own delay and
// nothing else. Usage: pingpong_ref HOST PORT SECONDS [SIZE]. Prints one JSON object:
// {"round_trips": N, "lost": L, "rtt_p50_us": X, "rtt_p99_us": Y}. A reply not back within 100 ms is lost.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int compare(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: pingpong_ref HOST PORT SECONDS [SIZE]\n");
        return 64;
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
        fprintf(stderr, "pingpong_ref: bad IPv4 address %s\n", argv[1]);
        return 64;
    }
    double seconds = atof(argv[3]);
    size_t size = argc > 4 ? (size_t)atoi(argv[4]) : 64;
    if (size < 8 || size > 2048) size = 64;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval patience = {.tv_sec = 0, .tv_usec = 100000};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience) != 0
        || connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
        perror("pingpong_ref");
        return 1;
    }
    size_t capacity = 1 << 20, count = 0;
    uint64_t *rtt = malloc(capacity * sizeof *rtt);
    char out[2048] = {0}, in[2048];
    long lost = 0;
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
    for (uint64_t sequence = 0; now_ns() < end; sequence++) {
        memcpy(out, &sequence, sizeof sequence);
        uint64_t sent = now_ns();
        if (send(fd, out, size, 0) < 0) {
            perror("pingpong_ref: send");
            return 1;
        }
        for (;;) {
            ssize_t n = recv(fd, in, sizeof in, 0);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) { lost++; break; }  // 100 ms without the reply
                perror("pingpong_ref: recv");
                return 1;
            }
            uint64_t answered;
            memcpy(&answered, in, sizeof answered);
            if (n < 8 || answered != sequence) continue;  // a late reply to an earlier one
            uint64_t received = now_ns();
            if (count == capacity) rtt = realloc(rtt, (capacity *= 2) * sizeof *rtt);
            rtt[count++] = received - sent;
            break;
        }
    }
    if (count == 0) {
        fprintf(stderr, "pingpong_ref: no reply came back\n");
        return 1;
    }
    qsort(rtt, count, sizeof *rtt, compare);
    printf("{\"round_trips\": %zu, \"lost\": %ld, \"rtt_p50_us\": %.1f, \"rtt_p99_us\": %.1f}\n", count, lost,
           rtt[(count - 1) / 2] / 1e3, rtt[(size_t)((count - 1) * 0.99)] / 1e3);
    free(rtt);
    return 0;
}
