// vigil-bench-loadgen: simulates N agents against a running vigil-aggregator over real Cap'n Proto
// RPC connections on loopback. Each simulated agent connects, registers (Aggregator.register,
// like userspace/agent/uplink.cc) and pushes a synthetic steady-state frame (~500 series,
// bench/common/synth_frame.h) every interval, one push in flight at a time, as the agent does.
// Pushes are spread evenly over the interval.
//
//   vigil-bench-loadgen --addr=127.0.0.1:PORT --agents=N [--interval_ms=10000]
//                       [--warmup_s=12] [--duration_s=30] [--connect_per_s=2000]
//                       [--frame_time=now|synthetic] [--keyframe_every=30]
//                       [--frames=prebuilt|per_push] [--prebuild_threads=2]
//                       [--prebuild_max_mb=1024] [--test_wrong_base_at_seq=0]
//
// Frames are encoded the way userspace/agent/uplink.cc (encodeForSend) sends them: a
// self-contained PACKED_ZSTD keyframe first on every session and then every --keyframe_every
// frames, and in between a delta against the agent's previous frame on the session
// (Encoding.pointerZstdDelta with encodePointerDelta when the aggregator's register answer says
// acceptsPointerDelta, packedZstdDelta otherwise), naming that frame in baseSeq.
// --keyframe_every=1 sends keyframes only (what this tool did before 2026-11-26). A delta the
// aggregator refuses ("frame refused" with a delta_* reason) is handled as the agent does: the
// agent registers again (a refused delta breaks the session) and resends that frame as a
// keyframe; delta_bad and delta_not_accepted switch the agent to keyframes for good. Refusals
// are counted (delta_refused=). Unlike the agent, a delta is sent even when it would not be
// smaller than the keyframe (the agent compares with its spooled, already compressed frame; the
// load generator would have to compress every frame twice to know, and on these frames a delta
// is always several times smaller).
//
// Frames end "now" (wall clock at the push), so the aggregator's series store takes every
// sample as it would from real agents. --frame_time=synthetic keeps the synthetic frame's fixed
// 2023 timestamps (older than any retention window: the series store skips such frames, which
// is what load generators before 2026-11-26 measured without saying so).
//
// Prebuilt frames (--frames=prebuilt, the default). Real agents build and encode their frames on
// their own nodes; this process plays 10,000 of them on the aggregator's own cores, and building
// and delta-encoding every push (about 0.3 ms each) took more than half a core at 1M samples/s,
// CPU the aggregator under test then did not have. So before connecting, it builds every
// simulated agent's frames for the whole run (its own stream: the same synthetic content, its own
// agent id, boot epoch and seq in the bytes, a keyframe first and every --keyframe_every frames,
// pointer deltas against the previous frame in between, exactly as the per-push path encodes
// them), on --prebuild_threads threads, and during the run a push only copies its payload into
// the request. What differs from per-push building, and is printed:
//   - a frame's times are its planned push time (first push of the agent + (seq - 1) intervals,
//     counted from when the prebuild started), not the clock at the push: frames end up to the
//     prebuild's duration plus the connection ramp before they are pushed (frame_age_s_mean);
//     the aggregator only needs them increasing and inside its retention window;
//   - the streams assume the session that starts at seq 1 and is never broken: an agent whose
//     register answer resumes elsewhere, that is refused a delta (it registers again and resends
//     the frame as a keyframe, as before), whose push fails, or that runs past the end of its
//     stream builds its frames per push from then on (agents_left_pool, pushes_built; the build
//     CPU is in build_us_per_*);
//   - the streams take memory (prebuild_bytes): the frames per agent cover the connection ramp,
//     warm-up and window plus two, fewer if they would not fit --prebuild_max_mb.
// --frames=per_push builds and encodes each frame at its push, stamped with the clock then (the
// load generator's behaviour before 2026-11-27).
//
// --test_wrong_base_at_seq=N (a self-test of the path above, for tests/bench): agent 0's delta
// for frame N names frame N - 2 as its base, which the aggregator refuses (delta_unknown_base),
// so that agent resyncs and leaves its prebuilt stream mid-run.
//
// After all agents registered and the warm-up, it measures for duration_s and prints key=value
// lines: acked frames, samples/s, ack latency percentiles (send to response, as seen by this
// process's event loop), late pushes (a push was still unacknowledged when the next was due:
// the aggregator is falling behind) and errors.
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/async.h>
#include <kj/time.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/common/synth_frame.h"
#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"
#include "capnp/vigil.capnp.h"
#include "userspace/common/clock.h"

