#ifndef _GNU_SOURCE
#error "CUDPShims must be compiled with _GNU_SOURCE (see Package.swift cSettings)"
#endif

#include "CUDPShims.h"

#include <errno.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/socket.h>

_Static_assert(sizeof(cudp_mmsghdr) == sizeof(struct mmsghdr), "cudp_mmsghdr size differs from struct mmsghdr");
_Static_assert(offsetof(cudp_mmsghdr, msg_hdr) == offsetof(struct mmsghdr, msg_hdr), "msg_hdr offset differs");
_Static_assert(offsetof(cudp_mmsghdr, msg_len) == offsetof(struct mmsghdr, msg_len), "msg_len offset differs");
_Static_assert(CUDP_UIO_MAXIOV == UIO_MAXIOV, "UIO_MAXIOV differs");
_Static_assert(CUDP_SOL_UDP == SOL_UDP, "SOL_UDP differs");
_Static_assert(CUDP_UDP_SEGMENT == UDP_SEGMENT, "UDP_SEGMENT differs");
_Static_assert(CUDP_UDP_GRO == UDP_GRO, "UDP_GRO differs");

int cudp_sendmmsg(int fd, cudp_mmsghdr *msgs, unsigned int vlen, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)msgs, vlen, flags);
}

int cudp_recvmmsg(int fd, cudp_mmsghdr *msgs, unsigned int vlen, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)msgs, vlen, flags, NULL);
}

int cudp_recv_queued_error(int fd, struct sockaddr_storage *address, socklen_t *length, int *error) {
    char byte;  // the offending datagram's payload is not wanted; it is cut to one byte
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    union { char buffer[256]; struct cmsghdr align; } control;
    struct msghdr msg = {
        .msg_name = address, .msg_namelen = sizeof *address,
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = control.buffer, .msg_controllen = sizeof control.buffer,
    };
    if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return -1;
    *length = msg.msg_namelen;
    *error = 0;
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if ((cmsg->cmsg_level == SOL_IP && cmsg->cmsg_type == IP_RECVERR) ||
            (cmsg->cmsg_level == SOL_IPV6 && cmsg->cmsg_type == IPV6_RECVERR)) {
            struct sock_extended_err extended;
            memcpy(&extended, CMSG_DATA(cmsg), sizeof extended);
            *error = (int)extended.ee_errno;
        }
    }
    return 1;
}

struct cmsghdr *cudp_cmsg_firsthdr(struct msghdr *msg) { return CMSG_FIRSTHDR(msg); }
struct cmsghdr *cudp_cmsg_nxthdr(struct msghdr *msg, struct cmsghdr *cmsg) { return CMSG_NXTHDR(msg, cmsg); }
unsigned char *cudp_cmsg_data(struct cmsghdr *cmsg) { return CMSG_DATA(cmsg); }
size_t cudp_cmsg_space(size_t length) { return CMSG_SPACE(length); }
size_t cudp_cmsg_len(size_t length) { return CMSG_LEN(length); }

const char *cudp_strerror(int errnum, char *buffer, size_t length) {
    return strerror_r(errnum, buffer, length);
}
