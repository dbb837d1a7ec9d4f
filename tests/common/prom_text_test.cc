#include "userspace/common/prom_text.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

namespace vigil {
namespace {

TEST_CASE("samples of one family are grouped under one header whatever the order") {
  PromWriter w;
  w.family("a_total", MetricType::kCounter, "A things.");
  w.sample("a_total", {{"x", "1"}}, 1);
  w.sample("b", {}, 2);
  w.sample("a_total", {{"x", "2"}}, 3);
  CHECK(w.finish() ==
        "# HELP a_total A things.\n# TYPE a_total counter\na_total{x=\"1\"} 1\na_total{x=\"2\"} 3\n"
        "# TYPE b untyped\nb 2\n");
}

TEST_CASE("label values are escaped") {
  PromWriter w;
  w.sample("m", {{"comm", "a\"b\\c\nd"}}, 1);
  CHECK(w.finish().find("m{comm=\"a\\\"b\\\\c\\nd\"} 1\n") != std::string::npos);
}

TEST_CASE("values print exactly: integers plain, fractions round-trip, specials by name") {
  CHECK(formatValue(42) == "42");
  CHECK(formatValue(1e15) == "1000000000000000");
  CHECK(formatValue(0.1) == "0.1");
  CHECK(formatValue(0.0038482690000000001) == "0.003848269");
  CHECK(formatValue(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(formatValue(std::nan("")) == "NaN");
}

TEST_CASE("OpenMetrics output drops _total from counter family names and ends with EOF") {
  PromWriter w(true);
  w.family("c_total", MetricType::kCounter, "C.");
  w.sample("c_total", {}, 5);
  CHECK(w.finish() == "# HELP c C.\n# TYPE c counter\nc_total 5\n# EOF\n");
}

TEST_CASE("metric and label names are validated") {
  CHECK(validMetricName("vigil_process_cpu_seconds_total"));
  CHECK(validMetricName("a:b"));
  CHECK_FALSE(validMetricName("1abc"));
  CHECK_FALSE(validMetricName("a-b"));
  CHECK_FALSE(validMetricName(""));
  CHECK(validLabelName("pod_uid"));
  CHECK_FALSE(validLabelName("a:b"));
}

}  // namespace
}  // namespace vigil