namespace {

struct Options {
  std::string host = "127.0.0.1";
  uint32_t port = 9470;
  uint32_t agents = 100;
  uint32_t interval_ms = 10000;
  uint32_t warmup_s = 12;
  uint32_t duration_s = 30;
  uint32_t connect_per_s = 2000;
  bool frame_time_now = true;
  uint32_t keyframe_every = 30;
  bool prebuilt = true;  // --frames=prebuilt (see the top of this file)
  uint32_t prebuild_threads = 2;
  uint32_t prebuild_max_mb = 1024;
  uint64_t test_wrong_base_at_seq = 0;  // 0: off
};

struct Stats {
  uint64_t connected = 0;
  uint64_t registered = 0;
  uint64_t connect_failed = 0;
  uint64_t register_failed = 0;
  uint64_t push_failed = 0;
  uint64_t disconnected = 0;
  // Within the measurement window only:
  uint64_t acked = 0;
  uint64_t late = 0;
  uint64_t payload_bytes = 0;
  std::vector<double> latency_ms;
  // Pushes sent in the window, by encoding, the thread CPU spent building and encoding them
  // (synthetic snapshot, toWire, pack, zstd or delta), and their payload bytes.
  uint64_t keyframes = 0;
  uint64_t deltas = 0;
  double keyframe_cpu_s = 0;
  double delta_cpu_s = 0;
  uint64_t keyframe_bytes = 0;
  uint64_t delta_bytes = 0;
  // Over the whole run (not reset at the window): deltas refused and the re-registrations that
  // followed (resyncs), and other refused pushes.
  uint64_t delta_refused = 0;
  uint64_t resyncs = 0;
  uint64_t resync_failed = 0;
  // --frames=prebuilt: pushes in the window sent from the prebuilt streams and built at the push,
  // the age of the pool's frames when pushed, and (whole run) agents that left their stream.
  uint64_t pushes_from_pool = 0;
  uint64_t pushes_built = 0;
  double frame_age_s_sum = 0;
  uint64_t agents_left_pool = 0;
};

// The frames one simulated agent pushes, built before the run (--frames=prebuilt): the payloads
// back to back, frame seq k ending at ends[k - 1], a keyframe or a pointer delta against frame
// k - 1.
struct Stream {
  std::vector<kj::byte> bytes;
  std::vector<uint32_t> ends;
  std::vector<uint8_t> keyframe;

  uint64_t frames() const { return ends.size(); }
  kj::ArrayPtr<const kj::byte> frame(uint64_t seq) const {
    size_t begin = seq == 1 ? 0 : ends[seq - 2];
    return kj::arrayPtr(bytes.data() + begin, ends[seq - 1] - begin);
  }
  void truncate(uint64_t n) {
    if (n < frames()) {
      bytes.resize(ends[n - 1]);
      ends.resize(n);
      keyframe.resize(n);
      bytes.shrink_to_fit();
    }
  }
  size_t memoryBytes() const {
    return sizeof(*this) + bytes.capacity() + ends.capacity() * sizeof(uint32_t) +
           keyframe.capacity();
  }
};

class ErrorCounter final : public kj::TaskSet::ErrorHandler {
 public:
  explicit ErrorCounter(Stats& s) : stats_(s) {}
  void taskFailed(kj::Exception&& e) override {
    stats_.disconnected++;
    if (stats_.disconnected <= 3) {
      fprintf(stderr, "vigil-bench-loadgen: agent task failed: %s\n", e.getDescription().cStr());
    }
  }

 private:
  Stats& stats_;
};

// A control capability the aggregator may call; the simulated agents refuse config.
class NoConfig final : public vigil::wire::AgentControl::Server {
 protected:
  kj::Promise<void> applyConfig(ApplyConfigContext context) override {
    auto r = context.getResults().initResult();
    r.setApplied(false);
    r.setError("load generator");
    return kj::READY_NOW;
  }
};

double selfCpuSeconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

class LoadGen {
 public:
  LoadGen(Options o, kj::AsyncIoContext& io)
      : o_(std::move(o)), io_(io), errors_(stats_), tasks_(errors_) {}

  struct Agent {
    uint32_t index = 0;
    uint64_t seq = 0;
    uint64_t epoch = 0;
    bool in_flight = false;
    // Delta state of the session, as the agent keeps it (uplink.cc Connection).
    bool accepts_delta = false;
    bool accepts_pointer_delta = false;
    bool delta_disabled = false;  // the aggregator could not expand our deltas: keyframes only
    bool resync = false;          // a delta was refused: register again before the next push
    uint32_t registrations = 0;
    bool on_pool = false;  // pushes come from streams_[index] (--frames=prebuilt)
    uint64_t base_seq = 0;
    kj::Array<kj::byte> base_packed;
    uint32_t since_keyframe = 0;
    kj::Own<kj::AsyncIoStream> stream;
    kj::Own<capnp::TwoPartyClient> client;
    vigil::wire::IngestSession::Client session = nullptr;
  };

