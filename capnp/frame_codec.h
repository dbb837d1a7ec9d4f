// Encoding and decoding of Frame payloads: Cap'n Proto packed encoding, optionally compressed
// with zstd. The same bytes travel in IngestSession.push, sit in the agent's spool and in the
// aggregator's ingest log, so decoding is where untrusted input is checked: size limits,
// decompression bombs and malformed messages all come back as a Status naming the problem.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize-packed.h>
#include <kj/array.h>
#include <kj/io.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "capnp/vigil.capnp.h"

namespace vigil {

// Largest payload (compressed) and largest decoded message we accept. A steady-state frame of a
// busy node is a few hundred KiB decoded; these leave room without letting one peer exhaust
// memory.
inline constexpr size_t kMaxPayloadBytes = 16 << 20;
inline constexpr size_t kMaxDecodedBytes = 64 << 20;

// Serializes a message holding a Frame root.
kj::Array<kj::byte> encodeFrame(capnp::MessageBuilder& message, wire::Encoding encoding,
                                int zstd_level = 3);

// A decoded frame; owns the buffer the reader points into.
class DecodedFrame {
 public:
  wire::Frame::Reader frame() { return reader_->getRoot<wire::Frame>(); }
  size_t decodedBytes() const { return decoded_.size(); }

 private:
  friend absl::StatusOr<std::unique_ptr<DecodedFrame>> decodeFrame(
      kj::ArrayPtr<const kj::byte> payload, wire::Encoding encoding);
  DecodedFrame() = default;

  kj::Array<kj::byte> decoded_;
  kj::Maybe<kj::ArrayInputStream> input_;
  kj::Maybe<capnp::PackedMessageReader> packed_reader_;
  capnp::MessageReader* reader_ = nullptr;
};

// Decodes and validates a payload. Traverses the whole message once so that a malformed pointer
// is found here, not later in the middle of ingest.
absl::StatusOr<std::unique_ptr<DecodedFrame>> decodeFrame(kj::ArrayPtr<const kj::byte> payload,
                                                          wire::Encoding encoding);

}  // namespace vigil
