// Selective scan and causal depthwise conv for pahcl.ssm, channels-last.
// Layouts: u, delta (raw: bias added and softplus applied here), z, y, dy, du, ddelta, dz: (batch, L, D) contiguous; At: (N, D) = A transposed;
//   B, C: element [b, t, n] at b*sBb + t*sBt + n (views of the x_proj output); D, bias: (D,);
//   hc: (batch, K, N, D) the state at the start of every chunk of `chunk` steps (in reading order);
//   partial sums: dA (batch, N, D), dD and dbias (batch, D), dB, dC (batch, S, L, N), dw (batch*S... see conv).
// A work item is one batch row and one of S channel slices; vectors run across W neighbouring channels.
// `reverse` reads the sequence from the last token to the first (the backward direction of a
// bidirectional block) without flipping anything in memory.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef __AVX512F__
#define PAHCL_VBYTES 64                      // 16 float lanes where the CPU has AVX-512 (and -march=native says so)
#else
#define PAHCL_VBYTES 32                      // 8 float lanes: AVX2, or two SSE halves
#endif
typedef float f8 __attribute__((vector_size(PAHCL_VBYTES)));   // "f8", "i8": the float and int32 vectors of that width
typedef double d4 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(PAHCL_VBYTES)));
template <typename T> struct VT;
template <> struct VT<float> { typedef f8 V; static constexpr int W = PAHCL_VBYTES / 4; };
template <> struct VT<double> { typedef d4 V; static constexpr int W = 4; };

template <typename V, typename T> static inline V bc(T x) { return V{} + x; }
template <typename V, typename T> static inline V ld(const T* p, int cnt) {
  V v{}; if (cnt == (int)(sizeof(V) / sizeof(T))) std::memcpy(&v, p, sizeof(V)); else std::memcpy(&v, p, sizeof(T) * cnt);
  return v; }
template <typename V, typename T> static inline void st(T* p, V v, int cnt) {
  if (cnt == (int)(sizeof(V) / sizeof(T))) std::memcpy(p, &v, sizeof(V)); else std::memcpy(p, &v, sizeof(T) * cnt); }

