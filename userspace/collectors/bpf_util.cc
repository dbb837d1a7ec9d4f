#include "absl/strings/string_view.h"
#include "userspace/collectors/bpf_util.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <signal.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "userspace/collectors/ring_reader.h"
#include "userspace/common/log.h"

namespace vigil {
namespace {

bool g_verbose = false;
std::mutex g_last_mu;
std::string g_last_warning;

int libbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  char buf[1024];
  int n = vsnprintf(buf, sizeof(buf), format, args);
  std::string line(buf, n > 0 ? std::min<size_t>(n, sizeof(buf) - 1) : 0);
  while (!line.empty() && line.back() == '\n') {
    line.pop_back();
  }
  if (line.rfind("libbpf: ", 0) == 0) {
    line = line.substr(8);
  }
  if (level == LIBBPF_WARN) {
    std::lock_guard<std::mutex> lock(g_last_mu);
    g_last_warning = line;
  }
  LogLevel as = g_verbose ? LogLevel::kInfo : LogLevel::kDebug;
  if ((g_verbose || level == LIBBPF_WARN) && logEnabled(as)) {
    logLine(as, absl::StrCat("libbpf: ", line));
  }
  return 0;
}

}  // namespace

void installLibbpfLogger(bool verbose) {
  g_verbose = verbose;
  libbpf_set_print(libbpfPrint);
}

std::string lastLibbpfWarning() {
  std::lock_guard<std::mutex> lock(g_last_mu);
  return g_last_warning;
}

absl::Status bpfError(absl::string_view what, int err) {
  if (err > 0) {
    err = -err;
  }
  std::string detail = lastLibbpfWarning();
  std::string suffix = detail.empty() ? "" : absl::StrCat(" (libbpf: ", detail, ")");
  switch (-err) {
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(
          absl::StrCat(what,
                       ": permission denied loading BPF; run as root (sudo) or grant CAP_BPF, "
                       "CAP_PERFMON and CAP_SYS_RESOURCE"));
    case ENOENT:
    case ESRCH:
      return absl::NotFoundError(
          absl::StrCat(what, ": the kernel lacks a tracepoint or type this program needs", suffix));
    case EINVAL:
      return absl::FailedPreconditionError(absl::StrCat(
          what, ": the kernel rejected the program (verifier or unsupported feature)", suffix));
    case ENOSYS:
    case EOPNOTSUPP:
      return absl::UnimplementedError(
          absl::StrCat(what, ": this kernel does not support BPF (CONFIG_BPF_SYSCALL)", suffix));
    default:
      return absl::InternalError(absl::StrCat(what, ": BPF load failed: ", strerror(-err), suffix));
  }
}

int possibleCpus() {
  static int n = libbpf_num_possible_cpus();
  return n > 0 ? n : 1;
}

void appendProgramStats(const bpf_object* obj, std::vector<MetricSample>& out) {
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    int fd = bpf_program__fd(prog);
    if (fd < 0) {
      continue;  // not loaded (autoload off)
    }
    bpf_prog_info info = {};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
      continue;
    }
    Labels labels = {{"program", bpf_program__name(prog)}, {"id", absl::StrCat(info.id)}};
    out.push_back(
        MetricSample{"vigil_bpf_program_run_seconds_total", labels, info.run_time_ns / 1e9, true});
    out.push_back(MetricSample{"vigil_bpf_program_runs_total", labels,
                               static_cast<double>(info.run_cnt), true});
  }
}

int pollRingBuffer(RingReader* ring, int timeout_ms) {
  int n = ring->poll(timeout_ms);
  return n < 0 ? 0 : n;
}

namespace {

kj::Promise<void> drainOnReadable(kj::UnixEventPort::FdObserver& observer, RingReader* ring) {
  return observer.whenBecomesReadable().then([&observer, ring]() {
    pollRingBuffer(ring, 0);
    return drainOnReadable(observer, ring);
  });
}

kj::Promise<void> drainOnTimer(kj::Timer& timer, RingReader* ring) {
  return timer.afterDelay(100 * kj::MILLISECONDS).then([&timer, ring]() {
    pollRingBuffer(ring, 0);
    return drainOnTimer(timer, ring);
  });
}

}  // namespace

kj::Promise<void> drainRingBuffer(CollectorContext& context, RingReader* ring) {
  auto observer = kj::heap<kj::UnixEventPort::FdObserver>(
      context.event_port, ring->fd(), kj::UnixEventPort::FdObserver::OBSERVE_READ);
  auto& ref = *observer;
  return drainOnReadable(ref, ring)
      .exclusiveJoin(drainOnTimer(context.timer, ring))
      .attach(kj::mv(observer));
}

bool processGone(uint32_t tgid) { return kill(static_cast<pid_t>(tgid), 0) != 0 && errno == ESRCH; }

uint64_t sumPerCpuCounter(int map_fd, uint32_t idx) {
  std::vector<uint64_t> values(possibleCpus());
  if (bpf_map_lookup_elem(map_fd, &idx, values.data()) != 0) {
    return 0;
  }
  uint64_t sum = 0;
  for (uint64_t v : values) {
    sum += v;
  }
  return sum;
}

void appendKernelCounters(int map_fd, const std::vector<KernelCounter>& counters,
                          std::vector<MetricSample>& out) {
  for (const KernelCounter& c : counters) {
    out.push_back(MetricSample{c.metric, c.labels,
                               static_cast<double>(sumPerCpuCounter(map_fd, c.slot)), true});
  }
}

}  // namespace vigil
