#include "aggregator/delta_base.h"

#include "absl/strings/str_cat.h"
#include "capnp/frame_codec.h"

namespace vigil::aggregator {

void DeltaBase::clear() {
  account(-static_cast<int64_t>(bytes()));
  seq_ = 0;
  encoding_ = wire::Encoding::PACKED;
  payload_ = nullptr;
  predicted_ = nullptr;
}

void DeltaBase::setSelfContained(uint64_t seq, wire::Encoding encoding,
                                 kj::ArrayPtr<const kj::byte> payload) {
  clear();
  seq_ = seq;
  encoding_ = encoding;
  payload_ = kj::heapArray<kj::byte>(payload);
  account(static_cast<int64_t>(bytes()));
}

absl::StatusOr<kj::Array<kj::byte>> DeltaBase::expand(uint64_t seq, uint64_t base_seq,
                                                      kj::ArrayPtr<const kj::byte> payload,
                                                      bool pointer_delta) {
  if (base_seq == 0 || base_seq >= seq) {
    return absl::InvalidArgumentError(absl::StrCat("delta_out_of_order: delta frame ", seq,
                                                   " names base ", base_seq,
                                                   ", not an earlier frame"));
  }
  if (seq_ == 0 || base_seq != seq_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "delta_unknown_base: delta frame ", seq, " is based on frame ", base_seq,
        seq_ == 0 ? ", but this session has accepted no frame yet"
                  : absl::StrCat(", but this session's last accepted frame is ", seq_)));
  }
  auto bad = [seq](const absl::Status& st) {
    return absl::InvalidArgumentError(absl::StrCat("delta_bad: frame ", seq, ": ", st.message()));
  };
  auto undecodable = [](const absl::Status& st) {
    return absl::InternalError(
        absl::StrCat("delta_unknown_base: the stored base does not decode: ", st.message()));
  };
  if (pointer_delta) {
    if (predicted_.size() == 0) {
      // The base is a self-contained payload (a keyframe): bring it into predicted form once.
      auto packed = packedBytes(payload_, encoding_);
      if (!packed.ok()) {
        return undecodable(packed.status());
      }
      auto predicted = pointerPredictedWords(*packed);
      if (!predicted.ok()) {
        return bad(absl::InvalidArgumentError(absl::StrCat(
            "the base frame has no pointer-predicted form: ", predicted.status().message())));
      }
      account(static_cast<int64_t>(predicted->size() * sizeof(uint64_t)) -
              static_cast<int64_t>(payload_.size()));
      payload_ = nullptr;
      predicted_ = kj::mv(*predicted);
    }
    auto expanded = expandPointerDeltaWords(predicted_, payload, /*keep_predicted=*/true);
    if (!expanded.ok()) {
      return bad(expanded.status());
    }
    clear();
    seq_ = seq;
    predicted_ = kj::mv(expanded->predicted);
    account(static_cast<int64_t>(bytes()));
    return kj::mv(expanded->packed);
  }
  // A byte delta (older agents) is taken against the base's packed bytes.
  auto packed =
      predicted_.size() > 0 ? packedFromPredicted(predicted_) : packedBytes(payload_, encoding_);
  if (!packed.ok()) {
    return undecodable(packed.status());
  }
  auto expanded = expandDelta(*packed, payload);
  if (!expanded.ok()) {
    return bad(expanded.status());
  }
  setSelfContained(seq, wire::Encoding::PACKED, *expanded);
  return expanded;
}

}  // namespace vigil::aggregator