// max(c, x) and min(c, x), one instruction each with AVX (a compare and a blend with GCC's ?:, two on the FMA ports);
// x NaN gives NaN, as the ?: forms they replace did
static inline f8 vmaxc(f8 c, f8 x) {
#ifdef __AVX512F__
  return (f8)_mm512_max_ps((__m512)c, (__m512)x);
#elif defined(__AVX__)
  return (f8)_mm256_max_ps((__m256)c, (__m256)x);
#else
  return c > x ? c : x;
#endif
}
static inline f8 vminc(f8 c, f8 x) {
#ifdef __AVX512F__
  return (f8)_mm512_min_ps((__m512)c, (__m512)x);
#elif defined(__AVX__)
  return (f8)_mm256_min_ps((__m256)c, (__m256)x);
#else
  return c < x ? c : x;
#endif
}
static inline f8 vexp(f8 x) {                  // Cephes expf: range reduction by ln 2, degree-7 polynomial, ~1 ulp
#ifdef __AVX512F__                             // round and scale by the AVX-512 instructions: vrndscaleps, vscalefps
  x = (f8)_mm512_max_ps(_mm512_min_ps((__m512)x, (__m512)bc<f8>(88.0f)), (__m512)bc<f8>(-104.0f));   // NaN-free at ±inf
  const f8 kf = (f8)_mm512_roundscale_ps((__m512)(x * 1.44269504088896341f), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  x = vminc(bc<f8>(88.0f), vmaxc(bc<f8>(-86.5f), x));     // k in [-125, 127]: 2^k p stays a normal float
  const f8 t = x * 1.44269504088896341f + 12582912.0f;       // round(x / ln 2) by 1.5 · 2^23, as in vexp2 below
  const f8 kf = t - 12582912.0f;
#endif
  const f8 r = (x - kf * 0.693359375f) + kf * 2.12194440e-4f;
  f8 p = bc<f8>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f; p = p * r + 8.3334519073e-3f; p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f; p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
#ifdef __AVX512F__
  return (f8)_mm512_scalef_ps((__m512)p, (__m512)kf);       // times 2^k, underflow to 0 included
#else
  return (f8)((i8)p + ((i8)t << 23));         // times 2^k, k added to p's exponent
#endif
}
static inline d4 vexp(d4 x) { d4 r; for (int i = 0; i < 4; ++i) r[i] = std::exp(x[i]); return r; }
static inline f8 vexp2(f8 y) {                 // 2^y for the scan's decays (y <= 0): y = k + f, k = round(y), |f| <= 1/2,
  // 2^f by a degree-6 polynomial fitted on [-1/2, 1/2] (0.8 ulp), times 2^k. With AVX-512, vscalefps needs no clamping:
  // it underflows to 0 and overflows to inf as exp does (the clamp cost 2 of the state update's 16 instructions).
#ifdef __AVX512F__
  const f8 k = (f8)_mm512_roundscale_ps((__m512)y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  y = vminc(bc<f8>(127.0f), vmaxc(bc<f8>(-125.0f), y));   // 2^-125: a state that has decayed to nothing
  const f8 t = y + 12582912.0f;                // round to nearest: adding 1.5 · 2^23 pushes the fraction out, and leaves
  const f8 k = t - 12582912.0f;                // k in t's low bits, so that t's bits shifted by 23 are k in the exponent
#endif
  const f8 f = y - k;
  f8 p = bc<f8>(1.5345811e-4f);
  p = p * f + 1.3399931e-3f; p = p * f + 9.6184891e-3f; p = p * f + 5.5503286e-2f;
  p = p * f + 2.4022646e-1f; p = p * f + 6.9314718e-1f; p = p * f + 1.0f;
#ifdef __AVX512F__
  return (f8)_mm512_scalef_ps((__m512)p, (__m512)k);        // p · 2^k in one instruction, underflow to 0 included
#else
  return (f8)((i8)p + ((i8)t << 23));         // times 2^k: k added to p's exponent (p in [0.7, 1.5), so it stays normal)
#endif
}
static inline d4 vexp2(d4 x) { d4 r; for (int i = 0; i < 4; ++i) r[i] = std::exp2(x[i]); return r; }
static inline f8 vrecip(f8 x) {               // 1/x: the CPU's reciprocal estimate and one Newton step (~1 ulp), not a division
#ifdef __AVX512F__
  const f8 r = (f8)_mm512_rcp14_ps((__m512)x);           // 14 bits
#elif defined(__AVX__)
  const f8 r = (f8)_mm256_rcp_ps((__m256)x);             // 12 bits
#else
  return 1 / x;
#endif
#if defined(__AVX512F__) || defined(__AVX__)
  return r * (2 - x * r);
#endif
}
static inline d4 vrecip(d4 x) { return 1 / x; }
template <typename V> static inline V sigm(V x) { return vrecip(1 + vexp(-x)); }
static inline f8 vsoftplus(f8 x, f8& sg) {    // max(x, 0) + log1p(w), w = exp(-|x|) in (0, 1], and its derivative σ(x):
  const f8 w = vexp((f8)((i8)x | (int32_t)0x80000000));   // -|x| by the sign bit; log1p(w) = w q(w), q of degree 9
  // fitted to log1p(w)/w on [0, 1]
  f8 q = bc<f8>(-3.214036347e-03f);            //   (Chebyshev, 1.3e-8 relative; about 3 ulp evaluated in float32)
  q = q * w + 1.964916661e-02f; q = q * w - 5.643502995e-02f; q = q * w + 1.053322852e-01f;
  q = q * w - 1.525145173e-01f; q = q * w + 1.965149194e-01f; q = q * w - 2.494780868e-01f;
  q = q * w + 3.332909942e-01f; q = q * w - 4.999985099e-01f; q = q * w + 1.0f;
  const f8 r = vrecip(1.0f + w);
  sg = x > 0 ? r : w * r;                      //   σ(x) = 1/(1 + w) for x > 0, w/(1 + w) otherwise
  return vmaxc(f8{}, x) + w * q;
}
static inline f8 vsoftplus(f8 x) { f8 sg; return vsoftplus(x, sg); }
static inline d4 vsoftplus(d4 x, d4& sg) {
  d4 r; for (int i = 0; i < 4; ++i) { r[i] = std::max(x[i], 0.0) + std::log1p(std::exp(-std::fabs(x[i]))); sg[i] = 1 / (1 + std::exp(-x[i])); }
  return r; }
static inline d4 vsoftplus(d4 x) { d4 sg; return vsoftplus(x, sg); }
template <typename T, typename V> static inline T hsum(V v) {
  T s = 0; for (int i = 0; i < (int)(sizeof(V) / sizeof(T)); ++i) s += v[i]; return s; }

// Fetch the cache line at p + off ahead of its use (for writing: `w` = 1); the next channel vector's lines of a token,
// D floats away from this token's, are a pattern the hardware prefetchers do not pick up in time.
template <typename T> static inline void pf(const T* p, int64_t off, int w = 0) {
  if (p) { if (w) __builtin_prefetch(p + off, 1); else __builtin_prefetch(p + off); } }

static inline int64_t slice_width(int64_t D, int64_t S, int W) { return ((D + S - 1) / S + W - 1) / W * W; }

// Δ before softplus at one token and W channels: bias + delta[o], or, given the low-rank step Lm (strides as B's)
// and the rows Wv of W_Δᵀ, bias + Σ_r W_Δ[c, r] xΔ[t, r] — the block's dt_proj, done here instead of by a K = r matmul.
template <typename T, typename V>
static inline V raw_delta(const T* dl, const T* Lm, const V* Wv, int64_t R, V bv, int64_t o, int64_t lo, int cnt) {
  if (!Lm) return ld<V>(dl + o, cnt) + bv;
  const T* lt = Lm + lo; V a = bv, a1{}, a2{}, a3{};            // four partial sums: four short chains, not one long one
  int64_t r = 0;
  for (; r + 4 <= R; r += 4) { a += Wv[r] * lt[r]; a1 += Wv[r + 1] * lt[r + 1]; a2 += Wv[r + 2] * lt[r + 2]; a3 += Wv[r + 3] * lt[r + 3]; }
  for (; r < R; ++r) a += Wv[r] * lt[r];
  return (a + a1) + (a2 + a3);
}

template <typename T>
static void scan_fwd(const T* u, const T* dl, const T* At, const T* Bm, const T* Cm, const T* Lm, const T* Wt, int64_t R,
                     int64_t sBt, int64_t sBb,
                     const T* Dp, const T* z, const T* dbias, int softplus, T* y, T* hc, T alpha, int reverse, int acc, int64_t ldz,
                     int64_t Bs, int64_t D, int64_t L, int64_t N, int64_t chunk, int64_t S, int64_t i0, int64_t i1) {
  // Chunk-major, like the backward pass: for each chunk of `chunk` tokens, every channel vector of the slice in turn.
  // A token's channels are contiguous, so the chunk's rows stream through the cache; walking one channel vector along
  // the whole sequence instead would read one cache line per token, D floats apart, which no prefetcher follows.
  // Per channel vector, three passes: Δ of the chunk's tokens, the recurrence, the output. Only the recurrence carries
  // anything from one token to the next (h); the long dependency chains of Δ (the W_Δ sum, the softplus) and of the
  // gate belong to passes whose tokens are independent, so the CPU overlaps them instead of waiting on each in turn.
  typedef typename VT<T>::V V; constexpr int W = VT<T>::W;
  const int64_t K = (L + chunk - 1) / chunk, ds = slice_width(D, S, W), nvm = ds / W;
  const T log2e = (T)1.4426950408889634;     // exp(Δ A) = 2^(Δ · A log2 e): A is scaled once per channel vector
  std::vector<V> hv(nvm * N), Avv(N), Wvv(Wt ? R : 0), dtv(chunk), xv(chunk), yv(chunk);
  V* Av = Avv.data(); V* Wv = Wvv.data(); V* dts = dtv.data(); V* xs = xv.data(); V* ys = yv.data();
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t b = item / S, s = item % S, cs = s * ds, ce = std::min(D, (s + 1) * ds);
    std::fill(hv.begin(), hv.end(), V{});
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j0 = k * chunk, j1 = std::min(L, j0 + chunk);
      for (int64_t c0 = cs, v = 0; c0 < ce; c0 += W, ++v) {
        const int cnt = (int)std::min<int64_t>(W, D - c0);
        V* h = hv.data() + v * N;
        for (int64_t n = 0; n < N; ++n) Av[n] = ld<V>(At + n * D + c0, cnt) * log2e;
        for (int64_t r = 0; r < (Wt ? R : 0); ++r) Wv[r] = ld<V>(Wt + r * D + c0, cnt);
        const V Dv = Dp ? ld<V>(Dp + c0, cnt) : V{}, bv = dbias ? ld<V>(dbias + c0, cnt) : V{};
        T* hk = hc + (b * K + k) * N * D + c0; for (int64_t n = 0; n < N; ++n) st(hk + n * D, h[n], cnt);
        for (int64_t i = j0; i < j1; ++i) {                  // 1. Δ_t and Δ_t u_t
          const int64_t t = reverse ? L - 1 - i : i, o = (b * L + t) * D + c0;
          const V dr = raw_delta<T, V>(dl, Lm, Wv, R, bv, o, b * sBb + t * sBt, cnt), dt = softplus ? vsoftplus(dr) : dr;
          dts[i - j0] = dt; xs[i - j0] = dt * ld<V>(u + o, cnt);
          pf(u, o + W); pf(z, (b * L + t) * ldz + c0 + W); pf(y, o + W, 1);   // the next channel vector's lines of this token
        }
        for (int64_t i = j0; i < j1; ++i) {                  // 2. the recurrence
          const int64_t t = reverse ? L - 1 - i : i, j = i - j0;
          const T* Bt = Bm + b * sBb + t * sBt; const T* Ct = Cm + b * sBb + t * sBt;
          const V dt = dts[j], x = xs[j];
          auto state = [&](int64_t n, V& acc) {
            const V a = vexp2(dt * Av[n]);                   // exp(Δ_t A)
            h[n] = a * h[n] + x * Bt[n];                     // h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t
            acc += h[n] * Ct[n];                             // y_t = C_t · h_t
          };
          V a0{}, a1{}, a2{}, a3{};                          // four partial sums in registers: four short chains, not one long one
          int64_t n = 0;
          for (; n + 4 <= N; n += 4) { state(n, a0); state(n + 1, a1); state(n + 2, a2); state(n + 3, a3); }
          for (; n < N; ++n) state(n, a0);
          ys[j] = (a0 + a1) + (a2 + a3);
        }
        for (int64_t i = j0; i < j1; ++i) {                  // 3. + D u_t, · silu(z_t)
          const int64_t t = reverse ? L - 1 - i : i, o = (b * L + t) * D + c0;
          V out = ys[i - j0] + Dv * ld<V>(u + o, cnt);
          if (z) { const V zz = ld<V>(z + (b * L + t) * ldz + c0, cnt); out = out * zz * sigm(zz); }   // z, dz: rows ldz apart
          st(y + o, acc ? ld<V>(y + o, cnt) + out * alpha : out * alpha, cnt);   // acc: add to y (a second direction)
        }
      }
    }
  }
}

