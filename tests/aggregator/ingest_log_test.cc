#include "aggregator/ingest_log.h"

#include <catch2/catch.hpp>

#include "tests/support/test_support.h"

namespace vigil::aggregator {
namespace {

absl::StatusOr<bool> put(IngestLog& log, const std::string& agent, uint64_t epoch, uint64_t seq,
                         const std::string& payload, int64_t now = 1000) {
  return log.append(agent, epoch, seq, wire::Encoding::PACKED, payload.data(), payload.size(), now);
}

TEST_CASE("appends are deduplicated by agent, epoch and seq") {
  testing::TempDir dir;
  auto log = IngestLog::open(dir.file("log.db"));
  REQUIRE(log.ok());
  CHECK(*put(**log, "a", 1, 1, "x") == true);
  CHECK(*put(**log, "a", 1, 1, "x") == false);
  CHECK(*put(**log, "a", 1, 2, "y") == true);
  CHECK(*put(**log, "a", 2, 1, "z") == true);  // new epoch
  CHECK(*put(**log, "b", 1, 1, "w") == true);  // other agent
  CHECK(*put(**log, "a", 1, 1, "late") == false);
  CHECK(*(*log)->lastSeq("a", 1) == 2);
  CHECK(*(*log)->lastSeq("a", 2) == 1);
  CHECK(*(*log)->lastSeq("c", 1) == 0);
  CHECK((*log)->stats().appended == 4);
  CHECK((*log)->stats().duplicates == 2);
}

TEST_CASE("records and cursors survive reopening the log") {
  testing::TempDir dir;
  {
    auto log = IngestLog::open(dir.file("log.db"));
    REQUIRE(log.ok());
    for (uint64_t s = 1; s <= 5; ++s) {
      REQUIRE(*put(**log, "a", 7, s, "frame" + std::to_string(s)));
    }
    REQUIRE((*log)->setCursor("store", 3).ok());
  }
  auto log = IngestLog::open(dir.file("log.db"));
  REQUIRE(log.ok());
  CHECK(*(*log)->cursor("store") == 3);
  CHECK(*(*log)->cursor("remote_write") == 0);
  auto rest = (*log)->readAfter(3, 100);
  REQUIRE(rest.ok());
  REQUIRE(rest->size() == 2);
  CHECK((*rest)[0].seq == 4);
  CHECK((*rest)[1].payload == "frame5");
  CHECK(*(*log)->lastSeq("a", 7) == 5);
  CHECK(*put(**log, "a", 7, 5, "again") == false);
}

TEST_CASE("retention drops the oldest records by age and by size") {
  testing::TempDir dir;
  IngestLogOptions opts;
  opts.max_age_ns = 100;
  opts.max_bytes = 10;
  auto log = IngestLog::open(dir.file("log.db"), opts);
  REQUIRE(log.ok());
  REQUIRE(*put(**log, "a", 1, 1, "0123", 0));    // too old at now=200
  REQUIRE(*put(**log, "a", 1, 2, "4567", 150));  // in age, but size pushes it out
  REQUIRE(*put(**log, "a", 1, 3, "89ab", 190));
  REQUIRE(*put(**log, "a", 1, 4, "cdef", 195));
  auto r = (*log)->enforceRetention(200);
  REQUIRE(r.ok());
  CHECK(r->records_dropped == 2);
  CHECK((*log)->payloadBytes() == 8);
  auto left = (*log)->readAfter(0, 10);
  REQUIRE(left->size() == 2);
  CHECK(left->front().seq == 3);
  // Dedupe still holds for dropped frames: positions are kept per (agent, epoch).
  CHECK(*put(**log, "a", 1, 1, "0123", 200) == false);
}

TEST_CASE("an unwritable path is a clear error") {
  auto log = IngestLog::open("/proc/definitely/not/here/log.db");
  REQUIRE_FALSE(log.ok());
  CHECK(std::string(log.status().message()).find("cannot open ingest log") != std::string::npos);
}

}  // namespace
}  // namespace vigil::aggregator

namespace vigil::aggregator {
namespace {

TEST_CASE("a batch is one transaction that dedupes against the log and against itself") {
  testing::TempDir dir;
  auto log = IngestLog::open(dir.file("log.db"));
  REQUIRE(log.ok());
  REQUIRE(*put(**log, "a", 1, 1, "old"));
  std::string a = "a";
  std::string b = "b";
  std::vector<std::pair<const std::string*, uint64_t>> frames = {{&a, 1}, {&a, 2}, {&a, 2},
                                                                 {&a, 3}, {&b, 1}, {&a, 2}};
  std::vector<AppendRequest> batch;
  std::string payload = "payload";
  for (const auto& [agent, seq] : frames) {
    AppendRequest r;
    r.agent_id = agent;
    r.boot_epoch = 1;
    r.seq = seq;
    r.payload = payload.data();
    r.size = payload.size();
    r.now_ns = 2000;
    batch.push_back(r);
  }
  REQUIRE((*log)->appendBatch(batch).ok());
  using O = AppendRequest::Outcome;
  CHECK(batch[0].outcome == O::kDuplicate);  // in the log before the batch
  CHECK(batch[1].outcome == O::kAppended);
  CHECK(batch[2].outcome == O::kDuplicate);  // earlier in the same batch
  CHECK(batch[3].outcome == O::kAppended);
  CHECK(batch[4].outcome == O::kAppended);
  CHECK(batch[5].outcome == O::kDuplicate);  // below the last seq the batch itself set
  CHECK(*(*log)->lastSeq("a", 1) == 3);
  CHECK(*(*log)->lastSeq("b", 1) == 1);
  CHECK((*log)->stats().appended == 4);
  CHECK((*log)->stats().duplicates == 3);
  CHECK((*log)->payloadBytes() == 3 + 3 * 7);
  auto all = (*log)->readAfter(0, 100);
  REQUIRE(all.ok());
  CHECK(all->size() == 4);
}

}  // namespace
}  // namespace vigil::aggregator
