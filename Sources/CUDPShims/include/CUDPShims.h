// CUDPShims: the Linux datagram interfaces Swift cannot see through `import Glibc`.
//
// glibc declares sendmmsg, recvmmsg and struct mmsghdr only under _GNU_SOURCE, which the Swift importer's
// Glibc module is built without. This target is compiled with _GNU_SOURCE (Package.swift), exposes real
// functions with a `cudp_` prefix and a layout mirror of struct mmsghdr that shims.c checks with
// _Static_assert, so nothing here depends on the order in which headers are included.
#ifndef CUDP_SHIMS_H
#define CUDP_SHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

/// Layout mirror of glibc's `struct mmsghdr`.
typedef struct {
    struct msghdr msg_hdr;
    unsigned int msg_len;
} cudp_mmsghdr;

enum {
    /// The kernel clamps sendmmsg/recvmmsg's vlen to this (UIO_MAXIOV) without saying so.
    CUDP_UIO_MAXIOV = 1024,
    CUDP_SOL_UDP = 17,
    CUDP_UDP_SEGMENT = 103,
    CUDP_UDP_GRO = 104,
    CUDP_UDP_MAX_SEGMENTS = 64,
};

/// sendmmsg(2): the number of leading messages sent, or -1 with errno set (message 0 failed).
int cudp_sendmmsg(int fd, cudp_mmsghdr *msgs, unsigned int vlen, int flags);
/// recvmmsg(2) with no timeout: the number of messages received, or -1 with errno set.
int cudp_recvmmsg(int fd, cudp_mmsghdr *msgs, unsigned int vlen, int flags);

/// Reads one entry of the socket's error queue (recvmsg with MSG_ERRQUEUE | MSG_DONTWAIT), which the kernel
/// fills when IP_RECVERR / IPV6_RECVERR is on. Returns 1 and sets `*error` (the entry's ee_errno) and
/// `*address` / `*length` (the failed datagram's destination); -1 with errno set otherwise (EAGAIN: empty).
int cudp_recv_queued_error(int fd, struct sockaddr_storage *address, socklen_t *length, int *error);

/// The cmsg macros as functions.
struct cmsghdr *cudp_cmsg_firsthdr(struct msghdr *msg);
struct cmsghdr *cudp_cmsg_nxthdr(struct msghdr *msg, struct cmsghdr *cmsg);
unsigned char *cudp_cmsg_data(struct cmsghdr *cmsg);
size_t cudp_cmsg_space(size_t length);
size_t cudp_cmsg_len(size_t length);

/// Thread-safe strerror (GNU strerror_r): the message for `errnum`, in `buffer` or static storage.
const char *cudp_strerror(int errnum, char *buffer, size_t length);

#endif
