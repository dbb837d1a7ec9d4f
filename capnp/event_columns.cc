#include "capnp/event_columns.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "capnp/frame_codec.h"

namespace vigil {
namespace {

using wire::Event;

// Local to this file: the codec reads a few dozen fields, each of which can fail.
#define RETURN_IF_ERROR(expr)      \
  do {                             \
    absl::Status status_ = (expr); \
    if (!status_.ok()) {           \
      return status_;              \
    }                              \
  } while (false)

// Assigns the value of a StatusOr expression to `lhs`, or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(lhs, expr, COLUMNS_CONCAT(status_or_, __LINE__))
#define COLUMNS_CONCAT(a, b) COLUMNS_CONCAT_IMPL(a, b)
#define COLUMNS_CONCAT_IMPL(a, b) a##b
#define ASSIGN_OR_RETURN_IMPL(lhs, expr, tmp) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) {                            \
    return tmp.status();                      \
  }                                           \
  lhs = *std::move(tmp)

// The columns that hold varints (every Data field but `kind`).
enum Column {
  kTime,
  kPid,
  kTid,
  kPpid,
  kCgroup,
  kComm,
  kContainerId,
  kPodUid,
  kFilename,
  kArgv,
  kExit,
  kFork,
  kOomKill,
  kSignal,
  kTcpState,
  kLiterals,
  kColumnCount
};

const char* columnName(Column c) {
  static const char* const kNames[kColumnCount] = {
      "time",     "pid",  "tid",  "ppid", "cgroup",  "comm",   "containerId", "podUid",
      "filename", "argv", "exit", "fork", "oomKill", "signal", "tcpState",    "literals"};
  return kNames[c];
}

// Recent pids: a pid is coded as its position in this list when it is there, else as an escape.
constexpr size_t kRecentPids = 16;
// The union members, in schema order; a kind byte's member must be one of them.
constexpr unsigned kLastKind = Event::TCP_STATE;

uint64_t zigzag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
int64_t unzigzag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }
// Differences of unsigned fields, modulo 2^64, so every pair of values round-trips.
int64_t diff(uint64_t a, uint64_t b) { return static_cast<int64_t>(a - b); }

void putVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

absl::string_view view(capnp::Text::Reader t) { return absl::string_view(t.begin(), t.size()); }
absl::string_view view(capnp::Data::Reader d) {
  return absl::string_view(reinterpret_cast<const char*>(d.begin()), d.size());
}
capnp::Data::Reader asData(absl::string_view s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

// The pid model both sides run over the events in order. Under process churn the events of a
// new process follow its parent's fork (fork, then the child's exec and exit), so a pid is
// usually one of a few recent ones and a fork's child is usually one past the previous child.
class PidModel {
 public:
  uint64_t code(uint32_t pid) const {
    for (size_t i = 0; i < recent_.size(); ++i) {
      if (recent_[i] == pid) {
        return i;
      }
    }
    return kRecentPids + zigzag(diff(pid, front()));
  }
  absl::StatusOr<uint32_t> pid(uint64_t code) const {
    if (code < recent_.size()) {
      return recent_[code];
    }
    if (code < kRecentPids) {
      return absl::InvalidArgumentError(absl::StrCat("event column pid: position ", code,
                                                     " past the ", recent_.size(), " recent pids"));
    }
    const int64_t delta = unzigzag(code - kRecentPids);
    int64_t pid = 0;
    if (__builtin_add_overflow(static_cast<int64_t>(front()), delta, &pid) || pid < 0 ||
        pid > std::numeric_limits<uint32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("event column pid: pid ", front(), " + ", delta, " out of range"));
    }
    return static_cast<uint32_t>(pid);
  }
  uint64_t childCode(uint32_t child) const { return zigzag(diff(child, next_child_)); }
  uint64_t nextChild() const { return next_child_; }
  // An exit's lifetime predicted as the time since its fork event in this frame, else 0.
  int64_t lifetimeGuess(uint32_t pid, int64_t exit_time) const {
    auto it = fork_time_.find(pid);
    return it == fork_time_.end() ? 0
                                  : static_cast<int64_t>(static_cast<uint64_t>(exit_time) -
                                                         static_cast<uint64_t>(it->second));
  }
  // Updates the model with an event once it is coded.
  void saw(Event::Reader e) {
    toFront(e.getPid());
    if (e.isFork() && e.hasFork()) {
      const uint32_t child = e.getFork().getChildPid();
      toFront(child);
      next_child_ = static_cast<uint64_t>(child) + 1;
      fork_time_[child] = e.getTimestampNs();
    } else if (e.isExit()) {
      fork_time_.erase(e.getPid());
    }
  }

 private:
  uint32_t front() const { return recent_.empty() ? 0 : recent_[0]; }
  void toFront(uint32_t pid) {
    auto it = std::find(recent_.begin(), recent_.end(), pid);
    if (it != recent_.end()) {
      recent_.erase(it);
    } else if (recent_.size() == kRecentPids) {
      recent_.pop_back();
    }
    recent_.insert(recent_.begin(), pid);
  }

  std::vector<uint32_t> recent_;
  uint64_t next_child_ = 0;
  absl::flat_hash_map<uint32_t, int64_t> fork_time_;  // child pid -> its fork event's time
};

