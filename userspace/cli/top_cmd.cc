// `vigil top`: the live view. The terminal is put in non-canonical, no-echo mode (termios) on
// the alternate screen, drawn with plain ANSI escapes (works over SSH and in tmux without
// ncurses), and restored on q, Ctrl-C, SIGTERM, SIGHUP and at exit. Keys are read from
// /dev/tty through its own non-blocking descriptor, so stdout stays blocking.
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <kj/async-unix.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "userspace/cli/cli.h"
#include "userspace/cli/local_collect.h"
#include "userspace/cli/top.h"
#include "userspace/collectors/bpf_util.h"

namespace vigil::cli {
namespace {

void writeAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return;  // the terminal went away; nothing useful left to do
    }
    off += static_cast<size_t>(n);
  }
}

// Terminal state to restore. A static, so atexit() can reach it whatever path exits.
struct TerminalState {
  bool active = false;
  int key_fd = -1;
  struct termios saved;
};
TerminalState g_term;

void restoreTerminal() {
  if (!g_term.active) {
    return;
  }
  g_term.active = false;
  writeAll(STDOUT_FILENO, "\x1b[?25h\x1b[?1049l");
  tcsetattr(g_term.key_fd, TCSAFLUSH, &g_term.saved);
  close(g_term.key_fd);
  g_term.key_fd = -1;
}

absl::Status enterTerminal() {
  int fd = open("/dev/tty", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    return absl::FailedPreconditionError("no terminal (/dev/tty)");
  }
  struct termios t;
  if (tcgetattr(fd, &t) != 0) {
    close(fd);
    return absl::FailedPreconditionError("stdin is not a terminal");
  }
  g_term.saved = t;
  g_term.key_fd = fd;
  t.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);  // ISIG stays: Ctrl-C is SIGINT
  // VMIN 1 with O_NONBLOCK: read() answers EAGAIN when no key is waiting and 0 only on hangup
  // (VMIN 0 would return 0 for "nothing yet", indistinguishable from hangup).
  t.c_cc[VMIN] = 1;
  t.c_cc[VTIME] = 0;
  tcsetattr(fd, TCSANOW, &t);
  g_term.active = true;
  atexit(restoreTerminal);
  writeAll(STDOUT_FILENO, "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J");
  return absl::OkStatus();
}

std::pair<size_t, size_t> terminalSize() {
  struct winsize ws;
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
    return {ws.ws_col, ws.ws_row};
  }
  return {80, 24};
}

struct TopSettings {
  bool by_container = false;
  TopSort sort = TopSort::kCpu;
  TopFilter filter;
  kj::Duration interval = 1 * kj::SECONDS;
  double interval_s = 1;
  size_t limit = 0;
};

class LiveTop {
 public:
  LiveTop(kj::AsyncIoContext& io, LocalCollectors& lc, TopSettings settings)
      : io_(io),
        lc_(lc),
        s_(std::move(settings)),
        keys_(io.unixEventPort, g_term.key_fd, kj::UnixEventPort::FdObserver::OBSERVE_READ) {}

  kj::Promise<void> run() {
    prev_ = lc_.collect();
    header_ = headerFrom(*prev_, s_.interval_s);
    header_.status = "collecting...";
    draw();
    return tick().exclusiveJoin(keys()).exclusiveJoin(resize()).exclusiveJoin(lc_.run());
  }

 private:
  kj::Promise<void> tick() {
    return sleepFromNow(io_.provider->getTimer(), s_.interval).then([this]() {
      auto cur = lc_.collect();
      double seconds = (cur->end_unix_ns - prev_->end_unix_ns) / 1e9;
      rows_ = computeRows(*prev_, *cur, seconds, s_.by_container, s_.filter);
      cols_ = availableColumns(*cur);
      header_ = headerFrom(*cur, s_.interval_s);
      prev_ = std::move(cur);
      draw();
      return tick();
    });
  }

