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

static size_t cmsg_data_length(const struct cmsghdr *cmsg) {
    return cmsg->cmsg_len >= CMSG_LEN(0) ? cmsg->cmsg_len - CMSG_LEN(0) : 0;
}

void cudp_parse_received_control(struct msghdr *msg, cudp_received_metadata *out) {
    memset(out, 0, sizeof *out);
    out->ecn = 0xFF;
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(msg); cmsg; cmsg = CMSG_NXTHDR(msg, cmsg)) {
        size_t length = cmsg_data_length(cmsg);
        // A message may claim more than the buffer holds (MSG_CTRUNC); read only what both allow.
        size_t room = (size_t)((unsigned char *)msg->msg_control + msg->msg_controllen - CMSG_DATA(cmsg));
        if ((unsigned char *)CMSG_DATA(cmsg) > (unsigned char *)msg->msg_control + msg->msg_controllen) room = 0;
        if (length > room) length = room;
        const unsigned char *data = CMSG_DATA(cmsg);
        if (cmsg->cmsg_level == SOL_UDP && cmsg->cmsg_type == UDP_GRO && length >= sizeof(int)) {
            int size;
            memcpy(&size, data, sizeof size);
            out->segment_size = size > 0 ? size : 0;
        } else if (cmsg->cmsg_level == SOL_IP && cmsg->cmsg_type == IP_PKTINFO && length >= sizeof(struct in_pktinfo)) {
            struct in_pktinfo info;
            memcpy(&info, data, sizeof info);
            out->interface_index = (uint32_t)info.ipi_ifindex;
            out->destination_family = 4;
            memcpy(out->destination, &info.ipi_addr, 4);
            memcpy(out->local, &info.ipi_spec_dst, 4);
        } else if (cmsg->cmsg_level == SOL_IPV6 && cmsg->cmsg_type == IPV6_PKTINFO && length >= sizeof(struct in6_pktinfo)) {
            struct in6_pktinfo info;
            memcpy(&info, data, sizeof info);
            out->interface_index = info.ipi6_ifindex;
            if (IN6_IS_ADDR_V4MAPPED(&info.ipi6_addr)) {
                // An IPv4 datagram on a dual-stack socket: report it as IPv4. IP_PKTINFO, when it is on
                // too, carries the same address and the local one.
                if (out->destination_family != 4) {
                    out->destination_family = 4;
                    memcpy(out->destination, (const unsigned char *)&info.ipi6_addr + 12, 4);
                    memcpy(out->local, out->destination, 4);
                }
            } else {
                out->destination_family = 6;
                memcpy(out->destination, &info.ipi6_addr, 16);
                memcpy(out->local, &info.ipi6_addr, 16);
            }
        } else if (cmsg->cmsg_level == SOL_IP && cmsg->cmsg_type == IP_TOS && length >= 1) {
            out->ecn = data[0] & 3;  // one byte on receive
        } else if (cmsg->cmsg_level == SOL_IPV6 && cmsg->cmsg_type == IPV6_TCLASS && length >= sizeof(int)) {
            int tclass;
            memcpy(&tclass, data, sizeof tclass);
            out->ecn = (uint8_t)(tclass & 3);
        } else if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_TIMESTAMPNS && length >= sizeof(struct timespec)) {
            struct timespec time;
            memcpy(&time, data, sizeof time);
            out->has_time = 1;
            out->seconds = (int64_t)time.tv_sec;
            out->nanoseconds = (int64_t)time.tv_nsec;
        }
    }
}

size_t cudp_received_control_space(void) {
    return CMSG_SPACE(sizeof(struct in_pktinfo)) + CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(int))
        + CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct timespec)) + CMSG_SPACE(sizeof(int));
}

size_t cudp_send_control_space(void) {
    return CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(int));
}

