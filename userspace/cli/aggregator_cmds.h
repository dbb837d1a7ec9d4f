// Table formatting for the aggregator queries (`vigil agents`, `vigil alerts`, `vigil query`),
// as pure functions over the endpoints' JSON so tests can check them with any reply. Missing
// or mistyped fields print as "-", never crash.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace vigil::cli {

// GET /api/v1/agents → {"agents":[{agent_id,node,online,version,kernel,last_seen,...}]}
absl::StatusOr<std::string> formatAgents(const nlohmann::json& reply, int64_t now_unix);

// GET /api/v1/alerts → {"alerts":[{name,state,severity,labels,annotations,active_since,value}]}
absl::StatusOr<std::string> formatAlerts(const nlohmann::json& reply, int64_t now_unix,
                                         const std::string& state_filter);

// GET /api/v1/query_range → Prometheus matrix {"status":"success","data":{"resultType":
// "matrix","result":[{"metric":{..},"values":[[ts,"v"],...]}]}}
absl::StatusOr<std::string> formatQuery(const nlohmann::json& reply);

// "3s ago", "5m ago", "2h ago", "4d ago"; "-" for 0 or a time in the future beyond a minute.
std::string ago(int64_t then_unix, int64_t now_unix);

}  // namespace vigil::cli
