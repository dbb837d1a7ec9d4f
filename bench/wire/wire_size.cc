// vigil-bench-wire: bytes per sample of one steady-state frame as the agent sends it (Cap'n Proto
// packed + zstd, the payload of IngestSession.push) against JSON and JSON+gzip of the same data.
//
//   vigil-bench-wire [--seq=N] [--processes=N] [--containers=N]   synthetic frame (~500 series)
//   vigil-bench-wire --live [--interval_ms=1000]                  this host's frame, from the
//                                                                 agent's own collectors (root)
//
// Two JSON shapes, both generous to JSON: "structured" mirrors the frame (one object per process
// with named fields, zero fields omitted, the way a JSON agent would ship it); "series" is a flat
// list of {name, labels, value}, one per Prometheus series. Output is key=value lines.
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "bench/common/synth_frame.h"
#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"
#include "nlohmann/json.hpp"
#include "userspace/collectors/registry.h"
#include "userspace/common/frame_metrics.h"
#include "userspace/common/prom_text.h"

namespace {

using nlohmann::json;

std::string gzip(const std::string& in) {
  z_stream zs = {};
  // windowBits 15 + 16: gzip framing; level 6 is gzip's default.
  if (deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return {};
  }
  std::string out(deflateBound(&zs, in.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

json labelsJson(const vigil::Labels& labels) {
  json o = json::object();
  for (const auto& [k, v] : labels) {
    o[k] = v;
  }
  return o;
}

template <typename T>
void putIf(json& o, const char* key, T v) {
  if (v != T{}) {
    o[key] = v;
  }
}

json structuredJson(const vigil::Snapshot& s) {
  json f;
  f["agent"] = {{"agent_id", s.agent.agent_id},
                {"node_name", s.agent.node_name},
                {"version", s.agent.version},
                {"kernel", s.agent.kernel},
                {"labels", labelsJson(s.agent.labels)}};
  f["boot_epoch"] = s.boot_epoch;
  f["seq"] = s.seq;
  f["interval_start_ns"] = s.start_unix_ns;
  f["interval_end_ns"] = s.end_unix_ns;
  f["interval_ms"] = s.interval_ms;
  f["syscall_duty_cycle"] = s.syscall_duty_cycle;
  json procs = json::array();
  for (const auto& [pid, p] : s.processes) {
    json o;
    o["pid"] = p.pid;
    o["comm"] = p.comm;
    putIf(o, "cgroup_id", p.cgroup_id);
    putIf(o, "cmdline", p.cmdline);
    putIf(o, "container_id", p.container_id);
    putIf(o, "cpu_ns", p.cpu_ns);
    putIf(o, "voluntary_switches", p.voluntary_switches);
    putIf(o, "involuntary_switches", p.involuntary_switches);
    putIf(o, "syscalls", p.syscalls);
    putIf(o, "syscall_errors", p.syscall_errors);
    if (!p.top_errnos.empty()) {
      json e = json::array();
      for (const auto& [err, n] : p.top_errnos) {
        e.push_back({{"errno", err}, {"count", n}});
      }
      o["top_errnos"] = e;
    }
    putIf(o, "tcp_tx_bytes", p.tcp_tx_bytes);
    putIf(o, "tcp_rx_bytes", p.tcp_rx_bytes);
    putIf(o, "udp_tx_bytes", p.udp_tx_bytes);
    putIf(o, "udp_rx_bytes", p.udp_rx_bytes);
    putIf(o, "tcp_retransmits", p.tcp_retransmits);
    putIf(o, "tcp_active_opens", p.tcp_active_opens);
    putIf(o, "tcp_passive_opens", p.tcp_passive_opens);
    putIf(o, "tcp_connect_failures", p.tcp_connect_failures);
    putIf(o, "tcp_resets_sent", p.tcp_resets_sent);
    putIf(o, "tcp_resets_received", p.tcp_resets_received);
    putIf(o, "block_read_bytes", p.block_read_bytes);
    putIf(o, "block_write_bytes", p.block_write_bytes);
    putIf(o, "block_read_ops", p.block_read_ops);
    putIf(o, "block_write_ops", p.block_write_ops);
    procs.push_back(o);
  }
  f["processes"] = procs;
  json conts = json::array();
  for (const auto& c : s.containers) {
    json o;
    o["cgroup_id"] = c.cgroup_id;
    o["cgroup_path"] = c.cgroup_path;
    putIf(o, "container_id", c.container_id);
    putIf(o, "runtime", c.runtime);
    putIf(o, "pod_uid", c.pod_uid);
    putIf(o, "qos_class", c.qos_class);
    putIf(o, "systemd_unit", c.systemd_unit);
    putIf(o, "cpu_ns", c.cpu_ns);
    putIf(o, "syscalls", c.syscalls);
    putIf(o, "syscall_errors", c.syscall_errors);
    putIf(o, "tcp_tx_bytes", c.tcp_tx_bytes);
    putIf(o, "tcp_rx_bytes", c.tcp_rx_bytes);
    putIf(o, "block_read_bytes", c.block_read_bytes);
    putIf(o, "block_write_bytes", c.block_write_bytes);
    putIf(o, "processes", c.processes);
    conts.push_back(o);
  }
  f["containers"] = conts;
  for (const auto* list : {&s.host, &s.self}) {
    json arr = json::array();
    for (const auto& m : *list) {
      arr.push_back({{"name", m.name}, {"labels", labelsJson(m.labels)}, {"value", m.value}});
    }
    f[list == &s.host ? "host" : "self"] = arr;
  }
  json hists = json::array();
  for (const auto& h : s.histograms) {
    hists.push_back({{"name", h.name},
                     {"labels", labelsJson(h.labels)},
                     {"unit_ns", h.unit_ns},
                     {"buckets", h.buckets},
                     {"count", h.count},
                     {"sum", h.sum_units}});
  }
  f["histograms"] = hists;
  json cols = json::array();
  for (const auto& c : s.collectors) {
    cols.push_back({{"name", c.name}, {"up", c.up}});
  }
  f["collectors"] = cols;
  return f;
}

// Parses the Prometheus text of the snapshot into [{name, labels, value}].
json seriesJson(const vigil::Snapshot& s, size_t* count) {
  vigil::PromWriter w;
  vigil::writeSnapshotMetrics(s, vigil::ExpositionOptions{}, w);
  std::string text = w.finish();
  json arr = json::array();
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) {
      end = text.size();
    }
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#') {
      continue;
    }
    size_t sp = line.rfind(' ');
    std::string head = line.substr(0, sp);
    double value = 0;
    (void)absl::SimpleAtod(line.substr(sp + 1), &value);
    json o;
    size_t brace = head.find('{');
    o["name"] = head.substr(0, brace);
    json labels = json::object();
    if (brace != std::string::npos) {
      // key="value",... with escapes only for \\, \" and \n.
      size_t i = brace + 1;
      while (i < head.size() && head[i] != '}') {
        size_t eq = head.find('=', i);
        std::string key = head.substr(i, eq - i);
        std::string val;
        size_t j = eq + 2;
        while (j < head.size() && head[j] != '"') {
          if (head[j] == '\\' && j + 1 < head.size()) {
            j++;
          }
          val += head[j++];
        }
        labels[key] = val;
        i = j + 1;
        if (i < head.size() && head[i] == ',') {
          i++;
        }
      }
    }
    o["labels"] = labels;
    o["value"] = value;
    arr.push_back(o);
  }
  *count = arr.size();
  return arr;
}

bool flagValue(const std::string& arg, const char* name, std::string* out) {
  std::string prefix = std::string("--") + name + "=";
  if (arg.rfind(prefix, 0) == 0) {
    *out = arg.substr(prefix.size());
    return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  bool live = false;
  uint64_t seq = 100;
  uint32_t interval_ms = 1000;
  vigil::bench::SynthOptions synth;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string v;
    if (a == "--live") {
      live = true;
    } else if (flagValue(a, "seq", &v)) {
      seq = std::stoull(v);
    } else if (flagValue(a, "processes", &v)) {
      synth.processes = static_cast<uint32_t>(std::stoul(v));
    } else if (flagValue(a, "containers", &v)) {
      synth.containers = static_cast<uint32_t>(std::stoul(v));
    } else if (flagValue(a, "interval_ms", &v)) {
      interval_ms = static_cast<uint32_t>(std::stoul(v));
    } else {
      fprintf(stderr,
              "usage: vigil-bench-wire [--seq=N --processes=N --containers=N] | --live "
              "[--interval_ms=N]\n");
      return 2;
    }
  }

  auto snap = std::make_unique<vigil::Snapshot>();
  if (live) {
    vigil::CollectorConfig config;
    std::vector<std::unique_ptr<vigil::Collector>> collectors;
    for (const std::string& name : vigil::collectorNames()) {
      auto c = vigil::createCollector(name, config);
      if (!c.ok()) {
        fprintf(stderr, "vigil-bench-wire: collector %s unavailable: %s\n", name.c_str(),
                std::string(c.status().message()).c_str());
        continue;
      }
      collectors.push_back(std::move(*c));
    }
    if (collectors.empty()) {
      fprintf(stderr, "vigil-bench-wire: no collector could start (not root?)\n");
      return 1;
    }
    // The second frame is the steady state: every live process has been seen once.
    for (int round = 0; round < 2; ++round) {
      std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
      snap = std::make_unique<vigil::Snapshot>();
      for (auto& c : collectors) {
        c->collect(*snap);
      }
    }
    snap->agent.agent_id = snap->agent.node_name = "live";
    snap->boot_epoch = 1;
    snap->seq = 2;
    snap->interval_ms = interval_ms;
  } else {
    vigil::bench::buildSyntheticSnapshot(synth, seq, *snap);
  }

  capnp::MallocMessageBuilder message;
  vigil::toWire(*snap, message);
  size_t packed = vigil::encodeFrame(message, vigil::wire::Encoding::PACKED).size();
  size_t packed_zstd = vigil::encodeFrame(message, vigil::wire::Encoding::PACKED_ZSTD).size();
  std::string structured = structuredJson(*snap).dump();
  size_t series = 0;
  std::string flat = seriesJson(*snap, &series).dump();
  std::string structured_gz = gzip(structured);
  std::string flat_gz = gzip(flat);
  if (series == 0) {
    fprintf(stderr, "vigil-bench-wire: the frame renders no series\n");
    return 1;
  }
  double n = static_cast<double>(series);
  printf("source=%s\n", live ? "live" : "synthetic");
  printf("series=%zu\n", series);
  printf("processes=%zu\n", snap->processes.size());
  printf("packed_bytes=%zu\n", packed);
  printf("packed_zstd_bytes=%zu\n", packed_zstd);
  printf("json_structured_bytes=%zu\n", structured.size());
  printf("json_structured_gzip_bytes=%zu\n", structured_gz.size());
  printf("json_series_bytes=%zu\n", flat.size());
  printf("json_series_gzip_bytes=%zu\n", flat_gz.size());
  printf("packed_zstd_per_sample=%.3f\n", packed_zstd / n);
  printf("json_structured_gzip_per_sample=%.3f\n", structured_gz.size() / n);
  printf("json_series_gzip_per_sample=%.3f\n", flat_gz.size() / n);
  printf("ratio_vs_json_structured_gzip=%.3f\n",
         static_cast<double>(packed_zstd) / structured_gz.size());
  printf("ratio_vs_json_series_gzip=%.3f\n", static_cast<double>(packed_zstd) / flat_gz.size());
  return 0;
}
