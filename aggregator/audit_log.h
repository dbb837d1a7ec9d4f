// Append-only audit log of admin actions and denied API calls (who, what, when, target,
// result), kept in SQLite in the data dir. There is no API to change or delete entries.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace vigil::aggregator {

struct AuditEntry {
  int64_t id = 0;
  int64_t time_ms = 0;
  std::string who;     // token name, or "anonymous"
  std::string role;    // admin, viewer, or "" when unauthenticated
  std::string remote;  // peer address
  std::string action;  // e.g. "POST /api/v1/config"
  std::string target;  // agent ids, selector, rule file...
  std::string result;  // "ok", "denied: 401 ...", "error: ..."
};

class AuditLog {
 public:
  static absl::StatusOr<std::unique_ptr<AuditLog>> open(const std::string& path);
  ~AuditLog();

  // Appends durably (synchronous=FULL). Returns the entry id.
  absl::StatusOr<int64_t> append(AuditEntry entry);
  // Entries with id > after_id, oldest first, at most `limit`.
  absl::StatusOr<std::vector<AuditEntry>> query(int64_t after_id, size_t limit) const;
  uint64_t appendErrors() const { return append_errors_; }

 private:
  AuditLog() = default;
  sqlite3* db_ = nullptr;
  uint64_t append_errors_ = 0;
};

}  // namespace vigil::aggregator
