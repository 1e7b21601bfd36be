// Fused Mamba-1 selective scan for CPU (forward and hand-written backward).
//
// Layout of the work: a task is (batch b, block of G groups of kLanes channels). The state of a
// task, h[G][N][kLanes], stays in L1 while the task walks over time, so the only traffic to
// memory is reading the inputs and writing the outputs once. Channels are the vector lanes
// (16 floats = one AVX-512 register): every state update is a plain lane-wise loop the compiler
// vectorises, and y_t = sum_n h[n] * C_t[n] needs no horizontal reduction. Inputs are read in
// time chunks into small transposed tiles ([t][lane]), which also lets us accept any strides
// (e.g. the [batch, length, dim] memory of the Mamba block viewed as [batch, dim, length]).
//
// The backward walks the chunks in reverse. The forward saves the state at every chunk start
// (kChunk steps apart); the backward recomputes the chunk from it, keeping exp(delta*A) and the
// states in an L2-sized buffer, so each exponential is computed twice in total (forward, recompute)
// and memory is O(B * D * N * L / kChunk) instead of O(B * D * N * L).
#include <torch/extension.h>

#include <ATen/Parallel.h>

// The vector path is chosen when this file is compiled (-march=native: the CPU building it is
// the CPU running it): AVX-512, else AVX2 + FMA, else generic loops (ARM's NEON gets these, as
// auto-vectorised code). HYMATE_SCAN_ISA_LEVEL caps it (2: AVX-512, 1: AVX2, 0: generic), so
// every path this CPU can run can be built and tested against the others.
#ifndef HYMATE_SCAN_ISA_LEVEL
#define HYMATE_SCAN_ISA_LEVEL 2
#endif
#if HYMATE_SCAN_ISA_LEVEL >= 2 && !defined(__AVX512F__)
#error "HYMATE_SCAN_ISA_LEVEL 2 (AVX-512) asked for, but the compiler targets no AVX-512"
#elif HYMATE_SCAN_ISA_LEVEL == 1 && !(defined(__AVX2__) && defined(__FMA__))
#error "HYMATE_SCAN_ISA_LEVEL 1 (AVX2 + FMA) asked for, but the compiler targets no AVX2 + FMA"
#endif
#if defined(__AVX512F__) && HYMATE_SCAN_ISA_LEVEL >= 2
#define HYMATE_SCAN_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && HYMATE_SCAN_ISA_LEVEL >= 1
#define HYMATE_SCAN_AVX2 1
#endif
#if defined(HYMATE_SCAN_AVX512) || defined(HYMATE_SCAN_AVX2)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

constexpr int64_t kLanes = 16;  // channels per vector: 16 floats = one AVX-512 register
constexpr int64_t kChunk = 64;  // checkpoint interval (time steps) for the backward

// ---- Lane vectors ---------------------------------------------------------------------------
// Vec<T> holds kLanes channels. The generic version is plain loops the compiler may vectorise;
// Vec<float> on AVX-512 uses intrinsics, because GCC's auto-vectorised exp left the scan at
// ~3x the exp-bound floor (masked blends around every op).

// exp(r) on [-ln2/2, ln2/2] as 1 + r + c2 r^2 + ... + c6 r^6, a near-minimax fit of the
// relative error (7e-8 when evaluated in float); coefficients c6 down to c2. Degree 5 was
// measured no faster and 2x less accurate.
constexpr int kExpDegree = 6;
constexpr float kExpPoly[kExpDegree - 1] = {1.3752736581965474e-3f, 8.368915291987744e-3f,
                                            4.166950973331901e-2f, 1.6666518480772768e-1f,
                                            4.999998869042204e-1f};
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;  // ln 2 = kLn2Hi + kLn2Lo; kLn2Hi * k is exact
constexpr float kLn2Lo = -2.12194440e-4f;

template <typename T>
struct Vec {
  T v[kLanes];
  static Vec load(const T* p) {
    Vec r;
    for (int64_t k = 0; k < kLanes; ++k) r.v[k] = p[k];
    return r;
  }
  static Vec all(T x) {
    Vec r;
    for (int64_t k = 0; k < kLanes; ++k) r.v[k] = x;
    return r;
  }
  void store(T* p) const {
    for (int64_t k = 0; k < kLanes; ++k) p[k] = v[k];
  }
};

template <typename T, typename F>
inline Vec<T> map2(const Vec<T>& a, const Vec<T>& b, F f) {
  Vec<T> r;
  for (int64_t k = 0; k < kLanes; ++k) r.v[k] = f(a.v[k], b.v[k]);
  return r;
}
template <typename T>
inline Vec<T> operator+(const Vec<T>& a, const Vec<T>& b) {
  return map2(a, b, [](T x, T y) { return x + y; });
}
template <typename T>
inline Vec<T> operator-(const Vec<T>& a, const Vec<T>& b) {
  return map2(a, b, [](T x, T y) { return x - y; });
}
template <typename T>
inline Vec<T> operator*(const Vec<T>& a, const Vec<T>& b) {
  return map2(a, b, [](T x, T y) { return x * y; });
}
template <typename T>
inline Vec<T> reciprocal(const Vec<T>& a) {
  return map2(a, a, [](T x, T) { return T(1) / x; });
}
template <typename T>
inline Vec<T> fma(const Vec<T>& a, const Vec<T>& b, const Vec<T>& c) {
  return a * b + c;
}
template <typename T>
inline Vec<T> vmax(const Vec<T>& a, const Vec<T>& b) {
  return map2(a, b, [](T x, T y) { return x > y ? x : y; });
}
template <typename T>
inline Vec<T> vabs(const Vec<T>& a) {
  return map2(a, a, [](T x, T) { return std::abs(x); });
}
// x >= 0 ? a : b, lane-wise.
template <typename T>
inline Vec<T> select_nonneg(const Vec<T>& x, const Vec<T>& a, const Vec<T>& b) {
  Vec<T> r;
  for (int64_t k = 0; k < kLanes; ++k) r.v[k] = x.v[k] >= T(0) ? a.v[k] : b.v[k];
  return r;
}
template <typename T>
inline T hsum(const Vec<T>& a) {
  T s = T(0);
  for (int64_t k = 0; k < kLanes; ++k) s += a.v[k];
  return s;
}
// dst[j * ds + i] = src[i * ss + j] for i, j < kLanes: between [lane][time] rows of the tensors
// and [time][lane] tiles.
template <typename T>
inline void transpose_block(const T* src, int64_t ss, T* dst, int64_t ds) {
  for (int64_t i = 0; i < kLanes; ++i) {
    for (int64_t j = 0; j < kLanes; ++j) dst[j * ds + i] = src[i * ss + j];
  }
}
// double is for gradcheck: accuracy over speed.
inline Vec<double> vexp(const Vec<double>& a) {
  return map2(a, a, [](double x, double) { return std::exp(x); });
}
inline Vec<double> log1p_unit(const Vec<double>& a) {
  return map2(a, a, [](double x, double) { return std::log1p(x); });
}

