// vigil-bench-wire: bytes per sample on the wire for steady-state frames as the agent sends them
// (the payload of IngestSession.push) against JSON and JSON+gzip of the same data.
//
//   vigil-bench-wire [--seq=N] [--processes=N] [--containers=N]   synthetic frames (~500 series)
//   vigil-bench-wire --live [--interval_ms=1000]                  this host's frames, from the
//                                                                 agent's own collectors (root)
//   common: [--rounds=N] (deltas measured, default 5) [--keyframe_every=K] (default 30)
//           [--no_events] (samples only: events left out of the frames and the JSON alike)
//           [--delta_level=N] (zstd level of deltas, default 3, as the agent)
//           [--legacy_units] (the frame as agents before ProcessSample.cpuUs / Metric.scaled
//           wrote it: on-CPU time in ns, float64 metric values, containers and histograms in
//           the collectors' order; the JSON then carries ns too)
//           [--experiments [--fold_keep=K]] (exp_* lines: where the events' bytes go, column by
//           column, and folding of short-lived processes beyond the K busiest, default 32; see
//           runExperiments)
//   WIRE_DEBUG=1 prints each delta and the last delta's size with each part of the frame left out.
//
// It builds rounds+1 consecutive frames. The keyframe is packed + zstd of the last one; each
// delta is a frame against the one before it as the agent sends it (encodePointerDelta, checked
// to expand back byte for byte; byte_delta_* is the older encodeDelta on the same frames, and
// event_list_* the same frames with their events as the Frame.events list, the form of agents
// before Frame.eventColumns; legacy_* the frame form and delta of agents before ProcessSample.cpuUs
// / Metric.scaled, events as a list too); the steady state is
// (keyframe + (K-1) x mean delta) / K, what a session sends on average with a keyframe every K
// frames.
//
// Two JSON shapes of the last frame, both generous to JSON: "structured" mirrors the frame (one
// object per process with named fields, zero fields omitted, the way a JSON agent would ship it);
// "series" is a flat list of {name, labels, value}, one per Prometheus series. Output is
// key=value lines.
#include <capnp/compat/json.h>
#include <capnp/serialize.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "bench/common/synth_frame.h"
#include "bench/wire/fold_short_lived.h"
#include "capnp/event_columns.h"
#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"
#include "nlohmann/json.hpp"
#include "userspace/collectors/registry.h"
#include "userspace/common/frame_metrics.h"
#include "userspace/common/prom_text.h"

