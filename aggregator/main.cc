// vigil-aggregator: parses flags, sets up the event loop and signals, and runs a Server.
#include <signal.h>

#include <kj/async-unix.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "aggregator/server.h"
#include "userspace/common/log.h"

ABSL_FLAG(std::string, rpc_addr, "127.0.0.1", "Address for agent RPC connections.");
ABSL_FLAG(int32_t, rpc_port, 9470, "Port for agent RPC connections (0 picks a free port).");
ABSL_FLAG(std::string, http_addr, "127.0.0.1", "Address of /metrics and the HTTP API.");
ABSL_FLAG(int32_t, http_port, 9471, "Port of /metrics and the HTTP API (0 picks a free port).");
ABSL_FLAG(int32_t, heartbeat_ms, 10000, "Heartbeat interval asked of agents, in ms.");
ABSL_FLAG(std::string, ready_file, "", "Write the bound ports here once listening.");
ABSL_FLAG(std::string, data_dir, "/var/lib/vigil-aggregator",
          "Directory of the durable ingest log (ingest.db).");
ABSL_FLAG(absl::Duration, log_retention, absl::Hours(6), "Keep ingest log frames this long.");
ABSL_FLAG(int64_t, log_max_bytes, 2LL << 30, "Keep at most this many ingest log payload bytes.");
ABSL_FLAG(absl::Duration, series_retention, absl::Hours(2),
          "How long the in-memory series store (query API, alert rules) keeps samples.");
ABSL_FLAG(int64_t, max_series_per_agent, 20000,
          "Series cap per agent in the series store; samples of further series are dropped and "
          "counted in vigil_aggregator_series_dropped_total.");
ABSL_FLAG(std::vector<std::string>, remote_write_url, {},
          "Prometheus remote-write 1.0 receivers (comma-separated http:// URLs), e.g. "
          "http://127.0.0.1:9090/api/v1/write. See docs/remote-write.md.");
ABSL_FLAG(int32_t, remote_write_batch_samples, 5000,
          "Samples per remote-write request (a frame is never split).");
ABSL_FLAG(absl::Duration, remote_write_timeout, absl::Seconds(30),
          "Timeout of one remote-write request.");
ABSL_FLAG(absl::Duration, remote_write_max_backoff, absl::Seconds(30),
          "Longest pause between retries of a failed remote-write request.");
ABSL_FLAG(absl::Duration, remote_write_agent_stale_after, absl::Seconds(60),
          "Send stale markers for all series of an agent silent this long.");
ABSL_FLAG(int32_t, metrics_max_processes, 200,
          "Processes per agent shown on /metrics (busiest by CPU over the last interval; 0: all). "
          "The rest are counted in vigil_aggregator_processes_not_exposed.");
ABSL_FLAG(bool, verbose, false, "Log debug detail.");
ABSL_FLAG(bool, wire_delta, true,
          "Accept delta frames from agents (expanded against their base before they are logged). "
          "See docs/transport.md.");
ABSL_FLAG(std::string, tokens_file, "",
          "YAML file mapping agent id -> bearer token; when set, every agent must present its "
          "token.");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate for the RPC port (enables TLS).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA for client certificates: enables mutual TLS (certificate CN = agent id).");
ABSL_FLAG(bool, insecure_plaintext, false,
          "Allow plaintext RPC on a non-loopback --rpc_addr (loopback is always allowed).");
ABSL_FLAG(std::string, rules_file, "",
          "Alert rules (YAML, docs/alerting.md); reloaded when the file changes.");
ABSL_FLAG(absl::Duration, alert_eval_interval, absl::Seconds(1), "How often rules are evaluated.");
ABSL_FLAG(std::vector<std::string>, alertmanager_url, {},
          "Alertmanager base URL(s), comma-separated; every one gets every alert.");
ABSL_FLAG(std::vector<std::string>, webhook_url, {},
          "Generic JSON webhook URL(s), comma-separated (docs/alerting.md).");
ABSL_FLAG(absl::Duration, alert_resend_interval, absl::Minutes(1),
          "Re-send firing alerts (and recently resolved ones) this often.");
ABSL_FLAG(absl::Duration, alert_resolved_resend_for, absl::Minutes(5),
          "Keep re-sending a resolved alert this long.");
ABSL_FLAG(std::vector<std::string>, alert_group_by, {"alertname"},
          "Labels that group alerts for the per-group rate limit.");
ABSL_FLAG(int32_t, alert_group_limit, 50,
          "Alerts sent per group per minute per destination; the rest are held back and counted.");
ABSL_FLAG(std::string, api_tokens_file, "",
          "YAML token -> {name, role: admin|viewer}. Without it the API is open only when "
          "--http_addr is a loopback address.");
ABSL_FLAG(absl::Duration, agent_offline_after, absl::Seconds(30),
          "An agent silent this long is listed offline by the fleet API.");
