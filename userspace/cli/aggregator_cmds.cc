#include "userspace/cli/aggregator_cmds.h"

#include <time.h>

#include <cstdlib>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "userspace/cli/cli.h"
#include "userspace/cli/http_client.h"

namespace vigil::cli {
namespace {

using nlohmann::json;

std::string str(const json& o, const char* key) {
  if (!o.is_object() || !o.contains(key)) {
    return "-";
  }
  const json& v = o[key];
  if (v.is_string()) {
    return v.get<std::string>().empty() ? "-" : v.get<std::string>();
  }
  if (v.is_null()) {
    return "-";
  }
  if (v.is_number_float()) {
    return absl::StrFormat("%.6g", v.get<double>());
  }
  return v.dump();
}

int64_t num(const json& o, const char* key) {
  if (!o.is_object() || !o.contains(key)) {
    return 0;
  }
  const json& v = o[key];
  if (v.is_number()) {
    return static_cast<int64_t>(v.get<double>());
  }
  if (v.is_string()) {
    double d = 0;
    if (absl::SimpleAtod(v.get<std::string>(), &d)) {
      return static_cast<int64_t>(d);
    }
  }
  return 0;
}

std::string labelsText(const json& labels) {
  if (!labels.is_object()) {
    return "";
  }
  std::vector<std::string> parts;
  for (const auto& [k, v] : labels.items()) {
    parts.push_back(absl::StrCat(k, "=", v.is_string() ? v.get<std::string>() : v.dump()));
  }
  return absl::StrJoin(parts, ",");
}

// Left-aligned columns sized to their widest cell; the last column is not padded.
std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    width.resize(std::max(width.size(), r.size()));
    for (size_t i = 0; i < r.size(); ++i) {
      width[i] = std::max(width[i], r[i].size());
    }
  }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      if (i + 1 < r.size()) {
        absl::StrAppend(&line, r[i], std::string(width[i] - r[i].size() + 2, ' '));
      } else {
        absl::StrAppend(&line, r[i]);
      }
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

absl::Status shapeError(const char* what) {
  return absl::InvalidArgumentError(
      absl::StrCat("the aggregator's reply has no ", what, "; is it a vigil aggregator?"));
}

std::string sinceText(const json& v, int64_t now) {
  if (v.is_number()) {
    return ago(static_cast<int64_t>(v.get<double>()), now);
  }
  if (v.is_string()) {
    absl::Time t;
    std::string err;
    if (absl::ParseTime(absl::RFC3339_full, v.get<std::string>(), &t, &err)) {
      return ago(absl::ToUnixSeconds(t), now);
    }
    return v.get<std::string>();
  }
  return "-";
}

}  // namespace

std::string ago(int64_t then, int64_t now) {
  if (then <= 0 || then > now + 60) {
    return "-";
  }
  int64_t d = std::max<int64_t>(0, now - then);
  if (d < 120) {
    return absl::StrCat(d, "s ago");
  }
  if (d < 7200) {
    return absl::StrCat(d / 60, "m ago");
  }
  if (d < 172800) {
    return absl::StrCat(d / 3600, "h ago");
  }
  return absl::StrCat(d / 86400, "d ago");
}

absl::StatusOr<std::string> formatAgents(const json& reply, int64_t now) {
  if (!reply.is_object() || !reply.contains("agents") || !reply["agents"].is_array()) {
    return shapeError("\"agents\" list");
  }
  std::vector<std::vector<std::string>> rows = {
      {"AGENT", "NODE", "STATUS", "VERSION", "KERNEL", "LAST SEEN", "SEQ", "LABELS"}};
  size_t online = 0;
  for (const json& a : reply["agents"]) {
    bool up = a.is_object() && a.contains("online") && a["online"].is_boolean() &&
              a["online"].get<bool>();
    online += up;
    rows.push_back({str(a, "agent_id"), str(a, "node"), up ? "online" : "offline",
                    str(a, "version"), str(a, "kernel"), ago(num(a, "last_seen"), now),
                    str(a, "last_seq"),
                    labelsText(a.is_object() ? a.value("labels", json()) : json())});
  }
  return absl::StrCat(table(rows), reply["agents"].size(), " agents, ", online, " online\n");
}

