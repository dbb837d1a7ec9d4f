#include "aggregator/fleet_api.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "aggregator/ingest.h"
#include "aggregator/notify/notifier.h"
#include "userspace/common/log.h"
#include "userspace/common/clock.h"

namespace vigil::aggregator {
namespace {

using nlohmann::json;

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

HttpReply jsonError(int status, const std::string& message) {
  return HttpReply::json(status, dump(json{{"error", message}}));
}

absl::Status stringList(const json& j, const char* key, std::vector<std::string>* out) {
  if (!j.contains(key)) {
    return absl::OkStatus();
  }
  const json& v = j[key];
  if (!v.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("'", key, "' must be a list of strings"));
  }
  for (const json& x : v) {
    if (!x.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("'", key, "' must be a list of strings"));
    }
    out->push_back(x.get<std::string>());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::map<std::string, ApiToken>> loadApiTokens(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read --api_tokens_file ", path));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  YAML::Node root;
  try {
    root = YAML::Load(ss.str());
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", e.mark.line + 1, ": invalid YAML: ", e.msg));
  }
  YAML::Node map = root.IsMap() && root["tokens"] ? root["tokens"] : root;
  if (!map.IsMap()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a mapping token -> {name, role}"));
  }
  std::map<std::string, ApiToken> out;
  for (const auto& kv : map) {
    int line = kv.first.Mark().line + 1;
    if (!kv.first.IsScalar() || kv.first.Scalar().size() < 8) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line, ": a token must be a string of at least 8 characters"));
    }
    const YAML::Node& v = kv.second;
    if (!v.IsMap() || !v["role"] || !v["role"].IsScalar()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": needs {name, role}"));
    }
    ApiToken t;
    t.role = v["role"].Scalar();
    t.name = v["name"] && v["name"].IsScalar() ? v["name"].Scalar() : "unnamed";
    if (t.role != "admin" && t.role != "viewer") {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", v["role"].Mark().line + 1,
                                                     ": role must be admin or viewer, got '",
                                                     t.role, "'"));
    }
    out[kv.first.Scalar()] = t;
  }
  return out;
}

void FleetApi::audit(const Caller& c, const HttpRequest& r, const std::string& target,
                     const std::string& result) {
  AuditEntry e;
  e.time_ms = unixNs() / 1000000;
  e.who = c.who;
  e.role = c.role;
  e.remote = r.remote;
  e.action = absl::StrCat(kj::str(r.method).cStr(), " ", r.path);
  e.target = target;
  e.result = result;
  auto st = audit_.append(std::move(e));
  if (!st.ok()) {
    VIGIL_LOG_ERROR("audit log append failed: %s", st.status().message());
  }
}

std::optional<HttpReply> FleetApi::authorize(const HttpRequest& r, Role need, Caller& caller) {
  if (!options_.tokens.has_value()) {
    if (options_.loopback_only) {
      caller = {"anonymous (loopback, no tokens file)", "admin"};
      return std::nullopt;
    }
    caller = {"anonymous", ""};
    denied_["401"]++;
    audit(caller, r, "", "denied: 401 no --api_tokens_file and not bound to loopback");
    return jsonError(401, "API disabled: no --api_tokens_file and --http_addr is not loopback");
  }
  const std::string prefix = "Bearer ";
  if (r.authorization.rfind(prefix, 0) != 0) {
    caller = {"anonymous", ""};
    denied_["401"]++;
    audit(caller, r, "", "denied: 401 missing bearer token");
    return jsonError(401, "missing bearer token (Authorization: Bearer TOKEN)");
  }
  auto it = options_.tokens->find(r.authorization.substr(prefix.size()));
  if (it == options_.tokens->end()) {
    caller = {"anonymous", ""};
    denied_["401"]++;
    audit(caller, r, "", "denied: 401 unknown token");
    return jsonError(401, "unknown token");
  }
  caller = {it->second.name, it->second.role};
  if (need == Role::kAdmin && it->second.role != "admin") {
    denied_["403"]++;
    audit(caller, r, "", "denied: 403 admin role required");
    return jsonError(403, absl::StrCat("'", it->second.name, "' has role ", it->second.role,
                                       "; this endpoint needs admin"));
  }
  return std::nullopt;
}

