// Window placement of the sampled modes (syscall and per-message socket hooks), on a timer the
// test advances by hand: exact times, no sleeping.
#include "userspace/collectors/duty_cycle.h"

#include <kj/async.h>
#include <kj/timer.h>

#include <functional>
#include <set>
#include <vector>

#include <catch2/catch.hpp>

namespace vigil {
namespace {

struct Window {
  int64_t open_ms = -1, close_ms = -1;
};

// Runs `duty` on a manual timer from 0 to `until_ms` in 1 ms steps; `at_ms` hooks run first.
std::vector<Window> drive(DutyCycle& duty, int64_t until_ms,
                          const std::function<void(int64_t)>& at_ms = nullptr) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  kj::TimerImpl timer(kj::origin<kj::TimePoint>());
  std::vector<Window> windows;
  std::function<void()> open = [&]() {
    windows.push_back(Window{(timer.now() - kj::origin<kj::TimePoint>()) / kj::MILLISECONDS});
  };
  std::function<void()> close = [&]() {
    windows.back().close_ms = (timer.now() - kj::origin<kj::TimePoint>()) / kj::MILLISECONDS;
  };
  auto running = duty.run(timer, open, close).eagerlyEvaluate(nullptr);
  for (int64_t ms = 0; ms <= until_ms; ++ms) {
    if (at_ms) {
      at_ms(ms);
    }
    timer.advanceTo(kj::origin<kj::TimePoint>() + ms * kj::MILLISECONDS);
    loop.run();
  }
  return windows;
}

TEST_CASE("without randomisation each window opens at its interval's start") {
  DutyCycle duty(0.25, 1 * kj::SECONDS, /*randomize=*/false);
  auto w = drive(duty, 3500);
  REQUIRE(w.size() == 4);
  for (size_t i = 0; i < 4; ++i) {
    CHECK(w[i].open_ms == static_cast<int64_t>(i) * 1000);
    CHECK(w[i].close_ms == static_cast<int64_t>(i) * 1000 + 250);
  }
}

TEST_CASE("a new interval keeps the open window and paces the next ones") {
  DutyCycle duty(0.25, 1 * kj::SECONDS, /*randomize=*/false);
  auto w = drive(duty, 5000, [&](int64_t ms) {
    if (ms == 100) {
      duty.setInterval(2 * kj::SECONDS);
    }
  });
  REQUIRE(w.size() == 3);  // at 0, 2000 and 4000: not 1000 or 3000
  CHECK(w[0].open_ms == 0);
  CHECK(w[0].close_ms == 250);  // opened under the 1 s interval
  CHECK(w[1].open_ms == 2000);  // one new interval after the first window's start
  CHECK(w[1].close_ms == 2500);
  CHECK(w[2].open_ms == 4000);
  CHECK(w[2].close_ms == 4500);
}

TEST_CASE("randomised windows fit inside their interval at varying points") {
  DutyCycle duty(0.1, 1 * kj::SECONDS, /*randomize=*/true);
  auto w = drive(duty, 199999);
  REQUIRE(w.size() == 200);  // one window per interval
  CHECK(w[0].open_ms == 0);  // the first window opens at start
  std::set<int64_t> offsets;
  double sum = 0;
  for (size_t i = 1; i < 200; ++i) {
    int64_t start = static_cast<int64_t>(i) * 1000;
    INFO("window " << i << " opens at " << w[i].open_ms);
    CHECK(w[i].open_ms >= start);
    CHECK(w[i].open_ms <= start + 900);  // the whole 100 ms window fits
    CHECK(w[i].close_ms == w[i].open_ms + 100);
    offsets.insert(w[i].open_ms - start);
    sum += static_cast<double>(w[i].open_ms - start);
  }
  CHECK(offsets.size() > 100);  // uniform over 901 ms: 199 draws nearly all distinct
  double mean = sum / 199;
  CHECK(mean > 350);  // uniform on [0, 900] has mean 450 and a standard error of ~18 here
  CHECK(mean < 550);
}

}  // namespace
}  // namespace vigil
