// The agent's durable spool: every encoded frame is written here before the uplink tries to send
// it, and removed only once the aggregator has acknowledged it, so an aggregator outage, a
// `kill -9` of the agent or a machine crash loses nothing that fits in the bounds.
//
// Storage is SQLite in WAL mode with synchronous=FULL. Why SQLite: the spool is a small FIFO of
// blobs that must survive power loss and never be left half-written; SQLite's WAL commit is
// atomic and fsync'd, its crash safety is the most heavily tested of any embedded store, it is
// already used by the aggregator's ingest log (one dependency, one set of operational tools), and
// `sqlite3 spool.db 'PRAGMA integrity_check'` lets an operator inspect it. RocksDB would add a
// large dependency and background compaction threads for a queue that holds at most a few
// thousand rows; an append-only file of our own would need its own torn-write recovery.
//
// Bounds: by payload bytes and by age; when either is exceeded the oldest frames are deleted and
// counted (`dropped_full`, `dropped_age`). A spool that fails its integrity check on open is
// renamed aside (quarantined) after copying out the rows that can still be read.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace vigil {

struct SpoolOptions {
  // Defaults hold well over 15 minutes at the 10 s default interval: a busy host's frame is
  // ~20-60 KiB compressed, 90 frames per 15 minutes, so 256 MiB is hours.
  int64_t max_bytes = 256LL << 20;
  int64_t max_age_ns = 2LL * 3600 * 1000000000;
  // Agent id that owns the spool. A spool written by another agent id (the node was renamed)
  // is moved aside to PATH.orphan-<unix seconds> rather than sent under the wrong identity.
  std::string owner;
};

struct SpoolEntry {
  int64_t id = 0;  // insertion order
  uint64_t epoch = 0;
  uint64_t seq = 0;
  int64_t created_ns = 0;
  std::string payload;
};

struct SpoolStats {
  uint64_t appended = 0;
  uint64_t removed = 0;
  uint64_t dropped_full = 0;  // oldest frames deleted to stay under max_bytes
  uint64_t dropped_age = 0;   // frames older than max_age
  uint64_t recovered = 0;     // rows copied out of a quarantined spool
  uint64_t quarantined = 0;   // spool files renamed aside (corrupt or another owner)
  uint64_t write_errors = 0;
};

class Spool {
 public:
  // Opens (creating if needed) the spool at `path`. A corrupt file is quarantined
  // (renamed to PATH.corrupt-<unix seconds>) after recovering what is readable; only an
  // unusable path (unwritable directory, full disk) or a spool locked by another running agent
  // returns an error.
  static absl::StatusOr<std::unique_ptr<Spool>> open(const std::string& path,
                                                     SpoolOptions options = {});
  ~Spool();

  // Durably appends one frame; returns its id. Enforces the bounds afterwards.
  absl::StatusOr<int64_t> append(uint64_t epoch, uint64_t seq, const void* payload, size_t size,
                                 int64_t now_ns);

  // Entries with id > after_id in id order, at most `limit`.
  absl::StatusOr<std::vector<SpoolEntry>> readAfter(int64_t after_id, size_t limit);

  // Deletes the entry with `id` and every older one (acks are in order).
  absl::Status removeThrough(int64_t id);

  // Drops entries older than max_age (also done on each append).
  absl::Status enforceBounds(int64_t now_ns);

  int64_t bytes() const { return bytes_; }
  int64_t frames() const { return frames_; }
  const SpoolStats& stats() const { return stats_; }
  const std::string& path() const { return path_; }

 private:
  Spool(sqlite3* db, std::string path, SpoolOptions options)
      : db_(db), path_(std::move(path)), options_(std::move(options)) {}
  absl::StatusOr<std::string> owner();
  absl::Status setOwner(const std::string& owner);
  static absl::StatusOr<std::unique_ptr<Spool>> openUnlocked(const std::string& path,
                                                             SpoolOptions options);
  static absl::StatusOr<std::unique_ptr<Spool>> openChecked(const std::string& path,
                                                            SpoolOptions options, bool* corrupt);
  absl::Status exec(const char* sql);
  absl::Status error(const char* what) const;
  absl::Status refreshSize();

  sqlite3* db_;
  int lock_fd_ = -1;  // flock on PATH.lock: one agent per spool
  std::string path_;
  SpoolOptions options_;
  int64_t bytes_ = 0;
  int64_t frames_ = 0;
  SpoolStats stats_;
};

}  // namespace vigil
