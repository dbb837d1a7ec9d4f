// A small flag parser for vigil's subcommands. Each subcommand declares its flags; anything
// else is a usage error that names the flag. Accepts --name=value, --name value, bare --bool,
// and "--" to end flags. Dashes and underscores in names are equivalent (--by-x == --by_x).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace vigil::cli {

struct FlagSpec {
  std::string name;  // without dashes
  bool takes_value = false;
  std::string value_name;  // for --help, e.g. "DURATION"
  std::string help;
};

class Args {
 public:
  static absl::StatusOr<Args> parse(const std::vector<std::string>& argv,
                                    const std::vector<FlagSpec>& specs);

  bool has(absl::string_view name) const;
  std::string get(absl::string_view name, const std::string& fallback = "") const;
  const std::vector<std::string>& positional() const { return positional_; }

  // Typed accessors: InvalidArgument names the flag and the bad value.
  absl::StatusOr<absl::Duration> duration(absl::string_view name, absl::Duration fallback) const;
  absl::StatusOr<uint32_t> u32(absl::string_view name, uint32_t fallback) const;

 private:
  absl::flat_hash_map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// Renders the flag list for a --help page.
std::string formatFlags(const std::vector<FlagSpec>& specs);

}  // namespace vigil::cli
