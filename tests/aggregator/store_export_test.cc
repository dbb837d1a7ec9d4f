// /metrics export of the aggregator's Store: process top-N per agent.
#include <catch2/catch.hpp>

#include "aggregator/store.h"
#include "tests/support/test_support.h"

namespace vigil::aggregator {
namespace {

void frameWith(Snapshot& s, uint64_t seq, const std::vector<std::pair<uint32_t, uint64_t>>& cpu) {
  s.agent.agent_id = "a";
  s.agent.node_name = "a";
  s.boot_epoch = 1;
  s.seq = seq;
  for (const auto& [pid, ns] : cpu) {
    ProcessStats& p = s.process(pid);
    p.comm = "p" + std::to_string(pid);
    p.cpu_ns = ns;
  }
}

TEST_CASE("/metrics shows the top-N processes by CPU over the last interval and counts the rest") {
  StoreOptions o;
  o.max_processes_per_agent = 2;
  Store store(o);
  {
    Snapshot s;
    // pid 1 has the most total CPU, but is idle in the second interval.
    frameWith(s, 1, {{1, 100000000000}, {2, 1000}, {3, 1000}, {4, 1000}});
    store.apply(s, 1);
  }
  {
    Snapshot s;
    frameWith(s, 2, {{1, 100000000000}, {2, 501000}, {3, 2001000}, {4, 1000}});
    store.apply(s, 2);
  }
  PromWriter w;
  store.render(w, 3);
  std::string text = w.finish();
  auto has = [&](const std::string& pid) {
    return testing::promValue(text, "vigil_process_cpu_seconds_total", {{"pid", pid}}).has_value();
  };
  CHECK(has("3"));
  CHECK(has("2"));
  CHECK_FALSE(has("1"));
  CHECK_FALSE(has("4"));
  CHECK(testing::promValue(text, "vigil_aggregator_processes_not_exposed", {{"agent_id", "a"}}) ==
        2.0);

  // 0 means no limit.
  Store all(StoreOptions{o.process_ttl_ns, 0});
  Snapshot s;
  frameWith(s, 1, {{1, 1}, {2, 2}, {3, 3}});
  all.apply(s, 1);
  PromWriter w2;
  all.render(w2, 2);
  CHECK(testing::promValue(w2.finish(), "vigil_aggregator_processes_not_exposed",
                           {{"agent_id", "a"}}) == 0.0);
}

}  // namespace
}  // namespace vigil::aggregator
