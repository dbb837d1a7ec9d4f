#include "userspace/agent/spool.h"

#include <fcntl.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "userspace/common/log.h"

namespace vigil {
namespace {

struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS frames (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  epoch INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  created_ns INTEGER NOT NULL,
  payload BLOB NOT NULL,
  UNIQUE (epoch, seq)
);
)sql";

bool isCorruption(int rc) {
  int primary = rc & 0xff;
  return primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB;
}

// Reads whatever rows of a (quarantined) spool can still be read, oldest first, stopping at the
// first error. Bounded by max_bytes so a huge damaged file cannot exhaust memory.
std::vector<SpoolEntry> salvage(const std::string& path, int64_t max_bytes) {
  std::vector<SpoolEntry> out;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return out;
  }
  {
    Stmt q;
    if (sqlite3_prepare_v2(db,
                           "SELECT epoch, seq, created_ns, payload FROM frames ORDER BY id DESC",
                           -1, &q.s, nullptr) == SQLITE_OK) {
      int64_t bytes = 0;
      while (sqlite3_step(q.s) == SQLITE_ROW) {
        SpoolEntry e;
        e.epoch = static_cast<uint64_t>(sqlite3_column_int64(q.s, 0));
        e.seq = static_cast<uint64_t>(sqlite3_column_int64(q.s, 1));
        e.created_ns = sqlite3_column_int64(q.s, 2);
        const void* p = sqlite3_column_blob(q.s, 3);
        int n = sqlite3_column_bytes(q.s, 3);
        if (p == nullptr || n <= 0) {
          continue;
        }
        e.payload.assign(static_cast<const char*>(p), static_cast<size_t>(n));
        bytes += n;
        if (bytes > max_bytes) {
          break;
        }
        out.push_back(std::move(e));
      }
    }
  }
  sqlite3_close(db);
  // Newest-first scan (the newest frames matter most if the file is damaged midway).
  std::reverse(out.begin(), out.end());
  return out;
}

}  // namespace

absl::Status Spool::error(const char* what) const {
  return absl::UnavailableError(
      absl::StrCat("spool ", path_, ": ", what, ": ", sqlite3_errmsg(db_)));
}

absl::Status Spool::exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    if (isCorruption(rc)) {
      return absl::DataLossError(absl::StrCat("spool ", path_, ": ", msg));
    }
    return absl::UnavailableError(absl::StrCat("spool ", path_, ": ", msg));
  }
  return absl::OkStatus();
}

absl::Status Spool::refreshSize() {
  Stmt q;
  int rc = sqlite3_prepare_v2(db_, "SELECT COALESCE(SUM(LENGTH(payload)),0), COUNT(*) FROM frames",
                              -1, &q.s, nullptr);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(q.s);
  }
  if (rc != SQLITE_ROW) {
    if (isCorruption(rc)) {
      return absl::DataLossError(absl::StrCat("spool ", path_, ": ", sqlite3_errstr(rc)));
    }
    return error("sizing");
  }
  bytes_ = sqlite3_column_int64(q.s, 0);
  frames_ = sqlite3_column_int64(q.s, 1);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Spool>> Spool::openChecked(const std::string& path,
                                                          SpoolOptions options, bool* corrupt) {
  *corrupt = false;
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    *corrupt = isCorruption(rc);
    return absl::UnavailableError(absl::StrCat("cannot open spool ", path, ": ", msg));
  }
  std::unique_ptr<Spool> spool(new Spool(db, path, options));
  sqlite3_busy_timeout(db, 2000);
  // WAL + FULL: a committed append survives a crash of the process or the machine. The spool is
  // written once and read once per frame, so SQLite's default 2 MiB page cache (filled by the
  // overflow pages of large frames under process churn, and kept) buys nothing: 256 KiB.
  for (const char* sql : {"PRAGMA journal_mode=WAL;", "PRAGMA synchronous=FULL;",
                          "PRAGMA cache_size=-256;", kSchema}) {
    if (auto st = spool->exec(sql); !st.ok()) {
      *corrupt = absl::IsDataLoss(st);
      return st;
    }
  }
  Stmt check;
  if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &check.s, nullptr) != SQLITE_OK) {
    *corrupt = true;
    return spool->error("integrity check");
  }
  rc = sqlite3_step(check.s);
  if (rc != SQLITE_ROW ||
      std::string(reinterpret_cast<const char*>(sqlite3_column_text(check.s, 0))) != "ok") {
    *corrupt = true;
    return absl::DataLossError(absl::StrCat("spool ", path, " failed its integrity check"));
  }
  if (auto st = spool->refreshSize(); !st.ok()) {
    *corrupt = absl::IsDataLoss(st);
    return st;
  }
  return spool;
}