template <typename T>
static void scan_bwd(const T* u, const T* dl, const T* At, const T* Bm, const T* Cm, const T* Lm, const T* Wt, int64_t R,
                     int64_t sBt, int64_t sBb,
                     const T* Dp, const T* z, const T* dbias, int softplus, const T* hc, const T* dy, T alpha, int reverse, int acc, int64_t ldz,
                     T* du, T* ddl, T* dAp, T* dDp, T* dz, T* dBp, T* dCp, T* dbp, T* dLp, T* dWp,
                     int64_t Bs, int64_t D, int64_t L, int64_t N, int64_t chunk, int64_t S, int64_t i0, int64_t i1) {
  // Chunk-major: for each chunk of time (last first), every channel vector of the slice recomputes the chunk's states
  // and walks them backwards; the sums over channels (dB, dC, dxΔ) of the chunk stay in small L1-sized accumulators.
  // As in the forward pass, what does not carry from token to token (Δ, the gate, Δ's gradient) has passes of its own.
  typedef typename VT<T>::V V; constexpr int W = VT<T>::W;
  const int64_t K = (L + chunk - 1) / chunk, ds = slice_width(D, S, W);
  const int64_t RL = Wt ? R : 0;       // with W_Δ: gradients of the low-rank step (summed over channels) and of W_Δ
  const int64_t nvm = ds / W;
  const T log2e = (T)1.4426950408889634;
  std::vector<V> hsv((chunk + 1) * N), asv(chunk * N), drv(chunk), dtv(chunk), xv(chunk), ydv(chunk), ddtv(chunk), gBv(chunk),
                 Avv(N), A2vv(N), accBv(chunk * N), accCv(chunk * N), Wvv(RL),
                 accLv(chunk * RL), dhv(nvm * N), dAv(nvm * N), dWv(nvm * RL), dDv(nvm), dbv(nvm);
  V* hs = hsv.data(); V* as = asv.data(); V* drs = drv.data(); V* dts = dtv.data(); V* xs = xv.data(); V* yds = ydv.data();
  V* ddts = ddtv.data(); V* gBs = gBv.data(); V* Av = Avv.data(); V* A2v = A2vv.data(); V* accB = accBv.data(); V* accC = accCv.data();
  V* Wv = Wvv.data(); V* accL = accLv.data();
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t b = item / S, s = item % S, cs = s * ds, ce = std::min(D, (s + 1) * ds);
    std::fill(dhv.begin(), dhv.end(), V{}); std::fill(dAv.begin(), dAv.end(), V{}); std::fill(dWv.begin(), dWv.end(), V{});
    std::fill(dDv.begin(), dDv.end(), V{}); std::fill(dbv.begin(), dbv.end(), V{});
    T* dBb = dBp + (b * S + s) * L * N; T* dCb = dCp + (b * S + s) * L * N;
    T* dLb = dLp ? dLp + (b * S + s) * L * RL : nullptr;
    for (int64_t k = K - 1; k >= 0; --k) {
      const int64_t j0 = k * chunk, j1 = std::min(L, j0 + chunk);
      std::fill(accB, accB + chunk * N, V{}); std::fill(accC, accC + chunk * N, V{}); std::fill(accL, accL + chunk * RL, V{});
      for (int64_t c0 = cs, v = 0; c0 < ce; c0 += W, ++v) {
        const int cnt = (int)std::min<int64_t>(W, D - c0);
        V* dh = dhv.data() + v * N; V* dA = dAv.data() + v * N; V* dW = dWv.data() + v * RL;
        for (int64_t n = 0; n < N; ++n) { Av[n] = ld<V>(At + n * D + c0, cnt); A2v[n] = Av[n] * log2e; }
        for (int64_t r = 0; r < RL; ++r) Wv[r] = ld<V>(Wt + r * D + c0, cnt);
        const V Dv = Dp ? ld<V>(Dp + c0, cnt) : V{}, bv = dbias ? ld<V>(dbias + c0, cnt) : V{};
        V dD = dDv[v], db = dbv[v];
        const T* hk = hc + (b * K + k) * N * D + c0;
        for (int64_t n = 0; n < N; ++n) hs[n] = ld<V>(hk + n * D, cnt);
        for (int64_t i = j0; i < j1; ++i) {                  // Δ of the chunk's tokens, kept for the walk back
          const int64_t t = reverse ? L - 1 - i : i, o = (b * L + t) * D + c0, j = i - j0;
          const V dr = raw_delta<T, V>(dl, Lm, Wv, R, bv, o, b * sBb + t * sBt, cnt);
          V sg = bc<V>((T)1); const V dt = softplus ? vsoftplus(dr, sg) : dr;
          drs[j] = sg; dts[j] = dt; xs[j] = dt * ld<V>(u + o, cnt);     // drs: softplus' = σ (1 without softplus)
          const int64_t oz = (b * L + t) * ldz + c0;
          pf(u, o + W); pf(z, oz + W); pf(dy, o + W); pf(dz, oz + W, 1); pf(du, o + W, 1);
        }
        for (int64_t i = j0; i < j1; ++i) {                  // recompute the chunk's states: hs[j+1] = h_t
          const int64_t t = reverse ? L - 1 - i : i, j = i - j0;
          const T* Bt = Bm + b * sBb + t * sBt; const V dt = dts[j], x = xs[j];
          for (int64_t n = 0; n < N; ++n) {
            const V a = vexp2(dt * A2v[n]);
            as[j * N + n] = a; hs[(j + 1) * N + n] = a * hs[j * N + n] + x * Bt[n];
          }
        }
        for (int64_t i = j0; i < j1; ++i) {                  // the gate: dz, and ẏ = dL/d(scan + D u)
          const int64_t t = reverse ? L - 1 - i : i, o = (b * L + t) * D + c0, j = i - j0;
          const V uu = ld<V>(u + o, cnt), dyv = ld<V>(dy + o, cnt) * alpha;
          const T* Ct = Cm + b * sBb + t * sBt; const V* ht = hs + (j + 1) * N;
          V yd = dyv;
          if (z) {
            const int64_t oz = (b * L + t) * ldz + c0;
            const V zz = ld<V>(z + oz, cnt), sg = sigm(zz);
            V s0{}, s1{}; int64_t n = 0;
            for (; n + 2 <= N; n += 2) { s0 += ht[n] * Ct[n]; s1 += ht[n + 1] * Ct[n + 1]; }
            if (n < N) s0 += ht[n] * Ct[n];
            const V g = dyv * (s0 + s1 + Dv * uu) * sg * (1 + zz * (1 - sg));        // silu'(z) = σ(z)(1 + z(1 - σ(z)))
            st(dz + oz, acc ? ld<V>(dz + oz, cnt) + g : g, cnt);                         // acc: add to dz
            yd = dyv * zz * sg;
          }
          yds[j] = yd; dD += yd * uu;
        }
        for (int64_t i = j1 - 1; i >= j0; --i) {             // and walk the states backwards
          const int64_t t = reverse ? L - 1 - i : i, j = i - j0;
          const V dt = dts[j], x = xs[j], yd = yds[j];
          const T* Bt = Bm + b * sBb + t * sBt; const T* Ct = Cm + b * sBb + t * sBt;
          const V* ht = hs + (j + 1) * N; const V* hp = hs + j * N; const V* at = as + j * N;
          V* aB = accB + j * N; V* aC = accC + j * N;
          auto state = [&](int64_t n, V& ddt, V& gB) {
            const V g = dh[n] + yd * Ct[n];                  // g_t = C_t ẏ_t + a_{t+1} g_{t+1}
            const V ga = g * at[n], gah = ga * hp[n];        // g_t a_t h_{t-1}
            aC[n] += yd * ht[n];
            ddt += gah * Av[n];
            dA[n] += gah * dt;
            aB[n] += g * x;
            gB += g * Bt[n];
            dh[n] = ga;
          };
          V d0{}, d1{}, g0{}, g1{}; int64_t n = 0;           // partial sums in registers, two chains each
          for (; n + 2 <= N; n += 2) { state(n, d0, g0); state(n + 1, d1, g1); }
          if (n < N) state(n, d0, g0);
          ddts[j] = d0 + d1; gBs[j] = g0 + g1;
        }
        for (int64_t i = j0; i < j1; ++i) {                  // Δ's gradient, through the softplus and W_Δ; du
          const int64_t t = reverse ? L - 1 - i : i, o = (b * L + t) * D + c0, j = i - j0;
          const V uu = ld<V>(u + o, cnt), gB = gBs[j];
          const V gdr = (ddts[j] + gB * uu) * drs[j];
          db += gdr;
          if (Wt) {                                          // Δ = W_Δ xΔ_t: dxΔ_t += W_Δᵀ gdr (dW_Δ below)
            V* aL = accL + j * RL; ddts[j] = gdr;          // ddts[j] is spent: it keeps gdr for the dW_Δ sum
            for (int64_t r = 0; r < RL; ++r) aL[r] += gdr * Wv[r];
          } else st(ddl + o, gdr, cnt);
          st(du + o, gB * dts[j] + yds[j] * Dv, cnt);
        }
        for (int64_t r = 0; r < RL; ++r) {                   // dW_Δ += Σ_t gdr_t xΔ_t over the chunk, in registers
          V s0{}, s1{}; int64_t i = j0;
          for (; i + 2 <= j1; i += 2) {
            const int64_t t0 = reverse ? L - 1 - i : i, t1 = reverse ? L - 2 - i : i + 1;
            s0 += ddts[i - j0] * Lm[b * sBb + t0 * sBt + r]; s1 += ddts[i + 1 - j0] * Lm[b * sBb + t1 * sBt + r];
          }
          if (i < j1) s0 += ddts[i - j0] * Lm[b * sBb + (reverse ? L - 1 - i : i) * sBt + r];
          dW[r] += s0 + s1;
        }
        dDv[v] = dD; dbv[v] = db;
      }
      for (int64_t j = 0; j < j1 - j0; ++j) {              // this chunk's sums over the slice's channels
        const int64_t t = reverse ? L - 1 - (j0 + j) : j0 + j;
        for (int64_t n = 0; n < N; ++n) { dBb[t * N + n] = hsum<T>(accB[j * N + n]); dCb[t * N + n] = hsum<T>(accC[j * N + n]); }
        for (int64_t r = 0; r < RL; ++r) dLb[t * RL + r] = hsum<T>(accL[j * RL + r]);
      }
    }
    for (int64_t c0 = cs, v = 0; c0 < ce; c0 += W, ++v) {
      const int cnt = (int)std::min<int64_t>(W, D - c0);
      for (int64_t n = 0; n < N; ++n) st(dAp + (b * N + n) * D + c0, dAv[v * N + n], cnt);
      st(dDp + b * D + c0, dDv[v], cnt); st(dbp + b * D + c0, dbv[v], cnt);
      for (int64_t r = 0; r < RL; ++r) st(dWp + (b * RL + r) * D + c0, dWv[v * RL + r], cnt);
    }
  }
}

