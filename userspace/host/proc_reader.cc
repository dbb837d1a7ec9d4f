#include "userspace/host/proc_reader.h"

#include "absl/strings/str_cat.h"
#include "userspace/host/host_metrics.h"

namespace vigil::host {

absl::StatusOr<std::string> readCmdline(pid_t pid, size_t max_bytes, const std::string& proc_root) {
  // Read a little past the bound so cleanCmdline() can cut on a character boundary.
  auto raw = readFileBounded(absl::StrCat(proc_root, "/", pid, "/cmdline"), max_bytes + 4);
  if (!raw.ok()) {
    return raw.status();
  }
  return cleanCmdline(*raw, max_bytes);
}

absl::StatusOr<PidStat> readPidStat(pid_t pid, const std::string& proc_root) {
  auto raw = readFileBounded(absl::StrCat(proc_root, "/", pid, "/stat"), 4096);
  if (!raw.ok()) {
    return raw.status();
  }
  if (raw->empty()) {
    // Seen when the process is reaped between open() and read().
    return absl::NotFoundError(absl::StrCat("pid ", pid, " exited while being read"));
  }
  return parsePidStat(*raw);
}

}  // namespace vigil::host
