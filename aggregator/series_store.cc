#include "aggregator/series_store.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "aggregator/query_api.h"
#include "userspace/common/clock.h"
#include "userspace/common/frame_metrics.h"

namespace vigil::aggregator {

int64_t unixMillis() { return unixNs() / 1000000; }

// Chunk bit layout (most significant bit first within each byte):
//   sample 0: timestamp as 64 raw bits, value as 64 raw bits.
//   sample n: timestamp delta-of-delta D (the first delta is taken against 0):
//       '0'                  D == 0
//       '10'   + 14 bits     D in [-2^13, 2^13)
//       '110'  + 17 bits     D in [-2^16, 2^16)
//       '1110' + 20 bits     D in [-2^19, 2^19)
//       '1111' + 64 bits     otherwise
//     then the value XOR X with the previous value's bits:
//       '0'                  X == 0
//       '10' + meaningful    X fits the previous window (leading/trailing zeros)
//       '11' + 5 bits leading + 6 bits length (64 stored as 0) + meaningful bits
// The buckets and the value scheme follow Gorilla (VLDB 2015, 4.1.1 and 4.1.2) with the wider
// timestamp buckets Prometheus uses for millisecond timestamps.

namespace {

struct DodBucket {
  uint64_t prefix;
  int prefix_bits;
  int value_bits;
};
constexpr DodBucket kDodBuckets[] = {{0b10, 2, 14}, {0b110, 3, 17}, {0b1110, 4, 20}};

bool fitsSigned(int64_t v, int bits) {
  int64_t lo = -(int64_t{1} << (bits - 1));
  int64_t hi = (int64_t{1} << (bits - 1)) - 1;
  return v >= lo && v <= hi;
}

int64_t signExtend(uint64_t v, int bits) {
  if (bits == 64) {
    return static_cast<int64_t>(v);
  }
  uint64_t sign = uint64_t{1} << (bits - 1);
  return static_cast<int64_t>((v ^ sign) - sign);
}

uint64_t toBits(double v) {
  uint64_t b;
  std::memcpy(&b, &v, sizeof(b));
  return b;
}

double fromBits(uint64_t b) {
  double v;
  std::memcpy(&v, &b, sizeof(v));
  return v;
}

class BitReader {
 public:
  BitReader(const std::vector<uint8_t>& bytes, uint32_t bits) : bytes_(bytes), limit_(bits) {}
  // Reads n (<= 64) bits; past the end reads zeros (a chunk's count bounds the loop anyway).
  uint64_t read(int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) {
      v = (v << 1) | bit();
    }
    return v;
  }
  uint64_t bit() {
    if (pos_ >= limit_) {
      return 0;
    }
    uint64_t b = (bytes_[pos_ >> 3] >> (7 - (pos_ & 7))) & 1;
    pos_++;
    return b;
  }

 private:
  const std::vector<uint8_t>& bytes_;
  uint32_t limit_;
  uint32_t pos_ = 0;
};

}  // namespace

double staleNaN() { return fromBits(kStaleNaNBits); }
bool isStaleNaN(double v) { return toBits(v) == kStaleNaNBits; }

void XorChunk::writeBits(uint64_t v, int n) {
  while (n > 0) {
    uint32_t used = bits_ & 7;
    if (used == 0) {
      bytes_.push_back(0);
    }
    int room = 8 - static_cast<int>(used);
    int take = std::min(room, n);
    uint64_t chunk = (v >> (n - take)) & ((uint64_t{1} << take) - 1);
    bytes_.back() |= static_cast<uint8_t>(chunk << (room - take));
    bits_ += take;
    n -= take;
  }
}

