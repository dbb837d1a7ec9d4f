// vigil: the command-line tool for performance investigations on one host.
#include <cstdio>
#include <cstring>
#include <string>

#include "userspace/common/version.h"

namespace {

constexpr const char* kUsage =
    "usage: vigil <command> [flags]\n"
    "\n"
    "commands:\n"
    "  version     print the version\n"
    "  top         live per-process view            (not yet available)\n"
    "  trace       stream exec/exit/tcp/oom events   (not yet available)\n"
    "  hist        log2 latency histograms           (not yet available)\n"
    "  snapshot    one aggregated frame as JSON      (not yet available)\n"
    "\n"
    "Run 'vigil <command> --help' for a command's flags.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  if (cmd == "version" || cmd == "--version") {
    printf("vigil %s\n", vigil::kVigilVersion);
    return 0;
  }
  if (cmd == "top" || cmd == "trace" || cmd == "hist" || cmd == "snapshot") {
    fprintf(stderr, "vigil %s: not available in this build yet\n", cmd.c_str());
    return 3;
  }
  fprintf(stderr, "vigil: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return 2;
}
