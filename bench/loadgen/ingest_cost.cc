// vigil-bench-ingest-cost: CPU cost of each step the aggregator takes per ingested frame,
// measured in one process without RPC, so the figures hold on a machine shared with other work
// (thread CPU time, not wall time). It builds the load generator's synthetic frames for
// --agents agents and --rounds intervals, encodes them as the load generator does
// (packed + zstd), and then feeds each round through the aggregator's own code:
//
//   expand      (rounds 2+) what aggregator/ingest.cc does on the event loop for a delta push
//               (Encoding.pointerZstdDelta, as agents send 29 frames in 30), with the same code
//               (aggregator/delta_base.h): expand the delta against the session's base, which
//               then becomes the expanded frame's pointer-predicted words (in round 2 the base is
//               still the keyframe's payload and is brought into that form first), and compress
//               the expanded frame at level 1 for the log (its parts: expand.delta, expand.log)
//   decode      decodeFrame (zstd, unpack, validation traversal)
//   decode_expanded  (rounds 2+) decodeFrame of an expanded delta (packed, no zstd): what the
//               commit thread does for a delta push instead of `decode`
//   from_wire   fromWire into a Snapshot
//   store       Store::apply (the fleet view behind /metrics and the fleet API)
//   series      SeriesStore::appendFrame (render to series, Gorilla append)
//   log         IngestLog::appendBatch in batches of --batch frames (SQLite, WAL, fsync)
//
// Round 1 creates every series; the later rounds are the steady state. Prints one line per step
// with microseconds per frame and core-seconds per million samples. The RPC layer (reading the
// socket, the Cap'n Proto RPC messages, acks) is not in these figures; the load-generator runs
// measure it. The load generator's side is printed apart: `encode` (keyframe: build, toWire,
// packed + zstd) and `encode_delta` (build, toWire, pack, encodePointerDelta against the previous
// frame, as the agent's uplink and the load generator do it).
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "aggregator/delta_base.h"
#include "aggregator/ingest_log.h"
#include "aggregator/series_store.h"
#include "aggregator/store.h"
#include "bench/common/synth_frame.h"
#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"
#include "userspace/common/clock.h"

namespace {

struct Step {
  const char* name;
  double seconds = 0;
};

}  // namespace