#if defined(HYMATE_SCAN_AVX512)
constexpr const char* kIsa = "avx512";
template <>
struct Vec<float> {
  __m512 v;
  static Vec load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static Vec all(float x) { return {_mm512_set1_ps(x)}; }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
};
inline Vec<float> operator+(Vec<float> a, Vec<float> b) { return {_mm512_add_ps(a.v, b.v)}; }
inline Vec<float> operator-(Vec<float> a, Vec<float> b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline Vec<float> operator*(Vec<float> a, Vec<float> b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline Vec<float> fma(Vec<float> a, Vec<float> b, Vec<float> c) {
  return {_mm512_fmadd_ps(a.v, b.v, c.v)};
}
// 14-bit estimate plus one Newton step (~1 ulp): a division costs ~4x more, and the softplus and
// sigmoids need one per time step and channel.
inline Vec<float> reciprocal(Vec<float> a) {
  const __m512 r = _mm512_rcp14_ps(a.v);
  return {_mm512_fmadd_ps(r, _mm512_fnmadd_ps(a.v, r, _mm512_set1_ps(1.0f)), r)};
}
// max(a, b) with a NaN in `a` kept (x86 max returns its second operand when either is NaN): a
// NaN delta must come out NaN, as in the reference, not become softplus(0)-like finite values.
inline Vec<float> vmax(Vec<float> a, Vec<float> b) { return {_mm512_max_ps(b.v, a.v)}; }
inline Vec<float> vabs(Vec<float> a) { return {_mm512_abs_ps(a.v)}; }
inline float hsum(Vec<float> a) { return _mm512_reduce_add_ps(a.v); }
inline Vec<float> select_nonneg(Vec<float> x, Vec<float> a, Vec<float> b) {
  return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(x.v, _mm512_setzero_ps(), _CMP_GE_OQ), b.v, a.v)};
}

// 16x16 transpose in registers: interleave pairs, then quads, then 128-bit lanes twice.
inline void transpose_block(const float* src, int64_t ss, float* dst, int64_t ds) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ss);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ds, r[i]);
}

inline Vec<float> vexp(Vec<float> a) {
  // Clamp so that k stays finite; scalef then under/overflows to exactly 0 / inf.
  // Constants first: x86 min / max return the second operand for a NaN, which must pass.
  const __m512 x = _mm512_min_ps(_mm512_set1_ps(89.0f),
                                 _mm512_max_ps(_mm512_set1_ps(-104.0f), a.v));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kExpPoly[0]);
  for (int i = 1; i < kExpDegree - 1; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[i]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return {_mm512_scalef_ps(p, k)};  // p * 2^k
}
#elif defined(HYMATE_SCAN_AVX2)
constexpr const char* kIsa = "avx2";
// Two 8-float registers per 16-channel group: kLanes (and so the tiles, checkpoints and task
// layout) stays the same on every ISA.
template <>
struct Vec<float> {
  __m256 lo, hi;
  static Vec load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static Vec all(float x) { return {_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
  void store(float* p) const {
    _mm256_storeu_ps(p, lo);
    _mm256_storeu_ps(p + 8, hi);
  }
};
inline Vec<float> operator+(Vec<float> a, Vec<float> b) {
  return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)};
}
inline Vec<float> operator-(Vec<float> a, Vec<float> b) {
  return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)};
}
inline Vec<float> operator*(Vec<float> a, Vec<float> b) {
  return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)};
}
inline Vec<float> fma(Vec<float> a, Vec<float> b, Vec<float> c) {
  return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
// 12-bit estimate plus one Newton step (~2e-7 relative): as on AVX-512, a division costs more.
inline __m256 reciprocal8(__m256 a) {
  const __m256 r = _mm256_rcp_ps(a);
  return _mm256_fmadd_ps(r, _mm256_fnmadd_ps(a, r, _mm256_set1_ps(1.0f)), r);
}
inline Vec<float> reciprocal(Vec<float> a) { return {reciprocal8(a.lo), reciprocal8(a.hi)}; }
// NaN in `a` kept, as on AVX-512.
inline Vec<float> vmax(Vec<float> a, Vec<float> b) {
  return {_mm256_max_ps(b.lo, a.lo), _mm256_max_ps(b.hi, a.hi)};
}
inline Vec<float> vabs(Vec<float> a) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  return {_mm256_andnot_ps(sign, a.lo), _mm256_andnot_ps(sign, a.hi)};
}
inline float hsum(Vec<float> a) {
  const __m256 s8 = _mm256_add_ps(a.lo, a.hi);
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
  return _mm_cvtss_f32(s4);
}
inline Vec<float> select_nonneg(Vec<float> x, Vec<float> a, Vec<float> b) {
  const __m256 zero = _mm256_setzero_ps();
  return {_mm256_blendv_ps(b.lo, a.lo, _mm256_cmp_ps(x.lo, zero, _CMP_GE_OQ)),
          _mm256_blendv_ps(b.hi, a.hi, _mm256_cmp_ps(x.hi, zero, _CMP_GE_OQ))};
}

// 8x8 transpose in registers: interleave pairs, then quads, then swap 128-bit halves.
inline void transpose8(const float* src, int64_t ss, float* dst, int64_t ds) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ss);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ds, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ds, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}
// 16x16 as four 8x8 blocks.
inline void transpose_block(const float* src, int64_t ss, float* dst, int64_t ds) {
  for (int64_t i = 0; i < kLanes; i += 8) {
    for (int64_t j = 0; j < kLanes; j += 8) transpose8(src + i * ss + j, ss, dst + j * ds + i, ds);
  }
}

inline __m256 exp8(__m256 a) {
  // The AVX-512 path's reduction and polynomial. Without scalef, 2^k is built in the exponent
  // bits; the clamp keeps k in [-127, 127], and k = -127 gives exactly 0, so exp(x) is 0 below
  // ~-87.7 (AVX-512 keeps denormals to ~-103) and 1.65e38 above 88 (inf there); the scan only
  // takes exp of delta * A <= 0.
  const __m256 x = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-88.0f), a));  // NaN passes
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kExpPoly[0]);
  for (int i = 1; i < kExpDegree - 1; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpPoly[i]));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}
