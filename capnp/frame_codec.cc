#include "capnp/frame_codec.h"

#include <zstd.h>

#include <capnp/serialize.h>
#include <kj/common.h>
#include <kj/exception.h>
#include <kj/vector.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace vigil {
namespace {

// One zstd context of each kind per thread, reused: creating a decompression context allocates
// and initialises about 100 KiB, and ZSTD_compress/ZSTD_decompress create one per call. On the
// aggregator's event loop that was a measurable part of every delta (docs/aggregator-scale.md).
// Every use resets the context first, so no parameter or prefix leaks from one call to the next.
struct ZstdContexts {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  ZSTD_CCtx* cctx = ZSTD_createCCtx();        // ZSTD_compressCCtx (level only)
  ZSTD_CCtx* delta_cctx = ZSTD_createCCtx();  // encodeDelta (parameters and a prefix)
  ZstdContexts() = default;
  ZstdContexts(const ZstdContexts&) = delete;
  ZstdContexts& operator=(const ZstdContexts&) = delete;
  ~ZstdContexts() {
    ZSTD_freeDCtx(dctx);
    ZSTD_freeCCtx(cctx);
    ZSTD_freeCCtx(delta_cctx);
  }
};

ZstdContexts& zstdContexts() {
  thread_local ZstdContexts contexts;
  return contexts;
}

// The content size a delta payload declares, after the checks expandDelta documents.
absl::StatusOr<size_t> deltaContentSize(kj::ArrayPtr<const kj::byte> payload) {
  if (payload.size() > kMaxPayloadBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "delta payload of ", payload.size(), " bytes exceeds the limit of ", kMaxPayloadBytes));
  }
  unsigned long long size = ZSTD_getFrameContentSize(payload.begin(), payload.size());
  if (size == ZSTD_CONTENTSIZE_ERROR) {
    return absl::InvalidArgumentError("delta payload is not zstd data");
  }
  if (size == ZSTD_CONTENTSIZE_UNKNOWN || size > kMaxDecodedBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("zstd delta declares an unknown or oversized content size (limit ",
                     kMaxDecodedBytes, " bytes)"));
  }
  return static_cast<size_t>(size);
}

// Decompresses `payload` against `prefix` into exactly `out` (sized by deltaContentSize).
absl::Status decompressDelta(kj::ArrayPtr<const kj::byte> prefix,
                             kj::ArrayPtr<const kj::byte> payload, kj::ArrayPtr<kj::byte> out) {
  ZSTD_DCtx* dctx = zstdContexts().dctx;
  if (dctx == nullptr) {
    return absl::ResourceExhaustedError("out of memory for a zstd context");
  }
  ZSTD_DCtx_reset(dctx, ZSTD_reset_session_and_parameters);
  ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, kMaxDeltaWindowLog);
  size_t rc = ZSTD_DCtx_refPrefix(dctx, prefix.begin(), prefix.size());
  if (ZSTD_isError(rc)) {
    return absl::InternalError(absl::StrCat("zstd refPrefix: ", ZSTD_getErrorName(rc)));
  }
  size_t n = ZSTD_decompressDCtx(dctx, out.begin(), out.size(), payload.begin(), payload.size());
  if (ZSTD_isError(n) || n != out.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("delta does not expand against its base: ",
                     ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short output"));
  }
  return absl::OkStatus();
}

}  // namespace

kj::Array<kj::byte> encodeFrame(capnp::MessageBuilder& message, wire::Encoding encoding,
                                int zstd_level) {
  // One segment, objects laid out depth first in pointer order (what a deep copy produces):
  // every frame has the same layout whatever order toWire set its fields in, and its pointers
  // are predictable from that order, which is what makes pointer-predicted deltas
  // (encodePointerDelta) small. The copy never needs more words than the original.
  capnp::MallocMessageBuilder laid_out(
      static_cast<unsigned>(capnp::computeSerializedSizeInWords(message) + 1),
      capnp::AllocationStrategy::FIXED_SIZE);
  laid_out.setRoot(message.getRoot<wire::Frame>().asReader());
  kj::VectorOutputStream packed;
  capnp::writePackedMessage(packed, laid_out);
  auto bytes = packed.getArray();
  if (encoding == wire::Encoding::PACKED) {
    return kj::heapArray<kj::byte>(bytes);
  }
  return compressPacked(bytes, zstd_level);
}

