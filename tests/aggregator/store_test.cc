#include "aggregator/store.h"

#include <catch2/catch.hpp>

#include "tests/support/test_support.h"

namespace vigil::aggregator {
namespace {

AgentInfo info(const std::string& id) {
  AgentInfo i;
  i.agent_id = id;
  i.node_name = id;
  return i;
}

void frame(Snapshot& s, const std::string& id, uint64_t epoch, uint64_t seq) {
  s.agent = info(id);
  s.boot_epoch = epoch;
  s.seq = seq;
}

TEST_CASE("a reconnecting agent resumes after the last frame applied in its boot epoch") {
  Store store;
  CHECK(store.agentConnected(info("a"), 1, 0) == 0);
  Snapshot s;
  frame(s, "a", 1, 1);
  store.apply(s, 0);
  CHECK(store.agentConnected(info("a"), 1, 0) == 1);  // reconnect resumes after seq 1
  CHECK(store.agentConnected(info("a"), 2, 0) == 0);  // restart: new epoch
}

TEST_CASE("an exited process stays visible until the ttl passes") {
  Store store(StoreOptions{/*process_ttl_ns=*/1000});
  store.agentConnected(info("a"), 1, 0);
  {
    Snapshot s;
    frame(s, "a", 1, 1);
    ProcessStats& p = s.process(42);
    p.comm = "burner";
    p.cpu_ns = 2000000000;
    p.exited = true;
    store.apply(s, 100);
  }
  PromWriter w1;
  store.render(w1, 100);
  auto v = testing::promValue(w1.finish(), "vigil_process_cpu_seconds_total",
                              {{"pid", "42"}, {"comm", "burner"}, {"node", "a"}});
  REQUIRE(v);
  CHECK(*v == 2.0);
  {
    Snapshot s;
    frame(s, "a", 1, 2);
    store.apply(s, 5000);
  }
  PromWriter w2;
  store.render(w2, 5000);
  CHECK_FALSE(testing::promValue(w2.finish(), "vigil_process_cpu_seconds_total", {{"pid", "42"}}));
}

TEST_CASE("agents are reported up while connected and down after") {
  Store store;
  store.agentConnected(info("a"), 1, 0);
  PromWriter w1;
  store.render(w1, 0);
  CHECK(testing::promValue(w1.finish(), "vigil_agent_up", {{"agent_id", "a"}}) == 1.0);
  store.agentDisconnected("a", 10);
  PromWriter w2;
  store.render(w2, 10);
  CHECK(testing::promValue(w2.finish(), "vigil_agent_up", {{"agent_id", "a"}}) == 0.0);
}

}  // namespace
}  // namespace vigil::aggregator