void XorChunk::append(int64_t t, double value) {
  uint64_t vb = toBits(value);
  if (count_ == 0) {
    bytes_.reserve(32);
    writeBits(static_cast<uint64_t>(t), 64);
    writeBits(vb, 64);
    first_t_ = t;
    prev_t_ = t;
    prev_delta_ = 0;
    prev_bits_ = vb;
    count_ = 1;
    return;
  }
  int64_t delta = t - prev_t_;
  int64_t dod = delta - prev_delta_;
  if (dod == 0) {
    writeBits(0, 1);
  } else {
    bool done = false;
    for (const DodBucket& b : kDodBuckets) {
      if (fitsSigned(dod, b.value_bits)) {
        writeBits(b.prefix, b.prefix_bits);
        writeBits(static_cast<uint64_t>(dod), b.value_bits);
        done = true;
        break;
      }
    }
    if (!done) {
      writeBits(0b1111, 4);
      writeBits(static_cast<uint64_t>(dod), 64);
    }
  }
  prev_delta_ = delta;
  prev_t_ = t;

  uint64_t x = vb ^ prev_bits_;
  prev_bits_ = vb;
  if (x == 0) {
    writeBits(0, 1);
  } else {
    writeBits(1, 1);
    int leading = std::min(__builtin_clzll(x), 31);
    int trailing = __builtin_ctzll(x);
    if (leading_ != 0xff && leading >= leading_ && trailing >= trailing_) {
      writeBits(0, 1);
      int sig = 64 - leading_ - trailing_;
      writeBits(x >> trailing_, sig);
    } else {
      writeBits(1, 1);
      int sig = 64 - leading - trailing;
      writeBits(static_cast<uint64_t>(leading), 5);
      writeBits(static_cast<uint64_t>(sig == 64 ? 0 : sig), 6);
      writeBits(x >> trailing, sig);
      leading_ = static_cast<uint8_t>(leading);
      trailing_ = static_cast<uint8_t>(trailing);
    }
  }
  count_++;
  if (full()) {
    seal();
  }
}

void XorChunk::decode(std::vector<Sample>& out, int64_t start_ms, int64_t end_ms) const {
  if (count_ == 0 || prev_t_ < start_ms || first_t_ > end_ms) {
    return;
  }
  BitReader r(bytes_, bits_);
  int64_t t = static_cast<int64_t>(r.read(64));
  uint64_t vb = r.read(64);
  int64_t delta = 0;
  int leading = 0;
  int trailing = 0;
  auto emit = [&]() {
    if (t >= start_ms && t <= end_ms) {
      out.push_back(Sample{t, fromBits(vb)});
    }
  };
  emit();
  for (int i = 1; i < count_; ++i) {
    int64_t dod = 0;
    if (r.bit() != 0) {
      int ones = 1;
      while (ones < 4 && r.bit() != 0) {
        ones++;
      }
      if (ones == 4) {
        dod = static_cast<int64_t>(r.read(64));
      } else {
        const DodBucket& b = kDodBuckets[ones - 1];
        dod = signExtend(r.read(b.value_bits), b.value_bits);
      }
    }
    delta += dod;
    t += delta;
    if (r.bit() != 0) {
      if (r.bit() != 0) {
        leading = static_cast<int>(r.read(5));
        int sig = static_cast<int>(r.read(6));
        if (sig == 0) {
          sig = 64;
        }
        trailing = 64 - leading - sig;
      }
      int sig = 64 - leading - trailing;
      vb ^= r.read(sig) << trailing;
    }
    if (t > end_ms) {
      break;
    }
    emit();
  }
}

CompactLabels::CompactLabels(const LabelSet& labels) {
  size_t n = 0;
  for (const auto& [k, v] : labels) {
    n += 8 + k.size() + v.size();
  }
  buf_.reserve(n);
  auto put = [this](const std::string& x) {
    uint32_t len = static_cast<uint32_t>(x.size());
    buf_.append(reinterpret_cast<const char*>(&len), sizeof(len));
    buf_.append(x);
  };
  for (const auto& [k, v] : labels) {
    put(k);
    put(v);
  }
  count_ = static_cast<uint32_t>(labels.size());
}

absl::string_view CompactLabels::read(size_t& at) const {
  uint32_t len;
  std::memcpy(&len, buf_.data() + at, sizeof(len));
  absl::string_view out(buf_.data() + at + sizeof(len), len);
  at += sizeof(len) + len;
  return out;
}

bool CompactLabels::find(absl::string_view name, absl::string_view* value) const {
  size_t at = 0;
  for (uint32_t i = 0; i < count_; ++i) {
    absl::string_view k = read(at);
    absl::string_view v = read(at);
    if (k == name) {
      *value = v;
      return true;
    }
  }
  return false;
}

LabelSet CompactLabels::toLabelSet() const {
  LabelSet out;
  out.reserve(count_);
  forEach([&out](absl::string_view k, absl::string_view v) {
    out.emplace_back(std::string(k), std::string(v));
  });
  return out;
}

