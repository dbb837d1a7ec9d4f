// Helpers for vigil's tests: privilege gating for BPF tests, child processes (vigil binaries and
// workloads), blocking HTTP GETs against our own servers, and small /proc readers.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "userspace/common/url.h"

namespace vigil::testing {

// True when the test may use BPF (running as root). Elsewhere the caller should return early:
// outside CI a WARN explains the skip; under CI (CI set) the test FAILs, since CI runs as root.
bool bpfAllowed(const char* test_name);

// Path of a built binary (build/bin/NAME).
std::string binaryPath(const std::string& name);

// A fresh temporary directory, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Points vigil's CO-RE BTF cache (kernel-compat/core_btf.h, VIGIL_BTF_CACHE_DIR) at a directory
// of this test run instead of /var/cache/vigil/btf, removed by the destructor. Meant as a global of
// a test binary that runs `vigil`: its first BPF command builds the cache there, later ones load
// against it. Unlike TempDir it makes no assertion (it is constructed before any test runs).
class BtfCacheDir {
 public:
  BtfCacheDir();
  ~BtfCacheDir();

 private:
  std::string path_;
};

// A child process; killed (SIGKILL) on destruction unless it already exited.
class Child {
 public:
  // Runs argv with stdout+stderr appended to log_path ("" inherits ours).
  static Child spawn(const std::vector<std::string>& argv, const std::string& log_path = "");
  // Forks and runs fn in the child; its return value is the exit code.
  static Child fork(const std::function<int()>& fn);

  Child() = default;
  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  ~Child();

  pid_t pid() const { return pid_; }
  bool alive();
  void signal(int sig);
  // Waits up to timeout for exit; returns the wait status or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);

 private:
  explicit Child(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
  bool reaped_ = false;
};

// Polls until pred() is true or timeout passes. Returns pred()'s last value.
bool waitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
             std::chrono::milliseconds step = std::chrono::milliseconds(100));

// Reads key=value lines of a ready file written by a vigil binary, waiting until `key` shows up.
std::optional<int> readReadyPort(const std::string& path, const std::string& key,
                                 std::chrono::milliseconds timeout);

struct HttpResult {
  int status = 0;  // 0: connection failed
  std::string body;
};
HttpResult httpGet(uint16_t port, const std::string& path, const std::string& auth_header = "");
HttpResult httpRequest(uint16_t port, const std::string& method, const std::string& path,
                       const std::string& body, const std::string& auth_header = "");

// Finds the value of the first Prometheus sample whose name and labels include all of `labels`.
std::optional<double> promValue(const std::string& text, const std::string& name,
                                const std::map<std::string, std::string>& labels);

// utime+stime of a process in seconds, from /proc/<pid>/stat.
double procCpuSeconds(pid_t pid);

// Burns CPU in this thread until `seconds` of thread CPU time are used.
void burnCpu(double seconds);

// IDs of the BPF programs listed in a vigil /metrics page (vigil_bpf_program_runs_total's
// id label), and whether a program ID still exists in the kernel. Lets a test check cleanup
// without racing other BPF users.
std::vector<int> bpfProgramIdsInMetrics(const std::string& metrics_text);
bool bpfProgramExists(int id);

// Output of a shell command.
std::string shell(const std::string& command);

// Contents of a file ("" if unreadable).
std::string readFile(const std::string& path);

// Replaces `path` atomically (write to path.tmp, rename), so a watcher never sees half a file.
void writeFile(const std::string& path, const std::string& text);

// A loopback TCP port that was free a moment ago, for servers that cannot listen on :0 and
// report their port (Prometheus, Alertmanager). Callers retry if another process takes it.
int freePort();

using ::vigil::urlEncode;  // userspace/common/url.h, for Prometheus query strings

// Wall-clock milliseconds since the epoch (Prometheus timestamps).
int64_t nowMs();

}  // namespace vigil::testing
