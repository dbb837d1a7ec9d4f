// The in-memory form of one Frame. Collectors fill a Snapshot, the agent encodes it to the wire
// (toWire), and the aggregator and CLI decode frames back (fromWire) to merge, store and expose
// them. Keeping one C++ model on both sides keeps metric names and meanings identical.
#pragma once

#include <capnp/message.h>
#include <capnp/orphan.h>

#include <cstdint>
#include <string>
#include <utility>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "capnp/vigil.capnp.h"

namespace vigil {

using Labels = std::vector<std::pair<std::string, std::string>>;

struct AgentInfo {
  std::string agent_id;
  std::string node_name;
  std::string version;
  std::string kernel;
  Labels labels;
};

struct ProcessStats {
  uint32_t pid = 0;
  std::string comm;
  uint64_t cgroup_id = 0;
  std::string cmdline;
  std::string container_id;
  uint64_t cpu_ns = 0;
  uint64_t voluntary_switches = 0;
  uint64_t involuntary_switches = 0;
  uint64_t syscalls = 0;
  uint64_t syscall_errors = 0;
  std::vector<std::pair<uint32_t, uint64_t>> top_errnos;  // (errno, count)
  uint64_t tcp_tx_bytes = 0;
  uint64_t tcp_rx_bytes = 0;
  uint64_t udp_tx_bytes = 0;
  uint64_t udp_rx_bytes = 0;
  uint64_t tcp_retransmits = 0;
  uint64_t tcp_active_opens = 0;
  uint64_t tcp_passive_opens = 0;
  uint64_t tcp_connect_failures = 0;
  uint64_t tcp_resets_sent = 0;
  uint64_t tcp_resets_received = 0;
  uint64_t block_read_bytes = 0;
  uint64_t block_write_bytes = 0;
  uint64_t block_read_ops = 0;
  uint64_t block_write_ops = 0;
  uint64_t tcp_closes = 0;
  uint64_t tcp_connect_refused = 0;
  uint64_t tcp_connect_timeouts = 0;
  uint64_t tcp_connects = 0;  // connect-latency samples
  uint64_t tcp_connect_latency_sum_ns = 0;
  bool exited = false;
};

struct ContainerStats {
  uint64_t cgroup_id = 0;
  std::string cgroup_path;
  std::string container_id;
  std::string runtime;
  std::string pod_uid;
  std::string qos_class;
  std::string systemd_unit;
  uint64_t cpu_ns = 0;
  uint64_t syscalls = 0;
  uint64_t syscall_errors = 0;
  uint64_t tcp_tx_bytes = 0;
  uint64_t tcp_rx_bytes = 0;
  uint64_t block_read_bytes = 0;
  uint64_t block_write_bytes = 0;
  uint32_t processes = 0;
};

struct MetricSample {
  std::string name;
  Labels labels;
  double value = 0;
  bool counter = false;
};

struct HistogramSample {
  std::string name;
  Labels labels;
  uint64_t unit_ns = 1;
  std::vector<uint64_t> buckets;  // log2 buckets, see wire::Histogram
  uint64_t count = 0;
  uint64_t sum_units = 0;
};

struct CollectorState {
  std::string name;
  bool up = true;
  std::string reason;
};

struct Snapshot {
  AgentInfo agent;
  uint64_t boot_epoch = 0;
  uint64_t seq = 0;
  int64_t start_unix_ns = 0;
  int64_t end_unix_ns = 0;
  uint64_t config_version = 0;
  uint32_t interval_ms = 0;
  double syscall_duty_cycle = 0;

  absl::flat_hash_map<uint32_t, ProcessStats> processes;
  std::vector<ContainerStats> containers;
  std::vector<MetricSample> host;
  std::vector<MetricSample> self;
  std::vector<HistogramSample> histograms;
  std::vector<CollectorState> collectors;

  // Events are built directly as Cap'n Proto structs in this arena, so collectors can fill the
  // event union without a parallel C++ type per event kind.
  std::unique_ptr<capnp::MallocMessageBuilder> event_arena =
      std::make_unique<capnp::MallocMessageBuilder>();
  std::vector<capnp::Orphan<wire::Event>> events;

  Snapshot() = default;
  Snapshot(Snapshot&&) = delete;

  ProcessStats& process(uint32_t pid) {
    ProcessStats& p = processes[pid];
    p.pid = pid;
    return p;
  }
  wire::Event::Builder newEvent() {
    events.push_back(event_arena->getOrphanage().newOrphan<wire::Event>());
    return events.back().get();
  }
  // Frees the events and their arena (the rest stays), e.g. once a frame holds a copy of them.
  void clearEvents() {
    events.clear();
    event_arena = std::make_unique<capnp::MallocMessageBuilder>();
  }
};

// How toWire writes a frame. kCurrent: events as Frame.eventColumns. kEventList: the same but the
// events as the Frame.events list, the form of agents before eventColumns (and what the agent
// sends an aggregator that does not accept columns). kLegacyForBench is for vigil-bench-wire only:
// the units and order of agents before ProcessSample.cpuUs / Metric.scaled (ns, float64,
// containers and histograms in the collectors' order, events as a list), to measure what the
// current form saves on the same data.
enum class WireForm { kCurrent, kEventList, kLegacyForBench };

// Writes a Frame into `message` (its root).
void toWire(const Snapshot& snapshot, capnp::MessageBuilder& message,
            WireForm form = WireForm::kCurrent);

// Reads a Frame into `out`, its events in whichever form the frame carries them
// (readFrameEvents in event_columns.h). Precision on the wire: on-CPU time travels in
// microseconds (ProcessSample.cpuUs), so cpu_ns comes back as floor(cpu_ns / 1000) * 1000; every
// other value comes back exactly. Malformed event columns, or a frame carrying events in both
// forms, are an error naming the problem (`out` then holds the samples but no events).
absl::Status fromWire(wire::Frame::Reader frame, Snapshot& out);

// Metric.scaled / Metric.scaleDigits: the exact decimal form of a float64, when there is one with
// at most kMaxScaleDigits digits after the point whose float64 division gives back `v` bit for
// bit (so it is lossless by construction). False for 0, -0, NaN, infinities and values without
// such a form; those travel in Metric.value.
inline constexpr uint8_t kMaxScaleDigits = 9;
inline constexpr double kPow10[kMaxScaleDigits + 1] = {1e0, 1e1, 1e2, 1e3, 1e4,
                                                       1e5, 1e6, 1e7, 1e8, 1e9};
bool scaledDecimal(double v, int64_t* scaled, uint8_t* digits);
double scaledValue(int64_t scaled, uint8_t digits);
// The value of a wire Metric in either form.
double metricValue(wire::Metric::Reader metric);

}  // namespace vigil
