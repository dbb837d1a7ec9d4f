// The agent's durable spool: order, bounds (counted drops), crash-safe reopen, quarantine of a
// corrupt file with recovery of the readable rows, and an unusable path.
#include "userspace/agent/spool.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "tests/support/test_support.h"

namespace vigil {
namespace {

constexpr int64_t kSecond = 1000000000;

std::string payload(size_t n, char c) { return std::string(n, c); }

TEST_CASE("spooled frames come back in order and are removed through an acked id") {
  testing::TempDir dir;
  auto spool = Spool::open(dir.file("spool.db"));
  REQUIRE(spool.ok());
  for (uint64_t seq = 1; seq <= 5; ++seq) {
    std::string p = payload(100, static_cast<char>('a' + seq));
    REQUIRE((*spool)->append(7, seq, p.data(), p.size(), 10 * kSecond).ok());
  }
  CHECK((*spool)->frames() == 5);
  CHECK((*spool)->bytes() == 500);
  auto rows = (*spool)->readAfter(0, 3);
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 3);
  CHECK((*rows)[0].seq == 1);
  CHECK((*rows)[2].seq == 3);
  CHECK((*rows)[1].payload == payload(100, 'c'));
  REQUIRE((*spool)->removeThrough((*rows)[1].id).ok());
  CHECK((*spool)->frames() == 3);
  auto rest = (*spool)->readAfter(0, 10);
  REQUIRE(rest.ok());
  REQUIRE(rest->size() == 3);
  CHECK(rest->front().seq == 3);
}

TEST_CASE("the spool survives reopening and keeps frames of several boot epochs") {
  testing::TempDir dir;
  {
    auto spool = Spool::open(dir.file("spool.db"));
    REQUIRE(spool.ok());
    REQUIRE((*spool)->append(1, 9, "x", 1, kSecond).ok());
  }
  auto spool = Spool::open(dir.file("spool.db"));
  REQUIRE(spool.ok());
  REQUIRE((*spool)->append(2, 1, "y", 1, kSecond).ok());
  auto rows = (*spool)->readAfter(0, 10);
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 2);
  CHECK((*rows)[0].epoch == 1);
  CHECK((*rows)[0].seq == 9);
  CHECK((*rows)[1].epoch == 2);
  CHECK(testing::shell("sqlite3 " + dir.file("spool.db") + " 'PRAGMA integrity_check'") == "ok\n");
}

TEST_CASE("when the spool is full the oldest frames are dropped and counted") {
  testing::TempDir dir;
  SpoolOptions opts;
  opts.max_bytes = 1000;
  auto spool = Spool::open(dir.file("spool.db"), opts);
  REQUIRE(spool.ok());
  std::string p = payload(100, 'z');
  for (uint64_t seq = 1; seq <= 15; ++seq) {
    REQUIRE((*spool)->append(1, seq, p.data(), p.size(), kSecond).ok());
  }
  CHECK((*spool)->bytes() <= 1000);
  CHECK((*spool)->stats().dropped_full == 15 - static_cast<uint64_t>((*spool)->frames()));
  auto rows = (*spool)->readAfter(0, 100);
  REQUIRE(rows.ok());
  CHECK(rows->back().seq == 15);  // the newest stay
  CHECK(rows->front().seq == 15 - rows->size() + 1);
}

TEST_CASE("frames older than the age bound are dropped and counted") {
  testing::TempDir dir;
  SpoolOptions opts;
  opts.max_age_ns = 60 * kSecond;
  auto spool = Spool::open(dir.file("spool.db"), opts);
  REQUIRE(spool.ok());
  REQUIRE((*spool)->append(1, 1, "a", 1, 100 * kSecond).ok());
  REQUIRE((*spool)->append(1, 2, "b", 1, 150 * kSecond).ok());
  REQUIRE((*spool)->append(1, 3, "c", 1, 200 * kSecond).ok());
  CHECK((*spool)->frames() == 2);
  CHECK((*spool)->stats().dropped_age == 1);
}

TEST_CASE("a corrupt spool is quarantined, its readable frames recovered, and a fresh one used") {
  testing::TempDir dir;
  std::string path = dir.file("spool.db");
  {
    auto spool = Spool::open(path);
    REQUIRE(spool.ok());
    std::string p = payload(3000, 'q');
    for (uint64_t seq = 1; seq <= 40; ++seq) {
      REQUIRE((*spool)->append(1, seq, p.data(), p.size(), kSecond).ok());
    }
  }
  // Checkpoint the WAL into the main file, then scribble over a page in the middle.
  testing::shell("sqlite3 " + path + " 'PRAGMA wal_checkpoint(TRUNCATE)'");
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 * 12);
    std::string junk(4096, '\xA5');
    f.write(junk.data(), junk.size());
  }
  auto spool = Spool::open(path);
  REQUIRE(spool.ok());
  CHECK((*spool)->stats().quarantined == 1);
  CHECK((*spool)->stats().recovered == static_cast<uint64_t>((*spool)->frames()));
  bool found_aside = false;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    found_aside |= e.path().filename().string().rfind("spool.db.corrupt-", 0) == 0;
  }
  CHECK(found_aside);
  CHECK(testing::shell("sqlite3 " + path + " 'PRAGMA integrity_check'") == "ok\n");
  std::string p = payload(10, 'n');
  CHECK((*spool)->append(2, 1, p.data(), p.size(), kSecond).ok());
}

TEST_CASE("a file that is not a database at all is quarantined and replaced") {
  testing::TempDir dir;
  std::string path = dir.file("spool.db");
  {
    std::ofstream f(path);
    f << std::string(8192, 'G');
  }
  auto spool = Spool::open(path);
  REQUIRE(spool.ok());
  CHECK((*spool)->stats().quarantined == 1);
  CHECK((*spool)->frames() == 0);
}

TEST_CASE("an unusable spool path is an error, not a crash") {
  testing::TempDir dir;
  auto spool = Spool::open(dir.file("missing-dir/spool.db"));
  CHECK_FALSE(spool.ok());
  CHECK(std::string(spool.status().message()).find("missing-dir") != std::string::npos);
}

}  // namespace
}  // namespace vigil

namespace vigil {
namespace {

TEST_CASE("a spool is used by one agent at a time") {
  testing::TempDir dir;
  auto first = Spool::open(dir.file("spool.db"));
  REQUIRE(first.ok());
  auto second = Spool::open(dir.file("spool.db"));
  REQUIRE_FALSE(second.ok());
  CHECK(std::string(second.status().message()).find("in use by another vigil-agent") !=
        std::string::npos);
  first->reset();
  CHECK(Spool::open(dir.file("spool.db")).ok());
}

TEST_CASE("a spool left by another agent id is moved aside, not sent under the wrong identity") {
  testing::TempDir dir;
  SpoolOptions a;
  a.owner = "node-a";
  {
    auto spool = Spool::open(dir.file("spool.db"), a);
    REQUIRE(spool.ok());
    REQUIRE((*spool)->append(1, 1, "x", 1, 1).ok());
  }
  SpoolOptions b;
  b.owner = "node-b";
  auto spool = Spool::open(dir.file("spool.db"), b);
  REQUIRE(spool.ok());
  CHECK((*spool)->frames() == 0);
  CHECK((*spool)->stats().quarantined == 1);
  auto again = Spool::open(dir.file("other.db"), a);
  REQUIRE(again.ok());
}

}  // namespace
}  // namespace vigil
