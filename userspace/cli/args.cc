#include "userspace/cli/args.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vigil::cli {
namespace {

std::string normalize(absl::string_view name) {
  std::string out(name);
  std::replace(out.begin(), out.end(), '-', '_');
  return out;
}

}  // namespace

absl::StatusOr<Args> Args::parse(const std::vector<std::string>& argv,
                                 const std::vector<FlagSpec>& specs) {
  Args out;
  auto findSpec = [&](const std::string& name) -> const FlagSpec* {
    for (const FlagSpec& s : specs) {
      if (normalize(s.name) == name) {
        return &s;
      }
    }
    return nullptr;
  };
  bool flags_done = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (flags_done || a.size() < 2 || a[0] != '-' || a == "-") {
      out.positional_.push_back(a);
      continue;
    }
    if (a == "--") {
      flags_done = true;
      continue;
    }
    if (a == "-h") {
      out.values_["help"] = "true";
      continue;
    }
    absl::string_view body = absl::string_view(a).substr(a[1] == '-' ? 2 : 1);
    size_t eq = body.find('=');
    std::string name = normalize(body.substr(0, eq));
    if (name == "help") {
      out.values_["help"] = "true";
      continue;
    }
    const FlagSpec* spec = findSpec(name);
    if (spec == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '", a, "'"));
    }
    if (!spec->takes_value) {
      if (eq != absl::string_view::npos) {
        absl::string_view v = body.substr(eq + 1);
        if (v != "true" && v != "false") {
          return absl::InvalidArgumentError(
              absl::StrCat("flag --", spec->name, " takes no value (got '", v, "')"));
        }
        if (v == "false") {
          out.values_.erase(name);
          continue;
        }
      }
      out.values_[name] = "true";
      continue;
    }
    if (eq != absl::string_view::npos) {
      out.values_[name] = std::string(body.substr(eq + 1));
    } else if (i + 1 < argv.size()) {
      out.values_[name] = argv[++i];
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", spec->name, " needs a value (", spec->value_name, ")"));
    }
  }
  return out;
}

bool Args::has(absl::string_view name) const { return values_.contains(normalize(name)); }

std::string Args::get(absl::string_view name, const std::string& fallback) const {
  auto it = values_.find(normalize(name));
  return it == values_.end() ? fallback : it->second;
}

absl::StatusOr<absl::Duration> Args::duration(absl::string_view name,
                                              absl::Duration fallback) const {
  if (!has(name)) {
    return fallback;
  }
  std::string v = get(name);
  absl::Duration d;
  // A bare number means seconds, as in sleep(1).
  double seconds = 0;
  if (absl::SimpleAtod(v, &seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(v, &d)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", name, ": '", v, "' is not a duration; use e.g. 500ms, 2s, 15m or 1h30m"));
  }
  if (d <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be positive, got '", v, "'"));
  }
  return d;
}

absl::StatusOr<uint32_t> Args::u32(absl::string_view name, uint32_t fallback) const {
  if (!has(name)) {
    return fallback;
  }
  uint32_t v = 0;
  if (!absl::SimpleAtoi(get(name), &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": '", get(name), "' is not a non-negative integer"));
  }
  return v;
}

std::string formatFlags(const std::vector<FlagSpec>& specs) {
  std::string out;
  for (const FlagSpec& s : specs) {
    std::string left = absl::StrCat("  --", s.name);
    if (s.takes_value) {
      absl::StrAppend(&left, " ", s.value_name);
    }
    absl::StrAppend(&out, absl::StrFormat("%-26s %s\n", left, s.help));
  }
  absl::StrAppend(&out, absl::StrFormat("%-26s %s\n", "  -h, --help", "show this help"));
  return out;
}

}  // namespace vigil::cli
