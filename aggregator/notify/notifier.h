// Sends alerts from the alert engine to Alertmanager (API v2, POST /api/v2/alerts) and to
// generic JSON webhooks, over kj-http on the aggregator's event loop. Every destination gets
// every alert; firing alerts are re-sent periodically, resolved ones for a few minutes.
// Alert storms are bounded by grouping alerts (by labels) and rate-limiting each group;
// held-back notifications are counted, failed sends are counted and retried with backoff.
#pragma once

#include <kj/async-io.h>
#include <kj/compat/http.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "aggregator/alerting/engine.h"
#include "userspace/common/prom_text.h"

namespace vigil::aggregator {

struct NotifierOptions {
  std::vector<std::string> alertmanager_urls;  // base URLs, e.g. http://127.0.0.1:9093
  std::vector<std::string> webhook_urls;       // full URLs
  int64_t resend_ms = 60000;                   // re-send firing alerts this often
  int64_t resolved_resend_for_ms = 5 * 60000;  // keep re-sending resolved alerts this long
  std::vector<std::string> group_by = {"alertname"};
  int group_limit = 50;  // alerts per group per destination per group_window_ms
  int64_t group_window_ms = 60000;
  std::string generator_url = "http://127.0.0.1:9471/api/v1/alerts";
  int64_t max_backoff_ms = 60000;
};

class Notifier {
 public:
  Notifier(kj::Timer& timer, kj::Network& network, NotifierOptions options);
  ~Notifier();

  // Called after every evaluation with the engine's alerts; starts sends that are due.
  void notify(const std::vector<alerting::Alert>& alerts, int64_t now_ms);
  void render(MetricSink& out) const;

  // Alertmanager API v2 body for these alerts (exposed for tests).
  static std::string alertmanagerBody(const std::vector<alerting::Alert>& alerts,
                                      const NotifierOptions& options, int64_t now_ms);

 private:
  struct Sent {
    int64_t last_sent_ms = 0;
    bool resolved = false;
  };
  struct Bucket {
    int64_t window_start_ms = 0;
    int used = 0;
  };
  struct Destination {
    std::string url;
    std::string kind;  // "alertmanager" or "webhook"
    bool in_flight = false;
    int64_t next_try_ms = 0;
    int64_t backoff_ms = 0;
    uint64_t sent_requests = 0;
    uint64_t sent_alerts = 0;
    uint64_t failures = 0;
    uint64_t retries = 0;
    uint64_t suppressed = 0;
    std::map<std::string, Sent> sent;
    std::map<std::string, Bucket> buckets;
  };
  class ErrorHandler final : public kj::TaskSet::ErrorHandler {
   public:
    void taskFailed(kj::Exception&& e) override;
  };

  void send(Destination& d, std::vector<alerting::Alert> batch, int64_t now_ms);
  std::string groupKey(const alerting::Alert& a) const;

  kj::Timer& timer_;
  NotifierOptions options_;
  kj::HttpHeaderTable::Builder table_builder_;
  kj::HttpHeaderId content_type_;
  kj::Own<kj::HttpHeaderTable> table_;
  kj::Own<kj::HttpClient> client_;
  std::vector<std::unique_ptr<Destination>> destinations_;
  ErrorHandler error_handler_;
  kj::TaskSet tasks_;
};

// RFC 3339 UTC with milliseconds.
std::string rfc3339(int64_t unix_ms);

}  // namespace vigil::aggregator
