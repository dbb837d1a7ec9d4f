#include "bench/wire/columnar_events.h"

#include <capnp/message.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace vigil::bench {
namespace {

using wire::Event;

// The columns, in the order they are written.
enum Column {
  kKind,
  kTime,
  kPid,
  kTid,
  kPpid,
  kCgroup,
  kComm,
  kContainer,
  kPod,
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

uint64_t zigzag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
int64_t unzigzag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }
// Differences of unsigned fields, taken modulo 2^64 so any pair of values round-trips.
int64_t diff(uint64_t a, uint64_t b) { return static_cast<int64_t>(a - b); }

void putVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

// A read position in one column; every read is bounds-checked.
class ColumnReader {
 public:
  ColumnReader() = default;
  ColumnReader(const char* p, size_t n, const char* name) : p_(p), end_(p + n), name_(name) {}

  absl::StatusOr<uint64_t> varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) {
        return absl::InvalidArgumentError(absl::StrCat("event column ", name_, " is truncated"));
      }
      uint8_t b = static_cast<uint8_t>(*p_++);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        return v;
      }
    }
    return absl::InvalidArgumentError(absl::StrCat("event column ", name_, " has a bad varint"));
  }
  absl::StatusOr<int64_t> signedVarint() {
    auto v = varint();
    if (!v.ok()) {
      return v.status();
    }
    return unzigzag(*v);
  }
  absl::StatusOr<std::string> bytes(uint64_t n) {
    if (static_cast<uint64_t>(end_ - p_) < n) {
      return absl::InvalidArgumentError(absl::StrCat("event column ", name_, " is truncated"));
    }
    std::string s(p_, n);
    p_ += n;
    return s;
  }
  // The next n bytes as a reader of their own (a column), skipped in this one.
  absl::StatusOr<ColumnReader> sub(uint64_t n, const char* name) {
    if (static_cast<uint64_t>(end_ - p_) < n) {
      return absl::InvalidArgumentError(absl::StrCat("event column ", name, " runs past the end"));
    }
    ColumnReader r(p_, n, name);
    p_ += n;
    return r;
  }
  bool done() const { return p_ == end_; }

 private:
  const char* p_ = nullptr;
  const char* end_ = nullptr;
  const char* name_ = "";
};

const char* columnName(int c) {
  static const char* const kNames[kColumnCount] = {
      "kind",     "time", "pid",  "tid",  "ppid",    "cgroup", "comm",     "container", "pod",
      "filename", "argv", "exit", "fork", "oomKill", "signal", "tcpState", "literals"};
  return kNames[c];
}

// Strings of a frame's events in order of first appearance: the dictionary both sides start
// from. Every text and data field of every event kind, in the order the encoder visits them.
class Dictionary {
 public:
  int64_t find(const std::string& s) const {
    auto it = index_.find(s);
    return it == index_.end() ? -1 : it->second;
  }
  void add(const std::string& s) {
    if (index_.emplace(s, static_cast<int64_t>(strings_.size())).second) {
      strings_.push_back(s);
    }
  }
  size_t size() const { return strings_.size(); }
  const std::string& at(size_t i) const { return strings_[i]; }

 private:
  absl::flat_hash_map<std::string, int64_t> index_;
  std::vector<std::string> strings_;
};

