#include "userspace/common/frame_metrics.h"

#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace vigil {
namespace {

Labels with(const Labels& base, std::initializer_list<std::pair<std::string, std::string>> more) {
  Labels out = base;
  out.insert(out.end(), more.begin(), more.end());
  return out;
}

// A label set plus one trailing label that is rewritten in place for each sample that needs it
// (kind="voluntary", then kind="involuntary", ...): the same labels as with(base, {{k, v}}),
// without copying the whole set for every sample. The aggregator renders every frame of every
// agent through here, so these copies were a good part of its per-sample cost.
class PlusOne {
 public:
  explicit PlusOne(const Labels& base) : labels_(base) { labels_.emplace_back(); }
  const Labels& operator()(absl::string_view key, absl::string_view value) {
    labels_.back().first.assign(key.data(), key.size());
    labels_.back().second.assign(value.data(), value.size());
    return labels_;
  }

 private:
  Labels labels_;
};

// The "le" label values of a log2 histogram with `unit_ns` units, formatted once per thread.
const std::string& leValue(size_t i, uint64_t unit_ns) {
  thread_local absl::flat_hash_map<uint64_t, std::vector<std::string>> cache;
  std::vector<std::string>& v = cache[unit_ns];
  while (v.size() <= i) {
    v.push_back(formatValue(log2BucketUpperSeconds(v.size(), unit_ns)));
  }
  return v[i];
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
    {"vigil_process_tcp_closes_total", MetricType::kCounter,
     "Established TCP connections of the process that closed."},
    {"vigil_process_tcp_connect_errors_total", MetricType::kCounter,
     "Failed TCP connects by socket error (refused: ECONNREFUSED, timed_out: ETIMEDOUT)."},
    {"vigil_process_tcp_connects_total", MetricType::kCounter,
     "TCP connects that reached ESTABLISHED (connect-latency samples)."},
    {"vigil_process_tcp_connect_latency_seconds_total", MetricType::kCounter,
     "Sum of SYN_SENT -> ESTABLISHED times of the process's connects."},
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
    // Kernel collectors (sched, syscalls, block); see docs/metrics.md "Kernel collectors".
    {"vigil_runqueue_latency_seconds", MetricType::kHistogram,
     "Run-queue latency of all tasks: from wakeup (or preemption) to running again."},
    {"vigil_process_runqueue_latency_seconds", MetricType::kHistogram,
     "Run-queue latency of the process's threads (the processes that waited longest only)."},
    {"vigil_cgroup_runqueue_latency_seconds", MetricType::kHistogram,
     "Run-queue latency of the tasks of a cgroup v2 (label cgroup_id)."},
    {"vigil_runqueue_process_histograms_dropped", MetricType::kGauge,
     "Processes whose run-queue histogram was left out of this frame by the series cap."},
    {"vigil_runqueue_cgroups_evicted_total", MetricType::kCounter,
     "Per-cgroup run-queue histograms deleted after 30 idle collections (removed cgroups)."},
    {"vigil_syscalls_total", MetricType::kCounter,
     "Syscalls on the host (estimated when vigil_syscall_duty_cycle_ratio < 1)."},
    {"vigil_syscall_errors_total", MetricType::kCounter,
     "Failed syscalls on the host (estimated like vigil_syscalls_total)."},
    {"vigil_syscall_latency_seconds", MetricType::kHistogram,
     "Syscall latency (sys_enter to sys_exit), host-wide; scaled like vigil_syscalls_total."},
    {"vigil_syscall_attached_seconds_total", MetricType::kCounter,
     "Time the syscall programs were attached."},
    {"vigil_syscall_attach_windows_total", MetricType::kCounter,
     "Times the syscall programs were attached (one per sampling window)."},
    {"vigil_syscall_attach_failures_total", MetricType::kCounter,
     "Failed attempts to attach the syscall programs."},
    {"vigil_block_device_ops_total", MetricType::kCounter,
     "Block requests issued to the disk, by op (read, write, other)."},
    {"vigil_block_device_bytes_total", MetricType::kCounter,
     "Bytes of the block requests issued to the disk, by op."},
    {"vigil_block_latency_seconds", MetricType::kHistogram,
     "Block request latency from issue to completion, per disk and op."},
    {"vigil_block_completions_without_issue_total", MetricType::kCounter,
     "Block completions of requests whose issue was not seen (no latency sample)."},
    {"vigil_block_completions_unmatched_total", MetricType::kCounter,
     "Block completions of requests not tracked (issued before load, filtered, partial)."},
    {"vigil_block_reissues_total", MetricType::kCounter,
     "Block requests issued again after a driver requeue (counted once)."},
};

void counterIfSet(MetricSink& out, const char* family, const Labels& labels, uint64_t v,
                  const ExpositionOptions& opts) {
  if (v != 0) {
    out.sample(family, labels, static_cast<double>(v), opts.timestamp_ms);
  }
}

// Host metrics (userspace/host/host_metrics.cc, docs/metrics.md "Host metrics").
constexpr Family kHostFamilies[] = {
    {"vigil_host_cpu_seconds_total", MetricType::kCounter,
     "CPU time per CPU by mode (/proc/stat)."},
    {"vigil_host_cpu_all_seconds_total", MetricType::kCounter,
     "CPU time of all CPUs by mode (/proc/stat aggregate line)."},
    {"vigil_host_cpu_guest_seconds_total", MetricType::kCounter,
     "Guest CPU time per CPU (already included in user/nice)."},
    {"vigil_host_cpu_all_guest_seconds_total", MetricType::kCounter,
     "Guest CPU time of all CPUs (already included in user/nice)."},
    {"vigil_host_cpus", MetricType::kGauge, "CPUs listed in /proc/stat."},
    {"vigil_host_context_switches_total", MetricType::kCounter, "Context switches (/proc/stat)."},
    {"vigil_host_forks_total", MetricType::kCounter, "Processes and threads created."},
    {"vigil_host_interrupts_total", MetricType::kCounter, "Interrupts serviced."},
    {"vigil_host_procs_running", MetricType::kGauge, "Runnable tasks."},
    {"vigil_host_procs_blocked", MetricType::kGauge, "Tasks blocked on I/O."},
    {"vigil_host_boot_time_seconds", MetricType::kGauge, "Boot time, unix seconds."},
    {"vigil_host_uptime_seconds", MetricType::kGauge, "Seconds since boot (/proc/uptime)."},
    {"vigil_host_load1", MetricType::kGauge, "1-minute load average."},
    {"vigil_host_load5", MetricType::kGauge, "5-minute load average."},
    {"vigil_host_load15", MetricType::kGauge, "15-minute load average."},
    {"vigil_host_memory_total_bytes", MetricType::kGauge, "MemTotal (/proc/meminfo)."},
    {"vigil_host_memory_available_bytes", MetricType::kGauge, "MemAvailable."},
    {"vigil_host_memory_free_bytes", MetricType::kGauge, "MemFree."},
    {"vigil_host_memory_cached_bytes", MetricType::kGauge, "Cached."},
    {"vigil_host_memory_buffers_bytes", MetricType::kGauge, "Buffers."},
    {"vigil_host_memory_shmem_bytes", MetricType::kGauge, "Shmem."},
    {"vigil_host_memory_dirty_bytes", MetricType::kGauge, "Dirty."},
    {"vigil_host_memory_swap_total_bytes", MetricType::kGauge, "SwapTotal."},
    {"vigil_host_memory_swap_free_bytes", MetricType::kGauge, "SwapFree."},
    {"vigil_host_filesystem_size_bytes", MetricType::kGauge, "Filesystem size (statvfs)."},
    {"vigil_host_filesystem_free_bytes", MetricType::kGauge,
     "Free bytes, including those reserved for root."},
    {"vigil_host_filesystem_avail_bytes", MetricType::kGauge,
     "Bytes available to unprivileged users."},
    {"vigil_host_filesystem_files", MetricType::kGauge, "Inodes."},
    {"vigil_host_filesystem_files_free", MetricType::kGauge, "Free inodes."},
    {"vigil_host_filesystem_readonly", MetricType::kGauge, "1 when mounted read-only."},
    {"vigil_host_filesystem_device_error", MetricType::kGauge,
     "1 when statvfs() failed or timed out for the mount."},
    {"vigil_host_disk_reads_completed_total", MetricType::kCounter, "Reads completed."},
    {"vigil_host_disk_reads_merged_total", MetricType::kCounter, "Reads merged."},
    {"vigil_host_disk_read_bytes_total", MetricType::kCounter, "Bytes read."},
    {"vigil_host_disk_read_time_seconds_total", MetricType::kCounter, "Time spent reading."},
    {"vigil_host_disk_writes_completed_total", MetricType::kCounter, "Writes completed."},
    {"vigil_host_disk_writes_merged_total", MetricType::kCounter, "Writes merged."},
    {"vigil_host_disk_written_bytes_total", MetricType::kCounter, "Bytes written."},
    {"vigil_host_disk_write_time_seconds_total", MetricType::kCounter, "Time spent writing."},
    {"vigil_host_disk_io_now", MetricType::kGauge, "I/O requests in flight."},
    {"vigil_host_disk_io_time_seconds_total", MetricType::kCounter, "Time the device was busy."},
    {"vigil_host_disk_io_time_weighted_seconds_total", MetricType::kCounter,
     "Busy time weighted by requests in flight."},
    {"vigil_host_disk_discards_completed_total", MetricType::kCounter, "Discards completed."},
    {"vigil_host_disk_discarded_sectors_total", MetricType::kCounter, "Sectors discarded."},
    {"vigil_host_disk_flush_requests_total", MetricType::kCounter, "Flush requests completed."},
    {"vigil_host_network_receive_bytes_total", MetricType::kCounter, "Bytes received."},
    {"vigil_host_network_receive_packets_total", MetricType::kCounter, "Packets received."},
    {"vigil_host_network_receive_errs_total", MetricType::kCounter, "Receive errors."},
    {"vigil_host_network_receive_drop_total", MetricType::kCounter, "Received packets dropped."},
    {"vigil_host_network_receive_multicast_total", MetricType::kCounter,
     "Multicast packets received."},
    {"vigil_host_network_transmit_bytes_total", MetricType::kCounter, "Bytes sent."},
    {"vigil_host_network_transmit_packets_total", MetricType::kCounter, "Packets sent."},
    {"vigil_host_network_transmit_errs_total", MetricType::kCounter, "Transmit errors."},
    {"vigil_host_network_transmit_drop_total", MetricType::kCounter, "Transmit drops."},
    {"vigil_host_network_transmit_colls_total", MetricType::kCounter, "Collisions."},
    {"vigil_host_pressure_cpu_waiting_seconds_total", MetricType::kCounter,
     "PSI cpu some: time at least one task waited for CPU."},
    {"vigil_host_pressure_cpu_stalled_seconds_total", MetricType::kCounter,
     "PSI cpu full: time all non-idle tasks waited for CPU."},
    {"vigil_host_pressure_memory_waiting_seconds_total", MetricType::kCounter, "PSI memory some."},
    {"vigil_host_pressure_memory_stalled_seconds_total", MetricType::kCounter, "PSI memory full."},
    {"vigil_host_pressure_io_waiting_seconds_total", MetricType::kCounter, "PSI io some."},
    {"vigil_host_pressure_io_stalled_seconds_total", MetricType::kCounter, "PSI io full."},
    {"vigil_host_filefd_allocated", MetricType::kGauge, "File handles allocated."},
    {"vigil_host_filefd_maximum", MetricType::kGauge, "File handle limit (fs.file-max)."},
    {"vigil_host_parse_errors_total", MetricType::kCounter,
     "Host /proc text or statfs calls that failed, by source; the rest is still exported."},
};

}  // namespace

