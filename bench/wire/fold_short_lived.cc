#include "bench/wire/fold_short_lived.h"

#include <algorithm>
#include <vector>

namespace vigil::bench {
namespace {

// Adds the counters of `p` to `into` (every counter of ProcessStats; identity fields are the
// aggregate's own). top_errnos are merged by errno and cut to the longest list folded.
void addCounters(const ProcessStats& p, ProcessStats& into) {
  into.cpu_ns += p.cpu_ns;
  into.voluntary_switches += p.voluntary_switches;
  into.involuntary_switches += p.involuntary_switches;
  into.syscalls += p.syscalls;
  into.syscall_errors += p.syscall_errors;
  into.tcp_tx_bytes += p.tcp_tx_bytes;
  into.tcp_rx_bytes += p.tcp_rx_bytes;
  into.udp_tx_bytes += p.udp_tx_bytes;
  into.udp_rx_bytes += p.udp_rx_bytes;
  into.tcp_retransmits += p.tcp_retransmits;
  into.tcp_active_opens += p.tcp_active_opens;
  into.tcp_passive_opens += p.tcp_passive_opens;
  into.tcp_connect_failures += p.tcp_connect_failures;
  into.tcp_resets_sent += p.tcp_resets_sent;
  into.tcp_resets_received += p.tcp_resets_received;
  into.block_read_bytes += p.block_read_bytes;
  into.block_write_bytes += p.block_write_bytes;
  into.block_read_ops += p.block_read_ops;
  into.block_write_ops += p.block_write_ops;
  into.tcp_closes += p.tcp_closes;
  into.tcp_connect_refused += p.tcp_connect_refused;
  into.tcp_connect_timeouts += p.tcp_connect_timeouts;
  into.tcp_connects += p.tcp_connects;
  into.tcp_connect_latency_sum_ns += p.tcp_connect_latency_sum_ns;
  if (p.top_errnos.empty()) {
    return;
  }
  size_t keep = std::max(into.top_errnos.size(), p.top_errnos.size());
  for (const auto& [err, n] : p.top_errnos) {
    auto it = std::find_if(into.top_errnos.begin(), into.top_errnos.end(),
                           [err = err](const auto& e) { return e.first == err; });
    if (it == into.top_errnos.end()) {
      into.top_errnos.emplace_back(err, n);
    } else {
      it->second += n;
    }
  }
  std::stable_sort(into.top_errnos.begin(), into.top_errnos.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  into.top_errnos.resize(std::min(keep, into.top_errnos.size()));
}

}  // namespace

absl::flat_hash_map<uint32_t, ProcessStats> ShortLivedFolder::fold(
    const absl::flat_hash_map<uint32_t, ProcessStats>& processes,
    const absl::flat_hash_set<uint32_t>& previous_pids) {
  // Short-lived: not in the previous frame and already gone (this is its only frame).
  std::vector<const ProcessStats*> short_lived;
  absl::flat_hash_map<uint32_t, ProcessStats> out;
  for (const auto& [pid, p] : processes) {
    if (p.exited && previous_pids.count(pid) == 0) {
      short_lived.push_back(&p);
    } else {
      out.emplace(pid, p);
    }
  }
  // The K busiest keep their own sample (ties broken by pid, so a run is reproducible).
  std::sort(short_lived.begin(), short_lived.end(), [](const auto* a, const auto* b) {
    return a->cpu_ns != b->cpu_ns ? a->cpu_ns > b->cpu_ns : a->pid < b->pid;
  });
  size_t keep = std::min(keep_busiest_, short_lived.size());
  for (size_t i = 0; i < keep; ++i) {
    out.emplace(short_lived[i]->pid, *short_lived[i]);
  }
  last_folded_ = short_lived.size() - keep;
  for (size_t i = keep; i < short_lived.size(); ++i) {
    const ProcessStats& p = *short_lived[i];
    auto [it, added] =
        pid_of_key_.try_emplace(std::make_pair(p.comm, p.cgroup_id),
                                0xffffffffu - static_cast<uint32_t>(pid_of_key_.size()));
    Aggregate& agg = aggregates_[it->second];
    if (added) {
      agg.stats.pid = it->second;
      agg.stats.comm = p.comm;
      agg.stats.cgroup_id = p.cgroup_id;
      agg.stats.container_id = p.container_id;
    }
    addCounters(p, agg.stats);
    agg.folded++;
  }
  for (const auto& [pid, agg] : aggregates_) {
    out.emplace(pid, agg.stats);
  }
  return out;
}

uint64_t ShortLivedFolder::foldedCount(uint32_t pid) const {
  auto it = aggregates_.find(pid);
  return it == aggregates_.end() ? 0 : it->second.folded;
}

}  // namespace vigil::bench