inline Vec<float> vexp(Vec<float> a) { return {exp8(a.lo), exp8(a.hi)}; }
#else
constexpr const char* kIsa = "generic";
// GCC / Clang vector extensions: 16 lanes whose every operation is a SIMD operation of the target
// (four NEON registers on ARM, two on AVX2, four SSE). The compiler lowers them; the plain-loop
// Vec<T> above was only partly vectorised (its exp stayed a scalar loop: ~8x slower than AVX2).
typedef float F16 __attribute__((vector_size(64)));
typedef int32_t I16 __attribute__((vector_size(64)));
template <>
struct Vec<float> {
  F16 v;
  static Vec load(const float* p) {
    Vec r;
    std::memcpy(&r.v, p, sizeof(F16));
    return r;
  }
  static Vec all(float x) { return {x - F16{}}; }  // x - 0 folds to a broadcast; 0 + x does not (-0)
  void store(float* p) const { std::memcpy(p, &v, sizeof(F16)); }
};
inline Vec<float> operator+(Vec<float> a, Vec<float> b) { return {a.v + b.v}; }
inline Vec<float> operator-(Vec<float> a, Vec<float> b) { return {a.v - b.v}; }
inline Vec<float> operator*(Vec<float> a, Vec<float> b) { return {a.v * b.v}; }
inline Vec<float> fma(Vec<float> a, Vec<float> b, Vec<float> c) { return {a.v * b.v + c.v}; }
inline Vec<float> reciprocal(Vec<float> a) { return {1.0f / a.v}; }
// Lane-wise `a > b ? x : y` and `a >= b ? x : y`. Clang compiles the vector ?: to compares and
// blends; GCC (12) turns compares of vectors wider than the hardware's into scalar code, but keeps
// 16-byte ones vector, so for GCC the select runs on four 16-byte pieces.
#if defined(__clang__)
inline F16 select_gt(F16 a, F16 b, F16 x, F16 y) { return a > b ? x : y; }
inline F16 select_ge(F16 a, F16 b, F16 x, F16 y) { return a >= b ? x : y; }
#else
typedef float F4 __attribute__((vector_size(16)));
template <typename Op>
inline F16 select_by4(F16 a, F16 b, F16 x, F16 y, Op op) {
  F4 pa[4], pb[4], px[4], py[4], r[4];
  std::memcpy(pa, &a, sizeof(F16));
  std::memcpy(pb, &b, sizeof(F16));
  std::memcpy(px, &x, sizeof(F16));
  std::memcpy(py, &y, sizeof(F16));
  for (int i = 0; i < 4; ++i) r[i] = op(pa[i], pb[i]) ? px[i] : py[i];
  F16 out;
  std::memcpy(&out, r, sizeof(F16));
  return out;
}
inline F16 select_gt(F16 a, F16 b, F16 x, F16 y) {
  return select_by4(a, b, x, y, [](F4 p, F4 q) { return p > q; });
}
inline F16 select_ge(F16 a, F16 b, F16 x, F16 y) {
  return select_by4(a, b, x, y, [](F4 p, F4 q) { return p >= q; });
}
#endif
inline Vec<float> vmax(Vec<float> a, Vec<float> b) { return {select_gt(b.v, a.v, b.v, a.v)}; }  // NaN in a kept
inline Vec<float> vabs(Vec<float> a) { return {(F16)((I16)a.v & 0x7fffffff)}; }
inline float hsum(Vec<float> a) {
  float s = 0.0f;
  for (int64_t k = 0; k < kLanes; ++k) s += a.v[k];
  return s;
}
inline Vec<float> select_nonneg(Vec<float> x, Vec<float> a, Vec<float> b) {
  return {select_ge(x.v, F16{}, a.v, b.v)};
}
inline Vec<float> vexp(Vec<float> a) {
  // Same reduction and polynomial as the AVX-512 path; 2^k is built in the exponent bits (k =
  // -127 gives exactly 0), rounding by the 1.5 * 2^23 trick.
  const F16 lo = -88.0f - F16{}, hi = 88.0f - F16{};
  F16 x = select_gt(lo, a.v, lo, a.v);
  x = select_gt(x, hi, hi, x);
  const F16 k = (x * kLog2e + 12582912.0f) - 12582912.0f;
  const F16 r = (x - k * kLn2Hi) - k * kLn2Lo;
  F16 p = kExpPoly[0] - F16{};
  for (int i = 1; i < kExpDegree - 1; ++i) p = p * r + kExpPoly[i];
  p = (p * r + 1.0f) * r + 1.0f;
  const I16 bits = (__builtin_convertvector(k, I16) + 127) << 23;
  return {p * (F16)bits};
}
#endif

// log1p(e) for e in [0, 1] via 2 atanh(s), s = e / (2 + e) <= 1/3: the odd series converges fast.
inline Vec<float> log1p_unit(const Vec<float>& e) {
  using V = Vec<float>;
  const V s = e * reciprocal(V::all(2.0f) + e);
  const V s2 = s * s;
  V p = V::all(1.0f / 15.0f);
  for (float c : {13.0f, 11.0f, 9.0f, 7.0f, 5.0f, 3.0f, 1.0f}) p = fma(p, s2, V::all(1.0f / c));
  return V::all(2.0f) * s * p;
}

template <typename T>
inline Vec<T> softplus(const Vec<T>& x) {
  using V = Vec<T>;
  return vmax(x, V::all(T(0))) + log1p_unit(vexp(V::all(T(0)) - vabs(x)));
}
// softplus(x) and, in *sig, its derivative sigmoid(x), from one exponential e = exp(-|x|):
// sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) below.
template <typename T>
inline Vec<T> softplus_sigmoid(const Vec<T>& x, Vec<T>* sig) {
  using V = Vec<T>;
  const V e = vexp(V::all(T(0)) - vabs(x));
  const V r = reciprocal(V::all(T(1)) + e);
  *sig = select_nonneg(x, r, e * r);
  return vmax(x, V::all(T(0))) + log1p_unit(e);
}
template <typename T>
inline Vec<T> sigmoid(const Vec<T>& x) {
  using V = Vec<T>;
  // Clamped so that 1 + exp(-x) stays finite for the reciprocal (sigmoid(-80) ~ 2e-35).
  return reciprocal(V::all(T(1)) + vexp(V::all(T(0)) - vmax(x, V::all(T(-80)))));
}

