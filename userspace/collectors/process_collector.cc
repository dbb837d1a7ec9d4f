#include "userspace/collectors/process_collector.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <signal.h>
#include <time.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernel-compat/core_btf.h"
#include "kernel-compat/features.h"
#include "process.skel.h"
#include "process/process.h"
#include "userspace/collectors/bpf_util.h"
#include "userspace/common/log.h"
#include "userspace/common/shrink.h"
#include "userspace/common/clock.h"

namespace vigil {
namespace {

static_assert(ProcessCollector::kTypes == VIGIL_PEV_TYPE_MAX, "event type count out of step");

// Signals reported by signal_generate: those whose default action kills the process and that
// mean something went wrong (faults, aborts, kills), not an ordinary SIGTERM shutdown.
constexpr int kFatalSignals[] = {SIGQUIT, SIGILL,  SIGTRAP, SIGABRT, SIGBUS, SIGFPE,
                                 SIGKILL, SIGSEGV, SIGSYS,  SIGXCPU, SIGXFSZ};

// True when mark_victim's first argument is a pid rather than a task_struct * (see
// process.bpf.c). Read from the kernel's BTF: the typedef btf_trace_mark_victim points to the
// tracepoint's prototype, whose parameter 1 (after the context) is that argument.
bool oomArgIsPid(const struct btf* btf) {
  if (btf == nullptr) {
    return true;  // no BTF: do not dereference what may be a pid
  }
  bool is_pid = true;
  int id = btf__find_by_name_kind(btf, "btf_trace_mark_victim", BTF_KIND_TYPEDEF);
  if (id > 0) {
    const struct btf_type* t = btf__type_by_id(btf, btf__type_by_id(btf, id)->type);
    if (t != nullptr && btf_is_ptr(t)) {
      const struct btf_type* proto = btf__type_by_id(btf, t->type);
      if (proto != nullptr && btf_is_func_proto(proto) && btf_vlen(proto) >= 2) {
        int arg = btf__resolve_type(btf, btf_params(proto)[1].type);
        const struct btf_type* at = arg > 0 ? btf__type_by_id(btf, arg) : nullptr;
        is_pid = at == nullptr || !btf_is_ptr(at);
      }
    }
  }
  return is_pid;
}

std::string fixedString(const char* s, size_t max) { return std::string(s, strnlen(s, max)); }

}  // namespace

void appendRecursionMisses(const bpf_object* obj, std::vector<MetricSample>& out) {
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    int fd = bpf_program__fd(prog);
    if (fd < 0) {
      continue;  // not loaded (the unused attach flavour)
    }
    bpf_prog_info info;
    memset(&info, 0, sizeof(info));
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
      continue;
    }
    out.push_back(MetricSample{"vigil_bpf_program_recursion_misses_total",
                               {{"program", bpf_program__name(prog)}},
                               static_cast<double>(info.recursion_misses),
                               true});
  }
}

const char* procEventTypeName(int type) {
  switch (type) {
    case VIGIL_PEV_EXEC:
      return "exec";
    case VIGIL_PEV_EXIT:
      return "exit";
    case VIGIL_PEV_FORK:
      return "fork";
    case VIGIL_PEV_OOM_KILL:
      return "oom_kill";
    case VIGIL_PEV_SIGNAL:
      return "signal";
  }
  return "unknown";
}

ProcessCollector::ProcessCollector(process_bpf* skel, const char* mode, size_t max_buffered,
                                   std::unique_ptr<Masker> masker,
                                   std::vector<std::string> mask_errors)
    : skel_(skel),
      attach_mode_(mode),
      max_buffered_(max_buffered),
      masker_(std::move(masker)),
      mask_errors_(std::move(mask_errors)) {}