std::string FleetApi::agentsJson(int64_t now_ms) const {
  json agents = json::array();
  for (const auto& [id, r] : store_.agents()) {
    int64_t last_seen_ms = r->last_seen_ns / 1000000;
    bool online = r->online && now_ms - last_seen_ms <= options_.offline_after_ms;
    json labels = json::object();
    for (const auto& [k, v] : r->info.labels) {
      labels[k] = v;
    }
    json collectors = json::array();
    for (const CollectorState& c : r->collectors) {
      collectors.push_back({{"name", c.name}, {"up", c.up}, {"reason", c.reason}});
    }
    agents.push_back({{"agent_id", id},
                      {"node", r->info.node_name},
                      {"online", online},
                      {"state", online ? "online" : "offline"},
                      {"version", r->info.version},
                      {"kernel", r->info.kernel},
                      {"last_seen", last_seen_ms / 1000},
                      {"last_seen_time", rfc3339(last_seen_ms)},
                      {"boot_epoch", r->boot_epoch},
                      {"last_seq", r->last_seq},
                      {"config_version", r->config_version},
                      {"offline_since", r->offline_since_ns / 1000000000},
                      {"offline_reason", r->offline_reason},
                      {"labels", labels},
                      {"collectors", collectors}});
  }
  return dump(json{{"agents", agents}});
}

std::string FleetApi::alertsJson(const std::string& state_filter) const {
  json alerts = json::array();
  if (engine_ != nullptr) {
    for (const alerting::Alert& a : engine_->alerts()) {
      std::string state = alerting::alertStateName(a.state);
      if (!state_filter.empty() && state != state_filter) {
        continue;
      }
      json labels = json::object();
      for (const auto& [k, v] : a.labels) {
        labels[k] = v;
      }
      json item = {{"name", a.rule},
                   {"state", state},
                   {"severity", a.severity},
                   {"labels", labels},
                   {"annotations", a.annotations},
                   {"active_since", rfc3339(a.active_since_ms)},
                   {"value", std::isfinite(a.value) ? a.value : 0.0}};
      if (a.fired_at_ms) {
        item["fired_at"] = rfc3339(a.fired_at_ms);
      }
      if (a.state == alerting::AlertState::kResolved) {
        item["resolved_at"] = rfc3339(a.resolved_at_ms);
      }
      alerts.push_back(std::move(item));
    }
  }
  return dump(json{{"alerts", alerts}});
}

