#include "userspace/collectors/block_collector.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <signal.h>

#include <cerrno>
#include <optional>
#include <fstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "block.skel.h"
#include "block/block.h"
#include "kernel-compat/core_btf.h"
#include "kernel-compat/features.h"
#include "userspace/collectors/bpf_util.h"
#include "userspace/collectors/task_comm.h"

namespace vigil {
namespace {

constexpr const char* kOpNames[BLOCK_OP_MAX] = {"read", "write", "other"};

}  // namespace

std::string blockDeviceName(uint32_t major, uint32_t minor) {
  std::ifstream uevent(absl::StrCat("/sys/dev/block/", major, ":", minor, "/uevent"));
  std::string line;
  while (std::getline(uevent, line)) {
    if (absl::StartsWith(line, "DEVNAME=") && line.size() > 8) {
      return line.substr(8);
    }
  }
  return absl::StrCat(major, ":", minor);
}

absl::StatusOr<std::unique_ptr<BlockCollector>> BlockCollector::create(
    const BlockOptions& options) {
  // One vmlinux BTF parse for all feature probes, freed before libbpf parses its own at load.
  std::optional<compat::VmlinuxBtfScope> btf_scope(std::in_place);
  block_bpf* skel = block_bpf::open(compat::coreBtfOpenOpts());
  if (skel == nullptr) {
    return bpfError("block: open", -errno);
  }
  skel->rodata->targ_tgid = options.only_tgid;
  bool btf = !options.force_raw_tp && compat::haveBtfTracepoint("block_rq_insert") &&
             compat::haveBtfTracepoint("block_rq_issue") &&
             compat::haveBtfTracepoint("block_rq_complete");
  bpf_program__set_autoload(btf ? skel->progs.vigil_bins_raw : skel->progs.vigil_bins_btf, false);
  bpf_program__set_autoload(btf ? skel->progs.vigil_biss_raw : skel->progs.vigil_biss_btf, false);
  bpf_program__set_autoload(btf ? skel->progs.vigil_bcmp_raw : skel->progs.vigil_bcmp_btf, false);
  btf_scope.reset();
  int err = block_bpf::load(skel);
  if (err == 0) {
    err = block_bpf::attach(skel);
  }
  if (err != 0) {
    block_bpf::destroy(skel);
    return bpfError("block", err);
  }
  return std::unique_ptr<BlockCollector>(new BlockCollector(skel, btf ? "tp_btf" : "raw_tp"));
}

BlockCollector::~BlockCollector() { block_bpf::destroy(skel_); }

const std::string& BlockCollector::deviceName(uint32_t dev) {
  auto it = names_.find(dev);
  if (it == names_.end()) {
    it = names_
             .emplace(dev,
                      blockDeviceName(dev >> BLOCK_MINORBITS, dev & ((1u << BLOCK_MINORBITS) - 1)))
             .first;
  }
  return it->second;
}

void BlockCollector::collect(Snapshot& out) {
  for (const auto& [dev, st] :
       readHash<uint32_t, block_dev_stats>(bpf_map__fd(skel_->maps.blk_dev))) {
    std::string mm = absl::StrCat(dev >> BLOCK_MINORBITS, ":", dev & ((1u << BLOCK_MINORBITS) - 1));
    const std::string& name = deviceName(dev);
    for (int op = 0; op < BLOCK_OP_MAX; ++op) {
      if (st.ops[op] == 0) {
        continue;
      }
      Labels l = {{"device", name}, {"major_minor", mm}, {"op", kOpNames[op]}};
      out.host.push_back(
          MetricSample{"vigil_block_device_ops_total", l, static_cast<double>(st.ops[op]), true});
      out.host.push_back(MetricSample{"vigil_block_device_bytes_total", l,
                                      static_cast<double>(st.bytes[op]), true});
      HistogramSample h;
      h.name = "vigil_block_latency_seconds";
      h.labels = l;
      h.unit_ns = 1000;
      h.buckets.assign(std::begin(st.slots[op]), std::end(st.slots[op]));
      for (uint64_t b : h.buckets) {
        h.count += b;
      }
      h.sum_units = st.sum_us[op];
      out.histograms.push_back(std::move(h));
    }
  }

  int proc_fd = bpf_map__fd(skel_->maps.blk_proc);
  for (const auto& [tgid, st] : readHash<uint32_t, block_proc_stats>(proc_fd)) {
    ProcessStats& p = out.process(tgid);
    p.block_read_bytes = st.read_bytes;
    p.block_write_bytes = st.write_bytes;
    p.block_read_ops = st.read_ops;
    p.block_write_ops = st.write_ops;
    if (p.comm.empty()) {
      p.comm = reportedComm(tgid, st.comm, sizeof(st.comm));
    }
    if (p.cgroup_id == 0) {
      p.cgroup_id = st.cgroup_id;
    }
    if (processGone(tgid)) {
      p.exited = true;
      bpf_map_delete_elem(proc_fd, &tgid);
    }
  }

  int counters = bpf_map__fd(skel_->maps.blk_counters);
  appendKernelCounters(
      counters,
      {{"vigil_bpf_map_full_total", {{"map", "block_blk_dev"}}, BLOCK_COUNTER_DEV_MAP_FULL},
       {"vigil_bpf_map_full_total", {{"map", "block_blk_proc"}}, BLOCK_COUNTER_PROC_MAP_FULL},
       {"vigil_block_completions_without_issue_total", {}, BLOCK_COUNTER_NO_ISSUE},
       {"vigil_block_completions_unmatched_total", {}, BLOCK_COUNTER_UNKNOWN_RQ},
       {"vigil_block_reissues_total", {}, BLOCK_COUNTER_REISSUE}},
      out.self);
  appendProgramStats(skel_->obj, out.self);
  out.collectors.push_back(CollectorState{"block", true, ""});
}

}  // namespace vigil