class Encoder {
 public:
  void putString(Column c, bool has, absl::string_view s) {
    if (!has) {
      putVarint(cols_[c], 0);
      return;
    }
    auto it = table_.find(s);
    if (it != table_.end()) {
      putVarint(cols_[c], it->second + 1);
      return;
    }
    putVarint(cols_[c], table_.size() + 1);
    putVarint(cols_[kLiterals], s.size());
    cols_[kLiterals].append(s.data(), s.size());
    table_.emplace(std::string(s), table_.size());
  }
  void put(Column c, uint64_t v) { putVarint(cols_[c], v); }
  void putSigned(Column c, int64_t v) { putVarint(cols_[c], zigzag(v)); }
  const std::string& column(Column c) const { return cols_[c]; }

 private:
  absl::flat_hash_map<std::string, uint64_t> table_;
  std::string cols_[kColumnCount];
};

// Whether the event's union member has its struct set (a member can be selected with a null
// payload, which must come back the same way).
bool payloadSet(Event::Reader e) {
  switch (e.which()) {
    case Event::EXEC:
      return e.hasExec();
    case Event::EXIT:
      return e.hasExit();
    case Event::FORK:
      return e.hasFork();
    case Event::OOM_KILL:
      return e.hasOomKill();
    case Event::SIGNAL:
      return e.hasSignal();
    case Event::TCP_STATE:
      return e.hasTcpState();
  }
  return false;
}

}  // namespace