std::string str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }
std::string str(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

// Calls fn(has, value) for each string field of `e`, in encoding order.
template <typename Fn>
void forEachString(Event::Reader e, Fn&& fn) {
  fn(e.hasComm(), str(e.getComm()));
  fn(e.hasContainerId(), str(e.getContainerId()));
  fn(e.hasPodUid(), str(e.getPodUid()));
  switch (e.which()) {
    case Event::EXEC:
      fn(e.getExec().hasFilename(), str(e.getExec().getFilename()));
      fn(e.getExec().hasArgv(), str(e.getExec().getArgv()));
      break;
    case Event::OOM_KILL:
      fn(e.getOomKill().hasVictimComm(), str(e.getOomKill().getVictimComm()));
      break;
    case Event::TCP_STATE:
      fn(e.getTcpState().hasSaddr(), str(e.getTcpState().getSaddr()));
      fn(e.getTcpState().hasDaddr(), str(e.getTcpState().getDaddr()));
      break;
    default:
      break;
  }
}

Dictionary startingDictionary(const std::vector<Event::Reader>& previous) {
  Dictionary d;
  for (const auto& e : previous) {
    forEachString(e, [&](bool has, const std::string& s) {
      if (has) {
        d.add(s);
      }
    });
  }
  return d;
}

// Predicts the pids of events from the events before them, the same way on both sides. Under
// process churn the events of a new process follow its parent's fork (fork, exec, exit of the
// child, then the parent's next fork), so a pid is usually one of a few recent ones and a fork's
// child is usually one past the previous child. A pid is coded as its position in a short
// move-to-front list of recent pids (a fork's child enters at the front), or, when it is not
// there, kRecent + zigzag(pid - the front pid); a child pid as zigzag(child - (previous child
// + 1)). Seeded with the previous frame's events.
class PidModel {
 public:
  static constexpr size_t kRecent = 16;

  explicit PidModel(const std::vector<Event::Reader>& previous) {
    for (const auto& e : previous) {
      saw(e);
    }
  }
  uint64_t code(uint32_t pid) const {
    for (size_t i = 0; i < recent_.size(); ++i) {
      if (recent_[i] == pid) {
        return i;
      }
    }
    return kRecent + zigzag(diff(pid, front()));
  }
  uint32_t pid(uint64_t code) const {
    if (code < recent_.size()) {
      return recent_[code];
    }
    // Positions past the list's current length cannot occur in valid input; decode them like
    // the escape so a malformed code still yields a pid rather than reading out of bounds.
    uint64_t z = code >= kRecent ? code - kRecent : code;
    return static_cast<uint32_t>(front() + static_cast<uint64_t>(unzigzag(z)));
  }
  uint64_t childCode(uint32_t child) const { return zigzag(diff(child, next_child_)); }
  uint32_t child(uint64_t code) const {
    return static_cast<uint32_t>(next_child_ + static_cast<uint64_t>(unzigzag(code)));
  }
  // An exit's lifetime predicted as the time since its fork event, when that was seen (in this
  // frame or the previous one); 0 otherwise.
  int64_t lifetimeGuess(uint32_t pid, int64_t exit_time) const {
    auto it = fork_time_.find(pid);
    return it == fork_time_.end() ? 0 : exit_time - it->second;
  }
  // Updates the model with an event once it is coded.
  void saw(Event::Reader e) {
    toFront(e.getPid());
    if (e.isFork() && e.hasFork()) {
      toFront(e.getFork().getChildPid());
      next_child_ = e.getFork().getChildPid() + 1;
      fork_time_[e.getFork().getChildPid()] = e.getTimestampNs();
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
    } else if (recent_.size() == kRecent) {
      recent_.pop_back();
    }
    recent_.insert(recent_.begin(), pid);
  }
  std::vector<uint32_t> recent_;
  uint32_t next_child_ = 0;
  absl::flat_hash_map<uint32_t, int64_t> fork_time_;  // child pid -> its fork event's time
};

class Encoder {
 public:
  explicit Encoder(const std::vector<Event::Reader>& previous)
      : dict_(startingDictionary(previous)) {}

  void putString(Column c, bool has, const std::string& s) {
    if (!has) {
      putVarint(cols_[c], 0);
      return;
    }
    int64_t i = dict_.find(s);
    if (i >= 0) {
      putVarint(cols_[c], static_cast<uint64_t>(i) + 1);
      return;
    }
    putVarint(cols_[c], dict_.size() + 1);
    putVarint(cols_[kLiterals], s.size());
    cols_[kLiterals] += s;
    dict_.add(s);
  }
  void put(Column c, uint64_t v) { putVarint(cols_[c], v); }
  void putSigned(Column c, int64_t v) { putVarint(cols_[c], zigzag(v)); }
  std::string& column(Column c) { return cols_[c]; }

 private:
  Dictionary dict_;
  std::string cols_[kColumnCount];
};

}  // namespace

