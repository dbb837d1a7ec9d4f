// vigil's subcommand table and dispatch. Every subcommand declares its flags, a description
// and examples (its --help page), and returns one of the documented exit codes (docs/cli.md).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "userspace/cli/args.h"

namespace vigil::cli {

enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,        // runtime error (collection failed, aggregator answered with an error)
  kExitUsage = 2,        // bad flags or arguments
  kExitUnsupported = 3,  // not root, BPF unsupported, or not available in this build
  kExitUnreachable = 4,  // the aggregator could not be reached
};

struct Command {
  std::string name;
  std::string summary;  // one line, for `vigil --help`
  std::string usage;    // e.g. "vigil top [flags]"
  std::string description;
  std::vector<FlagSpec> flags;
  std::string examples;
  int (*run)(const Command& self, const Args& args) = nullptr;
};

const std::vector<Command>& commands();

// Entry point: dispatches argv[1] to its command.
int runCli(int argc, char** argv);

// The --help page of a command.
std::string helpPage(const Command& c);

// Prints "vigil CMD: message" and a pointer to --help; returns kExitUsage.
int usageError(const Command& c, const std::string& message);

// Prints "vigil CMD: message" to stderr and returns `code`.
int fail(const Command& c, int code, const std::string& message);

// Maps a collector-creation failure to an exit code and an actionable message: no privilege →
// kExitUnsupported with "run it as root"; kernel lacks BPF → kExitUnsupported.
int collectorFailure(const Command& c, const absl::Status& status);

// Implemented in their own files.
int runSnapshot(const Command& self, const Args& args);
int runTop(const Command& self, const Args& args);
int runAgents(const Command& self, const Args& args);
int runAlerts(const Command& self, const Args& args);
int runQuery(const Command& self, const Args& args);
int runTrace(const Command& self, const Args& args);
int runHist(const Command& self, const Args& args);

}  // namespace vigil::cli