// A strided 3-d view: element (i, j, t) of the tensor at data[i*s0 + j*s1 + t*s2].
template <typename T>
struct View3 {
  T* data = nullptr;
  int64_t s0 = 0, s1 = 0, s2 = 0;
  View3() = default;
  explicit View3(const at::Tensor& t)
      : data(t.data_ptr<T>()), s0(t.stride(0)), s1(t.stride(1)), s2(t.stride(2)) {}
  T& operator()(int64_t i, int64_t j, int64_t t) const { return data[i * s0 + j * s1 + t * s2]; }
};

struct Shape {
  int64_t batch, dim, length, nstate;
  int64_t groups;       // channel groups of kLanes, ceil(dim / kLanes)
  int64_t block;        // groups per task
  int64_t blocks;       // tasks per batch element, ceil(groups / block)
  int64_t chunks;       // ceil(length / kChunk)
};

// grouped = false: one task per (batch, lane group), the most parallelism (forward).
// grouped = true: few tasks per batch element, so that the backward's cross-channel sums for
// dB/dC are done once per batch element; channels are split only to keep every thread busy.
Shape make_shape(const at::Tensor& u, const at::Tensor& A, bool grouped) {
  Shape s{};
  s.batch = u.size(0);
  s.dim = u.size(1);
  s.length = u.size(2);
  s.nstate = A.size(1);
  s.groups = (s.dim + kLanes - 1) / kLanes;
  const int64_t want = std::max<int64_t>(1, (2 * at::get_num_threads() + s.batch - 1) / s.batch);
  s.blocks = grouped ? std::min(s.groups, want) : s.groups;
  s.block = (s.groups + s.blocks - 1) / s.blocks;
  s.blocks = (s.groups + s.block - 1) / s.block;
  s.chunks = (s.length + kChunk - 1) / kChunk;
  return s;
}

// Copy src(b, d, t0 + t) for the task's channels into tile[t][g][lane]; absent channels read 0.
// Time-contiguous rows ([batch, dim, length]) go through 16x16 register transposes; channel-
// contiguous memory (the Mamba block's [batch, length, dim]) is a plain copy per time step.
// pf: offset in time steps of the chunk to prefetch next (+kChunk forward, -kChunk in the
// backward's reverse sweep, 0 for none); 16 rows 16 KiB apart are too many streams for the
// hardware prefetcher to follow.
template <typename T>
void load_tile(const View3<T>& src, int64_t b, int64_t d0, int64_t dim, int64_t t0, int64_t tl,
               int64_t block, T* tile, int64_t pf) {
  const int64_t ts = block * kLanes;  // tile stride between time steps
  for (int64_t g = 0; g < block; ++g) {
    const int64_t lanes = std::min(kLanes, dim - d0 - g * kLanes);
    const T* row = &src(b, d0 + g * kLanes, t0);
    T* dst = tile + g * kLanes;
    int64_t t = 0;
    if (src.s2 == 1 && lanes == kLanes) {
      for (; t + kLanes <= tl; t += kLanes) {
        transpose_block(row + t, src.s1, dst + t * ts, ts);
        if (pf != 0) {
          for (int64_t k = 0; k < kLanes; ++k) __builtin_prefetch(row + k * src.s1 + t + pf, 0, 2);
        }
      }
    }
    for (; t < tl; ++t) {
      for (int64_t k = 0; k < lanes; ++k) dst[t * ts + k] = row[k * src.s1 + t * src.s2];
      std::fill(dst + t * ts + lanes, dst + t * ts + kLanes, T(0));
    }
  }
}

template <typename T>
void store_tile(const View3<T>& dst, int64_t b, int64_t d0, int64_t dim, int64_t t0, int64_t tl,
                int64_t block, const T* tile, int64_t pf) {
  const int64_t ts = block * kLanes;
  for (int64_t g = 0; g < block; ++g) {
    const int64_t lanes = std::min(kLanes, dim - d0 - g * kLanes);
    T* row = &dst(b, d0 + g * kLanes, t0);
    const T* src = tile + g * kLanes;
    int64_t t = 0;
    if (dst.s2 == 1 && lanes == kLanes) {
      for (; t + kLanes <= tl; t += kLanes) {
        transpose_block(src + t * ts, ts, row + t, dst.s1);
        if (pf != 0) {  // for writing: saves the read-for-ownership miss on the next chunk
          for (int64_t k = 0; k < kLanes; ++k) __builtin_prefetch(row + k * dst.s1 + t + pf, 1, 2);
        }
      }
    }
    for (; t < tl; ++t) {
      for (int64_t k = 0; k < lanes; ++k) row[k * dst.s1 + t * dst.s2] = src[t * ts + k];
    }
  }
}

// B or C for one chunk as tile[t][n].
template <typename T>
void load_bc(const View3<T>& src, int64_t b, int64_t nstate, int64_t t0, int64_t tl, T* tile,
             int64_t pf) {
  if (nstate == kLanes) {  // the state plays the channels' part: same 16x16 transposes
    load_tile(src, b, 0, nstate, t0, tl, 1, tile, pf);
    return;
  }
  for (int64_t n = 0; n < nstate; ++n) {
    for (int64_t t = 0; t < tl; ++t) tile[t * nstate + n] = src(b, n, t0 + t);
  }
}

// Per-channel vector (A[d, n], D[d], delta_bias[d]) as lanes[g][n][lane]; absent channels are 0.
template <typename T>
std::vector<T> lanes_of(const at::Tensor& x, int64_t d0, int64_t dim, int64_t block) {
  if (!x.defined()) return std::vector<T>(block * kLanes, T(0));
  const int64_t inner = x.dim() == 2 ? x.size(1) : 1;
  std::vector<T> out(block * inner * kLanes, T(0));
  const T* p = x.data_ptr<T>();
  for (int64_t g = 0; g < block; ++g) {
    for (int64_t k = 0; k < kLanes; ++k) {
      const int64_t d = d0 + g * kLanes + k;
      if (d >= dim) continue;
      for (int64_t n = 0; n < inner; ++n) out[(g * inner + n) * kLanes + k] = p[d * inner + n];
    }
  }
  return out;
}

// delta tile after bias and (optionally) softplus, in place.
template <typename T>
void finish_delta(T* tile, const T* bias, int64_t tl, int64_t block, bool use_softplus) {
  using V = Vec<T>;
  for (int64_t t = 0; t < tl; ++t) {
    for (int64_t g = 0; g < block; ++g) {
      T* dt = tile + (t * block + g) * kLanes;
      const V v = V::load(dt) + V::load(bias + g * kLanes);
      (use_softplus ? softplus(v) : v).store(dt);
    }
  }
}