namespace {

using nlohmann::json;

std::string gzip(const std::string& in) {
  z_stream zs = {};
  // windowBits 15 + 16: gzip framing; level 6 is gzip's default.
  if (deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return {};
  }
  std::string out(deflateBound(&zs, in.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

json labelsJson(const vigil::Labels& labels) {
  json o = json::object();
  for (const auto& [k, v] : labels) {
    o[k] = v;
  }
  return o;
}

template <typename T>
void putIf(json& o, const char* key, T v) {
  if (v != T{}) {
    o[key] = v;
  }
}

// Events are data the frame carries too: Cap'n Proto's own JSON codec, fields at their default
// omitted (as for zero counters below).
json eventsJson(const vigil::Snapshot& s) {
  json events = json::array();
  capnp::JsonCodec codec;
  codec.setHasMode(capnp::HasMode::NON_DEFAULT);
  for (const auto& e : s.events) {
    events.push_back(json::parse(codec.encode(e.getReader()).cStr()));
  }
  return events;
}

// folded: for --experiments, the aggregates of folded short-lived processes (pseudo-pid ->
// processes folded into it); they get a "folded_processes" field and no pid. With `folded` given
// (even empty) processes are written in pid order, as in the frame, so a folded and an unfolded
// JSON differ only in the folding, not in hash-map order.
json structuredJson(const vigil::Snapshot& s, bool cpu_in_ns = false,
                    const absl::flat_hash_map<uint32_t, uint64_t>* folded = nullptr) {
  json f;
  f["agent"] = {{"agent_id", s.agent.agent_id},
                {"node_name", s.agent.node_name},
                {"version", s.agent.version},
                {"kernel", s.agent.kernel},
                {"labels", labelsJson(s.agent.labels)}};
  f["boot_epoch"] = s.boot_epoch;
  f["seq"] = s.seq;
  f["interval_start_ns"] = s.start_unix_ns;
  f["interval_end_ns"] = s.end_unix_ns;
  f["interval_ms"] = s.interval_ms;
  f["syscall_duty_cycle"] = s.syscall_duty_cycle;
  f["config_version"] = s.config_version;
  json procs = json::array();
  std::vector<std::pair<uint32_t, const vigil::ProcessStats*>> ordered;
  for (const auto& [pid, p] : s.processes) {
    ordered.emplace_back(pid, &p);
  }
  if (folded != nullptr) {
    std::sort(ordered.begin(), ordered.end());
  }
  for (const auto& [pid, pp] : ordered) {
    const vigil::ProcessStats& p = *pp;
    json o;
    uint64_t folded_count = 0;
    if (folded != nullptr) {
      auto it = folded->find(pid);
      folded_count = it == folded->end() ? 0 : it->second;
    }
    if (folded_count > 0) {
      o["folded_processes"] = folded_count;
    } else {
      o["pid"] = p.pid;
    }
    o["comm"] = p.comm;
    putIf(o, "cgroup_id", p.cgroup_id);
    putIf(o, "cmdline", p.cmdline);
    putIf(o, "container_id", p.container_id);
    // The precision the frame carries (ProcessSample.cpuUs); cpu_in_ns for the agent's own ns.
    if (cpu_in_ns) {
      putIf(o, "cpu_ns", p.cpu_ns);
    } else {
      putIf(o, "cpu_us", p.cpu_ns / 1000);
    }
    putIf(o, "voluntary_switches", p.voluntary_switches);
    putIf(o, "involuntary_switches", p.involuntary_switches);
    putIf(o, "syscalls", p.syscalls);
    putIf(o, "syscall_errors", p.syscall_errors);
    if (!p.top_errnos.empty()) {
      json e = json::array();
      for (const auto& [err, n] : p.top_errnos) {
        e.push_back({{"errno", err}, {"count", n}});
      }
      o["top_errnos"] = e;
    }
    putIf(o, "tcp_tx_bytes", p.tcp_tx_bytes);
    putIf(o, "tcp_rx_bytes", p.tcp_rx_bytes);
    putIf(o, "udp_tx_bytes", p.udp_tx_bytes);
    putIf(o, "udp_rx_bytes", p.udp_rx_bytes);
    putIf(o, "tcp_retransmits", p.tcp_retransmits);
    putIf(o, "tcp_active_opens", p.tcp_active_opens);
    putIf(o, "tcp_passive_opens", p.tcp_passive_opens);
    putIf(o, "tcp_connect_failures", p.tcp_connect_failures);
    putIf(o, "tcp_resets_sent", p.tcp_resets_sent);
    putIf(o, "tcp_resets_received", p.tcp_resets_received);
    putIf(o, "block_read_bytes", p.block_read_bytes);
    putIf(o, "block_write_bytes", p.block_write_bytes);
    putIf(o, "block_read_ops", p.block_read_ops);
    putIf(o, "block_write_ops", p.block_write_ops);
    putIf(o, "tcp_closes", p.tcp_closes);
    putIf(o, "tcp_connect_refused", p.tcp_connect_refused);
    putIf(o, "tcp_connect_timeouts", p.tcp_connect_timeouts);
    putIf(o, "tcp_connects", p.tcp_connects);
    if (cpu_in_ns) {
      putIf(o, "tcp_connect_latency_sum_ns", p.tcp_connect_latency_sum_ns);
    } else {
      putIf(o, "tcp_connect_latency_sum_us", p.tcp_connect_latency_sum_ns / 1000);
    }
    putIf(o, "exited", p.exited);
    procs.push_back(o);
  }
  f["processes"] = procs;
  json conts = json::array();
  for (const auto& c : s.containers) {
    json o;
    o["cgroup_id"] = c.cgroup_id;
    o["cgroup_path"] = c.cgroup_path;
    putIf(o, "container_id", c.container_id);
    putIf(o, "runtime", c.runtime);
    putIf(o, "pod_uid", c.pod_uid);
    putIf(o, "qos_class", c.qos_class);
    putIf(o, "systemd_unit", c.systemd_unit);
    if (cpu_in_ns) {
      putIf(o, "cpu_ns", c.cpu_ns);
    } else {
      putIf(o, "cpu_us", c.cpu_ns / 1000);
    }
    putIf(o, "syscalls", c.syscalls);
    putIf(o, "syscall_errors", c.syscall_errors);
    putIf(o, "tcp_tx_bytes", c.tcp_tx_bytes);
    putIf(o, "tcp_rx_bytes", c.tcp_rx_bytes);
    putIf(o, "block_read_bytes", c.block_read_bytes);
    putIf(o, "block_write_bytes", c.block_write_bytes);
    putIf(o, "processes", c.processes);
    conts.push_back(o);
  }
  f["containers"] = conts;
  for (const auto* list : {&s.host, &s.self}) {
    json arr = json::array();
    for (const auto& m : *list) {
      arr.push_back({{"name", m.name}, {"labels", labelsJson(m.labels)}, {"value", m.value}});
    }
    f[list == &s.host ? "host" : "self"] = arr;
  }
  json hists = json::array();
  for (const auto& h : s.histograms) {
    hists.push_back({{"name", h.name},
                     {"labels", labelsJson(h.labels)},
                     {"unit_ns", h.unit_ns},
                     {"buckets", h.buckets},
                     {"count", h.count},
                     {"sum", h.sum_units}});
  }
  f["histograms"] = hists;
  json cols = json::array();
  for (const auto& c : s.collectors) {
    json o = {{"name", c.name}, {"up", c.up}};
    putIf(o, "reason", c.reason);
    cols.push_back(o);
  }
  f["collectors"] = cols;
  f["events"] = eventsJson(s);
  return f;
}

// Parses the Prometheus text of the snapshot into [{name, labels, value}].
json seriesJson(const vigil::Snapshot& s, size_t* count) {
  vigil::PromWriter w;
  vigil::writeSnapshotMetrics(s, vigil::ExpositionOptions{}, w);
  std::string text = w.finish();
  json arr = json::array();
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) {
      end = text.size();
    }
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#') {
      continue;
    }
    size_t sp = line.rfind(' ');
    std::string head = line.substr(0, sp);
    double value = 0;
    (void)absl::SimpleAtod(line.substr(sp + 1), &value);
    json o;
    size_t brace = head.find('{');
    o["name"] = head.substr(0, brace);
    json labels = json::object();
    if (brace != std::string::npos) {
      // key="value",... with escapes only for \\, \" and \n.
      size_t i = brace + 1;
      while (i < head.size() && head[i] != '}') {
        size_t eq = head.find('=', i);
        std::string key = head.substr(i, eq - i);
        std::string val;
        size_t j = eq + 2;
        while (j < head.size() && head[j] != '"') {
          if (head[j] == '\\' && j + 1 < head.size()) {
            j++;
          }
          val += head[j++];
        }
        labels[key] = val;
        i = j + 1;
        if (i < head.size() && head[i] == ',') {
          i++;
        }
      }
    }
    o["labels"] = labels;
    o["value"] = value;
    arr.push_back(o);
  }
  *count = arr.size();
  return arr;
}

bool flagValue(const std::string& arg, const char* name, std::string* out) {
  std::string prefix = std::string("--") + name + "=";
  if (arg.rfind(prefix, 0) == 0) {
    *out = arg.substr(prefix.size());
    return true;
  }
  return false;
}

// What a sequence of packed frames costs on the wire, as the agent would send it: the last frame
// as a keyframe (packed + zstd), each frame after the first as a pointer delta against the one
// before it (encodePointerDelta refuses a delta that does not expand back to the frame), and the
// steady state of one keyframe per keyframe_every frames.
struct WireCost {
  double keyframe = 0;
  double delta_avg = 0;
  double steady = 0;
};

bool wireCost(const std::vector<kj::Array<kj::byte>>& packed, int delta_level, int keyframe_every,
              WireCost* cost) {
  double sum = 0;
  for (size_t i = 1; i < packed.size(); ++i) {
    KJ_IF_MAYBE (d, vigil::encodePointerDelta(packed[i - 1], packed[i], delta_level)) {
      sum += static_cast<double>(d->size());
    } else {
      return false;
    }
  }
  cost->keyframe = static_cast<double>(vigil::compressPacked(packed.back()).size());
  cost->delta_avg = sum / static_cast<double>(packed.size() - 1);
  cost->steady = (cost->keyframe + (keyframe_every - 1) * cost->delta_avg) / keyframe_every;
  return true;
}

// The packed frame of `s` as the agent encodes it (in `form`), optionally without its events, and
// with the processes replaced by `processes` when given (the folded form). An aggregate's folded
// count travels in ProcessSample.cpuNs, a UInt64 of the data section current agents leave 0: the
// stand-in for the new field a shipped form would add, so its bytes are counted.
kj::Array<kj::byte> packFrame(vigil::Snapshot& s, bool with_events,
                              absl::flat_hash_map<uint32_t, vigil::ProcessStats>* processes,
                              const absl::flat_hash_map<uint32_t, uint64_t>* folded,
                              vigil::WireForm form = vigil::WireForm::kCurrent) {
  if (processes != nullptr) {
    std::swap(s.processes, *processes);
  }
  std::vector<capnp::Orphan<vigil::wire::Event>> held;
  if (!with_events) {
    std::swap(s.events, held);
  }
  capnp::MallocMessageBuilder m;
  vigil::toWire(s, m, form);
  if (!with_events) {
    std::swap(s.events, held);
  }
  if (processes != nullptr) {
    std::swap(s.processes, *processes);
  }
  auto f = m.getRoot<vigil::wire::Frame>();
  if (folded != nullptr) {
    for (auto p : f.getProcesses()) {
      auto it = folded->find(p.getPid());
      if (it != folded->end()) {
        p.setCpuNs(it->second);
      }
    }
  }
  return vigil::encodeFrame(m, vigil::wire::Encoding::PACKED);
}

std::vector<vigil::wire::Event::Reader> eventReaders(const vigil::Snapshot& s) {
  std::vector<vigil::wire::Event::Reader> out;
  for (const auto& e : s.events) {
    out.push_back(e.getReader());
  }
  return out;
}

// --experiments (docs/transport.md, "Under load"):
//  1. Events: the bytes the events add to the pointer delta the agent sends (delta with events
//     minus delta without, same frames), as columns (what the agent sends) and as the Event list
//     (agents before columns), against JSON+gzip of the events; where the columns' bytes go
//     (each column zstd'd alone); and a check that every frame's events come back from the frame
//     exactly (fromWire, compared field by field with the collected events; a mismatch fails
//     the run).
//  2. Folding short-lived processes (bench/wire/fold_short_lived.h) beyond the K busiest: the
//     samples-only and whole steady state, against JSON+gzip of the unfolded frame (the data as
//     collected) and of the folded frame (the same folding applied to JSON).
// Prints exp_* key=value lines; returns false when a round-trip check fails.
bool runExperiments(std::vector<std::unique_ptr<vigil::Snapshot>>& frames,
                    const absl::flat_hash_set<uint32_t>& pids_before_first, int delta_level,
                    int keyframe_every, size_t fold_keep) {
  const size_t n = frames.size();
  // The frames as sent (events as columns), as agents before columns sent them (events as a
  // list), and without events.
  std::vector<kj::Array<kj::byte>> full, listed, samples;
  for (auto& f : frames) {
    full.push_back(packFrame(*f, true, nullptr, nullptr));
    listed.push_back(packFrame(*f, true, nullptr, nullptr, vigil::WireForm::kEventList));
    samples.push_back(packFrame(*f, false, nullptr, nullptr));
  }
  WireCost today, today_listed, today_samples;
  if (!wireCost(full, delta_level, keyframe_every, &today) ||
      !wireCost(listed, delta_level, keyframe_every, &today_listed) ||
      !wireCost(samples, delta_level, keyframe_every, &today_samples)) {
    fprintf(stderr, "vigil-bench-wire: a frame has no pointer-predicted delta\n");
    return false;
  }

  // 1. Events. Every frame's events back from the frame as the aggregator reads it.
  size_t verified = 0;
  for (size_t i = 0; i < n; ++i) {
    auto decoded = vigil::decodeFrame(full[i], vigil::wire::Encoding::PACKED);
    vigil::Snapshot back;
    absl::Status st = decoded.ok() ? vigil::fromWire((*decoded)->frame(), back) : decoded.status();
    if (!st.ok() || back.events.size() != frames[i]->events.size()) {
      fprintf(stderr, "vigil-bench-wire: the events of frame %zu do not decode: %s\n", i,
              st.ok() ? "wrong count" : std::string(st.message()).c_str());
      return false;
    }
    for (size_t k = 0; k < back.events.size(); ++k) {
      if (!vigil::sameEvent(frames[i]->events[k].getReader(), back.events[k].getReader())) {
        fprintf(stderr, "vigil-bench-wire: event %zu of frame %zu does not round-trip\n", k, i);
        return false;
      }
      verified++;
    }
  }
  double events_total = 0, in_delta = 0, list_in_delta = 0, raw = 0;
  double json_gzip = 0, json_gzip_marginal = 0;
  // Per column: raw bytes and bytes after zstd of that column alone (where the bytes go).
  static const char* const kColumnNames[] = {
      "kind", "time",         "pid",     "tid",       "ppid",    "cgroup",
      "comm", "container_id", "pod_uid", "filename",  "argv",    "exit",
      "fork", "oom_kill",     "signal",  "tcp_state", "literals"};
  constexpr size_t kColumns = sizeof(kColumnNames) / sizeof(kColumnNames[0]);
  double column_raw[kColumns] = {}, column_zstd[kColumns] = {};
  for (size_t i = 1; i < n; ++i) {
    auto decoded = vigil::decodeFrame(full[i], vigil::wire::Encoding::PACKED);
    if (!decoded.ok()) {
      return false;
    }
    auto c = (*decoded)->frame().getEventColumns();
    const capnp::Data::Reader cols[kColumns] = {
        c.getKind(),     c.getTime(),    c.getPid(),         c.getTid(),     c.getPpid(),
        c.getCgroup(),   c.getComm(),    c.getContainerId(), c.getPodUid(),  c.getFilename(),
        c.getArgv(),     c.getExit(),    c.getFork(),        c.getOomKill(), c.getSignal(),
        c.getTcpState(), c.getLiterals()};
    for (size_t k = 0; k < kColumns; ++k) {
      column_raw[k] += static_cast<double>(cols[k].size());
      raw += static_cast<double>(cols[k].size());
      if (cols[k].size() > 0) {
        column_zstd[k] += static_cast<double>(vigil::compressPacked(cols[k], delta_level).size());
      }
    }
    events_total += static_cast<double>(frames[i]->events.size());
    KJ_IF_MAYBE (without, vigil::encodePointerDelta(samples[i - 1], samples[i], delta_level)) {
      KJ_IF_MAYBE (with, vigil::encodePointerDelta(full[i - 1], full[i], delta_level)) {
        in_delta += static_cast<double>(with->size()) - static_cast<double>(without->size());
      }
      KJ_IF_MAYBE (with, vigil::encodePointerDelta(listed[i - 1], listed[i], delta_level)) {
        list_in_delta += static_cast<double>(with->size()) - static_cast<double>(without->size());
      }
    }
    json_gzip += static_cast<double>(gzip(eventsJson(*frames[i]).dump()).size());
    json with_events = structuredJson(*frames[i]);
    std::string gz_with = gzip(with_events.dump());
    with_events["events"] = json::array();
    json_gzip_marginal +=
        static_cast<double>(gz_with.size()) - static_cast<double>(gzip(with_events.dump()).size());
  }
  const double deltas = static_cast<double>(n - 1);
  // Events per frame by kind (the union member).
  static const char* const kKinds[] = {"exec", "exit", "fork", "oom_kill", "signal", "tcp_state"};
  double kinds[6] = {};
  for (size_t i = 1; i < n; ++i) {
    for (const auto& e : frames[i]->events) {
      kinds[std::min<unsigned>(e.getReader().which(), 5)]++;
    }
  }
  for (int k = 0; k < 6; ++k) {
    printf("exp_events_%s_per_frame=%.1f\n", kKinds[k], kinds[k] / deltas);
  }
  const double per_event = events_total > 0 ? 1.0 / events_total : 0;
  printf("exp_events_per_frame=%.1f\n", events_total / deltas);
  printf("exp_events_round_trip_checked=%zu\n", verified);
  printf("exp_events_in_delta_bytes_per_event=%.2f\n", in_delta * per_event);
  printf("exp_events_list_in_delta_bytes_per_event=%.2f\n", list_in_delta * per_event);
  printf("exp_events_columns_raw_bytes_per_event=%.2f\n", raw * per_event);
  printf("exp_events_json_gzip_bytes_per_event=%.2f\n", json_gzip * per_event);
  printf("exp_events_json_gzip_in_frame_bytes_per_event=%.2f\n", json_gzip_marginal * per_event);
  for (size_t k = 0; k < kColumns; ++k) {
    if (column_raw[k] > 0) {
      printf("exp_events_column_%s_raw_bytes_per_event=%.2f\n", kColumnNames[k],
             column_raw[k] * per_event);
      printf("exp_events_column_%s_zstd_bytes_per_event=%.2f\n", kColumnNames[k],
             column_zstd[k] * per_event);
    }
  }
  printf("exp_events_columns_vs_list_in_delta=%.3f\n",
         list_in_delta > 0 ? in_delta / list_in_delta : 0);
  printf("exp_events_columns_vs_json_gzip=%.3f\n", json_gzip > 0 ? in_delta / json_gzip : 0);
  // CPU cost for the last frame's events (best of 20): writing the columns on the agent's side,
  // decoding them into Cap'n Proto events on the aggregator's.
  {
    auto events = eventReaders(*frames[n - 1]);
    auto best_us = [](auto&& fn) {
      double best = 1e18;
      for (int i = 0; i < 20; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        fn();
        best = std::min(
            best, std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                      .count());
      }
      return best;
    };
    const double encode_us = best_us([&]() {
      capnp::MallocMessageBuilder m;
      vigil::writeEventColumns(events, m.initRoot<vigil::wire::EventColumns>());
    });
    capnp::MallocMessageBuilder written;
    vigil::writeEventColumns(events, written.initRoot<vigil::wire::EventColumns>());
    const double decode_us = best_us([&]() {
      capnp::MallocMessageBuilder arena;
      std::vector<capnp::Orphan<vigil::wire::Event>> out;
      (void)vigil::readEventColumns(written.getRoot<vigil::wire::EventColumns>().asReader(),
                                    arena.getOrphanage(), out);
    });
    printf("exp_events_columns_encode_us=%.0f\n", encode_us);
    printf("exp_events_columns_decode_us=%.0f\n", decode_us);
  }

  // 2. Folding. Frames are folded in order (aggregates are cumulative); folded_counts[i] holds
  // the aggregates of frame i and how many processes each had folded by then.
  vigil::bench::ShortLivedFolder folder(fold_keep);
  std::vector<absl::flat_hash_map<uint32_t, vigil::ProcessStats>> folded(n);
  std::vector<absl::flat_hash_map<uint32_t, uint64_t>> folded_counts(n);
  double folded_per_frame = 0;
  for (size_t i = 0; i < n; ++i) {
    absl::flat_hash_set<uint32_t> previous_pids = pids_before_first;
    if (i > 0) {
      previous_pids.clear();
      for (const auto& [pid, p] : frames[i - 1]->processes) {
        previous_pids.insert(pid);
      }
    }
    folded[i] = folder.fold(frames[i]->processes, previous_pids);
    for (const auto& [pid, p] : folded[i]) {
      if (uint64_t c = folder.foldedCount(pid); c > 0) {
        folded_counts[i][pid] = c;
      }
    }
    if (i > 0) {
      folded_per_frame += static_cast<double>(folder.lastFolded());
    }
  }
  std::vector<kj::Array<kj::byte>> folded_full, folded_samples;
  for (size_t i = 0; i < n; ++i) {
    folded_full.push_back(packFrame(*frames[i], true, &folded[i], &folded_counts[i]));
    folded_samples.push_back(packFrame(*frames[i], false, &folded[i], &folded_counts[i]));
  }
  WireCost fold_cost, fold_samples_cost;
  if (!wireCost(folded_full, delta_level, keyframe_every, &fold_cost) ||
      !wireCost(folded_samples, delta_level, keyframe_every, &fold_samples_cost)) {
    fprintf(stderr, "vigil-bench-wire: a folded frame has no pointer-predicted delta\n");
    return false;
  }
  // JSON+gzip of the last frame: as collected, and folded the same way.
  vigil::Snapshot& last = *frames.back();
  const absl::flat_hash_map<uint32_t, uint64_t> none_folded;
  json plain = structuredJson(last, false, &none_folded);
  std::swap(last.processes, folded.back());
  json folded_json = structuredJson(last, false, &folded_counts.back());
  std::swap(last.processes, folded.back());
  const double json_full = static_cast<double>(gzip(plain.dump()).size());
  const double json_folded_full = static_cast<double>(gzip(folded_json.dump()).size());
  plain["events"] = json::array();
  folded_json["events"] = json::array();
  const double json_samples = static_cast<double>(gzip(plain.dump()).size());
  const double json_folded_samples = static_cast<double>(gzip(folded_json.dump()).size());
  printf("exp_fold_keep_busiest=%zu\n", fold_keep);
  printf("exp_fold_processes_folded_per_frame=%.1f\n", folded_per_frame / deltas);
  printf("exp_fold_aggregates=%zu\n", folder.aggregates());
  printf("exp_fold_processes_last_frame=%zu\n", folded.back().size());
  printf("exp_samples_delta_bytes_avg=%.1f\n", today_samples.delta_avg);
  printf("exp_samples_folded_delta_bytes_avg=%.1f\n", fold_samples_cost.delta_avg);
  printf("exp_samples_steady_bytes_avg=%.1f\n", today_samples.steady);
  printf("exp_samples_folded_steady_bytes_avg=%.1f\n", fold_samples_cost.steady);
  printf("exp_json_samples_gzip_bytes=%.0f\n", json_samples);
  printf("exp_json_samples_folded_gzip_bytes=%.0f\n", json_folded_samples);
  printf("exp_samples_steady_ratio=%.3f\n", today_samples.steady / json_samples);
  printf("exp_samples_folded_steady_ratio_vs_json_as_collected=%.3f\n",
         fold_samples_cost.steady / json_samples);
  printf("exp_samples_folded_steady_ratio_vs_json_folded=%.3f\n",
         fold_samples_cost.steady / json_folded_samples);
  printf("exp_full_delta_bytes_avg=%.1f\n", today.delta_avg);
  printf("exp_full_folded_delta_bytes_avg=%.1f\n", fold_cost.delta_avg);
  printf("exp_json_full_gzip_bytes=%.0f\n", json_full);
  printf("exp_json_full_folded_gzip_bytes=%.0f\n", json_folded_full);
  printf("exp_full_steady_ratio=%.3f\n", today.steady / json_full);
  printf("exp_full_folded_steady_ratio_vs_json_as_collected=%.3f\n", fold_cost.steady / json_full);
  printf("exp_full_folded_steady_ratio_vs_json_folded=%.3f\n", fold_cost.steady / json_folded_full);

  printf("exp_full_event_list_steady_ratio=%.3f\n", today_listed.steady / json_full);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  bool live = false;
  uint64_t seq = 100;
  uint32_t interval_ms = 1000;
  int rounds = 5;
  int keyframe_every = 30;
  int delta_level = 3;
  bool no_events = false;
  bool legacy_units = false;
  bool experiments = false;
  size_t fold_keep = 32;
  vigil::bench::SynthOptions synth;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string v;
    if (a == "--live") {
      live = true;
    } else if (flagValue(a, "seq", &v)) {
      seq = std::stoull(v);
    } else if (flagValue(a, "processes", &v)) {
      synth.processes = static_cast<uint32_t>(std::stoul(v));
    } else if (flagValue(a, "containers", &v)) {
      synth.containers = static_cast<uint32_t>(std::stoul(v));
    } else if (flagValue(a, "interval_ms", &v)) {
      interval_ms = static_cast<uint32_t>(std::stoul(v));
    } else if (flagValue(a, "rounds", &v)) {
      rounds = std::max(1, std::stoi(v));
    } else if (a == "--legacy_units") {
      legacy_units = true;
    } else if (a == "--experiments") {
      experiments = true;
    } else if (flagValue(a, "fold_keep", &v)) {
      fold_keep = std::stoul(v);
    } else if (a == "--no_events") {
      no_events = true;
    } else if (flagValue(a, "delta_level", &v)) {
      delta_level = std::stoi(v);
    } else if (flagValue(a, "keyframe_every", &v)) {
      keyframe_every = std::max(1, std::stoi(v));
    } else {
      fprintf(stderr,
              "usage: vigil-bench-wire [--seq=N --processes=N --containers=N] | --live "
              "[--interval_ms=N]  [--rounds=N] [--keyframe_every=K]\n");
      return 2;
    }
  }

