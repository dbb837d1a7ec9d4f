// `vigil hist` against the real kernel: two CPU-bound threads pinned to one CPU must wait for
// each other on the run queue, and `vigil hist runq --pid` must show those waits (>= 1 ms).
#include <stdlib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_support.h"
#include "userspace/cli/trace_hist.h"

namespace vigil {
namespace {

// vigil's BTF cache goes to a directory of this run's (tests/support/test_support.h).
const testing::BtfCacheDir g_btf_cache_dir;

using namespace std::chrono_literals;
using testing::Child;

std::vector<nlohmann::json> jsonLines(const std::string& text) {
  std::vector<nlohmann::json> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) {
      end = text.size();
    }
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line[0] == '{') {
      out.push_back(nlohmann::json::parse(line));
    }
    start = end + 1;
  }
  return out;
}

// A child process with two threads spinning on CPU 0 (until killed).
Child pinnedBurners() {
  return Child::fork([]() {
    auto spin = []() {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(0, &set);
      pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
      volatile uint64_t x = 0;
      for (;;) {
        x = x + 1;
      }
    };
    std::thread a(spin), b(spin);
    a.join();
    return 0;
  });
}

}  // namespace

TEST_CASE("vigil hist runq --pid --json shows >= 1 ms waits of two threads pinned to one CPU") {
  if (!testing::bpfAllowed("hist_runq_test")) {
    return;
  }
  Child burners = pinnedBurners();
  std::this_thread::sleep_for(200ms);
  testing::TempDir dir;
  std::string log = dir.file("hist.log");
  Child hist = Child::spawn({testing::binaryPath("vigil"), "hist", "runq", "--pid",
                             std::to_string(burners.pid()), "--duration", "2s", "--json"},
                            log);
  auto status = hist.wait(15s);
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  auto lines = jsonLines(testing::readFile(log));
  REQUIRE(lines.size() == 1);
  const nlohmann::json& h = lines[0];
  CHECK(h["metric"] == "vigil_process_runqueue_latency_seconds");
  CHECK(h["scope"] == "pid " + std::to_string(burners.pid()));
  CHECK(h["unit"] == "us");
  uint64_t total = 0, over_1ms = 0;
  for (const auto& b : h["buckets"]) {
    total += b["count"].get<uint64_t>();
    if (b["low_ns"].get<uint64_t>() >= 1000000) {
      over_1ms += b["count"].get<uint64_t>();
    }
  }
  CHECK(total == h["count"].get<uint64_t>());
  CHECK(over_1ms >= 1);
}

TEST_CASE("vigil hist runq --interval prints one histogram per interval") {
  if (!testing::bpfAllowed("hist_runq_test")) {
    return;
  }
  Child burners = pinnedBurners();
  testing::TempDir dir;
  std::string log = dir.file("hist.log");
  Child hist = Child::spawn(
      {testing::binaryPath("vigil"), "hist", "runq", "--pid", std::to_string(burners.pid()),
       "--duration", "2s", "--interval", "500ms", "--json"},
      log);
  auto status = hist.wait(15s);
  REQUIRE(status.has_value());
  CHECK(WEXITSTATUS(*status) == 0);
  auto lines = jsonLines(testing::readFile(log));
  CHECK(lines.size() == 4);
  for (const auto& h : lines) {
    CHECK(h["count"].get<uint64_t>() > 0);  // the burners wait in every interval
  }
}

TEST_CASE("vigil hist syscall counts every syscall of a process (continuous, not sampled)") {
  if (!testing::bpfAllowed("hist_runq_test")) {
    return;
  }
  // A child that makes exactly 1000 getppid() calls a second after start, then sleeps.
  Child worker = Child::fork([]() {
    std::this_thread::sleep_for(1s);
    for (int i = 0; i < 1000; ++i) {
      syscall(SYS_getppid);
    }
    pause();
    return 0;
  });
  testing::TempDir dir;
  std::string log = dir.file("hist.log");
  Child hist = Child::spawn({testing::binaryPath("vigil"), "hist", "syscall", "--pid",
                             std::to_string(worker.pid()), "--duration", "2s", "--json"},
                            log);
  auto status = hist.wait(15s);
  REQUIRE(status.has_value());
  CHECK(WEXITSTATUS(*status) == 0);
  auto lines = jsonLines(testing::readFile(log));
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["metric"] == "vigil_syscall_latency_seconds");
  // 1000 getppid + the nanosleep that returns + pause entering (not yet returned: not counted).
  CHECK(lines[0]["count"].get<uint64_t>() >= 1000);
  CHECK(lines[0]["count"].get<uint64_t>() <= 1002);
}

