#include "bench/common/synth_frame.h"

#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "userspace/common/frame_metrics.h"
#include "userspace/common/prom_text.h"

namespace vigil::bench {
namespace {

constexpr const char* kComms[] = {
    "nginx",      "redis-server", "postgres", "java",     "python3", "node", "envoy",     "kubelet",
    "containerd", "sshd",         "systemd",  "journald", "coredns", "etcd", "prometheus"};

std::string hexId(std::mt19937_64& rng) {
  std::string s;
  for (int i = 0; i < 4; ++i) {
    char buf[17];
    snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(rng()));
    s += buf;
  }
  return s;
}

}  // namespace

void buildSyntheticSnapshot(const SynthOptions& o, uint64_t seq, Snapshot& s) {
  // The identity of processes and containers depends on the seed only; rates depend on the
  // seed too, and cumulative values grow with seq.
  std::mt19937_64 rng(o.seed * 7919 + 17);
  s.agent.agent_id = o.agent_id;
  s.agent.node_name = o.agent_id;
  s.agent.version = "0.1.0";
  s.agent.kernel = "6.18.44";
  s.agent.labels = {{"zone", "bench-a"}, {"cluster", "bench"}};
  s.boot_epoch = o.boot_epoch;
  s.seq = seq;
  s.interval_ms = 10000;
  s.start_unix_ns = static_cast<int64_t>(1700000000000000000LL + seq * 10000000000LL);
  s.end_unix_ns = s.start_unix_ns + 10000000000LL;
  s.syscall_duty_cycle = 0.1;

  std::vector<std::string> container_ids;
  for (uint32_t c = 0; c < o.containers; ++c) {
    container_ids.push_back(hexId(rng));
  }
  for (uint32_t i = 0; i < o.processes; ++i) {
    uint32_t pid = 1000 + static_cast<uint32_t>(rng() % 60000);
    ProcessStats& p = s.process(pid);
    p.comm = kComms[i % (sizeof(kComms) / sizeof(kComms[0]))];
    p.cgroup_id = 4000 + rng() % 1000;
    p.cmdline = absl::StrCat("/usr/bin/", p.comm, " --config /etc/", p.comm, ".conf");
    if (o.containers > 0 && i % 2 == 0) {
      p.container_id = container_ids[i % o.containers];
    }
    uint64_t busy = 1 + rng() % 100;  // a per-process activity level
    p.cpu_ns = seq * busy * 3000000 + rng() % 1000000;
    p.voluntary_switches = seq * busy * 40 + rng() % 40;
    p.involuntary_switches = seq * busy * 3 + rng() % 3;
    p.syscalls = seq * busy * 900 + rng() % 900;
    if (i % 3 == 0) {
      p.syscall_errors = seq * busy * 7 + rng() % 7;
      p.top_errnos = {{11, p.syscall_errors * 2 / 3}, {2, p.syscall_errors / 3}};
    }
    if (i % 2 == 0) {
      p.tcp_tx_bytes = seq * busy * 120000 + rng() % 100000;
      p.tcp_rx_bytes = seq * busy * 80000 + rng() % 100000;
      p.tcp_active_opens = seq * busy / 4;
      p.tcp_passive_opens = seq * busy / 3;
    }
    if (i % 7 == 0) {
      p.tcp_retransmits = seq + rng() % 3;
      p.block_write_bytes = seq * busy * 4096 * 10;
      p.block_write_ops = seq * busy * 10;
    }
  }
  for (uint32_t c = 0; c < o.containers; ++c) {
    ContainerStats cs;
    cs.cgroup_id = 5000 + c;
    cs.container_id = container_ids[c];
    cs.runtime = "containerd";
    cs.pod_uid = absl::StrCat("6f1c2a3e-0c1d-4e2f-9a8b-", 100000000000 + o.seed * 100 + c);
    cs.qos_class = "burstable";
    cs.cgroup_path = absl::StrCat("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod",
                                  cs.pod_uid, ".slice/cri-containerd-", cs.container_id, ".scope");
    cs.cpu_ns = seq * (c + 1) * 50000000;
    cs.syscalls = seq * (c + 1) * 20000;
    cs.syscall_errors = seq * (c + 1) * 30;
    cs.tcp_tx_bytes = seq * (c + 1) * 1000000;
    cs.tcp_rx_bytes = seq * (c + 1) * 700000;
    cs.processes = 1 + c % 3;
    s.containers.push_back(cs);
  }
  auto host = [&s](std::string name, Labels labels, double v, bool counter) {
    s.host.push_back(MetricSample{std::move(name), std::move(labels), v, counter});
  };
  for (int cpu = 0; cpu < 2; ++cpu) {
    for (const char* mode :
         {"user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice"}) {
      host("vigil_host_cpu_seconds_total", {{"cpu", absl::StrCat(cpu)}, {"mode", mode}},
           seq * 10.0 * (0.05 + (rng() % 100) / 1000.0), true);
    }
  }
  for (const char* m :
       {"total", "available", "free", "cached", "buffers", "swap_total", "swap_free", "dirty"}) {
    host(absl::StrCat("vigil_host_memory_", m, "_bytes"), {}, 1e9 + rng() % 1000000000, false);
  }
  for (const char* l : {"1", "5", "15"}) {
    host("vigil_host_load", {{"window", l}}, (rng() % 400) / 100.0, false);
  }
  for (const char* mnt : {"/", "/var/lib/containerd", "/boot", "/var/log"}) {
    for (const char* m : {"size", "free", "avail", "files", "files_free"}) {
      host(absl::StrCat("vigil_host_filesystem_", m, "_bytes"), {{"mountpoint", mnt}},
           1e10 + rng() % 1000000000, false);
    }
  }
  for (const char* dev : {"nvme0n1", "nvme1n1"}) {
    for (const char* m : {"read_bytes", "written_bytes", "reads", "writes", "io_time_seconds",
                          "read_time_seconds", "write_time_seconds"}) {
      host(absl::StrCat("vigil_host_disk_", m, "_total"), {{"device", dev}},
           seq * (1 + rng() % 100000), true);
    }
  }
  for (const char* dev : {"eth0", "lo", "cni0", "flannel.1"}) {
    for (const char* m : {"receive_bytes", "transmit_bytes", "receive_packets", "transmit_packets",
                          "receive_errs", "transmit_errs", "receive_drop", "transmit_drop"}) {
      host(absl::StrCat("vigil_host_network_", m, "_total"), {{"device", dev}},
           seq * (rng() % 1000000), true);
    }
  }
  for (const char* res : {"cpu", "memory", "io"}) {
    for (const char* kind : {"some", "full"}) {
      host("vigil_host_pressure_stall_seconds_total", {{"resource", res}, {"kind", kind}},
           seq * (rng() % 1000) / 1000.0, true);
    }
  }
  host("vigil_host_file_descriptors", {{"state", "allocated"}}, 5000 + rng() % 1000, false);
  host("vigil_host_file_descriptors", {{"state", "max"}}, 9223372036854775807.0, false);
  host("vigil_host_boot_time_seconds", {}, 1.7e9, false);

  auto hist = [&s, &rng, seq](std::string name, Labels labels, uint64_t unit_ns, size_t slots) {
    HistogramSample h;
    h.name = std::move(name);
    h.labels = std::move(labels);
    h.unit_ns = unit_ns;
    for (size_t i = 0; i < slots; ++i) {
      uint64_t b = (i < 3 || i > slots - 4) ? 0 : seq * (rng() % 5000) / (1 + i / 4);
      h.buckets.push_back(b);
      h.count += b;
      h.sum_units += b * (3ull << i) / 2;
    }
    s.histograms.push_back(std::move(h));
  };
  hist("vigil_runqueue_latency_seconds", {}, 1000, 24);
  hist("vigil_syscall_latency_seconds", {}, 1000, 24);
  hist("vigil_block_latency_seconds", {{"device", "nvme0n1"}}, 1000, 24);
  hist("vigil_tcp_connect_latency_seconds", {}, 1000, 24);

  auto self = [&s](std::string name, Labels labels, double v) {
    s.self.push_back(MetricSample{std::move(name), std::move(labels), v, true});
  };
  for (const char* prog : {"vigil_sched_btf", "vigil_sys_enter", "vigil_sys_exit",
                           "vigil_tcp_state", "vigil_runq_wake", "vigil_runq_switch"}) {
    self("vigil_bpf_program_run_seconds_total", {{"program", prog}}, seq * 0.01);
    self("vigil_bpf_program_runs_total", {{"program", prog}}, seq * 100000.0);
  }
  self("vigil_ringbuf_reserve_failures_total", {}, 0);
  self("vigil_agent_frames_total", {}, static_cast<double>(seq));
  for (const char* c : {"sched", "syscalls", "net", "block", "process", "host"}) {
    s.collectors.push_back(CollectorState{c, true, ""});
  }
}

size_t countSeries(const Snapshot& snapshot) {
  PromWriter w;
  writeSnapshotMetrics(snapshot, ExpositionOptions{}, w);
  std::string text = w.finish();
  size_t n = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) {
      end = text.size();
    }
    if (end > pos && text[pos] != '#') {
      n++;
    }
    pos = end + 1;
  }
  return n;
}

}  // namespace vigil::bench