absl::StatusOr<std::unique_ptr<ProcessCollector>> ProcessCollector::create(
    const ProcessOptions& options) {
  if (!compat::haveRingBuffer()) {
    return absl::FailedPreconditionError(
        "process: this kernel has no BPF ring buffer (needs 5.8+); process events are off");
  }
  if (options.only_comm.size() >= VIGIL_PROC_COMM_LEN) {
    return absl::InvalidArgumentError(absl::StrCat("process: comm filter '", options.only_comm,
                                                   "' is longer than the kernel's 15 bytes"));
  }
  auto type_on = [&](ProcEventType t) {
    return (options.event_types & (1u << static_cast<int>(t))) != 0;
  };
  // mark_victim's argument type needs vigil's own parse of vmlinux BTF (~10 ms); only when OOM
  // events are wanted (not for `vigil trace exec`, whose start-up is measured).
  bool oom_arg_is_pid = true;
  if (type_on(ProcEventType::kOomKill)) {
    compat::VmlinuxBtfScope btf_scope;
    std::optional<bool> is_ptr = compat::tracepointArgIsPointer("mark_victim", 0);
    oom_arg_is_pid = is_ptr.has_value() ? !*is_ptr : oomArgIsPid(btf_scope.btf());
  }
  std::vector<std::string> mask_errors;
  std::unique_ptr<Masker> masker = Masker::create(options.mask_patterns, &mask_errors);
  for (const std::string& e : mask_errors) {
    VIGIL_LOG_WARN("process: %s; pattern skipped", e);
  }
  uint64_t mask = 0;
  for (int s : kFatalSignals) {
    mask |= 1ULL << s;
  }

  // tp_btf for every hook, or raw_tp for every hook: one attach type serves the whole object.
  // Rather than parsing vmlinux BTF to probe for the four btf_trace_* types (a second ~10 ms
  // parse next to libbpf's own), load with tp_btf and fall back to raw_tp if that load fails.
  process_bpf* skel = nullptr;
  bool btf = !options.force_raw_tp && compat::haveKernelBtf();
  int err = 0;
  while (true) {
    skel = process_bpf::open(compat::coreBtfOpenOpts());
    if (skel == nullptr) {
      return bpfError("process: open", -errno);
    }
    skel->rodata->targ_tgid = options.only_tgid;
    skel->rodata->targ_cgroup_id = options.only_cgroup_id;
    skel->rodata->targ_types = options.event_types;
    memcpy(const_cast<char*>(skel->rodata->targ_comm), options.only_comm.data(),
           options.only_comm.size());
    skel->rodata->fatal_signal_mask = mask;
    skel->rodata->oom_arg_is_pid = oom_arg_is_pid;
    bpf_map__set_max_entries(skel->maps.events, options.ring_bytes);
    skel->rodata->wakeup_bytes =
        options.wakeup_bytes != 0 ? options.wakeup_bytes : options.ring_bytes / 4;
    bpf_program* unused[] = {
        btf ? skel->progs.vigil_exec_raw : skel->progs.vigil_exec_btf,
        btf ? skel->progs.vigil_exit_raw : skel->progs.vigil_exit_btf,
        btf ? skel->progs.vigil_fork_raw : skel->progs.vigil_fork_btf,
        btf ? skel->progs.vigil_sig_raw : skel->progs.vigil_sig_btf,
    };
    for (bpf_program* p : unused) {
      bpf_program__set_autoload(p, false);
    }
    // Types filtered out in the kernel need no program at all (faster load for `vigil trace`).
    std::pair<ProcEventType, std::vector<bpf_program*>> by_type[] = {
        {ProcEventType::kExec, {skel->progs.vigil_exec_btf, skel->progs.vigil_exec_raw}},
        {ProcEventType::kExit, {skel->progs.vigil_exit_btf, skel->progs.vigil_exit_raw}},
        {ProcEventType::kFork, {skel->progs.vigil_fork_btf, skel->progs.vigil_fork_raw}},
        {ProcEventType::kSignal, {skel->progs.vigil_sig_btf, skel->progs.vigil_sig_raw}},
        {ProcEventType::kOomKill, {skel->progs.vigil_oom_raw}},
    };
    for (const auto& [type, progs] : by_type) {
      if (!type_on(type)) {
        for (bpf_program* p : progs) {
          bpf_program__set_autoload(p, false);
        }
      }
    }
    err = process_bpf::load(skel);
    if (err == 0) {
      err = process_bpf::attach(skel);
    }
    if (err == 0) {
      break;
    }
    process_bpf::destroy(skel);
    if (!btf || err == -EPERM) {
      return bpfError("process", err);
    }
    btf = false;  // a hook without BTF (or no tp_btf support): retry with raw_tp
  }
  std::unique_ptr<ProcessCollector> c(
      new ProcessCollector(skel, btf ? "tp_btf" : "raw_tp", options.max_buffered_events,
                           std::move(masker), std::move(mask_errors)));
  auto ring =
      RingReader::open(bpf_map__fd(skel->maps.events), &ProcessCollector::onRecord, c.get());
  if (!ring.ok()) {
    return ring.status();
  }
  c->ring_ = std::move(*ring);
  return c;
}