std::string encodeEventColumns(const std::vector<Event::Reader>& previous,
                               const std::vector<Event::Reader>& events) {
  Encoder enc(previous);
  int64_t last_time = previous.empty() ? 0 : previous.back().getTimestampNs();
  PidModel pids(previous);
  uint32_t last_ppid = 0;
  uint64_t last_cgroup = 0;
  for (const auto& e : events) {
    bool present = false;
    bool flag = false;
    switch (e.which()) {
      case Event::EXEC:
        present = e.hasExec();
        flag = e.getExec().getArgvTruncated();
        break;
      case Event::EXIT:
        present = e.hasExit();
        flag = e.getExit().getCoreDumped();
        break;
      case Event::FORK:
        present = e.hasFork();
        break;
      case Event::OOM_KILL:
        present = e.hasOomKill();
        break;
      case Event::SIGNAL:
        present = e.hasSignal();
        break;
      case Event::TCP_STATE:
        present = e.hasTcpState();
        break;
    }
    enc.column(kKind).push_back(
        static_cast<char>((static_cast<unsigned>(e.which()) << 2) | (present << 1) | flag));
    enc.putSigned(kTime, e.getTimestampNs() - last_time);
    last_time = e.getTimestampNs();
    const uint32_t pid = e.getPid();
    enc.put(kPid, pids.code(pid));
    enc.putSigned(kTid, diff(e.getTid(), pid));
    enc.putSigned(kPpid, diff(e.getPpid(), last_ppid));
    enc.putSigned(kCgroup, diff(e.getCgroupId(), last_cgroup));
    last_ppid = e.getPpid();
    last_cgroup = e.getCgroupId();
    enc.putString(kComm, e.hasComm(), str(e.getComm()));
    enc.putString(kContainer, e.hasContainerId(), str(e.getContainerId()));
    enc.putString(kPod, e.hasPodUid(), str(e.getPodUid()));
    if (!present) {
      pids.saw(e);
      continue;
    }
    switch (e.which()) {
      case Event::EXEC: {
        auto x = e.getExec();
        enc.putString(kFilename, x.hasFilename(), str(x.getFilename()));
        enc.putString(kArgv, x.hasArgv(), str(x.getArgv()));
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
        enc.putString(kOomKill, x.hasVictimComm(), str(x.getVictimComm()));
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
        enc.putString(kTcpState, x.hasSaddr(), str(x.getSaddr()));
        enc.putString(kTcpState, x.hasDaddr(), str(x.getDaddr()));
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
    pids.saw(e);
  }
  std::string out;
  putVarint(out, events.size());
  for (int c = 0; c < kColumnCount; ++c) {
    putVarint(out, enc.column(static_cast<Column>(c)).size());
    out += enc.column(static_cast<Column>(c));
  }
  return out;
}

namespace {

// Reads one column's worth of a field, returning early from the decoder on error.
#define COLUMN_READ(var, expr) \
  auto var##_or = (expr);      \
  if (!var##_or.ok()) {        \
    return var##_or.status();  \
  }                            \
  auto var = *var##_or

class Decoder {
 public:
  explicit Decoder(const std::vector<Event::Reader>& previous)
      : dict_(startingDictionary(previous)) {}

  ColumnReader& column(int c) { return cols_[c]; }

  // The string a reference names: nullptr-like (has = false) for 0, else a dictionary entry or
  // a new literal.
  absl::Status getString(Column c, bool* has, std::string* s) {
    COLUMN_READ(ref, cols_[c].varint());
    if (ref == 0) {
      *has = false;
      s->clear();
      return absl::OkStatus();
    }
    *has = true;
    if (ref <= dict_.size()) {
      *s = dict_.at(ref - 1);
      return absl::OkStatus();
    }
    if (ref != dict_.size() + 1) {
      return absl::InvalidArgumentError(absl::StrCat("event column ", columnName(c),
                                                     " references string ", ref,
                                                     " past the dictionary of ", dict_.size()));
    }
    COLUMN_READ(n, cols_[kLiterals].varint());
    COLUMN_READ(literal, cols_[kLiterals].bytes(n));
    dict_.add(literal);
    *s = std::move(literal);
    return absl::OkStatus();
  }

 private:
  Dictionary dict_;
  ColumnReader cols_[kColumnCount];
};

// Sets a text field from a decoded reference, leaving it unset when the reference says so.
template <typename Set>
absl::Status setString(Decoder& dec, Column c, Set&& set) {
  bool has = false;
  std::string s;
  absl::Status st = dec.getString(c, &has, &s);
  if (st.ok() && has) {
    set(s);
  }
  return st;
}

capnp::Data::Reader asData(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

}  // namespace

absl::StatusOr<std::vector<capnp::Orphan<Event>>> decodeEventColumns(
    const std::vector<Event::Reader>& previous, const std::string& columns,
    capnp::Orphanage orphanage) {
  Decoder dec(previous);
  ColumnReader in(columns.data(), columns.size(), "header");
  COLUMN_READ(count, in.varint());
  if (count > columns.size()) {  // every event takes at least its kind byte
    return absl::InvalidArgumentError(
        absl::StrCat("event columns declare ", count, " events in ", columns.size(), " bytes"));
  }
  // Each column: varint length + bytes, in Column order.
  for (int c = 0; c < kColumnCount; ++c) {
    COLUMN_READ(len, in.varint());
    auto column = in.sub(len, columnName(c));
    if (!column.ok()) {
      return column.status();
    }
    dec.column(c) = *column;
  }
  if (!in.done()) {
    return absl::InvalidArgumentError("bytes after the last event column");
  }

  std::vector<capnp::Orphan<Event>> out;
  int64_t last_time = previous.empty() ? 0 : previous.back().getTimestampNs();
  PidModel pids(previous);
  uint32_t last_ppid = 0;
  uint64_t last_cgroup = 0;
  for (uint64_t i = 0; i < count; ++i) {
    out.push_back(orphanage.newOrphan<Event>());
    Event::Builder e = out.back().get();
    COLUMN_READ(kind_bytes, dec.column(kKind).bytes(1));
    const unsigned kind = static_cast<uint8_t>(kind_bytes[0]);
    const unsigned which = kind >> 2;
    const bool present = (kind & 2) != 0;
    const bool flag = (kind & 1) != 0;
    if (which > Event::TCP_STATE) {
      return absl::InvalidArgumentError(absl::StrCat("event ", i, " has unknown kind ", which));
    }
    COLUMN_READ(dt, dec.column(kTime).signedVarint());
    last_time += dt;
    e.setTimestampNs(last_time);
    COLUMN_READ(pid_code, dec.column(kPid).varint());
    const uint32_t pid = pids.pid(pid_code);
    e.setPid(pid);
    COLUMN_READ(dtid, dec.column(kTid).signedVarint());
    e.setTid(static_cast<uint32_t>(pid + static_cast<uint64_t>(dtid)));
    COLUMN_READ(dppid, dec.column(kPpid).signedVarint());
    e.setPpid(static_cast<uint32_t>(last_ppid + static_cast<uint64_t>(dppid)));
    COLUMN_READ(dcg, dec.column(kCgroup).signedVarint());
    e.setCgroupId(last_cgroup + static_cast<uint64_t>(dcg));
    last_ppid = e.getPpid();
    last_cgroup = e.getCgroupId();
    absl::Status st = setString(dec, kComm, [&](const std::string& s) { e.setComm(s); });
    if (st.ok()) {
      st = setString(dec, kContainer, [&](const std::string& s) { e.setContainerId(s); });
    }
    if (st.ok()) {
      st = setString(dec, kPod, [&](const std::string& s) { e.setPodUid(s); });
    }
    if (!st.ok()) {
      return st;
    }
    if (!present) {
      // The union's member is set (its discriminant) but its struct pointer stays null: adopting
      // a null orphan does exactly that.
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
      continue;
    }
    switch (which) {
      case Event::EXEC: {
        auto x = e.initExec();
        x.setArgvTruncated(flag);
        st = setString(dec, kFilename, [&](const std::string& s) { x.setFilename(s); });
        if (st.ok()) {
          st = setString(dec, kArgv, [&](const std::string& s) { x.setArgv(s); });
        }
        break;
      }
      case Event::EXIT: {
        auto x = e.initExit();
        x.setCoreDumped(flag);
        COLUMN_READ(code, dec.column(kExit).signedVarint());
        COLUMN_READ(sig, dec.column(kExit).signedVarint());
        COLUMN_READ(life, dec.column(kExit).signedVarint());
        x.setExitCode(static_cast<int32_t>(code));
        x.setSignal(static_cast<int32_t>(sig));
        x.setLifetimeNs(static_cast<uint64_t>(pids.lifetimeGuess(pid, e.getTimestampNs())) +
                        static_cast<uint64_t>(life));
        break;
      }
      case Event::FORK: {
        COLUMN_READ(child, dec.column(kFork).varint());
        e.initFork().setChildPid(pids.child(child));
        break;
      }
      case Event::OOM_KILL: {
        auto x = e.initOomKill();
        COLUMN_READ(victim, dec.column(kOomKill).signedVarint());
        x.setVictimPid(static_cast<uint32_t>(pid + static_cast<uint64_t>(victim)));
        st = setString(dec, kOomKill, [&](const std::string& s) { x.setVictimComm(s); });
        if (!st.ok()) {
          return st;
        }
        COLUMN_READ(cg, dec.column(kOomKill).varint());
        COLUMN_READ(vm, dec.column(kOomKill).varint());
        COLUMN_READ(rss, dec.column(kOomKill).varint());
        x.setVictimCgroupId(cg);
        x.setTotalVmKb(vm);
        x.setAnonRssKb(rss);
        break;
      }
      case Event::SIGNAL: {
        auto x = e.initSignal();
        COLUMN_READ(sig, dec.column(kSignal).signedVarint());
        COLUMN_READ(target, dec.column(kSignal).signedVarint());
        COLUMN_READ(sender, dec.column(kSignal).signedVarint());
        COLUMN_READ(result, dec.column(kSignal).signedVarint());
        x.setSignal(static_cast<int32_t>(sig));
        x.setTargetPid(static_cast<uint32_t>(pid + static_cast<uint64_t>(target)));
        x.setSenderPid(static_cast<uint32_t>(pid + static_cast<uint64_t>(sender)));
        x.setResult(static_cast<int32_t>(result));
        break;
      }
      default: {
        auto x = e.initTcpState();
        COLUMN_READ(family, dec.column(kTcpState).varint());
        x.setFamily(static_cast<uint16_t>(family));
        st = setString(dec, kTcpState, [&](const std::string& s) { x.setSaddr(asData(s)); });
        if (st.ok()) {
          st = setString(dec, kTcpState, [&](const std::string& s) { x.setDaddr(asData(s)); });
        }
        if (!st.ok()) {
          return st;
        }
        COLUMN_READ(sport, dec.column(kTcpState).varint());
        COLUMN_READ(dport, dec.column(kTcpState).varint());
        COLUMN_READ(old_state, dec.column(kTcpState).varint());
        COLUMN_READ(new_state, dec.column(kTcpState).varint());
        COLUMN_READ(duration, dec.column(kTcpState).varint());
        COLUMN_READ(tx, dec.column(kTcpState).varint());
        COLUMN_READ(rx, dec.column(kTcpState).varint());
        COLUMN_READ(life, dec.column(kTcpState).varint());
        COLUMN_READ(err, dec.column(kTcpState).signedVarint());
        COLUMN_READ(srtt, dec.column(kTcpState).varint());
        x.setSport(static_cast<uint16_t>(sport));
        x.setDport(static_cast<uint16_t>(dport));
        x.setOldState(static_cast<uint8_t>(old_state));
        x.setNewState(static_cast<uint8_t>(new_state));
        x.setDurationNs(duration);
        x.setTxBytes(tx);
        x.setRxBytes(rx);
        x.setLifetimeNs(life);
        x.setSocketError(static_cast<int32_t>(err));
        x.setSrttUs(static_cast<uint32_t>(srtt));
        break;
      }
    }
    if (!st.ok()) {
      return st;
    }
    pids.saw(e.asReader());
  }
  for (int c = 0; c < kColumnCount; ++c) {
    if (!dec.column(c).done()) {
      return absl::InvalidArgumentError(
          absl::StrCat("event column ", columnName(c), " has bytes left after the last event"));
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> splitEventColumns(
    const std::string& columns) {
  ColumnReader in(columns.data(), columns.size(), "header");
  COLUMN_READ(count, in.varint());
  (void)count;
  std::vector<std::pair<std::string, std::string>> out;
  for (int c = 0; c < kColumnCount; ++c) {
    COLUMN_READ(len, in.varint());
    COLUMN_READ(bytes, in.bytes(len));
    out.emplace_back(columnName(c), std::move(bytes));
  }
  return out;
}

#undef COLUMN_READ

bool sameEvent(Event::Reader a, Event::Reader b) {
  auto ca = capnp::canonicalize(a);
  auto cb = capnp::canonicalize(b);
  return ca.size() == cb.size() &&
         memcmp(ca.begin(), cb.begin(), ca.size() * sizeof(capnp::word)) == 0;
}

}  // namespace vigil::bench
