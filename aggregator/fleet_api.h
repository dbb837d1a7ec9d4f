// The fleet API: JSON over HTTP for operators and the CLI. Lists agents and alerts, reloads
// alert rules, pushes config to one agent, to agents matching labels, or to all, and enables or
// disables collectors in batch. Bearer tokens carry a role (admin or viewer); every admin action
// and every denied request goes to the audit log. docs/fleet-api.md describes the routes.
#pragma once

#include <kj/async.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "aggregator/alerting/engine.h"
#include "aggregator/audit_log.h"
#include "aggregator/fleet.h"
#include "aggregator/store.h"
#include "userspace/common/http_server.h"

namespace vigil::aggregator {

struct ApiToken {
  std::string name;
  std::string role;  // "admin" or "viewer"
};

// Parses --api_tokens_file: a YAML map token -> {name, role} (optionally under `tokens:`).
absl::StatusOr<std::map<std::string, ApiToken>> loadApiTokens(const std::string& path);

// Config sent to agents; mirrors capnp AgentConfig (empty/zero fields keep the agent's value).
struct PushResult {
  bool applied = false;
  uint64_t version = 0;
  std::string error;
};

// Delivers a config to one agent through its AgentControl capability (set by the transport).
using PushConfigFn =
    std::function<kj::Promise<PushResult>(const std::string& agent_id, const AgentConfigSpec&)>;

struct FleetApiOptions {
  // Tokens; when absent the API is open, which the server allows only on a loopback address.
  std::optional<std::map<std::string, ApiToken>> tokens;
  bool loopback_only = true;  // http_addr is a loopback address
  int64_t offline_after_ms = 30000;
};

class FleetApi {
 public:
  FleetApi(FleetApiOptions options, Store& store, AuditLog& audit)
      : options_(std::move(options)), store_(store), audit_(audit) {}

  void setAlertEngine(alerting::AlertEngine* engine) { engine_ = engine; }
  void setRulesReload(std::function<absl::Status()> fn) { reload_ = std::move(fn); }
  void setPushConfig(PushConfigFn fn) { push_ = std::move(fn); }

  // The reply for requests under /api/v1/ that this API owns; nullptr for other paths.
  kj::Maybe<kj::Promise<HttpReply>> handle(const HttpRequest& request, int64_t now_ms);

  // For admin routes served outside this class (POST /api/v1/agents/<id>/config): the refusal
  // reply (already audited) or nullopt with `who` set; then auditAction records the result.
  std::optional<HttpReply> admitAdmin(const HttpRequest& r, std::string* who);
  void auditAction(const std::string& who, const HttpRequest& r, const std::string& target,
                   const std::string& result);

  std::string agentsJson(int64_t now_ms) const;
  std::string alertsJson(const std::string& state_filter) const;
  void render(MetricSink& out) const;

 private:
  enum class Role { kViewer, kAdmin };
  struct Caller {
    std::string who;
    std::string role;
  };
  // Checks the bearer token; on refusal returns the reply and writes the audit entry.
  std::optional<HttpReply> authorize(const HttpRequest& r, Role need, Caller& caller);
  void audit(const Caller& c, const HttpRequest& r, const std::string& target,
             const std::string& result);
  kj::Promise<HttpReply> pushConfig(const HttpRequest& r, const Caller& c, bool collectors_only);

  FleetApiOptions options_;
  Store& store_;
  AuditLog& audit_;
  alerting::AlertEngine* engine_ = nullptr;
  std::function<absl::Status()> reload_;
  PushConfigFn push_;
  std::map<std::string, uint64_t> denied_;  // by status code
};

}  // namespace vigil::aggregator