TEST_CASE("vigil hist tcp-connect and tcp-rtt --pid count exactly that process's connections") {
  if (!testing::bpfAllowed("hist_runq_test")) {
    return;
  }
  // A child that makes three loopback connections a second after start (to a listener of its
  // own), closes both ends of each, then waits. Other processes' connections must not count.
  auto worker = []() {
    return Child::fork([]() {
      int lfd = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof(a);
      if (bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(lfd, 8) != 0 ||
          getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        return 1;
      }
      std::this_thread::sleep_for(1s);
      for (int i = 0; i < 3; ++i) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
          return 2;
        }
        int s = accept(lfd, nullptr, nullptr);
        // The accepted end closes first: its owner is known from then on (an accepted socket
        // nobody used yet has none), so both ends' RTT samples belong to this process.
        close(s);
        close(c);
      }
      pause();
      return 0;
    });
  };
  for (const char* what : {"tcp-connect", "tcp-rtt"}) {
    INFO(what);
    Child w = worker();
    testing::TempDir dir;
    std::string log = dir.file("hist.log");
    Child hist = Child::spawn({testing::binaryPath("vigil"), "hist", what, "--pid",
                               std::to_string(w.pid()), "--duration", "2s", "--json"},
                              log);
    auto status = hist.wait(15s);
    REQUIRE(status.has_value());
    CHECK(WEXITSTATUS(*status) == 0);
    auto lines = jsonLines(testing::readFile(log));
    REQUIRE(lines.size() == 1);
    // One connect latency per connection; one RTT sample per end leaving ESTABLISHED.
    CHECK(lines[0]["count"].get<uint64_t>() == (std::string(what) == "tcp-connect" ? 3 : 6));
    CHECK(lines[0]["metric"] == (std::string(what) == "tcp-connect"
                                     ? "vigil_tcp_connect_latency_seconds"
                                     : "vigil_tcp_srtt_seconds"));
  }
}

TEST_CASE("vigil hist runq --container sums the run-queue waits of a podman container") {
  if (!testing::bpfAllowed("hist_runq_test")) {
    return;
  }
  if (testing::shell("podman image exists localhost/vigil-test-busybox && command -v runc "
                     ">/dev/null && echo yes") != "yes\n") {
    WARN("needs podman, runc and localhost/vigil-test-busybox (trace_events_test builds it)");
    return;
  }
  std::string name = "vigil-test-hist-" + std::to_string(getpid());
  struct Cleanup {
    std::string name;
    ~Cleanup() { testing::shell("podman rm -f -t 0 " + name + " >/dev/null 2>&1"); }
  } cleanup{name};
  // Two busy loops on one CPU inside the container: each waits while the other runs.
  std::string out = testing::shell(
      "podman --runtime runc --cgroup-manager cgroupfs run -d --rm --cpuset-cpus 0 --name " + name +
      " --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 localhost/vigil-test-busybox sh -c "
      "'while :; do :; done & while :; do :; done' 2>/dev/null");
  std::string id = out.substr(0, out.find_first_of(" \n"));
  REQUIRE(id.size() == 64);
  testing::TempDir dir;
  std::string log = dir.file("hist.log");
  Child hist = Child::spawn({testing::binaryPath("vigil"), "hist", "runq", "--container",
                             id.substr(0, 12), "--duration", "1s", "--json"},
                            log);
  auto status = hist.wait(15s);
  REQUIRE(status.has_value());
  CHECK(WEXITSTATUS(*status) == 0);
  auto lines = jsonLines(testing::readFile(log));
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["metric"] == "vigil_cgroup_runqueue_latency_seconds");
  CHECK(lines[0]["scope"] == "container " + id.substr(0, 12));
  CHECK(lines[0]["count"].get<uint64_t>() > 0);
}

TEST_CASE("log2 histograms: interval deltas with runqlat-style bars and JSON bucket bounds") {
  HistogramSample a{"m", {}, 1000, {0, 2, 4, 0, 1}, 7, 40};
  HistogramSample b{"m", {}, 1000, {1, 3, 8, 0, 1}, 13, 70};
  cli::Log2Hist before, after;
  before.add(a);
  after.add(b);
  cli::Log2Hist d = after.minus(before);
  CHECK(d.buckets == std::vector<uint64_t>{1, 1, 4, 0, 0});
  CHECK(d.count == 6);
  CHECK(d.sum_units == 30);
  std::string text = cli::renderHist(d, "t");
  CHECK(text.find("0ns -> 2us : 1 ") != std::string::npos);
  CHECK(text.find("4us -> 8us : 4          |****************************************|") !=
        std::string::npos);
  CHECK(text.find("8us -> 16us") == std::string::npos);  // trailing empty buckets are cut
  CHECK(text.find("count 6, average 5us") != std::string::npos);
  auto j = nlohmann::json::parse(cli::histJson(d, "m", "host"));
  CHECK(j["unit"] == "us");
  REQUIRE(j["buckets"].size() == 3);
  CHECK(j["buckets"][2]["low"] == 4);
  CHECK(j["buckets"][2]["high"] == 8);
  CHECK(j["buckets"][2]["low_ns"] == 4000);
  CHECK(cli::renderHist(cli::Log2Hist{}, "t").find("(no samples)") != std::string::npos);
}

TEST_CASE("vigil hist: usage errors exit 2 and name the problem") {
  std::string vigil = testing::binaryPath("vigil");
  auto code = [&](const std::vector<std::string>& argv) {
    Child c = Child::spawn(argv, "/dev/null");
    auto st = c.wait(10s);
    REQUIRE(st.has_value());
    return WEXITSTATUS(*st);
  };
  CHECK(code({vigil, "hist"}) == 2);
  CHECK(code({vigil, "hist", "bogus"}) == 2);
  CHECK(code({vigil, "hist", "runq", "--device", "vda"}) == 2);
  CHECK(code({vigil, "hist", "syscall", "--container", "abc"}) == 2);
  CHECK(code({vigil, "hist", "runq", "--duration", "soon"}) == 2);
}

}  // namespace vigil
