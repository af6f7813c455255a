// Does compute-sanitizer's racecheck understand a producer / consumer handoff through bar.arrive?
//
// kernels/guide_wgrad.cu's warp-specialized weight gradient hands rows from a producer warp group to the multipliers
// through named barriers: the producer writes a buffer and bar.arrive's "full", the multipliers bar.sync "full",
// read, and bar.arrive "empty", which the producer bar.sync's before it writes the buffer again.  PTX says a barrier's
// completion makes each participating thread's prior accesses visible to all participants, bar.arrive included; racecheck
// reported races on that kernel (session 44).  This probe runs the same handoff in three forms:
//   0  the kernel's: writers arrive, readers sync; readers arrive, writers sync           (correct)
//   1  every barrier a bar.sync of all threads, in lock-step                              (correct)
//   2  form 1 with one buffer and no "empty" barrier: the writers write row y + 1 while the readers read row y
//      (a real race; its barrier counts still pair up, so it cannot hang)
// and checks the values the readers saw (a wrong one fails forms 0 and 1 whatever racecheck says).
//
//   nvcc -arch=sm_90 -o /tmp/probe tools/gpu_calls/racecheck_arrive_probe.cu
//   for f in 0 1 2; do compute-sanitizer --tool racecheck /tmp/probe $f; done
#include <cstdio>
#include <cstdlib>

constexpr int kHalf = 128, kRows = 64, kWidth = 512;
constexpr int kFull = 1, kEmpty = 3;

__device__ __forceinline__ void bar_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void bar_arrive(int id, int count) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

__global__ void handoff(int form, float* out) {
  __shared__ float buf[2][kWidth];
  const bool writer = threadIdx.x >= kHalf;
  const int t = threadIdx.x % kHalf;
  if (writer) {
    for (int y = 0; y < kRows; ++y) {
      const int b = form == 2 ? 0 : y & 1;
      if (form == 0 && y >= 2) bar_sync(kEmpty + b, 2 * kHalf);  // row y - 2 read: its buffer is free
      for (int i = t; i < kWidth; i += kHalf) buf[b][i] = float(y * kWidth + i);
      // Form 1 in lock-step: row y - 1's "empty" (its readers are done: row y + 1 may take its buffer) between
      // writing row y and handing it over.
      if (form == 1 && y >= 1) bar_sync(kEmpty + ((y - 1) & 1), 2 * kHalf);
      if (form != 0) bar_sync(kFull + (y & 1), 2 * kHalf);
      else bar_arrive(kFull + (y & 1), 2 * kHalf);
    }
    if (form == 0)
      for (int y = kRows - 2; y < kRows; ++y) bar_sync(kEmpty + (y & 1), 2 * kHalf);
    if (form == 1) bar_sync(kEmpty + ((kRows - 1) & 1), 2 * kHalf);
  } else {
    float bad = 0.f;
    for (int y = 0; y < kRows; ++y) {
      const int b = form == 2 ? 0 : y & 1;
      bar_sync(kFull + (y & 1), 2 * kHalf);
      // Each reader reads what other writers wrote (the reversed index), as the multipliers do.
      for (int i = t; i < kWidth; i += kHalf) {
        const int j = kWidth - 1 - i;
        bad += buf[b][j] != float(y * kWidth + j);
      }
      if (form == 1) bar_sync(kEmpty + b, 2 * kHalf);
      else if (form == 0) bar_arrive(kEmpty + b, 2 * kHalf);
    }
    atomicAdd(out, bad);
  }
}

int main(int argc, char** argv) {
  const int form = argc > 1 ? atoi(argv[1]) : 0;
  float* d;
  cudaMalloc(&d, sizeof(float));
  cudaMemset(d, 0, sizeof(float));
  handoff<<<1, 2 * kHalf>>>(form, d);
  float bad = -1.f;
  cudaMemcpy(&bad, d, sizeof(float), cudaMemcpyDeviceToHost);
  const cudaError_t e = cudaGetLastError();
  printf("form %d: %s, %g wrong values read\n", form, cudaGetErrorString(e), bad);
  return e != cudaSuccess || (form != 2 && bad != 0.f);
}
