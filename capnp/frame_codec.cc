#include "capnp/frame_codec.h"

#include <zstd.h>

#include <capnp/serialize.h>
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
  size_t bound = ZSTD_compressBound(bytes.size());
  auto out = kj::heapArray<kj::byte>(bound);
  size_t n = ZSTD_compress(out.begin(), bound, bytes.begin(), bytes.size(), zstd_level);
  KJ_ASSERT(!ZSTD_isError(n), "zstd compression failed", ZSTD_getErrorName(n));
  return kj::heapArray<kj::byte>(out.slice(0, n));
}

absl::StatusOr<std::unique_ptr<DecodedFrame>> decodeFrame(kj::ArrayPtr<const kj::byte> payload,
                                                          wire::Encoding encoding) {
  if (payload.size() > kMaxPayloadBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame payload of ", payload.size(), " bytes exceeds the limit of ", kMaxPayloadBytes));
  }
  std::unique_ptr<DecodedFrame> out(new DecodedFrame());
  switch (encoding) {
    case wire::Encoding::PACKED:
      out->decoded_ = kj::heapArray<kj::byte>(payload);
      break;
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
      out->decoded_ = kj::heapArray<kj::byte>(size);
      size_t n = ZSTD_decompress(out->decoded_.begin(), size, payload.begin(), payload.size());
      if (ZSTD_isError(n) || n != size) {
        return absl::InvalidArgumentError(
            absl::StrCat("zstd decompression failed: ",
                         ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short output"));
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown frame encoding ", static_cast<int>(encoding)));
  }
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
