#include "userspace/masking/masker.h"

#include <algorithm>
#include <cctype>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace vigil {
namespace {

// Words that make a flag or variable name a secret when they are one of its -_. separated parts.
constexpr absl::string_view kSecretWords[] = {
    "password",  "passwd",    "pass",          "pwd",          "pw",          "passphrase",
    "secret",    "secrets",   "token",         "tokens",       "apikey",      "key",
    "auth",      "cookie",    "authorization", "credential",   "credentials", "privatekey",
    "accesskey", "secretkey", "sessionkey",    "clientsecret", "authtoken",   "accesstoken"};

// Substrings that make a name a secret wherever they occur (e.g. PGPASSWORD, MYSECRETVALUE).
constexpr absl::string_view kSecretSubstrings[] = {
    "password",    "passwd",      "passphrase", "secret",     "token",
    "apikey",      "api_key",     "api-key",    "credential", "privatekey",
    "private_key", "private-key", "accesskey",  "access_key", "access-key"};

// A last part that says the value is a reference to a secret, not the secret itself.
constexpr absl::string_view kReferenceSuffixes[] = {"file", "path", "dir", "type", "ttl"};

bool isKeyChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
}

bool isValueEnd(char c) {
  return std::isspace(static_cast<unsigned char>(c)) || c == '&' || c == ';' || c == ',' ||
         c == '"' || c == '\'';
}

}  // namespace

bool Masker::isSensitiveName(absl::string_view name) {
  while (!name.empty() && (name.front() == '-' || name.front() == '"' || name.front() == '\'')) {
    name.remove_prefix(1);
  }
  if (name.empty() || name.size() > 128) {
    return false;
  }
  std::string lower = absl::AsciiStrToLower(name);
  std::vector<absl::string_view> parts =
      absl::StrSplit(lower, absl::ByAnyChar("-_."), absl::SkipEmpty());
  if (parts.empty()) {
    return false;
  }
  for (absl::string_view suffix : kReferenceSuffixes) {
    if (parts.size() > 1 && parts.back() == suffix) {
      return false;
    }
  }
  for (absl::string_view part : parts) {
    for (absl::string_view word : kSecretWords) {
      if (part == word) {
        return true;
      }
    }
  }
  for (absl::string_view sub : kSecretSubstrings) {
    if (absl::StrContains(lower, sub)) {
      return true;
    }
  }
  return false;
}

