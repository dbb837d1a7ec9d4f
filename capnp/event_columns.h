// The events of a frame column by column (wire::EventColumns), and the one way to read a frame's
// events whichever form it carries them in.
//
// Under process churn a frame's events are most of its bytes: three Event structs per short-lived
// process (fork, exec, exit), each a struct with pointers, a union and nanosecond timestamps.
// Written as columns, each column holds one kind of value coded against what comes before it in
// the same frame: timestamps as differences, pids as positions in a list of recent pids in which
// each fork's child enters first (so the child's exec and exit cost about nothing), a fork's
// child against one past the previous fork's child, an exit's lifetime against the time since
// its fork, strings as references into a table built as the frame is read. Nothing outside the
// frame is needed to decode it, so spooled and logged frames stay self-contained; what repeats
// from frame to frame is left to the delta encoding (frame_codec.h), which sees the previous
// frame's columns.
//
// Every consumer reads events through readFrameEvents (fromWire in snapshot.h does), so frames
// of agents that write the `events` list and of agents that write columns give identical events.
#pragma once

#include <capnp/message.h>
#include <capnp/orphan.h>

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "capnp/vigil.capnp.h"

namespace vigil {

// Writes `events` into `out` as columns. Lossless: readEventColumns gives back every field of
// every event, unset and set-but-empty pointers included (sameEvent holds for each pair).
void writeEventColumns(const std::vector<wire::Event::Reader>& events,
                       wire::EventColumns::Builder out);

// Decodes `columns` into new events from `orphanage`, appended to `out` only when the whole
// input is valid. Refuses, with a Status naming the column and the problem, a column that ends
// early or has bytes left over, a kind column whose length is not `count`, an unknown event
// kind, a string reference past the string table, a pid position past the recent-pid list, a
// value that does not fit its field, and a malformed varint. Never reads out of bounds.
absl::Status readEventColumns(wire::EventColumns::Reader columns, capnp::Orphanage orphanage,
                              std::vector<capnp::Orphan<wire::Event>>& out);

// The events of `frame`, from whichever form it carries (Frame.events or Frame.eventColumns),
// appended to `out` (nothing is appended on error). A frame with both a non-empty events list
// and eventColumns is refused: the two forms are alternatives, never halves of one list.
absl::Status readFrameEvents(wire::Frame::Reader frame, capnp::Orphanage orphanage,
                             std::vector<capnp::Orphan<wire::Event>>& out);

// How toWire writes a frame's events.
enum class EventForm {
  kColumns,  // Frame.eventColumns (current agents)
  kList,     // Frame.events (agents before eventColumns; aggregators that do not accept columns)
};

// Writes `events` into `frame` in `form`. No events: neither field is set.
void writeFrameEvents(const std::vector<wire::Event::Reader>& events, EventForm form,
                      wire::Frame::Builder frame);

// A self-contained PACKED_ZSTD frame payload with its events as the Frame.events list: what the
// agent sends an aggregator that does not read eventColumns. An empty array when the frame has
// no columns (it can be sent as it is); an error when the payload or its columns do not decode.
absl::StatusOr<kj::Array<kj::byte>> withEventList(kj::ArrayPtr<const kj::byte> payload);

// True when `a` and `b` hold the same value in every field (their canonical Cap'n Proto forms
// are equal: union member, every scalar, every text and data byte, set versus unset pointers).
bool sameEvent(wire::Event::Reader a, wire::Event::Reader b);

}  // namespace vigil