absl::StatusOr<std::unique_ptr<Spool>> Spool::open(const std::string& path, SpoolOptions options) {
  std::string lock_path = path + ".lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot create spool lock ", lock_path, ": ", strerror(errno)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat(
        "spool ", path, " is in use by another vigil-agent (give each agent its own --spool_dir)"));
  }
  auto spool = openUnlocked(path, options);
  if (!spool.ok()) {
    close(fd);
    return spool;
  }
  (*spool)->lock_fd_ = fd;
  if (!options.owner.empty()) {
    auto owner = (*spool)->owner();
    if (owner.ok() && !owner->empty() && *owner != options.owner) {
      std::string aside = absl::StrCat(path, ".orphan-", static_cast<int64_t>(time(nullptr)));
      VIGIL_LOG_WARN("spool %s belongs to agent '%s', not '%s'; moving it to %s", path, *owner,
                     options.owner, aside);
      (*spool)->lock_fd_ = -1;
      spool->reset();
      rename(path.c_str(), aside.c_str());
      for (const char* suffix : {"-wal", "-shm"}) {
        rename((path + suffix).c_str(), (aside + suffix).c_str());
      }
      spool = openUnlocked(path, options);
      if (!spool.ok()) {
        close(fd);
        return spool;
      }
      (*spool)->lock_fd_ = fd;
      (*spool)->stats_.quarantined++;
    }
    if (auto st = (*spool)->setOwner(options.owner); !st.ok()) {
      return st;
    }
  }
  return spool;
}

absl::StatusOr<std::string> Spool::owner() {
  Stmt q;
  if (sqlite3_prepare_v2(db_, "SELECT value FROM meta WHERE key='owner'", -1, &q.s, nullptr) !=
      SQLITE_OK) {
    return error("read owner");
  }
  if (sqlite3_step(q.s) == SQLITE_ROW) {
    return std::string(reinterpret_cast<const char*>(sqlite3_column_text(q.s, 0)));
  }
  return std::string();
}