std::unique_ptr<Masker> Masker::create(const std::vector<std::string>& extra_patterns,
                                       std::vector<std::string>* errors) {
  std::unique_ptr<Masker> m(new Masker());
  auto flags = std::regex::ECMAScript | std::regex::optimize;
  struct Builtin {
    const char* re;
    bool icase;
    int group;
    const char* needle;
  };
  // Built-in rules beyond key=value and flag/value pairs; see docs/masking.md.
  static constexpr Builtin kBuiltins[] = {
      // scheme://user:password@host
      {R"(([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*):([^/\s@]+)@)", false, 2, "://"},
      // Authorization: Bearer <token>, Basic <credentials>
      {R"(\bbearer\s+([A-Za-z0-9._~+/=\-]+))", true, 1, "bearer"},
      {R"(\bbasic\s+([A-Za-z0-9+/=]{8,}))", true, 1, "basic"},
      // JSON-ish "password": "value"
      {R"###("[^"]*(?:password|passwd|secret|token|api_?key|credential)[^"]*"\s*:\s*"([^"]*)")###",
       true, true, "\""},
      // Token shapes that are secrets whatever their name: AWS access key ids, GitHub, Slack,
      // JWTs.
      {R"(\b(?:AKIA|ASIA)[0-9A-Z]{16}\b)", false, 0, ""},
      {R"(\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b)", false, 0, "gh"},
      {R"(\bgithub_pat_[A-Za-z0-9_]{30,})", false, 0, "github_pat_"},
      {R"(\bxox[abprs]-[A-Za-z0-9\-]{10,})", false, 0, "xox"},
      {R"(\beyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,})", false, 0, "eyj"},
  };
  for (const Builtin& b : kBuiltins) {
    auto f = b.icase ? flags | std::regex::icase : flags;
    m->rules_.push_back(Rule{b.re, std::regex(b.re, f), b.group, b.needle});
  }
  for (const std::string& p : extra_patterns) {
    try {
      std::regex re(p, flags);
      int group = re.mark_count() > 0 ? 1 : 0;
      m->rules_.push_back(Rule{p, std::move(re), group, ""});
    } catch (const std::regex_error& e) {
      if (errors != nullptr) {
        errors->push_back(absl::StrCat("mask pattern '", p, "' does not compile: ", e.what()));
      }
    }
  }
  return m;
}

bool Masker::applyRule(const Rule& rule, std::string& text) const {
  std::vector<std::pair<size_t, size_t>> spans;
  try {
    for (auto it = std::sregex_iterator(text.begin(), text.end(), rule.re);
         it != std::sregex_iterator(); ++it) {
      const std::smatch& m = *it;
      size_t g = static_cast<size_t>(rule.group) < m.size() ? static_cast<size_t>(rule.group) : 0;
      if (!m[g].matched || m.length(g) == 0 || m.str(g) == kMask) {
        continue;
      }
      spans.emplace_back(static_cast<size_t>(m.position(g)), static_cast<size_t>(m.length(g)));
    }
  } catch (const std::regex_error&) {
    // The matcher gave up (complexity or stack limits): fail closed.
    text.assign(kMask);
    masked_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
    text.replace(it->first, it->second, kMask);
  }
  masked_.fetch_add(spans.size(), std::memory_order_relaxed);
  return !spans.empty();
}

bool Masker::maskKeyValues(std::string& text, bool whole_arg) const {
  bool changed = false;
  size_t eq = text.find('=');
  while (eq != std::string::npos) {
    size_t key_start = eq;
    while (key_start > 0 && isKeyChar(text[key_start - 1])) {
      --key_start;
    }
    size_t next = eq + 1;
    if (key_start < eq &&
        isSensitiveName(absl::string_view(text).substr(key_start, eq - key_start))) {
      size_t end = eq + 1;
      if (whole_arg && key_start == 0) {
        end = text.size();  // --password=a b,c as one argument: all of it is the value
      } else {
        while (end < text.size() && !isValueEnd(text[end])) {
          ++end;
        }
      }
      absl::string_view value = absl::string_view(text).substr(eq + 1, end - eq - 1);
      if (!value.empty() && value != kMask) {
        text.replace(eq + 1, end - eq - 1, kMask);
        masked_.fetch_add(1, std::memory_order_relaxed);
        changed = true;
      }
      next = eq + 1 + kMaskLen;
    }
    eq = next < text.size() ? text.find('=', next) : std::string::npos;
  }
  return changed;
}

std::string Masker::maskText(std::string text) const {
  // A PEM private key: everything from its BEGIN line on is secret.
  size_t pem = text.find("PRIVATE KEY-----");
  if (pem != std::string::npos) {
    size_t begin = text.rfind("-----BEGIN", pem);
    text.replace(begin == std::string::npos ? pem : begin, std::string::npos, kMask);
    masked_.fetch_add(1, std::memory_order_relaxed);
  }
  maskKeyValues(text, false);
  std::string lower = absl::AsciiStrToLower(text);
  for (const Rule& rule : rules_) {
    if (!rule.needle.empty() && !absl::StrContains(lower, rule.needle)) {
      continue;
    }
    if (applyRule(rule, text)) {
      lower = absl::AsciiStrToLower(text);
    }
  }
  return text;
}

std::vector<std::string> Masker::maskArgs(std::vector<std::string> args) const {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string& a = args[i];
    bool has_next = i + 1 < args.size() && !args[i + 1].empty();
    // --password VALUE / -token VALUE: the secret is the next argument.
    if (a.size() > 1 && a[0] == '-' && a.find('=') == std::string::npos && isSensitiveName(a) &&
        has_next && args[i + 1][0] != '-') {
      args[i + 1] = std::string(kMask);
      masked_.fetch_add(1, std::memory_order_relaxed);
      ++i;
      continue;
    }
    // curl -u user:password, --user user:password, --proxy-user user:password
    if ((a == "-u" || a == "--user" || a == "--proxy-user" || a == "-U") && has_next) {
      std::string& v = args[i + 1];
      size_t colon = v.find(':');
      if (colon != std::string::npos && colon + 1 < v.size()) {
        v.replace(colon + 1, std::string::npos, kMask);
        masked_.fetch_add(1, std::memory_order_relaxed);
      }
      ++i;
      continue;
    }
    if ((absl::StartsWith(a, "--user=") || absl::StartsWith(a, "--proxy-user=")) &&
        a.find(':') != std::string::npos) {
      size_t colon = a.find(':');
      if (colon + 1 < a.size()) {
        a.replace(colon + 1, std::string::npos, kMask);
        masked_.fetch_add(1, std::memory_order_relaxed);
      }
      continue;
    }
    // "Authorization: Bearer" followed by the token as its own argument.
    std::string lower = absl::AsciiStrToLower(a);
    if (has_next && (lower == "bearer" ||
                     (absl::StrContains(lower, "authorization") &&
                      (absl::EndsWith(lower, "bearer") || absl::EndsWith(lower, "basic"))))) {
      args[i + 1] = std::string(kMask);
      masked_.fetch_add(1, std::memory_order_relaxed);
      ++i;
      continue;
    }
    maskKeyValues(a, true);
    a = maskText(std::move(a));
  }
  return args;
}

std::string Masker::maskArgvJoined(std::vector<std::string> args) const {
  return absl::StrJoin(maskArgs(std::move(args)), " ");
}

std::string Masker::maskCmdline(absl::string_view cmdline) const {
  std::vector<std::string> args;
  if (cmdline.find('\0') != absl::string_view::npos) {
    while (!cmdline.empty() && cmdline.back() == '\0') {
      cmdline.remove_suffix(1);
    }
    args = absl::StrSplit(cmdline, '\0');
  } else {
    args = absl::StrSplit(cmdline, ' ', absl::SkipEmpty());
  }
  return maskArgvJoined(std::move(args));
}

void maskSnapshotCmdlines(const Masker& masker, Snapshot& snap) {
  for (auto& [pid, p] : snap.processes) {
    if (!p.cmdline.empty()) {
      p.cmdline = masker.maskCmdline(p.cmdline);
    }
  }
}

}  // namespace vigil