absl::StatusOr<std::string> formatAlerts(const json& reply, int64_t now,
                                         const std::string& state_filter) {
  if (!reply.is_object() || !reply.contains("alerts") || !reply["alerts"].is_array()) {
    return shapeError("\"alerts\" list");
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "STATE", "SEVERITY", "SINCE", "VALUE", "LABELS", "SUMMARY"}};
  size_t shown = 0;
  for (const json& a : reply["alerts"]) {
    std::string state = str(a, "state");
    if (!state_filter.empty() && state != state_filter) {
      continue;
    }
    ++shown;
    json ann = a.is_object() ? a.value("annotations", json::object()) : json::object();
    std::string summary = ann.is_object() && ann.contains("summary") ? str(ann, "summary") : "";
    rows.push_back(
        {str(a, "name"), state, str(a, "severity"),
         a.is_object() && a.contains("active_since") ? sinceText(a["active_since"], now) : "-",
         str(a, "value"), labelsText(a.is_object() ? a.value("labels", json()) : json()), summary});
  }
  if (shown == 0) {
    return std::string(state_filter.empty()
                           ? "no alerts\n"
                           : absl::StrCat("no alerts in state ", state_filter, "\n"));
  }
  return absl::StrCat(table(rows), shown, " alerts\n");
}

absl::StatusOr<std::string> formatQuery(const json& reply) {
  if (!reply.is_object()) {
    return shapeError("JSON object");
  }
  if (!reply.contains("status") || reply["status"] != "success") {
    return absl::InvalidArgumentError(absl::StrCat(
        "query failed: ", reply.contains("error") ? str(reply, "error") : reply.dump()));
  }
  if (!reply.contains("data") || !reply["data"].is_object() || !reply["data"].contains("result") ||
      !reply["data"]["result"].is_array()) {
    return shapeError("data.result list");
  }
  std::vector<std::vector<std::string>> rows = {{"SERIES", "LAST", "MIN", "MAX", "AVG", "POINTS"}};
  for (const json& series : reply["data"]["result"]) {
    json metric = series.is_object() ? series.value("metric", json::object()) : json::object();
    std::string name =
        metric.is_object() && metric.contains("__name__") ? str(metric, "__name__") : std::string();
    std::vector<std::string> labels;
    if (metric.is_object()) {
      for (const auto& [k, v] : metric.items()) {
        if (k != "__name__") {
          labels.push_back(
              absl::StrCat(k, "=\"", v.is_string() ? v.get<std::string>() : v.dump(), "\""));
        }
      }
    }
    std::string id = absl::StrCat(name, "{", absl::StrJoin(labels, ","), "}");
    double lo = std::numeric_limits<double>::infinity(), hi = -lo, sum = 0, last = NAN;
    size_t n = 0;
    json values = series.is_object() ? series.value("values", json::array()) : json::array();
    for (const json& p : values) {
      double v = 0;
      if (!p.is_array() || p.size() != 2 || !p[1].is_string() ||
          !absl::SimpleAtod(p[1].get<std::string>(), &v)) {
        continue;
      }
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      sum += v;
      last = v;
      ++n;
    }
    auto f = [](double v) { return absl::StrFormat("%.6g", v); };
    if (n == 0) {
      rows.push_back({id, "-", "-", "-", "-", "0"});
    } else {
      rows.push_back({id, f(last), f(lo), f(hi), f(sum / n), absl::StrCat(n)});
    }
  }
  if (rows.size() == 1) {
    return std::string("no series matched\n");
  }
  return table(rows);
}

