#include "aggregator/delta_base.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"

namespace vigil::aggregator {
namespace {

// Frame `seq` of a small node whose processes' counters move every interval; from seq 4 on one
// process is gone (every pointer after it moves).
kj::Array<kj::byte> packedFrame(uint64_t seq) {
  Snapshot s;
  s.agent.agent_id = s.agent.node_name = "node-b";
  s.boot_epoch = 3;
  s.seq = seq;
  for (uint32_t pid = 200; pid < 230; ++pid) {
    if (seq >= 4 && pid == 205) {
      continue;
    }
    ProcessStats& p = s.process(pid);
    p.comm = "svc";
    p.cmdline = "/usr/bin/svc --n " + std::to_string(pid);
    p.cpu_ns = seq * 1000033 * pid;
    p.syscalls = seq * 101;
  }
  s.host.push_back(MetricSample{"vigil_host_load", {{"window", "1"}}, 0.5 * seq, false});
  capnp::MallocMessageBuilder message;
  toWire(s, message);
  return encodeFrame(message, wire::Encoding::PACKED);
}

kj::Array<kj::byte> pointerDelta(kj::ArrayPtr<const kj::byte> base,
                                 kj::ArrayPtr<const kj::byte> frame) {
  kj::Array<kj::byte> out;
  KJ_IF_MAYBE (d, encodePointerDelta(base, frame)) {
    out = kj::mv(*d);
  }
  REQUIRE(out.size() > 0);
  return out;
}

bool same(kj::ArrayPtr<const kj::byte> a, kj::ArrayPtr<const kj::byte> b) {
  return a.size() == b.size() && memcmp(a.begin(), b.begin(), a.size()) == 0;
}

std::string text(const absl::Status& st) { return std::string(st.message()); }

TEST_CASE(
    "a session's delta base expands pointer and byte deltas in a chain, becomes each expanded "
    "frame, and counts the bytes it holds") {
  std::vector<kj::Array<kj::byte>> f;
  f.push_back(nullptr);  // seq 0 is no frame
  for (uint64_t seq = 1; seq <= 6; ++seq) {
    f.push_back(packedFrame(seq));
  }
  int64_t held = 0;
  {
    DeltaBase base(&held);
    CHECK(base.seq() == 0);
    auto keyframe = compressPacked(f[1]);
    base.setSelfContained(1, wire::Encoding::PACKED_ZSTD, keyframe);
    CHECK(base.seq() == 1);
    CHECK(held == static_cast<int64_t>(keyframe.size()));

    // A pointer delta on the keyframe (the base goes into predicted form), then on an expanded
    // delta, across a process that exits.
    for (uint64_t seq = 2; seq <= 4; ++seq) {
      auto out = base.expand(seq, seq - 1, pointerDelta(f[seq - 1], f[seq]), true);
      REQUIRE(out.ok());
      CHECK(same(*out, f[seq]));
      CHECK(base.seq() == seq);
      auto words = pointerPredictedWords(f[seq]);
      REQUIRE(words.ok());
      CHECK(held == static_cast<int64_t>(words->size() * 8));
      CHECK(base.bytes() == words->size() * 8);
    }
    // A byte delta (older agents) against the predicted base, then a pointer delta against the
    // packed base that leaves.
    auto byte_out = base.expand(5, 4, encodeDelta(f[4], f[5]), false);
    REQUIRE(byte_out.ok());
    CHECK(same(*byte_out, f[5]));
    CHECK(held == static_cast<int64_t>(f[5].size()));
    auto last = base.expand(6, 5, pointerDelta(f[5], f[6]), true);
    REQUIRE(last.ok());
    CHECK(same(*last, f[6]));
  }
  CHECK(held == 0);  // a session that ends gives its base back
}

TEST_CASE(
    "a delta naming the wrong base, an out-of-order base or bytes that do not expand is refused "
    "with the session's reason, and leaves the base as it was") {
  auto f1 = packedFrame(1);
  auto f2 = packedFrame(2);
  auto f3 = packedFrame(3);
  int64_t held = 0;
  DeltaBase base(&held);

  auto none = base.expand(2, 1, pointerDelta(f1, f2), true);
  REQUIRE_FALSE(none.ok());
  CHECK(text(none.status()) ==
        "delta_unknown_base: delta frame 2 is based on frame 1, but this session has accepted no "
        "frame yet");

  base.setSelfContained(1, wire::Encoding::PACKED, f1);
  auto order = base.expand(2, 2, pointerDelta(f1, f2), true);
  REQUIRE_FALSE(order.ok());
  CHECK(text(order.status()) ==
        "delta_out_of_order: delta frame 2 names base 2, not an earlier frame");
  auto zero = base.expand(2, 0, pointerDelta(f1, f2), true);
  REQUIRE_FALSE(zero.ok());
  CHECK(text(zero.status()).rfind("delta_out_of_order: ", 0) == 0);
  auto other = base.expand(3, 2, pointerDelta(f2, f3), true);
  REQUIRE_FALSE(other.ok());
  CHECK(text(other.status()) ==
        "delta_unknown_base: delta frame 3 is based on frame 2, but this session's last accepted "
        "frame is 1");

  // A delta taken against other bytes than the session's frame 1: refused by the checksum.
  auto wrong = base.expand(2, 1, pointerDelta(f3, f2), true);
  REQUIRE_FALSE(wrong.ok());
  CHECK(text(wrong.status()).rfind("delta_bad: frame 2: ", 0) == 0);
  CHECK(base.seq() == 1);
  // The right delta still expands: the refusal changed nothing.
  auto right = base.expand(2, 1, pointerDelta(f1, f2), true);
  REQUIRE(right.ok());
  CHECK(same(*right, f2));
  auto wrong_again = base.expand(3, 2, pointerDelta(f1, f3), true);
  REQUIRE_FALSE(wrong_again.ok());
  CHECK(text(wrong_again.status()).rfind("delta_bad: frame 3: ", 0) == 0);
  auto right_again = base.expand(3, 2, pointerDelta(f2, f3), true);
  REQUIRE(right_again.ok());
  CHECK(same(*right_again, f3));

  // A base the commit thread refused is forgotten; another seq is not.
  base.forget(2);
  CHECK(base.seq() == 3);
  base.forget(3);
  CHECK(base.seq() == 0);
  CHECK(held == 0);

  // A stored base that does not decode, and one that is no single-segment message.
  kj::byte junk[16] = {9, 9, 9};
  base.setSelfContained(1, wire::Encoding::PACKED_ZSTD, kj::arrayPtr(junk, sizeof(junk)));
  auto undecodable = base.expand(2, 1, pointerDelta(f1, f2), true);
  REQUIRE_FALSE(undecodable.ok());
  CHECK(
      text(undecodable.status()).rfind("delta_unknown_base: the stored base does not decode", 0) ==
      0);
  base.setSelfContained(1, wire::Encoding::PACKED, kj::arrayPtr(junk, sizeof(junk)));
  auto no_words = base.expand(2, 1, pointerDelta(f1, f2), true);
  REQUIRE_FALSE(no_words.ok());
  CHECK(text(no_words.status()).find("the base frame has no pointer-predicted form") !=
        std::string::npos);
}

}  // namespace
}  // namespace vigil::aggregator
