#include "userspace/common/log.h"

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>

namespace vigil {
namespace {

std::string& program() {
  static std::string name = "vigil";
  return name;
}
std::atomic<int> min_level{static_cast<int>(LogLevel::kInfo)};

const char* levelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

}  // namespace

void setLogProgram(absl::string_view name) { program() = std::string(name); }
void setLogLevel(LogLevel level) { min_level = static_cast<int>(level); }
bool logEnabled(LogLevel level) { return static_cast<int>(level) >= min_level.load(); }

void logLine(LogLevel level, absl::string_view message) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char stamp[32];
  strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
  std::string line = absl::StrFormat("%s.%03dZ %s %s: %s\n", stamp, ts.tv_nsec / 1000000, program(),
                                     levelName(level), message);
  // One write per line keeps lines whole when several threads log.
  ssize_t ignored = write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace vigil