void writeEventColumns(const std::vector<Event::Reader>& events, wire::EventColumns::Builder out) {
  Encoder enc;
  PidModel pids;
  std::string kinds;
  kinds.reserve(events.size());
  int64_t last_time = 0;
  uint32_t last_ppid = 0;
  uint64_t last_cgroup = 0;
  for (const Event::Reader& e : events) {
    const bool present = payloadSet(e);
    bool flag = false;
    if (present && e.isExec()) {
      flag = e.getExec().getArgvTruncated();
    } else if (present && e.isExit()) {
      flag = e.getExit().getCoreDumped();
    }
    kinds.push_back(static_cast<char>((static_cast<unsigned>(e.which()) << 2) |
                                      (static_cast<unsigned>(present) << 1) |
                                      static_cast<unsigned>(flag)));
    enc.putSigned(
        kTime, diff(static_cast<uint64_t>(e.getTimestampNs()), static_cast<uint64_t>(last_time)));
    last_time = e.getTimestampNs();
    const uint32_t pid = e.getPid();
    enc.put(kPid, pids.code(pid));
    enc.putSigned(kTid, diff(e.getTid(), pid));
    enc.putSigned(kPpid, diff(e.getPpid(), last_ppid));
    enc.putSigned(kCgroup, diff(e.getCgroupId(), last_cgroup));
    last_ppid = e.getPpid();
    last_cgroup = e.getCgroupId();
    enc.putString(kComm, e.hasComm(), view(e.getComm()));
    enc.putString(kContainerId, e.hasContainerId(), view(e.getContainerId()));
    enc.putString(kPodUid, e.hasPodUid(), view(e.getPodUid()));
    if (present) {
      switch (e.which()) {
        case Event::EXEC: {
          auto x = e.getExec();
          enc.putString(kFilename, x.hasFilename(), view(x.getFilename()));
          enc.putString(kArgv, x.hasArgv(), view(x.getArgv()));
          break;
        }
        case Event::EXIT: {
          auto x = e.getExit();
          enc.putSigned(kExit, x.getExitCode());
          enc.putSigned(kExit, x.getSignal());
          enc.putSigned(kExit, diff(x.getLifetimeNs(), static_cast<uint64_t>(pids.lifetimeGuess(
                                                           pid, e.getTimestampNs()))));
          break;
        }
        case Event::FORK:
          enc.put(kFork, pids.childCode(e.getFork().getChildPid()));
          break;
        case Event::OOM_KILL: {
          auto x = e.getOomKill();
          enc.putSigned(kOomKill, diff(x.getVictimPid(), pid));
          enc.putString(kOomKill, x.hasVictimComm(), view(x.getVictimComm()));
          enc.put(kOomKill, x.getVictimCgroupId());
          enc.put(kOomKill, x.getTotalVmKb());
          enc.put(kOomKill, x.getAnonRssKb());
          break;
        }
        case Event::SIGNAL: {
          auto x = e.getSignal();
          enc.putSigned(kSignal, x.getSignal());
          enc.putSigned(kSignal, diff(x.getTargetPid(), pid));
          enc.putSigned(kSignal, diff(x.getSenderPid(), pid));
          enc.putSigned(kSignal, x.getResult());
          break;
        }
        case Event::TCP_STATE: {
          auto x = e.getTcpState();
          enc.put(kTcpState, x.getFamily());
          enc.putString(kTcpState, x.hasSaddr(), view(x.getSaddr()));
          enc.putString(kTcpState, x.hasDaddr(), view(x.getDaddr()));
          enc.put(kTcpState, x.getSport());
          enc.put(kTcpState, x.getDport());
          enc.put(kTcpState, x.getOldState());
          enc.put(kTcpState, x.getNewState());
          enc.put(kTcpState, x.getDurationNs());
          enc.put(kTcpState, x.getTxBytes());
          enc.put(kTcpState, x.getRxBytes());
          enc.put(kTcpState, x.getLifetimeNs());
          enc.putSigned(kTcpState, x.getSocketError());
          enc.put(kTcpState, x.getSrttUs());
          break;
        }
      }
    }
    pids.saw(e);
  }
  out.setCount(static_cast<uint32_t>(events.size()));
  out.setKind(asData(kinds));
  out.setTime(asData(enc.column(kTime)));
  out.setPid(asData(enc.column(kPid)));
  out.setTid(asData(enc.column(kTid)));
  out.setPpid(asData(enc.column(kPpid)));
  out.setCgroup(asData(enc.column(kCgroup)));
  out.setComm(asData(enc.column(kComm)));
  out.setContainerId(asData(enc.column(kContainerId)));
  out.setPodUid(asData(enc.column(kPodUid)));
  out.setFilename(asData(enc.column(kFilename)));
  out.setArgv(asData(enc.column(kArgv)));
  out.setExit(asData(enc.column(kExit)));
  out.setFork(asData(enc.column(kFork)));
  out.setOomKill(asData(enc.column(kOomKill)));
  out.setSignal(asData(enc.column(kSignal)));
  out.setTcpState(asData(enc.column(kTcpState)));
  out.setLiterals(asData(enc.column(kLiterals)));
}

namespace {

// A read position in one column; every read is bounds-checked.
class ColumnReader {
 public:
  ColumnReader() = default;
  ColumnReader(capnp::Data::Reader d, Column c)
      : p_(d.begin()), end_(d.end()), name_(columnName(c)) {}

  absl::StatusOr<uint64_t> varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) {
        return absl::InvalidArgumentError(absl::StrCat("event column ", name_, " is truncated"));
      }
      const uint8_t b = *p_++;
      // The tenth byte may only carry the top bit of a 64-bit value.
      if (shift == 63 && b > 1) {
        break;
      }
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        return v;
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat("event column ", name_, " has a varint longer than 64 bits"));
  }
  absl::StatusOr<int64_t> signedVarint() {
    ASSIGN_OR_RETURN(uint64_t v, varint());
    return unzigzag(v);
  }
  absl::StatusOr<absl::string_view> bytes(uint64_t n) {
    if (static_cast<uint64_t>(end_ - p_) < n) {
      return absl::InvalidArgumentError(absl::StrCat("event column ", name_, " is truncated"));
    }
    absl::string_view s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  size_t left() const { return static_cast<size_t>(end_ - p_); }
  const char* name() const { return name_; }

 private:
  const kj::byte* p_ = nullptr;
  const kj::byte* end_ = nullptr;
  const char* name_ = "";
};

