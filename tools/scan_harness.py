"""Time the C++ selective-scan kernel alone, outside Python: one thread, one scan call's forward and backward passes.

    python tools/scan_harness.py                    # 16 batch rows of the guide's shape: one thread's share of a call
    python tools/scan_harness.py --rounds 5 --rows 16 --tokens 250 --channels 512 --states 16 --rank 16

It writes the kernel source of the installed `pahcl` (`pahcl/csrc/selective_scan.cpp`, chapter 10) next to a small C++ `main` that calls
`scan_fwd` and `scan_bwd` as the Mamba block does (Δ formed in the kernel from the low-rank step, softplus, D, the z gate
read from rows twice as wide as u), builds it with the kernel's own compiler and flags (`pahcl.kernel`) and prints the best forward and backward
times of `--rounds` rounds of 7 runs. No Python, PyTorch or thread pool is timed, so two versions of the kernel can be
compared to a few per cent: run this at one commit, then at another (`git checkout REV -- pahcl/csrc/selective_scan.cpp`), alternately.
The last line is JSON.
"""
import argparse, json, subprocess, sys, tempfile
from pathlib import Path

MAIN = r'''
#include "kernel.cpp"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
int main(int argc, char** argv) {
  const int64_t Bs = atol(argv[1]), L = atol(argv[2]), D = atol(argv[3]), N = atol(argv[4]), R = atol(argv[5]);
  const int64_t chunk = atol(argv[6]), rounds = atol(argv[7]), S = 1, ldz = 2 * D, Xw = R + 2 * N;
  std::mt19937 g(0); std::normal_distribution<float> nd(0, 1);
  auto vec = [&](size_t n, float sc) { std::vector<float> v(n); for (auto& x : v) x = nd(g) * sc; return v; };
  auto u = vec(Bs * L * D, 0.5f), xz = vec(Bs * L * ldz, 1.0f), xd = vec(Bs * L * Xw, 0.3f), Wt = vec(R * D, 0.25f);
  std::vector<float> At(N * D), Dp(D, 1.0f), bias(D, -4.6f);                 // A = -(n + 1) (S4D-real), Δ ≈ 0.01
  for (int64_t n = 0; n < N; ++n) for (int64_t d = 0; d < D; ++d) At[n * D + d] = -(float)(n + 1);
  const int64_t K = (L + chunk - 1) / chunk;
  std::vector<float> y(Bs * L * D), hc(Bs * K * N * D), dy = vec(Bs * L * D, 1.0f), du(Bs * L * D), dz(Bs * L * ldz),
      dA(Bs * N * D), dDp(Bs * D), dB(Bs * S * L * N), dC(Bs * S * L * N), dbp(Bs * D), dL(Bs * S * L * R), dW(Bs * R * D);
  const float* z = xz.data() + D;                                             // z: the second half of in_proj's rows
  auto fwd = [&]() { scan_fwd<float>(u.data(), nullptr, At.data(), xd.data() + R, xd.data() + R + N, xd.data(), Wt.data(),
      R, Xw, L * Xw, Dp.data(), z, bias.data(), 1, y.data(), hc.data(), 0.5f, 0, 0, ldz, Bs, D, L, N, chunk, S, 0, Bs * S); };
  auto bwd = [&]() { scan_bwd<float>(u.data(), nullptr, At.data(), xd.data() + R, xd.data() + R + N, xd.data(), Wt.data(),
      R, Xw, L * Xw, Dp.data(), z, bias.data(), 1, hc.data(), dy.data(), 0.5f, 0, 0, ldz, du.data(), nullptr, dA.data(),
      dDp.data(), dz.data() + D, dB.data(), dC.data(), dbp.data(), dL.data(), dW.data(), Bs, D, L, N, chunk, S, 0, Bs * S); };
  auto best = [&](auto f) { double b = 1e9; for (int r = 0; r < 7; ++r) { auto t0 = std::chrono::steady_clock::now(); f();
      b = std::min(b, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()); } return b * 1e3; };
  double tf = 1e9, tb = 1e9;
  fwd();
  for (int64_t r = 0; r < rounds; ++r) { tf = std::min(tf, best(fwd)); tb = std::min(tb, best(bwd)); }
  double s = 0; for (float v : y) s += v; for (float v : du) s += v;
  printf("%.3f %.3f %.9g\n", tf, tb, s);
}
'''

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rows', type=int, default=16, help='batch rows (one thread: half of the benchmark batch of 32)')
    ap.add_argument('--tokens', type=int, default=250); ap.add_argument('--channels', type=int, default=512)
    ap.add_argument('--states', type=int, default=16); ap.add_argument('--rank', type=int, default=16)
    ap.add_argument('--rounds', type=int, default=5)
    a = ap.parse_args(argv)
    from pahcl.kernel import CXX_FLAGS, find_compiler, kernel_source
    from pahcl.ssm import SCAN_CHUNK
    cxx = find_compiler()                                     # the compiler the kernel itself is built with
    if not cxx: sys.exit('scan_harness: no C++ compiler found (set CXX)')
    flags = [f for f in CXX_FLAGS if f not in ('-shared', '-fPIC')] + ['-march=native']
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp)/'kernel.cpp').write_text(kernel_source()); (Path(tmp)/'main.cpp').write_text(MAIN)
        exe = Path(tmp)/'harness'
        r = subprocess.run([cxx, *flags, str(Path(tmp)/'main.cpp'), '-o', str(exe)], capture_output=True, text=True)
        if r.returncode: sys.exit(f'scan_harness: {cxx} failed:\n{r.stderr[-2000:]}')
        out = subprocess.run([str(exe), *map(str, [a.rows, a.tokens, a.channels, a.states, a.rank, SCAN_CHUNK, a.rounds])],
                             capture_output=True, text=True, check=True).stdout.split()
    res = dict(rows=a.rows, tokens=a.tokens, channels=a.channels, states=a.states, rank=a.rank, chunk=SCAN_CHUNK,
               forward_ms=float(out[0]), backward_ms=float(out[1]), checksum=float(out[2]))
    print(f"scan kernel, one thread, {a.rows} × {a.tokens} tokens × {a.channels} channels × {a.states} states: "
          f"forward {res['forward_ms']:.2f} ms, backward {res['backward_ms']:.2f} ms")
    print(json.dumps(res))
    return res

if __name__ == '__main__': main()