bool CompactLabels::operator==(const LabelSet& labels) const {
  if (labels.size() != count_) {
    return false;
  }
  size_t at = 0;
  for (const auto& [k, v] : labels) {
    if (read(at) != k || read(at) != v) {
      return false;
    }
  }
  return true;
}

std::string labelKey(const LabelSet& labels) {
  std::string key;
  for (const auto& [k, v] : labels) {
    absl::StrAppend(&key, k, "\xff", v, "\xff");
  }
  return key;
}

namespace {

uint64_t pairHash(absl::string_view k, absl::string_view v) {
  return absl::Hash<std::pair<absl::string_view, absl::string_view>>{}(std::make_pair(k, v));
}

uint64_t finishHash(uint64_t sum) { return absl::Hash<uint64_t>{}(sum); }

// The same labels (as a renderer emits them: name apart, any order) as a stored canonical set?
// Needs distinct emitted names; the caller checked the hash already.
bool sameLabels(const CompactLabels& stored, absl::string_view name, const Labels& labels) {
  if (stored.size() != labels.size() + 1) {
    return false;
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    for (size_t j = i + 1; j < labels.size(); ++j) {
      if (labels[i].first == labels[j].first) {
        return false;
      }
    }
  }
  absl::string_view v;
  if (!stored.find("__name__", &v) || v != name) {
    return false;
  }
  for (const auto& [k, val] : labels) {
    if (!stored.find(k, &v) || v != val) {
      return false;
    }
  }
  return true;
}

uint64_t compactHash(const CompactLabels& labels) {
  uint64_t sum = 0;
  labels.forEach([&sum](absl::string_view k, absl::string_view v) { sum += pairHash(k, v); });
  return finishHash(sum);
}

}  // namespace

uint64_t labelHash(const LabelSet& labels) {
  uint64_t sum = 0;
  for (const auto& [k, v] : labels) {
    sum += pairHash(k, v);
  }
  return finishHash(sum);
}

std::string nodeLabel(const Snapshot& frame) {
  return frame.agent.node_name.empty() ? frame.agent.agent_id : frame.agent.node_name;
}

namespace {

// Turns what a renderer wrote into a canonical label set: __name__ plus the labels, sorted by
// name, first occurrence of a repeated name kept, invalid UTF-8 repaired. False (and counted)
// when a metric or label name is invalid: such a sample is left out.
bool canonicalLabels(absl::string_view name, const Labels& labels, RenderIssues& issues,
                     LabelSet& out) {
  out.clear();
  if (!validMetricName(name)) {
    issues.invalid_names++;
    return false;
  }
  out.reserve(labels.size() + 1);
  out.emplace_back("__name__", std::string(name));
  for (const auto& l : labels) {
    if (!validLabelName(l.first) || absl::string_view(l.first).substr(0, 2) == "__") {
      issues.invalid_names++;
      return false;
    }
    if (validUtf8(l.second)) {
      out.push_back(l);
    } else {
      issues.invalid_utf8++;
      out.emplace_back(l.first, repairUtf8(l.second));
    }
  }
  // Stable: if a renderer ever repeated a label name, the first occurrence wins.
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  out.erase(std::unique(out.begin(), out.end(),
                        [](const auto& a, const auto& b) { return a.first == b.first; }),
            out.end());
  return true;
}

// Collects what a renderer writes as label sets with __name__, sorted by label name.
class CollectingSink final : public MetricSink {
 public:
  CollectingSink(std::vector<FrameSample>& out, RenderIssues& issues)
      : out_(out), issues_(issues) {}
  void family(absl::string_view, MetricType, absl::string_view) override {}
  void ensureFamily(absl::string_view, MetricType) override {}
  void sample(absl::string_view, absl::string_view name, const Labels& labels, double value,
              std::optional<int64_t>) override {
    FrameSample s;
    if (!canonicalLabels(name, labels, issues_, s.labels)) {
      return;
    }
    s.value = value;
    out_.push_back(std::move(s));
  }
  using MetricSink::sample;

 private:
  std::vector<FrameSample>& out_;
  RenderIssues& issues_;
};

void intersect(std::vector<uint32_t>& acc, const std::vector<uint32_t>& other) {
  std::vector<uint32_t> out;
  std::set_intersection(acc.begin(), acc.end(), other.begin(), other.end(),
                        std::back_inserter(out));
  acc = std::move(out);
}

}  // namespace

