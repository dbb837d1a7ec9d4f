#include "capnp/snapshot.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

#include "capnp/event_columns.h"

namespace vigil {
namespace {

void writeLabels(const Labels& labels, capnp::List<wire::Label>::Builder out) {
  for (size_t i = 0; i < labels.size(); ++i) {
    out[i].setKey(labels[i].first);
    out[i].setValue(labels[i].second);
  }
}

Labels readLabels(capnp::List<wire::Label>::Reader in) {
  Labels out;
  out.reserve(in.size());
  for (auto l : in) {
    out.emplace_back(l.getKey().cStr(), l.getValue().cStr());
  }
  return out;
}

void writeMetrics(const std::vector<MetricSample>& in, capnp::List<wire::Metric>::Builder out,
                  bool legacy) {
  for (size_t i = 0; i < in.size(); ++i) {
    out[i].setName(in[i].name);
    writeLabels(in[i].labels, out[i].initLabels(in[i].labels.size()));
    int64_t scaled = 0;
    uint8_t digits = 0;
    if (!legacy && scaledDecimal(in[i].value, &scaled, &digits)) {
      out[i].setScaled(scaled);
      out[i].setScaleDigits(digits);
    } else {
      out[i].setValue(in[i].value);
    }
    out[i].setKind(in[i].counter ? wire::Metric::Kind::COUNTER : wire::Metric::Kind::GAUGE);
  }
}

void readMetrics(capnp::List<wire::Metric>::Reader in, std::vector<MetricSample>& out) {
  out.reserve(in.size());
  for (auto m : in) {
    out.push_back(MetricSample{m.getName().cStr(), readLabels(m.getLabels()), metricValue(m),
                               m.getKind() == wire::Metric::Kind::COUNTER});
  }
}

}  // namespace

bool scaledDecimal(double v, int64_t* scaled, uint8_t* digits) {
  // Bit patterns, not ==: -0.0 must keep its sign, so it (like NaN and infinities) stays a
  // float64.
  uint64_t bits;
  memcpy(&bits, &v, sizeof(bits));
  if (bits == 0 || !std::isfinite(v)) {
    return false;
  }
  for (uint8_t d = 0; d <= kMaxScaleDigits; ++d) {
    double m = std::nearbyint(v * kPow10[d]);
    if (std::fabs(m) >= 9007199254740992.0) {  // 2^53: beyond it integers are not exact
      return false;
    }
    int64_t candidate = static_cast<int64_t>(m);
    double back = scaledValue(candidate, d);
    uint64_t back_bits;
    memcpy(&back_bits, &back, sizeof(back_bits));
    if (back_bits == bits) {
      *scaled = candidate;
      *digits = d;
      return candidate != 0;
    }
  }
  return false;
}

double scaledValue(int64_t scaled, uint8_t digits) {
  return static_cast<double>(scaled) / kPow10[digits];
}

double metricValue(wire::Metric::Reader m) {
  double v = m.getValue();
  uint64_t bits;
  memcpy(&bits, &v, sizeof(bits));
  if (bits != 0 || m.getScaleDigits() > kMaxScaleDigits) {
    return v;
  }
  return scaledValue(m.getScaled(), m.getScaleDigits());
}

void toWire(const Snapshot& s, capnp::MessageBuilder& message, WireForm form) {
  const bool legacy = form == WireForm::kLegacyForBench;
  auto frame = message.initRoot<wire::Frame>();
  auto agent = frame.initAgent();
  agent.setAgentId(s.agent.agent_id);
  agent.setNodeName(s.agent.node_name);
  agent.setVersion(s.agent.version);
  agent.setKernel(s.agent.kernel);
  writeLabels(s.agent.labels, agent.initLabels(s.agent.labels.size()));
  frame.setBootEpoch(s.boot_epoch);
  frame.setSeq(s.seq);
  frame.setIntervalStartNs(s.start_unix_ns);
  frame.setIntervalEndNs(s.end_unix_ns);
  frame.setConfigVersion(s.config_version);
  frame.setIntervalMs(s.interval_ms);
  frame.setSyscallDutyCycle(s.syscall_duty_cycle);

  writeMetrics(s.host, frame.initHost(s.host.size()), legacy);
  writeMetrics(s.self, frame.initSelf(s.self.size()), legacy);

  // In pid order, not hash-map order: consecutive frames then lay out the same processes in the
  // same order, which keeps delta frames (encodeDelta) small and makes the encoding
  // deterministic.
  std::vector<const ProcessStats*> ordered;
  ordered.reserve(s.processes.size());
  for (const auto& [pid, p] : s.processes) {
    ordered.push_back(&p);
  }
  std::sort(ordered.begin(), ordered.end(),
            [](const ProcessStats* a, const ProcessStats* b) { return a->pid < b->pid; });
  auto procs = frame.initProcesses(s.processes.size());
  size_t i = 0;
  for (const ProcessStats* pp : ordered) {
    const ProcessStats& p = *pp;
    auto o = procs[i++];
    o.setPid(p.pid);
    o.setComm(p.comm);
    o.setCgroupId(p.cgroup_id);
    o.setCmdline(p.cmdline);
    o.setContainerId(p.container_id);
    // Microseconds, the precision the wire carries (see ProcessSample.cpuUs): floor of the exact
    // cumulative ns, so the counter stays exact to 1 us and never goes backwards.
    if (legacy) {
      o.setCpuNs(p.cpu_ns);
    } else {
      o.setCpuUs(p.cpu_ns / 1000);
    }
    o.setVoluntarySwitches(p.voluntary_switches);
    o.setInvoluntarySwitches(p.involuntary_switches);
    o.setSyscalls(p.syscalls);
    o.setSyscallErrors(p.syscall_errors);
    auto errnos = o.initTopErrnos(p.top_errnos.size());
    for (size_t j = 0; j < p.top_errnos.size(); ++j) {
      errnos[j].setErrno(p.top_errnos[j].first);
      errnos[j].setCount(p.top_errnos[j].second);
    }
    o.setTcpTxBytes(p.tcp_tx_bytes);
    o.setTcpRxBytes(p.tcp_rx_bytes);
    o.setUdpTxBytes(p.udp_tx_bytes);
    o.setUdpRxBytes(p.udp_rx_bytes);
    o.setTcpRetransmits(p.tcp_retransmits);
    o.setTcpActiveOpens(p.tcp_active_opens);
    o.setTcpPassiveOpens(p.tcp_passive_opens);
    o.setTcpConnectFailures(p.tcp_connect_failures);
    o.setTcpResetsSent(p.tcp_resets_sent);
    o.setTcpResetsReceived(p.tcp_resets_received);
    o.setTcpCloses(p.tcp_closes);
    o.setTcpConnectRefused(p.tcp_connect_refused);
    o.setTcpConnectTimeouts(p.tcp_connect_timeouts);
    o.setTcpConnects(p.tcp_connects);
    if (!legacy && p.tcp_connect_latency_sum_ns % 1000 == 0) {
      o.setTcpConnectLatencySumUs(p.tcp_connect_latency_sum_ns / 1000);
    } else {
      o.setTcpConnectLatencySumNs(p.tcp_connect_latency_sum_ns);
    }
    o.setBlockReadBytes(p.block_read_bytes);
    o.setBlockWriteBytes(p.block_write_bytes);
    o.setBlockReadOps(p.block_read_ops);
    o.setBlockWriteOps(p.block_write_ops);
    o.setExited(p.exited);
  }

  // Containers in cgroup id order and histograms in (name, labels) order, for the same reason as
  // processes: collectors emit them in hash-map order, or (per-process run-queue histograms)
  // ranked by how long each waited, which reshuffles from one interval to the next and costs a
  // delta frame a long-distance back-reference per histogram. The order carries no information.
  std::vector<const ContainerStats*> conts_ordered;
  conts_ordered.reserve(s.containers.size());
  for (const ContainerStats& c : s.containers) {
    conts_ordered.push_back(&c);
  }
  if (!legacy) {
    std::stable_sort(conts_ordered.begin(), conts_ordered.end(),
                     [](const ContainerStats* a, const ContainerStats* b) {
                       return a->cgroup_id < b->cgroup_id;
                     });
  }
  std::vector<const HistogramSample*> hists_ordered;
  hists_ordered.reserve(s.histograms.size());
  for (const HistogramSample& h : s.histograms) {
    hists_ordered.push_back(&h);
  }
  if (!legacy) {
    std::stable_sort(hists_ordered.begin(), hists_ordered.end(),
                     [](const HistogramSample* a, const HistogramSample* b) {
                       return std::tie(a->name, a->labels) < std::tie(b->name, b->labels);
                     });
  }

  auto conts = frame.initContainers(s.containers.size());
  for (size_t j = 0; j < s.containers.size(); ++j) {
    const ContainerStats& c = *conts_ordered[j];
    auto o = conts[j];
    o.setCgroupId(c.cgroup_id);
    o.setCgroupPath(c.cgroup_path);
    o.setContainerId(c.container_id);
    o.setRuntime(c.runtime);
    o.setPodUid(c.pod_uid);
    o.setQosClass(c.qos_class);
    o.setSystemdUnit(c.systemd_unit);
    if (legacy) {
      o.setCpuNs(c.cpu_ns);
    } else {
      o.setCpuUs(c.cpu_ns / 1000);
    }
    o.setSyscalls(c.syscalls);
    o.setSyscallErrors(c.syscall_errors);
    o.setTcpTxBytes(c.tcp_tx_bytes);
    o.setTcpRxBytes(c.tcp_rx_bytes);
    o.setBlockReadBytes(c.block_read_bytes);
    o.setBlockWriteBytes(c.block_write_bytes);
    o.setProcesses(c.processes);
  }

  auto hists = frame.initHistograms(s.histograms.size());
  for (size_t j = 0; j < s.histograms.size(); ++j) {
    const HistogramSample& h = *hists_ordered[j];
    auto o = hists[j];
    o.setName(h.name);
    writeLabels(h.labels, o.initLabels(h.labels.size()));
    o.setUnitNs(h.unit_ns);
    auto b = o.initBuckets(h.buckets.size());
    for (size_t k = 0; k < h.buckets.size(); ++k) {
      b.set(k, h.buckets[k]);
    }
    o.setCount(h.count);
    o.setSumUnits(h.sum_units);
  }

  // Events: columns for current agents, the Event list for the forms that stand for older ones.
  std::vector<wire::Event::Reader> events;
  events.reserve(s.events.size());
  for (const auto& e : s.events) {
    events.push_back(e.getReader());
  }
  writeFrameEvents(events, form == WireForm::kCurrent ? EventForm::kColumns : EventForm::kList,
                   frame);

  auto cols = frame.initCollectors(s.collectors.size());
  for (size_t j = 0; j < s.collectors.size(); ++j) {
    cols[j].setName(s.collectors[j].name);
    cols[j].setUp(s.collectors[j].up);
    cols[j].setReason(s.collectors[j].reason);
  }
}

absl::Status fromWire(wire::Frame::Reader frame, Snapshot& s) {
  auto agent = frame.getAgent();
  s.agent.agent_id = agent.getAgentId().cStr();
  s.agent.node_name = agent.getNodeName().cStr();
  s.agent.version = agent.getVersion().cStr();
  s.agent.kernel = agent.getKernel().cStr();
  s.agent.labels = readLabels(agent.getLabels());
  s.boot_epoch = frame.getBootEpoch();
  s.seq = frame.getSeq();
  s.start_unix_ns = frame.getIntervalStartNs();
  s.end_unix_ns = frame.getIntervalEndNs();
  s.config_version = frame.getConfigVersion();
  s.interval_ms = frame.getIntervalMs();
  s.syscall_duty_cycle = frame.getSyscallDutyCycle();
  readMetrics(frame.getHost(), s.host);
  readMetrics(frame.getSelf(), s.self);

  for (auto o : frame.getProcesses()) {
    ProcessStats& p = s.process(o.getPid());
    p.comm = o.getComm().cStr();
    p.cgroup_id = o.getCgroupId();
    p.cmdline = o.getCmdline().cStr();
    p.container_id = o.getContainerId().cStr();
    p.cpu_ns = o.getCpuNs() != 0 ? o.getCpuNs() : o.getCpuUs() * 1000;
    p.voluntary_switches = o.getVoluntarySwitches();
    p.involuntary_switches = o.getInvoluntarySwitches();
    p.syscalls = o.getSyscalls();
    p.syscall_errors = o.getSyscallErrors();
    for (auto e : o.getTopErrnos()) {
      p.top_errnos.emplace_back(e.getErrno(), e.getCount());
    }
    p.tcp_tx_bytes = o.getTcpTxBytes();
    p.tcp_rx_bytes = o.getTcpRxBytes();
    p.udp_tx_bytes = o.getUdpTxBytes();
    p.udp_rx_bytes = o.getUdpRxBytes();
    p.tcp_retransmits = o.getTcpRetransmits();
    p.tcp_active_opens = o.getTcpActiveOpens();
    p.tcp_passive_opens = o.getTcpPassiveOpens();
    p.tcp_connect_failures = o.getTcpConnectFailures();
    p.tcp_resets_sent = o.getTcpResetsSent();
    p.tcp_resets_received = o.getTcpResetsReceived();
    p.tcp_closes = o.getTcpCloses();
    p.tcp_connect_refused = o.getTcpConnectRefused();
    p.tcp_connect_timeouts = o.getTcpConnectTimeouts();
    p.tcp_connects = o.getTcpConnects();
    p.tcp_connect_latency_sum_ns = o.getTcpConnectLatencySumNs() != 0
                                       ? o.getTcpConnectLatencySumNs()
                                       : o.getTcpConnectLatencySumUs() * 1000;
    p.block_read_bytes = o.getBlockReadBytes();
    p.block_write_bytes = o.getBlockWriteBytes();
    p.block_read_ops = o.getBlockReadOps();
    p.block_write_ops = o.getBlockWriteOps();
    p.exited = o.getExited();
  }
  for (auto o : frame.getContainers()) {
    ContainerStats c;
    c.cgroup_id = o.getCgroupId();
    c.cgroup_path = o.getCgroupPath().cStr();
    c.container_id = o.getContainerId().cStr();
    c.runtime = o.getRuntime().cStr();
    c.pod_uid = o.getPodUid().cStr();
    c.qos_class = o.getQosClass().cStr();
    c.systemd_unit = o.getSystemdUnit().cStr();
    c.cpu_ns = o.getCpuNs() != 0 ? o.getCpuNs() : o.getCpuUs() * 1000;
    c.syscalls = o.getSyscalls();
    c.syscall_errors = o.getSyscallErrors();
    c.tcp_tx_bytes = o.getTcpTxBytes();
    c.tcp_rx_bytes = o.getTcpRxBytes();
    c.block_read_bytes = o.getBlockReadBytes();
    c.block_write_bytes = o.getBlockWriteBytes();
    c.processes = o.getProcesses();
    s.containers.push_back(std::move(c));
  }
  for (auto o : frame.getHistograms()) {
    HistogramSample h;
    h.name = o.getName().cStr();
    h.labels = readLabels(o.getLabels());
    h.unit_ns = o.getUnitNs();
    for (auto b : o.getBuckets()) {
      h.buckets.push_back(b);
    }
    h.count = o.getCount();
    h.sum_units = o.getSumUnits();
    s.histograms.push_back(std::move(h));
  }
  for (auto c : frame.getCollectors()) {
    s.collectors.push_back(CollectorState{c.getName().cStr(), c.getUp(), c.getReason().cStr()});
  }
  return readFrameEvents(frame, s.event_arena->getOrphanage(), s.events);
}

}  // namespace vigil
