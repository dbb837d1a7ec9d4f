#include "aggregator/audit_log.h"

#include "absl/strings/str_cat.h"

namespace vigil::aggregator {

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::open(const std::string& path) {
  std::unique_ptr<AuditLog> log(new AuditLog());
  if (sqlite3_open(path.c_str(), &log->db_) != SQLITE_OK) {
    return absl::UnavailableError(absl::StrCat("cannot open audit log ", path, ": ",
                                               log->db_ ? sqlite3_errmsg(log->db_) : "no memory"));
  }
  char* err = nullptr;
  const char* ddl =
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
      "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT,"
      " time_ms INTEGER NOT NULL, who TEXT NOT NULL, role TEXT NOT NULL, remote TEXT NOT NULL,"
      " action TEXT NOT NULL, target TEXT NOT NULL, result TEXT NOT NULL);"
      // Append-only: the database itself refuses updates and deletes.
      "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit"
      " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;"
      "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit"
      " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;";
  if (sqlite3_exec(log->db_, ddl, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "?";
    sqlite3_free(err);
    return absl::UnavailableError(absl::StrCat("cannot create audit table in ", path, ": ", msg));
  }
  return log;
}

AuditLog::~AuditLog() {
  if (db_ != nullptr) {
    sqlite3_close(db_);
  }
}

absl::StatusOr<int64_t> AuditLog::append(AuditEntry e) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db_,
                         "INSERT INTO audit (time_ms, who, role, remote, action, target, result)"
                         " VALUES (?,?,?,?,?,?,?)",
                         -1, &st, nullptr) != SQLITE_OK) {
    append_errors_++;
    return absl::UnavailableError(absl::StrCat("audit append: ", sqlite3_errmsg(db_)));
  }
  sqlite3_bind_int64(st, 1, e.time_ms);
  int i = 2;
  for (const std::string* s : {&e.who, &e.role, &e.remote, &e.action, &e.target, &e.result}) {
    sqlite3_bind_text(st, i++, s->c_str(), static_cast<int>(s->size()), SQLITE_TRANSIENT);
  }
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    append_errors_++;
    return absl::UnavailableError(absl::StrCat("audit append: ", sqlite3_errmsg(db_)));
  }
  return sqlite3_last_insert_rowid(db_);
}

absl::StatusOr<std::vector<AuditEntry>> AuditLog::query(int64_t after_id, size_t limit) const {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db_,
                         "SELECT id, time_ms, who, role, remote, action, target, result FROM audit"
                         " WHERE id > ? ORDER BY id LIMIT ?",
                         -1, &st, nullptr) != SQLITE_OK) {
    return absl::UnavailableError(absl::StrCat("audit query: ", sqlite3_errmsg(db_)));
  }
  sqlite3_bind_int64(st, 1, after_id);
  sqlite3_bind_int64(st, 2, static_cast<int64_t>(limit));
  std::vector<AuditEntry> out;
  auto text = [&](int col) {
    const unsigned char* t = sqlite3_column_text(st, col);
    return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
  };
  while (sqlite3_step(st) == SQLITE_ROW) {
    out.push_back({sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), text(2), text(3),
                   text(4), text(5), text(6), text(7)});
  }
  sqlite3_finalize(st);
  return out;
}

}  // namespace vigil::aggregator
