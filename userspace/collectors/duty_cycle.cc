#include "userspace/collectors/duty_cycle.h"

#include <cstdint>

namespace vigil {

kj::Duration DutyCycle::windowLength() const {
  int64_t interval_ns = interval_ / kj::NANOSECONDS;
  return static_cast<int64_t>(static_cast<double>(interval_ns) * fraction_) * kj::NANOSECONDS;
}

kj::Duration DutyCycle::nextOffset() {
  if (!randomize_) {
    return 0 * kj::NANOSECONDS;
  }
  int64_t slack_ns = (interval_ - windowLength()) / kj::NANOSECONDS;
  if (slack_ns <= 0) {
    return 0 * kj::NANOSECONDS;
  }
  std::uniform_int_distribution<int64_t> offset(0, slack_ns);
  return offset(rng_) * kj::NANOSECONDS;
}

kj::Promise<void> DutyCycle::run(kj::Timer& timer, std::function<void()>& open,
                                 std::function<void()>& close) {
  return window(timer, timer.now(), 0 * kj::NANOSECONDS, open, close);
}

kj::Promise<void> DutyCycle::window(kj::Timer& timer, kj::TimePoint interval_start,
                                    kj::Duration offset, std::function<void()>& open,
                                    std::function<void()>& close) {
  kj::TimePoint opens_at = interval_start + offset;
  return timer.atTime(opens_at).then([this, &timer, interval_start, opens_at, &open, &close]() {
    open();
    // Closes relative to when the window was due to open, not to when the event loop got to it,
    // so a busy loop does not stretch windows (the collectors measure the attached time anyway).
    return timer.atTime(opens_at + windowLength())
        .then([this, &timer, interval_start, &open, &close]() {
          close();
          auto next = interval_start + interval_;
          if (next < timer.now()) {
            next = timer.now();  // fell behind (suspend, stall): keep the cadence from now
          }
          return window(timer, next, nextOffset(), open, close);
        });
  });
}

}  // namespace vigil
