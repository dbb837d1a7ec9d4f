// Per-process /proc readers for display: stat and a cleaned, bounded cmdline. A process that
// exits while being read yields NotFound, never partial garbage.
#pragma once

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "userspace/host/proc_parse.h"

namespace vigil::host {

// /proc/<pid>/cmdline with NULs as spaces, at most `max_bytes` (see cleanCmdline()). Empty for
// kernel threads. NOTE: not masked; callers that ship or print it apply the secret masking.
absl::StatusOr<std::string> readCmdline(pid_t pid, size_t max_bytes = 4096,
                                        const std::string& proc_root = "/proc");

absl::StatusOr<PidStat> readPidStat(pid_t pid, const std::string& proc_root = "/proc");

}  // namespace vigil::host
