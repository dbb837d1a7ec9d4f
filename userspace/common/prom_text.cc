#include "userspace/common/prom_text.h"

#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vigil {

std::string formatValue(double value) {
  if (std::isnan(value)) {
    return "NaN";
  }
  if (std::isinf(value)) {
    return value > 0 ? "+Inf" : "-Inf";
  }
  if (value == std::floor(value) && std::fabs(value) < 9007199254740992.0) {
    return absl::StrFormat("%.0f", value);
  }
  // Shortest text that parses back to the same double.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), value);
  return std::string(buf, res.ptr);
}

std::string escapeLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

bool validMetricName(absl::string_view name) {
  if (name.empty()) {
    return false;
  }
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) {
      return false;
    }
  }
  return true;
}

bool validLabelName(absl::string_view name) {
  if (name.empty()) {
    return false;
  }
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) {
      return false;
    }
  }
  return true;
}

PromWriter::Family& PromWriter::get(absl::string_view name) {
  auto it = index_.find(name);
  if (it != index_.end()) {
    return families_[it->second];
  }
  index_.emplace(std::string(name), families_.size());
  families_.push_back(Family{std::string(name), MetricType::kUntyped, "", ""});
  return families_.back();
}

void PromWriter::family(absl::string_view name, MetricType type, absl::string_view help) {
  Family& f = get(name);
  f.type = type;
  f.help = std::string(help);
}

void PromWriter::ensureFamily(absl::string_view name, MetricType type) {
  Family& f = get(name);
  if (f.type == MetricType::kUntyped) {
    f.type = type;
  }
}

void PromWriter::sample(absl::string_view family, absl::string_view name, const Labels& labels,
                        double value, std::optional<int64_t> timestamp_ms) {
  Family& f = get(family);
  std::string& out = f.body;
  out.append(name.data(), name.size());
  if (!labels.empty()) {
    out += '{';
    bool first = true;
    for (const auto& [k, v] : labels) {
      if (!first) {
        out += ',';
      }
      first = false;
      absl::StrAppend(&out, k, "=\"", escapeLabelValue(v), "\"");
    }
    out += '}';
  }
  absl::StrAppend(&out, " ", formatValue(value));
  if (timestamp_ms) {
    if (open_metrics_) {
      absl::StrAppend(&out, " ", absl::StrFormat("%.3f", *timestamp_ms / 1000.0));
    } else {
      absl::StrAppend(&out, " ", *timestamp_ms);
    }
  }
  out += '\n';
}

std::string PromWriter::finish() const {
  std::string out;
  for (const Family& f : families_) {
    if (f.body.empty()) {
      continue;
    }
    // OpenMetrics names counter families without the _total suffix.
    absl::string_view name = f.name;
    if (open_metrics_ && f.type == MetricType::kCounter && name.size() > 6 &&
        name.substr(name.size() - 6) == "_total") {
      name = name.substr(0, name.size() - 6);
    }
    const char* type = "untyped";
    switch (f.type) {
      case MetricType::kCounter:
        type = "counter";
        break;
      case MetricType::kGauge:
        type = "gauge";
        break;
      case MetricType::kHistogram:
        type = "histogram";
        break;
      case MetricType::kUntyped:
        type = open_metrics_ ? "unknown" : "untyped";
        break;
    }
    if (!f.help.empty()) {
      absl::StrAppend(&out, "# HELP ", name, " ", f.help, "\n");
    }
    absl::StrAppend(&out, "# TYPE ", name, " ", type, "\n", f.body);
  }
  if (open_metrics_) {
    out += "# EOF\n";
  }
  return out;
}

std::string PromWriter::contentType(bool open_metrics) {
  return open_metrics ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                      : "text/plain; version=0.0.4; charset=utf-8";
}

}  // namespace vigil