  void run() {
    auto& timer = io_.provider->getTimer();
    auto addr = io_.provider->getNetwork().parseAddress(o_.host, o_.port).wait(io_.waitScope);
    if (o_.prebuilt) {
      prebuild();
    }
    start_ = timer.now();
    agents_.resize(o_.agents);
    for (uint32_t i = 0; i < o_.agents; ++i) {
      agents_[i] = kj::heap<Agent>();
      agents_[i]->index = i;
      agents_[i]->epoch = 1000000 + i;
      kj::Duration at = (static_cast<int64_t>(i) * 1000000 / o_.connect_per_s) * kj::MICROSECONDS;
      tasks_.add(timer.afterDelay(at).then([this, &addr, i]() { return startAgent(*addr, i); }));
    }
    // Wait until all agents registered (or failed), then warm up, then measure.
    kj::TimePoint deadline = timer.now() + 120 * kj::SECONDS;
    while (stats_.registered + stats_.connect_failed + stats_.register_failed < o_.agents &&
           timer.now() < deadline) {
      timer.afterDelay(100 * kj::MILLISECONDS).wait(io_.waitScope);
    }
    double ramp_s = (timer.now() - start_) / kj::MILLISECONDS / 1000.0;
    timer.afterDelay(o_.warmup_s * kj::SECONDS).wait(io_.waitScope);
    stats_.acked = stats_.late = stats_.payload_bytes = 0;
    stats_.keyframes = stats_.deltas = stats_.keyframe_bytes = stats_.delta_bytes = 0;
    stats_.keyframe_cpu_s = stats_.delta_cpu_s = 0;
    stats_.pushes_from_pool = stats_.pushes_built = 0;
    stats_.frame_age_s_sum = 0;
    stats_.latency_ms.clear();
    measuring_ = true;
    kj::TimePoint m0 = timer.now();
    double cpu0 = selfCpuSeconds();
    printf("measure_start=1\n");
    fflush(stdout);
    timer.afterDelay(o_.duration_s * kj::SECONDS).wait(io_.waitScope);
    double window_s = (timer.now() - m0) / kj::MILLISECONDS / 1000.0;
    measuring_ = false;
    printf("loadgen_cpu_seconds=%.3f\n", selfCpuSeconds() - cpu0);
    report(ramp_s, window_s);
  }

 private:
  kj::Promise<void> startAgent(kj::NetworkAddress& addr, uint32_t i) {
    return addr.connect().then(
        [this, i](kj::Own<kj::AsyncIoStream> stream) {
          stats_.connected++;
          Agent& a = *agents_[i];
          a.stream = kj::mv(stream);
          a.client = kj::heap<capnp::TwoPartyClient>(*a.stream);
          return registerAgent(i).then(
              [this, i]() {
                stats_.registered++;
                // Spread first pushes evenly over one interval.
                int64_t offset_us = static_cast<int64_t>(i) * o_.interval_ms * 1000 / o_.agents;
                return io_.provider->getTimer()
                    .afterDelay(offset_us * kj::MICROSECONDS)
                    .then([this, i]() { return pushLoop(i); });
              },
              [this](kj::Exception&& e) -> kj::Promise<void> {
                stats_.register_failed++;
                return kj::mv(e);
              });
        },
        [this](kj::Exception&& e) -> kj::Promise<void> {
          stats_.connect_failed++;
          return kj::mv(e);
        });
  }

  // Aggregator.register, as the agent does; a new session has no delta base.
  kj::Promise<void> registerAgent(uint32_t i) {
    Agent& a = *agents_[i];
    auto req = a.client->bootstrap().castAs<vigil::wire::Aggregator>().registerRequest();
    auto hello = req.initHello();
    auto id = hello.initAgent();
    std::string name = "bench-" + std::to_string(i);
    id.setAgentId(name);
    id.setNodeName(name);
    id.setVersion("0.1.0-loadgen");
    id.setKernel("6.18");
    hello.setBootEpoch(a.epoch);
    hello.setProtocolVersion(0);
    req.setControl(kj::heap<NoConfig>());
    return req.send().then(
        [this, i](capnp::Response<vigil::wire::Aggregator::RegisterResults> resp) {
          Agent& a = *agents_[i];
          a.session = resp.getSession();
          // Frames the aggregator already holds are done (the seq only moves forward).
          a.seq = std::max(a.seq, resp.getLastSeq());
          a.accepts_delta = resp.getAcceptsDelta();
          a.accepts_pointer_delta = resp.getAcceptsPointerDelta();
          a.resync = false;
          a.base_seq = 0;
          a.base_packed = nullptr;
          a.since_keyframe = 0;
          // The prebuilt stream is the session that starts at seq 1 with a keyframe; a second
          // session, or one that resumes elsewhere, builds per push.
          a.registrations++;
          bool was_on_pool = a.on_pool;
          a.on_pool = o_.prebuilt && a.registrations == 1 && a.seq == 0 &&
                      (o_.keyframe_every <= 1 || (a.accepts_delta && a.accepts_pointer_delta));
          if (o_.prebuilt && !a.on_pool && (was_on_pool || a.registrations == 1)) {
            stats_.agents_left_pool++;
          }
        });
  }

