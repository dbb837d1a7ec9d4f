// Who may connect to the aggregator's RPC port: per-agent bearer tokens (--tokens_file) and TLS
// with optional client certificates (--tls_cert/--tls_key/--tls_client_ca). A connection's
// identity (token's agent id, or the client certificate's CN) bounds what it may register as.
#pragma once

#include <kj/compat/tls.h>
#include <kj/debug.h>
#include <kj/vector.h>

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace vigil::aggregator {

// Reads a YAML tokens file: either a mapping `agent-id: token`, or the same under a top-level
// `agents:` key. Empty ids or tokens, and duplicate ids, are errors naming the line.
absl::StatusOr<absl::flat_hash_map<std::string, std::string>> loadTokensFile(
    const std::string& path);
absl::StatusOr<absl::flat_hash_map<std::string, std::string>> parseTokensYaml(
    const std::string& text);

// Constant-time comparison (a token check must not leak how many bytes matched).
bool tokenEquals(const std::string& a, const std::string& b);

// The server's TLS context and the material it was built from (which must outlive it).
struct ServerTls {
  kj::Maybe<kj::TlsKeypair> keypair;
  kj::Vector<kj::TlsCertificate> client_cas;
  kj::Own<kj::TlsContext> context;
  bool require_client_cert = false;
};

// cert/key are PEM files; client_ca (optional) enables mutual TLS: a client must present a
// certificate signed by it, and its CN is the only agent id it may register as.
absl::StatusOr<std::unique_ptr<ServerTls>> loadServerTls(const std::string& cert_file,
                                                         const std::string& key_file,
                                                         const std::string& client_ca_file);

}  // namespace vigil::aggregator