// out[t] = silu(bias + sum_k w[k] x[t - (Kc-1) + k]) in reading order (causal; anti-causal when reverse).
// Time outside, channels inside: every step reads and writes whole contiguous rows of the (batch, L, D) tensors.
template <typename T>
static void conv_fwd(const T* x, const T* w, const T* bias, T* out, int reverse, int64_t ldx,
                     int64_t Bs, int64_t D, int64_t L, int64_t Kc, int64_t S, int64_t i0, int64_t i1) {
  typedef typename VT<T>::V V; constexpr int W = VT<T>::W;
  const int64_t ds = slice_width(D, S, W);
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t b = item / S, s = item % S, ce = std::min(D, (s + 1) * ds);
    auto row = [&](int64_t i) { return x + (b * L + (reverse ? L - 1 - i : i)) * ldx; };   // x's rows are ldx apart
    for (int64_t i = 0; i < L; ++i) {
      T* o = out + (b * L + (reverse ? L - 1 - i : i)) * D;
      for (int64_t c0 = s * ds; c0 < ce; c0 += W) {
        const int cnt = (int)std::min<int64_t>(W, D - c0);
        V pre = ld<V>(bias + c0, cnt);
        for (int64_t k = std::max<int64_t>(0, Kc - 1 - i); k < Kc; ++k)
          pre += ld<V>(w + k * D + c0, cnt) * ld<V>(row(i - (Kc - 1) + k) + c0, cnt);
        st(o + c0, pre * sigm(pre), cnt);
      }
    }
  }
}

