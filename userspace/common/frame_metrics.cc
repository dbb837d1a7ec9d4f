#include "userspace/common/frame_metrics.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace vigil {
namespace {

Labels with(const Labels& base, std::initializer_list<std::pair<std::string, std::string>> more) {
  Labels out = base;
  out.insert(out.end(), more.begin(), more.end());
  return out;
}

struct Family {
  const char* name;
  MetricType type;
  const char* help;
};

// Every family the frame renderer can emit. Keep docs/metrics.md in step.
constexpr Family kFamilies[] = {
    {"vigil_process_cpu_seconds_total", MetricType::kCounter,
     "On-CPU time of the process, from sched_switch."},
    {"vigil_process_context_switches_total", MetricType::kCounter,
     "Context switches of the process by kind (voluntary: blocked; involuntary: preempted)."},
    {"vigil_process_syscalls_total", MetricType::kCounter,
     "Syscalls entered (estimated when vigil_syscall_duty_cycle_ratio < 1)."},
    {"vigil_process_syscall_errors_total", MetricType::kCounter,
     "Syscalls that returned an error (estimated like vigil_process_syscalls_total)."},
    {"vigil_process_syscall_errno_total", MetricType::kCounter,
     "Failed syscalls of the process by errno, for its most frequent errnos."},
    {"vigil_process_tcp_sent_bytes_total", MetricType::kCounter, "TCP payload bytes sent."},
    {"vigil_process_tcp_received_bytes_total", MetricType::kCounter, "TCP payload bytes received."},
    {"vigil_process_udp_sent_bytes_total", MetricType::kCounter, "UDP payload bytes sent."},
    {"vigil_process_udp_received_bytes_total", MetricType::kCounter, "UDP payload bytes received."},
    {"vigil_process_tcp_retransmits_total", MetricType::kCounter, "TCP segments retransmitted."},
    {"vigil_process_tcp_active_opens_total", MetricType::kCounter, "TCP connects started."},
    {"vigil_process_tcp_passive_opens_total", MetricType::kCounter, "TCP connections accepted."},
    {"vigil_process_tcp_connect_failures_total", MetricType::kCounter,
     "TCP connects that never reached ESTABLISHED."},
    {"vigil_process_tcp_resets_total", MetricType::kCounter, "TCP resets by direction."},
    {"vigil_process_block_bytes_total", MetricType::kCounter,
     "Block I/O bytes issued by the process, by op (read, write)."},
    {"vigil_process_block_ops_total", MetricType::kCounter,
     "Block I/O requests issued by the process, by op."},
    {"vigil_container_cpu_seconds_total", MetricType::kCounter,
     "On-CPU time of all processes in the container."},
    {"vigil_container_syscalls_total", MetricType::kCounter, "Syscalls of the container."},
    {"vigil_container_syscall_errors_total", MetricType::kCounter,
     "Failed syscalls of the container."},
    {"vigil_container_tcp_sent_bytes_total", MetricType::kCounter, "TCP bytes sent."},
    {"vigil_container_tcp_received_bytes_total", MetricType::kCounter, "TCP bytes received."},
    {"vigil_container_block_bytes_total", MetricType::kCounter, "Block I/O bytes by op."},
    {"vigil_container_processes", MetricType::kGauge, "Processes seen in the container."},
    {"vigil_collector_up", MetricType::kGauge,
     "1 when the collector is running, 0 when disabled or unsupported (see reason)."},
    {"vigil_syscall_duty_cycle_ratio", MetricType::kGauge,
     "Fraction of each interval the syscall programs were attached (1 = continuous)."},
    {"vigil_collection_interval_seconds", MetricType::kGauge, "Collection interval in use."},
    {"vigil_config_version", MetricType::kGauge, "Version of the config the agent applied."},
};

void counterIfSet(MetricSink& out, const char* family, const Labels& labels, uint64_t v,
                  const ExpositionOptions& opts) {
  if (v != 0) {
    out.sample(family, labels, static_cast<double>(v), opts.timestamp_ms);
  }
}

}  // namespace

double log2BucketUpperSeconds(size_t i, uint64_t unit_ns) {
  return std::ldexp(1.0, static_cast<int>(i) + 1) * static_cast<double>(unit_ns) / 1e9;
}

void declareFrameFamilies(MetricSink& out) {
  for (const Family& f : kFamilies) {
    out.family(f.name, f.type, f.help);
  }
}