namespace {

std::string aggregatorAddress(const Args& args) { return args.get("aggregator", "127.0.0.1:9471"); }

// GET and parse JSON; on failure prints the reason and sets the exit code.
std::optional<json> fetch(const Command& self, const Args& args, const std::string& path,
                          int* code) {
  std::string addr = aggregatorAddress(args);
  std::string token = args.get("token");
  if (token.empty() && getenv("VIGIL_TOKEN") != nullptr) {
    token = getenv("VIGIL_TOKEN");
  }
  auto r = httpGet(addr, path, token);
  if (!r.ok()) {
    if (absl::IsUnavailable(r.status())) {
      *code = fail(self, kExitUnreachable,
                   absl::StrCat(r.status().message(),
                                "\nIs vigil-aggregator running there? Point --aggregator at its "
                                "HTTP address (host:port; the default is 127.0.0.1:9471)."));
    } else {
      *code = fail(self, kExitError, std::string(r.status().message()));
    }
    return std::nullopt;
  }
  if (r->status == 404) {
    *code = fail(
        self, kExitUnsupported,
        absl::StrCat("the aggregator at ", addr, " does not serve ", path.substr(0, path.find('?')),
                     " (HTTP 404); it may be an older version without this API"));
    return std::nullopt;
  }
  json j = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
  if (r->status == 401 || r->status == 403) {
    std::string msg = j.is_object() && j.contains("error") ? str(j, "error") : "";
    *code = fail(
        self, kExitError,
        absl::StrCat("the aggregator refused the request (HTTP ", r->status,
                     msg.empty() ? "" : ": ", msg, "); pass a token with --token or VIGIL_TOKEN"));
    return std::nullopt;
  }
  if (r->status != 200) {
    std::string msg =
        j.is_object() && j.contains("error") ? str(j, "error") : r->body.substr(0, 300);
    *code =
        fail(self, kExitError, absl::StrCat("the aggregator answered HTTP ", r->status, ": ", msg));
    return std::nullopt;
  }
  if (j.is_discarded()) {
    *code = fail(self, kExitError,
                 absl::StrCat("the aggregator at ", addr, " returned invalid JSON for ", path));
    return std::nullopt;
  }
  if (args.has("json")) {
    // Passthrough, byte for byte.
    fwrite(r->body.data(), 1, r->body.size(), stdout);
    if (r->body.empty() || r->body.back() != '\n') {
      fputc('\n', stdout);
    }
    *code = kExitOk;
    return std::nullopt;
  }
  return j;
}

int print(const Command& self, const absl::StatusOr<std::string>& text) {
  if (!text.ok()) {
    return fail(self, kExitError, std::string(text.status().message()));
  }
  fwrite(text->data(), 1, text->size(), stdout);
  return kExitOk;
}

int noPositional(const Command& self, const Args& args) {
  if (!args.positional().empty()) {
    return usageError(self, absl::StrCat("unexpected argument '", args.positional()[0], "'"));
  }
  return kExitOk;
}

}  // namespace

int runAgents(const Command& self, const Args& args) {
  if (int rc = noPositional(self, args)) {
    return rc;
  }
  int code = kExitOk;
  auto j = fetch(self, args, "/api/v1/agents", &code);
  if (!j) {
    return code;
  }
  return print(self, formatAgents(*j, time(nullptr)));
}

int runAlerts(const Command& self, const Args& args) {
  if (int rc = noPositional(self, args)) {
    return rc;
  }
  int code = kExitOk;
  auto j = fetch(self, args, "/api/v1/alerts", &code);
  if (!j) {
    return code;
  }
  return print(self, formatAlerts(*j, time(nullptr), args.get("state")));
}

int runQuery(const Command& self, const Args& args) {
  if (args.positional().size() != 1) {
    return usageError(self, args.positional().empty()
                                ? "needs a selector, e.g. 'vigil_host_load1' or "
                                  "'vigil_process_cpu_seconds_total{comm=\"nginx\"}'"
                                : "takes exactly one selector (quote it for the shell)");
  }
  auto since = args.duration("since", absl::Minutes(15));
  if (!since.ok()) {
    return usageError(self, std::string(since.status().message()));
  }
  absl::Duration default_step =
      std::max(absl::Seconds(1), absl::Floor(*since / 120, absl::Seconds(1)));
  auto step = args.duration("step", default_step);
  if (!step.ok()) {
    return usageError(self, std::string(step.status().message()));
  }
  int64_t end = time(nullptr);
  int64_t start = end - absl::ToInt64Seconds(*since);
  std::string path =
      absl::StrCat("/api/v1/query_range?query=", urlEncode(args.positional()[0]), "&start=", start,
                   "&end=", end, "&step=", absl::StrFormat("%g", absl::ToDoubleSeconds(*step)));
  int code = kExitOk;
  auto j = fetch(self, args, path, &code);
  if (!j) {
    return code;
  }
  return print(self, formatQuery(*j));
}

}  // namespace vigil::cli