template <typename T>
static void conv_bwd(const T* x, const T* w, const T* bias, const T* dout, int reverse, int acc, int64_t ldx, T* dx, T* dwp, T* dbp,
                     int64_t Bs, int64_t D, int64_t L, int64_t Kc, int64_t S, int64_t i0, int64_t i1) {
  // dwp: (Bs, Kc, D), dbp: (Bs, D) per-row partial sums. Gather form: step i forms g_i, the gradient at the conv's
  // output, keeps it in a ring of the last Kc steps, and finishes dx of step m = i - (Kc-1), dx_m = Σ_k w[k] g_{m+Kc-1-k}
  // (steps past the end count as 0): every dx row is written once and never read back.
  typedef typename VT<T>::V V; constexpr int W = VT<T>::W;
  const int64_t ds = slice_width(D, S, W);
  std::vector<V> dwv, dbv, ring;
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t b = item / S, s = item % S, cs = s * ds, ce = std::min(D, (s + 1) * ds), nv = ce > cs ? (ce - cs + W - 1) / W : 0;
    dwv.assign(Kc * nv, V{}); dbv.assign(nv, V{}); ring.assign(Kc * nv, V{});
    auto off = [&](int64_t i) { return (b * L + (reverse ? L - 1 - i : i)) * D; };
    auto offx = [&](int64_t i) { return (b * L + (reverse ? L - 1 - i : i)) * ldx; };   // x's and dx's rows are ldx apart
    for (int64_t i = 0; i < L + Kc - 1; ++i) {
      V* gi = ring.data() + (i % Kc) * nv;
      const int64_t m = i - (Kc - 1), k0 = std::max<int64_t>(0, Kc - 1 - i);
      for (int64_t c0 = cs, v = 0; c0 < ce; c0 += W, ++v) {
        const int cnt = (int)std::min<int64_t>(W, D - c0);
        if (i < L) {
          V pre = ld<V>(bias + c0, cnt);
          for (int64_t k = k0; k < Kc; ++k) pre += ld<V>(w + k * D + c0, cnt) * ld<V>(x + offx(i - (Kc - 1) + k) + c0, cnt);
          const V sg = sigm(pre), g = ld<V>(dout + off(i) + c0, cnt) * sg * (1 + pre * (1 - sg));
          dbv[v] += g;
          for (int64_t k = k0; k < Kc; ++k) dwv[k * nv + v] += g * ld<V>(x + offx(i - (Kc - 1) + k) + c0, cnt);
          gi[v] = g;
        } else gi[v] = V{};
        if (m >= 0) {
          V sum{};
          for (int64_t k = 0; k < Kc; ++k) sum += ld<V>(w + k * D + c0, cnt) * ring[((i - k) % Kc) * nv + v];
          T* p = dx + offx(m) + c0;
          st(p, acc ? ld<V>(p, cnt) + sum : sum, cnt);   // acc: add to dx (a second direction)
        }
      }
    }
    for (int64_t c0 = cs, v = 0; c0 < ce; c0 += W, ++v) {
      const int cnt = (int)std::min<int64_t>(W, D - c0);
      for (int64_t k = 0; k < Kc; ++k) st(dwp + (b * Kc + k) * D + c0, dwv[k * nv + v], cnt);
      st(dbp + b * D + c0, dbv[v], cnt);
    }
  }
}