size_t cudp_write_send_control(void *buffer, int ipv4, const uint8_t *source, uint32_t interface_index, int ecn) {
    unsigned char *next = buffer;
    if (source || interface_index) {
        struct cmsghdr *cmsg = (struct cmsghdr *)next;
        if (ipv4) {
            struct in_pktinfo info = { .ipi_ifindex = (int)interface_index };
            if (source) memcpy(&info.ipi_spec_dst, source, 4);
            cmsg->cmsg_level = SOL_IP;
            cmsg->cmsg_type = IP_PKTINFO;
            cmsg->cmsg_len = CMSG_LEN(sizeof info);
            memcpy(CMSG_DATA(cmsg), &info, sizeof info);
            next += CMSG_SPACE(sizeof info);
        } else {
            struct in6_pktinfo info = { .ipi6_ifindex = interface_index };
            if (source) memcpy(&info.ipi6_addr, source, 16);
            cmsg->cmsg_level = SOL_IPV6;
            cmsg->cmsg_type = IPV6_PKTINFO;
            cmsg->cmsg_len = CMSG_LEN(sizeof info);
            memcpy(CMSG_DATA(cmsg), &info, sizeof info);
            next += CMSG_SPACE(sizeof info);
        }
    }
    if (ecn >= 0 && ecn <= 3) {
        struct cmsghdr *cmsg = (struct cmsghdr *)next;
        int value = ecn;
        cmsg->cmsg_level = ipv4 ? SOL_IP : SOL_IPV6;
        cmsg->cmsg_type = ipv4 ? IP_TOS : IPV6_TCLASS;
        cmsg->cmsg_len = CMSG_LEN(sizeof value);
        memcpy(CMSG_DATA(cmsg), &value, sizeof value);
        next += CMSG_SPACE(sizeof value);
    }
    return (size_t)(next - (unsigned char *)buffer);
}

void cudp_parse_send_control(const void *buffer, size_t length, cudp_received_metadata *out) {
    struct msghdr msg = { .msg_control = (void *)buffer, .msg_controllen = length };
    memset(out, 0, sizeof *out);
    out->ecn = 0xFF;
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        const unsigned char *data = CMSG_DATA(cmsg);
        size_t size = cmsg_data_length(cmsg);
        if (cmsg->cmsg_level == SOL_IP && cmsg->cmsg_type == IP_PKTINFO && size >= sizeof(struct in_pktinfo)) {
            struct in_pktinfo info;
            memcpy(&info, data, sizeof info);
            out->interface_index = (uint32_t)info.ipi_ifindex;
            if (info.ipi_spec_dst.s_addr != 0) {
                out->destination_family = 4;
                memcpy(out->destination, &info.ipi_spec_dst, 4);
            }
        } else if (cmsg->cmsg_level == SOL_IPV6 && cmsg->cmsg_type == IPV6_PKTINFO && size >= sizeof(struct in6_pktinfo)) {
            struct in6_pktinfo info;
            memcpy(&info, data, sizeof info);
            out->interface_index = info.ipi6_ifindex;
            if (!IN6_IS_ADDR_UNSPECIFIED(&info.ipi6_addr)) {
                out->destination_family = 6;
                memcpy(out->destination, &info.ipi6_addr, 16);
            }
        } else if (((cmsg->cmsg_level == SOL_IP && cmsg->cmsg_type == IP_TOS) ||
                    (cmsg->cmsg_level == SOL_IPV6 && cmsg->cmsg_type == IPV6_TCLASS)) && size >= sizeof(int)) {
            int value;
            memcpy(&value, data, sizeof value);
            out->ecn = (uint8_t)(value & 3);
        }
    }
}

size_t cudp_send_control_without_ecn(const void *buffer, size_t length) {
    struct msghdr msg = { .msg_control = (void *)buffer, .msg_controllen = length };
    size_t kept = 0;
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        int isECN = (cmsg->cmsg_level == SOL_IP && cmsg->cmsg_type == IP_TOS) ||
                    (cmsg->cmsg_level == SOL_IPV6 && cmsg->cmsg_type == IPV6_TCLASS);
        if (isECN) break;
        kept = (size_t)((unsigned char *)cmsg - (unsigned char *)buffer) + CMSG_SPACE(cmsg_data_length(cmsg));
    }
    return kept;
}

const char *cudp_strerror(int errnum, char *buffer, size_t length) {
    return strerror_r(errnum, buffer, length);
}
