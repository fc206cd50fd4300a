// libFuzzer entry: what the reader parses out of a received message, with every field as the kernel
// (or a bug) could leave it: `msg_len` (MSG_TRUNC makes it the datagram's real length), `msg_flags`,
// `msg_controllen` and the control buffer's bytes (UDP_GRO, IP_PKTINFO, IPV6_PKTINFO, IP_TOS,
// IPV6_TCLASS, SCM_TIMESTAMPNS, or garbage). The parser (C, built with the same instrumentation) must
// stay inside the control buffer and give well-formed metadata; the split of a merged receive must
// cover the payload exactly, in pieces of at most the segment size, none empty unless the datagram is.
@testable import BatchedUDP
import CUDPShims
import FuzzDriver
import Glibc

/// One slot with a control buffer, as a GRO reader has (created on first use).
enum Fixture {
    nonisolated(unsafe) static let slots = ReceiveSlots(count: 1, slotSize: ReceiveSlots.mergedSlotSize, merges: true,
                                                        controlSpace: cudp_received_control_space())
}

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzReceivedMessage(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard input.count >= 9 else { return 0 }
    let length = Int(input.loadUnaligned(as: UInt32.self)) & 0x1_FFFF        // up to 128 KiB
    let flags = input[4]
    let controlLength = Int(input[5]) * 2
    let control = UnsafeRawBufferPointer(rebasing: input[6...])

    let slots = Fixture.slots
    slots.prepare(1)
    let message = slots.messages
    let space = message.pointee.msg_hdr.msg_controllen
    let buffer = message.pointee.msg_hdr.msg_control!
    buffer.initializeMemory(as: UInt8.self, repeating: 0, count: space)
    buffer.copyMemory(from: control.baseAddress!, byteCount: min(control.count, space))
    message.pointee.msg_hdr.msg_controllen = min(controlLength, space)
    message.pointee.msg_len = UInt32(length)
    message.pointee.msg_hdr.msg_flags = (flags & 1 != 0 ? Int32(MSG_TRUNC) : 0) | (flags & 2 != 0 ? Int32(MSG_CTRUNC) : 0)

    slots.parseControl(0)
    let segment = slots.segmentSize(0)
    if let destination = slots.destination(0, port: 53) { precondition(destination.port == 53) }
    _ = slots.replySource(0)
    _ = slots.interfaceIndex(0)
    if let ecn = slots.ecn(0) { precondition(ecn.rawValue <= 3) }
    _ = slots.receiveTime(0)
    if let segment { precondition(segment > 0, "a segment size of \(segment)") }
    var covered = 0, pieces = 0
    for piece in MergedDatagrams(length: length, segmentSize: segment) {
        precondition(piece.offset == covered, "piece at \(piece.offset) after \(covered) bytes")
        precondition(piece.length <= (segment ?? length), "a piece of \(piece.length) bytes for segments of \(segment ?? length)")
        precondition(piece.length > 0 || length == 0, "an empty piece in a \(length)-byte receive")
        covered += piece.length
        pieces += 1
    }
    precondition(covered == length, "pieces cover \(covered) of \(length) bytes")
    precondition(pieces <= max(1, (length + (segment ?? max(length, 1)) - 1) / (segment ?? max(length, 1))), "\(pieces) pieces")
    return 0
}

runFuzzer { data, size in
    fuzzReceivedMessage(data.map(UnsafeRawPointer.init) ?? UnsafeRawPointer(bitPattern: 1)!, size)
}
