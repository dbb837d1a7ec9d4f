#include "aggregator/query_api.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "userspace/common/prom_text.h"

namespace vigil::aggregator {

bool validUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) {
      return false;
    }
    for (int k = 1; k <= n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Overlong forms, surrogates and values beyond U+10FFFF are not UTF-8.
    static const uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

std::string repairUtf8(const std::string& s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80             ? 1
               : (c & 0xe0) == 0xc0 ? 2
               : (c & 0xf0) == 0xe0 ? 3
               : (c & 0xf8) == 0xf0 ? 4
                                    : 0;
    if (n != 0 && i + n <= s.size() && validUtf8(s.substr(i, n))) {
      out.append(s, i, n);
      i += n;
    } else {
      out += "\xef\xbf\xbd";
      ++i;
    }
  }
  return out;
}

std::string jsonString(const std::string& s) {
  std::string out = "\"";
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      // Copy one valid UTF-8 sequence, or write U+FFFD for one bad byte.
      size_t n = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
      if (n != 0 && i + n <= s.size() && validUtf8(s.substr(i, n))) {
        out.append(s, i, n);
        i += n;
      } else {
        out += "\xef\xbf\xbd";
        ++i;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          absl::StrAppend(&out, absl::StrFormat("\\u%04x", c));
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
  return out;
}

absl::StatusOr<int64_t> parseTimeParam(const std::string& text) {
  double secs;
  if (absl::SimpleAtod(text, &secs)) {
    if (!std::isfinite(secs) || std::fabs(secs) > 1e13) {
      return absl::InvalidArgumentError(absl::StrCat("time \"", text, "\" is out of range"));
    }
    return static_cast<int64_t>(std::llround(secs * 1000));
  }
  absl::Time t;
  std::string err;
  if (absl::ParseTime(absl::RFC3339_full, text, &t, &err)) {
    return absl::ToUnixMillis(t);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "cannot parse \"", text, "\" as a time: use unix seconds or RFC3339 (", err, ")"));
}

absl::StatusOr<int64_t> parseDurationParam(const std::string& text) {
  double secs;
  if (absl::SimpleAtod(text, &secs)) {
    if (!std::isfinite(secs) || secs <= 0 || secs > 1e10) {
      return absl::InvalidArgumentError(
          absl::StrCat("duration \"", text, "\" must be positive and finite"));
    }
    return static_cast<int64_t>(std::llround(secs * 1000));
  }
  // Units: ms s m h d w, possibly combined ("1h30m").
  int64_t total = 0;
  size_t i = 0;
  bool any = false;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      ++i;
    }
    if (i == start || i - start > 12) {
      return absl::InvalidArgumentError(absl::StrCat("cannot parse duration \"", text,
                                                     "\": use e.g. 30s, 5m, 1h, 2d or seconds"));
    }
    int64_t n = std::stoll(text.substr(start, i - start));
    int64_t unit;
    if (text.compare(i, 2, "ms") == 0) {
      unit = 1;
      i += 2;
    } else if (i < text.size() && text[i] == 's') {
      unit = 1000;
      ++i;
    } else if (i < text.size() && text[i] == 'm') {
      unit = 60 * 1000;
      ++i;
    } else if (i < text.size() && text[i] == 'h') {
      unit = 3600 * 1000;
      ++i;
    } else if (i < text.size() && text[i] == 'd') {
      unit = 86400 * 1000;
      ++i;
    } else if (i < text.size() && text[i] == 'w') {
      unit = 7LL * 86400 * 1000;
      ++i;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("duration \"", text, "\" has a missing or unknown unit (ms s m h d w)"));
    }
    if (n > (int64_t{1} << 40) / unit) {
      return absl::InvalidArgumentError(absl::StrCat("duration \"", text, "\" is too long"));
    }
    total += n * unit;
    any = true;
  }
  if (!any || total <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("duration \"", text, "\" must be positive"));
  }
  return total;
}

namespace {

std::string formatTimestamp(int64_t ms) {
  // Seconds with millisecond precision, as Prometheus prints them.
  if (ms % 1000 == 0) {
    return absl::StrCat(ms / 1000);
  }
  std::string sign = ms < 0 ? "-" : "";
  int64_t a = ms < 0 ? -ms : ms;
  std::string frac = absl::StrFormat("%03d", a % 1000);
  while (!frac.empty() && frac.back() == '0') {
    frac.pop_back();
  }
  return absl::StrCat(sign, a / 1000, ".", frac);
}

std::string metricJson(const LabelSet& labels) {
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    absl::StrAppend(&out, first ? "" : ",", jsonString(k), ":", jsonString(v));
    first = false;
  }
  out += "}";
  return out;
}

}  // namespace