template <typename T>
struct Inputs {
  View3<T> u, delta, B, C, z;
  at::Tensor A, D, delta_bias;
  bool has_z, softplus;
};

template <typename T>
Inputs<T> make_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                      const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                      const at::Tensor& z, const at::Tensor& delta_bias, bool softplus) {
  Inputs<T> in;
  in.u = View3<T>(u);
  in.delta = View3<T>(delta);
  in.B = View3<T>(B);
  in.C = View3<T>(C);
  in.has_z = z.defined();
  if (in.has_z) in.z = View3<T>(z);
  in.A = A.contiguous();
  in.D = D.defined() ? D.contiguous() : D;
  in.delta_bias = delta_bias.defined() ? delta_bias.contiguous() : delta_bias;
  in.softplus = softplus;
  return in;
}

// One chunk of one lane group: h (the state, N vectors) is advanced over tl steps and y written.
// NS > 0 fixes N at compile time so the loops unroll and the state stays in registers for the
// whole chunk (d_state 16 = 16 of the 32 AVX-512 registers); NS = 0 takes N from the shape.
template <typename T, int NS>
void scan_chunk(int64_t nstate, int64_t tl, const T* dt_t, const T* u_t, const T* z_t,
                const T* b_t, const T* c_t, const T* a_g, const Vec<T>& d_g, T* h, T* y_t) {
  using V = Vec<T>;
  constexpr int kRegs = NS > 0 ? NS : 1;
  const int64_t N = NS > 0 ? NS : nstate;
  V hr[kRegs];
  if constexpr (NS > 0) {
    for (int n = 0; n < NS; ++n) hr[n] = V::load(h + n * kLanes);
  }
  for (int64_t t = 0; t < tl; ++t) {
    const T* bt = b_t + t * N;
    const T* ct = c_t + t * N;
    const V dt = V::load(dt_t + t * kLanes), uu = V::load(u_t + t * kLanes);
    const V du = dt * uu;
    V y = d_g * uu;
    if constexpr (NS > 0) {
#pragma GCC unroll 32
      for (int n = 0; n < NS; ++n) {
        hr[n] = fma(vexp(dt * V::load(a_g + n * kLanes)), hr[n], du * V::all(bt[n]));
        y = fma(hr[n], V::all(ct[n]), y);
      }
    } else {
      for (int64_t n = 0; n < N; ++n) {
        const V hn = fma(vexp(dt * V::load(a_g + n * kLanes)), V::load(h + n * kLanes),
                         du * V::all(bt[n]));
        hn.store(h + n * kLanes);
        y = fma(hn, V::all(ct[n]), y);
      }
    }
    if (z_t) {
      const V zz = V::load(z_t + t * kLanes);
      y = y * zz * sigmoid(zz);
    }
    y.store(y_t + t * kLanes);
  }
  if constexpr (NS > 0) {
    for (int n = 0; n < NS; ++n) hr[n].store(h + n * kLanes);
  }
}

// One task per (batch element, lane group): the forward needs no cross-channel sums.
template <typename T>
void forward_kernel(const Inputs<T>& in, const Shape& s, const View3<T>& out, T* last_state,
                    T* checkpoints) {
  using V = Vec<T>;
  const int64_t N = s.nstate;
  at::parallel_for(0, s.batch * s.groups, 1, [&](int64_t begin, int64_t end) {
    const int64_t tile = kChunk * kLanes;
    std::vector<T> u_t(tile), dt_t(tile), z_t(in.has_z ? tile : 0), y_t(tile);
    std::vector<T> b_t(kChunk * N), c_t(kChunk * N), h(N * kLanes);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / s.groups, g = task % s.groups, d0 = g * kLanes;
      const std::vector<T> a_l = lanes_of<T>(in.A, d0, s.dim, 1);
      const std::vector<T> d_l = lanes_of<T>(in.D, d0, s.dim, 1);
      const std::vector<T> bias_l = lanes_of<T>(in.delta_bias, d0, s.dim, 1);
      std::fill(h.begin(), h.end(), T(0));
      for (int64_t c = 0; c < s.chunks; ++c) {
        const int64_t t0 = c * kChunk, tl = std::min(kChunk, s.length - t0);
        if (checkpoints) {
          std::copy_n(h.data(), N * kLanes,
                      checkpoints + ((b * s.groups + g) * s.chunks + c) * N * kLanes);
        }
        const int64_t pf = c + 1 < s.chunks ? kChunk : 0;
        load_tile(in.u, b, d0, s.dim, t0, tl, 1, u_t.data(), pf);
        load_tile(in.delta, b, d0, s.dim, t0, tl, 1, dt_t.data(), pf);
        finish_delta(dt_t.data(), bias_l.data(), tl, 1, in.softplus);
        if (in.has_z) load_tile(in.z, b, d0, s.dim, t0, tl, 1, z_t.data(), pf);
        load_bc(in.B, b, N, t0, tl, b_t.data(), pf);
        load_bc(in.C, b, N, t0, tl, c_t.data(), pf);
        const T* zp = in.has_z ? z_t.data() : nullptr;
        const V d_g = V::load(d_l.data());
        if (N == 16) {
          scan_chunk<T, 16>(N, tl, dt_t.data(), u_t.data(), zp, b_t.data(), c_t.data(),
                            a_l.data(), d_g, h.data(), y_t.data());
        } else {
          scan_chunk<T, 0>(N, tl, dt_t.data(), u_t.data(), zp, b_t.data(), c_t.data(),
                           a_l.data(), d_g, h.data(), y_t.data());
        }
        store_tile(out, b, d0, s.dim, t0, tl, 1, y_t.data(), pf);
      }
      for (int64_t k = 0; k < kLanes && d0 + k < s.dim; ++k) {
        for (int64_t n = 0; n < N; ++n) last_state[(b * s.dim + d0 + k) * N + n] = h[n * kLanes + k];
      }
    }
  });
}

template <typename T>
struct SweepArgs {
  int64_t N, tl;
  const T *h, *a;        // recomputed chunk: h[t + 1] = state after step t, a[t] = exp(delta_t A)
  T *acc_b, *acc_c;      // [t][n][lane] partial sums of dB, dC
  const T *dt, *u, *go, *z, *y, *sig;  // [t][lane] tiles; z, sig may be null
  const T *b, *c;        // [t][n]
  const T* A;            // [n][lane]
  T *gh, *dA;            // [n][lane]: dL/dh carried between chunks, dA partial sums
  T *du, *ddt, *dz;      // [t][lane] output tiles
};