// `base + delta` as a T, or an error naming the column and field when it does not fit (only
// hostile input gets there: the encoder's differences always land back in range).
template <typename T>
absl::StatusOr<T> fit(const ColumnReader& col, const char* field, int64_t base, int64_t delta) {
  int64_t v = 0;
  if (__builtin_add_overflow(base, delta, &v) ||
      v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
      v > static_cast<int64_t>(std::numeric_limits<T>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("event column ", col.name(), ": ", field, " ",
                                                   base, " + ", delta, " out of range"));
  }
  return static_cast<T>(v);
}
template <typename T>
absl::StatusOr<T> fitUnsigned(const ColumnReader& col, const char* field, uint64_t v) {
  if (v > std::numeric_limits<T>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("event column ", col.name(), ": ", field, " ", v, " out of range"));
  }
  return static_cast<T>(v);
}

// Fills a Text field initialised to s.size() bytes (the literals column is not NUL-terminated).
void setText(capnp::Text::Builder t, absl::string_view s) {
  if (!s.empty()) {
    memcpy(t.begin(), s.data(), s.size());
  }
}

class Decoder {
 public:
  explicit Decoder(wire::EventColumns::Reader in) {
    cols_[kTime] = ColumnReader(in.getTime(), kTime);
    cols_[kPid] = ColumnReader(in.getPid(), kPid);
    cols_[kTid] = ColumnReader(in.getTid(), kTid);
    cols_[kPpid] = ColumnReader(in.getPpid(), kPpid);
    cols_[kCgroup] = ColumnReader(in.getCgroup(), kCgroup);
    cols_[kComm] = ColumnReader(in.getComm(), kComm);
    cols_[kContainerId] = ColumnReader(in.getContainerId(), kContainerId);
    cols_[kPodUid] = ColumnReader(in.getPodUid(), kPodUid);
    cols_[kFilename] = ColumnReader(in.getFilename(), kFilename);
    cols_[kArgv] = ColumnReader(in.getArgv(), kArgv);
    cols_[kExit] = ColumnReader(in.getExit(), kExit);
    cols_[kFork] = ColumnReader(in.getFork(), kFork);
    cols_[kOomKill] = ColumnReader(in.getOomKill(), kOomKill);
    cols_[kSignal] = ColumnReader(in.getSignal(), kSignal);
    cols_[kTcpState] = ColumnReader(in.getTcpState(), kTcpState);
    cols_[kLiterals] = ColumnReader(in.getLiterals(), kLiterals);
  }

  ColumnReader& column(Column c) { return cols_[c]; }

  // Reads a string reference from column `c` and, unless it says "unset", hands the string to
  // `set`.
  template <typename Set>
  absl::Status text(Column c, Set&& set) {
    ASSIGN_OR_RETURN(uint64_t ref, cols_[c].varint());
    if (ref == 0) {
      return absl::OkStatus();
    }
    if (ref <= table_.size()) {
      set(table_[ref - 1]);
      return absl::OkStatus();
    }
    if (ref != table_.size() + 1) {
      return absl::InvalidArgumentError(absl::StrCat("event column ", columnName(c),
                                                     ": string reference ", ref,
                                                     " past the table of ", table_.size()));
    }
    ASSIGN_OR_RETURN(uint64_t n, cols_[kLiterals].varint());
    ASSIGN_OR_RETURN(absl::string_view literal, cols_[kLiterals].bytes(n));
    table_.push_back(literal);
    set(literal);
    return absl::OkStatus();
  }

  absl::Status checkConsumed() const {
    for (int c = 0; c < kColumnCount; ++c) {
      if (cols_[c].left() != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("event column ", columnName(static_cast<Column>(c)), " has ",
                         cols_[c].left(), " bytes left after the last event"));
      }
    }
    return absl::OkStatus();
  }

 private:
  ColumnReader cols_[kColumnCount];
  std::vector<absl::string_view> table_;  // views into the literals column
};

