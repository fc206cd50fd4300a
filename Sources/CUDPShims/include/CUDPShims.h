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

/// Per-datagram metadata the kernel reports on receive (see cudp_parse_received_control).
typedef struct {
    /// UDP_GRO: the size of the datagrams merged into this receive; 0 when it holds one datagram.
    int32_t segment_size;
    /// IP_PKTINFO / IPV6_PKTINFO: the interface the datagram arrived on; 0 when not reported.
    uint32_t interface_index;
    /// 0: no destination reported; 4: `destination` and `local` hold IPv4 addresses in their first
    /// 4 bytes (also for an IPv4-mapped IPV6_PKTINFO on a dual-stack socket); 6: IPv6 addresses.
    uint8_t destination_family;
    /// The ECN codepoint (IP_TOS / IPV6_TCLASS, low two bits), or 0xFF when not reported.
    uint8_t ecn;
    /// 1 when `seconds` and `nanoseconds` hold the kernel's receive time (SCM_TIMESTAMPNS, CLOCK_REALTIME).
    uint8_t has_time;
    /// The header's destination address (ipi_addr / ipi6_addr), network order.
    uint8_t destination[16];
    /// IPv4 only: the local address the kernel would answer from (ipi_spec_dst); for a unicast
    /// destination, the destination itself.
    uint8_t local[16];
    int64_t seconds;
    int64_t nanoseconds;
} cudp_received_metadata;

/// Reads every control message of a received `msg` the package asks for into `out`, checking each
/// one's length before reading its data and never reading past `msg_controllen`.
void cudp_parse_received_control(struct msghdr *msg, cudp_received_metadata *out);

/// Bytes of control space every kind of received metadata needs at once (PKTINFO of both families,
/// TOS, TCLASS, SCM_TIMESTAMPNS, UDP_GRO), so the kernel never has to truncate it (MSG_CTRUNC).
size_t cudp_received_control_space(void);

/// Largest control area per-datagram send metadata takes: a PKTINFO and an ECN (TOS or TCLASS) message.
size_t cudp_send_control_space(void);

/// Writes the send metadata control messages into `buffer` (`cudp_send_control_space()` bytes, aligned
/// for cmsghdr) for a datagram whose destination's real family is IPv4 (`ipv4` != 0: IP_PKTINFO, IP_TOS)
/// or IPv6 (IPV6_PKTINFO, IPV6_TCLASS). `source` (4 or 16 bytes, network order) may be NULL; a PKTINFO
/// message is written when `source` or `interface_index` is given; the ECN message last, when `ecn` is
/// 0...3. Returns the bytes written (0 when there is nothing to say).
size_t cudp_write_send_control(void *buffer, int ipv4, const uint8_t *source, uint32_t interface_index, int ecn);

/// Reads back what cudp_write_send_control wrote (for failure reports): `out->destination` holds the
/// source address asked for, `destination_family` its family (0: none).
void cudp_parse_send_control(const void *buffer, size_t length, cudp_received_metadata *out);

/// The length of the control messages in `buffer` without a trailing ECN message (IP_TOS or
/// IPV6_TCLASS): what remains to send when the kernel refuses ECN.
size_t cudp_send_control_without_ecn(const void *buffer, size_t length);

/// Thread-safe strerror (GNU strerror_r): the message for `errnum`, in `buffer` or static storage.
const char *cudp_strerror(int errnum, char *buffer, size_t length);

#endif