std::vector<FrameSample> renderFrameSamples(const Snapshot& frame, RenderIssues* issues) {
  std::vector<FrameSample> out;
  RenderIssues local;
  CollectingSink sink(out, issues != nullptr ? *issues : local);
  ExpositionOptions opts;
  opts.base_labels = {{"node", nodeLabel(frame)}};
  writeSnapshotMetrics(frame, opts, sink);
  return out;
}

// Renders a frame straight into the store. The common case (a series the store holds already)
// costs a hash of the emitted labels, one table lookup and a comparison against the stored
// labels: no allocation. Only a miss builds the canonical label set (validated, repaired,
// sorted) and goes the way of append().
class SeriesStore::FrameSink final : public MetricSink {
 public:
  FrameSink(SeriesStore& store, const std::string& agent_id, int64_t t_ms,
            std::vector<uint32_t>& ids, const std::vector<MemSeries*>* prev_order,
            std::vector<MemSeries*>& order, RenderIssues& issues)
      : store_(store),
        agent_id_(agent_id),
        t_ms_(t_ms),
        ids_(ids),
        prev_order_(prev_order),
        order_(order),
        issues_(issues) {}
  void family(absl::string_view, MetricType, absl::string_view) override {}
  void ensureFamily(absl::string_view, MetricType) override {}
  void sample(absl::string_view, absl::string_view name, const Labels& labels, double value,
              std::optional<int64_t>) override ABSL_NO_THREAD_SAFETY_ANALYSIS {
    // An agent's frames render the same series in about the same order from one frame to the
    // next (processes may come in another order; each one's series stay together): try the
    // series that followed, in the agent's previous frame, the one this frame's previous sample
    // matched (a sequential walk, no hash and no table probe), then the label hash.
    MemSeries* s = nullptr;
    uint64_t hash = 0;
    if (prev_order_ != nullptr && next_ < prev_order_->size() && (*prev_order_)[next_] != nullptr &&
        sameLabels((*prev_order_)[next_]->labels, name, labels)) {
      s = (*prev_order_)[next_];
      store_.stats_.positional_hits++;
    } else {
      uint64_t sum = pairHash("__name__", name);
      for (const auto& [k, v] : labels) {
        sum += pairHash(k, v);
      }
      hash = finishHash(sum);
      s = store_.findLocked(
          hash, [&](const CompactLabels& stored) { return sameLabels(stored, name, labels); });
    }
    if (s != nullptr) {
      next_ = prev_order_ != nullptr && s->emit_pos < prev_order_->size() &&
                      (*prev_order_)[s->emit_pos] == s
                  ? s->emit_pos + 1
                  : next_ + 1;
      s->emit_pos = static_cast<uint32_t>(order_.size());
    }
    if (s != nullptr) {
      store_.stats_.fast_path_hits++;
      ids_.push_back(s->id);
      order_.push_back(s);
      store_.appendSample(*s, t_ms_, value);
      return;
    }
    order_.push_back(nullptr);
    uint64_t repaired_before = issues_.invalid_utf8;
    if (!canonicalLabels(name, labels, issues_, scratch_)) {
      return;
    }
    // The canonical set is the rendered one, sorted (nothing repaired, no repeated name): its
    // hash is `hash`, which the lookup above found no series for.
    bool same_set = issues_.invalid_utf8 == repaired_before && scratch_.size() == labels.size() + 1;
    uint32_t id = 0;
    store_.appendLocked(agent_id_, scratch_, t_ms_, value, &id,
                        same_set ? std::optional<uint64_t>(hash) : std::nullopt);
    if (id != 0) {
      ids_.push_back(id);
      MemSeries* created = store_.series_.at(id).get();
      created->emit_pos = static_cast<uint32_t>(order_.size() - 1);
      order_.back() = created;
    }
  }
  using MetricSink::sample;

 private:
  SeriesStore& store_;
  const std::string& agent_id_;
  int64_t t_ms_;
  std::vector<uint32_t>& ids_;
  const std::vector<MemSeries*>* prev_order_;
  std::vector<MemSeries*>& order_;
  RenderIssues& issues_;
  LabelSet scratch_;
  size_t next_ = 0;  // predicted position in prev_order_ of this sample's series
};

