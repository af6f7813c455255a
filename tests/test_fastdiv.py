"""kernels/fastdiv.cuh (the kernels' division by a launch-time divisor)
against exact integer division, compiled as plain C++ with the host
compiler: the same header the CUDA kernels include, no GPU needed.

Divisors cover every value up to 4096, the neighbours of each power of two
up to 2^31 and a random sample; dividends the range's edges, the
neighbours of multiples of the divisor and a random sample of [0, 2^31)."""
import shutil
import subprocess
from pathlib import Path

import pytest

KERNELS = Path(__file__).resolve().parents[1] / "kernels"

DRIVER = r"""
#include "fastdiv.cuh"
#include <cstdio>
#include <random>
#include <vector>

int main() {
  std::mt19937_64 rng(12345);
  std::vector<uint32_t> divisors;
  for (uint32_t d = 1; d <= 4096; ++d) divisors.push_back(d);
  for (int k = 1; k <= 31; ++k) {
    const uint64_t p = uint64_t{1} << k;
    for (int64_t e = -2; e <= 2; ++e)
      if (p + e >= 1 && p + e <= (uint64_t{1} << 31)) divisors.push_back(static_cast<uint32_t>(p + e));
  }
  for (int i = 0; i < 2000; ++i) divisors.push_back(1 + static_cast<uint32_t>(rng() % (uint64_t{1} << 31)));
  // Sizes the kernels see: image widths, planes of 24-MP frames, CFA periods.
  for (uint32_t d : {2u, 6u, 6000u, 4000u, 6006u, 24000000u, 24024036u, 36u}) divisors.push_back(d);

  const uint64_t top = (uint64_t{1} << 31) - 1;
  long long checks = 0, wrong = 0;
  for (uint32_t d : divisors) {
    const kpnt::FastDiv f(d);
    std::vector<uint64_t> ns = {0, 1, 2, d - 1u, d, uint64_t{d} + 1, top, top - 1, top - d};
    for (int m = 1; m < 40; ++m) {
      const uint64_t q = (rng() % (top / d + 1)) * d;
      ns.push_back(q);
      if (q > 0) ns.push_back(q - 1);
      ns.push_back(q + 1);
    }
    for (int i = 0; i < 60; ++i) ns.push_back(rng() % (top + 1));
    for (uint64_t n64 : ns) {
      if (n64 > top) continue;
      const uint32_t n = static_cast<uint32_t>(n64);
      ++checks;
      if (f.div(n) != n / d || f.mod(n) != n % d) {
        if (wrong < 5) std::printf("wrong: %u / %u gave %u rem %u\n", n, d, f.div(n), f.mod(n));
        ++wrong;
      }
    }
  }
  std::printf("checks %lld wrong %lld\n", checks, wrong);
  return 0;
}
"""


def _compiler():
    return shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


@pytest.mark.skipif(_compiler() is None, reason="no C++ compiler to build the host check of kernels/fastdiv.cuh")
def test_fast_division_is_exact(tmp_path):
    src = tmp_path / "fastdiv_check.cpp"
    src.write_text(DRIVER)
    exe = tmp_path / "fastdiv_check"
    subprocess.run([_compiler(), "-std=c++17", "-O1", f"-I{KERNELS}", str(src), "-o", str(exe)], check=True,
                   capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    last = out.strip().splitlines()[-1].split()
    checks, wrong = int(last[1]), int(last[3])
    assert checks > 500_000, out
    assert wrong == 0, out
