#include "userspace/cli/snapshot_json.h"

#include <capnp/compat/json.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "userspace/common/frame_metrics.h"

namespace vigil::cli {
namespace {

using nlohmann::json;

json labelsToJson(const Labels& labels) {
  json out = json::object();
  for (const auto& [k, v] : labels) {
    out[k] = v;
  }
  return out;
}

// Collects what frame_metrics renders for one process or container, so every metric a
// collector adds there appears in the JSON under its Prometheus name without a change here.
// Identity labels (pid, comm, ...) are dropped; one remaining label becomes an object keyed by
// its value, more become an array of {labels, value}.
class JsonSink final : public MetricSink {
 public:
  JsonSink(json& target, std::vector<std::string> identity, std::string prefix)
      : target_(target), identity_(std::move(identity)), prefix_(std::move(prefix)) {}

  void family(absl::string_view, MetricType, absl::string_view) override {}
  void ensureFamily(absl::string_view, MetricType) override {}
  void sample(absl::string_view family, absl::string_view name, const Labels& labels, double value,
              std::optional<int64_t>) override {
    if (!absl::StartsWith(name, prefix_)) {
      return;
    }
    Labels extra;
    for (const auto& l : labels) {
      if (std::find(identity_.begin(), identity_.end(), l.first) == identity_.end()) {
        extra.push_back(l);
      }
    }
    json v = number(value);
    std::string key(name);
    if (extra.empty()) {
      target_[key] = v;
    } else if (extra.size() == 1) {
      json& slot = target_[key];
      if (!slot.is_object()) {
        slot = json::object();
      }
      slot[extra[0].second] = v;
    } else {
      json& slot = target_[key];
      if (!slot.is_array()) {
        slot = json::array();
      }
      slot.push_back({{"labels", labelsToJson(extra)}, {"value", v}});
    }
  }

  // Counts stay integers in the JSON.
  static json number(double v) {
    if (v >= 0 && v < 9007199254740992.0 && v == static_cast<double>(static_cast<uint64_t>(v))) {
      return json(static_cast<uint64_t>(v));
    }
    return json(v);
  }

 private:
  json& target_;
  std::vector<std::string> identity_;
  std::string prefix_;
};

json processToJson(const ProcessStats& p) {
  json o;
  o["pid"] = p.pid;
  o["comm"] = p.comm;
  o["cgroup_id"] = p.cgroup_id;
  o["container_id"] = p.container_id;
  o["cmdline"] = p.cmdline;
  o["exited"] = p.exited;
  o["vigil_process_cpu_seconds_total"] = p.cpu_ns / 1e9;
  o["vigil_process_context_switches_total"] = {{"voluntary", p.voluntary_switches},
                                               {"involuntary", p.involuntary_switches}};
  o["vigil_process_syscalls_total"] = p.syscalls;
  o["vigil_process_syscall_errors_total"] = p.syscall_errors;
  json errnos = json::object();
  for (const auto& [err, count] : p.top_errnos) {
    errnos[absl::StrCat(err)] = count;
  }
  o["vigil_process_syscall_errno_total"] = errnos;
  o["vigil_process_tcp_sent_bytes_total"] = p.tcp_tx_bytes;
  o["vigil_process_tcp_received_bytes_total"] = p.tcp_rx_bytes;
  o["vigil_process_udp_sent_bytes_total"] = p.udp_tx_bytes;
  o["vigil_process_udp_received_bytes_total"] = p.udp_rx_bytes;
  o["vigil_process_tcp_retransmits_total"] = p.tcp_retransmits;
  o["vigil_process_tcp_active_opens_total"] = p.tcp_active_opens;
  o["vigil_process_tcp_passive_opens_total"] = p.tcp_passive_opens;
  o["vigil_process_tcp_connect_failures_total"] = p.tcp_connect_failures;
  o["vigil_process_tcp_resets_total"] = {{"sent", p.tcp_resets_sent},
                                         {"received", p.tcp_resets_received}};
  o["vigil_process_block_bytes_total"] = {{"read", p.block_read_bytes},
                                          {"write", p.block_write_bytes}};
  o["vigil_process_block_ops_total"] = {{"read", p.block_read_ops}, {"write", p.block_write_ops}};
  // Anything else the renderer emits for a process (and the same values again).
  JsonSink sink(o, {"pid", "comm", "container_id"}, "vigil_process_");
  writeProcessMetrics(p, ExpositionOptions{}, sink);
  return o;
}

json containerToJson(const ContainerStats& c) {
  json o;
  o["cgroup_id"] = c.cgroup_id;
  o["cgroup"] = c.cgroup_path;
  o["container_id"] = c.container_id;
  o["runtime"] = c.runtime;
  o["pod_uid"] = c.pod_uid;
  o["qos_class"] = c.qos_class;
  o["unit"] = c.systemd_unit;
  o["vigil_container_cpu_seconds_total"] = c.cpu_ns / 1e9;
  o["vigil_container_syscalls_total"] = c.syscalls;
  o["vigil_container_syscall_errors_total"] = c.syscall_errors;
  o["vigil_container_tcp_sent_bytes_total"] = c.tcp_tx_bytes;
  o["vigil_container_tcp_received_bytes_total"] = c.tcp_rx_bytes;
  o["vigil_container_block_bytes_total"] = {{"read", c.block_read_bytes},
                                            {"write", c.block_write_bytes}};
  o["vigil_container_processes"] = c.processes;
  Snapshot one;
  one.containers.push_back(c);
  JsonSink sink(o, {"cgroup", "container_id", "runtime", "pod_uid", "qos_class", "unit"},
                "vigil_container_");
  writeSnapshotMetrics(one, ExpositionOptions{}, sink);
  return o;
}

json histogramToJson(const HistogramSample& h) {
  json o;
  o["name"] = h.name;
  o["labels"] = labelsToJson(h.labels);
  o["unit_ns"] = h.unit_ns;
  o["count"] = h.count;
  o["sum_seconds"] = h.sum_units * (h.unit_ns / 1e9);
  json buckets = json::array();
  for (size_t i = 0; i < h.buckets.size(); ++i) {
    if (h.buckets[i] != 0) {
      buckets.push_back(
          {{"le_seconds", log2BucketUpperSeconds(i, h.unit_ns)}, {"count", h.buckets[i]}});
    }
  }
  o["buckets"] = buckets;
  double p50 = log2Quantile(h.buckets, h.unit_ns, 0.5);
  double p99 = log2Quantile(h.buckets, h.unit_ns, 0.99);
  o["p50_seconds"] = p50 < 0 ? json(nullptr) : json(p50);
  o["p99_seconds"] = p99 < 0 ? json(nullptr) : json(p99);
  return o;
}

}  // namespace

double log2Quantile(const std::vector<uint64_t>& buckets, uint64_t unit_ns, double q) {
  uint64_t total = 0;
  for (uint64_t b : buckets) {
    total += b;
  }
  if (total == 0) {
    return -1;
  }
  double want = q * static_cast<double>(total);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < buckets.size(); ++i) {
    cumulative += buckets[i];
    if (static_cast<double>(cumulative) >= want) {
      return log2BucketUpperSeconds(i, unit_ns);
    }
  }
  return log2BucketUpperSeconds(buckets.size() - 1, unit_ns);
}