kj::Array<kj::byte> compressPacked(kj::ArrayPtr<const kj::byte> packed, int zstd_level) {
  ZSTD_CCtx* cctx = zstdContexts().cctx;
  KJ_ASSERT(cctx != nullptr, "out of memory for a zstd context");
  size_t bound = ZSTD_compressBound(packed.size());
  auto out = kj::heapArray<kj::byte>(bound);
  // Level only, like ZSTD_compress: ZSTD_compressCCtx ignores any parameter set on the context.
  size_t n = ZSTD_compressCCtx(cctx, out.begin(), bound, packed.begin(), packed.size(), zstd_level);
  KJ_ASSERT(!ZSTD_isError(n), "zstd compression failed", ZSTD_getErrorName(n));
  return kj::heapArray<kj::byte>(out.slice(0, n));
}

absl::StatusOr<kj::Array<kj::byte>> packedBytes(kj::ArrayPtr<const kj::byte> payload,
                                                wire::Encoding encoding) {
  if (payload.size() > kMaxPayloadBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame payload of ", payload.size(), " bytes exceeds the limit of ", kMaxPayloadBytes));
  }
  switch (encoding) {
    case wire::Encoding::PACKED:
      return kj::heapArray<kj::byte>(payload);
    case wire::Encoding::PACKED_ZSTD: {
      unsigned long long size = ZSTD_getFrameContentSize(payload.begin(), payload.size());
      if (size == ZSTD_CONTENTSIZE_ERROR) {
        return absl::InvalidArgumentError("frame payload is not zstd data");
      }
      if (size == ZSTD_CONTENTSIZE_UNKNOWN || size > kMaxDecodedBytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("zstd frame declares an unknown or oversized content size (limit ",
                         kMaxDecodedBytes, " bytes)"));
      }
      ZSTD_DCtx* dctx = zstdContexts().dctx;
      if (dctx == nullptr) {
        return absl::ResourceExhaustedError("out of memory for a zstd context");
      }
      ZSTD_DCtx_reset(dctx, ZSTD_reset_session_and_parameters);
      auto out = kj::heapArray<kj::byte>(size);
      size_t n = ZSTD_decompressDCtx(dctx, out.begin(), size, payload.begin(), payload.size());
      if (ZSTD_isError(n) || n != size) {
        return absl::InvalidArgumentError(
            absl::StrCat("zstd decompression failed: ",
                         ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short output"));
      }
      return out;
    }
    case wire::Encoding::PACKED_ZSTD_DELTA:
    case wire::Encoding::POINTER_ZSTD_DELTA:
      return absl::InvalidArgumentError("a delta payload needs its base frame to be decoded");
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown frame encoding ", static_cast<int>(encoding)));
  }
}

kj::Array<kj::byte> encodeDelta(kj::ArrayPtr<const kj::byte> base_packed,
                                kj::ArrayPtr<const kj::byte> packed, int zstd_level) {
  ZSTD_CCtx* cctx = zstdContexts().delta_cctx;
  KJ_ASSERT(cctx != nullptr, "out of memory for a zstd context");
  ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
  // The window must reach back over the whole base from the end of the frame.
  int window_log = 10;
  while (window_log < kMaxDeltaWindowLog &&
         (size_t{1} << window_log) < base_packed.size() + packed.size()) {
    window_log++;
  }
  KJ_ASSERT(!ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, zstd_level)));
  KJ_ASSERT(!ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, window_log)));
  KJ_ASSERT(!ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)));
  KJ_ASSERT(!ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)));
  KJ_ASSERT(!ZSTD_isError(ZSTD_CCtx_refPrefix(cctx, base_packed.begin(), base_packed.size())));
  size_t bound = ZSTD_compressBound(packed.size());
  auto out = kj::heapArray<kj::byte>(bound);
  size_t n = ZSTD_compress2(cctx, out.begin(), bound, packed.begin(), packed.size());
  KJ_ASSERT(!ZSTD_isError(n), "zstd delta compression failed", ZSTD_getErrorName(n));
  return kj::heapArray<kj::byte>(out.slice(0, n));
}

