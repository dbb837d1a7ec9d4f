#include "userspace/collectors/sched_collector.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <cerrno>
#include <fstream>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"

#include "kernel-compat/core_btf.h"
#include "kernel-compat/features.h"
#include "sched.skel.h"
#include "sched/sched.h"
#include "userspace/collectors/bpf_util.h"
#include "userspace/collectors/task_comm.h"
#include "userspace/common/shrink.h"
#include "userspace/common/clock.h"

namespace vigil {
namespace {

constexpr uint64_t kMicrosecond = 1000;
constexpr uint32_t kCgroupIdleCollects = 30;  // 5 minutes at the default 10 s interval
constexpr size_t kMaxCgroups = 1024;  // per-cgroup histograms kept (tp_btf), as the raw_tp map

// True when the kernel maintains sched_info (run_delay, pcount): /proc/self/schedstat exists
// (CONFIG_SCHED_INFO) and counts this process's arrivals on a CPU, which are never zero here.
bool haveSchedInfo() {
  std::ifstream in("/proc/self/schedstat");
  unsigned long long run_ns = 0, delay_ns = 0, pcount = 0;
  return static_cast<bool>(in >> run_ns >> delay_ns >> pcount) && pcount > 0;
}

HistogramSample toSample(const char* name, Labels labels, const sched_hist& h) {
  HistogramSample s;
  s.name = name;
  s.labels = std::move(labels);
  s.unit_ns = kMicrosecond;
  s.buckets.assign(std::begin(h.slots), std::end(h.slots));
  for (uint64_t b : s.buckets) {
    s.count += b;
  }
  s.sum_units = h.sum_us;
  return s;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SchedCollector>> SchedCollector::create(
    const SchedOptions& options) {
  // The tp_btf design needs task storage for tracing programs (5.11+), the task iterator and
  // schedstat's per-task sched_info (CONFIG_SCHED_INFO, which maintains run_delay). A kernel
  // with BTF tracepoints but without one of them takes the raw_tp path. Whether the btf_trace_*
  // types exist is not probed (that needs a ~10 ms parse of vmlinux BTF next to libbpf's own):
  // the tp_btf load is tried, and raw_tp is loaded if it fails.
  bool btf = !options.force_raw_tp && compat::haveKernelBtf() &&
             libbpf_probe_bpf_map_type(BPF_MAP_TYPE_TASK_STORAGE, nullptr) == 1 && haveSchedInfo();
  sched_bpf* skel = nullptr;
  while (true) {
    skel = sched_bpf::open(compat::coreBtfOpenOpts());
    if (skel == nullptr) {
      return bpfError("sched: open", -errno);
    }
    skel->rodata->targ_tgid = options.only_tgid;
    skel->rodata->load_ns = static_cast<uint64_t>(monoNs());
    if (options.max_processes != 0) {
      // The per-process map of whichever design loads: proc_stats (raw_tp) or exited (tp_btf).
      bpf_map__set_max_entries(skel->maps.proc_stats, options.max_processes);
      bpf_map__set_max_entries(skel->maps.exited, options.max_processes);
    }
    for (bpf_program* p :
         {skel->progs.vigil_sched_raw, skel->progs.vigil_wake_raw, skel->progs.vigil_wnew_raw}) {
      bpf_program__set_autoload(p, !btf);
    }
    for (bpf_program* p : {skel->progs.vigil_sched_btf, skel->progs.vigil_sfork_btf,
                           skel->progs.vigil_sexit_btf, skel->progs.vigil_sched_iter}) {
      bpf_program__set_autoload(p, btf);
    }
    // Only the chosen design's maps are created.
    for (bpf_map* m : {skel->maps.cpu_state, skel->maps.proc_stats, skel->maps.runq_start,
                       skel->maps.runq_proc, skel->maps.runq_cgroup, skel->maps.runq_host}) {
      bpf_map__set_autocreate(m, !btf);
    }
    for (bpf_map* m : {skel->maps.task_sched, skel->maps.exited}) {
      bpf_map__set_autocreate(m, btf);
    }
    int err = sched_bpf::load(skel);
    if (err == 0) {
      err = sched_bpf::attach(skel);
    }
    if (err == 0) {
      break;
    }
    sched_bpf::destroy(skel);
    if (!btf || err == -EPERM) {
      return bpfError("sched", err);
    }
    btf = false;  // a hook without BTF: retry with raw_tp
  }
  std::unique_ptr<SchedCollector> c(new SchedCollector(skel, btf ? "tp_btf" : "raw_tp", options));
  if (btf) {
    // The first iterator run creates the state of every existing task, so their counts start
    // now; tasks forked from here on get theirs at fork.
    auto primed = c->readTaskIterator();
    if (!primed.ok()) {
      return primed.status();
    }
  }
  return c;
}

SchedCollector::~SchedCollector() { sched_bpf::destroy(skel_); }

const bpf_object* SchedCollector::object() const { return skel_->obj; }

void SchedCollector::collect(Snapshot& out) {
  bool tasks = attach_mode_ == absl::string_view("tp_btf");
  if (tasks) {
    collectTasks(out);
  } else {
    collectHashes(out);
  }
  int counters = bpf_map__fd(skel_->maps.sched_counters);
  // The raw_tp design's maps, then the tp_btf design's; each reports its own.
  const std::pair<const char*, sched_counter> raw_full[] = {
      {"sched_proc_stats", SCHED_COUNTER_PROC_MAP_FULL},
      {"sched_runq_start", SCHED_COUNTER_RUNQ_START_FULL},
      {"sched_runq_proc", SCHED_COUNTER_RUNQ_PROC_FULL},
      {"sched_runq_cgroup", SCHED_COUNTER_RUNQ_CGROUP_FULL},
  };
  const std::pair<const char*, sched_counter> task_full[] = {
      {"sched_task_sched", SCHED_COUNTER_TASK_STORAGE_FULL},
      {"sched_exited", SCHED_COUNTER_EXITED_FULL},
  };
  for (const auto& [map, idx] :
       tasks ? absl::MakeConstSpan(task_full) : absl::MakeConstSpan(raw_full)) {
    out.self.push_back(MetricSample{"vigil_bpf_map_full_total",
                                    {{"map", map}},
                                    static_cast<double>(sumPerCpuCounter(counters, idx)),
                                    true});
  }
  appendProgramStats(skel_->obj, out.self);
  out.collectors.push_back(CollectorState{"sched", true, ""});
}

void SchedCollector::collectRunqueueHistograms(Snapshot& out) {
  if (attach_mode_ == absl::string_view("tp_btf")) {
    collect(out);  // the tp_btf design derives these histograms from the per-process totals
    return;
  }
  collectRunqueue(out, {});
}

void SchedCollector::collectHashes(Snapshot& out) {
  int fd = bpf_map__fd(skel_->maps.proc_stats);
  std::vector<uint32_t> gone;
  forEachPerCpu<uint32_t, sched_proc_stats>(
      fd, [&](const uint32_t& tgid, const std::vector<sched_proc_stats>& cpus) {
        ProcessStats& p = out.process(tgid);
        p.cpu_ns = 0;
        p.voluntary_switches = 0;
        p.involuntary_switches = 0;
        const char* kernel_comm = nullptr;
        for (const sched_proc_stats& v : cpus) {
          p.cpu_ns += v.oncpu_ns;
          p.voluntary_switches += v.voluntary_switches;
          p.involuntary_switches += v.involuntary_switches;
          if (kernel_comm == nullptr && v.comm[0] != '\0') {
            kernel_comm = v.comm;
          }
          if (v.cgroup_id != 0) {
            p.cgroup_id = v.cgroup_id;
          }
        }
        if (p.comm.empty()) {
          p.comm = reportedComm(tgid, kernel_comm ? kernel_comm : "", VIGIL_COMM_LEN);
        }
        // A reaped process can accrue no more time: report it this once, then retire it. A
        // zombie still answers kill(0), so its final switch has been counted by then.
        if (processGone(tgid)) {
          p.exited = true;
          gone.push_back(tgid);
        }
      });
  addRunningSlices(out);
  for (uint32_t tgid : gone) {
    bpf_map_delete_elem(fd, &tgid);
    last_cpu_ns_.erase(tgid);
  }
  shrinkTableIfSparse(last_cpu_ns_);
  collectRunqueue(out, gone);
}

}  // namespace vigil

namespace vigil {

void SchedCollector::addRunningSlices(Snapshot& out) {
  // The kernel accounts a slice when the task leaves the CPU; add the slices still running so a
  // task that is never switched out is not invisible. Read after proc_stats: if a switch lands
  // in between, that slice is missing this once, and the clamp below keeps the counter from
  // going backwards until the kernel's total catches up.
  std::vector<sched_cpu_state> cpus(possibleCpus());
  uint32_t zero = 0;
  uint64_t now = static_cast<uint64_t>(monoNs());
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.cpu_state), &zero, cpus.data()) == 0) {
    for (const sched_cpu_state& c : cpus) {
      if (c.tgid == 0 || c.switched_in_ns == 0 || now <= c.switched_in_ns) {
        continue;
      }
      if (options_.only_tgid != 0 && c.tgid != options_.only_tgid) {
        continue;
      }
      ProcessStats& p = out.process(c.tgid);
      if (p.comm.empty()) {
        p.comm = reportedComm(c.tgid, "", VIGIL_COMM_LEN);
      }
      p.cpu_ns += now - c.switched_in_ns;
    }
  }
  for (auto& [tgid, p] : out.processes) {
    uint64_t& last = last_cpu_ns_[tgid];
    if (p.cpu_ns < last) {
      p.cpu_ns = last;
    }
    last = p.cpu_ns;
  }
}

