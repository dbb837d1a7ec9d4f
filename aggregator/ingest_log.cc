#include "aggregator/ingest_log.h"

#include "absl/strings/str_cat.h"

namespace vigil::aggregator {
namespace {

// Finalizes a prepared statement when it goes out of scope.
struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS frames (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  agent_id TEXT NOT NULL,
  boot_epoch INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  received_ns INTEGER NOT NULL,
  encoding INTEGER NOT NULL,
  payload BLOB NOT NULL,
  UNIQUE (agent_id, boot_epoch, seq)
);
CREATE TABLE IF NOT EXISTS agent_positions (
  agent_id TEXT NOT NULL,
  boot_epoch INTEGER NOT NULL,
  last_seq INTEGER NOT NULL,
  PRIMARY KEY (agent_id, boot_epoch)
);
CREATE TABLE IF NOT EXISTS cursors (
  consumer TEXT PRIMARY KEY,
  position INTEGER NOT NULL
);
)sql";

}  // namespace

absl::Status IngestLog::sqliteError(sqlite3* db, const char* what) {
  return absl::UnavailableError(absl::StrCat("ingest log: ", what, ": ", sqlite3_errmsg(db)));
}

absl::Status IngestLog::exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return absl::UnavailableError(absl::StrCat("ingest log: ", msg));
  }
  return absl::OkStatus();
}

namespace {

absl::StatusOr<sqlite3*> openConnection(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open ingest log ", path, ": ", msg));
  }
  sqlite3_busy_timeout(db, 5000);
  return db;
}

}  // namespace

absl::StatusOr<std::unique_ptr<IngestLog>> IngestLog::open(const std::string& path,
                                                           IngestLogOptions options) {
  auto db = openConnection(path);
  if (!db.ok()) {
    return db.status();
  }
  std::unique_ptr<IngestLog> log(new IngestLog(*db, options));
  // WAL + FULL: a committed append survives a crash of the process or the machine. (WAL is a
  // property of the database file; synchronous is per connection and set on both.)
  for (const char* pragma : {"PRAGMA journal_mode=WAL;", "PRAGMA synchronous=FULL;"}) {
    if (auto st = log->exec(pragma); !st.ok()) {
      return absl::UnavailableError(absl::StrCat(path, ": ", st.message()));
    }
  }
  if (auto st = log->exec(kSchema); !st.ok()) {
    return absl::UnavailableError(absl::StrCat(path, ": ", st.message()));
  }
  Stmt q;
  if (sqlite3_prepare_v2(*db, "SELECT COALESCE(SUM(LENGTH(payload)),0) FROM frames", -1, &q.s,
                         nullptr) != SQLITE_OK ||
      sqlite3_step(q.s) != SQLITE_ROW) {
    return log->sqliteError("sizing");
  }
  log->payload_bytes_ = sqlite3_column_int64(q.s, 0);
  auto writer = openConnection(path);
  if (!writer.ok()) {
    return writer.status();
  }
  absl::MutexLock lock(&log->write_mu_);
  log->writer_ = *writer;
  if (auto st = exec(log->writer_, "PRAGMA synchronous=FULL;"); !st.ok()) {
    return absl::UnavailableError(absl::StrCat(path, ": ", st.message()));
  }
  if (auto st = log->prepareWriter(); !st.ok()) {
    return absl::UnavailableError(absl::StrCat(path, ": ", st.message()));
  }
  return log;
}

