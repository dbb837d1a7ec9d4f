// Minimal leveled logging to stderr with a timestamp and the program name. The packaged Abseil
// (20220623) has no absl/log, and KJ_LOG prints source locations that operators do not need.
#pragma once

#include "absl/strings/string_view.h"

#include "absl/strings/str_format.h"

namespace vigil {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void setLogProgram(absl::string_view program);
void setLogLevel(LogLevel level);
bool logEnabled(LogLevel level);
void logLine(LogLevel level, absl::string_view message);

template <typename... Args>
void logf(LogLevel level, const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (logEnabled(level)) {
    logLine(level, absl::StrFormat(format, args...));
  }
}

#define VIGIL_LOG_DEBUG(...) ::vigil::logf(::vigil::LogLevel::kDebug, __VA_ARGS__)
#define VIGIL_LOG_INFO(...) ::vigil::logf(::vigil::LogLevel::kInfo, __VA_ARGS__)
#define VIGIL_LOG_WARN(...) ::vigil::logf(::vigil::LogLevel::kWarning, __VA_ARGS__)
#define VIGIL_LOG_ERROR(...) ::vigil::logf(::vigil::LogLevel::kError, __VA_ARGS__)

}  // namespace vigil
