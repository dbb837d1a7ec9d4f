// `vigil trace` against the real kernel: the vigil binary runs as a child, real workloads
// (exec of a uniquely named helper, a loopback TCP exchange between two processes, an OOM kill
// in a memory-limited cgroup) happen, and the test reads what vigil printed.
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_support.h"
#include "userspace/collectors/process_collector.h"

namespace vigil {
namespace {

// vigil's BTF cache goes to a directory of this run's (tests/support/test_support.h).
const testing::BtfCacheDir g_btf_cache_dir;

using namespace std::chrono_literals;
using testing::Child;
using testing::readFile;
using testing::TempDir;

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

// Starts `vigil trace ...` with output to `log` and waits for its header (probes attached).
Child startTrace(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> argv = {testing::binaryPath("vigil"), "trace"};
  argv.insert(argv.end(), args.begin(), args.end());
  Child c = Child::spawn(argv, log);
  REQUIRE(testing::waitFor(
      [&]() {
        std::string t = readFile(log);
        return t.find("tracing") != std::string::npos || t.find("TIME") != std::string::npos;
      },
      10s, 10ms));
  return c;
}

// SIGTERM, then expects a clean exit 0.
void stopTrace(Child& c) {
  c.signal(SIGTERM);
  auto status = c.wait(10s);
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
}

// Copies /bin/true to dir/name, so its exec has a comm no other process has.
std::string uniqueHelper(const TempDir& dir, const std::string& name) {
  std::string path = dir.file(name);
  REQUIRE(system(("cp /bin/true " + path).c_str()) == 0);
  return path;
}

int runAndWait(const std::vector<std::string>& argv) {
  Child c = Child::spawn(argv);
  auto st = c.wait(10s);
  REQUIRE(st.has_value());
  return *st;
}

}  // namespace

TEST_CASE("vigil trace exec --json sees a uniquely named helper's exec with its argv masked") {
  if (!testing::bpfAllowed("trace_events_test")) {
    return;
  }
  TempDir dir;
  std::string name = "vtx" + std::to_string(getpid());
  std::string helper = uniqueHelper(dir, name);
  std::string log = dir.file("trace.log");
  Child trace = startTrace({"exec", "--json"}, log);
  runAndWait({helper, "--user=bob", "--password=hunter2secret", "plain"});
  bool seen = testing::waitFor(
      [&]() { return readFile(log).find("\"comm\":\"" + name + "\"") != std::string::npos; }, 5s);
  stopTrace(trace);
  REQUIRE(seen);
  std::string text = readFile(log);
  CHECK(text.find("hunter2secret") == std::string::npos);
  int matches = 0;
  for (const auto& j : jsonLines(text)) {
    if (j["comm"] != name) {
      continue;
    }
    ++matches;
    CHECK(j["event"] == "exec");
    CHECK(j["filename"] == helper);
    CHECK(j["argv"] == helper + " --user=bob --password=*** plain");
    CHECK(j["pid"].get<uint32_t>() > 0);
    CHECK(j["ppid"] == static_cast<uint32_t>(getpid()));
    CHECK(j.contains("container_id"));
    CHECK(j.contains("pod_uid"));
  }
  CHECK(matches == 1);
}

// `vigil trace` asks for a ring-buffer wakeup per event. The exec program writes with
// bpf_ringbuf_output, whose wakeup decision once ignored the record being written, so an exec
// into an empty ring woke nobody: the reader saw it only at the next event or its poll timeout.
TEST_CASE("an exec into an empty ring buffer wakes the reader (vigil trace's wakeup per event)") {
  if (!testing::bpfAllowed("trace_events_test")) {
    return;
  }
  TempDir dir;
  std::string helper = uniqueHelper(dir, "vwk" + std::to_string(getpid()));
  int go[2];
  REQUIRE(pipe(go) == 0);
  Child child = Child::fork([&]() {
    close(go[1]);
    char c;
    if (read(go[0], &c, 1) != 1) {
      return 1;
    }
    execl(helper.c_str(), helper.c_str(), static_cast<char*>(nullptr));
    return 127;
  });
  close(go[0]);
  ProcessOptions o;
  o.only_tgid = static_cast<uint32_t>(child.pid());  // nothing else reaches the ring
  o.event_types = 1u << static_cast<int>(ProcEventType::kExec);
  o.wakeup_bytes = 1;
  o.ring_bytes = 1u << 16;
  auto pc = ProcessCollector::create(o);
  REQUIRE(pc.ok());
  REQUIRE(write(go[1], "x", 1) == 1);
  close(go[1]);
  auto t0 = std::chrono::steady_clock::now();
  // Waits in epoll for the wakeup; without one it would return only after the full 30 s.
  int n = (*pc)->poll(30000);
  auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(n == 1);
  CHECK(waited < 15s);
  CHECK((*pc)->seen(ProcEventType::kExec) == 1);
  auto st = child.wait(10s);
  REQUIRE(st.has_value());
  CHECK(WEXITSTATUS(*st) == 0);
}

TEST_CASE("vigil trace exec --comm prints only that comm's events") {
  if (!testing::bpfAllowed("trace_events_test")) {
    return;
  }
  TempDir dir;
  std::string name = "vtc" + std::to_string(getpid());
  std::string helper = uniqueHelper(dir, name);
  std::string other = uniqueHelper(dir, "vto" + std::to_string(getpid()));
  std::string log = dir.file("trace.log");
  Child trace = startTrace({"exec", "--json", "--comm", name}, log);
  for (int i = 0; i < 3; ++i) {
    runAndWait({other});
    runAndWait({helper});
  }
  bool seen = testing::waitFor(
      [&]() {
        auto lines = jsonLines(readFile(log));
        return lines.size() >= 3;
      },
      5s);
  stopTrace(trace);
  REQUIRE(seen);
  auto lines = jsonLines(readFile(log));
  CHECK(lines.size() == 3);
  for (const auto& j : lines) {
    CHECK(j["comm"] == name);
  }
}

TEST_CASE("vigil trace tcp --json sees a loopback connection with both ends' pids and bytes") {
  if (!testing::bpfAllowed("trace_events_test")) {
    return;
  }
  TempDir dir;
  std::string log = dir.file("trace.log");
  // A listening socket made here, so the port is known before the children start.
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(lfd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  REQUIRE(listen(lfd, 4) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  uint16_t port = ntohs(addr.sin_port);

  Child trace = startTrace({"tcp", "--json"}, log);
  // Server: reads 5 bytes, answers 5000, closes. Client: sends 5, reads 5000, closes.
  Child server = Child::fork([lfd]() {
    int c = accept(lfd, nullptr, nullptr);
    if (c < 0) {
      return 1;
    }
    char buf[5];
    size_t got = 0;
    while (got < sizeof(buf)) {
      ssize_t n = read(c, buf + got, sizeof(buf) - got);
      if (n <= 0) {
        return 2;
      }
      got += n;
    }
    std::string reply(5000, 'x');
    if (write(c, reply.data(), reply.size()) != 5000) {
      return 3;
    }
    close(c);
    return 0;
  });
  close(lfd);
  Child client = Child::fork([port]() {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      return 1;
    }
    if (write(s, "hello", 5) != 5) {
      return 2;
    }
    char buf[8192];
    size_t got = 0;
    while (got < 5000) {
      ssize_t n = read(s, buf, sizeof(buf));
      if (n <= 0) {
        return 3;
      }
      got += n;
    }
    close(s);
    return 0;
  });
  auto cs = client.wait(10s);
  auto ss = server.wait(10s);
  REQUIRE(cs.has_value());
  REQUIRE(ss.has_value());
  CHECK(*cs == 0);
  CHECK(*ss == 0);
  uint32_t cpid = static_cast<uint32_t>(client.pid());
  uint32_t spid = static_cast<uint32_t>(server.pid());
  auto closeOf = [&](uint32_t pid) -> std::optional<nlohmann::json> {
    for (const auto& j : jsonLines(readFile(log))) {
      if (j["event"] == "close" && j["pid"] == pid) {
        return j;
      }
    }
    return std::nullopt;
  };
  bool seen = testing::waitFor([&]() { return closeOf(cpid) && closeOf(spid); }, 5s);
  stopTrace(trace);
  REQUIRE(seen);
  nlohmann::json c = *closeOf(cpid);
  nlohmann::json s = *closeOf(spid);
  // Client end: local ephemeral port, remote = the listener.
  CHECK(c["saddr"] == "127.0.0.1");
  CHECK(c["daddr"] == "127.0.0.1");
  CHECK(c["dport"] == port);
  // Server end: local = the listener's port (remembered from the ESTABLISHED event).
  CHECK(s["sport"] == port);
  CHECK(s["dport"] == c["sport"]);
  // Byte counts are tcp_sock bytes_acked/bytes_received, which count the FIN (and the
  // initiator's SYN) as one byte each.
  CHECK(c["tx_bytes"].get<uint64_t>() >= 5);
  CHECK(c["tx_bytes"].get<uint64_t>() <= 7);
  CHECK(c["rx_bytes"].get<uint64_t>() >= 5000);
  CHECK(c["rx_bytes"].get<uint64_t>() <= 5001);
  CHECK(s["tx_bytes"].get<uint64_t>() >= 5000);
  CHECK(s["tx_bytes"].get<uint64_t>() <= 5001);
  CHECK(s["rx_bytes"].get<uint64_t>() >= 5);
  CHECK(s["rx_bytes"].get<uint64_t>() <= 6);
  bool connect_seen = false;
  for (const auto& j : jsonLines(readFile(log))) {
    connect_seen = connect_seen || (j["event"] == "connect" && j["pid"] == cpid &&
                                    j["dport"] == port && j["sport"] == c["sport"]);
  }
  CHECK(connect_seen);
}

TEST_CASE("vigil trace oom sees an OOM kill in a memory-limited cgroup") {
  if (!testing::bpfAllowed("trace_events_test")) {
    return;
  }
  // cgroup v1 memory controller on these machines; memory.max on a pure v2 host.
  std::string v1 = "/sys/fs/cgroup/memory";
  struct stat st;
  bool have_v1 = stat((v1 + "/memory.limit_in_bytes").c_str(), &st) == 0;
  std::string cg = (have_v1 ? v1 : std::string("/sys/fs/cgroup")) + "/vigil-test-trace-oom-" +
                   std::to_string(getpid());
  REQUIRE(mkdir(cg.c_str(), 0755) == 0);
  struct RemoveDir {
    std::string dir;
    ~RemoveDir() { rmdir(dir.c_str()); }
  } remove_dir{cg};
  {
    std::ofstream limit(cg + (have_v1 ? "/memory.limit_in_bytes" : "/memory.max"));
    limit << (32 << 20) << std::flush;
    REQUIRE(limit);
  }
  TempDir dir;
  std::string log = dir.file("trace.log");
  Child trace = startTrace({"oom", "--json"}, log);
  Child victim = Child::fork([cg, have_v1]() {
    {
      std::ofstream procs(cg + (have_v1 ? "/tasks" : "/cgroup.procs"));
      procs << getpid() << std::flush;
      if (!procs) {
        return 100;
      }
    }
    std::vector<char*> blocks;
    for (int i = 0; i < 256; ++i) {  // 256 MiB, well past the 32 MiB limit
      char* b = static_cast<char*>(malloc(1 << 20));
      memset(b, i, 1 << 20);
      blocks.push_back(b);
    }
    return 0;
  });
  auto status = victim.wait(30s);
  REQUIRE(status.has_value());
  CHECK(WIFSIGNALED(*status));
  uint32_t pid = static_cast<uint32_t>(victim.pid());
  auto oom = [&]() -> std::optional<nlohmann::json> {
    for (const auto& j : jsonLines(readFile(log))) {
      if (j["event"] == "oom_kill" && j["pid"] == pid) {
        return j;
      }
    }
    return std::nullopt;
  };
  bool seen = testing::waitFor([&]() { return oom().has_value(); }, 5s);
  stopTrace(trace);
  REQUIRE(seen);
  CHECK((*oom())["total_vm_kb"].get<uint64_t>() > 0);
  CHECK((*oom())["cgroup_id"].get<uint64_t>() != 0);
}

TEST_CASE("vigil trace prints the lost-event count at exit when the ring buffer overflowed") {
  if (!testing::bpfAllowed("trace_events_test")) {
    return;
  }
  TempDir dir;
  std::string name = "vtl" + std::to_string(getpid());
  std::string helper = uniqueHelper(dir, name);
  std::string log = dir.file("trace.log");
  // A 4 KiB ring holds at most three exec records with a 1000-byte argv (1.3 KiB each).
  // Stopping vigil while 20 such execs happen makes the kernel's reserve fail for at least 17.
  Child trace = startTrace({"exec", "--json", "--ring-kb", "4"}, log);
  trace.signal(SIGSTOP);
  for (int i = 0; i < 20; ++i) {
    runAndWait({helper, std::string(1000, 'a')});
  }
  trace.signal(SIGCONT);
  std::this_thread::sleep_for(300ms);
  stopTrace(trace);
  std::string text = readFile(log);
  size_t at = text.find(" exec events lost");
  REQUIRE(at != std::string::npos);
  size_t begin = text.rfind("vigil trace: ", at);
  REQUIRE(begin != std::string::npos);
  uint64_t lost = std::stoull(text.substr(begin + 13, at - begin - 13));
  CHECK(lost >= 17);
  int printed = 0;
  for (const auto& j : jsonLines(text)) {
    printed += j["comm"] == name ? 1 : 0;
  }
  CHECK(printed + lost >= 20);
}

TEST_CASE("vigil trace exit --pid reports only that process; signal sees its SIGSEGV") {
  if (!testing::bpfAllowed("trace_events_test")) {
    return;
  }
  TempDir dir;
  // The target waits for a byte on a pipe, so its pid is known before it exits.
  int go[2];
  REQUIRE(pipe(go) == 0);
  Child target = Child::fork([&]() {
    char c;
    close(go[1]);
    if (read(go[0], &c, 1) != 1) {
      return 1;
    }
    signal(SIGSEGV, SIG_DFL);  // Catch2 handles SIGSEGV in the forked child otherwise
    raise(SIGSEGV);
    return 2;
  });
  close(go[0]);
  std::string pid = std::to_string(target.pid());
  std::string exits = dir.file("exit.log"), signals = dir.file("signal.log");
  Child exit_trace = startTrace({"exit", "--json", "--pid", pid}, exits);
  Child signal_trace = startTrace({"signal", "--json", "--pid", pid}, signals);
  runAndWait({"/bin/true"});  // another process's exit, which the filter must drop
  REQUIRE(write(go[1], "x", 1) == 1);
  close(go[1]);
  REQUIRE(target.wait(10s).has_value());
  bool seen = testing::waitFor(
      [&]() {
        return !jsonLines(readFile(exits)).empty() && !jsonLines(readFile(signals)).empty();
      },
      5s);
  stopTrace(exit_trace);
  stopTrace(signal_trace);
  REQUIRE(seen);
  auto e = jsonLines(readFile(exits));
  REQUIRE(e.size() == 1);
  CHECK(e[0]["event"] == "exit");
  CHECK(e[0]["pid"] == static_cast<uint32_t>(target.pid()));
  CHECK(e[0]["signal"] == SIGSEGV);
  auto s = jsonLines(readFile(signals));
  REQUIRE(s.size() >= 1);
  CHECK(s[0]["event"] == "signal");
  CHECK(s[0]["pid"] == static_cast<uint32_t>(target.pid()));
  CHECK(s[0]["signal"] == SIGSEGV);
  CHECK(s[0]["sender_pid"] == static_cast<uint32_t>(target.pid()));
}

// localhost/vigil-test-busybox, built from busybox-static once (as tests/attribution does).
bool ensureBusyboxImage() {
  if (testing::shell("podman image exists localhost/vigil-test-busybox && echo yes") == "yes\n") {
    return true;
  }
  TempDir dir;
  std::string root = dir.file("rootfs");
  std::string cmd = "set -e; mkdir -p " + root + "/bin; cp /bin/busybox " + root +
                    "/bin/busybox; for a in sh sleep cat true; do ln -s busybox " + root +
                    "/bin/$a; done; tar -C " + root + " -cf " + dir.file("rootfs.tar") +
                    " .; podman import -q " + dir.file("rootfs.tar") +
                    " localhost/vigil-test-busybox >/dev/null && echo ok";
  return testing::shell(cmd) == "ok\n";
}

TEST_CASE("vigil trace exec --container shows only that podman container's execs (attributed)") {
  if (!testing::bpfAllowed("trace_events_test")) {
    return;
  }
  if (testing::shell("command -v podman runc >/dev/null && echo yes") != "yes\n") {
    FAIL("podman and runc are needed (ci/install-deps.sh installs them)");
  }
  REQUIRE(ensureBusyboxImage());
  std::string name = "vigil-test-trace-" + std::to_string(getpid());
  struct Cleanup {
    std::string name;
    ~Cleanup() { testing::shell("podman rm -f -t 0 " + name + " >/dev/null 2>&1"); }
  } cleanup{name};
  std::string podman = "podman --runtime runc --cgroup-manager cgroupfs ";
  std::string out = testing::shell(podman + "run -d --rm --name " + name +
                                   " --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "
                                   "localhost/vigil-test-busybox sleep 1234 2>/dev/null");
  std::string id = out.substr(0, out.find_first_of(" \n"));
  REQUIRE(id.size() == 64);
  TempDir dir;
  std::string log = dir.file("trace.log");
  Child trace = startTrace({"exec", "--json", "--container", id.substr(0, 12)}, log);
  runAndWait({"/bin/true"});  // on the host: filtered out
  testing::shell(podman + "exec " + name + " true >/dev/null 2>&1");
  bool seen = testing::waitFor(
      [&]() {
        for (const auto& j : jsonLines(readFile(log))) {
          if (j["comm"] == "true") {
            return true;
          }
        }
        return false;
      },
      10s);
  stopTrace(trace);
  REQUIRE(seen);
  for (const auto& j : jsonLines(readFile(log))) {
    CHECK(j["container_id"] == id);
    CHECK(j["cgroup_id"].get<uint64_t>() != 0);
  }
}

TEST_CASE("vigil trace: usage errors exit 2, not root exits 3, --help documents the filters") {
  std::string vigil = testing::binaryPath("vigil");
  CHECK(WEXITSTATUS(runAndWait({vigil, "trace"})) == 2);
  CHECK(WEXITSTATUS(runAndWait({vigil, "trace", "bogus"})) == 2);
  CHECK(WEXITSTATUS(runAndWait({vigil, "trace", "exec", "--ring-kb", "3"})) == 2);
  std::string help = testing::shell(vigil + " trace --help");
  CHECK(help.find("Filters applied in the kernel") != std::string::npos);
  CHECK(help.find("examples:") != std::string::npos);
  if (geteuid() == 0) {
    int st = runAndWait({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                         vigil, "trace", "exec"});
    CHECK(WEXITSTATUS(st) == 3);
  }
}

}  // namespace vigil