absl::StatusOr<kj::Array<kj::byte>> expandDelta(kj::ArrayPtr<const kj::byte> base_packed,
                                                kj::ArrayPtr<const kj::byte> payload) {
  auto size = deltaContentSize(payload);
  if (!size.ok()) {
    return size.status();
  }
  auto out = kj::heapArray<kj::byte>(*size);
  absl::Status st = decompressDelta(base_packed, payload, out);
  if (!st.ok()) {
    return st;
  }
  return out;
}

namespace {

// --- Pointer prediction ------------------------------------------------------------------------
//
// A Cap'n Proto pointer holds the distance from itself to its object. In a frame every object
// after an inserted process, string or histogram moves, so nearly every pointer of the frame
// changes value from one interval to the next although nothing it points to did, and each such
// change costs a delta a literal and a broken match. Laid out depth first (encodeFrame), an
// object starts where the previous object of a depth-first walk ended; this transform replaces
// each pointer's offset by (target - where the walk expected it), which is 0 for a depth-first
// layout and stays 0 across frames. It is a bijection on the single-segment message: the
// inverse walks the same way, restoring each pointer before following it. Only the 30-bit offset
// of struct and list pointers changes; sizes, counts and all data stay as they are.
// Wire format reference: https://capnproto.org/encoding.html (pointers, lists, packing).

constexpr int kMaxPointerDepth = 64;

class PointerWalker {
 public:
  PointerWalker(kj::ArrayPtr<uint64_t> seg, bool inverse)
      : w_(seg), inverse_(inverse), budget_(seg.size() * 4 + 64) {}

  bool run() { return w_.size() > 0 && visit(0, 0); }

 private:
  static bool fits30(int64_t v) { return v >= -(int64_t{1} << 29) && v < (int64_t{1} << 29); }

  bool visit(size_t p, int depth) {
    if (depth > kMaxPointerDepth || budget_-- == 0) {
      return false;
    }
    uint64_t v = w_[p];
    if (v == 0) {
      return true;
    }
    uint32_t kind = v & 3;
    if (kind == 2) {
      return false;  // far pointer: not a single-segment message
    }
    if (kind == 3) {
      return true;  // capability (frames have none): left alone
    }
    int64_t raw = static_cast<int32_t>(static_cast<uint32_t>(v)) >> 2;
    int64_t target;
    int64_t stored;
    if (!inverse_) {
      target = static_cast<int64_t>(p) + 1 + raw;
      stored = target - expected_;
    } else {
      target = expected_ + raw;
      stored = target - static_cast<int64_t>(p) - 1;
    }
    if (!fits30(stored) || target < 0) {
      return false;
    }
    w_[p] = (v & 0xffffffff00000000ULL) | (static_cast<uint32_t>(stored) << 2) | kind;
    uint32_t hi = static_cast<uint32_t>(v >> 32);
    if (kind == 0) {
      uint64_t data = hi & 0xffff;
      uint64_t ptrs = hi >> 16;
      if (!inside(target, data + ptrs)) {
        return false;
      }
      advance(target, data + ptrs);
      for (uint64_t i = 0; i < ptrs; ++i) {
        if (!visit(target + data + i, depth + 1)) {
          return false;
        }
      }
      return true;
    }
    uint32_t elem = hi & 7;
    uint64_t count = hi >> 3;
    static constexpr uint64_t kBitsPerElement[] = {0, 1, 8, 16, 32, 64, 64};
    if (elem < 7) {
      uint64_t words = (count * kBitsPerElement[elem] + 63) / 64;
      if (!inside(target, words)) {
        return false;
      }
      advance(target, words);
      if (elem == 6) {
        for (uint64_t i = 0; i < count; ++i) {
          if (!visit(target + i, depth + 1)) {
            return false;
          }
        }
      }
      return true;
    }
    // Composite: `count` words of elements after a tag word shaped like a struct pointer whose
    // offset field is the element count.
    if (!inside(target, count + 1)) {
      return false;
    }
    uint64_t tag = w_[target];
    uint64_t elements = static_cast<uint32_t>(tag) >> 2;
    uint64_t data = (tag >> 32) & 0xffff;
    uint64_t ptrs = tag >> 48;
    if ((tag & 3) != 0 || elements * (data + ptrs) > count) {
      return false;
    }
    advance(target, count + 1);
    if (ptrs == 0) {
      return true;  // (also: no walk over 2^30 empty elements a hostile tag could declare)
    }
    for (uint64_t e = 0; e < elements; ++e) {
      for (uint64_t i = 0; i < ptrs; ++i) {
        if (!visit(target + 1 + e * (data + ptrs) + data + i, depth + 1)) {
          return false;
        }
      }
    }
    return true;
  }

