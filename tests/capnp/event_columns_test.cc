// Event columns (capnp/event_columns.h): every field of every event kind comes back exactly, a
// frame gives the same events, snapshot and CLI JSON whether it carries columns or the Event list,
// and malformed columns are refused with a Status naming the problem, never a crash.
#include "capnp/event_columns.h"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"
#include "userspace/cli/snapshot_json.h"
#include "userspace/masking/masker.h"

namespace vigil {
namespace {

using wire::Event;

std::vector<Event::Reader> readers(const std::vector<capnp::Orphan<Event>>& events) {
  std::vector<Event::Reader> out;
  for (const auto& e : events) {
    out.push_back(e.getReader());
  }
  return out;
}

std::string maskedArgv() {
  std::vector<std::string> errors;
  auto masker = Masker::create({}, &errors);
  REQUIRE(errors.empty());
  return masker->maskArgvJoined({"mysql", "-u", "root", "--password=hunter2", "-h", "db"});
}

// Events of every kind with unset, set-but-empty and extreme values: what the collectors send and
// what they never would, since the codec must be lossless for any Event.
void addEveryKind(capnp::Orphanage orphanage, std::vector<capnp::Orphan<Event>>& out, int64_t t0) {
  auto add = [&](int64_t t, uint32_t pid) {
    out.push_back(orphanage.newOrphan<Event>());
    auto e = out.back().get();
    e.setTimestampNs(t);
    e.setPid(pid);
    e.setTid(pid);
    return e;
  };
  auto fork = add(t0, 100);
  fork.setPpid(1);
  fork.setComm("sh");
  fork.setCgroupId(0xfedcba9876543210ull);
  fork.initFork().setChildPid(101);
  auto exec = add(t0 + 300'000, 101);
  exec.setPpid(100);
  exec.setComm("mysql");
  exec.setContainerId("");  // set but empty: must stay set
  exec.setPodUid("pod-1");
  auto x = exec.initExec();
  x.setFilename("/usr/bin/mysql");
  x.setArgv(maskedArgv());
  x.setArgvTruncated(true);
  auto exit = add(t0 + 800'000, 101);
  exit.setComm("mysql");
  auto ex = exit.initExit();
  ex.setExitCode(std::numeric_limits<int32_t>::min());
  ex.setSignal(9);
  ex.setLifetimeNs(790'000);
  ex.setCoreDumped(true);
  auto bare = add(t0 - 5, 0xffffffffu);  // time going back, pid at the top of the range
  bare.setTid(0);
  bare.setPpid(0xffffffffu);
  bare.adoptExec(capnp::Orphan<wire::ExecEvent>());  // union member set, no payload
  auto empty_exec = add(t0 - 6, 0);
  empty_exec.initExec().setArgv("");  // payload with an empty argv and no filename
  auto oom = add(t0 + 900'000, 7);
  oom.setCgroupId(0);
  auto o = oom.initOomKill();
  o.setVictimPid(4242);
  o.setVictimComm("java");
  o.setVictimCgroupId(~0ull);
  o.setTotalVmKb(1ull << 40);
  o.setAnonRssKb(123456);
  auto sig = add(t0 + 950'000, 7);
  auto s = sig.initSignal();
  s.setSignal(std::numeric_limits<int32_t>::max());
  s.setTargetPid(1);
  s.setSenderPid(0xffffffffu);
  s.setResult(-3);
  auto tcp = add(t0 + 1'000'000, 55);
  auto tc = tcp.initTcpState();
  tc.setFamily(10);
  const kj::byte v6[16] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  tc.setSaddr(kj::arrayPtr(v6, 16));
  tc.setDaddr(kj::ArrayPtr<const kj::byte>());  // set but empty
  tc.setSport(65535);
  tc.setDport(6379);
  tc.setOldState(255);
  tc.setNewState(1);
  tc.setDurationNs(~0ull);
  tc.setTxBytes(1);
  tc.setRxBytes(0);
  tc.setLifetimeNs(5);
  tc.setSocketError(std::numeric_limits<int32_t>::min());
  tc.setSrttUs(4'000'000'000u);
  auto far = add(std::numeric_limits<int64_t>::max(), 3);  // timestamps at both ends
  far.initFork().setChildPid(0);
  auto before = add(std::numeric_limits<int64_t>::min(), 3);
  before.initFork().setChildPid(0xffffffffu);
  before.setPodUid(std::string(5000, 'p'));               // a long string
  for (const uint32_t kind : {0u, 1u, 2u, 3u, 4u, 5u}) {  // every member with no payload
    auto e = add(t0 + 2'000'000 + kind, 9);
    switch (kind) {
      case 0:
        e.adoptExec(capnp::Orphan<wire::ExecEvent>());
        break;
      case 1:
        e.adoptExit(capnp::Orphan<wire::ExitEvent>());
        break;
      case 2:
        e.adoptFork(capnp::Orphan<wire::ForkEvent>());
        break;
      case 3:
        e.adoptOomKill(capnp::Orphan<wire::OomKillEvent>());
        break;
      case 4:
        e.adoptSignal(capnp::Orphan<wire::SignalEvent>());
        break;
      default:
        e.adoptTcpState(capnp::Orphan<wire::TcpStateEvent>());
        break;
    }
  }
  auto exit2 = add(t0 + 3'000'000, 101);  // an exit whose fork is long gone from the model
  exit2.initExit().setLifetimeNs(1);
  add(t0 + 3'000'001, 0);  // nothing set but the defaults
}

// Decodes what writeEventColumns wrote for `events`, requiring success.
std::vector<capnp::Orphan<Event>> roundTrip(const std::vector<Event::Reader>& events,
                                            capnp::MessageBuilder& columns_msg,
                                            capnp::Orphanage out) {
  auto columns = columns_msg.initRoot<wire::EventColumns>();
  writeEventColumns(events, columns);
  std::vector<capnp::Orphan<Event>> back;
  absl::Status st = readEventColumns(columns.asReader(), out, back);
  INFO(st.message());
  REQUIRE(st.ok());
  return back;
}

TEST_CASE("event columns give back every field of every event kind") {
  capnp::MallocMessageBuilder arena;
  std::vector<capnp::Orphan<Event>> events;
  addEveryKind(arena.getOrphanage(), events, 1'000'000'000);
  const auto in = readers(events);
  capnp::MallocMessageBuilder columns, out;
  auto back = roundTrip(in, columns, out.getOrphanage());
  REQUIRE(back.size() == in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    INFO("event " << i);
    CHECK(sameEvent(in[i], back[i].getReader()));
  }
  // The properties sameEvent stands for, spelled out on a few of them.
  CHECK(back[1].getReader().hasContainerId());
  CHECK(back[1].getReader().getContainerId().size() == 0);
  CHECK(!back[0].getReader().hasContainerId());
  CHECK(std::string(back[1].getReader().getExec().getArgv().cStr()) ==
        "mysql -u root --password=*** -h db");
  CHECK(back[2].getReader().getExit().getExitCode() == std::numeric_limits<int32_t>::min());
  CHECK(back[3].getReader().isExec());
  CHECK(!back[3].getReader().hasExec());
  CHECK(back[4].getReader().getExec().hasArgv());
  CHECK(!back[4].getReader().getExec().hasFilename());
  CHECK(back[7].getReader().getTcpState().hasDaddr());
  CHECK(back[8].getReader().getTimestampNs() == std::numeric_limits<int64_t>::max());
  CHECK(back[9].getReader().getPodUid().size() == 5000);
}

TEST_CASE("sameEvent tells apart events that differ in one field") {
  capnp::MallocMessageBuilder arena;
  std::vector<capnp::Orphan<Event>> a, b;
  addEveryKind(arena.getOrphanage(), a, 10);
  addEveryKind(arena.getOrphanage(), b, 10);
  REQUIRE(sameEvent(a[1].getReader(), b[1].getReader()));
  b[1].get().getExec().setArgvTruncated(false);
  CHECK(!sameEvent(a[1].getReader(), b[1].getReader()));
  b[0].get().setComm("");
  a[0].get().disownComm();
  CHECK(!sameEvent(a[0].getReader(), b[0].getReader()));
}

// A process churn like the exec storms the columns are for, plus random events of every kind with
// random field values, many thousands of them.
void addMany(capnp::Orphanage orphanage, std::vector<capnp::Orphan<Event>>& out, size_t n,
             uint32_t seed) {
  std::mt19937_64 rng(seed);
  int64_t t = 1'764'000'000'000'000'000;
  uint32_t child = 5000;
  for (size_t i = 0; i < n; ++i) {
    out.push_back(orphanage.newOrphan<Event>());
    auto e = out.back().get();
    t += static_cast<int64_t>(rng() % 5'000'000);
    e.setTimestampNs(t);
    const uint64_t r = rng();
    if (i % 4 != 3) {  // fork, exec, exit of one child
      const uint32_t pid = i % 4 == 0 ? 100 : child;
      e.setPid(pid);
      e.setTid(pid);
      e.setPpid(i % 4 == 0 ? 1 : 100);
      e.setCgroupId(4242);
      e.setComm(i % 4 == 0 ? "bash" : "true");
      if (i % 4 == 0) {
        child += 1 + static_cast<uint32_t>(r % 3);
        e.initFork().setChildPid(child);
      } else if (i % 4 == 1) {
        auto x = e.initExec();
        x.setFilename("/bin/true");
        x.setArgv("true " + std::to_string(r % 100));
      } else {
        auto x = e.initExit();
        x.setExitCode(static_cast<int32_t>(r % 3));
        x.setLifetimeNs(r % 10'000'000);
      }
      continue;
    }
    e.setPid(static_cast<uint32_t>(rng()));
    e.setTid(static_cast<uint32_t>(rng()));
    e.setPpid(static_cast<uint32_t>(rng()));
    e.setCgroupId(rng());
    e.setComm(std::string(r % 16, static_cast<char>('a' + r % 26)));
    switch (r % 6) {
      case 0:
        e.initExec().setArgv(std::to_string(rng()));
        break;
      case 1: {
        auto x = e.initExit();
        x.setExitCode(static_cast<int32_t>(rng()));
        x.setSignal(static_cast<int32_t>(rng()));
        x.setLifetimeNs(rng());
        x.setCoreDumped(rng() & 1);
        break;
      }
      case 2:
        e.initFork().setChildPid(static_cast<uint32_t>(rng()));
        break;
      case 3: {
        auto x = e.initOomKill();
        x.setVictimPid(static_cast<uint32_t>(rng()));
        x.setVictimComm("v" + std::to_string(rng() % 10));
        x.setVictimCgroupId(rng());
        x.setTotalVmKb(rng());
        x.setAnonRssKb(rng());
        break;
      }
      case 4: {
        auto x = e.initSignal();
        x.setSignal(static_cast<int32_t>(rng()));
        x.setTargetPid(static_cast<uint32_t>(rng()));
        x.setSenderPid(static_cast<uint32_t>(rng()));
        x.setResult(static_cast<int32_t>(rng()));
        break;
      }
      default: {
        auto x = e.initTcpState();
        x.setFamily(static_cast<uint16_t>(rng()));
        const uint64_t addr = rng();
        x.setSaddr(kj::arrayPtr(reinterpret_cast<const kj::byte*>(&addr), 4));
        x.setDaddr(kj::arrayPtr(reinterpret_cast<const kj::byte*>(&addr), 8));
        x.setSport(static_cast<uint16_t>(rng()));
        x.setDport(static_cast<uint16_t>(rng()));
        x.setOldState(static_cast<uint8_t>(rng()));
        x.setNewState(static_cast<uint8_t>(rng()));
        x.setDurationNs(rng());
        x.setTxBytes(rng());
        x.setRxBytes(rng());
        x.setLifetimeNs(rng());
        x.setSocketError(static_cast<int32_t>(rng()));
        x.setSrttUs(static_cast<uint32_t>(rng()));
        break;
      }
    }
  }
}

TEST_CASE("event columns give back 40,000 churn and random events exactly, in less space") {
  capnp::MallocMessageBuilder arena;
  std::vector<capnp::Orphan<Event>> events;
  addMany(arena.getOrphanage(), events, 40'000, 1);
  const auto in = readers(events);
  capnp::MallocMessageBuilder columns, out;
  auto back = roundTrip(in, columns, out.getOrphanage());
  REQUIRE(back.size() == in.size());
  size_t same = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    same += sameEvent(in[i], back[i].getReader());
  }
  CHECK(same == in.size());
  // The churn part codes to far fewer bytes than the Event structs.
  capnp::MallocMessageBuilder list_msg;
  auto list = list_msg.initRoot<wire::Frame>().initEvents(static_cast<unsigned>(in.size()));
  for (size_t i = 0; i < in.size(); ++i) {
    list.setWithCaveats(static_cast<unsigned>(i), in[i]);
  }
  CHECK(capnp::computeSerializedSizeInWords(columns) <
        capnp::computeSerializedSizeInWords(list_msg) / 2);
}

// A frame with `events` in `form`, through the codec as the agent sends it.
std::unique_ptr<DecodedFrame> sendFrame(Snapshot& s, WireForm form) {
  capnp::MallocMessageBuilder message;
  toWire(s, message, form);
  auto frame = message.getRoot<wire::Frame>();
  if (form == WireForm::kCurrent) {
    CHECK(frame.hasEventColumns());
    CHECK(!frame.hasEvents());
  } else {
    CHECK(!frame.hasEventColumns());
    CHECK(frame.getEvents().size() == s.events.size());
  }
  auto decoded =
      decodeFrame(encodeFrame(message, wire::Encoding::PACKED_ZSTD), wire::Encoding::PACKED_ZSTD);
  REQUIRE(decoded.ok());
  return std::move(*decoded);
}

TEST_CASE("a frame gives the same events and snapshot JSON from columns and from the list") {
  Snapshot s;
  s.agent.agent_id = "node-a";
  s.seq = 3;
  s.process(101).comm = "mysql";
  addEveryKind(s.event_arena->getOrphanage(), s.events, 1'000'000'000);
  addMany(s.event_arena->getOrphanage(), s.events, 2'000, 7);
  auto columns = sendFrame(s, WireForm::kCurrent);
  auto list = sendFrame(s, WireForm::kEventList);
  Snapshot from_columns, from_list;
  REQUIRE(fromWire(columns->frame(), from_columns).ok());
  REQUIRE(fromWire(list->frame(), from_list).ok());
  REQUIRE(from_columns.events.size() == s.events.size());
  REQUIRE(from_list.events.size() == s.events.size());
  for (size_t i = 0; i < s.events.size(); ++i) {
    INFO("event " << i);
    CHECK(sameEvent(from_columns.events[i].getReader(), s.events[i].getReader()));
    CHECK(sameEvent(from_list.events[i].getReader(), s.events[i].getReader()));
  }
  // `vigil snapshot --json` renders them identically.
  const std::string json_columns = cli::snapshotToJson(from_columns).dump();
  CHECK(json_columns == cli::snapshotToJson(from_list).dump());
  CHECK(json_columns.find("--password=***") != std::string::npos);
  CHECK(json_columns.find("hunter2") == std::string::npos);
  // A frame without events carries neither form.
  Snapshot none;
  capnp::MallocMessageBuilder m;
  toWire(none, m);
  CHECK(!m.getRoot<wire::Frame>().hasEventColumns());
  CHECK(!m.getRoot<wire::Frame>().hasEvents());
}

TEST_CASE("a frame carrying events both as a list and as columns is refused") {
  capnp::MallocMessageBuilder arena;
  std::vector<capnp::Orphan<Event>> events;
  addEveryKind(arena.getOrphanage(), events, 10);
  capnp::MallocMessageBuilder message;
  auto frame = message.initRoot<wire::Frame>();
  writeFrameEvents(readers(events), EventForm::kColumns, frame);
  frame.initEvents(1).setWithCaveats(0, events[0].getReader());
  std::vector<capnp::Orphan<Event>> out;
  absl::Status st = readFrameEvents(frame.asReader(), arena.getOrphanage(), out);
  REQUIRE(!st.ok());
  CHECK(st.message() ==
        "frame carries events both as a list (1) and as columns; a frame uses one form");
  CHECK(out.empty());
  Snapshot snap;
  CHECK(!fromWire(frame.asReader(), snap).ok());
  // An empty list beside the columns is no second form.
  frame.initEvents(0);
  CHECK(readFrameEvents(frame.asReader(), arena.getOrphanage(), out).ok());
  CHECK(out.size() == events.size());
}

TEST_CASE("withEventList rewrites a frame's columns into the list an older aggregator reads") {
  Snapshot s;
  s.agent.agent_id = "node-a";
  s.seq = 9;
  addEveryKind(s.event_arena->getOrphanage(), s.events, 1'000);
  capnp::MallocMessageBuilder message;
  toWire(s, message);
  auto payload = encodeFrame(message, wire::Encoding::PACKED_ZSTD);
  auto listed = withEventList(payload);
  REQUIRE(listed.ok());
  auto decoded = decodeFrame(*listed, wire::Encoding::PACKED_ZSTD);
  REQUIRE(decoded.ok());
  auto frame = (*decoded)->frame();
  CHECK(!frame.hasEventColumns());
  REQUIRE(frame.getEvents().size() == s.events.size());
  for (size_t i = 0; i < s.events.size(); ++i) {
    CHECK(sameEvent(frame.getEvents()[i], s.events[i].getReader()));
  }
  CHECK(frame.getSeq() == 9);
  CHECK(std::string(frame.getAgent().getAgentId().cStr()) == "node-a");
  // A frame without columns needs no rewriting (empty result); garbage is an error.
  auto again = withEventList(*listed);
  REQUIRE(again.ok());
  CHECK(again->size() == 0);
  const kj::byte junk[5] = {1, 2, 3, 4, 5};
  CHECK(!withEventList(kj::arrayPtr(junk, 5)).ok());
}

// Encoded columns of the every-kind events, for the malformed-input cases to damage.
struct Columns {
  capnp::MallocMessageBuilder message;
  wire::EventColumns::Builder get() { return message.getRoot<wire::EventColumns>(); }
  Columns() {
    capnp::MallocMessageBuilder arena;
    std::vector<capnp::Orphan<Event>> events;
    addEveryKind(arena.getOrphanage(), events, 10);
    writeEventColumns(readers(events), message.initRoot<wire::EventColumns>());
  }
};

std::string decodeError(wire::EventColumns::Reader c) {
  capnp::MallocMessageBuilder out;
  std::vector<capnp::Orphan<Event>> events;
  absl::Status st = readEventColumns(c, out.getOrphanage(), events);
  if (st.ok()) {
    return "ok";
  }
  CHECK(events.empty());  // nothing half-decoded is handed out
  return std::string(st.message());
}

std::vector<kj::byte> bytesOf(capnp::Data::Reader d) { return {d.begin(), d.end()}; }
capnp::Data::Reader dataOf(const std::vector<kj::byte>& v) { return {v.data(), v.size()}; }

TEST_CASE("malformed event columns are refused with a status naming the problem") {
  {
    Columns c;  // intact: decodes
    CHECK(decodeError(c.get().asReader()) == "ok");
  }
  SECTION("column lengths disagreeing") {
    Columns c;
    c.get().setCount(c.get().getCount() + 1);
    CHECK(decodeError(c.get().asReader()) == "event column kind holds 18 bytes for 19 events");
    Columns more;
    auto pid = bytesOf(more.get().asReader().getPid());
    pid.push_back(0);
    more.get().setPid(dataOf(pid));
    CHECK(decodeError(more.get().asReader()) ==
          "event column pid has 1 bytes left after the last event");
    Columns fewer;
    auto time = bytesOf(fewer.get().asReader().getTime());
    time.pop_back();
    fewer.get().setTime(dataOf(time));
    CHECK(decodeError(fewer.get().asReader()) == "event column time is truncated");
    Columns none;
    none.get().disownTcpState();
    CHECK(decodeError(none.get().asReader()) == "event column tcpState is truncated");
  }
  SECTION("out-of-range indexes and values") {
    Columns c;
    auto comm = bytesOf(c.get().asReader().getComm());
    comm[0] = 99;  // the first event's comm: a reference past the (empty) string table
    c.get().setComm(dataOf(comm));
    CHECK(decodeError(c.get().asReader()) ==
          "event column comm: string reference 99 past the table of 0");
    Columns p;
    auto pid = bytesOf(p.get().asReader().getPid());
    // The first event's pid is an escape, 16 + zigzag(100) = 216, two bytes; the second event's
    // pid (its child, 101) is position 0 of the list [101, 100]. Make it position 5.
    REQUIRE(pid.size() > 2);
    REQUIRE(pid[2] == 0);
    pid[2] = 5;
    p.get().setPid(dataOf(pid));
    CHECK(decodeError(p.get().asReader()) == "event column pid: position 5 past the 2 recent pids");
    Columns t;
    auto tid = bytesOf(t.get().asReader().getTid());
    REQUIRE(tid[0] == 0);  // the first event's tid - pid
    // zigzag(2^33) = 2^34 as a varint: 0x80 0x80 0x80 0x80 0x40.
    tid[0] = 0x40;
    tid.insert(tid.begin(), {0x80, 0x80, 0x80, 0x80});
    t.get().setTid(dataOf(tid));
    CHECK(decodeError(t.get().asReader()) == "event column tid: tid 100 + 8589934592 out of range");
    Columns k;
    auto kind = bytesOf(k.get().asReader().getKind());
    kind[0] = 6 << 2;
    k.get().setKind(dataOf(kind));
    CHECK(decodeError(k.get().asReader()) == "event column kind: event 0 has unknown kind 6");
    Columns f;
    auto fkind = bytesOf(f.get().asReader().getKind());
    fkind[0] |= 1;  // a fork with the exec/exit flag
    f.get().setKind(dataOf(fkind));
    CHECK(decodeError(f.get().asReader()) ==
          "event column kind: event 0 sets a flag its kind 2 does not have");
  }
  SECTION("truncated data") {
    Columns c;
    auto lit = bytesOf(c.get().asReader().getLiterals());
    lit.resize(lit.size() - 1);
    c.get().setLiterals(dataOf(lit));
    CHECK(decodeError(c.get().asReader()) == "event column literals is truncated");
    Columns v;
    std::vector<kj::byte> endless(11, 0xff);
    v.get().setCgroup(dataOf(endless));
    CHECK(decodeError(v.get().asReader()) ==
          "event column cgroup has a varint longer than 64 bits");
    Columns empty;
    auto msg = empty.get();
    msg.disownKind();
    CHECK(decodeError(msg.asReader()) == "event column kind holds 0 bytes for 18 events");
  }
}

// The Data columns by number, for damaging one at random.
constexpr int kDamageable = 17;
capnp::Data::Reader column(wire::EventColumns::Reader c, int i) {
  switch (i) {
    case 0:
      return c.getKind();
    case 1:
      return c.getTime();
    case 2:
      return c.getPid();
    case 3:
      return c.getTid();
    case 4:
      return c.getPpid();
    case 5:
      return c.getCgroup();
    case 6:
      return c.getComm();
    case 7:
      return c.getContainerId();
    case 8:
      return c.getPodUid();
    case 9:
      return c.getFilename();
    case 10:
      return c.getArgv();
    case 11:
      return c.getExit();
    case 12:
      return c.getFork();
    case 13:
      return c.getOomKill();
    case 14:
      return c.getSignal();
    case 15:
      return c.getTcpState();
    default:
      return c.getLiterals();
  }
}
void setColumn(wire::EventColumns::Builder c, int i, const std::vector<kj::byte>& v) {
  switch (i) {
    case 0:
      c.setKind(dataOf(v));
      break;
    case 1:
      c.setTime(dataOf(v));
      break;
    case 2:
      c.setPid(dataOf(v));
      break;
    case 3:
      c.setTid(dataOf(v));
      break;
    case 4:
      c.setPpid(dataOf(v));
      break;
    case 5:
      c.setCgroup(dataOf(v));
      break;
    case 6:
      c.setComm(dataOf(v));
      break;
    case 7:
      c.setContainerId(dataOf(v));
      break;
    case 8:
      c.setPodUid(dataOf(v));
      break;
    case 9:
      c.setFilename(dataOf(v));
      break;
    case 10:
      c.setArgv(dataOf(v));
      break;
    case 11:
      c.setExit(dataOf(v));
      break;
    case 12:
      c.setFork(dataOf(v));
      break;
    case 13:
      c.setOomKill(dataOf(v));
      break;
    case 14:
      c.setSignal(dataOf(v));
      break;
    case 15:
      c.setTcpState(dataOf(v));
      break;
    default:
      c.setLiterals(dataOf(v));
      break;
  }
}

TEST_CASE("randomly damaged event columns decode or are refused, never crash") {
  capnp::MallocMessageBuilder arena;
  std::vector<capnp::Orphan<Event>> events;
  addEveryKind(arena.getOrphanage(), events, 10);
  addMany(arena.getOrphanage(), events, 200, 3);
  capnp::MallocMessageBuilder good;
  writeEventColumns(readers(events), good.initRoot<wire::EventColumns>());
  std::mt19937 rng(42);
  size_t refused = 0;
  for (int round = 0; round < 3000; ++round) {
    capnp::MallocMessageBuilder bad;
    bad.setRoot(good.getRoot<wire::EventColumns>().asReader());
    auto c = bad.getRoot<wire::EventColumns>();
    // Damage one column: flip, drop or add a byte.
    const int which = static_cast<int>(rng() % kDamageable);
    std::vector<kj::byte> v = bytesOf(column(c.asReader(), which));
    switch (rng() % 3) {
      case 0:
        if (!v.empty()) {
          v[rng() % v.size()] ^= static_cast<kj::byte>(1 + rng() % 255);
        }
        break;
      case 1:
        if (!v.empty()) {
          v.erase(v.begin() + static_cast<long>(rng() % v.size()));
        }
        break;
      default:
        v.insert(v.begin() + static_cast<long>(rng() % (v.size() + 1)),
                 static_cast<kj::byte>(rng()));
        break;
    }
    setColumn(c, which, v);
    refused += decodeError(c.asReader()) != "ok";
  }
  // Most damage is caught (a flipped byte inside a value can still decode, to other values).
  CHECK(refused > 1500);
}

}  // namespace
}  // namespace vigil