  // Agent i's frame `seq` ends at its planned push time: its first push (spread over one
  // interval, as startAgent does) plus seq - 1 intervals.
  int64_t plannedEndNs(uint32_t i, uint64_t seq) const {
    int64_t offset_ns = static_cast<int64_t>(i) * o_.interval_ms * 1000000 / o_.agents;
    return planned_origin_ns_ + offset_ns +
           static_cast<int64_t>(seq - 1) * o_.interval_ms * 1000000;
  }

  // Agent i's synthetic frame `seq` as a message: its times are the planned ones
  // (--frames=prebuilt, also for frames built at the push then, so an agent's times never go
  // back), the clock now (--frames=per_push), or the synthetic 2023 ones.
  void buildMessage(uint32_t i, uint64_t seq, capnp::MessageBuilder& message,
                    size_t* series = nullptr) const {
    vigil::Snapshot snap;
    vigil::bench::SynthOptions so;
    so.agent_id = "bench-" + std::to_string(i);
    so.boot_epoch = 1000000 + i;
    so.seed = i + 1;
    vigil::bench::buildSyntheticSnapshot(so, seq, snap);
    if (o_.frame_time_now) {
      snap.end_unix_ns = o_.prebuilt ? plannedEndNs(i, seq) : vigil::unixNs();
      snap.start_unix_ns = snap.end_unix_ns - static_cast<int64_t>(o_.interval_ms) * 1000000;
      snap.interval_ms = o_.interval_ms;
    }
    if (series != nullptr) {
      *series = vigil::bench::countSeries(snap);
    }
    vigil::toWire(snap, message);
  }

  // Agent i's stream of n frames, encoded as encodeForSend does for a session that starts at
  // seq 1: a keyframe first (then the agent's keyframe count starts at index mod keyframe_every)
  // and every keyframe_every frames, pointer deltas against the previous frame in between.
  void buildStream(uint32_t i, uint64_t n) {
    Stream& s = streams_[i];
    s.ends.reserve(n);
    s.keyframe.reserve(n);
    kj::Array<kj::byte> prev;
    uint32_t since_keyframe = 0;
    for (uint64_t seq = 1; seq <= n; ++seq) {
      capnp::MallocMessageBuilder message;
      buildMessage(i, seq, message);
      auto packed = vigil::encodeFrame(message, vigil::wire::Encoding::PACKED);
      kj::Array<kj::byte> payload;
      bool keyframe = seq == 1 || o_.keyframe_every <= 1 || since_keyframe + 1 >= o_.keyframe_every;
      if (!keyframe) {
        KJ_IF_MAYBE (d, vigil::encodePointerDelta(prev, packed)) {
          payload = kj::mv(*d);
          since_keyframe++;
        } else {
          keyframe = true;
        }
      }
      if (keyframe) {
        payload = vigil::compressPacked(packed);
        since_keyframe = seq == 1 ? i % o_.keyframe_every : 0;
      }
      s.bytes.insert(s.bytes.end(), payload.begin(), payload.end());
      s.ends.push_back(static_cast<uint32_t>(s.bytes.size()));
      s.keyframe.push_back(keyframe ? 1 : 0);
      prev = kj::mv(packed);
    }
    s.bytes.shrink_to_fit();
  }

