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

// A value that depends only on (seed, key, seq), so the frame of one interval is the same however
// many times it is built.
uint64_t mix(uint64_t seed, uint64_t key, uint64_t seq) {
  uint64_t z =
      seed * 0x9e3779b97f4a7c15ULL + key * 0xbf58476d1ce4e5b9ULL + seq * 0x94d049bb133111ebULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A cumulative counter at interval `seq` that grows by about `rate` per interval, each interval's
// increment varying by up to +-rate/2 (jitter drawn afresh per interval, as real work does), so
// the counter never goes backwards and its low digits are as random as a real one's.
uint64_t cumulative(uint64_t seed, uint64_t key, uint64_t seq, uint64_t rate) {
  if (rate < 2) {
    return seq * rate;
  }
  return seq * rate + mix(seed, key, seq) % (rate / 2);
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
    // Every counter of every process moves every interval (the worst case for deltas), by an
    // amount that varies from interval to interval. On-CPU time is a sum of run slices measured
    // in ns, so all its low digits are random (3-300 ms of CPU per 10 s interval); counts and
    // byte counts vary the same way; block I/O moves in whole 4 KiB pages.
    const uint64_t seed = o.seed;
    const uint64_t key = uint64_t{pid} << 8;
    p.cpu_ns = cumulative(seed, key + 0, seq, busy * 3000000);
    p.voluntary_switches = cumulative(seed, key + 1, seq, busy * 40);
    p.involuntary_switches = cumulative(seed, key + 2, seq, busy * 3);
    p.syscalls = cumulative(seed, key + 3, seq, busy * 900);
    if (i % 3 == 0) {
      p.syscall_errors = cumulative(seed, key + 4, seq, busy * 7);
      p.top_errnos = {{11, p.syscall_errors * 2 / 3}, {2, p.syscall_errors / 3}};
    }
    if (i % 2 == 0) {
      p.tcp_tx_bytes = cumulative(seed, key + 5, seq, busy * 120000);
      p.tcp_rx_bytes = cumulative(seed, key + 6, seq, busy * 80000);
      p.tcp_active_opens = seq * busy / 4;
      p.tcp_passive_opens = seq * busy / 3;
    }
    if (i % 7 == 0) {
      p.tcp_retransmits = seq + rng() % 3;
      p.block_write_ops = cumulative(seed, key + 7, seq, busy * 10);
      p.block_write_bytes = p.block_write_ops * 4096;
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
    const uint64_t key = (uint64_t{1} << 40) + (uint64_t{c} << 8);
    cs.cpu_ns = cumulative(o.seed, key + 0, seq, (c + 1) * 50000000);
    cs.syscalls = cumulative(o.seed, key + 1, seq, (c + 1) * 20000);
    cs.syscall_errors = cumulative(o.seed, key + 2, seq, (c + 1) * 30);
    cs.tcp_tx_bytes = cumulative(o.seed, key + 3, seq, (c + 1) * 1000000);
    cs.tcp_rx_bytes = cumulative(o.seed, key + 4, seq, (c + 1) * 700000);
    cs.processes = 1 + c % 3;
    s.containers.push_back(cs);
  }
  auto host = [&s](std::string name, Labels labels, double v, bool counter) {
    s.host.push_back(MetricSample{std::move(name), std::move(labels), v, counter});
  };
  // Host values are computed from the units their source counts in, the way the host collector
  // does (userspace/host/host_metrics.cc): /proc/stat in USER_HZ ticks / 100, /proc/meminfo and
  // statfs in pages/blocks, /proc/diskstats in sectors and ms, PSI in us, BPF run time in ns.
  // Gauges (memory, filesystem, file descriptors) move a little every interval.
  const uint64_t seed = o.seed;
  uint64_t hk = uint64_t{2} << 40;
  for (int cpu = 0; cpu < 2; ++cpu) {
    for (const char* mode :
         {"user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice"}) {
      uint64_t ticks = cumulative(seed, hk++, seq, 50 + rng() % 100 * 10);
      host("vigil_host_cpu_seconds_total", {{"cpu", absl::StrCat(cpu)}, {"mode", mode}},
           static_cast<double>(ticks) / 100.0, true);
    }
  }
  for (const char* m :
       {"total", "available", "free", "cached", "buffers", "swap_total", "swap_free", "dirty"}) {
    uint64_t kb = 1000000 + rng() % 1000000;
    if (std::string(m) != "total" && std::string(m) != "swap_total") {
      kb += mix(seed, hk++, seq) % 20000 * 4;  // pages come and go
    }
    host(absl::StrCat("vigil_host_memory_", m, "_bytes"), {}, static_cast<double>(kb * 1024),
         false);
  }
  for (const char* l : {"1", "5", "15"}) {
    host("vigil_host_load", {{"window", l}},
         static_cast<double>(mix(seed, hk++, seq) % 400) / 100.0, false);
  }
  for (const char* mnt : {"/", "/var/lib/containerd", "/boot", "/var/log"}) {
    for (const char* m : {"size", "free", "avail", "files", "files_free"}) {
      uint64_t blocks = 2500000 + rng() % 250000;
      if (std::string(m) != "size" && std::string(m) != "files") {
        blocks -= mix(seed, hk++, seq) % 64;
      }
      host(absl::StrCat("vigil_host_filesystem_", m, "_bytes"), {{"mountpoint", mnt}},
           static_cast<double>(blocks * 4096), false);
    }
  }
  for (const char* dev : {"nvme0n1", "nvme1n1"}) {
    uint64_t rate = 1 + rng() % 1000;
    uint64_t sectors_r = cumulative(seed, hk++, seq, rate * 80);
    uint64_t sectors_w = cumulative(seed, hk++, seq, rate * 160);
    uint64_t reads = cumulative(seed, hk++, seq, rate * 10);
    uint64_t writes = cumulative(seed, hk++, seq, rate * 20);
    uint64_t io_ms = cumulative(seed, hk++, seq, rate * 5);
    uint64_t read_ms = cumulative(seed, hk++, seq, rate * 3);
    uint64_t write_ms = cumulative(seed, hk++, seq, rate * 6);
    auto disk = [&](const char* m, double v) {
      host(absl::StrCat("vigil_host_disk_", m, "_total"), {{"device", dev}}, v, true);
    };
    disk("read_bytes", static_cast<double>(sectors_r * 512));
    disk("written_bytes", static_cast<double>(sectors_w * 512));
    disk("reads", static_cast<double>(reads));
    disk("writes", static_cast<double>(writes));
    disk("io_time_seconds", static_cast<double>(io_ms) / 1000.0);
    disk("read_time_seconds", static_cast<double>(read_ms) / 1000.0);
    disk("write_time_seconds", static_cast<double>(write_ms) / 1000.0);
  }
  for (const char* dev : {"eth0", "lo", "cni0", "flannel.1"}) {
    for (const char* m : {"receive_bytes", "transmit_bytes", "receive_packets", "transmit_packets",
                          "receive_errs", "transmit_errs", "receive_drop", "transmit_drop"}) {
      host(absl::StrCat("vigil_host_network_", m, "_total"), {{"device", dev}},
           static_cast<double>(cumulative(seed, hk++, seq, rng() % 1000000)), true);
    }
  }
  for (const char* res : {"cpu", "memory", "io"}) {
    for (const char* kind : {"some", "full"}) {
      uint64_t us = cumulative(seed, hk++, seq, rng() % 1000000);
      host("vigil_host_pressure_stall_seconds_total", {{"resource", res}, {"kind", kind}},
           static_cast<double>(us) / 1e6, true);
    }
  }
  host("vigil_host_file_descriptors", {{"state", "allocated"}},
       static_cast<double>(5000 + mix(seed, hk++, seq) % 1000), false);
  host("vigil_host_file_descriptors", {{"state", "max"}}, 9223372036854775807.0, false);
  host("vigil_host_boot_time_seconds", {}, 1.7e9, false);

  auto hist = [&s, &rng, &hk, seed, seq](std::string name, Labels labels, uint64_t unit_ns,
                                         size_t slots) {
    HistogramSample h;
    h.name = std::move(name);
    h.labels = std::move(labels);
    h.unit_ns = unit_ns;
    for (size_t i = 0; i < slots; ++i) {
      uint64_t b =
          (i < 3 || i > slots - 4) ? 0 : cumulative(seed, hk++, seq, (rng() % 5000) / (1 + i / 4));
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
    // bpf_stats: run_time_ns / 1e9 and run_cnt.
    uint64_t runs = cumulative(seed, hk++, seq, 100000);
    self("vigil_bpf_program_run_seconds_total", {{"program", prog}},
         static_cast<double>(runs * 100 + mix(seed, hk++, seq) % 1000) / 1e9);
    self("vigil_bpf_program_runs_total", {{"program", prog}}, static_cast<double>(runs));
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
