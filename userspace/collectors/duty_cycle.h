// Window placement for the collectors' sampled modes (syscall hooks, per-message socket hooks):
// hooks that cost every event on the host are attached for a fraction of each interval.
#pragma once

#include <kj/async.h>
#include <kj/time.h>
#include <kj/timer.h>

#include <functional>
#include <random>

namespace vigil {

class DutyCycle {
 public:
  // `fraction` of each `interval`, in (0, 1). With `randomize`, every window after the first
  // opens at a uniformly random point of its interval where the whole window fits, so that work
  // at a fixed phase of the interval (a cron, a scrape) is not always inside or always outside
  // the windows; otherwise each window opens at its interval's start.
  DutyCycle(double fraction, kj::Duration interval, bool randomize)
      : fraction_(fraction), interval_(interval), randomize_(randomize) {}

  // Takes effect at the end of the open window: the next window follows the new interval.
  void setInterval(kj::Duration interval) { interval_ = interval; }
  kj::Duration interval() const { return interval_; }
  kj::Duration windowLength() const;

  // Calls open() at each window's start and close() at its end, forever; the first window opens
  // now. open() must tolerate being called while already open (the first window may have been
  // opened at load) and count its own failures: a failed open is retried at the next window.
  // The caller owns `this`, `open` and `close` for the promise's lifetime.
  kj::Promise<void> run(kj::Timer& timer, std::function<void()>& open,
                        std::function<void()>& close);

 private:
  kj::Promise<void> window(kj::Timer& timer, kj::TimePoint interval_start, kj::Duration offset,
                           std::function<void()>& open, std::function<void()>& close);
  kj::Duration nextOffset();

  double fraction_;
  kj::Duration interval_;
  bool randomize_;
  std::mt19937_64 rng_{std::random_device{}()};
};

}  // namespace vigil