  // frames[0] is the base of frames[1], and so on; the last frame is the one measured as a
  // keyframe and against JSON.
  std::vector<std::unique_ptr<vigil::Snapshot>> frames;
  // The pids of the collection before frames[0] (--experiments: which processes are new in it).
  absl::flat_hash_set<uint32_t> pids_before_first;
  if (live) {
    vigil::CollectorConfig config;
    std::vector<std::unique_ptr<vigil::Collector>> collectors;
    for (const std::string& name : vigil::collectorNames()) {
      auto c = vigil::createCollector(name, config);
      if (!c.ok()) {
        fprintf(stderr, "vigil-bench-wire: collector %s unavailable: %s\n", name.c_str(),
                std::string(c.status().message()).c_str());
        continue;
      }
      collectors.push_back(std::move(*c));
    }
    if (collectors.empty()) {
      fprintf(stderr, "vigil-bench-wire: no collector could start (not root?)\n");
      return 1;
    }
    // The first collection only discovers processes; the ones after it are the steady state.
    for (int round = 0; round <= rounds + 1; ++round) {
      std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
      auto snap = std::make_unique<vigil::Snapshot>();
      for (auto& c : collectors) {
        c->collect(*snap);
      }
      snap->agent.agent_id = snap->agent.node_name = "live";
      snap->boot_epoch = 1;
      snap->seq = static_cast<uint64_t>(round + 1);
      snap->interval_ms = interval_ms;
      if (round > 0) {
        frames.push_back(std::move(snap));
      } else {
        for (const auto& [pid, p] : snap->processes) {
          pids_before_first.insert(pid);
        }
      }
    }
  } else {
    for (int i = 0; i <= rounds; ++i) {
      auto snap = std::make_unique<vigil::Snapshot>();
      vigil::bench::buildSyntheticSnapshot(synth, seq - rounds + i, *snap);
      frames.push_back(std::move(snap));
    }
    for (const auto& [pid, p] : frames.front()->processes) {
      pids_before_first.insert(pid);
    }
  }