// The backward's reverse sweep over one chunk of one lane group. NS > 0 fixes N at compile time:
// the loop over the state unrolls and dL/dh stays in registers for the whole chunk.
template <typename T, int NS>
void reverse_sweep(const SweepArgs<T>& p, const Vec<T>& d_g, Vec<T>& dD, Vec<T>& dbias) {
  using V = Vec<T>;
  constexpr int kRegs = NS > 0 ? NS : 1;
  const int64_t N = NS > 0 ? NS : p.N, st = N * kLanes;
  V ghr[kRegs];
  if constexpr (NS > 0) {
    for (int n = 0; n < NS; ++n) ghr[n] = V::load(p.gh + n * kLanes);
  }
  for (int64_t t = p.tl - 1; t >= 0; --t) {
    const int64_t off = t * kLanes;
    const T* hp = p.h + t * st;
    const T* hc = p.h + (t + 1) * st;
    const T* at = p.a + t * st;
    T* ab = p.acc_b + t * st;
    T* ac = p.acc_c + t * st;
    const T* bt = p.b + t * N;
    const T* ct = p.c + t * N;
    const V dt = V::load(p.dt + off), uu = V::load(p.u + off);
    const V go = V::load(p.go + off);
    V gy = go;
    if (p.z) {  // out = y * silu(z); silu'(z) = sg * (1 + z * (1 - sg))
      const V zz = V::load(p.z + off), sg = sigmoid(zz), one = V::all(T(1));
      gy = go * zz * sg;
      (go * V::load(p.y + off) * sg * fma(zz, one - sg, one)).store(p.dz + off);
    }
    const V dtu = dt * uu;
    // h_t = a * h_{t-1} + (delta * u) * B: with S = sum_n dL/dh_t[n] * B_t[n], the input
    // term gives du = delta * S and ddelta = u * S; the decay term adds
    // ddelta += sum_n dL/dh_t[n] * h_{t-1}[n] * a[n] * A[n].
    V S = V::all(T(0)), ddt = V::all(T(0));
    dD = fma(gy, uu, dD);
    auto step = [&](int64_t n, V& gh_n) {
      const int64_t o = n * kLanes;
      const V a = V::load(at + o);
      const V g_h = fma(gy, V::all(ct[n]), gh_n);
      const V g_ha = g_h * V::load(hp + o) * a;  // dL/d(delta * A) through h_t
      fma(gy, V::load(hc + o), V::load(ac + o)).store(ac + o);
      fma(g_h, dtu, V::load(ab + o)).store(ab + o);
      fma(g_ha, dt, V::load(p.dA + o)).store(p.dA + o);
      ddt = fma(g_ha, V::load(p.A + o), ddt);
      S = fma(g_h, V::all(bt[n]), S);
      gh_n = g_h * a;
    };
    if constexpr (NS > 0) {
#pragma GCC unroll 32
      for (int n = 0; n < NS; ++n) step(n, ghr[n]);
    } else {
      for (int64_t n = 0; n < N; ++n) {
        V gh_n = V::load(p.gh + n * kLanes);
        step(n, gh_n);
        gh_n.store(p.gh + n * kLanes);
      }
    }
    ddt = fma(uu, S, ddt);
    const V dv = p.sig ? ddt * V::load(p.sig + off) : ddt;
    dv.store(p.ddt + off);
    dbias = dbias + dv;
    fma(dt, S, d_g * gy).store(p.du + off);
  }
  if constexpr (NS > 0) {
    for (int n = 0; n < NS; ++n) ghr[n].store(p.gh + n * kLanes);
  }
}

template <typename T>
struct Grads {
  View3<T> du, ddelta, dz, dB, dC;  // dB/dC: [blocks * batch, N, L] partial sums per task
  T *dA, *dD, *dbias;               // [batch, dim, N], [batch, dim], [batch, dim] partial sums
};

