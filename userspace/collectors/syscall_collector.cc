#include "userspace/collectors/syscall_collector.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>

#include <algorithm>
#include <optional>
#include <cerrno>
#include <cmath>
#include <cstring>

// Before the skeleton, which declares .bss variables of these types.
#include "syscalls/syscalls.h"

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "kernel-compat/core_btf.h"
#include "kernel-compat/features.h"
#include "syscalls.skel.h"
#include "userspace/collectors/bpf_util.h"
#include "userspace/collectors/task_comm.h"
#include "userspace/common/log.h"
#include "userspace/common/clock.h"

namespace vigil {
namespace {

uint64_t scaled(uint64_t raw, double fraction) {
  if (fraction <= 0) {
    return 0;
  }
  return static_cast<uint64_t>(std::llround(static_cast<double>(raw) / fraction));
}

}  // namespace

absl::StatusOr<SyscallMode> parseSyscallMode(absl::string_view text) {
  if (text == "off") {
    return SyscallMode::kOff;
  }
  if (text == "sampled") {
    return SyscallMode::kSampled;
  }
  if (text == "continuous") {
    return SyscallMode::kContinuous;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("syscall_mode '", text, "' is not one of: sampled (default), continuous, off"));
}

SyscallCollector::SyscallCollector(syscalls_bpf* skel, const char* mode,
                                   const SyscallOptions& options)
    : skel_(skel),
      attach_mode_(mode),
      options_(options),
      created_ns_(monoNs()),
      duty_(options.duty_cycle, options.interval, options.randomize_window),
      open_window_([this]() {
        absl::Status st = attach();
        if (!st.ok()) {
          // Counted in attach(); shown as down until a later window attaches.
          if (last_error_.empty()) {
            VIGIL_LOG_WARN("%s", st.message());
          }
          last_error_ = std::string(st.message());
        } else {
          last_error_.clear();
        }
      }),
      close_window_([this]() { detach(); }) {}

absl::StatusOr<std::unique_ptr<SyscallCollector>> SyscallCollector::create(
    const SyscallOptions& options) {
  // One vmlinux BTF parse for all feature probes, freed before libbpf parses its own at load.
  std::optional<compat::VmlinuxBtfScope> btf_scope(std::in_place);
  if (options.mode == SyscallMode::kOff) {
    return std::unique_ptr<SyscallCollector>(new SyscallCollector(nullptr, "", options));
  }
  if (options.mode == SyscallMode::kSampled &&
      !(options.duty_cycle > 0 && options.duty_cycle <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("syscall_duty_cycle must be in (0, 1], got ", options.duty_cycle));
  }
  if (options.mode == SyscallMode::kSampled && options.interval < 100 * kj::MILLISECONDS) {
    return absl::InvalidArgumentError(
        "sampled syscall mode needs an interval of at least 100ms to cycle attachment");
  }
  syscalls_bpf* skel = syscalls_bpf::open(compat::coreBtfOpenOpts());
  if (skel == nullptr) {
    return bpfError("syscalls: open", -errno);
  }
  skel->rodata->targ_tgid = options.only_tgid;
  if (options.max_processes != 0) {
    bpf_map__set_max_entries(skel->maps.sys_proc, options.max_processes);
    bpf_map__set_max_entries(skel->maps.sys_errno, options.max_processes);
  }
  SyscallOptions effective = options;
  if (effective.latency_sample_every == 0 || effective.latency_sample_every > (1u << 20)) {
    syscalls_bpf::destroy(skel);
    return absl::InvalidArgumentError(absl::StrCat(
        "latency_sample_every must be in [1, 1048576], got ", options.latency_sample_every));
  }
  bool exact = effective.latency && effective.latency_sample_every == 1;
  if (exact && libbpf_probe_bpf_map_type(BPF_MAP_TYPE_TASK_STORAGE, nullptr) != 1) {
    VIGIL_LOG_WARN(
        "syscalls: no BPF task storage in this kernel; syscall latency is sampled (1 in %u)",
        kDefaultLatencySampleEvery);
    effective.latency_sample_every = kDefaultLatencySampleEvery;
    exact = false;
  }
  skel->rodata->latency_every = effective.latency_sample_every;
  skel->rodata->nr_exit = SYS_exit;
  skel->rodata->nr_exit_group = SYS_exit_group;
  // Exact start times live in task storage (absent before 5.11); sampled ones in .bss.
  bpf_map__set_autocreate(skel->maps.sys_start, exact);
  bool btf = !options.force_raw_tp && compat::haveBtfTracepoint("sys_enter") &&
             compat::haveBtfTracepoint("sys_exit");
  // Exactly one exit program and at most one enter program load; the rest stay out.
  bpf_program* keep_enter = nullptr;
  bpf_program* keep_exit = btf ? skel->progs.vigil_sysxc_btf : skel->progs.vigil_sysxc_raw;
  if (exact) {
    keep_enter = btf ? skel->progs.vigil_sysel_btf : skel->progs.vigil_sysel_raw;
    keep_exit = btf ? skel->progs.vigil_sysxl_btf : skel->progs.vigil_sysxl_raw;
  } else if (effective.latency) {
    keep_enter = btf ? skel->progs.vigil_sysen_btf : skel->progs.vigil_sysen_raw;
    keep_exit = btf ? skel->progs.vigil_sysex_btf : skel->progs.vigil_sysex_raw;
  }
  // tp_btf: vigil_syscur_btf records the task on each CPU at sched_switch, so that sys_exit
  // need not ask for it (bpf/syscalls/syscalls.bpf.c, current_ids()).
  bpf_program* keep_cur = btf ? skel->progs.vigil_syscur_btf : nullptr;
  skel->rodata->have_cur = keep_cur != nullptr;
  bpf_program* prog;
  bpf_object__for_each_program(prog, skel->obj) {
    bpf_program__set_autoload(prog, prog == keep_enter || prog == keep_exit || prog == keep_cur);
  }
  btf_scope.reset();
  int err = syscalls_bpf::load(skel);
  if (err != 0) {
    syscalls_bpf::destroy(skel);
    return bpfError("syscalls", err);
  }
  std::unique_ptr<SyscallCollector> c(
      new SyscallCollector(skel, btf ? "tp_btf" : "raw_tp", effective));
  // Both modes start attached: sampled mode's first window opens now, run() keeps the cadence.
  absl::Status st = c->attach();
  if (!st.ok()) {
    return st;
  }
  return c;
}

SyscallCollector::~SyscallCollector() {
  detach();
  if (skel_ != nullptr) {
    syscalls_bpf::destroy(skel_);
  }
}

absl::Status SyscallCollector::attach() {
  if (skel_ == nullptr || attached()) {
    return absl::OkStatus();
  }
  bpf_program* enter = nullptr;
  bpf_program* exit = nullptr;
  bpf_program* cur = nullptr;
  bpf_program* prog;
  bpf_object__for_each_program(prog, skel_->obj) {
    if (bpf_program__fd(prog) < 0) {
      continue;
    }
    // Enter programs are vigil_sysen_* (sampled latency) and vigil_sysel_* (exact).
    absl::string_view name = bpf_program__name(prog);
    if (name.substr(0, 11) == "vigil_sysen" || name.substr(0, 11) == "vigil_sysel") {
      enter = prog;
    } else if (name == "vigil_syscur_btf") {
      cur = prog;
    } else {
      exit = prog;
    }
  }
  // A new window: start times stamped in an earlier one are stale (their exits went unseen),
  // and so are the per-CPU current-task records.
  skel_->bss->window += 1;
  // The current-task recorder first: the syscall programs never run without it.
  if (cur != nullptr) {
    cur_link_ = bpf_program__attach(cur);
    if (cur_link_ == nullptr) {
      int err = -errno;
      ++attach_failures_;
      return bpfError("syscalls: attach sched_switch", err);
    }
  }
  if (enter != nullptr) {
    enter_link_ = bpf_program__attach(enter);
    if (enter_link_ == nullptr) {
      int err = -errno;
      ++attach_failures_;
      bpf_link__destroy(cur_link_);
      cur_link_ = nullptr;
      return bpfError("syscalls: attach sys_enter", err);
    }
  }
  exit_link_ = bpf_program__attach(exit);
  if (exit_link_ == nullptr) {
    int err = -errno;
    ++attach_failures_;
    bpf_link__destroy(enter_link_);
    enter_link_ = nullptr;
    bpf_link__destroy(cur_link_);
    cur_link_ = nullptr;
    return bpfError("syscalls: attach sys_exit", err);
  }
  attached_since_ns_ = monoNs();
  ++windows_;
  return absl::OkStatus();
}

void SyscallCollector::detach() {
  if (!attached()) {
    return;
  }
  // Exit first, so no exit is counted whose enter could not have been stamped.
  bpf_link__destroy(exit_link_);
  exit_link_ = nullptr;
  bpf_link__destroy(enter_link_);
  enter_link_ = nullptr;
  // The recorder last.
  bpf_link__destroy(cur_link_);
  cur_link_ = nullptr;
  attached_ns_total_ += monoNs() - attached_since_ns_;
}

double SyscallCollector::attachedFraction() const {
  if (skel_ == nullptr) {
    return 0;
  }
  if (options_.mode == SyscallMode::kContinuous) {
    return 1;
  }
  int64_t now = monoNs();
  int64_t on = attached_ns_total_ + (attached() ? now - attached_since_ns_ : 0);
  int64_t all = now - created_ns_;
  if (all <= 0) {
    return 1;
  }
  return std::min(1.0, static_cast<double>(on) / static_cast<double>(all));
}

std::vector<uint32_t> SyscallCollector::programIds() const {
  std::vector<uint32_t> ids;
  if (skel_ == nullptr) {
    return ids;
  }
  bpf_program* prog;
  bpf_object__for_each_program(prog, skel_->obj) {
    int fd = bpf_program__fd(prog);
    if (fd < 0) {
      continue;
    }
    bpf_prog_info info = {};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
      ids.push_back(info.id);
    }
  }
  return ids;
}

