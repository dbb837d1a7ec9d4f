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

// zstd-compresses a frame's packed bytes into a self-contained PACKED_ZSTD payload.
kj::Array<kj::byte> compressPacked(kj::ArrayPtr<const kj::byte> packed, int zstd_level = 3);

// A decoded frame; owns the buffer the reader points into.
class DecodedFrame {
 public:
  wire::Frame::Reader frame() { return reader_->getRoot<wire::Frame>(); }
  size_t decodedBytes() const { return decoded_.size(); }
  // The frame's packed encoding (what a later delta is based on).
  kj::ArrayPtr<const kj::byte> packed() const { return decoded_; }

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
// is found here, not later in the middle of ingest. `encoding` must be self-contained (PACKED or
// PACKED_ZSTD); a delta is expanded first with expandDelta.
absl::StatusOr<std::unique_ptr<DecodedFrame>> decodeFrame(kj::ArrayPtr<const kj::byte> payload,
                                                          wire::Encoding encoding);

// --- Delta frames (Encoding.packedZstdDelta) -------------------------------------------------
//
// A delta is the zstd compression of a frame's packed bytes with the packed bytes of an earlier
// frame of the same session (its base) as a zstd "prefix" (ZSTD_CCtx_refPrefix, zstd >= 1.4):
// everything the frame repeats from the base (unchanged processes, label strings, counters that
// did not move, the unchanged high bytes of those that did) becomes back-references into the
// base, and only what changed is coded as literals. Working on bytes rather than on the schema
// means every field, including ones added to vigil.capnp later, is delta-coded without code
// that must be kept in step with the schema, and a delta expands to exactly the bytes of the
// self-contained frame, so what is logged after expansion is identical to a keyframe.

// The packed (uncompressed) bytes of a self-contained payload, with the same limits and checks
// as decodeFrame's decompression step (no message validation).
absl::StatusOr<kj::Array<kj::byte>> packedBytes(kj::ArrayPtr<const kj::byte> payload,
                                                wire::Encoding encoding);

// Compresses `packed` against `base_packed`. The result decodes only with the same base.
kj::Array<kj::byte> encodeDelta(kj::ArrayPtr<const kj::byte> base_packed,
                                kj::ArrayPtr<const kj::byte> packed, int zstd_level = 3);

// Expands a delta payload against `base_packed` back to the frame's packed bytes. Refuses
// (Status, never a crash) what is not zstd, declares no size or a size over kMaxDecodedBytes,
// needs a window over kMaxDeltaWindowLog, or does not decompress against this base (zstd checks
// that every back-reference lies inside the base plus the output, and the frame checksum that
// the encoder writes catches a delta expanded against the wrong base).
inline constexpr int kMaxDeltaWindowLog = 27;  // 128 MiB: base + frame, both below 64 MiB
absl::StatusOr<kj::Array<kj::byte>> expandDelta(kj::ArrayPtr<const kj::byte> base_packed,
                                                kj::ArrayPtr<const kj::byte> payload);

// --- Pointer-predicted delta frames (Encoding.pointerZstdDelta) -------------------------------
//
// The same zstd-with-prefix delta, taken over the frames' unpacked words with every pointer's
// offset replaced by its distance from where a depth-first walk expects its object (0 for the
// depth-first layout encodeFrame writes). Pointers then keep their value from frame to frame when
// processes, strings and histograms come and go, so only changed data costs bytes. Both frames
// must be single-segment (encodeFrame's are); the delta expands to exactly the packed bytes of
// the frame.

// The delta of `packed` against `base_packed`, or nothing when either is not a single-segment
// message or the result would not expand back to exactly `packed` (checked here).
kj::Maybe<kj::Array<kj::byte>> encodePointerDelta(kj::ArrayPtr<const kj::byte> base_packed,
                                                  kj::ArrayPtr<const kj::byte> packed,
                                                  int zstd_level = 3);

// Expands a pointer delta against `base_packed` to the frame's packed bytes; refuses (Status) a
// base or a result that is not a single-segment message, and everything expandDelta refuses.
absl::StatusOr<kj::Array<kj::byte>> expandPointerDelta(kj::ArrayPtr<const kj::byte> base_packed,
                                                       kj::ArrayPtr<const kj::byte> payload);

// A receiver that expands delta after delta can keep its base in the form the next delta is
// taken against: the frame's pointer-predicted words (its unpacked words, segment table first,
// pointers replaced as above). Then a delta costs one decompression, one inverse walk and the
// packing, instead of also unpacking and walking the base every time; the price is memory (the
// unpacked size of a frame instead of its compressed size).

// The pointer-predicted words of a single-segment frame given as packed bytes, or an error
// naming why it has none.
absl::StatusOr<kj::Array<uint64_t>> pointerPredictedWords(kj::ArrayPtr<const kj::byte> packed);

// The packed bytes of a frame given as its pointer-predicted words.
absl::StatusOr<kj::Array<kj::byte>> packedFromPredicted(kj::ArrayPtr<const uint64_t> predicted);

struct ExpandedPointerDelta {
  kj::Array<kj::byte> packed;     // the frame, as expandPointerDelta returns it
  kj::Array<uint64_t> predicted;  // its pointer-predicted words, when asked for
};

// expandPointerDelta against a base given as its pointer-predicted words; refuses what
// expandPointerDelta refuses, with the same texts. With `keep_predicted` the result also holds
// the frame's own pointer-predicted words (the base of the next delta).
absl::StatusOr<ExpandedPointerDelta> expandPointerDeltaWords(
    kj::ArrayPtr<const uint64_t> base_predicted, kj::ArrayPtr<const kj::byte> payload,
    bool keep_predicted);

}  // namespace vigil