  // Builds every agent's stream before the run (see the top of this file).
  void prebuild() {
    // The first agents push from the start of the connection ramp to the end of the window;
    // 10 s more for a slow ramp (registration is answered by the aggregator under test).
    double run_s =
        static_cast<double>(o_.agents) / o_.connect_per_s + 10.0 + o_.warmup_s + o_.duration_s;
    uint64_t per_agent = static_cast<uint64_t>(run_s * 1000.0 / o_.interval_ms) + 2;
    int64_t w0 = vigil::monoNs();
    double cpu0 = selfCpuSeconds();
    planned_origin_ns_ = vigil::unixNs();
    streams_.resize(o_.agents);
    {
      capnp::MallocMessageBuilder message;
      buildMessage(0, 1, message, &series_per_frame_);
    }
    // Agent 0 first: its size says how many frames per agent fit the memory budget.
    buildStream(0, per_agent);
    double bytes_per_frame =
        static_cast<double>(streams_[0].memoryBytes()) / static_cast<double>(per_agent);
    double budget = static_cast<double>(o_.prebuild_max_mb) * 1048576.0;
    uint64_t fit = static_cast<uint64_t>(budget / (bytes_per_frame * o_.agents));
    if (fit < per_agent) {
      fprintf(stderr,
              "vigil-bench-loadgen: %lu frames per agent do not fit --prebuild_max_mb=%u; "
              "prebuilding %lu, later frames are built per push\n",
              per_agent, o_.prebuild_max_mb, std::max<uint64_t>(fit, 1));
      per_agent = std::max<uint64_t>(fit, 1);
      streams_[0].truncate(per_agent);
    }
    uint32_t threads = std::max<uint32_t>(1, o_.prebuild_threads);
    std::vector<std::thread> workers;
    for (uint32_t t = 0; t < threads; ++t) {
      workers.emplace_back([this, t, threads, per_agent]() {
        for (uint32_t i = 1 + t; i < o_.agents; i += threads) {
          buildStream(i, per_agent);
        }
      });
    }
    for (auto& w : workers) {
      w.join();
    }
    prebuild_frames_ = per_agent;
    prebuild_seconds_ = static_cast<double>(vigil::monoNs() - w0) / 1e9;
    prebuild_cpu_seconds_ = selfCpuSeconds() - cpu0;
    for (const Stream& st : streams_) {
      prebuild_bytes_ += st.memoryBytes();
    }
    fprintf(stderr,
            "vigil-bench-loadgen: prebuilt %lu frames for each of %u agents (%.1f MiB) in %.1f s, "
            "%.1f CPU-s\n",
            prebuild_frames_, o_.agents, static_cast<double>(prebuild_bytes_) / 1048576.0,
            prebuild_seconds_, prebuild_cpu_seconds_);
  }

  kj::Promise<void> pushLoop(uint32_t i) {
    auto& timer = io_.provider->getTimer();
    kj::TimePoint next = timer.now() + o_.interval_ms * kj::MILLISECONDS;
    Agent& a = *agents_[i];
    if (a.in_flight) {
      // The previous frame is still unacknowledged: the aggregator is behind. The agent would
      // queue; we skip this interval's frame and count it.
      if (measuring_) {
        stats_.late++;
      }
    } else if (a.resync) {
      // A refused delta broke the session: register again, then resend that frame as a
      // keyframe (sendOne rebuilds it from its seq).
      a.in_flight = true;
      stats_.resyncs++;
      tasks_.add(registerAgent(i).then(
          [this, i]() {
            agents_[i]->in_flight = false;
            sendOne(i);
          },
          [this, i](kj::Exception&& e) {
            agents_[i]->in_flight = false;
            stats_.resync_failed++;
            if (stats_.resync_failed <= 3) {
              fprintf(stderr, "vigil-bench-loadgen: register after a refused delta failed: %s\n",
                      e.getDescription().cStr());
            }
          }));
    } else {
      sendOne(i);
    }
    return timer.atTime(next).then([this, i]() { return pushLoop(i); });
  }

