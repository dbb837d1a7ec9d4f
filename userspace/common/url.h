// URL helpers shared by the CLI's aggregator queries and the tests' Prometheus queries.
#pragma once

#include <string>

namespace vigil {

// Percent-encodes a query-string value: everything but RFC 3986 unreserved characters
// (ALPHA / DIGIT / "-" / "." / "_" / "~") becomes %XX.
std::string urlEncode(const std::string& s);

}  // namespace vigil
