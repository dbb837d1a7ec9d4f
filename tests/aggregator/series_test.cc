#include "aggregator/series.h"

#include <catch2/catch.hpp>

namespace vigil::aggregator {
namespace {

TEST_CASE("selectors parse metric names and all four matcher kinds") {
  auto s =
      parseSelector(R"(vigil_process_cpu_seconds_total{node="a", comm!="b",pid=~"1.*",x!~"y"})");
  REQUIRE(s.ok());
  CHECK(s->metric == "vigil_process_cpu_seconds_total");
  REQUIRE(s->matchers.size() == 4);
  CHECK(s->matchers[0].matches("a"));
  CHECK_FALSE(s->matchers[1].matches("b"));
  CHECK(s->matchers[2].matches("123"));
  CHECK_FALSE(s->matchers[2].matches("23"));  // anchored
  CHECK(s->matchers[3].matches("z"));
}

TEST_CASE("a bare metric name is a selector") {
  auto s = parseSelector("up");
  REQUIRE(s.ok());
  CHECK(s->metric == "up");
  CHECK(s->matchers.empty());
}

TEST_CASE("bad selectors name the problem") {
  auto bad_regex = parseSelector(R"(m{pid=~"(("})");
  REQUIRE_FALSE(bad_regex.ok());
  CHECK(std::string(bad_regex.status().message()).find("bad regex for label 'pid'") !=
        std::string::npos);
  auto unterminated = parseSelector(R"(m{a="b)");
  REQUIRE_FALSE(unterminated.ok());
  CHECK(std::string(unterminated.status().message()).find("unterminated") != std::string::npos);
  CHECK_FALSE(parseSelector(R"(m{a})").ok());
  CHECK_FALSE(parseSelector("").ok());
  CHECK_FALSE(parseSelector("m x").ok());
}

}  // namespace
}  // namespace vigil::aggregator
