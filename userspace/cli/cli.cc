#include "userspace/cli/cli.h"

#include <unistd.h>

#include <bpf/libbpf.h>
#include <time.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "userspace/common/version.h"

namespace vigil::cli {
namespace {

const FlagSpec kAggregatorFlag{"aggregator", true, "HOST:PORT",
                               "aggregator HTTP address (default 127.0.0.1:9471)"};
const FlagSpec kJsonFlag{"json", false, "", "print the aggregator's JSON unchanged"};
const FlagSpec kVerboseFlag{"verbose", false, "",
                            "say how the BPF objects were loaded (BTF cache use, fallbacks)"};
const FlagSpec kTokenFlag{"token", true, "TOKEN",
                          "bearer token for the aggregator's API (default: $VIGIL_TOKEN)"};

int version(const Command& self, const Args& args) {
  printf("vigil %s\n", kVigilVersion);
  return kExitOk;
}

std::vector<Command> buildCommands() {
  std::vector<Command> c;
  c.push_back(Command{
      "top",
      "live per-process (or per-container) view, refreshed every second",
      "vigil top [flags]",
      "Loads vigil's BPF collectors (no agent needed) and shows, per process or container:\n"
      "CPU %, run-queue latency p50/p99, syscalls/s and failed/s, TCP tx/rx bytes/s,\n"
      "retransmits/s and block I/O bytes/s. A column shows '-' when its collector is not in\n"
      "this build or could not start on this kernel. Rates are deltas between collections.\n"
      "Keys: c CPU, s syscalls, e failed syscalls, n network, b block I/O, r run-queue p99,\n"
      "p pid; q (or Ctrl-C) quits and restores the terminal. Needs root.",
      {{"by", true, "process|container", "one row per process (default) or per container"},
       {"sort", true, "KEY",
        "initial sort: cpu (default), syscalls, errors, net, block, runq, pid"},
       {"pid", true, "PID", "only this process"},
       {"container", true, "ID", "only processes of this container (id prefix)"},
       {"comm", true, "NAME", "only processes whose comm contains NAME"},
       {"interval", true, "DURATION", "refresh interval (default 1s)"},
       {"limit", true, "N", "rows to print with --once (default: all; live view: the screen)"},
       {"syscall-mode", true, "MODE",
        "continuous (default: every syscall, costs the traced tasks), sampled or off"},
       {"once", false, "", "print one table (after one interval) and exit"},
       {"json", false, "", "with --once: print the rows as JSON"},
       kVerboseFlag},
      "  sudo vigil top\n"
      "  sudo vigil top --by container --sort net\n"
      "  sudo vigil top --once --json --interval 2s | jq '.rows[0]'\n"
      "  sudo vigil top --comm nginx\n",
      runTop});
  c.push_back(Command{
      "snapshot",
      "collect for a while and print one aggregated frame (JSON with --json)",
      "vigil snapshot [flags]",
      "Loads every registered collector itself (no agent needed), collects for --duration with\n"
      "syscalls traced continuously, and prints one frame: host, processes, containers,\n"
      "histograms, events and vigil's own counters. JSON field names match the Prometheus\n"
      "metric names (docs/metrics.md, \"Snapshot JSON\"). Ctrl-C ends the window early and still\n"
      "prints. Needs root.",
      {{"duration", true, "DURATION", "collection window (default 2s)"},
       {"json", false, "", "print JSON (default: a short human summary)"},
       {"pretty", false, "", "indent the JSON"},
       {"syscall-mode", true, "MODE", "continuous (default), sampled or off"},
       {"pid", true, "PID", "only account this process"},
       {"comm", true, "NAME", "only report these comms (comma-separated)"},
       {"disable", true, "NAMES", "collectors not to load (comma-separated)"},
       kVerboseFlag},
      "  sudo vigil snapshot --duration 2s --json | jq '.processes | length'\n"
      "  sudo vigil snapshot --duration 10s --json --pretty > frame.json\n"
      "  sudo vigil snapshot --disable host\n",
      runSnapshot});
  c.push_back(Command{
      "trace",
      "stream exec/exit/tcp/oom/signal events as they happen",
      "vigil trace exec|exit|tcp|oom|signal [flags]",
      "Streams kernel events like execsnoop (exec), exitsnoop (exit), tcplife/tcpconnect (tcp:\n"
      "connect, accept and close with bytes and duration), oomkill (oom) and killsnoop (signal:\n"
      "fatal signals only: SIGKILL, SIGSEGV, SIGABRT, ...). Loads only the BPF collector the\n"
      "kind needs (process, or net for tcp), needs no agent, and prints a header as soon as the\n"
      "probes are attached. Events carry container and pod attribution (cgroup v2), and exec\n"
      "argv is masked like the agent's (docs/masking.md).\n"
      "Filters applied in the kernel (nothing else is written to the ring buffer): --pid, and\n"
      "for exec/exit/oom/signal also --comm and the event kind (only that kind's program is\n"
      "loaded). Applied in userspace: --comm for tcp, --container. Stops after --duration, or\n"
      "on Ctrl-C / SIGTERM; if any events were lost (ring buffer full) their count is printed\n"
      "to stderr at exit. Needs root.",
      {{"pid", true, "PID", "only this process (in-kernel filter)"},
       {"comm", true, "NAME", "only processes whose comm is exactly NAME (in-kernel but for tcp)"},
       {"container", true, "ID", "only events of this container, by id prefix (userspace)"},
       {"duration", true, "DURATION", "stop after this long (default: until Ctrl-C)"},
       {"json", false, "", "one JSON object per line (header goes to stderr)"},
       {"ring-kb", true, "KB", "ring buffer size in KiB, a power of two >= 4 (default 1024)"},
       kVerboseFlag},
      "  sudo vigil trace exec\n"
      "  sudo vigil trace exec --comm curl --json | jq .argv\n"
      "  sudo vigil trace tcp --pid 1234\n"
      "  sudo vigil trace oom --container 3f2a\n"
      "  sudo vigil trace exit --duration 30s --json > exits.jsonl\n",
      runTrace});
  c.push_back(Command{
      "hist",
      "log2 latency histograms: runq, syscall, block, tcp-connect, tcp-rtt",
      "vigil hist runq|syscall|block|tcp-connect|tcp-rtt [flags]",
      "Prints log2 histograms like runqlat and biolatency: run-queue latency (runq), syscall\n"
      "latency of every syscall (syscall; not sampled), block I/O latency (block), TCP connect\n"
      "latency (tcp-connect) and smoothed RTT (tcp-rtt). Loads only the collector it needs and\n"
      "needs no agent. For the whole host, or per --pid (in-kernel filter: only that process\n"
      "is recorded), --container (runq only: the container's cgroup histograms) or --device\n"
      "(block: name like vda, or MAJ:MIN). Collects for --duration (default 5s, 0 = until\n"
      "Ctrl-C); with --interval prints every interval (what happened in that interval) until\n"
      "--duration or Ctrl-C. Needs root.",
      {{"pid", true, "PID", "only this process (in-kernel filter)"},
       {"container", true, "ID", "runq only: this container, by id prefix"},
       {"device", true, "NAME", "block only: this device (vda, nvme0n1 or 8:0)"},
       {"duration", true, "DURATION", "how long to collect (default 5s; 0 = until Ctrl-C)"},
       {"interval", true, "DURATION",
        "print every interval (then --duration defaults to "
        "until Ctrl-C)"},
       {"json", false, "", "one JSON object per histogram printed"},
       kVerboseFlag},
      "  sudo vigil hist runq\n"
      "  sudo vigil hist runq --pid 1234 --duration 10s\n"
      "  sudo vigil hist block --device vda --interval 1s\n"
      "  sudo vigil hist syscall --pid 1234 --json | jq .buckets\n"
      "  sudo vigil hist tcp-connect --duration 30s\n",
      runHist});
  c.push_back(Command{
      "agents",
      "list the agents an aggregator knows",
      "vigil agents [flags]",
      "Asks the aggregator (GET /api/v1/agents) which agents have registered, whether they are\n"
      "online, their version, kernel and when they last sent a frame.",
      {kAggregatorFlag, kJsonFlag, kTokenFlag},
      "  vigil agents\n"
      "  vigil agents --aggregator 10.0.0.5:9471\n"
      "  vigil agents --json | jq '.agents[] | select(.online == false) | .agent_id'\n",
      runAgents});
  c.push_back(Command{
      "alerts",
      "list alerts from an aggregator",
      "vigil alerts [flags]",
      "Asks the aggregator (GET /api/v1/alerts) for its alerts: name, state, severity, since\n"
      "when, the value that triggered it and its labels.",
      {kAggregatorFlag,
       kJsonFlag,
       kTokenFlag,
       {"state", true, "STATE", "only alerts in this state (e.g. firing)"}},
      "  vigil alerts\n"
      "  vigil alerts --state firing\n"
      "  vigil alerts --json\n",
      runAlerts});
  c.push_back(Command{
      "query",
      "query a metric's recent history from an aggregator",
      "vigil query 'METRIC{label=\"v\",l2=~\"re\"}' [flags]",
      "Asks the aggregator (GET /api/v1/query_range) for the series matching a selector over\n"
      "the last --since, and prints one row per series: last, min, max and average value.\n"
      "The default --step keeps about 120 points per series (never below 1s).",
      {kAggregatorFlag,
       kJsonFlag,
       kTokenFlag,
       {"since", true, "DURATION", "how far back (default 15m)"},
       {"step", true, "DURATION", "resolution (default: --since / 120, at least 1s)"}},
      "  vigil query 'vigil_process_cpu_seconds_total{comm=\"nginx\"}' --since 15m\n"
      "  vigil query 'vigil_host_load1' --since 1h --step 1m\n"
      "  vigil query 'vigil_agent_up' --json | jq .\n",
      runQuery});
  c.push_back(Command{"version",
                      "print the version",
                      "vigil version",
                      "Prints vigil's version.",
                      {},
                      "  vigil version\n",
                      version});
  return c;
}

}  // namespace

const std::vector<Command>& commands() {
  static const std::vector<Command> c = buildCommands();
  return c;
}

std::string helpPage(const Command& c) {
  return absl::StrCat("usage: ", c.usage, "\n\n", c.description, "\n\nflags:\n",
                      formatFlags(c.flags), "\nexamples:\n", c.examples,
                      "\nexit codes: 0 ok, 1 runtime error, 2 usage, 3 not root/not supported, "
                      "4 aggregator unreachable (docs/cli.md)\n");
}

int usageError(const Command& c, const std::string& message) {
  fprintf(stderr, "vigil %s: %s\nRun 'vigil %s --help' for its flags and examples.\n",
          c.name.c_str(), message.c_str(), c.name.c_str());
  return kExitUsage;
}

int fail(const Command& c, int code, const std::string& message) {
  fprintf(stderr, "vigil %s: %s\n", c.name.c_str(), message.c_str());
  return code;
}

int collectorFailure(const Command& c, const absl::Status& status) {
  if (absl::IsPermissionDenied(status) || geteuid() != 0) {
    // The collector's message usually says how to fix it already; add the advice otherwise.
    bool advised = absl::StrContains(status.message(), "root");
    return fail(
        c, kExitUnsupported,
        absl::StrCat(status.message(),
                     advised ? ""
                             : absl::StrCat("\nvigil ", c.name,
                                            " loads BPF programs and needs root (or "
                                            "CAP_BPF with CAP_PERFMON): run it with sudo.")));
  }
  return fail(c, kExitUnsupported,
              absl::StrCat(status.message(),
                           "\nThis kernel cannot run vigil's BPF collectors (it needs BTF and BPF "
                           "tracepoint support, Linux 5.8 or later)."));
}

namespace {

std::string mainHelp() {
  std::string out =
      "vigil: performance investigations on one host, and queries to a vigil aggregator.\n\n"
      "usage: vigil <command> [flags]\n\ncommands:\n";
  for (const Command& c : commands()) {
    absl::StrAppend(&out, absl::StrFormat("  %-10s %s\n", c.name, c.summary));
  }
  absl::StrAppend(&out,
                  "\nRun 'vigil <command> --help' for a command's flags and examples.\n"
                  "Exit codes: 0 ok, 1 runtime error, 2 usage, 3 not root/not supported, "
                  "4 aggregator unreachable.\n");
  return out;
}

}  // namespace

namespace {

double monotonicMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

const double g_start_ms = monotonicMs();

// VIGIL_LIBBPF_DEBUG=1: libbpf's debug log on stderr, each line stamped with the milliseconds
// since start, to see where start-up time goes (docs/cli.md, "Start-up cost").
int libbpfDebugPrint(enum libbpf_print_level, const char* format, va_list args) {
  fprintf(stderr, "[%8.3f ms] ", monotonicMs() - g_start_ms);
  return vfprintf(stderr, format, args);
}

}  // namespace

int runCli(int argc, char** argv) {
  if (const char* d = getenv("VIGIL_LIBBPF_DEBUG"); d != nullptr && strcmp(d, "1") == 0) {
    libbpf_set_print(libbpfDebugPrint);
  }
  if (argc < 2) {
    fputs(mainHelp().c_str(), stderr);
    return kExitUsage;
  }
  std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    if (argc >= 3) {
      for (const Command& c : commands()) {
        if (c.name == argv[2]) {
          fputs(helpPage(c).c_str(), stdout);
          return kExitOk;
        }
      }
    }
    fputs(mainHelp().c_str(), stdout);
    return kExitOk;
  }
  if (name == "--version") {
    name = "version";
  }
  for (const Command& c : commands()) {
    if (c.name != name) {
      continue;
    }
    std::vector<std::string> rest(argv + 2, argv + argc);
    auto args = Args::parse(rest, c.flags);
    if (!args.ok()) {
      return usageError(c, std::string(args.status().message()));
    }
    if (args->has("help")) {
      fputs(helpPage(c).c_str(), stdout);
      return kExitOk;
    }
    return c.run(c, *args);
  }
  fprintf(stderr, "vigil: unknown command '%s'\n\n%s", name.c_str(), mainHelp().c_str());
  return kExitUsage;
}

}  // namespace vigil::cli