// RMSNorm over rows of D: y = x r w with r = 1/sqrt(mean(x²) + eps) (kept per row for the backward pass), and its
// backward pass in one sweep per row: g = gy w, s = mean(g x r), gx = (g - x r s) r, and dL/dw = Σ_rows gy x r summed
// into gwp, one row of partial sums per work item. A work item is a block of rows: rows [k R / K, (k+1) R / K) of K.
template <typename T>
static void rms_fwd(const T* x, const T* w, T eps, T* y, T* rstd, int64_t D, int64_t R, int64_t K, int64_t i0, int64_t i1) {
  typedef typename VT<T>::V V; constexpr int W = VT<T>::W;
  for (int64_t k = i0; k < i1; ++k)
    for (int64_t row = k * R / K; row < (k + 1) * R / K; ++row) {
      const T* xr = x + row * D; T* yr = y + row * D; V a0{}, a1{};
      int64_t c = 0;
      for (; c + 2 * W <= D; c += 2 * W) { const V u = ld<V>(xr + c, W), v = ld<V>(xr + c + W, W); a0 += u * u; a1 += v * v; }
      for (; c < D; c += W) { const V u = ld<V>(xr + c, (int)std::min<int64_t>(W, D - c)); a0 += u * u; }
      const T r = 1 / std::sqrt(hsum<T>(a0 + a1) / D + eps);
      rstd[row] = r;
      for (c = 0; c < D; c += W) { const int cnt = (int)std::min<int64_t>(W, D - c); st(yr + c, ld<V>(xr + c, cnt) * r * ld<V>(w + c, cnt), cnt); }
    }
}