kj::Promise<HttpReply> FleetApi::pushConfig(const HttpRequest& r, const Caller& c,
                                            bool collectors_only) {
  json body = json::parse(r.body, nullptr, /*allow_exceptions=*/false);
  auto fail = [&](int status, const std::string& msg) {
    audit(c, r, "", absl::StrCat("error: ", status, " ", msg));
    return kj::Promise<HttpReply>(jsonError(status, msg));
  };
  if (body.is_discarded() || !body.is_object()) {
    return fail(400, "body must be a JSON object");
  }
  AgentConfigSpec cfg;
  if (collectors_only) {
    for (auto& [k, v] : body.items()) {
      if (k != "target" && k != "enable" && k != "disable") {
        return fail(400, absl::StrCat("unknown key '", k, "' (target, enable, disable)"));
      }
    }
    if (auto st = stringList(body, "enable", &cfg.enabled_collectors); !st.ok()) {
      return fail(400, std::string(st.message()));
    }
    if (auto st = stringList(body, "disable", &cfg.disabled_collectors); !st.ok()) {
      return fail(400, std::string(st.message()));
    }
    if (cfg.enabled_collectors.empty() && cfg.disabled_collectors.empty()) {
      return fail(400, "nothing to do: give 'enable' and/or 'disable'");
    }
  } else {
    if (!body.contains("config")) {
      return fail(400, "missing 'config'");
    }
    if (!body["config"].is_object()) {
      return fail(400, "'config' must be an object");
    }
    // One parser for the per-agent and the batch routes; the batch route also checks the ranges
    // the agents enforce, so a typo is one 400 here rather than a FAILED from every agent.
    auto parsed = agentConfigFromJson(body["config"].dump());
    if (!parsed.ok()) {
      return fail(400, std::string(parsed.status().message()));
    }
    if (absl::Status st = checkConfigRanges(*parsed); !st.ok()) {
      return fail(400, std::string(st.message()));
    }
    cfg = *std::move(parsed);
  }
  // Target: exactly one of {"agents": [...]}, {"labels": {...}}, {"all": true}.
  if (!body.contains("target") || !body["target"].is_object() || body["target"].size() != 1) {
    return fail(400,
                "'target' must be one of {\"agents\":[ids]}, {\"labels\":{k:v}}, "
                "{\"all\":true}");
  }
  const json& t = body["target"];
  std::vector<std::string> targets;
  std::string target_desc;
  if (t.contains("agents")) {
    std::vector<std::string> ids;
    if (auto st = stringList(t, "agents", &ids); !st.ok() || ids.empty()) {
      return fail(400, "'target.agents' must be a non-empty list of agent ids");
    }
    for (const std::string& id : ids) {
      if (!store_.agents().contains(id)) {
        return fail(404, absl::StrCat("unknown agent '", id, "'"));
      }
      targets.push_back(id);
    }
    target_desc = absl::StrCat("agents=", absl::StrJoin(ids, ","));
  } else if (t.contains("labels")) {
    if (!t["labels"].is_object() || t["labels"].empty()) {
      return fail(400, "'target.labels' must be a non-empty object");
    }
    std::vector<std::string> parts;
    for (auto& [k, v] : t["labels"].items()) {
      if (!v.is_string()) {
        return fail(400, "label values must be strings");
      }
      parts.push_back(absl::StrCat(k, "=", v.get<std::string>()));
    }
    for (const auto& [id, rec] : store_.agents()) {
      bool match = true;
      for (auto& [k, v] : t["labels"].items()) {
        bool has = false;
        for (const auto& kv : rec->info.labels) {
          has = has || (kv.first == k && kv.second == v.get<std::string>());
        }
        match = match && has;
      }
      if (match) {
        targets.push_back(id);
      }
    }
    target_desc = absl::StrCat("labels{", absl::StrJoin(parts, ","), "}");
  } else if (t.contains("all") && t["all"] == true) {
    for (const auto& [id, rec] : store_.agents()) {
      targets.push_back(id);
    }
    target_desc = "all";
  } else {
    return fail(400, "'target' must be one of agents, labels, all");
  }
  std::sort(targets.begin(), targets.end());
  if (!push_) {
    audit(c, r, target_desc, "error: 501 config push not available in this build");
    return jsonError(501,
                     "config push is not available in this build (the transport's "
                     "AgentControl hook is not wired)");
  }
  auto promises = kj::heapArrayBuilder<kj::Promise<PushResult>>(targets.size());
  for (const std::string& id : targets) {
    promises.add(push_(id, cfg).catch_([](kj::Exception&& e) {
      PushResult r;
      r.error = e.getDescription().cStr();
      return r;
    }));
  }
  Caller caller = c;
  HttpRequest req = r;
  return kj::joinPromises(promises.finish())
      .then([this, caller, req = std::move(req), targets = std::move(targets),
             target_desc](kj::Array<PushResult> results) {
        json out = json::array();
        size_t ok = 0;
        for (size_t i = 0; i < results.size(); ++i) {
          ok += results[i].applied;
          out.push_back({{"agent_id", targets[i]},
                         {"applied", results[i].applied},
                         {"version", results[i].version},
                         {"error", results[i].error}});
        }
        audit(caller, req, target_desc,
              absl::StrCat(ok == results.size() ? "ok" : "partial", ": ", ok, "/", results.size(),
                           " applied"));
        return HttpReply::json(
            200, dump(json{{"results", out}, {"applied", ok}, {"targets", results.size()}}));
      });
}