absl::Status Spool::setOwner(const std::string& owner) {
  Stmt q;
  if (sqlite3_prepare_v2(db_, "INSERT OR REPLACE INTO meta(key, value) VALUES ('owner', ?)", -1,
                         &q.s, nullptr) != SQLITE_OK) {
    return error("write owner");
  }
  sqlite3_bind_text(q.s, 1, owner.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(q.s) != SQLITE_DONE) {
    return error("write owner");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Spool>> Spool::openUnlocked(const std::string& path,
                                                           SpoolOptions options) {
  bool corrupt = false;
  auto spool = openChecked(path, options, &corrupt);
  if (spool.ok() || !corrupt) {
    return spool;
  }
  // Quarantine: move the damaged file (and its WAL) aside, salvage readable rows into a fresh
  // spool. The original is kept for post-mortem, never deleted.
  std::string aside = absl::StrCat(path, ".corrupt-", static_cast<int64_t>(time(nullptr)));
  VIGIL_LOG_ERROR("%s; moving it to %s and recovering what is readable", spool.status().message(),
                  aside);
  if (rename(path.c_str(), aside.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot quarantine corrupt spool ", path));
  }
  for (const char* suffix : {"-wal", "-shm"}) {
    std::string from = path + suffix;
    std::string to = aside + suffix;
    rename(from.c_str(), to.c_str());  // absent files are fine
  }
  std::vector<SpoolEntry> rows = salvage(aside, options.max_bytes);
  auto fresh = openChecked(path, options, &corrupt);
  if (!fresh.ok()) {
    return fresh.status();
  }
  (*fresh)->stats_.quarantined = 1;
  int64_t now = 0;
  for (const SpoolEntry& e : rows) {
    if (auto id = (*fresh)->append(e.epoch, e.seq, e.payload.data(), e.payload.size(),
                                   e.created_ns > now ? e.created_ns : now);
        id.ok()) {
      (*fresh)->stats_.recovered++;
    }
  }
  (*fresh)->stats_.appended = 0;
  VIGIL_LOG_WARN("recovered %d frame(s) from the quarantined spool %s", rows.size(), aside);
  return fresh;
}

Spool::~Spool() {
  sqlite3_close(db_);
  if (lock_fd_ >= 0) {
    close(lock_fd_);
  }
}

absl::StatusOr<int64_t> Spool::append(uint64_t epoch, uint64_t seq, const void* payload,
                                      size_t size, int64_t now_ns) {
  Stmt ins;
  int rc = sqlite3_prepare_v2(
      db_, "INSERT OR IGNORE INTO frames(epoch, seq, created_ns, payload) VALUES (?,?,?,?)", -1,
      &ins.s, nullptr);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(ins.s, 1, static_cast<int64_t>(epoch));
    sqlite3_bind_int64(ins.s, 2, static_cast<int64_t>(seq));
    sqlite3_bind_int64(ins.s, 3, now_ns);
    sqlite3_bind_blob(ins.s, 4, payload, static_cast<int>(size), SQLITE_TRANSIENT);
    rc = sqlite3_step(ins.s);
  }
  if (rc != SQLITE_DONE) {
    stats_.write_errors++;
    return error("append");
  }
  int64_t id = sqlite3_last_insert_rowid(db_);
  stats_.appended++;
  bytes_ += static_cast<int64_t>(size);
  frames_++;
  if (auto st = enforceBounds(now_ns); !st.ok()) {
    VIGIL_LOG_WARN("%s", st.message());
  }
  return id;
}

absl::StatusOr<std::vector<SpoolEntry>> Spool::readAfter(int64_t after_id, size_t limit) {
  Stmt q;
  if (sqlite3_prepare_v2(
          db_,
          "SELECT id, epoch, seq, created_ns, payload FROM frames WHERE id > ? ORDER BY id LIMIT ?",
          -1, &q.s, nullptr) != SQLITE_OK) {
    return error("read");
  }
  sqlite3_bind_int64(q.s, 1, after_id);
  sqlite3_bind_int64(q.s, 2, static_cast<int64_t>(limit));
  std::vector<SpoolEntry> out;
  int rc;
  while ((rc = sqlite3_step(q.s)) == SQLITE_ROW) {
    SpoolEntry e;
    e.id = sqlite3_column_int64(q.s, 0);
    e.epoch = static_cast<uint64_t>(sqlite3_column_int64(q.s, 1));
    e.seq = static_cast<uint64_t>(sqlite3_column_int64(q.s, 2));
    e.created_ns = sqlite3_column_int64(q.s, 3);
    const void* p = sqlite3_column_blob(q.s, 4);
    e.payload.assign(static_cast<const char*>(p),
                     static_cast<size_t>(sqlite3_column_bytes(q.s, 4)));
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) {
    return error("read");
  }
  return out;
}

absl::Status Spool::removeThrough(int64_t id) {
  Stmt del;
  int rc = sqlite3_prepare_v2(db_, "DELETE FROM frames WHERE id <= ?", -1, &del.s, nullptr);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(del.s, 1, id);
    rc = sqlite3_step(del.s);
  }
  if (rc != SQLITE_DONE) {
    stats_.write_errors++;
    return error("remove");
  }
  stats_.removed += static_cast<uint64_t>(sqlite3_changes(db_));
  return refreshSize();
}

absl::Status Spool::enforceBounds(int64_t now_ns) {
  if (now_ns > 0 && options_.max_age_ns > 0) {
    Stmt del;
    if (sqlite3_prepare_v2(db_, "DELETE FROM frames WHERE created_ns < ?", -1, &del.s, nullptr) !=
            SQLITE_OK ||
        (sqlite3_bind_int64(del.s, 1, now_ns - options_.max_age_ns), sqlite3_step(del.s)) !=
            SQLITE_DONE) {
      return error("age bound");
    }
    int n = sqlite3_changes(db_);
    if (n > 0) {
      stats_.dropped_age += static_cast<uint64_t>(n);
      if (auto st = refreshSize(); !st.ok()) {
        return st;
      }
    }
  }
  while (bytes_ > options_.max_bytes && frames_ > 1) {
    // Delete the oldest 1/8 of the rows at a time (at least one), then re-measure.
    int64_t batch = frames_ / 8 > 0 ? frames_ / 8 : 1;
    Stmt del;
    if (sqlite3_prepare_v2(
            db_, "DELETE FROM frames WHERE id IN (SELECT id FROM frames ORDER BY id LIMIT ?)", -1,
            &del.s, nullptr) != SQLITE_OK ||
        (sqlite3_bind_int64(del.s, 1, batch), sqlite3_step(del.s)) != SQLITE_DONE) {
      return error("size bound");
    }
    stats_.dropped_full += static_cast<uint64_t>(sqlite3_changes(db_));
    if (auto st = refreshSize(); !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

}  // namespace vigil