template <typename T>
static void rms_bwd(const T* x, const T* w, const T* rstd, const T* gy, T* gx, T* gwp, int64_t D, int64_t R, int64_t K,
                    int64_t i0, int64_t i1) {
  typedef typename VT<T>::V V; constexpr int W = VT<T>::W;
  const int64_t nv = (D + W - 1) / W;
  std::vector<V> gw(nv);
  for (int64_t k = i0; k < i1; ++k) {
    std::fill(gw.begin(), gw.end(), V{});
    for (int64_t row = k * R / K; row < (k + 1) * R / K; ++row) {
      const T* xr = x + row * D; const T* gr = gy + row * D; T* out = gx + row * D; const T r = rstd[row];
      V a{};
      for (int64_t c = 0, v = 0; c < D; c += W, ++v) {
        const int cnt = (int)std::min<int64_t>(W, D - c);
        const V xh = ld<V>(xr + c, cnt) * r, g = ld<V>(gr + c, cnt);
        a += g * ld<V>(w + c, cnt) * xh; gw[v] += g * xh;
      }
      const T sm = hsum<T>(a) / D;
      for (int64_t c = 0; c < D; c += W) {
        const int cnt = (int)std::min<int64_t>(W, D - c);
        st(out + c, (ld<V>(gr + c, cnt) * ld<V>(w + c, cnt) - ld<V>(xr + c, cnt) * (r * sm)) * r, cnt);
      }
    }
    for (int64_t c = 0, v = 0; c < D; c += W, ++v) st(gwp + k * D + c, gw[v], (int)std::min<int64_t>(W, D - c));
  }
}