kj::Maybe<kj::Promise<HttpReply>> FleetApi::handle(const HttpRequest& r, int64_t now_ms) {
  const std::string& p = r.path;
  bool get = r.method == kj::HttpMethod::GET;
  bool post = r.method == kj::HttpMethod::POST;
  Caller caller;
  auto route = [&](Role need) { return authorize(r, need, caller); };
  if (p == "/api/v1/agents" || p == "/api/v1/alerts" || p == "/api/v1/rules") {
    if (!get) {
      return kj::Promise<HttpReply>(jsonError(405, "use GET"));
    }
    if (auto deny = route(Role::kViewer)) {
      return kj::Promise<HttpReply>(*deny);
    }
    if (p == "/api/v1/agents") {
      return kj::Promise<HttpReply>(HttpReply::json(200, agentsJson(now_ms)));
    }
    if (p == "/api/v1/alerts") {
      return kj::Promise<HttpReply>(HttpReply::json(200, alertsJson(r.queryOr("state", ""))));
    }
    json rules = json::array();
    if (engine_ != nullptr) {
      for (const alerting::Rule& rule : engine_->rules().rules) {
        rules.push_back({{"name", rule.name},
                         {"kind", alerting::ruleKindName(rule.kind)},
                         {"severity", rule.severity},
                         {"selector", rule.selector_text},
                         {"line", rule.line}});
      }
    }
    return kj::Promise<HttpReply>(HttpReply::json(200, dump(json{{"rules", rules}})));
  }
  if (p == "/api/v1/audit") {
    if (!get) {
      return kj::Promise<HttpReply>(jsonError(405, "use GET"));
    }
    if (auto deny = route(Role::kAdmin)) {
      return kj::Promise<HttpReply>(*deny);
    }
    int64_t after = 0;
    int64_t limit = 1000;
    if (!absl::SimpleAtoi(r.queryOr("after_id", "0"), &after) ||
        !absl::SimpleAtoi(r.queryOr("limit", "1000"), &limit) || limit <= 0 || limit > 10000) {
      return kj::Promise<HttpReply>(jsonError(400, "after_id and limit (1..10000) are integers"));
    }
    auto entries = audit_.query(after, static_cast<size_t>(limit));
    if (!entries.ok()) {
      return kj::Promise<HttpReply>(jsonError(500, std::string(entries.status().message())));
    }
    json out = json::array();
    for (const AuditEntry& e : *entries) {
      out.push_back({{"id", e.id},
                     {"time", rfc3339(e.time_ms)},
                     {"who", e.who},
                     {"role", e.role},
                     {"remote", e.remote},
                     {"action", e.action},
                     {"target", e.target},
                     {"result", e.result}});
    }
    return kj::Promise<HttpReply>(HttpReply::json(200, dump(json{{"entries", out}})));
  }
  if (p == "/api/v1/rules/reload" || p == "/api/v1/config" || p == "/api/v1/collectors") {
    if (!post) {
      return kj::Promise<HttpReply>(jsonError(405, "use POST"));
    }
    if (auto deny = route(Role::kAdmin)) {
      return kj::Promise<HttpReply>(*deny);
    }
    if (p == "/api/v1/rules/reload") {
      if (!reload_) {
        audit(caller, r, "rules", "error: no --rules_file");
        return kj::Promise<HttpReply>(jsonError(409, "no --rules_file configured"));
      }
      absl::Status st = reload_();
      audit(caller, r, "rules", st.ok() ? "ok" : absl::StrCat("error: ", st.message()));
      if (!st.ok()) {
        return kj::Promise<HttpReply>(HttpReply::json(
            422, dump(json{{"error", std::string(st.message())}, {"kept_old_rules", true}})));
      }
      return kj::Promise<HttpReply>(
          HttpReply::json(200, dump(json{{"status", "reloaded"},
                                         {"rules", engine_ ? engine_->rules().rules.size() : 0}})));
    }
    return pushConfig(r, caller, p == "/api/v1/collectors");
  }
  return nullptr;
}

std::optional<HttpReply> FleetApi::admitAdmin(const HttpRequest& r, std::string* who) {
  Caller caller;
  auto deny = authorize(r, Role::kAdmin, caller);
  if (!deny) {
    *who = caller.who;
  }
  return deny;
}

void FleetApi::auditAction(const std::string& who, const HttpRequest& r, const std::string& target,
                           const std::string& result) {
  audit(Caller{who, "admin"}, r, target, result);
}

void FleetApi::render(MetricSink& out) const {
  out.family("vigil_api_denied_total", MetricType::kCounter,
             "API requests refused for authentication (401) or authorization (403).");
  for (const char* code : {"401", "403"}) {
    auto it = denied_.find(code);
    out.sample("vigil_api_denied_total", {{"code", code}},
               it == denied_.end() ? 0.0 : static_cast<double>(it->second));
  }
  out.family("vigil_audit_append_errors_total", MetricType::kCounter,
             "Audit log entries that could not be written.");
  out.sample("vigil_audit_append_errors_total", {}, static_cast<double>(audit_.appendErrors()));
}

}  // namespace vigil::aggregator