void writeProcessMetrics(const ProcessStats& p, const ExpositionOptions& opts, MetricSink& out) {
  Labels l = with(opts.base_labels, {{"pid", absl::StrCat(p.pid)}, {"comm", p.comm}});
  if (!p.container_id.empty()) {
    l.emplace_back("container_id", p.container_id);
  }
  auto ts = opts.timestamp_ms;
  out.sample("vigil_process_cpu_seconds_total", l, p.cpu_ns / 1e9, ts);
  out.sample("vigil_process_context_switches_total", with(l, {{"kind", "voluntary"}}),
             static_cast<double>(p.voluntary_switches), ts);
  out.sample("vigil_process_context_switches_total", with(l, {{"kind", "involuntary"}}),
             static_cast<double>(p.involuntary_switches), ts);
  counterIfSet(out, "vigil_process_syscalls_total", l, p.syscalls, opts);
  counterIfSet(out, "vigil_process_syscall_errors_total", l, p.syscall_errors, opts);
  for (const auto& [err, count] : p.top_errnos) {
    counterIfSet(out, "vigil_process_syscall_errno_total", with(l, {{"errno", absl::StrCat(err)}}),
                 count, opts);
  }
  counterIfSet(out, "vigil_process_tcp_sent_bytes_total", l, p.tcp_tx_bytes, opts);
  counterIfSet(out, "vigil_process_tcp_received_bytes_total", l, p.tcp_rx_bytes, opts);
  counterIfSet(out, "vigil_process_udp_sent_bytes_total", l, p.udp_tx_bytes, opts);
  counterIfSet(out, "vigil_process_udp_received_bytes_total", l, p.udp_rx_bytes, opts);
  counterIfSet(out, "vigil_process_tcp_retransmits_total", l, p.tcp_retransmits, opts);
  counterIfSet(out, "vigil_process_tcp_active_opens_total", l, p.tcp_active_opens, opts);
  counterIfSet(out, "vigil_process_tcp_passive_opens_total", l, p.tcp_passive_opens, opts);
  counterIfSet(out, "vigil_process_tcp_connect_failures_total", l, p.tcp_connect_failures, opts);
  counterIfSet(out, "vigil_process_tcp_resets_total", with(l, {{"direction", "sent"}}),
               p.tcp_resets_sent, opts);
  counterIfSet(out, "vigil_process_tcp_resets_total", with(l, {{"direction", "received"}}),
               p.tcp_resets_received, opts);
  counterIfSet(out, "vigil_process_block_bytes_total", with(l, {{"op", "read"}}),
               p.block_read_bytes, opts);
  counterIfSet(out, "vigil_process_block_bytes_total", with(l, {{"op", "write"}}),
               p.block_write_bytes, opts);
  counterIfSet(out, "vigil_process_block_ops_total", with(l, {{"op", "read"}}), p.block_read_ops,
               opts);
  counterIfSet(out, "vigil_process_block_ops_total", with(l, {{"op", "write"}}), p.block_write_ops,
               opts);
}

void writeSnapshotMetrics(const Snapshot& s, const ExpositionOptions& opts, MetricSink& out) {
  declareFrameFamilies(out);
  auto ts = opts.timestamp_ms;
  for (const auto& [pid, p] : s.processes) {
    writeProcessMetrics(p, opts, out);
  }
  for (const ContainerStats& c : s.containers) {
    Labels l = with(opts.base_labels, {{"cgroup", c.cgroup_path}});
    if (!c.container_id.empty()) {
      l.emplace_back("container_id", c.container_id);
      l.emplace_back("runtime", c.runtime);
    }
    if (!c.pod_uid.empty()) {
      l.emplace_back("pod_uid", c.pod_uid);
      l.emplace_back("qos_class", c.qos_class);
    }
    if (!c.systemd_unit.empty()) {
      l.emplace_back("unit", c.systemd_unit);
    }
    out.sample("vigil_container_cpu_seconds_total", l, c.cpu_ns / 1e9, ts);
    counterIfSet(out, "vigil_container_syscalls_total", l, c.syscalls, opts);
    counterIfSet(out, "vigil_container_syscall_errors_total", l, c.syscall_errors, opts);
    counterIfSet(out, "vigil_container_tcp_sent_bytes_total", l, c.tcp_tx_bytes, opts);
    counterIfSet(out, "vigil_container_tcp_received_bytes_total", l, c.tcp_rx_bytes, opts);
    counterIfSet(out, "vigil_container_block_bytes_total", with(l, {{"op", "read"}}),
                 c.block_read_bytes, opts);
    counterIfSet(out, "vigil_container_block_bytes_total", with(l, {{"op", "write"}}),
                 c.block_write_bytes, opts);
    out.sample("vigil_container_processes", l, c.processes, ts);
  }
  for (const auto* list : {&s.host, &s.self}) {
    for (const MetricSample& m : *list) {
      Labels l = opts.base_labels;
      l.insert(l.end(), m.labels.begin(), m.labels.end());
      out.ensureFamily(m.name, m.counter ? MetricType::kCounter : MetricType::kGauge);
      out.sample(m.name, l, m.value, ts);
    }
  }
  for (const HistogramSample& h : s.histograms) {
    Labels l = opts.base_labels;
    l.insert(l.end(), h.labels.begin(), h.labels.end());
    out.ensureFamily(h.name, MetricType::kHistogram);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < h.buckets.size(); ++i) {
      cumulative += h.buckets[i];
      out.sample(h.name, absl::StrCat(h.name, "_bucket"),
                 with(l, {{"le", formatValue(log2BucketUpperSeconds(i, h.unit_ns))}}),
                 static_cast<double>(cumulative), ts);
    }
    out.sample(h.name, absl::StrCat(h.name, "_bucket"), with(l, {{"le", "+Inf"}}),
               static_cast<double>(h.count), ts);
    out.sample(h.name, absl::StrCat(h.name, "_sum"), l, h.sum_units * (h.unit_ns / 1e9), ts);
    out.sample(h.name, absl::StrCat(h.name, "_count"), l, static_cast<double>(h.count), ts);
  }
  for (const CollectorState& c : s.collectors) {
    Labels l = with(opts.base_labels, {{"collector", c.name}});
    if (!c.up && !c.reason.empty()) {
      l.emplace_back("reason", c.reason);
    }
    out.sample("vigil_collector_up", l, c.up ? 1 : 0, ts);
  }
  out.sample("vigil_syscall_duty_cycle_ratio", opts.base_labels, s.syscall_duty_cycle, ts);
  out.sample("vigil_collection_interval_seconds", opts.base_labels, s.interval_ms / 1000.0, ts);
  out.sample("vigil_config_version", opts.base_labels, static_cast<double>(s.config_version), ts);
}

}  // namespace vigil