kj::Promise<void> SyscallCollector::run(CollectorContext& context) {
  if (skel_ == nullptr || options_.mode != SyscallMode::kSampled || options_.duty_cycle >= 1) {
    return kj::NEVER_DONE;
  }
  // The first window is the one create() opened (attach() is a no-op while attached).
  return duty_.run(context.timer, open_window_, close_window_);
}

void SyscallCollector::collect(Snapshot& out) {
  if (skel_ == nullptr) {
    out.syscall_duty_cycle = 0;
    out.collectors.push_back(CollectorState{"syscalls", false, "syscall_mode=off"});
    return;
  }
  double fraction = attachedFraction();
  out.syscall_duty_cycle = fraction;

  // Errnos first, grouped per process: sys_errno plus the runs still cached per CPU.
  int errno_fd = bpf_map__fd(skel_->maps.sys_errno);
  absl::flat_hash_map<uint32_t, absl::flat_hash_map<uint32_t, uint64_t>> errnos;
  for (const auto& [k, n] : readHash<syscall_errno_key, uint64_t>(errno_fd)) {
    errnos[k.tgid][k.err] += n;
  }

  // Counts still in the per-CPU caches (see struct syscall_cache), by tgid.
  absl::flat_hash_map<uint32_t, std::pair<uint64_t, uint64_t>> cached;
  {
    std::vector<syscall_cache> cpus(possibleCpus());
    uint32_t zero = 0;
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.sys_cache), &zero, cpus.data()) == 0) {
      for (const syscall_cache& c : cpus) {
        for (const syscall_cache_slot& s : c.slots) {
          if (s.count != 0) {
            cached[s.tgid].first += s.count;
            cached[s.tgid].second += s.errors;
          }
          if (s.err_count != 0) {
            errnos[s.tgid][s.err] += s.err_count;
          }
        }
      }
    }
  }

  int proc_fd = bpf_map__fd(skel_->maps.sys_proc);
  uint64_t live_syscalls = 0;
  uint64_t live_errors = 0;
  std::vector<uint32_t> gone;
  for (const auto& [tgid, v] : readHash<uint32_t, syscall_proc_stats>(proc_fd)) {
    uint64_t count = v.count;
    uint64_t errors = v.errors;
    ProcessStats& p = out.process(tgid);
    if (p.cgroup_id == 0) {
      p.cgroup_id = v.cgroup_id;
    }
    if (p.comm.empty()) {
      char kernel_comm[SYSCALL_COMM_LEN + 1] = {};
      memcpy(kernel_comm, v.comm, SYSCALL_COMM_LEN);
      p.comm = reportedComm(tgid, kernel_comm, SYSCALL_COMM_LEN);
    }
    auto in_cache = cached.find(tgid);
    if (in_cache != cached.end()) {
      count += in_cache->second.first;
      errors += in_cache->second.second;
    }
    // A read racing the kernel's cache flush can see counts twice, once: never report less
    // than before, so counters stay monotonic.
    auto& last = last_raw_[tgid];
    count = std::max(count, last.first);
    errors = std::max(errors, last.second);
    last = {count, errors};
    p.syscalls = scaled(count, fraction);
    p.syscall_errors = scaled(errors, fraction);
    auto it = errnos.find(tgid);
    if (it != errnos.end()) {
      std::vector<std::pair<uint32_t, uint64_t>> list(it->second.begin(), it->second.end());
      std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) {
        return a.second != b.second ? a.second > b.second : a.first < b.first;
      });
      if (list.size() > options_.top_errnos) {
        list.resize(options_.top_errnos);
      }
      p.top_errnos.clear();
      for (const auto& [err, n] : list) {
        p.top_errnos.emplace_back(err, scaled(n, fraction));
      }
    }
    if (processGone(tgid)) {
      p.exited = true;
      gone.push_back(tgid);
      retired_syscalls_ += count;
      retired_errors_ += errors;
    } else {
      live_syscalls += count;
      live_errors += errors;
    }
  }
  for (uint32_t tgid : gone) {
    bpf_map_delete_elem(proc_fd, &tgid);
    last_raw_.erase(tgid);
    auto it = errnos.find(tgid);
    if (it == errnos.end()) {
      continue;
    }
    for (const auto& [err, n] : it->second) {
      syscall_errno_key k{tgid, err};
      bpf_map_delete_elem(errno_fd, &k);
    }
  }

  out.host.push_back(
      MetricSample{"vigil_syscalls_total",
                   {},
                   static_cast<double>(scaled(live_syscalls + retired_syscalls_, fraction)),
                   true});
  out.host.push_back(
      MetricSample{"vigil_syscall_errors_total",
                   {},
                   static_cast<double>(scaled(live_errors + retired_errors_, fraction)),
                   true});

  if (options_.latency) {
    std::vector<syscall_hist> cpus(possibleCpus());
    uint32_t zero = 0;
    HistogramSample h;
    h.name = "vigil_syscall_latency_seconds";
    h.unit_ns = 1;
    h.buckets.assign(SYSCALL_HIST_SLOTS, 0);
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.sys_latency), &zero, cpus.data()) == 0) {
      uint64_t sum = 0;
      for (const syscall_hist& c : cpus) {
        for (int i = 0; i < SYSCALL_HIST_SLOTS; ++i) {
          h.buckets[i] += c.slots[i];
        }
        sum += c.sum_ns;
      }
      // Sampled latency: the samples give the shape, the exact syscall count the total. Each
      // completed sample stands for total / samples syscalls (about latency_sample_every; more
      // when samples were skipped, see vigil_syscall_latency_samples_skipped_total).
      double hist_fraction = fraction;
      if (options_.latency_sample_every > 1) {
        uint64_t samples = 0;
        for (uint64_t b : h.buckets) {
          samples += b;
        }
        uint64_t total = live_syscalls + retired_syscalls_;
        hist_fraction = samples == 0 || total == 0
                            ? 0
                            : fraction * static_cast<double>(samples) / static_cast<double>(total);
      }
      for (uint64_t& b : h.buckets) {
        b = scaled(b, hist_fraction);
        h.count += b;
      }
      h.sum_units = scaled(sum, hist_fraction);
    }
    out.histograms.push_back(std::move(h));
  }

  int counters = bpf_map__fd(skel_->maps.sys_counters);
  appendKernelCounters(
      counters,
      {{"vigil_bpf_map_full_total", {{"map", "syscalls_sys_proc"}}, SYSCALL_COUNTER_PROC_MAP_FULL},
       {"vigil_bpf_map_full_total",
        {{"map", "syscalls_sys_errno"}},
        SYSCALL_COUNTER_ERRNO_MAP_FULL},
       {"vigil_bpf_map_full_total", {{"map", "syscalls_sys_start"}}, SYSCALL_COUNTER_START_FAILED},
       {"vigil_syscall_latency_samples_skipped_total", {}, SYSCALL_COUNTER_SAMPLE_BUSY},
       {"vigil_syscall_current_task_lookups_total", {}, SYSCALL_COUNTER_IDS_MISS},
       {"vigil_syscall_cache_flushes_total", {}, SYSCALL_COUNTER_CACHE_FLUSH}},
      out.self);
  out.self.push_back(MetricSample{
      "vigil_syscall_latency_sample_ratio",
      {},
      options_.latency ? 1.0 / static_cast<double>(options_.latency_sample_every) : 0.0,
      false});
  int64_t on_ns = attached_ns_total_ + (attached() ? monoNs() - attached_since_ns_ : 0);
  out.self.push_back(MetricSample{"vigil_syscall_attached_seconds_total", {}, on_ns / 1e9, true});
  out.self.push_back(
      MetricSample{"vigil_syscall_attach_windows_total", {}, static_cast<double>(windows_), true});
  out.self.push_back(MetricSample{
      "vigil_syscall_attach_failures_total", {}, static_cast<double>(attach_failures_), true});
  appendProgramStats(skel_->obj, out.self);
  out.collectors.push_back(CollectorState{"syscalls", last_error_.empty(), last_error_});
}

}  // namespace vigil
