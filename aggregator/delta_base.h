// The base of an ingest session's next delta frame: the last frame the session accepted, and the
// expansion of a delta push against it (Encoding.packedZstdDelta and pointerZstdDelta, see
// capnp/frame_codec.h). One per session, on the event loop.
//
// The base is kept in the form the next delta needs. After a keyframe push it is that push's
// payload (compressed, as logged); after a pointer delta it is the expanded frame's
// pointer-predicted words, so the next pointer delta (29 pushes in 30 from an agent) expands
// without decompressing, unpacking and walking its base first. Those words are the frame's
// unpacked size, about 3-5x its compressed size: the bytes held by all bases are counted in a
// gauge the owner passes in (vigil_aggregator_delta_base_bytes).
#pragma once

#include <kj/array.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "capnp/vigil.capnp.h"

namespace vigil::aggregator {

class DeltaBase {
 public:
  // `held_bytes` (may be null) is raised and lowered by the bytes this base holds.
  explicit DeltaBase(int64_t* held_bytes) : held_bytes_(held_bytes) {}
  ~DeltaBase() { clear(); }
  DeltaBase(const DeltaBase&) = delete;
  DeltaBase& operator=(const DeltaBase&) = delete;

  // The session's last accepted frame (0: none).
  uint64_t seq() const { return seq_; }

  // A self-contained frame was accepted: it is the next base, kept as this payload.
  void setSelfContained(uint64_t seq, wire::Encoding encoding,
                        kj::ArrayPtr<const kj::byte> payload);

  // Expands the delta push `seq` naming `base_seq` to the frame's packed bytes; on success that
  // frame becomes the base. On failure says why as "reason: detail", with the reasons the
  // session refuses a push with (delta_out_of_order, delta_unknown_base, delta_bad); the base is
  // then unchanged.
  absl::StatusOr<kj::Array<kj::byte>> expand(uint64_t seq, uint64_t base_seq,
                                             kj::ArrayPtr<const kj::byte> payload,
                                             bool pointer_delta);

  // The frame `seq` is no base after all (the commit thread refused it).
  void forget(uint64_t seq) {
    if (seq_ == seq) {
      clear();
    }
  }

  // Bytes held now.
  size_t bytes() const { return payload_.size() + predicted_.size() * sizeof(uint64_t); }

 private:
  void clear();
  void account(int64_t delta) {
    if (held_bytes_ != nullptr) {
      *held_bytes_ += delta;
    }
  }

  int64_t* held_bytes_;
  uint64_t seq_ = 0;
  // One of the two is set while seq_ != 0.
  wire::Encoding encoding_ = wire::Encoding::PACKED;
  kj::Array<kj::byte> payload_;
  kj::Array<uint64_t> predicted_;
};

}  // namespace vigil::aggregator