void SeriesStore::appendFrame(const Snapshot& frame) {
  int64_t t_ms = frame.end_unix_ns / 1000000;
  if (t_ms < unixMillis() - options_.retention_ms) {
    // Older than the window (a replay of an old log, or an agent's spool after a long outage).
    absl::MutexLock lock(&mu_);
    stats_.frames_too_old++;
    return;
  }
  RenderIssues issues;
  ExpositionOptions opts;
  opts.base_labels = {{"node", nodeLabel(frame)}};
  absl::MutexLock lock(&mu_);
  std::vector<uint32_t>& prev = last_frame_series_[frame.agent.agent_id];
  std::vector<uint32_t> ids;
  ids.reserve(prev.size() + 16);
  std::vector<MemSeries*>& prev_order = emit_order_[frame.agent.agent_id];
  std::vector<MemSeries*> order;
  order.reserve(prev_order.size() + 16);
  FrameSink sink(*this, frame.agent.agent_id, t_ms, ids, &prev_order, order, issues);
  writeSnapshotMetrics(frame, opts, sink);
  // The steady state: the frame rendered exactly the series of the agent's previous frame, in
  // the same order, so no series ended and the previous id set still holds; skip sorting ids.
  bool unchanged = !prev_order.empty() && order == prev_order &&
                   std::find(order.begin(), order.end(), nullptr) == order.end();
  prev_order = std::move(order);
  if (unchanged) {
    stats_.frames_appended++;
    stats_.invalid.invalid_names += issues.invalid_names;
    stats_.invalid.invalid_utf8 += issues.invalid_utf8;
    return;
  }
  // Series the agent's previous frame had and this one does not have ended (an exited process,
  // a removed container): a stale marker hides them from step queries at once.
  std::sort(ids.begin(), ids.end());
  for (uint32_t id : prev) {
    if (std::binary_search(ids.begin(), ids.end(), id)) {
      continue;
    }
    auto it = series_.find(id);
    if (it == series_.end() || it->second->chunks.empty() ||
        it->second->chunks.back().lastTime() >= t_ms) {
      continue;
    }
    MemSeries& ended = *it->second;
    if (ended.chunks.back().full()) {
      ended.chunks.emplace_back();
    }
    ended.chunks.back().append(t_ms, staleNaN());
    oldest_ms_ = std::min(oldest_ms_, t_ms);
    ended.samples++;
    live_samples_++;
    stats_.stale_markers++;
  }
  prev = std::move(ids);
  stats_.frames_appended++;
  stats_.invalid.invalid_names += issues.invalid_names;
  stats_.invalid.invalid_utf8 += issues.invalid_utf8;
}

template <typename Eq>
SeriesStore::MemSeries* SeriesStore::findLocked(uint64_t hash, const Eq& eq) {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) {
    return nullptr;
  }
  MemSeries* s = it->second;
  if (eq(s->labels)) {
    return s;
  }
  auto cit = collisions_.find(hash);
  if (cit != collisions_.end()) {
    for (uint32_t id : cit->second) {
      MemSeries* c = series_.at(id).get();
      if (eq(c->labels)) {
        return c;
      }
    }
  }
  return nullptr;
}

SeriesStore::AppendResult SeriesStore::appendSample(MemSeries& s, int64_t t_ms, double value) {
  if (!s.chunks.empty() && t_ms <= s.chunks.back().lastTime()) {
    stats_.samples_out_of_order++;
    return AppendResult::kOutOfOrder;
  }
  if (s.chunks.empty() || s.chunks.back().full()) {
    s.chunks.emplace_back();
  }
  s.chunks.back().append(t_ms, value);
  oldest_ms_ = std::min(oldest_ms_, t_ms);
  s.samples++;
  live_samples_++;
  stats_.samples_appended++;
  return AppendResult::kOk;
}

SeriesStore::AppendResult SeriesStore::append(const std::string& agent_id, const LabelSet& labels,
                                              int64_t t_ms, double value) {
  absl::MutexLock lock(&mu_);
  return appendLocked(agent_id, labels, t_ms, value, nullptr);
}