  bool inside(int64_t start, uint64_t words) const {
    return start >= 0 && static_cast<uint64_t>(start) <= w_.size() &&
           words <= w_.size() - static_cast<uint64_t>(start);
  }
  // Zero-sized objects (empty structs, whose pointer conventionally points at itself) do not
  // move the expectation back.
  void advance(int64_t start, uint64_t words) {
    if (words > 0) {
      expected_ = start + static_cast<int64_t>(words);
    }
  }

  kj::ArrayPtr<uint64_t> w_;
  bool inverse_;
  size_t budget_;
  int64_t expected_ = 1;  // the root pointer is word 0; its object follows it
};

// Unpacks Cap'n Proto packed bytes into words (the segment table and segments, as written), at
// most kMaxDecodedBytes.
absl::StatusOr<kj::Array<uint64_t>> unpackWords(kj::ArrayPtr<const kj::byte> in) {
  kj::Vector<uint64_t> out(in.size() / 4 + 8);
  size_t i = 0;
  auto limit = [&out]() { return out.size() * 8 > kMaxDecodedBytes; };
  while (i < in.size()) {
    uint8_t tag = in[i++];
    uint8_t bytes[8] = {};
    for (int b = 0; b < 8; ++b) {
      if (tag & (1u << b)) {
        if (i >= in.size()) {
          return absl::InvalidArgumentError("packed frame ends inside a word");
        }
        bytes[b] = in[i++];
      }
    }
    uint64_t word;
    memcpy(&word, bytes, 8);
    out.add(word);
    if (out.size() == 1 && static_cast<uint32_t>(word) == 0 &&
        (word >> 32) < kMaxDecodedBytes / 8) {
      // A single-segment table: the message's size is known, so grow once.
      out.reserve((word >> 32) + 1);
    }
    if (tag == 0 || tag == 0xff) {
      if (i >= in.size()) {
        return absl::InvalidArgumentError("packed frame ends inside a run");
      }
      uint8_t n = in[i++];
      if (tag == 0) {
        for (uint8_t k = 0; k < n; ++k) {
          out.add(0);
        }
      } else {
        if (in.size() - i < size_t{n} * 8) {
          return absl::InvalidArgumentError("packed frame ends inside a raw run");
        }
        for (uint8_t k = 0; k < n; ++k) {
          memcpy(&word, in.begin() + i, 8);
          i += 8;
          out.add(word);
        }
      }
    }
    if (limit()) {
      return absl::InvalidArgumentError("unpacked frame exceeds the decoded size limit");
    }
  }
  return out.releaseAsArray();
}

// The pointer-predicted form of a single-segment message given as its words (segment table
// first), or an error if it is not one.
absl::Status predictPointers(kj::ArrayPtr<uint64_t> words, bool inverse) {
  if (words.size() < 2 || static_cast<uint32_t>(words[0]) != 0 ||
      (words[0] >> 32) != words.size() - 1) {
    return absl::InvalidArgumentError("not a single-segment message");
  }
  PointerWalker walker(words.slice(1, words.size()), inverse);
  if (!walker.run()) {
    return absl::InvalidArgumentError(
        "message pointers do not walk (far, out of bounds or cyclic)");
  }
  return absl::OkStatus();
}

kj::Array<kj::byte> repack(kj::ArrayPtr<const uint64_t> words) {
  auto segment =
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(words.begin() + 1), words.size() - 1);
  kj::ArrayPtr<const capnp::word> segments[] = {segment};
  // Packing never grows a message by more than one tag byte per word and a count per run; room
  // for the unpacked size plus an eighth and the header means no regrowth on the way.
  kj::VectorOutputStream packed(words.size() * 9 + 64);
  capnp::writePackedMessage(packed, kj::arrayPtr(segments, 1));
  return kj::heapArray<kj::byte>(packed.getArray());
}

}  // namespace

absl::StatusOr<kj::Array<uint64_t>> pointerPredictedWords(kj::ArrayPtr<const kj::byte> packed) {
  auto words = unpackWords(packed);
  if (!words.ok()) {
    return words.status();
  }
  absl::Status st = predictPointers(*words, /*inverse=*/false);
  if (!st.ok()) {
    return st;
  }
  return kj::mv(*words);
}

