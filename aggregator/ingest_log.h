// The aggregator's durable ingest log. Every accepted frame is appended here, and committed to
// disk, before the agent gets its acknowledgement; consumers (the in-memory series store, the
// remote_write forwarder, later exporters) read it through their own persisted cursors, so a
// restart resumes each where it left off.
//
// Storage is SQLite in WAL mode with synchronous=FULL. Why SQLite rather than RocksDB: the log
// needs an append, a uniqueness check on (agent, epoch, seq) and a cursor update, each atomic and
// crash-safe, plus retention by age and size — one small schema with transactions does all of
// it, the file can be inspected and checked with the sqlite3 CLI (PRAGMA integrity_check), and
// SQLite's durability under power loss is among the best tested of any embedded store. Write
// volume (a few thousand frames a second at the target scale) is well within what SQLite commits
// with batched transactions: appendBatch() writes many frames in one transaction, one fsync
// (the aggregator's group commit, aggregator/group_commit.h).
//
// Threads: appends (append, appendBatch) go through a second connection of their own, so the
// group-commit thread can write while the event loop reads (WAL readers never wait for the
// writer). Everything else is for the event-loop thread only.
#pragma once

#include <sqlite3.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "capnp/vigil.capnp.h"

namespace vigil::aggregator {

struct IngestLogOptions {
  int64_t max_age_ns = 6LL * 3600 * 1000000000;  // retention by age
  int64_t max_bytes = 2LL << 30;                 // retention by payload bytes
};

struct LogRecord {
  int64_t id = 0;  // position in the log, strictly increasing
  std::string agent_id;
  uint64_t boot_epoch = 0;
  uint64_t seq = 0;
  int64_t received_ns = 0;
  wire::Encoding encoding = wire::Encoding::PACKED;
  std::string payload;
};

struct RetentionResult {
  int64_t records_dropped = 0;
  int64_t bytes_dropped = 0;
};

struct IngestLogStats {
  int64_t appended = 0;
  int64_t duplicates = 0;
  int64_t retention_dropped = 0;
  int64_t append_errors = 0;
};

// One frame of an appendBatch() call. `outcome` is filled in by the call.
struct AppendRequest {
  const std::string* agent_id = nullptr;
  uint64_t boot_epoch = 0;
  uint64_t seq = 0;
  wire::Encoding encoding = wire::Encoding::PACKED;
  const void* payload = nullptr;
  size_t size = 0;
  int64_t now_ns = 0;
  enum class Outcome { kAppended, kDuplicate } outcome = Outcome::kDuplicate;
};

class IngestLog {
 public:
  static absl::StatusOr<std::unique_ptr<IngestLog>> open(const std::string& path,
                                                         IngestLogOptions options = {});
  ~IngestLog();

  // Durably appends a frame unless (agent_id, boot_epoch, seq) is already in the log or below
  // the agent's last accepted seq for that epoch. Returns true when appended, false for a
  // duplicate. Returns an error (and appends nothing) if the disk write fails.
  absl::StatusOr<bool> append(const std::string& agent_id, uint64_t boot_epoch, uint64_t seq,
                              wire::Encoding encoding, const void* payload, size_t size,
                              int64_t now_ns);

  // Appends the frames in order in ONE transaction with one commit (one fsync), deduplicating
  // each like append() (also against earlier frames of the same batch). On success every
  // request's outcome says appended or duplicate; on error nothing of the batch is in the log.
  // Thread-safe against the other methods (own connection).
  absl::Status appendBatch(std::vector<AppendRequest>& batch);

  // Highest seq accepted for (agent_id, boot_epoch); 0 if none.
  absl::StatusOr<uint64_t> lastSeq(const std::string& agent_id, uint64_t boot_epoch);

  // Records with id > after_id in id order, at most `limit`.
  absl::StatusOr<std::vector<LogRecord>> readAfter(int64_t after_id, size_t limit);

  // Persisted consumer positions (0 when the consumer never committed one).
  absl::StatusOr<int64_t> cursor(const std::string& consumer);
  absl::Status setCursor(const std::string& consumer, int64_t id);

  // Drops records older than max_age or beyond max_bytes (oldest first).
  absl::StatusOr<RetentionResult> enforceRetention(int64_t now_ns);

  // Highest record id (0 when empty), total payload bytes and record count.
  absl::StatusOr<int64_t> headId();
  int64_t payloadBytes() const { return payload_bytes_.load(std::memory_order_relaxed); }

  IngestLogStats stats() const;

 private:
  IngestLog(sqlite3* db, IngestLogOptions options) : db_(db), options_(options) {}
  absl::Status exec(const char* sql) { return exec(db_, sql); }
  static absl::Status exec(sqlite3* db, const char* sql);
  absl::Status sqliteError(const char* what) const { return sqliteError(db_, what); }
  static absl::Status sqliteError(sqlite3* db, const char* what);
  absl::Status prepareWriter() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void finalizeWriter() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  sqlite3* db_;  // event-loop side: reads, cursors, retention
  IngestLogOptions options_;
  std::atomic<int64_t> payload_bytes_{0};
  mutable absl::Mutex stats_mu_;
  IngestLogStats stats_ ABSL_GUARDED_BY(stats_mu_);

  // The append side: its own connection and prepared statements, used under write_mu_.
  absl::Mutex write_mu_;
  sqlite3* writer_ ABSL_GUARDED_BY(write_mu_) = nullptr;
  sqlite3_stmt* last_seq_stmt_ ABSL_GUARDED_BY(write_mu_) = nullptr;
  sqlite3_stmt* insert_stmt_ ABSL_GUARDED_BY(write_mu_) = nullptr;
  sqlite3_stmt* position_stmt_ ABSL_GUARDED_BY(write_mu_) = nullptr;
};

}  // namespace vigil::aggregator