SeriesStore::AppendResult SeriesStore::appendLocked(const std::string& agent_id,
                                                    const LabelSet& labels, int64_t t_ms,
                                                    double value, uint32_t* id_out,
                                                    std::optional<uint64_t> absent_hash) {
  uint64_t hash = absent_hash ? *absent_hash : labelHash(labels);
  MemSeries* s = absent_hash ? nullptr : findLocked(hash, [&labels](const CompactLabels& stored) {
    return stored == labels;
  });
  if (s == nullptr) {
    size_t& n = per_agent_[agent_id];
    if (n >= options_.max_series_per_agent) {
      stats_.dropped_by_agent[agent_id]++;
      return AppendResult::kOverCap;
    }
    n++;
    auto owned = std::make_unique<MemSeries>();
    s = owned.get();
    s->id = next_id_++;
    s->labels = CompactLabels(labels);
    s->agent_id = agent_id;
    for (const auto& [k, v] : labels) {
      postings_[k][v].push_back(s->id);  // ids only grow, so postings stay sorted
    }
    auto [it, inserted] = by_hash_.emplace(hash, s);
    if (!inserted) {
      collisions_[hash].push_back(s->id);  // a 64-bit hash collision: kept apart, still exact
    }
    series_.emplace(s->id, std::move(owned));
    stats_.series_created++;
  }
  if (id_out != nullptr) {
    *id_out = s->id;
  }
  return appendSample(*s, t_ms, value);
}

void SeriesStore::removeSeries(uint32_t id) {
  auto it = series_.find(id);
  if (it == series_.end()) {
    return;
  }
  MemSeries& s = *it->second;
  s.labels.forEach([this, id](absl::string_view k, absl::string_view v) {
    auto nit = postings_.find(k);
    if (nit == postings_.end()) {
      return;
    }
    auto vit = nit->second.find(v);
    if (vit != nit->second.end()) {
      Postings& p = vit->second;
      auto pos = std::lower_bound(p.begin(), p.end(), id);
      if (pos != p.end() && *pos == id) {
        p.erase(pos);
      }
      if (p.empty()) {
        nit->second.erase(vit);
      }
    }
    if (nit->second.empty()) {
      postings_.erase(nit);
    }
  });
  auto ait = per_agent_.find(s.agent_id);
  if (ait != per_agent_.end() && --ait->second == 0) {
    per_agent_.erase(ait);
  }
  live_samples_ -= s.samples;
  uint64_t hash = compactHash(s.labels);
  auto cit = collisions_.find(hash);
  if (cit != collisions_.end()) {
    auto& ids = cit->second;
    ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
  }
  auto hit = by_hash_.find(hash);
  if (hit != by_hash_.end() && hit->second == &s) {
    // Promote a colliding series (if any) to the main table.
    if (cit != collisions_.end() && !cit->second.empty()) {
      hit->second = series_.at(cit->second.back()).get();
      cit->second.pop_back();
    } else {
      by_hash_.erase(hit);
    }
  }
  if (cit != collisions_.end() && cit->second.empty()) {
    collisions_.erase(cit);
  }
  series_.erase(it);
  stats_.series_removed++;
}

void SeriesStore::enforceRetention(int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  int64_t cutoff = now_ms - options_.retention_ms;
  if (cutoff <= oldest_ms_) {
    // No sample is older than the cutoff, so no chunk ends before it: skip the walk over every
    // series (at 10,000 agents, 4.9M series and a quarter of the event loop's CPU; it also
    // held the lock the series thread needs).
    return;
  }
  std::vector<uint32_t> empty;
  int64_t oldest = INT64_MAX;
  for (auto& [id, s] : series_) {
    size_t drop = 0;
    while (drop < s->chunks.size() && s->chunks[drop].lastTime() < cutoff) {
      s->samples -= s->chunks[drop].count();
      live_samples_ -= s->chunks[drop].count();
      drop++;
    }
    if (drop > 0) {
      s->chunks.erase(s->chunks.begin(), s->chunks.begin() + static_cast<ptrdiff_t>(drop));
    }
    if (s->chunks.empty()) {
      empty.push_back(id);
    } else {
      oldest = std::min(oldest, s->chunks.front().firstTime());
    }
  }
  oldest_ms_ = oldest;
  for (uint32_t id : empty) {
    removeSeries(id);
  }
  if (!empty.empty()) {
    emit_order_.clear();  // may point at removed series; rebuilt from the next frames
  }
}