  void sendOne(uint32_t i) {
    Agent& a = *agents_[i];
    a.seq++;
    double cpu0 = vigil::threadCpuSeconds();
    auto req = a.session.pushRequest();
    vigil::wire::Encoding encoding;
    uint64_t base_seq = 0;
    size_t bytes = 0;
    bool from_pool = false;
    if (a.on_pool) {
      const Stream& s = streams_[i];
      // A delta in the stream is based on the previous frame, which must be this session's last
      // push.
      if (a.seq <= s.frames() && (s.keyframe[a.seq - 1] || a.base_seq + 1 == a.seq)) {
        from_pool = true;
      } else {
        // Past the end of the stream, or the chain broke: build per push from here, starting
        // with a keyframe.
        a.on_pool = false;
        a.base_seq = 0;
        a.base_packed = nullptr;
        stats_.agents_left_pool++;
      }
    }
    if (from_pool) {
      const Stream& s = streams_[i];
      bool keyframe = s.keyframe[a.seq - 1] != 0;
      encoding =
          keyframe ? vigil::wire::Encoding::PACKED_ZSTD : vigil::wire::Encoding::POINTER_ZSTD_DELTA;
      base_seq = keyframe ? 0 : a.seq - 1;
      if (!keyframe && i == 0 && a.seq >= 3 && a.seq == o_.test_wrong_base_at_seq) {
        base_seq = a.seq - 2;
      }
      auto payload = s.frame(a.seq);
      req.setPayload(payload);
      bytes = payload.size();
      a.base_seq = a.seq;
      if (measuring_) {
        stats_.pushes_from_pool++;
        stats_.frame_age_s_sum +=
            static_cast<double>(vigil::unixNs() - plannedEndNs(i, a.seq)) / 1e9;
      }
    } else {
      capnp::MallocMessageBuilder message;
      buildMessage(i, a.seq, message, series_per_frame_ == 0 ? &series_per_frame_ : nullptr);
      kj::Array<kj::byte> payload;
      encoding = encodeForSend(a, message, payload, base_seq);
      req.setPayload(payload);
      bytes = payload.size();
      if (measuring_) {
        stats_.pushes_built++;
      }
    }
    req.setSeq(a.seq);
    req.setEncoding(encoding);
    req.setBaseSeq(base_seq);
    if (measuring_) {
      double cpu = vigil::threadCpuSeconds() - cpu0;
      if (encoding == vigil::wire::Encoding::PACKED_ZSTD) {
        stats_.keyframes++;
        stats_.keyframe_cpu_s += cpu;
        stats_.keyframe_bytes += bytes;
      } else {
        stats_.deltas++;
        stats_.delta_cpu_s += cpu;
        stats_.delta_bytes += bytes;
      }
    }
    a.in_flight = true;
    kj::TimePoint sent = io_.provider->getTimer().now();
    bool counted = measuring_;
    uint64_t seq = a.seq;
    tasks_.add(req.send().then(
        [this, i, sent, counted, bytes](capnp::Response<vigil::wire::IngestSession::PushResults>) {
          agents_[i]->in_flight = false;
          if (counted && measuring_) {
            stats_.acked++;
            stats_.payload_bytes += bytes;
            stats_.latency_ms.push_back((io_.provider->getTimer().now() - sent) / kj::MICROSECONDS /
                                        1000.0);
          }
        },
        [this, i, seq](kj::Exception&& e) {
          Agent& a = *agents_[i];
          a.in_flight = false;
          const char* what = e.getDescription().cStr();
          if (e.getType() == kj::Exception::Type::FAILED &&
              strstr(what, "frame refused") != nullptr && strstr(what, "delta_") != nullptr) {
            // As uplink.cc: the aggregator could not use our delta. Register again and resend
            // this frame as a keyframe; after delta_bad or delta_not_accepted, keyframes only.
            stats_.delta_refused++;
            if (strstr(what, "delta_bad") != nullptr ||
                strstr(what, "delta_not_accepted") != nullptr) {
              a.delta_disabled = true;
            }
            if (stats_.delta_refused <= 3) {
              fprintf(stderr, "vigil-bench-loadgen: delta refused, resyncing: %s\n", what);
            }
            a.resync = true;
            if (a.seq == seq) {
              a.seq--;  // sendOne after the resync builds this frame again
            }
            return;
          }
          // Any other failure: the next frame is a keyframe (the push may not have reached the
          // aggregator's session state as our base), built per push.
          a.base_seq = 0;
          a.base_packed = nullptr;
          if (a.on_pool) {
            a.on_pool = false;
            stats_.agents_left_pool++;
          }
          stats_.push_failed++;
          if (stats_.push_failed <= 3) {
            fprintf(stderr, "vigil-bench-loadgen: push failed: %s\n", what);
          }
        }));
  }

  // The payload of the agent's next push, as uplink.cc's encodeForSend chooses it: a keyframe
  // at the start of a session and every keyframe_every frames, a delta against the previous
  // frame of the session otherwise. Keeps this frame's packed bytes as the next base.
  vigil::wire::Encoding encodeForSend(Agent& a, capnp::MessageBuilder& message,
                                      kj::Array<kj::byte>& out, uint64_t& base_seq) {
    base_seq = 0;
    if (o_.keyframe_every <= 1 || !a.accepts_delta || a.delta_disabled) {
      out = vigil::encodeFrame(message, vigil::wire::Encoding::PACKED_ZSTD);
      return vigil::wire::Encoding::PACKED_ZSTD;
    }
    auto packed = vigil::encodeFrame(message, vigil::wire::Encoding::PACKED);
    vigil::wire::Encoding encoding = vigil::wire::Encoding::PACKED_ZSTD;
    if (a.base_seq != 0 && a.base_seq < a.seq && a.since_keyframe + 1 < o_.keyframe_every) {
      if (a.accepts_pointer_delta) {
        KJ_IF_MAYBE (d, vigil::encodePointerDelta(a.base_packed, packed)) {
          out = kj::mv(*d);
          encoding = vigil::wire::Encoding::POINTER_ZSTD_DELTA;
        }
      }
      if (encoding == vigil::wire::Encoding::PACKED_ZSTD) {
        out = vigil::encodeDelta(a.base_packed, packed);
        encoding = vigil::wire::Encoding::PACKED_ZSTD_DELTA;
      }
      base_seq = a.base_seq;
      a.since_keyframe++;
    } else {
      out = vigil::compressPacked(packed);
      // Real agents start at different times, so a fleet's keyframes are spread over the
      // keyframe period; simulated agents all start within one interval, so after the first
      // keyframe of a session each agent starts its count at a different point (keyframes then
      // make up 1/keyframe_every of any window's pushes).
      a.since_keyframe = a.base_seq == 0 ? a.index % o_.keyframe_every : 0;
    }
    a.base_seq = a.seq;
    a.base_packed = kj::mv(packed);
    return encoding;
  }