absl::StatusOr<kj::Array<kj::byte>> packedFromPredicted(kj::ArrayPtr<const uint64_t> predicted) {
  auto words = kj::heapArray<uint64_t>(predicted);
  absl::Status st = predictPointers(words, /*inverse=*/true);
  if (!st.ok()) {
    return st;
  }
  return repack(words);
}

absl::StatusOr<ExpandedPointerDelta> expandPointerDeltaWords(
    kj::ArrayPtr<const uint64_t> base_predicted, kj::ArrayPtr<const kj::byte> payload,
    bool keep_predicted) {
  auto size = deltaContentSize(payload);
  if (!size.ok()) {
    return size.status();
  }
  if (*size % 8 != 0) {
    return absl::InvalidArgumentError("pointer delta does not expand to whole words");
  }
  // Straight into words: no byte buffer to copy from.
  auto words = kj::heapArray<uint64_t>(*size / 8);
  absl::Status st = decompressDelta(base_predicted.asBytes(), payload, words.asBytes());
  if (!st.ok()) {
    return st;
  }
  ExpandedPointerDelta out;
  if (keep_predicted) {
    out.predicted = kj::heapArray<uint64_t>(words.asPtr());
  }
  st = predictPointers(words, /*inverse=*/true);
  if (!st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("pointer delta does not expand to a message: ", st.message()));
  }
  out.packed = repack(words);
  return out;
}

kj::Maybe<kj::Array<kj::byte>> encodePointerDelta(kj::ArrayPtr<const kj::byte> base_packed,
                                                  kj::ArrayPtr<const kj::byte> packed,
                                                  int zstd_level) {
  auto base = pointerPredictedWords(base_packed);
  if (!base.ok()) {
    return nullptr;
  }
  kj::Array<kj::byte> delta;
  {
    // The frame's words are dropped before the check below expands the delta again: under
    // churn each copy is several MiB, and the agent's peak RSS is this function's.
    auto frame = pointerPredictedWords(packed);
    if (!frame.ok()) {
      return nullptr;
    }
    delta = encodeDelta(base->asBytes(), frame->asBytes(), zstd_level);
  }
  // Never send what would not expand to exactly these bytes (e.g. packed by another packer).
  auto back = expandPointerDeltaWords(*base, delta, /*keep_predicted=*/false);
  if (!back.ok() || back->packed.size() != packed.size() ||
      memcmp(back->packed.begin(), packed.begin(), packed.size()) != 0) {
    return nullptr;
  }
  return kj::mv(delta);
}

absl::StatusOr<kj::Array<kj::byte>> expandPointerDelta(kj::ArrayPtr<const kj::byte> base_packed,
                                                       kj::ArrayPtr<const kj::byte> payload) {
  auto base = pointerPredictedWords(base_packed);
  if (!base.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the base frame has no pointer-predicted form: ", base.status().message()));
  }
  auto expanded = expandPointerDeltaWords(*base, payload, /*keep_predicted=*/false);
  if (!expanded.ok()) {
    return expanded.status();
  }
  return kj::mv(expanded->packed);
}

absl::StatusOr<std::unique_ptr<DecodedFrame>> decodeFrame(kj::ArrayPtr<const kj::byte> payload,
                                                          wire::Encoding encoding) {
  auto packed = packedBytes(payload, encoding);
  if (!packed.ok()) {
    return packed.status();
  }
  std::unique_ptr<DecodedFrame> out(new DecodedFrame());
  out->decoded_ = kj::mv(*packed);
  // Cap'n Proto reports malformed input by throwing kj::Exception; this is the boundary where
  // that becomes a Status.
  DecodedFrame* raw = out.get();
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([raw]() {
                 auto& input = raw->input_.emplace(raw->decoded_.asPtr());
                 capnp::ReaderOptions options;
                 options.traversalLimitInWords = kMaxDecodedBytes / 8 * 2;
                 raw->reader_ = &raw->packed_reader_.emplace(input, options);
                 auto frame = raw->reader_->getRoot<wire::Frame>();
                 // Full traversal validates every pointer up front.
                 (void)frame.totalSize();
                 capnp::MallocMessageBuilder scratch;
                 scratch.setRoot(frame);
               })) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed frame: ", e->getDescription().cStr()));
  }
  return out;
}

}  // namespace vigil