ProcessCollector::~ProcessCollector() {
  ring_.reset();  // before the skeleton closes the map it reads
  process_bpf::destroy(skel_);
}

int ProcessCollector::onRecord(void* ctx, void* data, size_t size) {
  static_cast<ProcessCollector*>(ctx)->handle(static_cast<const uint8_t*>(data), size);
  return 0;
}

void ProcessCollector::handle(const uint8_t* data, size_t size) {
  proc_event_header h;
  if (size < sizeof(h)) {
    ++malformed_;
    return;
  }
  memcpy(&h, data, sizeof(h));
  size_t need = 0;
  switch (h.type) {
    case VIGIL_PEV_EXEC:
      need = offsetof(proc_exec_event, argv);
      break;
    case VIGIL_PEV_EXIT:
      need = sizeof(proc_exit_event);
      break;
    case VIGIL_PEV_FORK:
      need = sizeof(proc_fork_event);
      break;
    case VIGIL_PEV_OOM_KILL:
      need = sizeof(proc_oom_event);
      break;
    case VIGIL_PEV_SIGNAL:
      need = sizeof(proc_signal_event);
      break;
    default:
      ++malformed_;
      return;
  }
  if (size < need) {
    ++malformed_;
    return;
  }
  ++seen_[h.type];
  if (buffered_.size() >= max_buffered_) {
    ++dropped_[h.type];
    return;
  }
  Buffered b;
  b.type = static_cast<int>(h.type);
  b.pid = h.pid;
  b.tid = h.tid;
  b.ppid = h.ppid;
  b.ktime_ns = h.ktime_ns;
  b.cgroup_id = h.cgroup_id;
  b.comm = fixedString(h.comm, sizeof(h.comm));
  switch (h.type) {
    case VIGIL_PEV_EXEC: {
      proc_exec_event e;
      memset(&e, 0, sizeof(e));
      memcpy(&e, data, std::min(size, sizeof(e)));
      size_t argv_len = std::min<size_t>({e.argv_len, size - need, sizeof(e.argv)});
      b.filename = fixedString(e.filename, std::min<size_t>(e.filename_len, sizeof(e.filename)));
      absl::string_view raw(e.argv, argv_len);
      while (!raw.empty() && raw.back() == '\0') {
        raw.remove_suffix(1);
      }
      std::vector<std::string> args = absl::StrSplit(raw, '\0');
      b.argv = masker_->maskArgvJoined(std::move(args));
      b.argv_truncated = e.argv_truncated != 0 || e.argv_len != argv_len;
      break;
    }
    case VIGIL_PEV_EXIT: {
      proc_exit_event e;
      memcpy(&e, data, sizeof(e));
      b.exit_code = e.exit_code;
      b.lifetime_ns = e.lifetime_ns;
      break;
    }
    case VIGIL_PEV_FORK: {
      proc_fork_event e;
      memcpy(&e, data, sizeof(e));
      b.child_pid = e.child_pid;
      break;
    }
    case VIGIL_PEV_OOM_KILL: {
      proc_oom_event e;
      memcpy(&e, data, sizeof(e));
      b.total_vm_kb = e.total_vm_kb;
      b.anon_rss_kb = e.anon_rss_kb;
      break;
    }
    case VIGIL_PEV_SIGNAL: {
      proc_signal_event e;
      memcpy(&e, data, sizeof(e));
      b.signal = e.signal;
      b.sender_pid = e.sender_pid;
      b.result = e.result;
      break;
    }
  }
  buffered_.push_back(std::move(b));
}

int ProcessCollector::poll(int timeout_ms) { return pollRingBuffer(ring_.get(), timeout_ms); }

kj::Promise<void> ProcessCollector::run(CollectorContext& context) {
  return drainRingBuffer(context, ring_.get());
}

uint64_t ProcessCollector::lostInKernel(ProcEventType t) const {
  return sumPerCpuCounter(bpf_map__fd(skel_->maps.proc_counters),
                          PROC_COUNTER_LOST_BASE + static_cast<uint32_t>(t));
}

uint64_t ProcessCollector::generatedInKernel(ProcEventType t) const {
  return sumPerCpuCounter(bpf_map__fd(skel_->maps.proc_counters),
                          PROC_COUNTER_GENERATED_BASE + static_cast<uint32_t>(t));
}

void ProcessCollector::setMaskPatterns(const std::vector<std::string>& patterns) {
  std::vector<std::string> errors;
  std::unique_ptr<Masker> next = Masker::create(patterns, &errors);
  masked_by_earlier_maskers_ += masker_->maskedCount();
  masker_ = std::move(next);
  mask_errors_ = std::move(errors);
}

