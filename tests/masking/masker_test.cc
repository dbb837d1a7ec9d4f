#include "userspace/masking/masker.h"

#include <catch2/catch.hpp>
#include <random>

namespace vigil {
namespace {

std::unique_ptr<Masker> masker(const std::vector<std::string>& extra = {}) {
  std::vector<std::string> errors;
  auto m = Masker::create(extra, &errors);
  REQUIRE(errors.empty());
  return m;
}

TEST_CASE("flags with an inline secret are masked, others are kept") {
  auto m = masker();
  CHECK(m->maskArgvJoined({"app", "--user=bob", "--password=hunter2"}) ==
        "app --user=bob --password=***");
  CHECK(m->maskArgvJoined({"app", "--db-password=a b c", "-token=xyz", "--api-key=k1",
                           "--client_secret=s", "--port=80"}) ==
        "app --db-password=*** -token=*** --api-key=*** --client_secret=*** --port=80");
  // A reference to a secret is not the secret.
  CHECK(m->maskArgvJoined({"app", "--password-file=/run/secrets/pw", "--token-ttl=5m"}) ==
        "app --password-file=/run/secrets/pw --token-ttl=5m");
}

TEST_CASE("a secret flag's value in the next argument is masked") {
  auto m = masker();
  CHECK(m->maskArgvJoined({"app", "--token", "abc123", "--verbose"}) ==
        "app --token *** --verbose");
  CHECK(m->maskArgvJoined({"app", "--password", "--verbose"}) == "app --password --verbose");
  CHECK(m->maskArgvJoined({"curl", "-u", "bob:hunter2", "http://x"}) == "curl -u bob:*** http://x");
  CHECK(m->maskArgvJoined({"app", "--token"}) == "app --token");
}

TEST_CASE("environment-style assignments of secrets are masked") {
  auto m = masker();
  CHECK(m->maskArgvJoined({"env", "PASSWORD=hunter2", "AWS_SECRET_ACCESS_KEY=abc/def",
                           "GITHUB_TOKEN=t", "PGPASSWORD=x", "HOME=/root"}) ==
        "env PASSWORD=*** AWS_SECRET_ACCESS_KEY=*** GITHUB_TOKEN=*** PGPASSWORD=*** HOME=/root");
  CHECK(m->maskText("host=db user=u password=secret sslmode=on") ==
        "host=db user=u password=*** sslmode=on");
  CHECK(m->maskText("https://h/x?token=abc&page=2") == "https://h/x?token=***&page=2");
}

TEST_CASE("URLs with credentials, bearer tokens and token shapes are masked") {
  auto m = masker();
  CHECK(m->maskText("postgres://admin:s3cret@db:5432/app") == "postgres://admin:***@db:5432/app");
  CHECK(m->maskText("https://user@host/") == "https://user@host/");
  CHECK(m->maskArgvJoined({"curl", "-H", "Authorization: Bearer eyAbc.def"}) ==
        "curl -H Authorization: Bearer ***");
  CHECK(m->maskArgvJoined({"tool", "Bearer", "abcdef"}) == "tool Bearer ***");
  CHECK(m->maskText("key AKIAIOSFODNN7EXAMPLE used") == "key *** used");
  CHECK(m->maskText("ghp_0123456789abcdefghijABCDEFGHIJ012345") == "***");
  CHECK(m->maskText("xoxb-1234567890-abcdef") == "***");
  CHECK(m->maskText("jwt eyJhbGciOi.eyJzdWIiOiIx.SflKxwRJSM") == "jwt ***");
  CHECK(m->maskText("-----BEGIN RSA PRIVATE KEY-----MIIE") == "***");
}

TEST_CASE("extra patterns mask their group or whole match; bad ones are reported") {
  auto m = masker({R"(acct-(\d+))", R"(internal-[a-z]+)"});
  CHECK(m->maskText("acct-12345 internal-host ok") == "acct-*** *** ok");
  std::vector<std::string> errors;
  auto bad = Masker::create({"(unclosed", "fine"}, &errors);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].find("(unclosed") != std::string::npos);
  CHECK(bad->maskText("fine") == "***");
}

TEST_CASE("cmdlines are split on NUL, or on spaces when they have none") {
  auto m = masker();
  CHECK(m->maskCmdline(std::string("mysqld\0--password=pw\0", 21)) == "mysqld --password=***");
  CHECK(m->maskCmdline("worker --token abc") == "worker --token ***");
  CHECK(m->maskCmdline("") == "");
  CHECK(m->maskedCount() >= 2);
}

TEST_CASE("random input never crashes the masker and secrets stay masked") {
  auto m = masker();
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string s;
    int len = static_cast<int>(rng() % 300);
    for (int j = 0; j < len; ++j) {
      s.push_back(static_cast<char>(rng() % 256));
    }
    m->maskCmdline(s);
    m->maskText(s + " --password=hunter2");
    CHECK(m->maskText("x --password=hunter2").find("hunter2") == std::string::npos);
  }
}

}  // namespace
}  // namespace vigil
