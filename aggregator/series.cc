#include "aggregator/series.h"

#include "absl/strings/str_cat.h"

namespace vigil::aggregator {

absl::StatusOr<LabelMatcher> LabelMatcher::make(std::string name, Op op, std::string value) {
  LabelMatcher m;
  m.name = std::move(name);
  m.op = op;
  m.value = std::move(value);
  if (op == Op::kRegex || op == Op::kNotRegex) {
    // std::regex reports a bad pattern by throwing; this is the boundary where that becomes a
    // Status, so no exception escapes into callers.
    try {
      m.regex = std::make_shared<const std::regex>(m.value, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad regex for label '", m.name, "': \"", m.value, "\": ", e.what()));
    }
  }
  return m;
}

bool LabelMatcher::matches(const std::string& v) const {
  switch (op) {
    case Op::kEqual:
      return v == value;
    case Op::kNotEqual:
      return v != value;
    case Op::kRegex:
      return std::regex_match(v, *regex);
    case Op::kNotRegex:
      return !std::regex_match(v, *regex);
  }
  return false;
}

absl::StatusOr<Selector> parseSelector(const std::string& text) {
  Selector sel;
  size_t i = 0;
  auto isNameChar = [](char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
  };
  auto skipSpace = [&]() {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) {
      ++i;
    }
  };
  auto err = [&](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat("selector \"", text, "\" at position ", i, ": ", what));
  };
  skipSpace();
  size_t start = i;
  while (i < text.size() && isNameChar(text[i], i == start)) {
    ++i;
  }
  sel.metric = text.substr(start, i - start);
  skipSpace();
  if (i < text.size() && text[i] == '{') {
    ++i;
    while (true) {
      skipSpace();
      if (i < text.size() && text[i] == '}') {
        ++i;
        break;
      }
      size_t ls = i;
      while (i < text.size() && isNameChar(text[i], i == ls) && text[i] != ':') {
        ++i;
      }
      if (i == ls) {
        return err("expected a label name");
      }
      std::string label = text.substr(ls, i - ls);
      skipSpace();
      LabelMatcher::Op op;
      if (text.compare(i, 2, "=~") == 0) {
        op = LabelMatcher::Op::kRegex;
        i += 2;
      } else if (text.compare(i, 2, "!~") == 0) {
        op = LabelMatcher::Op::kNotRegex;
        i += 2;
      } else if (text.compare(i, 2, "!=") == 0) {
        op = LabelMatcher::Op::kNotEqual;
        i += 2;
      } else if (i < text.size() && text[i] == '=') {
        op = LabelMatcher::Op::kEqual;
        i += 1;
      } else {
        return err(absl::StrCat("expected =, !=, =~ or !~ after label '", label, "'"));
      }
      skipSpace();
      if (i >= text.size() || text[i] != '"') {
        return err("expected a double-quoted value");
      }
      ++i;
      std::string value;
      while (i < text.size() && text[i] != '"') {
        if (text[i] == '\\' && i + 1 < text.size()) {
          ++i;
          value += text[i] == 'n' ? '\n' : text[i];
        } else {
          value += text[i];
        }
        ++i;
      }
      if (i >= text.size()) {
        return err("unterminated string");
      }
      ++i;
      auto m = LabelMatcher::make(label, op, value);
      if (!m.ok()) {
        return m.status();
      }
      sel.matchers.push_back(std::move(*m));
      skipSpace();
      if (i < text.size() && text[i] == ',') {
        ++i;
        continue;
      }
      if (i < text.size() && text[i] == '}') {
        ++i;
        break;
      }
      return err("expected ',' or '}'");
    }
  }
  skipSpace();
  if (i != text.size()) {
    return err("unexpected trailing text");
  }
  if (sel.metric.empty() && sel.matchers.empty()) {
    return err("empty selector");
  }
  return sel;
}

}  // namespace vigil::aggregator
