// Template bodies for bpf_util.h.
#pragma once

#include <bpf/bpf.h>

namespace vigil {

template <typename Key, typename Value>
size_t forEachPerCpu(int map_fd,
                     const std::function<void(const Key&, const std::vector<Value>&)>& visit) {
  static_assert(sizeof(Value) % 8 == 0, "per-CPU values are laid out in 8-byte strides");
  std::vector<Value> values(possibleCpus());
  Key key{};
  Key next{};
  size_t n = 0;
  const Key* prev = nullptr;
  while (bpf_map_get_next_key(map_fd, prev, &next) == 0) {
    key = next;
    prev = &key;
    if (bpf_map_lookup_elem(map_fd, &key, values.data()) == 0) {
      visit(key, values);
      ++n;
    }
  }
  return n;
}

template <typename Key, typename Value>
std::vector<std::pair<Key, Value>> readHash(int map_fd) {
  std::vector<std::pair<Key, Value>> out;
  Key key{};
  Key next{};
  const Key* prev = nullptr;
  while (bpf_map_get_next_key(map_fd, prev, &next) == 0) {
    key = next;
    prev = &key;
    Value v{};
    if (bpf_map_lookup_elem(map_fd, &key, &v) == 0) {
      out.emplace_back(key, v);
    }
  }
  return out;
}

}  // namespace vigil
