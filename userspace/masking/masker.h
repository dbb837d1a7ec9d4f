// Secret masking for command lines. Everything vigil reports about a process's arguments (exec
// events' argv, ProcessSample.cmdline) passes through a Masker first, so passwords, tokens and
// keys given on a command line never leave the agent. The built-in rules and how to add more are
// described in docs/masking.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "capnp/snapshot.h"

namespace vigil {

class Masker {
 public:
  // What replaces a secret.
  static constexpr const char* kMask = "***";
  static constexpr size_t kMaskLen = 3;

  // The built-in rules plus `extra_patterns` (ECMAScript regular expressions; with a capture
  // group only group 1 is masked, otherwise the whole match). A pattern that does not compile is
  // skipped; its error (naming the pattern) is appended to `errors`.
  static std::unique_ptr<Masker> create(const std::vector<std::string>& extra_patterns,
                                        std::vector<std::string>* errors);

  // Masks an argument vector in place and returns it.
  std::vector<std::string> maskArgs(std::vector<std::string> args) const;
  // Masks `args` and joins them with single spaces.
  std::string maskArgvJoined(std::vector<std::string> args) const;
  // Masks a command line: NUL-separated like /proc/<pid>/cmdline (a trailing NUL is fine), or,
  // when it has no NUL, a space-separated string. Returns the args joined by spaces.
  std::string maskCmdline(absl::string_view cmdline) const;
  // Masks secrets inside one free-form string (key=value pairs, URLs, bearer tokens, token
  // shapes, extra patterns). Rules that need the next argument do not apply here.
  std::string maskText(std::string text) const;

  // Values masked so far (for vigil_masked_values_total).
  uint64_t maskedCount() const { return masked_.load(std::memory_order_relaxed); }

  // True when a flag or variable name (leading dashes allowed) names a secret.
  static bool isSensitiveName(absl::string_view name);

 private:
  struct Rule {
    std::string source;
    std::regex re;
    int group;           // the sub-match to mask (0: the whole match)
    std::string needle;  // a case-insensitive substring the text must contain, "" = always run
  };

  Masker() = default;
  bool applyRule(const Rule& rule, std::string& text) const;
  bool maskKeyValues(std::string& text, bool whole_arg) const;

  std::vector<Rule> rules_;
  mutable std::atomic<uint64_t> masked_{0};
};

// Masks every ProcessStats.cmdline of `snap` in place (collectors may fill cmdline raw; this
// runs before the snapshot leaves the agent).
void maskSnapshotCmdlines(const Masker& masker, Snapshot& snap);

}  // namespace vigil