  void report(double ramp_s, double window_s) {
    std::vector<double>& l = stats_.latency_ms;
    std::sort(l.begin(), l.end());
    auto pct = [&l](double p) -> double {
      if (l.empty()) {
        return 0;
      }
      size_t idx = std::min(l.size() - 1, static_cast<size_t>(p * (l.size() - 1) + 0.5));
      return l[idx];
    };
    double expected = o_.agents * window_s * 1000.0 / o_.interval_ms;
    printf("agents=%u\n", o_.agents);
    printf("connected=%lu\nregistered=%lu\nconnect_failed=%lu\nregister_failed=%lu\n",
           stats_.connected, stats_.registered, stats_.connect_failed, stats_.register_failed);
    printf("ramp_seconds=%.1f\nwindow_seconds=%.1f\n", ramp_s, window_s);
    printf("series_per_frame=%zu\n", series_per_frame_);
    printf("frame_time=%s\n", o_.frame_time_now ? "now" : "synthetic");
    printf("frames_expected=%.0f\nframes_acked=%lu\nlate_pushes=%lu\npush_failed=%lu\n", expected,
           stats_.acked, stats_.late, stats_.push_failed);
    printf("disconnected=%lu\n", stats_.disconnected);
    printf("samples_per_s=%.0f\n", stats_.acked * series_per_frame_ / window_s);
    printf("payload_bytes_per_frame=%.0f\n",
           stats_.acked ? static_cast<double>(stats_.payload_bytes) / stats_.acked : 0.0);
    printf("ack_ms_p50=%.2f\nack_ms_p99=%.2f\nack_ms_max=%.2f\n", pct(0.5), pct(0.99),
           l.empty() ? 0.0 : l.back());
    printf("keyframe_every=%u\n", o_.keyframe_every);
    printf("keyframes_sent=%lu\ndeltas_sent=%lu\n", stats_.keyframes, stats_.deltas);
    printf("keyframe_bytes_mean=%.0f\ndelta_bytes_mean=%.0f\n",
           stats_.keyframes ? static_cast<double>(stats_.keyframe_bytes) / stats_.keyframes : 0.0,
           stats_.deltas ? static_cast<double>(stats_.delta_bytes) / stats_.deltas : 0.0);
    // CPU of this process to build and encode one push (snapshot, toWire, pack, zstd or delta).
    printf("build_us_per_keyframe=%.1f\nbuild_us_per_delta=%.1f\n",
           stats_.keyframes ? stats_.keyframe_cpu_s / stats_.keyframes * 1e6 : 0.0,
           stats_.deltas ? stats_.delta_cpu_s / stats_.deltas * 1e6 : 0.0);
    printf("delta_refused=%lu\nresyncs=%lu\nresync_failed=%lu\n", stats_.delta_refused,
           stats_.resyncs, stats_.resync_failed);
    printf("frames=%s\n", o_.prebuilt ? "prebuilt" : "per_push");
    if (o_.prebuilt) {
      printf(
          "# frames were built before the run, one stream per simulated agent, times planned, "
          "not read at the push (see the top of bench/loadgen/loadgen.cc)\n");
      printf(
          "prebuild_frames_per_agent=%lu\nprebuild_bytes=%zu\nprebuild_mib=%.1f\n"
          "prebuild_seconds=%.1f\nprebuild_cpu_seconds=%.1f\n",
          prebuild_frames_, prebuild_bytes_, static_cast<double>(prebuild_bytes_) / 1048576.0,
          prebuild_seconds_, prebuild_cpu_seconds_);
      printf("pushes_from_pool=%lu\npushes_built=%lu\nagents_left_pool=%lu\n",
             stats_.pushes_from_pool, stats_.pushes_built, stats_.agents_left_pool);
      printf("frame_age_s_mean=%.1f\n",
             stats_.pushes_from_pool
                 ? stats_.frame_age_s_sum / static_cast<double>(stats_.pushes_from_pool)
                 : 0.0);
    }
    bool sustained = stats_.registered == o_.agents && stats_.late == 0 &&
                     stats_.push_failed == 0 && stats_.delta_refused == 0 &&
                     stats_.acked >= 0.98 * expected && pct(0.99) < o_.interval_ms;
    printf("sustained=%d\n", sustained ? 1 : 0);
    fflush(stdout);
  }