HttpReply QueryApi::reject(const std::string& endpoint, const std::string& reason,
                           const std::string& message) {
  rejected_[{endpoint, reason}]++;
  return HttpReply::json(400, absl::StrCat("{\"status\":\"error\",\"errorType\":\"bad_data\","
                                           "\"error\":",
                                           jsonString(message), "}\n"));
}

std::optional<HttpReply> QueryApi::handle(const HttpRequest& request, int64_t now_ms) {
  std::string endpoint;
  if (request.path == "/api/v1/series") {
    endpoint = "series";
  } else if (request.path == "/api/v1/query_range") {
    endpoint = "query_range";
  } else {
    return std::nullopt;
  }
  requests_[endpoint]++;
  if (request.method != kj::HttpMethod::GET) {
    rejected_[{endpoint, "method"}]++;
    return HttpReply::json(405,
                           "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":"
                           "\"only GET is supported\"}\n");
  }
  size_t total = 0;
  for (const auto& [k, v] : request.query_all) {
    total += k.size() + v.size();
    if (!validUtf8(k) || !validUtf8(v)) {
      return reject(endpoint, "invalid_utf8",
                    absl::StrCat("parameter ", jsonString(k), " is not valid UTF-8"));
    }
  }
  if (total > options_.max_query_bytes * 4) {
    return reject(endpoint, "too_large",
                  absl::StrCat("query parameters exceed ", options_.max_query_bytes * 4, " bytes"));
  }
  return endpoint == "series" ? series(request, now_ms) : queryRange(request, now_ms);
}

namespace {

struct Range {
  int64_t start_ms;
  int64_t end_ms;
};

// Parses start/end with defaults (end: now; start: end - `default_span_ms`).
absl::StatusOr<Range> parseRange(const HttpRequest& request, int64_t now_ms,
                                 int64_t default_span_ms) {
  Range r{0, now_ms};
  auto it = request.query.find("end");
  if (it != request.query.end() && !it->second.empty()) {
    auto t = parseTimeParam(it->second);
    if (!t.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid parameter \"end\": ", t.status().message()));
    }
    r.end_ms = *t;
  }
  r.start_ms = r.end_ms - default_span_ms;
  it = request.query.find("start");
  if (it != request.query.end() && !it->second.empty()) {
    auto t = parseTimeParam(it->second);
    if (!t.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid parameter \"start\": ", t.status().message()));
    }
    r.start_ms = *t;
  }
  if (r.end_ms < r.start_ms) {
    return absl::InvalidArgumentError("end timestamp must not be before start time");
  }
  return r;
}

}  // namespace

// A selector must name a metric or have a matcher that excludes the empty value, so one
// request cannot ask for every series by accident (Prometheus has the same rule).
static absl::StatusOr<Selector> parseQuerySelector(const std::string& text,
                                                   const QueryApiOptions& options) {
  if (text.size() > options.max_query_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "selector is ", text.size(), " bytes; the limit is ", options.max_query_bytes));
  }
  auto sel = parseSelector(text);
  if (!sel.ok()) {
    return sel.status();
  }
  if (sel->matchers.size() > options.max_matchers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "selector has ", sel->matchers.size(), " matchers; the limit is ", options.max_matchers));
  }
  if (sel->metric.empty()) {
    bool narrowing = false;
    for (const LabelMatcher& m : sel->matchers) {
      if (!m.matches("")) {
        narrowing = true;
      }
    }
    if (!narrowing) {
      return absl::InvalidArgumentError(absl::StrCat(
          "selector \"", text,
          "\" needs a metric name or at least one matcher that does not match the empty string"));
    }
  }
  return sel;
}

HttpReply QueryApi::series(const HttpRequest& request, int64_t now_ms) {
  std::vector<Selector> selectors;
  for (const auto& [k, v] : request.query_all) {
    if (k != "match[]") {
      continue;
    }
    auto sel = parseQuerySelector(v, options_);
    if (!sel.ok()) {
      return reject("series", "bad_selector", std::string(sel.status().message()));
    }
    selectors.push_back(std::move(*sel));
  }
  if (selectors.empty()) {
    return reject("series", "missing_parameter", "no match[] parameter provided");
  }
  auto range = parseRange(request, now_ms, store_.options().retention_ms);
  if (!range.ok()) {
    return reject("series", "bad_time", std::string(range.status().message()));
  }
  std::vector<LabelSet> all;
  for (const Selector& sel : selectors) {
    auto got = store_.seriesLabels(sel, range->start_ms, range->end_ms);
    all.insert(all.end(), got.begin(), got.end());
  }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  if (all.size() > options_.max_series) {
    return reject("series", "too_many_series",
                  absl::StrCat(all.size(), " series match; the limit is ", options_.max_series,
                               ": narrow the selector"));
  }
  std::string out = "{\"status\":\"success\",\"data\":[";
  for (size_t i = 0; i < all.size(); ++i) {
    absl::StrAppend(&out, i == 0 ? "" : ",", metricJson(all[i]));
  }
  out += "]}\n";
  return HttpReply::json(200, std::move(out));
}

