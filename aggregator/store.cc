#include "aggregator/store.h"

#include <algorithm>

#include "userspace/common/frame_metrics.h"

namespace vigil::aggregator {

AgentRecord& Store::record(const std::string& agent_id) {
  auto& slot = agents_[agent_id];
  if (!slot) {
    slot = std::make_unique<AgentRecord>();
    slot->info.agent_id = agent_id;
  }
  return *slot;
}

uint64_t Store::agentConnected(const AgentInfo& info, uint64_t boot_epoch, int64_t now_ns) {
  AgentRecord& r = record(info.agent_id);
  r.info = info;
  r.connections++;
  r.offline_since_ns = 0;
  r.offline_reason.clear();
  if (boot_epoch < r.boot_epoch) {
    // An older epoch's spooled frames are being delivered: the latest state stays as it is.
    r.online = true;
    r.last_seen_ns = now_ns;
    return r.last_seq;
  }
  if (r.boot_epoch != boot_epoch) {
    // A new agent process: its seq restarts at 1 and its cumulative counters at zero.
    r.boot_epoch = boot_epoch;
    r.last_seq = 0;
    r.processes.clear();
  }
  r.online = true;
  r.last_seen_ns = now_ns;
  r.connected_since_ns = now_ns;
  return r.last_seq;
}

void Store::agentDisconnected(const std::string& agent_id, int64_t now_ns) {
  auto it = agents_.find(agent_id);
  if (it != agents_.end()) {
    AgentRecord& r = *it->second;
    r.connections = r.connections > 0 ? r.connections - 1 : 0;
    if (r.connections == 0) {
      if (r.online || r.offline_since_ns == 0) {
        r.offline_since_ns = now_ns;
        r.offline_reason = "connection_lost";
      }
      r.online = false;
    }
  }
}

std::vector<std::string> Store::expireSilent(int64_t now_ns, int64_t max_silence_ns) {
  std::vector<std::string> out;
  for (auto& [id, r] : agents_) {
    if (r->online && now_ns - r->last_seen_ns > max_silence_ns) {
      r->online = false;
      r->offline_since_ns = now_ns;
      r->offline_reason = "heartbeat_missed";
      out.push_back(id);
    }
  }
  return out;
}

std::vector<OfflineAgent> Store::offlineAgents() const {
  std::vector<OfflineAgent> out;
  for (const auto& [id, r] : agents_) {
    if (!r->online) {
      out.push_back(OfflineAgent{id, r->info.node_name, r->offline_since_ns, r->last_seen_ns,
                                 r->offline_reason});
    }
  }
  return out;
}

void Store::setConfigVersion(const std::string& agent_id, uint64_t version) {
  auto it = agents_.find(agent_id);
  if (it != agents_.end()) {
    it->second->config_version = version;
  }
}

void Store::heartbeat(const std::string& agent_id, int64_t now_ns) {
  auto it = agents_.find(agent_id);
  if (it != agents_.end()) {
    AgentRecord& r = *it->second;
    r.last_seen_ns = now_ns;
    if (!r.online && r.connections > 0) {
      r.online = true;  // heartbeats resumed on a live connection
      r.offline_since_ns = 0;
      r.offline_reason.clear();
    }
  }
}

void Store::apply(const Snapshot& frame, int64_t now_ns, bool notify) {
  AgentRecord& r = record(frame.agent.agent_id);
  if (frame.boot_epoch < r.boot_epoch) {
    // A late frame of an earlier epoch (replayed from the agent's spool): it is in the ingest
    // log for consumers, but the latest state belongs to the current epoch.
    r.frames++;
    return;
  }
  if (r.boot_epoch != frame.boot_epoch) {
    r.boot_epoch = frame.boot_epoch;
    r.processes.clear();
  }
  r.last_seq = frame.seq;
  r.last_seen_ns = now_ns;
  r.frames++;
  r.config_version = frame.config_version;
  r.host = frame.host;
  r.self = frame.self;
  r.histograms = frame.histograms;
  r.containers = frame.containers;
  r.collectors = frame.collectors;
  r.syscall_duty_cycle = frame.syscall_duty_cycle;
  r.interval_ms = frame.interval_ms;
  for (const auto& [pid, p] : frame.processes) {
    auto& entry = r.processes[pid];
    if (entry.stats.comm != p.comm && !entry.stats.comm.empty()) {
      // pid reuse: a different program under the same pid starts from zero.
      entry = {};
    }
    entry.cpu_delta_ns = p.cpu_ns >= entry.stats.cpu_ns ? p.cpu_ns - entry.stats.cpu_ns : p.cpu_ns;
    entry.stats = p;
    entry.last_seen_ns = now_ns;
  }
  for (auto it = r.processes.begin(); it != r.processes.end();) {
    auto cur = it++;
    if (now_ns - cur->second.last_seen_ns > options_.process_ttl_ns) {
      r.processes.erase(cur);
    }
  }
  if (notify && listener_) {
    listener_(frame);
  }
}

void Store::render(MetricSink& out, int64_t now_ns, bool agent_level_only) {
  declareFrameFamilies(out);
  out.family("vigil_agent_up", MetricType::kGauge,
             "1 while the agent holds a connection to this aggregator.");
  out.family("vigil_agent_last_seen_timestamp_seconds", MetricType::kGauge,
             "Unix time of the agent's last frame or heartbeat.");
  out.family("vigil_agent_info", MetricType::kGauge, "Agent identity; always 1.");
  out.family("vigil_agent_frames_received_total", MetricType::kCounter,
             "Frames accepted from the agent in its current boot epoch.");
  out.family("vigil_aggregator_processes_not_exposed", MetricType::kGauge,
             "Processes of the agent left out of /metrics by --metrics_max_processes (top-N by "
             "CPU); they are still stored, queried and forwarded.");
  for (auto& [id, rec] : agents_) {
    AgentRecord& r = *rec;
    ExpositionOptions opts;
    opts.base_labels = {{"node", r.info.node_name.empty() ? id : r.info.node_name}};
    Labels agent_labels = opts.base_labels;
    agent_labels.emplace_back("agent_id", id);
    out.sample("vigil_agent_up", agent_labels, r.online ? 1 : 0);
    out.sample("vigil_agent_last_seen_timestamp_seconds", agent_labels, r.last_seen_ns / 1e9);
    Labels info = agent_labels;
    info.emplace_back("version", r.info.version);
    info.emplace_back("kernel", r.info.kernel);
    out.sample("vigil_agent_info", info, 1);
    out.sample("vigil_agent_frames_received_total", agent_labels, static_cast<double>(r.frames));
    if (agent_level_only) {
      continue;
    }

    Snapshot view;
    view.host = r.host;
    view.self = r.self;
    view.histograms = r.histograms;
    view.containers = r.containers;
    view.collectors = r.collectors;
    view.syscall_duty_cycle = r.syscall_duty_cycle;
    view.interval_ms = r.interval_ms;
    view.config_version = r.config_version;
    std::vector<const AgentRecord::Process*> procs;
    procs.reserve(r.processes.size());
    for (const auto& [pid, p] : r.processes) {
      procs.push_back(&p);
    }
    size_t limit =
        options_.max_processes_per_agent == 0 ? procs.size() : options_.max_processes_per_agent;
    if (procs.size() > limit) {
      std::partial_sort(procs.begin(), procs.begin() + static_cast<ptrdiff_t>(limit), procs.end(),
                        [](const AgentRecord::Process* a, const AgentRecord::Process* b) {
                          if (a->cpu_delta_ns != b->cpu_delta_ns) {
                            return a->cpu_delta_ns > b->cpu_delta_ns;
                          }
                          if (a->stats.cpu_ns != b->stats.cpu_ns) {
                            return a->stats.cpu_ns > b->stats.cpu_ns;
                          }
                          return a->stats.pid < b->stats.pid;
                        });
      out.sample("vigil_aggregator_processes_not_exposed", agent_labels,
                 static_cast<double>(procs.size() - limit));
      procs.resize(limit);
    } else {
      out.sample("vigil_aggregator_processes_not_exposed", agent_labels, 0);
    }
    for (const AgentRecord::Process* p : procs) {
      view.processes.emplace(p->stats.pid, p->stats);
    }
    writeSnapshotMetrics(view, opts, out);
  }
}

}  // namespace vigil::aggregator