  Options o_;
  kj::AsyncIoContext& io_;
  Stats stats_;
  ErrorCounter errors_;
  kj::TaskSet tasks_;
  std::vector<kj::Own<Agent>> agents_;
  kj::TimePoint start_ = kj::origin<kj::TimePoint>();
  bool measuring_ = false;
  size_t series_per_frame_ = 0;
  // --frames=prebuilt: one stream per agent, and what building them took. Planned frame times
  // count from planned_origin_ns_ (CLOCK_REALTIME when the prebuild started).
  std::vector<Stream> streams_;
  int64_t planned_origin_ns_ = 0;
  uint64_t prebuild_frames_ = 0;
  size_t prebuild_bytes_ = 0;
  double prebuild_seconds_ = 0;
  double prebuild_cpu_seconds_ = 0;
};

bool flagValue(const char* arg, const char* name, std::string* out) {
  std::string prefix = std::string("--") + name + "=";
  if (strncmp(arg, prefix.c_str(), prefix.size()) == 0) {
    *out = arg + prefix.size();
    return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string v;
    if (flagValue(argv[i], "addr", &v)) {
      size_t colon = v.rfind(':');
      o.host = v.substr(0, colon);
      o.port = static_cast<uint32_t>(std::stoul(v.substr(colon + 1)));
    } else if (flagValue(argv[i], "agents", &v)) {
      o.agents = static_cast<uint32_t>(std::stoul(v));
    } else if (flagValue(argv[i], "interval_ms", &v)) {
      o.interval_ms = static_cast<uint32_t>(std::stoul(v));
    } else if (flagValue(argv[i], "warmup_s", &v)) {
      o.warmup_s = static_cast<uint32_t>(std::stoul(v));
    } else if (flagValue(argv[i], "duration_s", &v)) {
      o.duration_s = static_cast<uint32_t>(std::stoul(v));
    } else if (flagValue(argv[i], "connect_per_s", &v)) {
      o.connect_per_s = std::max(1ul, std::stoul(v));
    } else if (flagValue(argv[i], "frame_time", &v) && (v == "now" || v == "synthetic")) {
      o.frame_time_now = v == "now";
    } else if (flagValue(argv[i], "keyframe_every", &v)) {
      o.keyframe_every = static_cast<uint32_t>(std::stoul(v));
    } else if (flagValue(argv[i], "frames", &v) && (v == "prebuilt" || v == "per_push")) {
      o.prebuilt = v == "prebuilt";
    } else if (flagValue(argv[i], "prebuild_threads", &v)) {
      o.prebuild_threads = static_cast<uint32_t>(std::stoul(v));
    } else if (flagValue(argv[i], "prebuild_max_mb", &v)) {
      o.prebuild_max_mb = static_cast<uint32_t>(std::stoul(v));
    } else if (flagValue(argv[i], "test_wrong_base_at_seq", &v)) {
      o.test_wrong_base_at_seq = std::stoull(v);
    } else {
      fprintf(stderr,
              "usage: vigil-bench-loadgen --addr=HOST:PORT --agents=N [--interval_ms=10000] "
              "[--warmup_s=12] [--duration_s=30] [--connect_per_s=2000] "
              "[--frame_time=now|synthetic] [--keyframe_every=30] [--frames=prebuilt|per_push] "
              "[--prebuild_threads=2] [--prebuild_max_mb=1024] [--test_wrong_base_at_seq=0]\n");
      return 2;
    }
  }
  if (o.agents == 0 || o.interval_ms == 0 || o.keyframe_every == 0) {
    fprintf(stderr,
            "vigil-bench-loadgen: --agents, --interval_ms and --keyframe_every must be positive\n");
    return 2;
  }
  // One fd per simulated agent plus a few: raise the soft limit to the hard one, then try higher
  // (needs CAP_SYS_RESOURCE). Say what we got; the harness reports an fd-limited run as such.
  rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rlim_t want = o.agents + 64;
  if (rl.rlim_cur < want) {
    rlimit up = rl;
    up.rlim_cur = std::min<rlim_t>(want > rl.rlim_max ? rl.rlim_max : want, rl.rlim_max);
    if (want > rl.rlim_max) {
      rlimit higher{want, want};
      if (setrlimit(RLIMIT_NOFILE, &higher) == 0) {
        up = higher;
      } else {
        fprintf(stderr, "vigil-bench-loadgen: cannot raise RLIMIT_NOFILE above %lu: %s\n",
                static_cast<unsigned long>(rl.rlim_max), strerror(errno));
      }
    }
    setrlimit(RLIMIT_NOFILE, &up);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  printf("nofile_limit=%lu\n", static_cast<unsigned long>(rl.rlim_cur));
  if (rl.rlim_cur < want) {
    printf("fd_limited=1\n");
    fprintf(stderr, "vigil-bench-loadgen: %u agents need %lu fds, limit is %lu\n", o.agents,
            static_cast<unsigned long>(want), static_cast<unsigned long>(rl.rlim_cur));
    return 3;
  }
  auto io = kj::setupAsyncIo();
  LoadGen gen(o, io);
  gen.run();
  // Tearing down thousands of RPC connections one by one measures nothing; the kernel closes them.
  fflush(stdout);
  _exit(0);
}