std::vector<uint32_t> SeriesStore::candidates(const Selector& selector) const {
  std::vector<const Postings*> lists;
  auto lookup = [&](const std::string& name, const std::string& value) -> bool {
    auto nit = postings_.find(name);
    if (nit == postings_.end()) {
      return false;
    }
    auto vit = nit->second.find(value);
    if (vit == nit->second.end()) {
      return false;
    }
    lists.push_back(&vit->second);
    return true;
  };
  if (!selector.metric.empty() && !lookup("__name__", selector.metric)) {
    return {};
  }
  for (const LabelMatcher& m : selector.matchers) {
    if (m.op == LabelMatcher::Op::kEqual && !m.value.empty() && !lookup(m.name, m.value)) {
      return {};
    }
  }
  std::vector<uint32_t> ids;
  if (lists.empty()) {
    for (const auto& [id, s] : series_) {
      ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end());
  } else {
    std::sort(lists.begin(), lists.end(),
              [](const Postings* a, const Postings* b) { return a->size() < b->size(); });
    ids = *lists[0];
    for (size_t i = 1; i < lists.size() && !ids.empty(); ++i) {
      intersect(ids, *lists[i]);
    }
  }
  // Every matcher (including the ones the postings answered) is checked on the label set; an
  // absent label matches as the empty string, as in Prometheus.
  static const std::string kEmpty;
  std::vector<uint32_t> out;
  for (uint32_t id : ids) {
    const MemSeries& s = *series_.at(id);
    bool ok = true;
    for (const LabelMatcher& m : selector.matchers) {
      absl::string_view v;
      if (!m.matches(s.labels.find(m.name, &v) ? std::string(v) : kEmpty)) {
        ok = false;
        break;
      }
    }
    if (ok) {
      out.push_back(id);
    }
  }
  return out;
}

std::vector<Series> SeriesStore::select(const Selector& selector, int64_t start_ms,
                                        int64_t end_ms) const {
  return selectImpl(selector, start_ms, end_ms, /*keep_stale=*/false);
}

std::vector<Series> SeriesStore::selectWithStaleMarkers(const Selector& selector, int64_t start_ms,
                                                        int64_t end_ms) const {
  return selectImpl(selector, start_ms, end_ms, /*keep_stale=*/true);
}

std::vector<Series> SeriesStore::selectImpl(const Selector& selector, int64_t start_ms,
                                            int64_t end_ms, bool keep_stale) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<Series> out;
  for (uint32_t id : candidates(selector)) {
    const MemSeries& s = *series_.at(id);
    Series r;
    for (const XorChunk& c : s.chunks) {
      c.decode(r.samples, start_ms, end_ms);
    }
    if (!keep_stale) {
      r.samples.erase(std::remove_if(r.samples.begin(), r.samples.end(),
                                     [](const Sample& x) { return isStaleNaN(x.value); }),
                      r.samples.end());
    }
    if (!r.samples.empty()) {
      r.labels = s.labels.toLabelSet();
      out.push_back(std::move(r));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const Series& a, const Series& b) { return a.labels < b.labels; });
  return out;
}

std::vector<LabelSet> SeriesStore::seriesLabels(const Selector& selector, int64_t start_ms,
                                                int64_t end_ms) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<LabelSet> out;
  for (uint32_t id : candidates(selector)) {
    const MemSeries& s = *series_.at(id);
    if (s.chunks.empty() || s.chunks.front().firstTime() > end_ms ||
        s.chunks.back().lastTime() < start_ms) {
      continue;
    }
    out.push_back(s.labels.toLabelSet());
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool SeriesStore::hasMetric(const std::string& metric) const {
  absl::ReaderMutexLock lock(&mu_);
  auto nit = postings_.find("__name__");
  return nit != postings_.end() && nit->second.contains(metric);
}

size_t SeriesStore::numSeries() const {
  absl::ReaderMutexLock lock(&mu_);
  return series_.size();
}

uint64_t SeriesStore::numSamples() const {
  absl::ReaderMutexLock lock(&mu_);
  return live_samples_;
}

size_t SeriesStore::chunkBytes() const {
  absl::ReaderMutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [id, s] : series_) {
    for (const XorChunk& c : s->chunks) {
      n += c.bytes();
    }
  }
  return n;
}

size_t SeriesStore::memoryBytes() const {
  absl::ReaderMutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [id, s] : series_) {
    n += sizeof(MemSeries) + s->chunks.capacity() * sizeof(XorChunk) + s->agent_id.capacity();
    for (const XorChunk& c : s->chunks) {
      n += c.bytes();
    }
    // Packed labels, one by_hash_ entry, one postings id per label (postings map keys are
    // shared by all series with that label pair and left out).
    n += s->labels.heapBytes() + sizeof(uint64_t) + sizeof(MemSeries*) +
         s->labels.size() * sizeof(uint32_t);
  }
  return n;
}