  if (no_events) {
    // Samples only: the events (new data in every frame, not samples) left out of the frames and
    // of the JSON alike.
    for (auto& f : frames) {
      f->events.clear();
    }
  }
  const vigil::WireForm form =
      legacy_units ? vigil::WireForm::kLegacyForBench : vigil::WireForm::kCurrent;
  // Each frame as the agent has it: packed bytes, and the self-contained packed+zstd payload it
  // spools (and sends as a keyframe).
  std::vector<kj::Array<kj::byte>> packed_frames;
  for (auto& f : frames) {
    capnp::MallocMessageBuilder message;
    vigil::toWire(*f, message, form);
    packed_frames.push_back(vigil::encodeFrame(message, vigil::wire::Encoding::PACKED));
  }
  const vigil::Snapshot& snap = *frames.back();
  size_t packed = packed_frames.back().size();
  capnp::MallocMessageBuilder last_message;
  vigil::toWire(snap, last_message, form);
  size_t packed_zstd = vigil::encodeFrame(last_message, vigil::wire::Encoding::PACKED_ZSTD).size();
  // Deltas exactly as the uplink makes them (frame i against frame i-1), each checked to expand
  // back to the frame's bytes.
  double delta_sum = 0;       // pointer-predicted deltas: what the agent sends
  double byte_delta_sum = 0;  // byte deltas (Encoding.packedZstdDelta), for comparison
  size_t delta_max = 0;
  size_t delta_last = 0;
  for (size_t i = 1; i < packed_frames.size(); ++i) {
    auto bd = vigil::encodeDelta(packed_frames[i - 1], packed_frames[i], delta_level);
    auto bback = vigil::expandDelta(packed_frames[i - 1], bd);
    KJ_IF_MAYBE (d,
                 vigil::encodePointerDelta(packed_frames[i - 1], packed_frames[i], delta_level)) {
      auto back = vigil::expandPointerDelta(packed_frames[i - 1], *d);
      if (!back.ok() || !bback.ok() || back->size() != packed_frames[i].size() ||
          bback->size() != packed_frames[i].size() ||
          memcmp(back->begin(), packed_frames[i].begin(), back->size()) != 0 ||
          memcmp(bback->begin(), packed_frames[i].begin(), back->size()) != 0) {
        fprintf(stderr, "vigil-bench-wire: delta %zu does not expand to its frame\n", i);
        return 1;
      }
      if (getenv("WIRE_DEBUG") != nullptr) {
        fprintf(stderr,
                "delta %zu: %zu B, byte delta %zu B (events %zu, packed %zu, processes %zu)\n", i,
                d->size(), bd.size(), frames[i]->events.size(), packed_frames[i].size(),
                frames[i]->processes.size());
      }
      delta_sum += static_cast<double>(d->size());
      delta_max = std::max(delta_max, d->size());
      delta_last = d->size();
    } else {
      fprintf(stderr, "vigil-bench-wire: frame %zu has no pointer-predicted delta\n", i);
      return 1;
    }
    byte_delta_sum += static_cast<double>(bd.size());
  }
  double delta_avg = delta_sum / static_cast<double>(packed_frames.size() - 1);
  // The same frames in the form agents wrote before ProcessSample.cpuUs / Metric.scaled / the
  // container and histogram order (WireForm::kLegacyForBench), measured the same way, so a run
  // shows what the current form saves on identical data.
  double legacy_delta_avg = 0;
  size_t legacy_keyframe = 0;
  {
    std::vector<kj::Array<kj::byte>> lp;
    for (auto& f : frames) {
      capnp::MallocMessageBuilder m;
      vigil::toWire(*f, m, vigil::WireForm::kLegacyForBench);
      lp.push_back(vigil::encodeFrame(m, vigil::wire::Encoding::PACKED));
    }
    for (size_t i = 1; i < lp.size(); ++i) {
      legacy_delta_avg +=
          static_cast<double>(vigil::encodeDelta(lp[i - 1], lp[i], delta_level).size());
    }
    legacy_delta_avg /= static_cast<double>(lp.size() - 1);
    legacy_keyframe = vigil::compressPacked(lp.back()).size();
  }
  // The same frames with their events as the Frame.events list (agents before eventColumns, and
  // what the agent sends an aggregator that does not accept columns), measured the same way.
  double event_list_delta_avg = 0;
  size_t event_list_keyframe = 0;
  {
    std::vector<kj::Array<kj::byte>> ep;
    for (auto& f : frames) {
      capnp::MallocMessageBuilder m;
      vigil::toWire(*f, m, vigil::WireForm::kEventList);
      ep.push_back(vigil::encodeFrame(m, vigil::wire::Encoding::PACKED));
    }
    for (size_t i = 1; i < ep.size(); ++i) {
      KJ_IF_MAYBE (d, vigil::encodePointerDelta(ep[i - 1], ep[i], delta_level)) {
        event_list_delta_avg += static_cast<double>(d->size());
      } else {
        fprintf(stderr, "vigil-bench-wire: event-list frame %zu has no pointer delta\n", i);
        return 1;
      }
    }
    event_list_delta_avg /= static_cast<double>(ep.size() - 1);
    event_list_keyframe = vigil::compressPacked(ep.back()).size();
  }
  // CPU cost of the last delta on each side (best of 20): the agent's encode, the aggregator's
  // expand plus the level-1 recompression it logs.
  auto best_us = [](auto&& fn) {
    double best = 1e18;
    for (int i = 0; i < 20; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      fn();
      best = std::min(
          best,
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  const auto& pb = packed_frames[packed_frames.size() - 2];
  const auto& pl = packed_frames.back();
  kj::Array<kj::byte> last_delta;
  KJ_IF_MAYBE (d, vigil::encodePointerDelta(pb, pl, delta_level)) {
    last_delta = kj::mv(*d);
  }
  // The agent's encode includes the check that the delta expands back (encodePointerDelta).
  double encode_us = best_us([&]() { (void)vigil::encodePointerDelta(pb, pl, delta_level); });
  double expand_us = best_us([&]() {
    auto e = vigil::expandPointerDelta(pb, last_delta);
    (void)vigil::compressPacked(*e, 1);
  });
  if (getenv("WIRE_DEBUG") != nullptr) {
    // Experiment: the same on the flat (unpacked) message bytes.
    std::vector<kj::Array<kj::byte>> flat;
    for (auto& f : frames) {
      capnp::MallocMessageBuilder m;
      vigil::toWire(*f, m);
      auto words = capnp::messageToFlatArray(m);
      flat.push_back(kj::heapArray<kj::byte>(words.asBytes()));
    }
    double fsum = 0;
    for (size_t i = 1; i < flat.size(); ++i) {
      fsum += vigil::encodeDelta(flat[i - 1], flat[i]).size();
    }
    fprintf(stderr, "flat: keyframe %zu B, keyframe L19 packed %zu B, delta avg %.0f B\n",
            vigil::compressPacked(flat.back()).size(),
            vigil::compressPacked(packed_frames.back(), 19).size(), fsum / (flat.size() - 1));
  }
  if (getenv("WIRE_DEBUG") != nullptr) {
    // What moved between the last two frames.
    const vigil::Snapshot& a = *frames[frames.size() - 2];
    const vigil::Snapshot& b = *frames.back();
    size_t same_procs = 0, moved_procs = 0, new_procs = 0, gone_procs = 0;
    for (const auto& [pid, p] : b.processes) {
      auto it = a.processes.find(pid);
      if (it == a.processes.end()) {
        new_procs++;
        continue;
      }
      const auto& q = it->second;
      bool moved = p.cpu_ns / 1000 != q.cpu_ns / 1000 || p.syscalls != q.syscalls ||
                   p.voluntary_switches != q.voluntary_switches ||
                   p.involuntary_switches != q.involuntary_switches ||
                   p.tcp_tx_bytes != q.tcp_tx_bytes || p.tcp_rx_bytes != q.tcp_rx_bytes ||
                   p.block_read_bytes != q.block_read_bytes ||
                   p.block_write_bytes != q.block_write_bytes || p.exited != q.exited;
      (moved ? moved_procs : same_procs)++;
    }
    for (const auto& [pid, p] : a.processes) {
      gone_procs += b.processes.count(pid) == 0;
    }
    size_t host_moved = 0;
    for (size_t i = 0; i < std::min(a.host.size(), b.host.size()); ++i) {
      host_moved += a.host[i].value != b.host[i].value;
    }
    size_t buckets = 0, buckets_moved = 0;
    for (size_t i = 0; i < std::min(a.histograms.size(), b.histograms.size()); ++i) {
      for (size_t k = 0; k < b.histograms[i].buckets.size(); ++k) {
        buckets++;
        buckets_moved += k >= a.histograms[i].buckets.size() ||
                         a.histograms[i].buckets[k] != b.histograms[i].buckets[k];
      }
    }
    fprintf(stderr,
            "processes: %zu unchanged, %zu moved, %zu new, %zu gone; host %zu/%zu moved; "
            "histograms %zu, buckets %zu/%zu moved\n",
            same_procs, moved_procs, new_procs, gone_procs, host_moved, b.host.size(),
            b.histograms.size(), buckets_moved, buckets);
    for (const auto& h : b.histograms) {
      std::string l;
      for (const auto& [k, v] : h.labels) l += k + "=" + v + ",";
      fprintf(stderr, "  hist %s{%s} %zu buckets\n", h.name.c_str(), l.c_str(), h.buckets.size());
    }
  }
  if (getenv("WIRE_DEBUG") != nullptr) {
    // Where the last delta's bytes go: its size with one part of both frames left out.
    const char* parts[] = {"host", "self", "processes", "containers", "histograms", "events"};
    for (int part = 0; part < 6; ++part) {
      kj::Array<kj::byte> pk[2];
      for (int k = 0; k < 2; ++k) {
        if (part == 5) {
          pk[k] = packFrame(*frames[frames.size() - 2 + k], false, nullptr, nullptr);
          continue;
        }
        capnp::MallocMessageBuilder m;
        vigil::toWire(*frames[frames.size() - 2 + k], m);
        auto f = m.getRoot<vigil::wire::Frame>();
        switch (part) {
          case 0:
            f.initHost(0);
            break;
          case 1:
            f.initSelf(0);
            break;
          case 2:
            f.initProcesses(0);
            break;
          case 3:
            f.initContainers(0);
            break;
          default:
            f.initHistograms(0);
            break;
        }
        pk[k] = vigil::encodeFrame(m, vigil::wire::Encoding::PACKED);
      }
      size_t n = 0;
      KJ_IF_MAYBE (d, vigil::encodePointerDelta(pk[0], pk[1])) {
        n = d->size();
      }
      fprintf(stderr, "last delta without %s: %zu B\n", parts[part], n);
    }
  }
  // Steady state: one keyframe, then keyframe_every - 1 deltas.
  double steady = (static_cast<double>(packed_zstd) + (keyframe_every - 1) * delta_avg) /
                  static_cast<double>(keyframe_every);

  std::string structured = structuredJson(snap, legacy_units).dump();
  size_t series = 0;
  std::string flat = seriesJson(snap, &series).dump();
  std::string structured_gz = gzip(structured);
  if (getenv("WIRE_DEBUG") != nullptr) {
    json no_events = structuredJson(snap);
    no_events["events"] = json::array();
    fprintf(stderr, "JSON+gzip of the last frame without its events: %zu B (with: %zu B)\n",
            gzip(no_events.dump()).size(), structured_gz.size());
  }
  // The same JSON with on-CPU time in ns (what the frame carried before ProcessSample.cpuUs).
  std::string structured_ns_gz = gzip(structuredJson(snap, true).dump());
  std::string flat_gz = gzip(flat);
  if (series == 0) {
    fprintf(stderr, "vigil-bench-wire: the frame renders no series\n");
    return 1;
  }
  double n = static_cast<double>(series);
  double sg = static_cast<double>(structured_gz.size());
  double fg = static_cast<double>(flat_gz.size());
  printf("source=%s\n", live ? "live" : "synthetic");
  printf("series=%zu\n", series);
  printf("processes=%zu\n", snap.processes.size());
  printf("events=%zu\n", snap.events.size());
  printf("packed_bytes=%zu\n", packed);
  printf("packed_zstd_bytes=%zu\n", packed_zstd);
  printf("deltas=%zu\n", packed_frames.size() - 1);
  printf("delta_bytes_avg=%.1f\n", delta_avg);
  printf("delta_bytes_max=%zu\n", delta_max);
  printf("byte_delta_bytes_avg=%.1f\n",
         byte_delta_sum / static_cast<double>(packed_frames.size() - 1));
  printf("delta_bytes_last=%zu\n", delta_last);
  printf("keyframe_every=%d\n", keyframe_every);
  printf("delta_encode_us=%.0f\n", encode_us);
  printf("delta_expand_log_us=%.0f\n", expand_us);
  printf("steady_bytes_avg=%.1f\n", steady);
  printf("json_structured_bytes=%zu\n", structured.size());
  printf("json_structured_gzip_bytes=%zu\n", structured_gz.size());
  printf("json_structured_ns_gzip_bytes=%zu\n", structured_ns_gz.size());
  printf("json_series_bytes=%zu\n", flat.size());
  printf("json_series_gzip_bytes=%zu\n", flat_gz.size());
  printf("packed_zstd_per_sample=%.3f\n", packed_zstd / n);
  printf("delta_per_sample=%.3f\n", delta_avg / n);
  printf("steady_per_sample=%.3f\n", steady / n);
  printf("json_structured_per_sample=%.3f\n", structured.size() / n);
  printf("json_structured_gzip_per_sample=%.3f\n", sg / n);
  printf("json_series_gzip_per_sample=%.3f\n", fg / n);
  printf("ratio_vs_json_structured_gzip=%.3f\n", packed_zstd / sg);
  printf("ratio_vs_json_series_gzip=%.3f\n", packed_zstd / fg);
  printf("delta_ratio_vs_json_structured_gzip=%.3f\n", delta_avg / sg);
  printf("steady_ratio_vs_json_structured_gzip=%.3f\n", steady / sg);
  printf("steady_ratio_vs_json_series_gzip=%.3f\n", steady / fg);
  double legacy_steady =
      (static_cast<double>(legacy_keyframe) + (keyframe_every - 1) * legacy_delta_avg) /
      static_cast<double>(keyframe_every);
  double event_list_steady =
      (static_cast<double>(event_list_keyframe) + (keyframe_every - 1) * event_list_delta_avg) /
      static_cast<double>(keyframe_every);
  printf("event_list_packed_zstd_bytes=%zu\n", event_list_keyframe);
  printf("event_list_delta_bytes_avg=%.1f\n", event_list_delta_avg);
  printf("event_list_steady_bytes_avg=%.1f\n", event_list_steady);
  printf("event_list_steady_ratio_vs_json_structured_gzip=%.3f\n", event_list_steady / sg);
  printf("legacy_packed_zstd_bytes=%zu\n", legacy_keyframe);
  printf("legacy_delta_bytes_avg=%.1f\n", legacy_delta_avg);
  printf("legacy_steady_bytes_avg=%.1f\n", legacy_steady);
  printf("legacy_steady_ratio_vs_json_structured_ns_gzip=%.3f\n",
         legacy_steady / static_cast<double>(structured_ns_gz.size()));
  printf("steady_ratio_vs_json_structured_ns_gzip=%.3f\n",
         steady / static_cast<double>(structured_ns_gz.size()));
  if (experiments &&
      !runExperiments(frames, pids_before_first, delta_level, keyframe_every, fold_keep)) {
    return 1;
  }
  if (getenv("WIRE_DEBUG") != nullptr) {
    // Experiment: the last delta if the frame left out the processes whose samples are identical
    // to the base's (what an "unchanged since seq N" scheme would save at most; the list of the
    // omitted pids is not counted).
    vigil::Snapshot& last = *frames.back();
    const vigil::Snapshot& prev = *frames[frames.size() - 2];
    std::vector<uint32_t> unchanged;
    for (const auto& [pid, p] : last.processes) {
      auto it = prev.processes.find(pid);
      if (it == prev.processes.end()) {
        continue;
      }
      vigil::Snapshot one_a, one_b;
      one_a.processes[pid] = it->second;
      one_b.processes[pid] = p;
      capnp::MallocMessageBuilder fa, fb;
      vigil::toWire(one_a, fa);
      vigil::toWire(one_b, fb);
      if (vigil::encodeFrame(fa, vigil::wire::Encoding::PACKED).asPtr() ==
          vigil::encodeFrame(fb, vigil::wire::Encoding::PACKED).asPtr()) {
        unchanged.push_back(pid);
      }
    }
    for (uint32_t pid : unchanged) {
      last.processes.erase(pid);
    }
    capnp::MallocMessageBuilder m;
    vigil::toWire(last, m);
    auto thin = vigil::encodeFrame(m, vigil::wire::Encoding::PACKED);
    KJ_IF_MAYBE (d, vigil::encodePointerDelta(packed_frames[packed_frames.size() - 2], thin)) {
      fprintf(stderr, "last delta %zu B; without its %zu unchanged processes %zu B\n", delta_last,
              unchanged.size(), d->size());
    }
  }
  return 0;
}