absl::Status decodeOne(Decoder& dec, PidModel& pids, uint8_t kind, size_t index, int64_t& last_time,
                       uint32_t& last_ppid, uint64_t& last_cgroup, Event::Builder e) {
  const unsigned which = kind >> 2;
  const bool present = (kind & 2) != 0;
  const bool flag = (kind & 1) != 0;
  if (which > kLastKind) {
    return absl::InvalidArgumentError(
        absl::StrCat("event column kind: event ", index, " has unknown kind ", which));
  }
  if (flag && (!present || (which != Event::EXEC && which != Event::EXIT))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "event column kind: event ", index, " sets a flag its kind ", which, " does not have"));
  }
  ASSIGN_OR_RETURN(int64_t dt, dec.column(kTime).signedVarint());
  last_time = static_cast<int64_t>(static_cast<uint64_t>(last_time) + static_cast<uint64_t>(dt));
  e.setTimestampNs(last_time);
  ASSIGN_OR_RETURN(uint64_t pid_code, dec.column(kPid).varint());
  ASSIGN_OR_RETURN(const uint32_t pid, pids.pid(pid_code));
  e.setPid(pid);
  ColumnReader& tid_col = dec.column(kTid);
  ASSIGN_OR_RETURN(int64_t dtid, tid_col.signedVarint());
  ASSIGN_OR_RETURN(uint32_t tid, fit<uint32_t>(tid_col, "tid", pid, dtid));
  e.setTid(tid);
  ColumnReader& ppid_col = dec.column(kPpid);
  ASSIGN_OR_RETURN(int64_t dppid, ppid_col.signedVarint());
  ASSIGN_OR_RETURN(last_ppid, fit<uint32_t>(ppid_col, "ppid", last_ppid, dppid));
  e.setPpid(last_ppid);
  ASSIGN_OR_RETURN(int64_t dcg, dec.column(kCgroup).signedVarint());
  last_cgroup += static_cast<uint64_t>(dcg);
  e.setCgroupId(last_cgroup);
  RETURN_IF_ERROR(dec.text(kComm, [&](absl::string_view s) {
    setText(e.initComm(static_cast<unsigned>(s.size())), s);
  }));
  RETURN_IF_ERROR(dec.text(kContainerId, [&](absl::string_view s) {
    setText(e.initContainerId(static_cast<unsigned>(s.size())), s);
  }));
  RETURN_IF_ERROR(dec.text(kPodUid, [&](absl::string_view s) {
    setText(e.initPodUid(static_cast<unsigned>(s.size())), s);
  }));
  if (!present) {
    // The union member is selected but its struct stays null: adopting a null orphan does that.
    switch (which) {
      case Event::EXEC:
        e.adoptExec(capnp::Orphan<wire::ExecEvent>());
        break;
      case Event::EXIT:
        e.adoptExit(capnp::Orphan<wire::ExitEvent>());
        break;
      case Event::FORK:
        e.adoptFork(capnp::Orphan<wire::ForkEvent>());
        break;
      case Event::OOM_KILL:
        e.adoptOomKill(capnp::Orphan<wire::OomKillEvent>());
        break;
      case Event::SIGNAL:
        e.adoptSignal(capnp::Orphan<wire::SignalEvent>());
        break;
      default:
        e.adoptTcpState(capnp::Orphan<wire::TcpStateEvent>());
        break;
    }
    pids.saw(e.asReader());
    return absl::OkStatus();
  }
  switch (which) {
    case Event::EXEC: {
      auto x = e.initExec();
      x.setArgvTruncated(flag);
      RETURN_IF_ERROR(dec.text(kFilename, [&](absl::string_view s) {
        setText(x.initFilename(static_cast<unsigned>(s.size())), s);
      }));
      RETURN_IF_ERROR(dec.text(kArgv, [&](absl::string_view s) {
        setText(x.initArgv(static_cast<unsigned>(s.size())), s);
      }));
      break;
    }
    case Event::EXIT: {
      auto x = e.initExit();
      x.setCoreDumped(flag);
      ColumnReader& col = dec.column(kExit);
      ASSIGN_OR_RETURN(int64_t code, col.signedVarint());
      ASSIGN_OR_RETURN(int32_t exit_code, fit<int32_t>(col, "exitCode", 0, code));
      ASSIGN_OR_RETURN(int64_t sig, col.signedVarint());
      ASSIGN_OR_RETURN(int32_t signal, fit<int32_t>(col, "signal", 0, sig));
      ASSIGN_OR_RETURN(int64_t life, col.signedVarint());
      x.setExitCode(exit_code);
      x.setSignal(signal);
      x.setLifetimeNs(static_cast<uint64_t>(pids.lifetimeGuess(pid, e.getTimestampNs())) +
                      static_cast<uint64_t>(life));
      break;
    }
    case Event::FORK: {
      ColumnReader& col = dec.column(kFork);
      ASSIGN_OR_RETURN(uint64_t code, col.varint());
      ASSIGN_OR_RETURN(
          uint32_t child,
          fit<uint32_t>(col, "childPid", static_cast<int64_t>(pids.nextChild()), unzigzag(code)));
      e.initFork().setChildPid(child);
      break;
    }
    case Event::OOM_KILL: {
      auto x = e.initOomKill();
      ColumnReader& col = dec.column(kOomKill);
      ASSIGN_OR_RETURN(int64_t victim, col.signedVarint());
      ASSIGN_OR_RETURN(uint32_t victim_pid, fit<uint32_t>(col, "victimPid", pid, victim));
      x.setVictimPid(victim_pid);
      RETURN_IF_ERROR(dec.text(kOomKill, [&](absl::string_view s) {
        setText(x.initVictimComm(static_cast<unsigned>(s.size())), s);
      }));
      ASSIGN_OR_RETURN(uint64_t cg, col.varint());
      ASSIGN_OR_RETURN(uint64_t vm, col.varint());
      ASSIGN_OR_RETURN(uint64_t rss, col.varint());
      x.setVictimCgroupId(cg);
      x.setTotalVmKb(vm);
      x.setAnonRssKb(rss);
      break;
    }
    case Event::SIGNAL: {
      auto x = e.initSignal();
      ColumnReader& col = dec.column(kSignal);
      ASSIGN_OR_RETURN(int64_t sig, col.signedVarint());
      ASSIGN_OR_RETURN(int32_t signal, fit<int32_t>(col, "signal", 0, sig));
      ASSIGN_OR_RETURN(int64_t target, col.signedVarint());
      ASSIGN_OR_RETURN(uint32_t target_pid, fit<uint32_t>(col, "targetPid", pid, target));
      ASSIGN_OR_RETURN(int64_t sender, col.signedVarint());
      ASSIGN_OR_RETURN(uint32_t sender_pid, fit<uint32_t>(col, "senderPid", pid, sender));
      ASSIGN_OR_RETURN(int64_t res, col.signedVarint());
      ASSIGN_OR_RETURN(int32_t result, fit<int32_t>(col, "result", 0, res));
      x.setSignal(signal);
      x.setTargetPid(target_pid);
      x.setSenderPid(sender_pid);
      x.setResult(result);
      break;
    }
    default: {
      auto x = e.initTcpState();
      ColumnReader& col = dec.column(kTcpState);
      ASSIGN_OR_RETURN(uint64_t family, col.varint());
      ASSIGN_OR_RETURN(uint16_t family16, fitUnsigned<uint16_t>(col, "family", family));
      x.setFamily(family16);
      RETURN_IF_ERROR(dec.text(kTcpState, [&](absl::string_view s) { x.setSaddr(asData(s)); }));
      RETURN_IF_ERROR(dec.text(kTcpState, [&](absl::string_view s) { x.setDaddr(asData(s)); }));
      ASSIGN_OR_RETURN(uint64_t sport, col.varint());
      ASSIGN_OR_RETURN(uint16_t sport16, fitUnsigned<uint16_t>(col, "sport", sport));
      ASSIGN_OR_RETURN(uint64_t dport, col.varint());
      ASSIGN_OR_RETURN(uint16_t dport16, fitUnsigned<uint16_t>(col, "dport", dport));
      ASSIGN_OR_RETURN(uint64_t old_state, col.varint());
      ASSIGN_OR_RETURN(uint8_t old8, fitUnsigned<uint8_t>(col, "oldState", old_state));
      ASSIGN_OR_RETURN(uint64_t new_state, col.varint());
      ASSIGN_OR_RETURN(uint8_t new8, fitUnsigned<uint8_t>(col, "newState", new_state));
      ASSIGN_OR_RETURN(uint64_t duration, col.varint());
      ASSIGN_OR_RETURN(uint64_t tx, col.varint());
      ASSIGN_OR_RETURN(uint64_t rx, col.varint());
      ASSIGN_OR_RETURN(uint64_t life, col.varint());
      ASSIGN_OR_RETURN(int64_t err, col.signedVarint());
      ASSIGN_OR_RETURN(int32_t err32, fit<int32_t>(col, "socketError", 0, err));
      ASSIGN_OR_RETURN(uint64_t srtt, col.varint());
      ASSIGN_OR_RETURN(uint32_t srtt32, fitUnsigned<uint32_t>(col, "srttUs", srtt));
      x.setSport(sport16);
      x.setDport(dport16);
      x.setOldState(old8);
      x.setNewState(new8);
      x.setDurationNs(duration);
      x.setTxBytes(tx);
      x.setRxBytes(rx);
      x.setLifetimeNs(life);
      x.setSocketError(err32);
      x.setSrttUs(srtt32);
      break;
    }
  }
  pids.saw(e.asReader());
  return absl::OkStatus();
}

}  // namespace