void SchedCollector::collectRunqueue(Snapshot& out, const std::vector<uint32_t>& gone) {
  // Host: a per-CPU array of one histogram.
  std::vector<sched_hist> cpus(possibleCpus());
  uint32_t zero = 0;
  sched_hist host{};
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.runq_host), &zero, cpus.data()) == 0) {
    for (const sched_hist& c : cpus) {
      for (int i = 0; i < SCHED_HIST_SLOTS; ++i) {
        host.slots[i] += c.slots[i];
      }
      host.sum_us += c.sum_us;
    }
  }
  out.histograms.push_back(toSample("vigil_runqueue_latency_seconds", {}, host));

  // Per cgroup. Removed cgroups would keep their entries forever, so an entry that has not
  // changed for kCgroupIdleCollects collections is deleted; if the cgroup wakes up again it
  // starts from zero (a counter reset to Prometheus).
  int cg_fd = bpf_map__fd(skel_->maps.runq_cgroup);
  absl::flat_hash_map<uint64_t, CgroupSeen> seen;
  for (const auto& [cgid, h] : readHash<uint64_t, sched_hist>(cg_fd)) {
    HistogramSample sample =
        toSample("vigil_cgroup_runqueue_latency_seconds", {{"cgroup_id", absl::StrCat(cgid)}}, h);
    CgroupSeen now{sample.count, 0};
    auto it = cgroups_seen_.find(cgid);
    if (it != cgroups_seen_.end() && it->second.count == sample.count) {
      now.idle_collects = it->second.idle_collects + 1;
    }
    if (now.idle_collects >= kCgroupIdleCollects) {
      bpf_map_delete_elem(cg_fd, &cgid);
      ++cgroups_evicted_;
      continue;
    }
    seen.emplace(cgid, now);
    out.histograms.push_back(std::move(sample));
  }
  cgroups_seen_ = std::move(seen);
  out.self.push_back(MetricSample{
      "vigil_runqueue_cgroups_evicted_total", {}, static_cast<double>(cgroups_evicted_), true});

  // Per process: the processes that waited longest, up to the cap.
  int proc_fd = bpf_map__fd(skel_->maps.runq_proc);
  auto procs = readHash<uint32_t, sched_hist>(proc_fd);
  std::sort(procs.begin(), procs.end(),
            [](const auto& a, const auto& b) { return a.second.sum_us > b.second.sum_us; });
  size_t dropped = 0;
  for (size_t i = 0; i < procs.size(); ++i) {
    uint32_t tgid = procs[i].first;
    if (i < options_.max_process_histograms) {
      auto it = out.processes.find(tgid);
      std::string comm = it != out.processes.end() ? it->second.comm : "";
      out.histograms.push_back(toSample("vigil_process_runqueue_latency_seconds",
                                        {{"pid", absl::StrCat(tgid)}, {"comm", comm}},
                                        procs[i].second));
    } else {
      ++dropped;
    }
    if (std::find(gone.begin(), gone.end(), tgid) != gone.end() || processGone(tgid)) {
      bpf_map_delete_elem(proc_fd, &tgid);
    }
  }
  out.self.push_back(MetricSample{
      "vigil_runqueue_process_histograms_dropped", {}, static_cast<double>(dropped), false});
}

}  // namespace vigil

