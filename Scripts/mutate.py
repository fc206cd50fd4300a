"""Puts one old bug back into a copy of the package (see Scripts/mutants.sh)."""
import sys

root, mutant = sys.argv[1], sys.argv[2]
sources = root + "/Sources/BatchedUDP/"


def patch(name, old, new):
    path = sources + name
    text = open(path).read()
    if old not in text:
        sys.exit(f"mutant {mutant}: the code it changes is gone from {name}; update Scripts/mutate.py")
    open(path, "w").write(text.replace(old, new))


if mutant == "1":
    patch("SegmentedBatch.swift", "length > 0, length < size,", "length >= 0, length < size,")
elif mutant == "2":
    patch("BatchedUDPWatcher+Drain.swift",
          "            tally.segmentationFallbacks += 1\n            singlesAtHead = run",
          "            tally.segmentationFallbacks += 1\n"
          "            if error == .EIO || error == .EINVAL { self.segmented = nil; tally.segmentationDisabled += 1 }\n"
          "            singlesAtHead = run")
elif mutant == "3":
    patch("BatchedUDPWatcher+Drain.swift",
          "        } else if run > 1, let segmented {",
          "        } else if run > 1 && ![.EIO, .EINVAL, .EMSGSIZE].contains(error) {\n"
          "            for _ in 0..<run { failHead(error) }\n"
          "        } else if run > 1, let segmented {")
    patch("BatchedUDPWatcher+Drain.swift",
          "        } else if error.mayBeSocketsPendingError {",
          "        } else if false && error.mayBeSocketsPendingError {")
elif mutant == "4":
    patch("SegmentedBatch.swift",
          "? SegmentedBatch.equalLengthsAndKeys(iovecs, keys, from: next, to: end, size: size)",
          "? SegmentedBatch.equalLengths(iovecs, from: next, to: end, size: size)")
elif mutant == "5":
    patch("BatchedUDPWatcher+Drain.swift",
          "        addressed.key &+= 1\n",
          "        if !(addressed.stagedValid && addressed.metadata == (metadata ?? SendMetadata())) { addressed.key &+= 1 }\n")
elif mutant in ("6", "8"):
    # When a batch may extend the ring's run: 6 drops "the whole queue is the run", 8 "of the same length".
    extends = "if uniformRun == count && (count == 0 || self.uniformLength == uniformLength) {"
    patch("DatagramRing.swift", extends,
          "if count == 0 || self.uniformLength == uniformLength {" if mutant == "6" else "if uniformRun == count {")
elif mutant == "7":
    patch("DatagramRing.swift", "        uniformRun = uniformRun > n ? uniformRun &- n : 0\n", "")
elif mutant == "9":
    patch("BatchedUDPWatcher.swift", " else if uniformCount > written { uniformCount = written }", "")
else:
    sys.exit(f"unknown mutant {mutant}")