ABSL_FLAG(absl::Duration, ingest_commit_linger, absl::Milliseconds(2),
          "Group commit: how long a batch of frames for the ingest log may wait for more frames "
          "after its first before it is committed (one fsync per batch; frames that queued "
          "during the previous commit go at once). Acks follow the commit. 0: no wait.");
ABSL_FLAG(int32_t, ingest_batch_max_frames, 1024, "Group commit: most frames per batch.");
ABSL_FLAG(int64_t, ingest_batch_max_bytes, 16LL << 20,
          "Group commit: most payload bytes per batch (a single larger frame still goes alone).");
ABSL_FLAG(int32_t, ingest_queue_max_frames, 20000,
          "Frames waiting for the ingest log at most; further pushes are refused (queue_full, "
          "counted) and the agents resend them.");
ABSL_FLAG(bool, enable_test_injection, false,
          "TEST ONLY: accept synthetic samples on POST /api/v1/test/inject for the alert engine.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "vigil-aggregator: receives frames from vigil-agents and serves them as Prometheus "
      "metrics.\nExample: vigil-aggregator --rpc_port=9470 --http_port=9471");
  absl::ParseCommandLine(argc, argv);
  vigil::setLogProgram("vigil-aggregator");
  if (absl::GetFlag(FLAGS_verbose)) {
    vigil::setLogLevel(vigil::LogLevel::kDebug);
  }
  vigil::aggregator::ServerOptions options;
  options.rpc_addr = absl::GetFlag(FLAGS_rpc_addr);
  options.http_addr = absl::GetFlag(FLAGS_http_addr);
  for (auto [flag, value, out] :
       {std::tuple{"rpc_port", absl::GetFlag(FLAGS_rpc_port), &options.rpc_port},
        std::tuple{"http_port", absl::GetFlag(FLAGS_http_port), &options.http_port}}) {
    if (value < 0 || value > 65535) {
      fprintf(stderr, "vigil-aggregator: --%s must be 0..65535, got %d\n", flag, value);
      return 2;
    }
    *out = static_cast<uint16_t>(value);
  }
  int32_t hb = absl::GetFlag(FLAGS_heartbeat_ms);
  if (hb < 100) {
    fprintf(stderr, "vigil-aggregator: --heartbeat_ms must be at least 100\n");
    return 2;
  }
  options.ingest.heartbeat_interval_ms = static_cast<uint32_t>(hb);
  options.ingest.accept_delta = absl::GetFlag(FLAGS_wire_delta);
  if (absl::GetFlag(FLAGS_ingest_commit_linger) < absl::ZeroDuration() ||
      absl::GetFlag(FLAGS_ingest_commit_linger) > absl::Seconds(1) ||
      absl::GetFlag(FLAGS_ingest_batch_max_frames) < 1 ||
      absl::GetFlag(FLAGS_ingest_batch_max_bytes) < 1 ||
      absl::GetFlag(FLAGS_ingest_queue_max_frames) < 1) {
    fprintf(stderr,
            "vigil-aggregator: --ingest_commit_linger must be 0..1s and --ingest_batch_max_frames, "
            "--ingest_batch_max_bytes, --ingest_queue_max_frames positive\n");
    return 2;
  }
  options.ingest.commit.linger_us =
      absl::ToInt64Microseconds(absl::GetFlag(FLAGS_ingest_commit_linger));
  options.ingest.commit.max_batch_frames =
      static_cast<size_t>(absl::GetFlag(FLAGS_ingest_batch_max_frames));
  options.ingest.commit.max_batch_bytes =
      static_cast<size_t>(absl::GetFlag(FLAGS_ingest_batch_max_bytes));
  options.ingest.commit.max_queue_frames =
      static_cast<size_t>(absl::GetFlag(FLAGS_ingest_queue_max_frames));
  options.ready_file = absl::GetFlag(FLAGS_ready_file);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.log.max_age_ns = absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_log_retention));
  options.log.max_bytes = absl::GetFlag(FLAGS_log_max_bytes);
  options.rules_file = absl::GetFlag(FLAGS_rules_file);
  options.alert_eval_interval_ms =
      std::max<int64_t>(100, absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_alert_eval_interval)));
  options.notifier.alertmanager_urls = absl::GetFlag(FLAGS_alertmanager_url);
  options.notifier.webhook_urls = absl::GetFlag(FLAGS_webhook_url);
  options.notifier.resend_ms = std::max<int64_t>(
      1000, absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_alert_resend_interval)));
  options.notifier.resolved_resend_for_ms =
      absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_alert_resolved_resend_for));
  options.notifier.group_by = absl::GetFlag(FLAGS_alert_group_by);
  options.notifier.group_limit = std::max(1, absl::GetFlag(FLAGS_alert_group_limit));
  options.api_tokens_file = absl::GetFlag(FLAGS_api_tokens_file);
  options.agent_offline_after_ms =
      absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_agent_offline_after));
  options.enable_test_injection = absl::GetFlag(FLAGS_enable_test_injection);
  if (absl::GetFlag(FLAGS_metrics_max_processes) < 0) {
    fprintf(stderr, "vigil-aggregator: --metrics_max_processes must be >= 0\n");
    return 2;
  }
  options.store.max_processes_per_agent =
      static_cast<size_t>(absl::GetFlag(FLAGS_metrics_max_processes));
  options.series.retention_ms = absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_series_retention));
  if (options.series.retention_ms <= 0 || absl::GetFlag(FLAGS_max_series_per_agent) <= 0) {
    fprintf(stderr,
            "vigil-aggregator: --series_retention and --max_series_per_agent must be > 0\n");
    return 2;
  }
  for (const std::string& url : absl::GetFlag(FLAGS_remote_write_url)) {
    if (!url.empty()) {
      options.remote_write_urls.push_back(url);
    }
  }
  if (absl::GetFlag(FLAGS_remote_write_batch_samples) < 1 ||
      absl::GetFlag(FLAGS_remote_write_timeout) <= absl::ZeroDuration() ||
      absl::GetFlag(FLAGS_remote_write_max_backoff) <= absl::ZeroDuration()) {
    fprintf(stderr,
            "vigil-aggregator: --remote_write_batch_samples, --remote_write_timeout and "
            "--remote_write_max_backoff must be positive\n");
    return 2;
  }
  options.remote_write.max_samples_per_send =
      static_cast<size_t>(absl::GetFlag(FLAGS_remote_write_batch_samples));
  options.remote_write.timeout_ms =
      absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_remote_write_timeout));
  options.remote_write.max_backoff_ms =
      absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_remote_write_max_backoff));
  options.remote_write.agent_stale_after_ms =
      absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_remote_write_agent_stale_after));
  options.series.max_series_per_agent =
      static_cast<size_t>(absl::GetFlag(FLAGS_max_series_per_agent));
  if (!absl::GetFlag(FLAGS_tokens_file).empty()) {
    auto tokens = vigil::aggregator::loadTokensFile(absl::GetFlag(FLAGS_tokens_file));
    if (!tokens.ok()) {
      fprintf(stderr, "vigil-aggregator: %s\n", std::string(tokens.status().message()).c_str());
      return 2;
    }
    options.ingest.agent_tokens = std::move(*tokens);
  }
  std::unique_ptr<vigil::aggregator::ServerTls> tls;
  std::string tls_cert = absl::GetFlag(FLAGS_tls_cert);
  std::string tls_key = absl::GetFlag(FLAGS_tls_key);
  if (!tls_cert.empty() || !tls_key.empty()) {
    auto loaded =
        vigil::aggregator::loadServerTls(tls_cert, tls_key, absl::GetFlag(FLAGS_tls_client_ca));
    if (!loaded.ok()) {
      fprintf(stderr, "vigil-aggregator: %s\n", std::string(loaded.status().message()).c_str());
      return 2;
    }
    tls = std::move(*loaded);
    options.ingest.tls = tls.get();
  } else if (!absl::GetFlag(FLAGS_tls_client_ca).empty()) {
    fprintf(stderr, "vigil-aggregator: --tls_client_ca needs --tls_cert and --tls_key\n");
    return 2;
  } else {
    const std::string& a = options.rpc_addr;
    bool loopback = a == "localhost" || a.rfind("127.", 0) == 0 || a == "::1";
    if (!loopback && !absl::GetFlag(FLAGS_insecure_plaintext)) {
      fprintf(stderr,
              "vigil-aggregator: --rpc_addr %s is not loopback: give --tls_cert/--tls_key (and "
              "--tls_client_ca for mutual TLS), or --insecure_plaintext\n",
              a.c_str());
      return 2;
    }
  }

  kj::UnixEventPort::captureSignal(SIGINT);
  kj::UnixEventPort::captureSignal(SIGTERM);
  signal(SIGPIPE, SIG_IGN);
  auto io = kj::setupAsyncIo();
  auto server = vigil::aggregator::Server::create(std::move(options), io);
  if (!server.ok()) {
    fprintf(stderr, "vigil-aggregator: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
#ifdef VIGIL_WITH_JEMALLOC
  constexpr const char* kAllocator = "jemalloc";
#else
  constexpr const char* kAllocator = "glibc malloc (built without jemalloc: slower at scale)";
#endif
  VIGIL_LOG_INFO("memory allocator: %s", kAllocator);
  VIGIL_LOG_INFO("agents connect to %s:%d; metrics at http://%s:%d/metrics",
                 absl::GetFlag(FLAGS_rpc_addr), (*server)->rpcPort(),
                 absl::GetFlag(FLAGS_http_addr), (*server)->httpPort());
  auto stop =
      io.unixEventPort.onSignal(SIGINT)
          .exclusiveJoin(io.unixEventPort.onSignal(SIGTERM))
          .then([](siginfo_t info) { VIGIL_LOG_INFO("signal %d: exiting", info.si_signo); });
  stop.exclusiveJoin((*server)->run()).wait(io.waitScope);
  (*server)->logIngestSummary();
  return 0;
}
