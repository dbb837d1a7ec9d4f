#include "aggregator/auth.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace vigil::aggregator {
namespace {

absl::StatusOr<std::string> readFile(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", what, " ", path));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

}  // namespace

bool tokenEquals(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

absl::StatusOr<absl::flat_hash_map<std::string, std::string>> parseTokensYaml(
    const std::string& text) {
  absl::flat_hash_map<std::string, std::string> out;
  try {
    YAML::Node root = YAML::Load(text);
    if (root.IsMap() && root["agents"] && root["agents"].IsMap()) {
      root = root["agents"];
    }
    if (!root.IsMap()) {
      return absl::InvalidArgumentError("tokens file must map agent ids to tokens");
    }
    for (const auto& kv : root) {
      int line = kv.first.Mark().line + 1;
      if (!kv.second.IsScalar()) {
        return absl::InvalidArgumentError(
            absl::StrCat("line ", line, ": the token must be a string"));
      }
      std::string id = kv.first.as<std::string>();
      std::string token = kv.second.as<std::string>();
      if (id.empty() || token.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("line ", line, ": agent id and token must be non-empty"));
      }
      if (!out.emplace(id, token).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("line ", line, ": agent id '", id, "' is listed twice"));
      }
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("YAML error at line ", e.mark.line + 1, ": ", e.msg));
  }
  return out;
}

absl::StatusOr<absl::flat_hash_map<std::string, std::string>> loadTokensFile(
    const std::string& path) {
  auto text = readFile(path, "--tokens_file");
  if (!text.ok()) {
    return text.status();
  }
  auto tokens = parseTokensYaml(*text);
  if (!tokens.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", tokens.status().message()));
  }
  if (tokens->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path,
                                                   ": no tokens (every agent would be "
                                                   "refused)"));
  }
  return tokens;
}

absl::StatusOr<std::unique_ptr<ServerTls>> loadServerTls(const std::string& cert_file,
                                                         const std::string& key_file,
                                                         const std::string& client_ca_file) {
  auto cert = readFile(cert_file, "--tls_cert");
  if (!cert.ok()) {
    return cert.status();
  }
  auto key = readFile(key_file, "--tls_key");
  if (!key.ok()) {
    return key.status();
  }
  std::string ca;
  if (!client_ca_file.empty()) {
    auto c = readFile(client_ca_file, "--tls_client_ca");
    if (!c.ok()) {
      return c.status();
    }
    ca = *c;
  }
  auto tls = std::make_unique<ServerTls>();
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                 tls->keypair = kj::TlsKeypair{kj::TlsPrivateKey(*key), kj::TlsCertificate(*cert)};
                 kj::TlsContext::Options opts;
                 opts.defaultKeypair = KJ_ASSERT_NONNULL(tls->keypair);
                 if (!ca.empty()) {
                   tls->client_cas.add(kj::TlsCertificate(ca));
                   opts.useSystemTrustStore = false;
                   opts.trustedCertificates = tls->client_cas.asPtr();
                   opts.verifyClients = true;
                   tls->require_client_cert = true;
                 }
                 tls->context = kj::heap<kj::TlsContext>(kj::mv(opts));
               })) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS setup failed (check the PEM files): ", e->getDescription().cStr()));
  }
  return tls;
}

}  // namespace vigil::aggregator