double log2BucketUpperSeconds(size_t i, uint64_t unit_ns) {
  return std::ldexp(1.0, static_cast<int>(i) + 1) * static_cast<double>(unit_ns) / 1e9;
}

void declareFrameFamilies(MetricSink& out) {
  for (const Family& f : kFamilies) {
    out.family(f.name, f.type, f.help);
  }
  for (const Family& f : kHostFamilies) {
    out.family(f.name, f.type, f.help);
  }
}

void writeProcessMetrics(const ProcessStats& p, const ExpositionOptions& opts, MetricSink& out) {
  Labels l = opts.base_labels;
  l.reserve(l.size() + 3);
  l.emplace_back("pid", absl::StrCat(p.pid));
  l.emplace_back("comm", p.comm);
  if (!p.container_id.empty()) {
    l.emplace_back("container_id", p.container_id);
  }
  PlusOne plus(l);
  auto ts = opts.timestamp_ms;
  out.sample("vigil_process_cpu_seconds_total", l, p.cpu_ns / 1e9, ts);
  out.sample("vigil_process_context_switches_total", plus("kind", "voluntary"),
             static_cast<double>(p.voluntary_switches), ts);
  out.sample("vigil_process_context_switches_total", plus("kind", "involuntary"),
             static_cast<double>(p.involuntary_switches), ts);
  counterIfSet(out, "vigil_process_syscalls_total", l, p.syscalls, opts);
  counterIfSet(out, "vigil_process_syscall_errors_total", l, p.syscall_errors, opts);
  for (const auto& [err, count] : p.top_errnos) {
    if (count != 0) {
      counterIfSet(out, "vigil_process_syscall_errno_total", plus("errno", absl::StrCat(err)),
                   count, opts);
    }
  }
  counterIfSet(out, "vigil_process_tcp_sent_bytes_total", l, p.tcp_tx_bytes, opts);
  counterIfSet(out, "vigil_process_tcp_received_bytes_total", l, p.tcp_rx_bytes, opts);
  counterIfSet(out, "vigil_process_udp_sent_bytes_total", l, p.udp_tx_bytes, opts);
  counterIfSet(out, "vigil_process_udp_received_bytes_total", l, p.udp_rx_bytes, opts);
  counterIfSet(out, "vigil_process_tcp_retransmits_total", l, p.tcp_retransmits, opts);
  counterIfSet(out, "vigil_process_tcp_active_opens_total", l, p.tcp_active_opens, opts);
  counterIfSet(out, "vigil_process_tcp_passive_opens_total", l, p.tcp_passive_opens, opts);
  counterIfSet(out, "vigil_process_tcp_connect_failures_total", l, p.tcp_connect_failures, opts);
  counterIfSet(out, "vigil_process_tcp_resets_total", plus("direction", "sent"), p.tcp_resets_sent,
               opts);
  counterIfSet(out, "vigil_process_tcp_resets_total", plus("direction", "received"),
               p.tcp_resets_received, opts);
  counterIfSet(out, "vigil_process_tcp_closes_total", l, p.tcp_closes, opts);
  counterIfSet(out, "vigil_process_tcp_connect_errors_total", plus("reason", "refused"),
               p.tcp_connect_refused, opts);
  counterIfSet(out, "vigil_process_tcp_connect_errors_total", plus("reason", "timed_out"),
               p.tcp_connect_timeouts, opts);
  counterIfSet(out, "vigil_process_tcp_connects_total", l, p.tcp_connects, opts);
  if (p.tcp_connect_latency_sum_ns != 0) {
    out.sample("vigil_process_tcp_connect_latency_seconds_total", l,
               p.tcp_connect_latency_sum_ns / 1e9, opts.timestamp_ms);
  }
  counterIfSet(out, "vigil_process_block_bytes_total", plus("op", "read"), p.block_read_bytes,
               opts);
  counterIfSet(out, "vigil_process_block_bytes_total", plus("op", "write"), p.block_write_bytes,
               opts);
  counterIfSet(out, "vigil_process_block_ops_total", plus("op", "read"), p.block_read_ops, opts);
  counterIfSet(out, "vigil_process_block_ops_total", plus("op", "write"), p.block_write_ops, opts);
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
    std::string bucket = absl::StrCat(h.name, "_bucket");
    PlusOne le(l);
    for (size_t i = 0; i < h.buckets.size(); ++i) {
      cumulative += h.buckets[i];
      out.sample(h.name, bucket, le("le", leValue(i, h.unit_ns)), static_cast<double>(cumulative),
                 ts);
    }
    out.sample(h.name, bucket, le("le", "+Inf"), static_cast<double>(h.count), ts);
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