HttpReply QueryApi::queryRange(const HttpRequest& request, int64_t now_ms) {
  auto q = request.query.find("query");
  if (q == request.query.end() || q->second.empty()) {
    return reject("query_range", "missing_parameter", "missing parameter \"query\"");
  }
  auto sel = parseQuerySelector(q->second, options_);
  if (!sel.ok()) {
    return reject("query_range", "bad_selector", std::string(sel.status().message()));
  }
  auto range = parseRange(request, now_ms, 3600 * 1000);
  if (!range.ok()) {
    return reject("query_range", "bad_time", std::string(range.status().message()));
  }
  std::optional<int64_t> step;
  auto it = request.query.find("step");
  if (it != request.query.end() && !it->second.empty()) {
    auto d = parseDurationParam(it->second);
    if (!d.ok()) {
      return reject("query_range", "bad_step",
                    absl::StrCat("invalid parameter \"step\": ", d.status().message()));
    }
    step = *d;
    if ((range->end_ms - range->start_ms) / *step + 1 >
        static_cast<int64_t>(options_.max_points_per_series)) {
      return reject("query_range", "too_many_points",
                    absl::StrCat("exceeded maximum resolution of ", options_.max_points_per_series,
                                 " points per series: try a larger step"));
    }
  }
  int64_t lookback = options_.default_lookback_ms;
  it = request.query.find("lookback");
  if (it != request.query.end() && !it->second.empty()) {
    auto d = parseDurationParam(it->second);
    if (!d.ok()) {
      return reject("query_range", "bad_lookback",
                    absl::StrCat("invalid parameter \"lookback\": ", d.status().message()));
    }
    lookback = *d;
  }
  int64_t from = step ? range->start_ms - lookback : range->start_ms;
  std::vector<Series> found = step ? store_.selectWithStaleMarkers(*sel, from, range->end_ms)
                                   : store_.select(*sel, from, range->end_ms);
  if (found.size() > options_.max_series) {
    return reject("query_range", "too_many_series",
                  absl::StrCat(found.size(), " series match; the limit is ", options_.max_series,
                               ": narrow the selector"));
  }
  std::string out = "{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[";
  bool first_series = true;
  for (const Series& s : found) {
    std::string values;
    size_t points = 0;
    auto add = [&](int64_t t, double v) {
      absl::StrAppend(&values, points == 0 ? "" : ",", "[", formatTimestamp(t), ",\"",
                      formatValue(v), "\"]");
      points++;
    };
    if (step) {
      size_t idx = 0;  // first sample after the current step
      for (int64_t t = range->start_ms; t <= range->end_ms; t += *step) {
        while (idx < s.samples.size() && s.samples[idx].timestamp_ms <= t) {
          idx++;
        }
        if (idx == 0) {
          continue;
        }
        const Sample& last = s.samples[idx - 1];
        // A stale marker ends the series: nothing until the next real sample.
        if (last.timestamp_ms > t - lookback && !isStaleNaN(last.value)) {
          add(t, last.value);
        }
      }
    } else {
      for (const Sample& smp : s.samples) {
        if (!isStaleNaN(smp.value)) {
          add(smp.timestamp_ms, smp.value);
        }
      }
    }
    if (points == 0) {
      continue;
    }
    absl::StrAppend(&out, first_series ? "" : ",", "{\"metric\":", metricJson(s.labels),
                    ",\"values\":[", values, "]}");
    first_series = false;
  }
  out += "]}}\n";
  return HttpReply::json(200, std::move(out));
}

void QueryApi::writeMetrics(MetricSink& out) const {
  out.family("vigil_aggregator_query_requests_total", MetricType::kCounter,
             "Requests to the query API (/api/v1/series, /api/v1/query_range).");
  for (const auto& [endpoint, n] : requests_) {
    out.sample("vigil_aggregator_query_requests_total", {{"endpoint", endpoint}},
               static_cast<double>(n));
  }
  out.family("vigil_aggregator_query_rejected_total", MetricType::kCounter,
             "Query API requests answered with 4xx, by reason.");
  for (const auto& [key, n] : rejected_) {
    out.sample("vigil_aggregator_query_rejected_total",
               {{"endpoint", key.first}, {"reason", key.second}}, static_cast<double>(n));
  }
}

}  // namespace vigil::aggregator