template <typename T>
void backward_kernel(const Inputs<T>& in, const Shape& s, const View3<T>& gout,
                     const T* checkpoints, const Grads<T>& gr) {
  using V = Vec<T>;
  const int64_t N = s.nstate, G = s.block, st = N * kLanes;  // st: one group's state
  at::parallel_for(0, s.batch * s.blocks, 1, [&](int64_t begin, int64_t end) {
    const int64_t tile = kChunk * kLanes;
    std::vector<T> u_t(tile), dt_t(tile), sig_t(tile), go_t(tile), du_t(tile), ddt_t(tile);
    std::vector<T> z_t(in.has_z ? tile : 0), dz_t(in.has_z ? tile : 0), y_buf(tile);
    std::vector<T> b_t(kChunk * N), c_t(kChunk * N);
    // Per time step of the chunk, lane-wise partial sums of dB and dC over the task's groups;
    // reduced over lanes once per chunk.
    std::vector<T> acc_b(kChunk * st), acc_c(kChunk * st);
    std::vector<T> h_buf((kChunk + 1) * st), a_buf(kChunk * st), gh(G * st), dA_acc(G * st);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / s.blocks, blk = task % s.blocks, g0 = blk * G;
      const int64_t ng = std::min(G, s.groups - g0);
      const std::vector<T> a_l = lanes_of<T>(in.A, g0 * kLanes, s.dim, ng);
      const std::vector<T> d_l = lanes_of<T>(in.D, g0 * kLanes, s.dim, ng);
      const std::vector<T> bias_l = lanes_of<T>(in.delta_bias, g0 * kLanes, s.dim, ng);
      std::vector<T> dD_acc(ng * kLanes, T(0)), dbias_acc(ng * kLanes, T(0));
      std::fill(gh.begin(), gh.end(), T(0));
      std::fill(dA_acc.begin(), dA_acc.end(), T(0));
      for (int64_t c = s.chunks - 1; c >= 0; --c) {
        const int64_t t0 = c * kChunk, tl = std::min(kChunk, s.length - t0);
        const int64_t pf = c > 0 ? -kChunk : 0;  // the sweep runs backwards in time
        load_bc(in.B, b, N, t0, tl, b_t.data(), pf);
        load_bc(in.C, b, N, t0, tl, c_t.data(), pf);
        std::fill(acc_b.begin(), acc_b.end(), T(0));
        std::fill(acc_c.begin(), acc_c.end(), T(0));
        // One lane group at a time keeps the tiles and the recomputed chunk in L2.
        for (int64_t g = 0; g < ng; ++g) {
          const int64_t d0 = (g0 + g) * kLanes;
          const T* a_g = a_l.data() + g * st;
          const V d_g = V::load(d_l.data() + g * kLanes), bias_g = V::load(bias_l.data() + g * kLanes);
          load_tile(in.u, b, d0, s.dim, t0, tl, 1, u_t.data(), pf);
          load_tile(in.delta, b, d0, s.dim, t0, tl, 1, dt_t.data(), pf);
          if (in.softplus) {  // d softplus(v) / dv = sigmoid(v)
            for (int64_t t = 0; t < tl; ++t) {
              V sg;
              T* dt = dt_t.data() + t * kLanes;
              softplus_sigmoid(V::load(dt) + bias_g, &sg).store(dt);
              sg.store(sig_t.data() + t * kLanes);
            }
          } else {
            finish_delta(dt_t.data(), bias_l.data() + g * kLanes, tl, 1, false);
          }
          if (in.has_z) load_tile(in.z, b, d0, s.dim, t0, tl, 1, z_t.data(), pf);
          load_tile(gout, b, d0, s.dim, t0, tl, 1, go_t.data(), pf);

          // Recompute the chunk from its checkpoint: h_buf[t + 1] = state after step t,
          // a_buf[t] = exp(delta_t * A), y_buf[t] = y_t before gating.
          std::copy_n(checkpoints + ((b * s.groups + g0 + g) * s.chunks + c) * st, st,
                      h_buf.data());
          for (int64_t t = 0; t < tl; ++t) {
            const T* hp = h_buf.data() + t * st;
            T* hc = h_buf.data() + (t + 1) * st;
            T* at = a_buf.data() + t * st;
            const V dt = V::load(dt_t.data() + t * kLanes), uu = V::load(u_t.data() + t * kLanes);
            const V du = dt * uu;
            V y = d_g * uu;
            for (int64_t n = 0; n < N; ++n) {
              const int64_t o = n * kLanes;
              const V a = vexp(dt * V::load(a_g + o));
              const V hn = fma(a, V::load(hp + o), du * V::all(b_t[t * N + n]));
              a.store(at + o);
              hn.store(hc + o);
              y = fma(hn, V::all(c_t[t * N + n]), y);
            }
            y.store(y_buf.data() + t * kLanes);
          }

          // Reverse sweep. gh holds dL/dh; entering step t it carries a_{t+1} * dL/dh_{t+1}.
          SweepArgs<T> sa;
          sa.N = N;
          sa.tl = tl;
          sa.h = h_buf.data();
          sa.a = a_buf.data();
          sa.acc_b = acc_b.data();
          sa.acc_c = acc_c.data();
          sa.dt = dt_t.data();
          sa.u = u_t.data();
          sa.go = go_t.data();
          sa.z = in.has_z ? z_t.data() : nullptr;
          sa.y = y_buf.data();
          sa.sig = in.softplus ? sig_t.data() : nullptr;
          sa.b = b_t.data();
          sa.c = c_t.data();
          sa.A = a_g;
          sa.gh = gh.data() + g * st;
          sa.dA = dA_acc.data() + g * st;
          sa.du = du_t.data();
          sa.ddt = ddt_t.data();
          sa.dz = dz_t.data();
          V dD = V::load(dD_acc.data() + g * kLanes), dbias = V::load(dbias_acc.data() + g * kLanes);
          if (N == 16) {
            reverse_sweep<T, 16>(sa, d_g, dD, dbias);
          } else {
            reverse_sweep<T, 0>(sa, d_g, dD, dbias);
          }
          dD.store(dD_acc.data() + g * kLanes);
          dbias.store(dbias_acc.data() + g * kLanes);
          store_tile(gr.du, b, d0, s.dim, t0, tl, 1, du_t.data(), pf);
          store_tile(gr.ddelta, b, d0, s.dim, t0, tl, 1, ddt_t.data(), pf);
          if (in.has_z) store_tile(gr.dz, b, d0, s.dim, t0, tl, 1, dz_t.data(), pf);
        }
        for (int64_t t = 0; t < tl; ++t) {
          for (int64_t n = 0; n < N; ++n) {
            gr.dB(blk * s.batch + b, n, t0 + t) = hsum(V::load(acc_b.data() + t * st + n * kLanes));
            gr.dC(blk * s.batch + b, n, t0 + t) = hsum(V::load(acc_c.data() + t * st + n * kLanes));
          }
        }
      }
      for (int64_t g = 0; g < ng; ++g) {
        for (int64_t k = 0; k < kLanes && (g0 + g) * kLanes + k < s.dim; ++k) {
          const int64_t d = (g0 + g) * kLanes + k;
          for (int64_t n = 0; n < N; ++n) {
            gr.dA[(b * s.dim + d) * N + n] = dA_acc[(g * N + n) * kLanes + k];
          }
          gr.dD[b * s.dim + d] = dD_acc[g * kLanes + k];
          gr.dbias[b * s.dim + d] = dbias_acc[g * kLanes + k];
        }
      }
    }
  });
}

// ---- Buffer cache for the large outputs -----------------------------------------------------
// glibc serves allocations of >= 32 MiB with fresh mmap'd pages and unmaps them on free, so
// every call page-faults its outputs and gradients in again (4 KiB faults cost ~1.5 us each on
// this VM: ~25 ms of a 150 ms forward+backward at L=4096). The outputs of this extension (y, the
// backward checkpoints, du, ddelta, dz, dB, dC) are therefore allocated from a small cache of
// freed blocks of the same size. Only these tensors are affected, nothing process-wide; the
// cache holds at most HYMATE_SCAN_CACHE_MB MiB of *free* blocks (default 512; 0 disables it),
// and blocks beyond that are given back to the allocator when freed. clear_cache() empties it.
constexpr size_t kMinCachedBytes = size_t(1) << 20;  // smaller blocks: glibc reuses them already