SeriesStoreStats SeriesStore::stats() const {
  absl::ReaderMutexLock lock(&mu_);
  SeriesStoreStats s = stats_;
  for (const auto& [hash, ids] : collisions_) {
    s.hash_collisions += ids.size();
  }
  return s;
}

void SeriesStore::writeMetrics(MetricSink& out) const {
  SeriesStoreStats st = stats();
  size_t series = numSeries();
  uint64_t samples = numSamples();
  size_t bytes = chunkBytes();
  out.family("vigil_aggregator_series", MetricType::kGauge,
             "Series held in the in-memory series store.");
  out.sample("vigil_aggregator_series", {}, static_cast<double>(series));
  out.family("vigil_aggregator_series_samples", MetricType::kGauge,
             "Samples held in the in-memory series store (retention window).");
  out.sample("vigil_aggregator_series_samples", {}, static_cast<double>(samples));
  out.family("vigil_aggregator_series_chunk_bytes", MetricType::kGauge,
             "Bytes of compressed sample chunks in the series store.");
  out.sample("vigil_aggregator_series_chunk_bytes", {}, static_cast<double>(bytes));
  out.family("vigil_aggregator_series_samples_appended_total", MetricType::kCounter,
             "Samples appended to the series store.");
  out.sample("vigil_aggregator_series_samples_appended_total", {},
             static_cast<double>(st.samples_appended));
  out.family("vigil_aggregator_series_out_of_order_total", MetricType::kCounter,
             "Samples refused because their timestamp was not after the series' last sample.");
  out.sample("vigil_aggregator_series_out_of_order_total", {},
             static_cast<double>(st.samples_out_of_order));
  out.family("vigil_aggregator_series_invalid_samples_total", MetricType::kCounter,
             "Frame samples with a problem: invalid_name (left out), invalid_utf8 (label value "
             "repaired with U+FFFD).");
  out.sample("vigil_aggregator_series_invalid_samples_total", {{"reason", "invalid_name"}},
             static_cast<double>(st.invalid.invalid_names));
  out.sample("vigil_aggregator_series_invalid_samples_total", {{"reason", "invalid_utf8"}},
             static_cast<double>(st.invalid.invalid_utf8));
  out.family("vigil_aggregator_series_frames_too_old_total", MetricType::kCounter,
             "Frames left out of the series store because they ended before now - retention "
             "(they stay in the ingest log and reach remote_write).");
  out.sample("vigil_aggregator_series_frames_too_old_total", {},
             static_cast<double>(st.frames_too_old));
  out.family("vigil_aggregator_series_fast_path_samples_total", MetricType::kCounter,
             "Frame samples matched to a series the store already held by label hash, without "
             "building a label set (the rest are new series or need validation).");
  out.sample("vigil_aggregator_series_fast_path_samples_total", {},
             static_cast<double>(st.fast_path_hits));
  out.family("vigil_aggregator_series_positional_samples_total", MetricType::kCounter,
             "Of the fast-path samples, those found at the same position as in the agent's "
             "previous frame (no hash lookup).");
  out.sample("vigil_aggregator_series_positional_samples_total", {},
             static_cast<double>(st.positional_hits));
  out.family("vigil_aggregator_series_hash_collisions", MetricType::kGauge,
             "Series whose 64-bit label hash equals another series' (told apart by comparing "
             "labels; expected 0).");
  out.sample("vigil_aggregator_series_hash_collisions", {},
             static_cast<double>(st.hash_collisions));
  out.family("vigil_aggregator_series_stale_markers_total", MetricType::kCounter,
             "Stale markers stored for series that left their agent's frames.");
  out.sample("vigil_aggregator_series_stale_markers_total", {},
             static_cast<double>(st.stale_markers));
  out.family("vigil_aggregator_series_limit", MetricType::kGauge,
             "Series cap per agent (--max_series_per_agent).");
  out.sample("vigil_aggregator_series_limit", {},
             static_cast<double>(options_.max_series_per_agent));
  out.family("vigil_aggregator_series_dropped_total", MetricType::kCounter,
             "Samples of new series refused because the agent reached --max_series_per_agent.");
  for (const auto& [agent, n] : st.dropped_by_agent) {
    out.sample("vigil_aggregator_series_dropped_total", {{"agent_id", agent}},
               static_cast<double>(n));
  }
}

}  // namespace vigil::aggregator