namespace vigil {

namespace {

// Adds a thread's (or an exited group's) totals into a process's.
void addTotals(const sched_totals& t, uint64_t& cpu, uint64_t& vol, uint64_t& invol,
               uint64_t* slots, uint64_t& sum_ns) {
  cpu += t.cpu_ns;
  vol += t.voluntary_switches;
  invol += t.involuntary_switches;
  sum_ns += t.wait_sum_ns;
  for (int i = 0; i < SCHED_HIST_SLOTS; ++i) {
    slots[i] += t.slots[i];
  }
}

// Raises `last` to `now` where `now` is larger and returns the growth: the kernel's sums dip for
// a moment when a thread exits between the read of `exited` and the iterator run, and a
// reported counter never goes down.
uint64_t grow(uint64_t& last, uint64_t now) {
  if (now <= last) {
    return 0;
  }
  uint64_t d = now - last;
  last = now;
  return d;
}

HistogramSample histSample(const char* name, Labels labels, const uint64_t* slots,
                           uint64_t sum_ns) {
  HistogramSample s;
  s.name = name;
  s.labels = std::move(labels);
  s.unit_ns = kMicrosecond;
  s.buckets.assign(slots, slots + SCHED_HIST_SLOTS);
  for (uint64_t b : s.buckets) {
    s.count += b;
  }
  s.sum_units = sum_ns / kMicrosecond;
  return s;
}

}  // namespace

uint64_t SchedCollector::Hist::count() const {
  uint64_t n = 0;
  for (uint64_t s : slots) {
    n += s;
  }
  return n;
}

absl::StatusOr<std::string> SchedCollector::readTaskIterator() {
  static_assert(sizeof(Hist::slots) / sizeof(uint64_t) == SCHED_HIST_SLOTS,
                "Hist must hold SCHED_HIST_SLOTS slots");
  int fd = bpf_iter_create(bpf_link__fd(skel_->links.vigil_sched_iter));
  if (fd < 0) {
    return bpfError("sched: task iterator", -errno);
  }
  std::string data;
  char buf[1 << 16];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      int err = errno;
      close(fd);
      return bpfError("sched: reading the task iterator", -err);
    }
    if (n == 0) {
      break;
    }
    data.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return data;
}

