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

absl::Status IngestLog::sqliteError(const char* what) const {
  return absl::UnavailableError(absl::StrCat("ingest log: ", what, ": ", sqlite3_errmsg(db_)));
}

absl::Status IngestLog::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return absl::UnavailableError(absl::StrCat("ingest log: ", msg));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<IngestLog>> IngestLog::open(const std::string& path,
                                                           IngestLogOptions options) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open ingest log ", path, ": ", msg));
  }
  std::unique_ptr<IngestLog> log(new IngestLog(db, options));
  sqlite3_busy_timeout(db, 5000);
  // WAL + FULL: a committed append survives a crash of the process or the machine.
  for (const char* pragma : {"PRAGMA journal_mode=WAL;", "PRAGMA synchronous=FULL;"}) {
    if (auto st = log->exec(pragma); !st.ok()) {
      return absl::UnavailableError(absl::StrCat(path, ": ", st.message()));
    }
  }
  if (auto st = log->exec(kSchema); !st.ok()) {
    return absl::UnavailableError(absl::StrCat(path, ": ", st.message()));
  }
  Stmt q;
  if (sqlite3_prepare_v2(db, "SELECT COALESCE(SUM(LENGTH(payload)),0) FROM frames", -1, &q.s,
                         nullptr) != SQLITE_OK ||
      sqlite3_step(q.s) != SQLITE_ROW) {
    return log->sqliteError("sizing");
  }
  log->payload_bytes_ = sqlite3_column_int64(q.s, 0);
  return log;
}

IngestLog::~IngestLog() { sqlite3_close(db_); }

absl::StatusOr<bool> IngestLog::append(const std::string& agent_id, uint64_t boot_epoch,
                                       uint64_t seq, wire::Encoding encoding, const void* payload,
                                       size_t size, int64_t now_ns) {
  auto last = lastSeq(agent_id, boot_epoch);
  if (!last.ok()) {
    stats_.append_errors++;
    return last.status();
  }
  if (seq <= *last) {
    stats_.duplicates++;
    return false;
  }
  if (auto st = exec("BEGIN IMMEDIATE;"); !st.ok()) {
    stats_.append_errors++;
    return st;
  }
  Stmt ins;
  Stmt pos;
  bool ok =
      sqlite3_prepare_v2(db_,
                         "INSERT OR IGNORE INTO frames(agent_id, boot_epoch, seq, received_ns, "
                         "encoding, payload) VALUES (?,?,?,?,?,?)",
                         -1, &ins.s, nullptr) == SQLITE_OK &&
      sqlite3_prepare_v2(db_,
                         "INSERT INTO agent_positions(agent_id, boot_epoch, last_seq) VALUES "
                         "(?,?,?) ON CONFLICT(agent_id, boot_epoch) DO UPDATE SET "
                         "last_seq=MAX(last_seq, excluded.last_seq)",
                         -1, &pos.s, nullptr) == SQLITE_OK;
  if (ok) {
    sqlite3_bind_text(ins.s, 1, agent_id.data(), static_cast<int>(agent_id.size()),
                      SQLITE_TRANSIENT);
    sqlite3_bind_int64(ins.s, 2, static_cast<int64_t>(boot_epoch));
    sqlite3_bind_int64(ins.s, 3, static_cast<int64_t>(seq));
    sqlite3_bind_int64(ins.s, 4, now_ns);
    sqlite3_bind_int(ins.s, 5, static_cast<int>(encoding));
    sqlite3_bind_blob64(ins.s, 6, payload, size, SQLITE_STATIC);
    ok = sqlite3_step(ins.s) == SQLITE_DONE;
  }
  bool inserted = ok && sqlite3_changes(db_) == 1;
  if (ok) {
    sqlite3_bind_text(pos.s, 1, agent_id.data(), static_cast<int>(agent_id.size()),
                      SQLITE_TRANSIENT);
    sqlite3_bind_int64(pos.s, 2, static_cast<int64_t>(boot_epoch));
    sqlite3_bind_int64(pos.s, 3, static_cast<int64_t>(seq));
    ok = sqlite3_step(pos.s) == SQLITE_DONE;
  }
  if (!ok) {
    absl::Status err = sqliteError("append");
    exec("ROLLBACK;").IgnoreError();
    stats_.append_errors++;
    return err;
  }
  if (auto st = exec("COMMIT;"); !st.ok()) {
    exec("ROLLBACK;").IgnoreError();
    stats_.append_errors++;
    return st;
  }
  if (!inserted) {
    stats_.duplicates++;
    return false;
  }
  payload_bytes_ += static_cast<int64_t>(size);
  stats_.appended++;
  return true;
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
  payload_bytes_ = bytes;
  stats_.retention_dropped += result.records_dropped;
  return result;
}

}  // namespace vigil::aggregator