void ProcessCollector::collect(Snapshot& out) {
  poll(0);
  int64_t wall_minus_mono = clockNs(CLOCK_REALTIME) - clockNs(CLOCK_MONOTONIC);
  for (const Buffered& b : buffered_) {
    wire::Event::Builder ev = out.newEvent();
    ev.setTimestampNs(static_cast<int64_t>(b.ktime_ns) + wall_minus_mono);
    ev.setPid(b.pid);
    ev.setTid(b.tid);
    ev.setPpid(b.ppid);
    ev.setComm(b.comm);
    ev.setCgroupId(b.cgroup_id);
    switch (b.type) {
      case VIGIL_PEV_EXEC: {
        auto e = ev.initExec();
        e.setFilename(b.filename);
        e.setArgv(b.argv);
        e.setArgvTruncated(b.argv_truncated);
        break;
      }
      case VIGIL_PEV_EXIT: {
        auto e = ev.initExit();
        e.setExitCode(static_cast<int32_t>((b.exit_code >> 8) & 0xff));
        e.setSignal(static_cast<int32_t>(b.exit_code & 0x7f));
        e.setCoreDumped((b.exit_code & 0x80) != 0);
        e.setLifetimeNs(b.lifetime_ns);
        break;
      }
      case VIGIL_PEV_FORK:
        ev.initFork().setChildPid(b.child_pid);
        break;
      case VIGIL_PEV_OOM_KILL: {
        auto e = ev.initOomKill();
        e.setVictimPid(b.pid);
        e.setVictimComm(b.comm);
        e.setVictimCgroupId(b.cgroup_id);
        e.setTotalVmKb(b.total_vm_kb);
        e.setAnonRssKb(b.anon_rss_kb);
        break;
      }
      case VIGIL_PEV_SIGNAL: {
        auto e = ev.initSignal();
        e.setSignal(b.signal);
        e.setTargetPid(b.pid);
        e.setSenderPid(b.sender_pid);
        e.setResult(b.result);
        break;
      }
    }
  }
  // A burst leaves the buffer at its peak capacity: release it when this interval used less than
  // a quarter of it (userspace/common/shrink.h).
  size_t held = buffered_.size();
  buffered_.clear();
  if (buffered_.capacity() > kShrinkMinCapacity && buffered_.capacity() > 4 * held) {
    std::vector<Buffered>().swap(buffered_);
  }

  int counters = bpf_map__fd(skel_->maps.proc_counters);
  for (int t = 1; t < kTypes; ++t) {
    Labels l = {{"collector", "process"}, {"type", procEventTypeName(t)}};
    out.self.push_back(MetricSample{"vigil_events_total", l, static_cast<double>(seen_[t]), true});
    out.self.push_back(MetricSample{
        "vigil_ringbuf_reserve_failures_total", l,
        static_cast<double>(sumPerCpuCounter(counters, PROC_COUNTER_LOST_BASE + t)), true});
    out.self.push_back(MetricSample{
        "vigil_events_generated_total", l,
        static_cast<double>(sumPerCpuCounter(counters, PROC_COUNTER_GENERATED_BASE + t)), true});
    out.self.push_back(MetricSample{
        "vigil_events_dropped_total",
        {{"collector", "process"}, {"type", procEventTypeName(t)}, {"reason", "buffer_full"}},
        static_cast<double>(dropped_[t]),
        true});
  }
  out.self.push_back(MetricSample{"vigil_events_malformed_total",
                                  {{"collector", "process"}},
                                  static_cast<double>(malformed_),
                                  true});
  out.self.push_back(
      MetricSample{"vigil_exec_argv_unreadable_total",
                   {},
                   static_cast<double>(sumPerCpuCounter(counters, PROC_COUNTER_ARGV_READ_FAIL)),
                   true});
  out.self.push_back(
      MetricSample{"vigil_masked_values_total",
                   {},
                   static_cast<double>(masked_by_earlier_maskers_ + masker_->maskedCount()),
                   true});
  out.self.push_back(MetricSample{
      "vigil_mask_pattern_errors", {}, static_cast<double>(mask_errors_.size()), false});
  appendProgramStats(skel_->obj, out.self);
  appendRecursionMisses(skel_->obj, out.self);
  out.collectors.push_back(CollectorState{"process", true, ""});
}

}  // namespace vigil