void SchedCollector::collectTasks(Snapshot& out) {
  struct Current {
    uint64_t cpu = 0, vol = 0, invol = 0;
    Hist runq;
    uint64_t cgroup_id = 0;
    bool leader_seen = false;
    bool live = false;
    std::string comm;
    bool from_exited = false;
  };
  absl::flat_hash_map<ProcKey, Current> now;
  // Exited threads first, then the live ones: a thread that exits in between is missing for
  // one collection (the counters hold still), never counted twice.
  int exited_fd = bpf_map__fd(skel_->maps.exited);
  for (const auto& [key, t] : readHash<sched_exited_key, sched_totals>(exited_fd)) {
    Current& c = now[ProcKey{key.tgid, key.start_ns}];
    addTotals(t, c.cpu, c.vol, c.invol, c.runq.slots, c.runq.sum_ns);
    c.cgroup_id = t.cgroup_id;
    c.comm.assign(t.comm, strnlen(t.comm, sizeof(t.comm)));
    c.from_exited = true;
  }
  auto data = readTaskIterator();
  if (!data.ok()) {
    ++iterator_errors_;
  } else {
    for (size_t off = 0; off + sizeof(sched_totals) <= data->size(); off += sizeof(sched_totals)) {
      sched_totals t;
      memcpy(&t, data->data() + off, sizeof(t));
      Current& c = now[ProcKey{t.tgid, t.start_ns}];
      addTotals(t, c.cpu, c.vol, c.invol, c.runq.slots, c.runq.sum_ns);
      c.live = true;
      // The process's cgroup and name: the leader's, else any live thread's.
      if (!c.leader_seen && (t.tid == t.tgid || c.comm.empty() || c.from_exited)) {
        c.cgroup_id = t.cgroup_id;
        c.comm.assign(t.comm, strnlen(t.comm, sizeof(t.comm)));
        c.from_exited = false;
        c.leader_seen = t.tid == t.tgid;
      }
    }
  }
  // Processes known from earlier collections that are in neither source this time (their
  // last threads are exiting, or their exit could not be folded): report what they had.
  for (const auto& [key, st] : procs_) {
    now.try_emplace(key);
  }

  struct Seen {
    ProcKey key;
    bool live;
  };
  std::vector<Seen> seen;
  seen.reserve(now.size());
  std::vector<ProcKey> retire;
  std::vector<const ProcState*> reported;
  for (auto& [key, c] : now) {
    auto it = procs_.find(key);
    if (it == procs_.end()) {
      // A live task that never ran since accounting started (an idle task): nothing to report
      // yet. An exited one is reported (and its `exited` entry retired) even with all-zero
      // totals: a child that exits before a tick or a switch-out has sum_exec_runtime still 0
      // at sched_process_exit (the kernel adds its last run at the final switch), and skipping
      // it left its `exited` entry behind for good.
      if (c.live && c.cpu == 0 && c.vol == 0 && c.invol == 0 && c.runq.count() == 0) {
        continue;
      }
      it = procs_.emplace(key, ProcState{}).first;
      it->second.tgid = key.tgid;
    }
    ProcState& st = it->second;
    grow(st.cpu_ns, c.cpu);
    grow(st.voluntary, c.vol);
    grow(st.involuntary, c.invol);
    Hist delta;
    for (int i = 0; i < SCHED_HIST_SLOTS; ++i) {
      delta.slots[i] = grow(st.runq.slots[i], c.runq.slots[i]);
    }
    delta.sum_ns = grow(st.runq.sum_ns, c.runq.sum_ns);
    if (c.cgroup_id != 0) {
      st.cgroup_id = c.cgroup_id;
    }
    if (!c.comm.empty()) {
      st.comm = c.comm;
    }
    // Host and per-cgroup histograms grow by what each process's grew.
    uint64_t delta_count = delta.count();
    if (delta_count != 0) {
      for (int i = 0; i < SCHED_HIST_SLOTS; ++i) {
        host_runq_.slots[i] += delta.slots[i];
      }
      host_runq_.sum_ns += delta.sum_ns;
      auto cg = cgroups_.find(st.cgroup_id);
      if (cg == cgroups_.end() && cgroups_.size() < kMaxCgroups) {
        cg = cgroups_.emplace(st.cgroup_id, CgroupState{}).first;
      }
      if (cg == cgroups_.end()) {
        cgroup_samples_dropped_ += delta_count;
      } else {
        for (int i = 0; i < SCHED_HIST_SLOTS; ++i) {
          cg->second.runq.slots[i] += delta.slots[i];
        }
        cg->second.runq.sum_ns += delta.sum_ns;
        cg->second.idle_collects = 0;
      }
    }
    seen.push_back(Seen{key, c.live});
  }
  // One process per pid in a snapshot. When a pid was reused (a process exited and a new one
  // got its pid between two collections) the live one keeps the pid's series; the other's
  // waits are already in the host and cgroup histograms, and it is counted.
  absl::flat_hash_map<uint32_t, const Seen*> owner;
  for (const Seen& s : seen) {
    auto [it, added] = owner.try_emplace(s.key.tgid, &s);
    if (!added && s.live && !it->second->live) {
      it->second = &s;
    }
  }
  for (const Seen& s : seen) {
    if (owner[s.key.tgid] != &s) {
      ++pid_reuse_;
      if (!s.live) {
        retire.push_back(s.key);
      }
      continue;
    }
    const ProcState& st = procs_[s.key];
    reported.push_back(&st);
    ProcessStats& p = out.process(s.key.tgid);
    p.cpu_ns = st.cpu_ns;
    p.voluntary_switches = st.voluntary;
    p.involuntary_switches = st.involuntary;
    if (st.cgroup_id != 0) {
      p.cgroup_id = st.cgroup_id;
    }
    if (p.comm.empty()) {
      p.comm = st.comm;
    }
    // A process with no live thread that is reaped has accrued all it will: report it this
    // once, then retire it. (A zombie still answers kill(0), and its threads are folded.)
    if (!s.live && processGone(s.key.tgid)) {
      p.exited = true;
      retire.push_back(s.key);
    }
  }
  emitTaskHistograms(out, reported);
  for (const ProcKey& key : retire) {
    procs_.erase(key);
    sched_exited_key k = {key.tgid, 0, key.start_ns};
    bpf_map_delete_elem(exited_fd, &k);  // absent when the process had no exited entry
  }
  // After a burst of short-lived processes the table is back to the live ones: give the slots
  // of the retired ones back (userspace/common/shrink.h).
  shrinkTableIfSparse(procs_);
  shrinkTableIfSparse(cgroups_);
  out.self.push_back(
      MetricSample{"vigil_sched_tracked_processes", {}, static_cast<double>(procs_.size()), false});
  out.self.push_back(
      MetricSample{"vigil_sched_pid_reuse_total", {}, static_cast<double>(pid_reuse_), true});
  out.self.push_back(MetricSample{
      "vigil_sched_iterator_errors_total", {}, static_cast<double>(iterator_errors_), true});
  out.self.push_back(MetricSample{"vigil_runqueue_cgroup_samples_dropped_total",
                                  {},
                                  static_cast<double>(cgroup_samples_dropped_),
                                  true});
}