  kj::Promise<void> keys() {
    return keys_.whenBecomesReadable().then([this]() -> kj::Promise<void> {
      char buf[64];
      while (true) {
        ssize_t n = ::read(g_term.key_fd, buf, sizeof(buf));
        if (n == 0) {
          return kj::READY_NOW;  // terminal hung up
        }
        if (n < 0) {
          if (errno == EINTR) {
            continue;
          }
          break;  // EAGAIN: drained
        }
        for (ssize_t i = 0; i < n; ++i) {
          char c = buf[i];
          if (c == 'q' || c == 'Q') {
            return kj::READY_NOW;
          }
          if (auto sort = parseSortKey(std::string(1, c))) {
            s_.sort = *sort;
          }
        }
      }
      draw();
      return keys();
    });
  }

  kj::Promise<void> resize() {
    return io_.unixEventPort.onSignal(SIGWINCH).then([this](siginfo_t) {
      draw();
      return resize();
    });
  }

  void draw() {
    auto [width, height] = terminalSize();
    sortRows(rows_, s_.sort);
    auto lines = renderTop(header_, rows_, cols_, s_.sort, s_.by_container, width, height);
    std::string screen = "\x1b[H";
    for (size_t i = 0; i < lines.size(); ++i) {
      // The column header in reverse video, as top does.
      bool head = i == 3;
      absl::StrAppend(&screen, head ? "\x1b[7m" : "", lines[i], head ? "\x1b[0m" : "", "\x1b[K",
                      i + 1 < lines.size() ? "\r\n" : "");
    }
    screen += "\x1b[J";
    writeAll(STDOUT_FILENO, screen);
  }

  kj::AsyncIoContext& io_;
  LocalCollectors& lc_;
  TopSettings s_;
  kj::UnixEventPort::FdObserver keys_;
  std::unique_ptr<Snapshot> prev_;
  std::vector<TopRow> rows_;
  TopColumns cols_;
  TopHeader header_;
};

int runOnce(const Command& self, kj::AsyncIoContext& io, LocalCollectors& lc, const TopSettings& s,
            bool json) {
  auto prev = lc.collect();
  sleepFromNow(io.provider->getTimer(), s.interval).exclusiveJoin(lc.run()).wait(io.waitScope);
  auto cur = lc.collect();
  double seconds = (cur->end_unix_ns - prev->end_unix_ns) / 1e9;
  auto rows = computeRows(*prev, *cur, seconds, s.by_container, s.filter);
  sortRows(rows, s.sort);
  if (s.limit != 0 && rows.size() > s.limit) {
    rows.resize(s.limit);
  }
  TopColumns cols = availableColumns(*cur);
  if (json) {
    std::string out = topToJson(rows, cols, s.sort, s.by_container, seconds)
                          .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    out += '\n';
    writeAll(STDOUT_FILENO, out);
    return kExitOk;
  }
  auto lines = renderTop(headerFrom(*cur, s.interval_s), rows, cols, s.sort, s.by_container, 0, 0);
  writeAll(STDOUT_FILENO, absl::StrCat(absl::StrJoin(lines, "\n"), "\n"));
  return kExitOk;
}

}  // namespace