absl::Status readEventColumns(wire::EventColumns::Reader columns, capnp::Orphanage orphanage,
                              std::vector<capnp::Orphan<Event>>& out) {
  const uint32_t count = columns.getCount();
  auto kinds = columns.getKind();
  if (kinds.size() != count) {
    return absl::InvalidArgumentError(
        absl::StrCat("event column kind holds ", kinds.size(), " bytes for ", count, " events"));
  }
  Decoder dec(columns);
  PidModel pids;
  int64_t last_time = 0;
  uint32_t last_ppid = 0;
  uint64_t last_cgroup = 0;
  std::vector<capnp::Orphan<Event>> events;
  events.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    events.push_back(orphanage.newOrphan<Event>());
    RETURN_IF_ERROR(
        decodeOne(dec, pids, kinds[i], i, last_time, last_ppid, last_cgroup, events.back().get()));
  }
  RETURN_IF_ERROR(dec.checkConsumed());
  for (auto& e : events) {
    out.push_back(kj::mv(e));
  }
  return absl::OkStatus();
}

absl::Status readFrameEvents(wire::Frame::Reader frame, capnp::Orphanage orphanage,
                             std::vector<capnp::Orphan<Event>>& out) {
  auto list = frame.getEvents();
  if (frame.hasEventColumns()) {
    if (list.size() != 0) {
      return absl::InvalidArgumentError(absl::StrCat("frame carries events both as a list (",
                                                     list.size(),
                                                     ") and as columns; a frame uses one form"));
    }
    return readEventColumns(frame.getEventColumns(), orphanage, out);
  }
  out.reserve(out.size() + list.size());
  for (Event::Reader e : list) {
    out.push_back(orphanage.newOrphanCopy(e));
  }
  return absl::OkStatus();
}

