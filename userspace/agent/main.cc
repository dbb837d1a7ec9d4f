// vigil-agent: parses flags, sets up the event loop and signals, and runs an Agent.
#include <signal.h>

#include <kj/async-unix.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "userspace/agent/agent.h"
#include "userspace/collectors/bpf_util.h"
#include "userspace/common/log.h"
#include "userspace/common/shrink.h"

ABSL_FLAG(std::string, aggregator, "127.0.0.1:9470",
          "Aggregator RPC address host:port (comma-separated list for sharding).");
ABSL_FLAG(std::string, http_addr, "127.0.0.1", "Address of the local /metrics and /healthz.");
ABSL_FLAG(int32_t, http_port, 9472, "Port of the local HTTP endpoint (0 picks a free port).");
ABSL_FLAG(absl::Duration, interval, absl::Seconds(10), "Collection interval (at least 1s).");
ABSL_FLAG(std::string, node_name, "", "Node name (default: host name).");
ABSL_FLAG(std::string, agent_id, "", "Agent identity (default: node name).");
ABSL_FLAG(std::string, labels, "", "Extra labels for this agent, k=v,k=v.");
ABSL_FLAG(std::string, token, "", "Bearer token presented to the aggregator.");
ABSL_FLAG(std::string, ready_file, "", "Write the bound HTTP port here once listening.");
ABSL_FLAG(int64_t, max_queue_bytes, 64 << 20, "Bound of the unacknowledged frame queue.");
ABSL_FLAG(absl::Duration, reconnect_max, absl::Seconds(30),
          "Longest wait between reconnect attempts (backoff doubles from 0.5s, with jitter).");
ABSL_FLAG(absl::Duration, reconnect_min, absl::Milliseconds(500),
          "First wait before reconnecting (doubles up to --reconnect_max, with jitter).");
ABSL_FLAG(absl::Duration, probe_interval, absl::Seconds(30),
          "While on a fallback aggregator, how often to probe the preferred one(s).");
ABSL_FLAG(bool, verbose, false, "Log debug detail, including libbpf's messages.");
ABSL_FLAG(std::string, config, "",
          "YAML file with run-time settings (interval, disabled_collectors, syscall_mode, "
          "syscall_duty_cycle, net_message_mode, mask_patterns, comm_filter, dynamic_sampling); "
          "its values win over --interval. See docs/configuration.md.");
ABSL_FLAG(
    std::string, spool_dir, "/var/lib/vigil-agent",
    "Directory of the durable spool of unacknowledged frames (spool.db); empty: memory only.");
ABSL_FLAG(int64_t, spool_max_bytes, 256LL << 20, "Spool bound in payload bytes (oldest dropped).");
ABSL_FLAG(absl::Duration, spool_max_age, absl::Hours(2), "Spool bound by frame age.");
ABSL_FLAG(double, replay_rate, 50, "Most frames per second sent to the aggregator (token bucket).");
ABSL_FLAG(double, replay_burst, 20, "Token bucket burst, in frames.");
ABSL_FLAG(int32_t, max_in_flight, 8, "Pushes awaiting acknowledgement at once (1..64).");
ABSL_FLAG(bool, wire_delta, true,
          "Send frames as deltas against the previous frame of the session (keyframes only when "
          "false, or when the aggregator does not accept deltas). See docs/transport.md.");
ABSL_FLAG(int32_t, wire_keyframe_every, 30,
          "With --wire_delta, a self-contained keyframe every N frames (2..10000).");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA certificate that signs the aggregator's certificate; "
          "enables TLS.");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate (CN = agent id) for mutual TLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name expected in the aggregator's certificate (default: the host in --aggregator).");