int main(int argc, char** argv) {
  uint32_t agents = 2000;
  uint32_t rounds = 4;
  uint32_t batch = 256;
  std::string dir = "/tmp/vigil-ingest-cost";
  for (int i = 1; i < argc; ++i) {
    if (sscanf(argv[i], "--agents=%u", &agents) == 1 ||
        sscanf(argv[i], "--rounds=%u", &rounds) == 1 ||
        sscanf(argv[i], "--batch=%u", &batch) == 1) {
      continue;
    }
    if (strncmp(argv[i], "--dir=", 6) == 0) {
      dir = argv[i] + 6;
      continue;
    }
    fprintf(stderr,
            "usage: vigil-bench-ingest-cost [--agents=2000] [--rounds=4] [--batch=256] "
            "[--dir=/tmp/vigil-ingest-cost]\n");
    return 2;
  }
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto log = vigil::aggregator::IngestLog::open(dir + "/ingest.db");
  if (!log.ok()) {
    fprintf(stderr, "%s\n", std::string(log.status().message()).c_str());
    return 1;
  }
  vigil::aggregator::Store store;
  vigil::aggregator::SeriesStore series;
  int64_t t0 = vigil::unixNs() - static_cast<int64_t>(rounds) * 10000000000LL;
  size_t series_per_frame = 0;
  // Per agent: the previous round's packed frame (the load generator's delta base) and the
  // aggregator session's delta base.
  std::vector<kj::Array<kj::byte>> prev_packed(agents);
  int64_t base_bytes = 0;
  std::vector<std::unique_ptr<vigil::aggregator::DeltaBase>> bases;
  for (uint32_t a = 0; a < agents; ++a) {
    bases.push_back(std::make_unique<vigil::aggregator::DeltaBase>(&base_bytes));
  }
  for (uint32_t round = 1; round <= rounds; ++round) {
    // Build and encode this round's frames as the load generator does (measured apart: it is
    // the load generator's cost, not the aggregator's).
    // Agent a's synthetic frame of this round, as the load generator builds it.
    auto buildFrame = [&](uint32_t a, vigil::Snapshot& snap) {
      vigil::bench::SynthOptions so;
      so.agent_id = "bench-" + std::to_string(a);
      so.boot_epoch = 1000000 + a;
      so.seed = a + 1;
      vigil::bench::buildSyntheticSnapshot(so, round, snap);
      snap.end_unix_ns = t0 + static_cast<int64_t>(round) * 10000000000LL;
      snap.start_unix_ns = snap.end_unix_ns - 10000000000LL;
    };
    std::vector<kj::Array<kj::byte>> payloads;
    std::vector<std::string> ids;
    payloads.reserve(agents);
    double e0 = vigil::threadCpuSeconds();
    for (uint32_t a = 0; a < agents; ++a) {
      vigil::Snapshot snap;
      buildFrame(a, snap);
      if (series_per_frame == 0) {
        series_per_frame = vigil::bench::countSeries(snap);
      }
      capnp::MallocMessageBuilder message;
      vigil::toWire(snap, message);
      payloads.push_back(vigil::encodeFrame(message, vigil::wire::Encoding::PACKED_ZSTD));
      ids.push_back("bench-" + std::to_string(a));
    }
    double encode_s = vigil::threadCpuSeconds() - e0;
    // The same frames as deltas against the previous round (load generator side), then expanded
    // as the aggregator's event loop does (aggregator side). Round 1 has no base.
    double encode_delta_s = 0;
    Step expand{"expand"};
    Step decode_expanded{"decode_expanded"};
    // expand's parts (printed as expand.delta, expand.log)
    Step expand_delta{"expand.delta"}, expand_log{"expand.log"};
    double delta_bytes = 0;
    double packed_bytes = 0;  // the frames' packed size
    double log_bytes = 0;     // the log copy of an expanded delta (zstd level 1)
    if (round >= 2) {
      std::vector<kj::Array<kj::byte>> deltas(agents);
      std::vector<kj::Array<kj::byte>> packed(agents);
      double d0 = vigil::threadCpuSeconds();
      for (uint32_t a = 0; a < agents; ++a) {
        vigil::Snapshot snap;
        buildFrame(a, snap);
        capnp::MallocMessageBuilder message;
        vigil::toWire(snap, message);
        packed[a] = vigil::encodeFrame(message, vigil::wire::Encoding::PACKED);
        KJ_IF_MAYBE (d, vigil::encodePointerDelta(prev_packed[a], packed[a])) {
          deltas[a] = kj::mv(*d);
        } else {
          fprintf(stderr, "encodePointerDelta refused the frame of agent %u\n", a);
          return 1;
        }
      }
      encode_delta_s = vigil::threadCpuSeconds() - d0;
      for (uint32_t a = 0; a < agents; ++a) {
        delta_bytes += deltas[a].size();
        packed_bytes += packed[a].size();
        double c0 = vigil::threadCpuSeconds();
        auto expanded = bases[a]->expand(round, round - 1, deltas[a], /*pointer_delta=*/true);
        double cd = vigil::threadCpuSeconds();
        if (!expanded.ok()) {
          fprintf(stderr, "expand: %s\n", std::string(expanded.status().message()).c_str());
          return 1;
        }
        auto log_payload = vigil::compressPacked(*expanded, 1);
        log_bytes += log_payload.size();
        double c1 = vigil::threadCpuSeconds();
        expand.seconds += c1 - c0;
        expand_delta.seconds += cd - c0;
        expand_log.seconds += c1 - cd;
        if (expanded->size() != packed[a].size() ||
            memcmp(expanded->begin(), packed[a].begin(), packed[a].size()) != 0) {
          fprintf(stderr, "expand: agent %u's delta did not expand to its frame\n", a);
          return 1;
        }
        auto frame = vigil::decodeFrame(*expanded, vigil::wire::Encoding::PACKED);
        decode_expanded.seconds += vigil::threadCpuSeconds() - c1;
        if (!frame.ok()) {
          fprintf(stderr, "decode_expanded: %s\n", std::string(frame.status().message()).c_str());
          return 1;
        }
      }
    }
    for (uint32_t a = 0; a < agents; ++a) {
      auto p = vigil::packedBytes(payloads[a], vigil::wire::Encoding::PACKED_ZSTD);
      prev_packed[a] = kj::mv(*p);
      if (round == 1) {
        // ingest.cc keeps a keyframe push's payload as the base.
        bases[a]->setSelfContained(1, vigil::wire::Encoding::PACKED_ZSTD, payloads[a]);
      }
    }
    Step decode{"decode"}, from_wire{"from_wire"}, apply{"store"}, append{"series"}, logged{"log"};
    std::vector<std::shared_ptr<const vigil::Snapshot>> snaps;
    snaps.reserve(agents);
    for (uint32_t a = 0; a < agents; ++a) {
      double c0 = vigil::threadCpuSeconds();
      auto frame = vigil::decodeFrame(payloads[a], vigil::wire::Encoding::PACKED_ZSTD);
      double c1 = vigil::threadCpuSeconds();
      if (!frame.ok()) {
        fprintf(stderr, "decode: %s\n", std::string(frame.status().message()).c_str());
        return 1;
      }
      auto snap = std::make_shared<vigil::Snapshot>();
      vigil::fromWire((*frame)->frame(), *snap);
      frame->reset();
      double c2 = vigil::threadCpuSeconds();
      decode.seconds += c1 - c0;
      from_wire.seconds += c2 - c1;
      snaps.push_back(std::move(snap));
    }
    for (size_t start = 0; start < agents; start += batch) {
      std::vector<vigil::aggregator::AppendRequest> reqs;
      for (size_t a = start; a < std::min<size_t>(agents, start + batch); ++a) {
        vigil::aggregator::AppendRequest r;
        r.agent_id = &ids[a];
        r.boot_epoch = 1000000 + a;
        r.seq = round;
        r.encoding = vigil::wire::Encoding::PACKED_ZSTD;
        r.payload = payloads[a].begin();
        r.size = payloads[a].size();
        r.now_ns = vigil::unixNs();
        reqs.push_back(r);
      }
      double c0 = vigil::threadCpuSeconds();
      absl::Status st = (*log)->appendBatch(reqs);
      logged.seconds += vigil::threadCpuSeconds() - c0;
      if (!st.ok()) {
        fprintf(stderr, "log: %s\n", std::string(st.message()).c_str());
        return 1;
      }
    }
    for (uint32_t a = 0; a < agents; ++a) {
      double c0 = vigil::threadCpuSeconds();
      store.apply(*snaps[a], vigil::unixNs(), /*notify=*/false);
      double c1 = vigil::threadCpuSeconds();
      series.appendFrame(*snaps[a]);
      double c2 = vigil::threadCpuSeconds();
      apply.seconds += c1 - c0;
      append.seconds += c2 - c1;
    }
    double c0 = vigil::threadCpuSeconds();
    snaps.clear();
    double free_s = vigil::threadCpuSeconds() - c0;
    double samples_m = static_cast<double>(agents) * static_cast<double>(series_per_frame) / 1e6;
    double total = free_s;
    printf("round %u (%s), %u frames of %zu series:\n", round,
           round == 1 ? "creates series" : "steady", agents, series_per_frame);
    if (round >= 2) {
      printf("  %-15s %8.1f us/frame  %6.3f core-s per 1M samples (event loop, delta pushes)\n",
             expand.name, expand.seconds / agents * 1e6, expand.seconds / samples_m);
      for (const Step* s : {&expand_delta, &expand_log}) {
        printf("  %-15s %8.1f us/frame  %6.3f core-s per 1M samples\n", s->name,
               s->seconds / agents * 1e6, s->seconds / samples_m);
      }
    }
    for (const Step* s : {&decode, &from_wire, &apply, &append, &logged}) {
      printf("  %-15s %8.1f us/frame  %6.3f core-s per 1M samples\n", s->name,
             s->seconds / agents * 1e6, s->seconds / samples_m);
      total += s->seconds;
    }
    printf("  %-15s %8.1f us/frame  %6.3f core-s per 1M samples\n", "free", free_s / agents * 1e6,
           free_s / samples_m);
    printf("  %-15s %8.1f us/frame  %6.3f core-s per 1M samples\n", "total", total / agents * 1e6,
           total / samples_m);
    if (round >= 2) {
      printf("  %-15s %8.1f us/frame  %6.3f core-s per 1M samples (commit thread, delta pushes)\n",
             decode_expanded.name, decode_expanded.seconds / agents * 1e6,
             decode_expanded.seconds / samples_m);
      // A delta push: expand + decode_expanded instead of decode; the other steps are the same.
      double total_delta = total - decode.seconds + expand.seconds + decode_expanded.seconds;
      printf("  %-15s %8.1f us/frame  %6.3f core-s per 1M samples (a delta push)\n", "total_delta",
             total_delta / agents * 1e6, total_delta / samples_m);
    }
    printf("  %-15s %8.1f us/frame  %6.3f core-s per 1M samples (load generator side)\n", "encode",
           encode_s / agents * 1e6, encode_s / samples_m);
    if (round >= 2) {
      printf(
          "  %-15s %8.1f us/frame  %6.3f core-s per 1M samples (load generator side, %.0f B "
          "per delta)\n",
          "encode_delta", encode_delta_s / agents * 1e6, encode_delta_s / samples_m,
          delta_bytes / agents);
      printf(
          "  frame sizes: packed %.0f B, log copy (zstd level 1) %.0f B, delta %.0f B, delta "
          "base held by the session (pointer-predicted words) %.0f B\n",
          packed_bytes / agents, log_bytes / agents, delta_bytes / agents,
          static_cast<double>(base_bytes) / agents);
    }
  }
  printf("series=%zu series_memory_bytes=%zu\n", series.numSeries(), series.memoryBytes());
  std::filesystem::remove_all(dir);
  return 0;
}