void writeFrameEvents(const std::vector<Event::Reader>& events, EventForm form,
                      wire::Frame::Builder frame) {
  if (events.empty()) {
    return;
  }
  if (form == EventForm::kColumns) {
    writeEventColumns(events, frame.initEventColumns());
    return;
  }
  auto list = frame.initEvents(static_cast<unsigned>(events.size()));
  for (size_t j = 0; j < events.size(); ++j) {
    list.setWithCaveats(static_cast<unsigned>(j), events[j]);
  }
}

absl::StatusOr<kj::Array<kj::byte>> withEventList(kj::ArrayPtr<const kj::byte> payload) {
  auto decoded = decodeFrame(payload, wire::Encoding::PACKED_ZSTD);
  if (!decoded.ok()) {
    return decoded.status();
  }
  wire::Frame::Reader in = (*decoded)->frame();
  if (!in.hasEventColumns()) {
    return kj::Array<kj::byte>();
  }
  capnp::MallocMessageBuilder message;
  std::vector<capnp::Orphan<Event>> events;
  RETURN_IF_ERROR(readFrameEvents(in, message.getOrphanage(), events));
  message.setRoot(in);
  auto out = message.getRoot<wire::Frame>();
  // Dropping the columns leaves zeroed words behind in the message, which packing reduces to a
  // few bytes.
  out.disownEventColumns();
  auto list = out.initEvents(static_cast<unsigned>(events.size()));
  for (size_t j = 0; j < events.size(); ++j) {
    list.setWithCaveats(static_cast<unsigned>(j), events[j].getReader());
  }
  return encodeFrame(message, wire::Encoding::PACKED_ZSTD);
}

bool sameEvent(Event::Reader a, Event::Reader b) {
  auto ca = capnp::canonicalize(a);
  auto cb = capnp::canonicalize(b);
  return ca.size() == cb.size() &&
         memcmp(ca.begin(), cb.begin(), ca.size() * sizeof(capnp::word)) == 0;
}

#undef ASSIGN_OR_RETURN_IMPL
#undef COLUMNS_CONCAT_IMPL
#undef COLUMNS_CONCAT
#undef ASSIGN_OR_RETURN
#undef RETURN_IF_ERROR

}  // namespace vigil