void SchedCollector::emitTaskHistograms(Snapshot& out,
                                        const std::vector<const ProcState*>& reported) {
  out.histograms.push_back(
      histSample("vigil_runqueue_latency_seconds", {}, host_runq_.slots, host_runq_.sum_ns));

  // Per cgroup. A cgroup whose histogram has not grown for kCgroupIdleCollects collections
  // (usually a removed one) is dropped; if it wakes up again it starts from zero (a counter
  // reset to Prometheus).
  for (auto it = cgroups_.begin(); it != cgroups_.end();) {
    CgroupState& cg = it->second;
    if (++cg.idle_collects > kCgroupIdleCollects) {
      ++cgroups_evicted_;
      cgroups_.erase(it++);
      continue;
    }
    out.histograms.push_back(histSample("vigil_cgroup_runqueue_latency_seconds",
                                        {{"cgroup_id", absl::StrCat(it->first)}}, cg.runq.slots,
                                        cg.runq.sum_ns));
    ++it;
  }
  out.self.push_back(MetricSample{
      "vigil_runqueue_cgroups_evicted_total", {}, static_cast<double>(cgroups_evicted_), true});

  // Per process: the processes that waited longest, up to the cap.
  std::vector<std::pair<uint32_t, const ProcState*>> waited;
  for (const ProcState* st : reported) {
    if (st->runq.count() != 0) {
      waited.emplace_back(st->tgid, st);
    }
  }
  std::sort(waited.begin(), waited.end(), [](const auto& a, const auto& b) {
    return a.second->runq.sum_ns > b.second->runq.sum_ns;
  });
  size_t dropped = waited.size() > options_.max_process_histograms
                       ? waited.size() - options_.max_process_histograms
                       : 0;
  waited.resize(waited.size() - dropped);
  for (const auto& [tgid, st] : waited) {
    out.histograms.push_back(histSample("vigil_process_runqueue_latency_seconds",
                                        {{"pid", absl::StrCat(tgid)}, {"comm", st->comm}},
                                        st->runq.slots, st->runq.sum_ns));
  }
  out.self.push_back(MetricSample{
      "vigil_runqueue_process_histograms_dropped", {}, static_cast<double>(dropped), false});
}

}  // namespace vigil
