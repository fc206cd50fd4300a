// libFuzzer entry: SocketAddress's two parsers of untrusted input.
// - Text (`SocketAddress(parsing:)`, what users type on command lines and in configuration): it either
//   throws an AddressError or gives an address whose description parses back to the same address.
// - Bytes (`SocketAddress(_:length:)`, a sockaddr filled by the kernel or by C code): whatever the bytes
//   and length, it reads only those bytes, at any alignment, and gives nil or an address that writes back
//   to the same family and port.
import BatchedUDP
import FuzzDriver
import Glibc

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzSocketAddress(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let mode = input.first else { return 0 }
    let rest = UnsafeRawBufferPointer(rebasing: input.dropFirst())
    if mode & 1 == 0 {
        let text = String(decoding: rest, as: UTF8.self)
        guard let address = try? SocketAddress(parsing: text) else { return 0 }
        let again: SocketAddress
        do { again = try SocketAddress(parsing: address.description) } catch {
            fatalError("'\(text)' parsed as \(address), whose description does not parse: \(error)")
        }
        precondition(again == address, "'\(text)' parsed as \(address), which reads back as \(again)")
    } else {
        // A copy at an odd or even offset in a buffer exactly as long as the input: reading past it is an
        // ASan error, a misaligned load a trap.
        let offset = Int(mode >> 1) & 7
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: rest.count + offset, alignment: 16)
        defer { buffer.deallocate() }
        if !rest.isEmpty { (buffer + offset).copyMemory(from: rest.baseAddress!, byteCount: rest.count) }
        guard let address = SocketAddress(UnsafeRawPointer(buffer + offset), length: socklen_t(rest.count)) else { return 0 }
        address.withSockAddr { sockaddr, length in
            precondition(Int32(sockaddr.pointee.sa_family) == address.family.rawValue && Int(length) <= rest.count)
        }
        _ = address.description
    }
    return 0
}

runFuzzer { data, size in
    fuzzSocketAddress(data.map(UnsafeRawPointer.init) ?? UnsafeRawPointer(bitPattern: 1)!, size)
}
