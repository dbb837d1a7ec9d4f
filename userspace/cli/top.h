// The model behind `vigil top`: rows of rates computed from two consecutive Snapshots, sorting,
// filtering, and rendering to a fixed-size text screen or JSON. No terminal handling here (see
// top_cmd.cc), so tests drive it with hand-built snapshots.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "capnp/snapshot.h"

namespace vigil::cli {

// Which columns have a collector behind them; a column without one prints "-".
struct TopColumns {
  bool cpu = false;
  bool runq = false;
  bool syscalls = false;
  bool net = false;
  bool block = false;
};

// Decides from the snapshot's collector list (and, for the run-queue column, whether
// run-queue histograms are present).
TopColumns availableColumns(const Snapshot& s);

struct TopRow {
  uint32_t pid = 0;                          // 0 in container mode
  std::string comm;                          // process comm; in container mode the runtime
  std::string container;                     // container id, "" for none (container mode: "(host)")
  uint32_t processes = 1;                    // processes in the row
  double cpu_percent = 0;                    // of one CPU, like top
  std::optional<double> runq_p50, runq_p99;  // seconds, when a histogram covers the row
  double syscalls_per_s = 0, errors_per_s = 0;
  double tx_bytes_per_s = 0, rx_bytes_per_s = 0, retransmits_per_s = 0;
  double block_bytes_per_s = 0;
};

struct TopFilter {
  uint32_t pid = 0;       // 0: any
  std::string container;  // id prefix, "" any
  std::string comm;       // substring, "" any
};

enum class TopSort { kCpu, kSyscalls, kErrors, kNet, kBlock, kRunq, kPid };
// "cpu", "syscalls", ... → sort; also the key letters c s e n b r p. nullopt if unknown.
std::optional<TopSort> parseSortKey(const std::string& s);
const char* sortName(TopSort s);

// Rates between `prev` and `cur` over `seconds`. A process absent from `prev`, or whose
// counters went backwards (pid reused), counts from zero.
std::vector<TopRow> computeRows(const Snapshot& prev, const Snapshot& cur, double seconds,
                                bool by_container, const TopFilter& filter);

void sortRows(std::vector<TopRow>& rows, TopSort sort);

struct TopHeader {
  std::string node;
  std::string time;  // HH:MM:SS
  std::optional<double> load1, load5, load15;
  std::optional<double> mem_total, mem_available;  // bytes
  double interval_s = 1;
  std::string status;  // e.g. "collecting..." or warnings
};
TopHeader headerFrom(const Snapshot& cur, double interval_s);

// The screen as lines of at most `width` columns, at most `height` lines (0: unbounded).
std::vector<std::string> renderTop(const TopHeader& header, const std::vector<TopRow>& rows,
                                   const TopColumns& cols, TopSort sort, bool by_container,
                                   size_t width, size_t height);

nlohmann::json topToJson(const std::vector<TopRow>& rows, const TopColumns& cols, TopSort sort,
                         bool by_container, double interval_s);

// 1536 → "1.5K"; for bytes and counts alike.
std::string humanNumber(double v);
// 0.0000123 → "12us", 0.0015 → "1.5ms".
std::string humanSeconds(double s);

}  // namespace vigil::cli
