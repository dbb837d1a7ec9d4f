// Tests of the benchmark tools (bench/): they measure nothing here, they check that the tools
// still do what the harness relies on, so `make bench` cannot rot silently.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <regex>
#include <sstream>
#include <string>

#include "bench/common/synth_frame.h"
#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"
#include "tests/support/test_support.h"

namespace vigil {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string kvValue(const std::string& text, const std::string& key) {
  std::smatch m;
  if (std::regex_search(text, m, std::regex("(^|\\s)" + key + "=(\\S+)"))) {
    return m[2];
  }
  return "";
}

TEST_CASE("a synthetic frame has about 500 series and survives the agent's encoding") {
  auto snap = std::make_unique<Snapshot>();
  bench::SynthOptions o;
  o.agent_id = "bench-7";
  o.boot_epoch = 42;
  bench::buildSyntheticSnapshot(o, 3, *snap);
  size_t series = bench::countSeries(*snap);
  CHECK(series >= 450);
  CHECK(series <= 550);

  capnp::MallocMessageBuilder message;
  toWire(*snap, message);
  auto payload = encodeFrame(message, wire::Encoding::PACKED_ZSTD);
  auto decoded = decodeFrame(payload, wire::Encoding::PACKED_ZSTD);
  REQUIRE(decoded.ok());
  auto back = std::make_unique<Snapshot>();
  REQUIRE(fromWire((*decoded)->frame(), *back).ok());
  CHECK(back->agent.agent_id == "bench-7");
  CHECK(back->boot_epoch == 42);
  CHECK(back->seq == 3);
  CHECK(back->processes.size() == snap->processes.size());
  CHECK(bench::countSeries(*back) == series);
}

TEST_CASE("the floor attaches empty programs to the named hooks and lists one process's links") {
  if (!testing::bpfAllowed("floor attach")) {
    return;
  }
  testing::TempDir dir;
  std::string log = dir.file("floor.log");
  auto floor = testing::Child::spawn(
      {testing::binaryPath("vigil-bench-floor"), "attach", "sched_switch", "raw_tp:sys_exit"}, log);
  REQUIRE(testing::waitFor(
      [&] { return testing::readFile(log).find("ready") != std::string::npos; }, seconds(20)));
  std::string links = testing::shell(testing::binaryPath("vigil-bench-floor") +
                                     " links --prefix=floor_ --pid=" + std::to_string(floor.pid()));
  INFO(links);
  std::regex line("^\\d+ (floor_\\w+) (\\S+) (\\S+)$");
  std::vector<std::string> hooks;
  size_t pos = 0;
  while (pos < links.size()) {
    size_t end = links.find('\n', pos);
    std::string l = links.substr(pos, end - pos);
    std::smatch m;
    if (std::regex_match(l, m, line)) {
      hooks.push_back(m[2].str() + ":" + m[3].str());
    }
    pos = end == std::string::npos ? links.size() : end + 1;
  }
  std::sort(hooks.begin(), hooks.end());
  CHECK(hooks == std::vector<std::string>{"raw_tp:sys_exit", "tp_btf:sched_switch"});

  // Another process's links are not listed for this pid.
  std::string none = testing::shell(testing::binaryPath("vigil-bench-floor") +
                                    " links --prefix=floor_ --pid=" + std::to_string(getpid()));
  CHECK(none.empty());

  floor.signal(SIGTERM);
  auto status = floor.wait(milliseconds(10000));
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
}

// Runs the load generator with 20 agents for 3 s at one frame per second against a fresh
// aggregator (with its ingest log) and returns what it printed. With `agent0_log`, also what the
// aggregator logged for agent 0: "frames distinct_seqs max_seq".
std::string runLoadgen(const std::string& extra_flags, std::string* agent0_log = nullptr) {
  testing::TempDir dir;
  auto agg = testing::Child::spawn(
      {testing::binaryPath("vigil-aggregator"), "--rpc_port=0", "--http_port=0",
       "--data_dir=" + dir.file("data"), "--ready_file=" + dir.file("agg.ready")},
      dir.file("agg.log"));
  auto rpc = testing::readReadyPort(dir.file("agg.ready"), "rpc_port", milliseconds(10000));
  REQUIRE(rpc.has_value());
  std::string out = testing::shell(
      testing::binaryPath("vigil-bench-loadgen") + " --addr=127.0.0.1:" + std::to_string(*rpc) +
      " --agents=20 --interval_ms=1000 --warmup_s=1 --duration_s=3" + extra_flags);
  if (agent0_log != nullptr) {
    *agent0_log = testing::shell("sqlite3 -separator ' ' " + dir.file("data/ingest.db") +
                                 " \"SELECT COUNT(*), COUNT(DISTINCT seq), MAX(seq) FROM frames"
                                 " WHERE agent_id='bench-0'\"");
  }
  return out;
}

TEST_CASE("the load generator registers every agent and gets its frames acknowledged") {
  std::string out = runLoadgen("");
  CHECK(kvValue(out, "registered") == "20");
  CHECK(kvValue(out, "connect_failed") == "0");
  CHECK(kvValue(out, "push_failed") == "0");
  CHECK(kvValue(out, "late_pushes") == "0");
  CHECK(kvValue(out, "sustained") == "1");
  // 20 agents for 3 s at one frame per second: 60 frames, give or take the window's edges.
  int acked = std::stoi(kvValue(out, "frames_acked").empty() ? "0" : kvValue(out, "frames_acked"));
  CHECK(acked >= 40);
  CHECK(acked <= 80);
  CHECK(kvValue(out, "series_per_frame") != "0");
  // Frames prebuilt (the default): every push in the window came from the agents' streams, as
  // keyframes and pointer deltas the aggregator expanded.
  CHECK(kvValue(out, "frames") == "prebuilt");
  CHECK(kvValue(out, "pushes_built") == "0");
  CHECK(kvValue(out, "agents_left_pool") == "0");
  CHECK(kvValue(out, "delta_refused") == "0");
  CHECK(std::stoi("0" + kvValue(out, "pushes_from_pool")) >= acked);  // sent, acked or not
  CHECK(std::stoi("0" + kvValue(out, "deltas_sent")) > 0);
  CHECK(std::stoul("0" + kvValue(out, "prebuild_bytes")) > 0);
}

TEST_CASE("the load generator building frames per push gets them acknowledged too") {
  std::string out = runLoadgen(" --frames=per_push");
  CHECK(kvValue(out, "frames") == "per_push");
  CHECK(kvValue(out, "registered") == "20");
  CHECK(kvValue(out, "sustained") == "1");
  CHECK(kvValue(out, "delta_refused") == "0");
  CHECK(std::stoi("0" + kvValue(out, "deltas_sent")) > 0);
  CHECK(kvValue(out, "prebuild_bytes").empty());
}

TEST_CASE("a simulated agent whose delta is refused resyncs and leaves its prebuilt stream") {
  std::string agent0;
  std::string out = runLoadgen(" --test_wrong_base_at_seq=3", &agent0);
  INFO(out);
  CHECK(kvValue(out, "frames") == "prebuilt");
  CHECK(kvValue(out, "registered") == "20");
  CHECK(kvValue(out, "delta_refused") == "1");
  CHECK(kvValue(out, "resyncs") == "1");
  CHECK(kvValue(out, "resync_failed") == "0");
  CHECK(kvValue(out, "push_failed") == "0");
  CHECK(kvValue(out, "agents_left_pool") == "1");
  CHECK(std::stoi("0" + kvValue(out, "pushes_built")) > 0);  // agent 0, from its resync on
  CHECK(kvValue(out, "sustained") == "0");                   // a refusal is not sustained
  // Agent 0's frames all reached the log once each, the refused one resent as a keyframe.
  std::istringstream in(agent0);
  int frames = 0, distinct = 0, max_seq = 0;
  in >> frames >> distinct >> max_seq;
  INFO(agent0);
  CHECK(max_seq >= 4);
  CHECK(frames == max_seq);
  CHECK(distinct == max_seq);
}

}  // namespace
}  // namespace vigil