template <typename F> static void run(int64_t nt, int64_t i0, int64_t i1, F f) {
#ifdef _OPENMP
  if (nt > 1) {
#pragma omp parallel num_threads((int)nt)
    { const int64_t id = omp_get_thread_num(), m = omp_get_num_threads();
      f(i0 + (i1 - i0) * id / m, i0 + (i1 - i0) * (id + 1) / m); }
    return;
  }
#endif
  f(i0, i1);
}

extern "C" int pahcl_vector_width() { return PAHCL_VBYTES / 4; }   // float lanes per vector

extern "C" int pahcl_openmp() {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}

#define PAHCL_EXPORT(T, S_)                                                                                    \
extern "C" void ssm_fwd_##S_(const T* u, const T* dl, const T* At, const T* Bm, const T* Cm, const T* Lm,     \
    const T* Wt, int64_t R, int64_t sBt, int64_t sBb, const T* Dp, const T* z, const T* dbias, int64_t softplus, T* y, T* hc, double alpha,          \
    int64_t reverse, int64_t acc, int64_t ldz, int64_t Bs, int64_t D,                                                                    \
    int64_t L, int64_t N, int64_t chunk, int64_t S, int64_t nt, int64_t i0, int64_t i1) {                      \
  run(nt, i0, i1, [&](int64_t a, int64_t e) { scan_fwd<T>(u, dl, At, Bm, Cm, Lm, Wt, R, sBt, sBb, Dp, z, dbias, (int)softplus, y, hc, (T)alpha, \
      (int)reverse, (int)acc, ldz, Bs, D, L, N, chunk, S, a, e); }); }                                                       \
extern "C" void ssm_bwd_##S_(const T* u, const T* dl, const T* At, const T* Bm, const T* Cm, const T* Lm,     \
    const T* Wt, int64_t R, int64_t sBt, int64_t sBb, const T* Dp, const T* z, const T* dbias, int64_t softplus, const T* hc, const T* dy,          \
    double alpha, int64_t reverse, int64_t acc, int64_t ldz, T* du, T* ddl, T* dAp, T* dDp, T* dz, T* dBp, T* dCp, T* dbp, T* dLp, T* dWp, \
    int64_t Bs, int64_t D, int64_t L, int64_t N, int64_t chunk, int64_t S, int64_t nt, int64_t i0, int64_t i1) { \
  run(nt, i0, i1, [&](int64_t a, int64_t e) { scan_bwd<T>(u, dl, At, Bm, Cm, Lm, Wt, R, sBt, sBb, Dp, z, dbias, (int)softplus, hc, dy, \
      (T)alpha, (int)reverse, (int)acc, ldz, du, ddl, dAp, dDp, dz, dBp, dCp, dbp, dLp, dWp, Bs, D, L, N, chunk, S, a, e); }); }                      \
extern "C" void conv_fwd_##S_(const T* x, const T* w, const T* bias, T* out, int64_t reverse, int64_t ldx,                  \
    int64_t Bs, int64_t D, int64_t L, int64_t Kc, int64_t S, int64_t nt, int64_t i0, int64_t i1) {             \
  run(nt, i0, i1, [&](int64_t a, int64_t e) { conv_fwd<T>(x, w, bias, out, (int)reverse, ldx, Bs, D, L, Kc, S, a, e); }); } \
extern "C" void conv_bwd_##S_(const T* x, const T* w, const T* bias, const T* dout, int64_t reverse, int64_t acc, int64_t ldx, T* dx,    \
    T* dwp, T* dbp, int64_t Bs, int64_t D, int64_t L, int64_t Kc, int64_t S, int64_t nt, int64_t i0, int64_t i1) { \
  run(nt, i0, i1, [&](int64_t a, int64_t e) { conv_bwd<T>(x, w, bias, dout, (int)reverse, (int)acc, ldx, dx, dwp, dbp, Bs, D, L, Kc, S, a, e); }); }
#define PAHCL_EXPORT_RMS(T, S_)                                                                                \
extern "C" void rms_fwd_##S_(const T* x, const T* w, double eps, T* y, T* rstd, int64_t D, int64_t R, int64_t K,   \
    int64_t nt, int64_t i0, int64_t i1) {                                                                          \
  run(nt, i0, i1, [&](int64_t a, int64_t e) { rms_fwd<T>(x, w, (T)eps, y, rstd, D, R, K, a, e); }); }            \
extern "C" void rms_bwd_##S_(const T* x, const T* w, const T* rstd, const T* gy, T* gx, T* gwp, int64_t D, int64_t R, \
    int64_t K, int64_t nt, int64_t i0, int64_t i1) {                                                               \
  run(nt, i0, i1, [&](int64_t a, int64_t e) { rms_bwd<T>(x, w, rstd, gy, gx, gwp, D, R, K, a, e); }); }
PAHCL_EXPORT_RMS(float, f32)
PAHCL_EXPORT_RMS(double, f64)
PAHCL_EXPORT(float, f32)
PAHCL_EXPORT(double, f64)
