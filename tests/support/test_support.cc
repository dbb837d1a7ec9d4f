#include "tests/support/test_support.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

namespace vigil::testing {

bool bpfAllowed(const char* test_name) {
  if (geteuid() == 0) {
    return true;
  }
  if (getenv("CI") != nullptr) {
    FAIL(test_name << ": BPF tests must run as root in CI; a skip there is a failure");
    return false;
  }
  WARN(test_name << ": SKIPPED, needs root to load BPF programs (run 'sudo make test')");
  return false;
}

std::string binaryPath(const std::string& name) { return std::string(VIGIL_BIN_DIR) + "/" + name; }

TempDir::TempDir() {
  char tmpl[] = "/tmp/vigil-test.XXXXXX";
  char* dir = mkdtemp(tmpl);
  REQUIRE(dir != nullptr);
  path_ = dir;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

BtfCacheDir::BtfCacheDir() {
  char tmpl[] = "/tmp/vigil-btf-cache.XXXXXX";
  if (mkdtemp(tmpl) != nullptr) {
    path_ = tmpl;
    setenv("VIGIL_BTF_CACHE_DIR", tmpl, 1);
  }
}

BtfCacheDir::~BtfCacheDir() {
  if (!path_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
}

Child Child::spawn(const std::vector<std::string>& argv, const std::string& log_path) {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (!log_path.empty()) {
      int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
      }
    }
    std::vector<char*> args;
    for (const auto& a : argv) {
      args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return Child(pid);
}

Child Child::fork(const std::function<int()>& fn) {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    _exit(fn());
  }
  return Child(pid);
}

Child::Child(Child&& other) noexcept : pid_(other.pid_), reaped_(other.reaped_) { other.pid_ = -1; }

Child& Child::operator=(Child&& other) noexcept {
  std::swap(pid_, other.pid_);
  std::swap(reaped_, other.reaped_);
  return *this;
}

Child::~Child() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
  }
}

bool Child::alive() {
  if (pid_ <= 0 || reaped_) {
    return false;
  }
  int status;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    return false;
  }
  return true;
}

void Child::signal(int sig) {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, sig);
  }
}

std::optional<int> Child::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      return status;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

bool waitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
             std::chrono::milliseconds step) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return pred();
    }
    std::this_thread::sleep_for(step);
  }
  return true;
}

std::optional<int> readReadyPort(const std::string& path, const std::string& key,
                                 std::chrono::milliseconds timeout) {
  std::optional<int> port;
  waitFor(
      [&]() {
        std::istringstream in(readFile(path));
        std::string line;
        while (std::getline(in, line)) {
          if (line.rfind(key + "=", 0) == 0) {
            port = std::stoi(line.substr(key.size() + 1));
            return true;
          }
        }
        return false;
      },
      timeout, std::chrono::milliseconds(20));
  return port;
}

HttpResult httpRequest(uint16_t port, const std::string& method, const std::string& path,
                       const std::string& body, const std::string& auth_header) {
  HttpResult result;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return result;
  }
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return result;
  }
  std::ostringstream req;
  req << method << " " << path << " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  if (!auth_header.empty()) {
    req << "Authorization: " << auth_header << "\r\n";
  }
  req << "Content-Length: " << body.size() << "\r\n\r\n" << body;
  std::string data = req.str();
  if (send(fd, data.data(), data.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(data.size())) {
    close(fd);
    return result;
  }
  // Read until the body announced by Content-Length is complete (servers may keep the
  // connection open despite "Connection: close"), or until EOF for chunked/unsized replies.
  std::string response;
  char buf[65536];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
    response.append(buf, n);
    auto end = response.find("\r\n\r\n");
    if (end == std::string::npos) {
      continue;
    }
    std::string lower = response.substr(0, end);
    for (char& c : lower) {
      c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    }
    auto cl = lower.find("content-length:");
    if (cl != std::string::npos && response.size() >= end + 4 + std::stoul(lower.substr(cl + 15))) {
      break;
    }
  }
  close(fd);
  auto header_end = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.1 ", 0) != 0 || header_end == std::string::npos) {
    return result;
  }
  result.status = std::stoi(response.substr(9, 3));
  std::string headers = response.substr(0, header_end);
  result.body = response.substr(header_end + 4);
  if (headers.find("Transfer-Encoding: chunked") != std::string::npos ||
      headers.find("transfer-encoding: chunked") != std::string::npos) {
    std::string decoded;
    size_t pos = 0;
    while (pos < result.body.size()) {
      size_t eol = result.body.find("\r\n", pos);
      if (eol == std::string::npos) {
        break;
      }
      size_t len = std::stoul(result.body.substr(pos, eol - pos), nullptr, 16);
      if (len == 0) {
        break;
      }
      decoded += result.body.substr(eol + 2, len);
      pos = eol + 2 + len + 2;
    }
    result.body = decoded;
  }
  return result;
}

HttpResult httpGet(uint16_t port, const std::string& path, const std::string& auth_header) {
  return httpRequest(port, "GET", path, "", auth_header);
}

std::optional<double> promValue(const std::string& text, const std::string& name,
                                const std::map<std::string, std::string>& labels) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') {
      continue;
    }
    if (line.rfind(name, 0) != 0) {
      continue;
    }
    char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != '{' && next != ' ') {
      continue;
    }
    bool all = true;
    for (const auto& [k, v] : labels) {
      if (line.find(k + "=\"" + v + "\"") == std::string::npos) {
        all = false;
        break;
      }
    }
    if (!all) {
      continue;
    }
    auto space = line.rfind(' ');
    if (line.find('}') != std::string::npos) {
      space = line.find(' ', line.rfind('}'));
    } else {
      space = line.find(' ');
    }
    return std::stod(line.substr(space + 1));
  }
  return std::nullopt;
}

double procCpuSeconds(pid_t pid) {
  std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
  auto close_paren = stat.rfind(')');
  if (close_paren == std::string::npos) {
    return -1;
  }
  std::istringstream in(stat.substr(close_paren + 2));
  std::string field;
  std::vector<std::string> fields;
  while (in >> field) {
    fields.push_back(field);
  }
  // Fields after comm start at field 3 (state); utime is field 14, stime 15.
  double ticks = std::stod(fields[11]) + std::stod(fields[12]);
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

void burnCpu(double seconds) {
  struct timespec ts;
  volatile uint64_t x = 0;
  while (true) {
    for (int i = 0; i < 100000; ++i) {
      x = x + i;
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    if (ts.tv_sec + ts.tv_nsec / 1e9 >= seconds) {
      return;
    }
  }
}

std::string shell(const std::string& command) {
  std::string out;
  FILE* f = popen(command.c_str(), "r");
  if (f == nullptr) {
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
    out.append(buf, n);
  }
  pclose(f);
  return out;
}

std::vector<int> bpfProgramIdsInMetrics(const std::string& metrics_text) {
  std::vector<int> ids;
  std::regex re("vigil_bpf_program_runs_total\\{[^}]*id=\"([0-9]+)\"");
  for (auto it = std::sregex_iterator(metrics_text.begin(), metrics_text.end(), re);
       it != std::sregex_iterator(); ++it) {
    ids.push_back(std::stoi((*it)[1]));
  }
  return ids;
}

bool bpfProgramExists(int id) {
  return shell("bpftool prog show id " + std::to_string(id) + " >/dev/null 2>&1 && echo yes") ==
         "yes\n";
}

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeFile(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
  }
  REQUIRE(rename(tmp.c_str(), path.c_str()) == 0);
}

int freePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace vigil::testing
