// The command name to report for a process. The BPF collectors record comm when they first see
// a thread group, which for a forked child is often before its exec (the parent's name). A live
// process's current name is read from /proc/<pid>/comm instead; the kernel's copy is the
// fallback for processes that have exited.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>

namespace vigil {

inline std::string reportedComm(uint32_t tgid, const char* kernel_comm, size_t kernel_len) {
  std::ifstream in("/proc/" + std::to_string(tgid) + "/comm");
  std::string line;
  if (in && std::getline(in, line) && !line.empty()) {
    return line;
  }
  return std::string(kernel_comm, strnlen(kernel_comm, kernel_len));
}

}  // namespace vigil
