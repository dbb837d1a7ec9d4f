#include "aggregator/notify/notifier.h"

#include <time.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "userspace/common/log.h"

namespace vigil::aggregator {

using alerting::Alert;
using alerting::AlertState;

std::string rfc3339(int64_t unix_ms) {
  time_t secs = unix_ms / 1000;
  struct tm tm;
  gmtime_r(&secs, &tm);
  return absl::StrFormat("%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                         static_cast<int>(unix_ms % 1000));
}

namespace {

nlohmann::json alertJson(const Alert& a, const NotifierOptions& o, int64_t now_ms) {
  nlohmann::json j;
  j["labels"] = nlohmann::json::object();
  for (const auto& [k, v] : a.labels) {
    j["labels"][k] = v;
  }
  j["annotations"] = nlohmann::json::object();
  for (const auto& [k, v] : a.annotations) {
    j["annotations"][k] = v;
  }
  if (a.state == AlertState::kNoData) {
    j["annotations"]["vigil_state"] = "nodata";
  }
  j["startsAt"] = rfc3339(a.fired_at_ms ? a.fired_at_ms : a.active_since_ms);
  // A firing alert ends unless re-sent (three resend periods from now), as Prometheus does.
  j["endsAt"] =
      rfc3339(a.state == AlertState::kResolved ? a.resolved_at_ms : now_ms + 3 * o.resend_ms);
  j["generatorURL"] = o.generator_url;
  return j;
}

}  // namespace

void Notifier::ErrorHandler::taskFailed(kj::Exception&& e) {
  VIGIL_LOG_WARN("notifier task failed: %s", e.getDescription().cStr());
}

Notifier::Notifier(kj::Timer& timer, kj::Network& network, NotifierOptions options)
    : timer_(timer),
      options_(std::move(options)),
      content_type_(table_builder_.add("Content-Type")),
      table_(table_builder_.build()),
      client_(kj::newHttpClient(timer, *table_, network, nullptr)),
      tasks_(error_handler_) {
  for (const std::string& u : options_.alertmanager_urls) {
    auto d = std::make_unique<Destination>();
    std::string base = u;
    while (!base.empty() && base.back() == '/') {
      base.pop_back();
    }
    d->url = base + "/api/v2/alerts";
    d->kind = "alertmanager";
    destinations_.push_back(std::move(d));
  }
  for (const std::string& u : options_.webhook_urls) {
    auto d = std::make_unique<Destination>();
    d->url = u;
    d->kind = "webhook";
    destinations_.push_back(std::move(d));
  }
}

Notifier::~Notifier() = default;

std::string Notifier::groupKey(const Alert& a) const {
  std::string key;
  for (const std::string& g : options_.group_by) {
    std::string v;
    for (const auto& kv : a.labels) {
      if (kv.first == g) {
        v = kv.second;
      }
    }
    absl::StrAppend(&key, g, "=", v, ",");
  }
  return key;
}

std::string Notifier::alertmanagerBody(const std::vector<Alert>& alerts,
                                       const NotifierOptions& options, int64_t now_ms) {
  nlohmann::json arr = nlohmann::json::array();
  for (const Alert& a : alerts) {
    arr.push_back(alertJson(a, options, now_ms));
  }
  return arr.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void Notifier::notify(const std::vector<Alert>& alerts, int64_t now_ms) {
  for (auto& dp : destinations_) {
    Destination& d = *dp;
    // Forget alerts the engine no longer lists.
    for (auto it = d.sent.begin(); it != d.sent.end();) {
      bool present = std::any_of(alerts.begin(), alerts.end(),
                                 [&](const Alert& a) { return a.fingerprint == it->first; });
      it = present ? std::next(it) : d.sent.erase(it);
    }
    if (d.in_flight || now_ms < d.next_try_ms) {
      continue;
    }
    std::vector<std::pair<bool, const Alert*>> due;  // (state change, alert)
    for (const Alert& a : alerts) {
      if (a.state == AlertState::kPending) {
        continue;
      }
      bool resolved = a.state == AlertState::kResolved;
      auto it = d.sent.find(a.fingerprint);
      if (it == d.sent.end() || it->second.resolved != resolved) {
        if (resolved && now_ms - a.resolved_at_ms > options_.resolved_resend_for_ms) {
          continue;
        }
        due.emplace_back(true, &a);
      } else if (now_ms - it->second.last_sent_ms >= options_.resend_ms &&
                 (!resolved || now_ms - a.resolved_at_ms < options_.resolved_resend_for_ms)) {
        due.emplace_back(false, &a);
      }
    }
    std::stable_sort(due.begin(), due.end(),
                     [](const auto& x, const auto& y) { return x.first && !y.first; });
    // The group's budget is charged only for delivered alerts (see send), so a failed post
    // does not use up the group's minute.
    std::vector<Alert> batch;
    std::map<std::string, int> taken;
    for (const auto& [change, a] : due) {
      std::string key = groupKey(*a);
      Bucket& b = d.buckets[key];
      if (now_ms - b.window_start_ms >= options_.group_window_ms) {
        b.window_start_ms = now_ms;
        b.used = 0;
      }
      if (b.used + taken[key] >= options_.group_limit) {
        d.suppressed++;  // held back; due again next round
        continue;
      }
      taken[key]++;
      batch.push_back(*a);
    }
    for (auto it = d.buckets.begin(); it != d.buckets.end();) {
      it = now_ms - it->second.window_start_ms > 10 * options_.group_window_ms ? d.buckets.erase(it)
                                                                               : std::next(it);
    }
    if (!batch.empty()) {
      send(d, std::move(batch), now_ms);
    }
  }
}

void Notifier::send(Destination& d, std::vector<Alert> batch, int64_t now_ms) {
  std::string body;
  if (d.kind == "alertmanager") {
    body = alertmanagerBody(batch, options_, now_ms);
  } else {
    // Webhook: the alerts grouped as the rate limiter grouped them.
    std::map<std::string, nlohmann::json> groups;
    for (const Alert& a : batch) {
      nlohmann::json& g = groups[groupKey(a)];
      if (g.is_null()) {
        g["labels"] = nlohmann::json::object();
        for (const std::string& l : options_.group_by) {
          for (const auto& kv : a.labels) {
            if (kv.first == l) {
              g["labels"][l] = kv.second;
            }
          }
        }
        g["alerts"] = nlohmann::json::array();
      }
      nlohmann::json j = alertJson(a, options_, now_ms);
      j["status"] = a.state == AlertState::kResolved ? "resolved" : "firing";
      j["state"] = alerting::alertStateName(a.state);
      j["value"] = std::isfinite(a.value) ? a.value : 0.0;
      g["alerts"].push_back(std::move(j));
    }
    nlohmann::json doc;
    doc["receiver"] = "vigil";
    doc["groups"] = nlohmann::json::array();
    for (auto& [k, g] : groups) {
      doc["groups"].push_back(std::move(g));
    }
    body = doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  struct Mark {
    std::string fingerprint;
    std::string group;
    bool resolved;
  };
  std::vector<Mark> marks;
  for (const Alert& a : batch) {
    marks.push_back({a.fingerprint, groupKey(a), a.state == AlertState::kResolved});
  }
  d.in_flight = true;
  kj::HttpHeaders headers(*table_);
  headers.set(content_type_, "application/json");
  auto req = client_->request(kj::HttpMethod::POST, d.url, headers, body.size());
  auto body_owned = kj::heapString(body);
  auto write = req.body->write(body_owned.begin(), body_owned.size());
  Destination* dp = &d;
  auto done =
      write.attach(kj::mv(req.body), kj::mv(body_owned))
          .then([response = kj::mv(req.response)]() mutable { return kj::mv(response); })
          .then([](kj::HttpClient::Response r) {
            int status = r.statusCode;
            return r.body->readAllText().attach(kj::mv(r.body)).then([status](kj::String text) {
              return std::make_pair(status, std::string(text.cStr()));
            });
          });
  auto timed = timer_.timeoutAfter(10 * kj::SECONDS, kj::mv(done));
  tasks_.add(timed.then(
      [this, dp, marks = std::move(marks), now_ms](std::pair<int, std::string> r) {
        dp->in_flight = false;
        if (r.first >= 200 && r.first < 300) {
          dp->sent_requests++;
          dp->sent_alerts += marks.size();
          dp->backoff_ms = 0;
          for (const Mark& m : marks) {
            dp->sent[m.fingerprint] = Sent{now_ms, m.resolved};
            dp->buckets[m.group].used++;
          }
          return;
        }
        dp->failures++;
        dp->retries++;
        dp->backoff_ms =
            std::min(options_.max_backoff_ms, std::max<int64_t>(1000, dp->backoff_ms * 2));
        dp->next_try_ms = now_ms + dp->backoff_ms;
        VIGIL_LOG_WARN("%s %s answered %d: %s (retry in %d ms)", dp->kind, dp->url, r.first,
                       r.second.substr(0, 200), dp->backoff_ms);
      },
      [this, dp, now_ms](kj::Exception&& e) {
        dp->in_flight = false;
        dp->failures++;
        dp->retries++;
        dp->backoff_ms =
            std::min(options_.max_backoff_ms, std::max<int64_t>(1000, dp->backoff_ms * 2));
        dp->next_try_ms = now_ms + dp->backoff_ms;
        VIGIL_LOG_WARN("%s %s: %s (retry in %d ms)", dp->kind, dp->url, e.getDescription().cStr(),
                       dp->backoff_ms);
      }));
}

void Notifier::render(MetricSink& out) const {
  out.family("vigil_notifier_requests_total", MetricType::kCounter,
             "Notification requests accepted (2xx) by a destination.");
  out.family("vigil_notifier_alerts_sent_total", MetricType::kCounter,
             "Alerts delivered (one alert in one accepted request).");
  out.family("vigil_notifier_failures_total", MetricType::kCounter,
             "Notification requests that failed (connect error, timeout or non-2xx); retried.");
  out.family("vigil_notifier_suppressed_total", MetricType::kCounter,
             "Alert notifications held back by the per-group rate limit (sent later).");
  for (const auto& d : destinations_) {
    Labels l = {{"kind", d->kind}, {"url", d->url}};
    out.sample("vigil_notifier_requests_total", l, static_cast<double>(d->sent_requests));
    out.sample("vigil_notifier_alerts_sent_total", l, static_cast<double>(d->sent_alerts));
    out.sample("vigil_notifier_failures_total", l, static_cast<double>(d->failures));
    out.sample("vigil_notifier_suppressed_total", l, static_cast<double>(d->suppressed));
  }
}

}  // namespace vigil::aggregator
