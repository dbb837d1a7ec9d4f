// The Alertmanager API v2 payload the notifier posts (aggregator/notify/notifier.cc): exact
// fields, RFC 3339 times, endsAt for firing versus resolved alerts.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "aggregator/notify/notifier.h"

namespace vigil::aggregator {
namespace {

TEST_CASE("Alertmanager v2 body: labels, annotations, startsAt, endsAt, generatorURL") {
  alerting::Alert firing;
  firing.labels = {{"alertname", "Hot"}, {"node", "n1"}, {"severity", "critical"}};
  firing.annotations = {{"summary", "n1 is hot"}};
  firing.state = alerting::AlertState::kFiring;
  firing.active_since_ms = 1700000000000;
  firing.fired_at_ms = 1700000005123;
  alerting::Alert resolved = firing;
  resolved.state = alerting::AlertState::kResolved;
  resolved.resolved_at_ms = 1700000060000;
  alerting::Alert nodata = firing;
  nodata.state = alerting::AlertState::kNoData;

  NotifierOptions o;
  o.resend_ms = 60000;
  o.generator_url = "http://agg:9471/api/v1/alerts";
  auto body = nlohmann::json::parse(
      Notifier::alertmanagerBody({firing, resolved, nodata}, o, 1700000010000));
  REQUIRE(body.size() == 3);
  CHECK(body[0]["labels"] ==
        nlohmann::json({{"alertname", "Hot"}, {"node", "n1"}, {"severity", "critical"}}));
  CHECK(body[0]["annotations"] == nlohmann::json({{"summary", "n1 is hot"}}));
  CHECK(body[0]["startsAt"] == "2023-11-14T22:13:25.123Z");
  CHECK(body[0]["endsAt"] == "2023-11-14T22:16:30.000Z");  // now + 3 resend intervals
  CHECK(body[0]["generatorURL"] == "http://agg:9471/api/v1/alerts");
  CHECK(body[1]["endsAt"] == "2023-11-14T22:14:20.000Z");  // the resolution time
  CHECK(body[2]["annotations"]["vigil_state"] == "nodata");
  CHECK(rfc3339(0) == "1970-01-01T00:00:00.000Z");
}

}  // namespace
}  // namespace vigil::aggregator