int runTop(const Command& self, const Args& args) {
  if (!args.positional().empty()) {
    return usageError(self, absl::StrCat("unexpected argument '", args.positional()[0], "'"));
  }
  TopSettings s;
  std::string by = args.get("by", "process");
  if (by != "process" && by != "container") {
    return usageError(self, absl::StrCat("--by must be process or container, got '", by, "'"));
  }
  s.by_container = by == "container";
  auto sort = parseSortKey(args.get("sort", "cpu"));
  if (!sort) {
    return usageError(self, absl::StrCat("--sort must be cpu, syscalls, errors, net, block, runq "
                                         "or pid, got '",
                                         args.get("sort"), "'"));
  }
  s.sort = *sort;
  auto pid = args.u32("pid", 0);
  auto limit = args.u32("limit", 0);
  auto interval = args.duration("interval", absl::Seconds(1));
  for (const absl::Status& st : {pid.status(), limit.status(), interval.status()}) {
    if (!st.ok()) {
      return usageError(self, std::string(st.message()));
    }
  }
  if (*interval < absl::Milliseconds(100)) {
    return usageError(self, "--interval must be at least 100ms");
  }
  s.filter.pid = *pid;
  s.filter.container = args.get("container");
  s.filter.comm = args.get("comm");
  s.limit = *limit;
  s.interval = absl::ToInt64Milliseconds(*interval) * kj::MILLISECONDS;
  s.interval_s = absl::ToDoubleSeconds(*interval);
  bool once = args.has("once");
  if (args.has("json") && !once) {
    return usageError(self, "--json needs --once (the live view is for terminals)");
  }
  if (!once && (!isatty(STDOUT_FILENO) || !isatty(STDIN_FILENO))) {
    return usageError(self, "the live view needs a terminal; in scripts use --once (and --json)");
  }

  if (getenv("VIGIL_LIBBPF_DEBUG") == nullptr) {
    installLibbpfLogger(false);
  }
  CoreBtfUse core_btf(args.has("verbose"));
  kj::UnixEventPort::captureSignal(SIGINT);
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGHUP);
  kj::UnixEventPort::captureSignal(SIGWINCH);
  auto io = kj::setupAsyncIo();
  CollectorConfig config;
  config.syscall_mode = args.get("syscall_mode", "continuous");
  if (config.syscall_mode != "continuous" && config.syscall_mode != "sampled" &&
      config.syscall_mode != "off") {
    return usageError(self, absl::StrCat("--syscall-mode must be continuous, sampled or off, got '",
                                         config.syscall_mode, "'"));
  }
  config.interval = s.interval;
  config.only_tgid = s.filter.pid;
  config.preallocate_maps = false;  // start-up: docs/cli.md, "Start-up cost"
  config.prefer_raw_tp = true;      // likewise: no vmlinux BTF parse for three of the objects
  if (!once) {
    // The screen comes up at once; loading the BPF objects takes the next ~100 ms.
    if (auto st = enterTerminal(); !st.ok()) {
      return usageError(self, absl::StrCat(st.message(), "; in scripts use --once (and --json)"));
    }
    writeAll(STDOUT_FILENO, "vigil top: loading BPF collectors...");
  }
  auto lc = LocalCollectors::create(config, io, &core_btf);
  if (!lc.ok() || (*lc)->running() == 0) {
    restoreTerminal();
    if (!lc.ok()) {
      return collectorFailure(self, lc.status());
    }
    for (const std::string& w : (*lc)->warnings()) {
      fprintf(stderr, "vigil top: %s\n", w.c_str());
    }
    return fail(self, kExitUnsupported, "no collector could start; see the lines above");
  }
  if (once) {
    int rc = runOnce(self, io, **lc, s, args.has("json"));
    core_btf.finish();  // the first run on this kernel writes the cache, after the table
    return rc;
  }
  core_btf.finish();
  {
    // The key observer must be gone before restoreTerminal() closes its descriptor.
    LiveTop top(io, **lc, s);
    auto signals = io.unixEventPort.onSignal(SIGINT)
                       .exclusiveJoin(io.unixEventPort.onSignal(SIGTERM))
                       .exclusiveJoin(io.unixEventPort.onSignal(SIGHUP))
                       .ignoreResult();
    top.run().exclusiveJoin(kj::mv(signals)).wait(io.waitScope);
  }
  restoreTerminal();
  for (const std::string& w : (*lc)->warnings()) {
    fprintf(stderr, "vigil top: %s\n", w.c_str());
  }
  return kExitOk;
}

}  // namespace vigil::cli