ABSL_FLAG(bool, insecure_plaintext, false,
          "Allow unencrypted RPC to non-loopback aggregators (loopback is always allowed).");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "vigil-agent: eBPF node agent. Collects per-process kernel metrics and ships them to "
      "vigil-aggregator.\nExample: sudo vigil-agent --aggregator=127.0.0.1:9470 --interval=10s");
  vigil::keepLargeBuffersOutOfHeap();
  absl::ParseCommandLine(argc, argv);
  vigil::setLogProgram("vigil-agent");
  bool verbose = absl::GetFlag(FLAGS_verbose);
  if (verbose) {
    vigil::setLogLevel(vigil::LogLevel::kDebug);
  }
  vigil::installLibbpfLogger(verbose);

  vigil::AgentOptions options;
  options.aggregators = absl::StrSplit(absl::GetFlag(FLAGS_aggregator), ',', absl::SkipEmpty());
  options.http_addr = absl::GetFlag(FLAGS_http_addr);
  int32_t port = absl::GetFlag(FLAGS_http_port);
  if (port < 0 || port > 65535) {
    fprintf(stderr, "vigil-agent: --http_port must be 0..65535, got %d\n", port);
    return 2;
  }
  options.http_port = static_cast<uint16_t>(port);
  options.interval = absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_interval)) * kj::MILLISECONDS;
  options.settings.interval_ms =
      static_cast<uint32_t>(absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_interval)));
  if (!absl::GetFlag(FLAGS_config).empty()) {
    auto loaded = vigil::loadSettingsFile(absl::GetFlag(FLAGS_config), options.settings);
    if (!loaded.ok()) {
      fprintf(stderr, "vigil-agent: %s\n", std::string(loaded.status().message()).c_str());
      return 2;
    }
    options.settings = std::move(*loaded);
  }
  if (!absl::GetFlag(FLAGS_spool_dir).empty()) {
    std::error_code ec;
    std::filesystem::create_directories(absl::GetFlag(FLAGS_spool_dir), ec);
    options.spool_path = absl::GetFlag(FLAGS_spool_dir) + "/spool.db";
  }
  options.spool.max_bytes = absl::GetFlag(FLAGS_spool_max_bytes);
  options.spool.max_age_ns = absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_spool_max_age));
  options.replay_rate = absl::GetFlag(FLAGS_replay_rate);
  options.replay_burst = std::max(1.0, absl::GetFlag(FLAGS_replay_burst));
  int32_t in_flight = absl::GetFlag(FLAGS_max_in_flight);
  if (in_flight < 1 || in_flight > 64) {
    fprintf(stderr, "vigil-agent: --max_in_flight must be 1..64, got %d\n", in_flight);
    return 2;
  }
  options.max_in_flight = static_cast<uint32_t>(in_flight);
  int32_t keyframe_every = absl::GetFlag(FLAGS_wire_keyframe_every);
  if (keyframe_every < 2 || keyframe_every > 10000) {
    fprintf(stderr, "vigil-agent: --wire_keyframe_every must be 2..10000, got %d\n",
            keyframe_every);
    return 2;
  }
  options.wire_keyframe_every =
      absl::GetFlag(FLAGS_wire_delta) ? static_cast<uint32_t>(keyframe_every) : 0;
  options.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  options.insecure_plaintext = absl::GetFlag(FLAGS_insecure_plaintext);
  options.reconnect_min =
      absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_reconnect_min)) * kj::MILLISECONDS;
  options.probe_interval =
      absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_probe_interval)) * kj::MILLISECONDS;
  options.node_name = absl::GetFlag(FLAGS_node_name);
  options.agent_id = absl::GetFlag(FLAGS_agent_id);
  for (absl::string_view kv : absl::StrSplit(absl::GetFlag(FLAGS_labels), ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty()) {
      fprintf(stderr, "vigil-agent: --labels entry '%s' is not k=v\n", std::string(kv).c_str());
      return 2;
    }
    options.labels.push_back(p);
  }
  options.token = absl::GetFlag(FLAGS_token);
  options.ready_file = absl::GetFlag(FLAGS_ready_file);
  options.max_queue_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_max_queue_bytes));
  options.verbose = verbose;
  options.reconnect_max =
      absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_reconnect_max)) * kj::MILLISECONDS;

  kj::UnixEventPort::captureSignal(SIGINT);
  kj::UnixEventPort::captureSignal(SIGTERM);
  signal(SIGPIPE, SIG_IGN);
  auto io = kj::setupAsyncIo();

  auto agent = vigil::Agent::create(std::move(options), io);
  if (!agent.ok()) {
    fprintf(stderr, "vigil-agent: %s\n", std::string(agent.status().message()).c_str());
    return 1;
  }
  VIGIL_LOG_INFO("serving http://%s:%d/metrics, shipping to %s", absl::GetFlag(FLAGS_http_addr),
                 (*agent)->httpPort(), absl::GetFlag(FLAGS_aggregator));
  auto stop = io.unixEventPort.onSignal(SIGINT)
                  .exclusiveJoin(io.unixEventPort.onSignal(SIGTERM))
                  .then([](siginfo_t info) {
                    VIGIL_LOG_INFO("signal %d: detaching BPF programs and exiting", info.si_signo);
                  });
  stop.exclusiveJoin((*agent)->run()).wait(io.waitScope);
  agent->reset();  // destroys the collectors, which detach and unload their BPF objects
  return 0;
}
