#include "capnp/frame_codec.h"

#include <zstd.h>

#include <capnp/serialize.h>
#include <kj/common.h>
#include <kj/exception.h>

#include "absl/strings/str_cat.h"

namespace vigil {

kj::Array<kj::byte> encodeFrame(capnp::MessageBuilder& message, wire::Encoding encoding,
                                int zstd_level) {
  kj::VectorOutputStream packed;
  capnp::writePackedMessage(packed, message);
  auto bytes = packed.getArray();
  if (encoding == wire::Encoding::PACKED) {
    return kj::heapArray<kj::byte>(bytes);
  }
  return compressPacked(bytes, zstd_level);
}

kj::Array<kj::byte> compressPacked(kj::ArrayPtr<const kj::byte> packed, int zstd_level) {
  size_t bound = ZSTD_compressBound(packed.size());
  auto out = kj::heapArray<kj::byte>(bound);
  size_t n = ZSTD_compress(out.begin(), bound, packed.begin(), packed.size(), zstd_level);
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
      auto out = kj::heapArray<kj::byte>(size);
      size_t n = ZSTD_decompress(out.begin(), size, payload.begin(), payload.size());
      if (ZSTD_isError(n) || n != size) {
        return absl::InvalidArgumentError(
            absl::StrCat("zstd decompression failed: ",
                         ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short output"));
      }
      return out;
    }
    case wire::Encoding::PACKED_ZSTD_DELTA:
      return absl::InvalidArgumentError("a delta payload needs its base frame to be decoded");
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown frame encoding ", static_cast<int>(encoding)));
  }
}

kj::Array<kj::byte> encodeDelta(kj::ArrayPtr<const kj::byte> base_packed,
                                kj::ArrayPtr<const kj::byte> packed, int zstd_level) {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  KJ_ASSERT(cctx != nullptr, "out of memory for a zstd context");
  KJ_DEFER(ZSTD_freeCCtx(cctx));
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
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  if (dctx == nullptr) {
    return absl::ResourceExhaustedError("out of memory for a zstd context");
  }
  KJ_DEFER(ZSTD_freeDCtx(dctx));
  ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, kMaxDeltaWindowLog);
  size_t rc = ZSTD_DCtx_refPrefix(dctx, base_packed.begin(), base_packed.size());
  if (ZSTD_isError(rc)) {
    return absl::InternalError(absl::StrCat("zstd refPrefix: ", ZSTD_getErrorName(rc)));
  }
  auto out = kj::heapArray<kj::byte>(size);
  size_t n = ZSTD_decompressDCtx(dctx, out.begin(), size, payload.begin(), payload.size());
  if (ZSTD_isError(n) || n != size) {
    return absl::InvalidArgumentError(
        absl::StrCat("delta does not expand against its base: ",
                     ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short output"));
  }
  return out;
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