absl::Status IngestLog::prepareWriter() {
  if (sqlite3_prepare_v2(writer_,
                         "SELECT last_seq FROM agent_positions WHERE agent_id=? AND boot_epoch=?",
                         -1, &last_seq_stmt_, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(writer_,
                         "INSERT OR IGNORE INTO frames(agent_id, boot_epoch, seq, received_ns, "
                         "encoding, payload) VALUES (?,?,?,?,?,?)",
                         -1, &insert_stmt_, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(writer_,
                         "INSERT INTO agent_positions(agent_id, boot_epoch, last_seq) VALUES "
                         "(?,?,?) ON CONFLICT(agent_id, boot_epoch) DO UPDATE SET "
                         "last_seq=MAX(last_seq, excluded.last_seq)",
                         -1, &position_stmt_, nullptr) != SQLITE_OK) {
    return sqliteError(writer_, "prepare");
  }
  return absl::OkStatus();
}

void IngestLog::finalizeWriter() {
  for (sqlite3_stmt** s : {&last_seq_stmt_, &insert_stmt_, &position_stmt_}) {
    sqlite3_finalize(*s);
    *s = nullptr;
  }
}

IngestLog::~IngestLog() {
  {
    absl::MutexLock lock(&write_mu_);
    finalizeWriter();
    sqlite3_close(writer_);
  }
  sqlite3_close(db_);
}

IngestLogStats IngestLog::stats() const {
  absl::MutexLock lock(&stats_mu_);
  return stats_;
}

absl::StatusOr<bool> IngestLog::append(const std::string& agent_id, uint64_t boot_epoch,
                                       uint64_t seq, wire::Encoding encoding, const void* payload,
                                       size_t size, int64_t now_ns) {
  std::vector<AppendRequest> one(1);
  one[0].agent_id = &agent_id;
  one[0].boot_epoch = boot_epoch;
  one[0].seq = seq;
  one[0].encoding = encoding;
  one[0].payload = payload;
  one[0].size = size;
  one[0].now_ns = now_ns;
  if (auto st = appendBatch(one); !st.ok()) {
    return st;
  }
  return one[0].outcome == AppendRequest::Outcome::kAppended;
}

absl::Status IngestLog::appendBatch(std::vector<AppendRequest>& batch) {
  absl::MutexLock lock(&write_mu_);
  auto fail = [this, &batch](absl::Status st) {
    exec(writer_, "ROLLBACK;").IgnoreError();
    absl::MutexLock s(&stats_mu_);
    stats_.append_errors += static_cast<int64_t>(batch.size());
    return st;
  };
  if (batch.empty()) {
    return absl::OkStatus();
  }
  if (auto st = exec(writer_, "BEGIN IMMEDIATE;"); !st.ok()) {
    absl::MutexLock s(&stats_mu_);
    stats_.append_errors += static_cast<int64_t>(batch.size());
    return st;
  }
  int64_t bytes = 0;
  int64_t appended = 0;
  for (AppendRequest& r : batch) {
    const std::string& agent = *r.agent_id;
    int n = static_cast<int>(agent.size());
    // Below the agent's last accepted seq (this transaction sees the batch's own earlier rows).
    sqlite3_reset(last_seq_stmt_);
    sqlite3_bind_text(last_seq_stmt_, 1, agent.data(), n, SQLITE_STATIC);
    sqlite3_bind_int64(last_seq_stmt_, 2, static_cast<int64_t>(r.boot_epoch));
    int rc = sqlite3_step(last_seq_stmt_);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      return fail(sqliteError(writer_, "lastSeq"));
    }
    uint64_t last =
        rc == SQLITE_ROW ? static_cast<uint64_t>(sqlite3_column_int64(last_seq_stmt_, 0)) : 0;
    sqlite3_reset(last_seq_stmt_);
    if (r.seq <= last) {
      r.outcome = AppendRequest::Outcome::kDuplicate;
      continue;
    }
    sqlite3_reset(insert_stmt_);
    sqlite3_bind_text(insert_stmt_, 1, agent.data(), n, SQLITE_STATIC);
    sqlite3_bind_int64(insert_stmt_, 2, static_cast<int64_t>(r.boot_epoch));
    sqlite3_bind_int64(insert_stmt_, 3, static_cast<int64_t>(r.seq));
    sqlite3_bind_int64(insert_stmt_, 4, r.now_ns);
    sqlite3_bind_int(insert_stmt_, 5, static_cast<int>(r.encoding));
    sqlite3_bind_blob64(insert_stmt_, 6, r.payload, r.size, SQLITE_STATIC);
    if (sqlite3_step(insert_stmt_) != SQLITE_DONE) {
      return fail(sqliteError(writer_, "append"));
    }
    bool inserted = sqlite3_changes(writer_) == 1;
    sqlite3_reset(insert_stmt_);
    sqlite3_reset(position_stmt_);
    sqlite3_bind_text(position_stmt_, 1, agent.data(), n, SQLITE_STATIC);
    sqlite3_bind_int64(position_stmt_, 2, static_cast<int64_t>(r.boot_epoch));
    sqlite3_bind_int64(position_stmt_, 3, static_cast<int64_t>(r.seq));
    if (sqlite3_step(position_stmt_) != SQLITE_DONE) {
      return fail(sqliteError(writer_, "append"));
    }
    sqlite3_reset(position_stmt_);
    r.outcome = inserted ? AppendRequest::Outcome::kAppended : AppendRequest::Outcome::kDuplicate;
    if (inserted) {
      bytes += static_cast<int64_t>(r.size);
      appended++;
    }
  }
  if (auto st = exec(writer_, "COMMIT;"); !st.ok()) {
    return fail(st);
  }
  payload_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  absl::MutexLock s(&stats_mu_);
  stats_.appended += appended;
  stats_.duplicates += static_cast<int64_t>(batch.size()) - appended;
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> IngestLog::lastSeq(const std::string& agent_id, uint64_t boot_epoch) {
  Stmt q;
  if (sqlite3_prepare_v2(db_,
                         "SELECT last_seq FROM agent_positions WHERE agent_id=? AND boot_epoch=?",
                         -1, &q.s, nullptr) != SQLITE_OK) {
    return sqliteError("lastSeq");
  }
  sqlite3_bind_text(q.s, 1, agent_id.data(), static_cast<int>(agent_id.size()), SQLITE_TRANSIENT);
  sqlite3_bind_int64(q.s, 2, static_cast<int64_t>(boot_epoch));
  int rc = sqlite3_step(q.s);
  if (rc == SQLITE_ROW) {
    return static_cast<uint64_t>(sqlite3_column_int64(q.s, 0));
  }
  if (rc == SQLITE_DONE) {
    return 0;
  }
  return sqliteError("lastSeq");
}

absl::StatusOr<std::vector<LogRecord>> IngestLog::readAfter(int64_t after_id, size_t limit) {
  Stmt q;
  if (sqlite3_prepare_v2(db_,
                         "SELECT id, agent_id, boot_epoch, seq, received_ns, encoding, payload "
                         "FROM frames WHERE id > ? ORDER BY id LIMIT ?",
                         -1, &q.s, nullptr) != SQLITE_OK) {
    return sqliteError("readAfter");
  }
  sqlite3_bind_int64(q.s, 1, after_id);
  sqlite3_bind_int64(q.s, 2, static_cast<int64_t>(limit));
  std::vector<LogRecord> out;
  int rc;
  while ((rc = sqlite3_step(q.s)) == SQLITE_ROW) {
    LogRecord r;
    r.id = sqlite3_column_int64(q.s, 0);
    r.agent_id = reinterpret_cast<const char*>(sqlite3_column_text(q.s, 1));
    r.boot_epoch = static_cast<uint64_t>(sqlite3_column_int64(q.s, 2));
    r.seq = static_cast<uint64_t>(sqlite3_column_int64(q.s, 3));
    r.received_ns = sqlite3_column_int64(q.s, 4);
    r.encoding = static_cast<wire::Encoding>(sqlite3_column_int(q.s, 5));
    const void* blob = sqlite3_column_blob(q.s, 6);
    int n = sqlite3_column_bytes(q.s, 6);
    r.payload.assign(static_cast<const char*>(blob), static_cast<size_t>(n));
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) {
    return sqliteError("readAfter");
  }
  return out;
}

absl::StatusOr<int64_t> IngestLog::cursor(const std::string& consumer) {
  Stmt q;
  if (sqlite3_prepare_v2(db_, "SELECT position FROM cursors WHERE consumer=?", -1, &q.s, nullptr) !=
      SQLITE_OK) {
    return sqliteError("cursor");
  }
  sqlite3_bind_text(q.s, 1, consumer.data(), static_cast<int>(consumer.size()), SQLITE_TRANSIENT);
  int rc = sqlite3_step(q.s);
  if (rc == SQLITE_ROW) {
    return sqlite3_column_int64(q.s, 0);
  }
  if (rc == SQLITE_DONE) {
    return 0;
  }
  return sqliteError("cursor");
}

absl::Status IngestLog::setCursor(const std::string& consumer, int64_t id) {
  Stmt q;
  if (sqlite3_prepare_v2(db_,
                         "INSERT INTO cursors(consumer, position) VALUES (?,?) ON "
                         "CONFLICT(consumer) DO UPDATE SET position=excluded.position",
                         -1, &q.s, nullptr) != SQLITE_OK) {
    return sqliteError("setCursor");
  }
  sqlite3_bind_text(q.s, 1, consumer.data(), static_cast<int>(consumer.size()), SQLITE_TRANSIENT);
  sqlite3_bind_int64(q.s, 2, id);
  if (sqlite3_step(q.s) != SQLITE_DONE) {
    return sqliteError("setCursor");
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> IngestLog::headId() {
  Stmt q;
  if (sqlite3_prepare_v2(db_, "SELECT COALESCE(MAX(id),0) FROM frames", -1, &q.s, nullptr) !=
          SQLITE_OK ||
      sqlite3_step(q.s) != SQLITE_ROW) {
    return sqliteError("headId");
  }
  return sqlite3_column_int64(q.s, 0);
}

absl::StatusOr<RetentionResult> IngestLog::enforceRetention(int64_t now_ns) {
  RetentionResult result;
  // Age first, then size: walk the oldest records until both bounds hold.
  Stmt q;
  if (sqlite3_prepare_v2(db_, "SELECT id, received_ns, LENGTH(payload) FROM frames ORDER BY id", -1,
                         &q.s, nullptr) != SQLITE_OK) {
    return sqliteError("retention");
  }
  int64_t cut_id = 0;
  int64_t bytes = payload_bytes_;
  while (sqlite3_step(q.s) == SQLITE_ROW) {
    int64_t id = sqlite3_column_int64(q.s, 0);
    int64_t received = sqlite3_column_int64(q.s, 1);
    int64_t len = sqlite3_column_int64(q.s, 2);
    if (now_ns - received <= options_.max_age_ns && bytes <= options_.max_bytes) {
      break;
    }
    cut_id = id;
    bytes -= len;
    result.records_dropped++;
    result.bytes_dropped += len;
  }
  if (cut_id == 0) {
    return result;
  }
  Stmt del;
  if (sqlite3_prepare_v2(db_, "DELETE FROM frames WHERE id <= ?", -1, &del.s, nullptr) !=
      SQLITE_OK) {
    return sqliteError("retention");
  }
  sqlite3_bind_int64(del.s, 1, cut_id);
  if (sqlite3_step(del.s) != SQLITE_DONE) {
    return sqliteError("retention");
  }
  payload_bytes_.fetch_sub(result.bytes_dropped, std::memory_order_relaxed);
  absl::MutexLock lock(&stats_mu_);
  stats_.retention_dropped += result.records_dropped;
  return result;
}

}  // namespace vigil::aggregator
