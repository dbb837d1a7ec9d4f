// vigil-bench-getppid: ns per getppid() call in a tight loop, the cheapest syscall there is, so
// what a syscall hook adds to every syscall shows plainly.
//   vigil-bench-getppid [CALLS]   (default 2,000,000) prints "ns_per_call=<float>"
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  long calls = argc > 1 ? strtol(argv[1], nullptr, 10) : 2000000;
  if (calls <= 0) {
    fprintf(stderr, "vigil-bench-getppid: CALLS must be a positive number\n");
    return 2;
  }
  timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < calls; ++i) {
    // syscall() so that no libc caching can skip the kernel.
    syscall(SYS_getppid);
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
  printf("ns_per_call=%.1f\n", ns / calls);
  return 0;
}