json metricsToJson(const std::vector<MetricSample>& metrics) {
  json out = json::object();
  for (const MetricSample& m : metrics) {
    if (m.labels.empty()) {
      out[m.name] = m.value;
      continue;
    }
    json& slot = out[m.name];
    if (!slot.is_array()) {
      slot = json::array();
    }
    slot.push_back({{"labels", labelsToJson(m.labels)}, {"value", m.value}});
  }
  return out;
}

json snapshotToJson(const Snapshot& s) {
  json o;
  o["schema"] = 1;
  o["agent"] = {{"agent_id", s.agent.agent_id},
                {"node", s.agent.node_name},
                {"version", s.agent.version},
                {"kernel", s.agent.kernel},
                {"labels", labelsToJson(s.agent.labels)}};
  o["start_unix_ns"] = s.start_unix_ns;
  o["end_unix_ns"] = s.end_unix_ns;
  o["duration_seconds"] = (s.end_unix_ns - s.start_unix_ns) / 1e9;
  o["vigil_syscall_duty_cycle_ratio"] = s.syscall_duty_cycle;
  json collectors = json::array();
  for (const CollectorState& c : s.collectors) {
    collectors.push_back({{"collector", c.name}, {"up", c.up}, {"reason", c.reason}});
  }
  o["collectors"] = collectors;
  o["host"] = metricsToJson(s.host);

  std::vector<const ProcessStats*> procs;
  for (const auto& [pid, p] : s.processes) {
    procs.push_back(&p);
  }
  std::sort(procs.begin(), procs.end(),
            [](const ProcessStats* a, const ProcessStats* b) { return a->pid < b->pid; });
  json processes = json::array();
  for (const ProcessStats* p : procs) {
    processes.push_back(processToJson(*p));
  }
  o["processes"] = processes;

  json containers = json::array();
  for (const ContainerStats& c : s.containers) {
    containers.push_back(containerToJson(c));
  }
  o["containers"] = containers;

  json histograms = json::array();
  for (const HistogramSample& h : s.histograms) {
    histograms.push_back(histogramToJson(h));
  }
  o["histograms"] = histograms;

  // Events keep their Cap'n Proto field names (capnp's JSON codec), so every event kind the
  // schema gains appears here without a change to this file.
  capnp::JsonCodec codec;
  json events = json::array();
  for (const auto& e : s.events) {
    kj::String text = codec.encode(e.getReader());
    events.push_back(json::parse(text.cStr(), nullptr, /*allow_exceptions=*/false));
  }
  o["events"] = events;
  o["self"] = metricsToJson(s.self);
  return o;
}

}  // namespace vigil::cli
