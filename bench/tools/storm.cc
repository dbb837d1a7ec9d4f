// vigil-bench-storm: process and connection churn for the footprint and event benchmarks.
//   vigil-bench-storm exec COUNT [RATE]     fork+exec /bin/true COUNT times, at RATE per second
//                                           (0 or absent: as fast as possible)
//   vigil-bench-storm connect COUNT         COUNT loopback TCP connects to a listener of its own,
//                                           each accepted and closed
// Prints "done=<n> seconds=<s> rate=<n/s> failed=<n>".
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

double now() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int execStorm(long count, double rate) {
  double start = now();
  long failed = 0;
  long inflight = 0;
  // Keep a few children in flight so one slow exec does not stall the pace.
  const long kMaxInflight = 16;
  for (long i = 0; i < count; ++i) {
    if (rate > 0) {
      double due = start + i / rate;
      double wait = due - now();
      if (wait > 0) {
        timespec ts{static_cast<time_t>(wait), static_cast<long>((wait - (long)wait) * 1e9)};
        nanosleep(&ts, nullptr);
      }
    }
    while (inflight >= kMaxInflight) {
      int status;
      if (wait(&status) > 0) {
        inflight--;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
          failed++;
        }
      }
    }
    pid_t pid = fork();
    if (pid == 0) {
      execl("/bin/true", "true", static_cast<char*>(nullptr));
      _exit(127);
    }
    if (pid < 0) {
      failed++;
      continue;
    }
    inflight++;
  }
  while (inflight > 0) {
    int status;
    if (wait(&status) <= 0) {
      break;
    }
    inflight--;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      failed++;
    }
  }
  double secs = now() - start;
  printf("done=%ld seconds=%.3f rate=%.1f failed=%ld\n", count, secs, count / secs, failed);
  return 0;
}

int connectStorm(long count) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof(addr);
  if (ls < 0 || bind(ls, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(ls, 1024) != 0 || getsockname(ls, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) {
    fprintf(stderr, "vigil-bench-storm: cannot listen on loopback: %s\n", strerror(errno));
    return 1;
  }
  double start = now();
  long failed = 0;
  for (long i = 0; i < count; ++i) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      failed++;
      if (c >= 0) {
        close(c);
      }
      continue;
    }
    int s = accept(ls, nullptr, nullptr);
    // Close the client first so TIME_WAIT lands on the client side's ephemeral ports; SO_LINGER
    // 0 would turn the close into a reset and skew the TCP state events.
    close(c);
    if (s >= 0) {
      close(s);
    }
  }
  double secs = now() - start;
  printf("done=%ld seconds=%.3f rate=%.1f failed=%ld\n", count, secs, count / secs, failed);
  close(ls);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: vigil-bench-storm exec COUNT [RATE] | connect COUNT\n");
    return 2;
  }
  std::string mode = argv[1];
  long count = strtol(argv[2], nullptr, 10);
  if (count <= 0) {
    fprintf(stderr, "vigil-bench-storm: COUNT must be positive\n");
    return 2;
  }
  if (mode == "exec") {
    return execStorm(count, argc > 3 ? strtod(argv[3], nullptr) : 0);
  }
  if (mode == "connect") {
    return connectStorm(count);
  }
  fprintf(stderr, "vigil-bench-storm: unknown mode '%s'\n", mode.c_str());
  return 2;
}