class BufferCache {
 public:
  void* get(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(bytes);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_ -= bytes;
        return p;
      }
    }
    void* p = nullptr;
    if (posix_memalign(&p, 64, bytes) != 0) throw std::bad_alloc();
    return p;
  }
  void put(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + bytes <= capacity_) {
        free_.emplace(bytes, p);
        cached_ += bytes;
        return;
      }
    }
    std::free(p);
  }
  void clear() {
    std::unordered_multimap<size_t, void*> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      drop.swap(free_);
      cached_ = 0;
    }
    for (auto& kv : drop) std::free(kv.second);
  }
  size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }
  size_t capacity() const { return capacity_; }

  static BufferCache& instance() {
    // Never destroyed: tensors may be freed during interpreter shutdown, after static destructors.
    static BufferCache* cache = new BufferCache(capacity_from_env());
    return *cache;
  }

 private:
  explicit BufferCache(size_t capacity) : capacity_(capacity) {}
  static size_t capacity_from_env() {
    const char* v = std::getenv("HYMATE_SCAN_CACHE_MB");
    if (v == nullptr || *v == '\0') return size_t(512) << 20;
    char* end = nullptr;
    const long long mb = std::strtoll(v, &end, 10);
    return (end == v || mb <= 0) ? 0 : size_t(mb) << 20;
  }
  std::mutex mu_;
  std::unordered_multimap<size_t, void*> free_;
  size_t cached_ = 0;
  const size_t capacity_;
};

// Like at::empty(sizes, opts) (strides of `like` if it is dense, as empty_like keeps them), from
// the cache when the block is large. The contents are uninitialised either way.
at::Tensor empty_cached(at::IntArrayRef sizes, const at::TensorOptions& opts,
                        const at::Tensor& like = at::Tensor()) {
  int64_t numel = 1;
  for (int64_t n : sizes) numel *= n;
  const size_t bytes = size_t(numel) * c10::elementSize(c10::typeMetaToScalarType(opts.dtype()));
  BufferCache& cache = BufferCache::instance();
  const bool dense = like.defined() && like.is_non_overlapping_and_dense();
  if (bytes < kMinCachedBytes || cache.capacity() == 0) {
    return dense ? at::empty_like(like, opts) : at::empty(sizes, opts);
  }
  void* p = cache.get(bytes);
  auto deleter = [bytes](void* q) { BufferCache::instance().put(q, bytes); };
  if (dense) return at::from_blob(p, sizes, like.strides(), deleter, opts);
  return at::from_blob(p, sizes, deleter, opts);
}

at::Tensor opt(const c10::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); }

// Returns (out, last_state, checkpoints); checkpoints is empty unless save_checkpoints.
std::vector<at::Tensor> scan_forward(const at::Tensor& u, const at::Tensor& delta,
                                     const at::Tensor& A, const at::Tensor& B,
                                     const at::Tensor& C, const c10::optional<at::Tensor>& D,
                                     const c10::optional<at::Tensor>& z,
                                     const c10::optional<at::Tensor>& delta_bias,
                                     bool delta_softplus, bool save_checkpoints) {
  const Shape s = make_shape(u, A, /*grouped=*/false);
  at::Tensor out = empty_cached(u.sizes(), u.options(), u);
  at::Tensor last = at::empty({s.batch, s.dim, s.nstate}, u.options());
  at::Tensor ckpt = save_checkpoints
                        ? empty_cached({s.batch, s.groups, s.chunks, s.nstate, kLanes}, u.options())
                        : at::empty({0}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_forward", [&] {
    const auto in = make_inputs<scalar_t>(u, delta, A, B, C, opt(D), opt(z), opt(delta_bias),
                                          delta_softplus);
    forward_kernel<scalar_t>(in, s, View3<scalar_t>(out), last.data_ptr<scalar_t>(),
                             save_checkpoints ? ckpt.data_ptr<scalar_t>() : nullptr);
  });
  return {out, last, ckpt};
}

// Returns (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias); dz is empty without z.
std::vector<at::Tensor> scan_backward(const at::Tensor& u, const at::Tensor& delta,
                                      const at::Tensor& A, const at::Tensor& B,
                                      const at::Tensor& C, const c10::optional<at::Tensor>& D,
                                      const c10::optional<at::Tensor>& z,
                                      const c10::optional<at::Tensor>& delta_bias,
                                      bool delta_softplus, const at::Tensor& checkpoints,
                                      const at::Tensor& grad_out) {
  const Shape s = make_shape(u, A, /*grouped=*/true);
  TORCH_CHECK(checkpoints.numel() == s.batch * s.groups * s.chunks * s.nstate * kLanes,
              "checkpoints do not match the inputs");
  at::Tensor du = empty_cached(u.sizes(), u.options(), u);
  at::Tensor ddelta = empty_cached(delta.sizes(), delta.options(), delta);
  at::Tensor dz = z.has_value() ? empty_cached(z->sizes(), z->options(), *z) : at::Tensor();
  auto opts = u.options();
  at::Tensor dB = empty_cached({s.blocks, s.batch, s.nstate, s.length}, opts);
  at::Tensor dC = empty_cached({s.blocks, s.batch, s.nstate, s.length}, opts);
  at::Tensor dA = at::empty({s.batch, s.dim, s.nstate}, opts);
  at::Tensor dD = at::empty({s.batch, s.dim}, opts), dbias = at::empty({s.batch, s.dim}, opts);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_backward", [&] {
    const auto in = make_inputs<scalar_t>(u, delta, A, B, C, opt(D), opt(z), opt(delta_bias),
                                          delta_softplus);
    Grads<scalar_t> gr;
    gr.du = View3<scalar_t>(du);
    gr.ddelta = View3<scalar_t>(ddelta);
    if (z.has_value()) gr.dz = View3<scalar_t>(dz);
    gr.dB = View3<scalar_t>(dB.view({s.blocks * s.batch, s.nstate, s.length}));
    gr.dC = View3<scalar_t>(dC.view({s.blocks * s.batch, s.nstate, s.length}));
    gr.dA = dA.data_ptr<scalar_t>();
    gr.dD = dD.data_ptr<scalar_t>();
    gr.dbias = dbias.data_ptr<scalar_t>();
    backward_kernel<scalar_t>(in, s, View3<scalar_t>(grad_out), checkpoints.data_ptr<scalar_t>(),
                              gr);
  });
  // One block (the usual case, batch >= 2 * threads): no partial sums to add up.
  auto total = [&](const at::Tensor& t) { return s.blocks == 1 && t.size(0) == 1 ? t[0] : t.sum(0); };
  return {du, ddelta, dA.sum(0), total(dB), total(dC), dD.sum(0), dz, dbias.sum(0)};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &scan_forward, "selective scan forward (CPU)");
  m.def("backward", &scan_backward, "selective scan backward (CPU)");
  m.def("isa", [] { return std::string(kIsa); }, "the vector path this build uses");
  m.def("clear_cache", [] { BufferCache::instance().clear(); },
        "free the cached output buffers");
  m.def("cache_info", [] {
    BufferCache& c = BufferCache::instance();
    return std::make_pair(c.cached_bytes(), c.capacity());
  }, "(bytes of free blocks held, capacity in bytes)");
}
