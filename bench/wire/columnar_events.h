// A column-by-column encoding of a frame's event list, for vigil-bench-wire --experiments only:
// it measures what such an encoding would save on the wire against the events as Cap'n Proto
// structs inside the pointer delta. Not a wire format: nothing sends or stores these bytes.
//
// Layout (before zstd): varint event count, then each column as varint length + bytes:
//   kind      one byte per event: (union which << 2) | payload present << 1 | flag, where flag
//             is ExecEvent.argvTruncated or ExitEvent.coreDumped
//   time      zigzag varint of timestampNs minus the previous event's (the first event: minus
//             the previous frame's last event)
//   pid       the pid's code in a model of recent pids (PidModel in the .cc: position in a
//             move-to-front list where each fork's child enters first, else an escape + zigzag
//             difference); tid, ppid and cgroup as zigzag differences against the pid, the
//             previous event's ppid and the previous event's cgroupId
//   comm, container, pod, filename, argv   string references (below), one column each
//   payload   one column per event kind (exit, fork, oomKill, signal, tcpState): its integers
//             as varints (zigzag for signed ones, pids against the event's pid, a fork's
//             child against one past the previous fork's child, an exit's lifetime against
//             the time since its fork event when that is known), its strings
//             and byte strings as references in the same column
//   literals  the bytes of strings first seen in this frame (varint length + bytes)
// A string reference is 0 for an unset field (so set-but-empty and unset stay distinct), i + 1
// for entry i of the dictionary, and dictionary size + 1 for a new string, which is read from
// the literals column and appended. The dictionary starts as every string of the previous frame's
// events in order of first appearance, so a decoder that holds the previous frame rebuilds it.
#pragma once

#include <capnp/orphan.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "capnp/vigil.capnp.h"

namespace vigil::bench {

// The columns of `events`, with `previous` (the previous frame's events) as the dictionary's
// start and the time base. Uncompressed.
std::string encodeEventColumns(const std::vector<wire::Event::Reader>& previous,
                               const std::vector<wire::Event::Reader>& events);

// Decodes what encodeEventColumns wrote, given the same `previous`, into new events from
// `orphanage`. Malformed input (truncated column, reference past the dictionary, unknown kind)
// is an error naming the problem.
absl::StatusOr<std::vector<capnp::Orphan<wire::Event>>> decodeEventColumns(
    const std::vector<wire::Event::Reader>& previous, const std::string& columns,
    capnp::Orphanage orphanage);

// The columns of encodeEventColumns's output by name, in order ("kind", "time", ...), for a
// breakdown of where the bytes go. Malformed input is an error, as in decodeEventColumns.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> splitEventColumns(
    const std::string& columns);

// True when `a` and `b` hold the same value in every field (their canonical Cap'n Proto forms
// are equal: union member, every scalar, every text and data byte, set versus unset pointers).
bool sameEvent(wire::Event::Reader a, wire::Event::Reader b);

}  // namespace vigil::bench
