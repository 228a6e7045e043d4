// The compiled fused engine: the time loops of rnnkit/engines/fused.py in C++.
//
// Why it exists: at small sizes the Python engine spends its time dispatching a dozen
// tiny ATen ops a step (~3 us each). Here a step is one GEMM and one hand-written
// pointwise pass over the B x H units that does all gates, the carry lerp and the
// recurrent-dropout mask in one sweep over memory, in both directions of the pass.
//
// The math restates the cells' Python steps (rnnkit/cells/{rnn,lstm,gru}.py), which stay
// the single source of truth: tests/test_compiled.py checks this file against them,
// values and every gradient.
//
// Layouts (row-major, contiguous unless said otherwise):
//   gx (T, B, G*H)    input projection; LSTM gate blocks i, f, g, o; GRU r, z, n
//   Hs (T, B, H_out)  every h_t;  Cs (T, B, H) every c_t (LSTM)
//   S  (T, B, L)      what backward needs, per row (struct Config):
//                       RNN  [act'(P)] with a carry of h (else act' is read off h_t)
//                       LSTM [i, f, g, o, tanh(c_out)] (c~: the cell's own c_t,
//                            c_out = c~ or LN(c~)), then c~ with peepholes, then
//                            LN(c~)'s x^ with a layer norm of c
//                       GRU  [r, z, n, LN?(W_hn h_in) + b_hn]
//                     then, with a layer norm of W_hh h_in, its x^ (G*H)
//   St (T, B, 2)      1/sigma of the layer norms of W_hh h_in and of c~
//   Hin (T, B, H_out) h_{t-1} * h_mask, the recurrent GEMM's input (only with a mask)
//   carry (T, B, H_out or 1), any strides: K_t of h_t = lerp(h~_t, h_{t-1}, K_t)

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

// BLAS from the MKL inside libtorch_cpu, called directly: at::mm costs ~8 us of
// dispatch and checks per call, which is most of a small step. Weak, so that a torch
// built without MKL still loads this file and takes the at::mm_out route instead.
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*,
            const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*) __attribute__((weak));
}

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
template <typename T>
using Vec = at::vec::Vectorized<T>;

enum CellKind : int64_t { RNN_TANH = 0, RNN_RELU = 1, RNN_SIGMOID = 2, LSTM = 3, GRU = 4 };

// -- GEMM -------------------------------------------------------------------------

template <typename T>
bool have_blas();
template <>
bool have_blas<float>() { return sgemm_ != nullptr; }
template <>
bool have_blas<double>() { return dgemm_ != nullptr; }

inline void blas(const char* ta, const char* tb, int m, int n, int k, const float* a, int lda,
                 const float* b, int ldb, float* c, int ldc) {
  const float one = 1, zero = 0;
  sgemm_(ta, tb, &m, &n, &k, &one, a, &lda, b, &ldb, &zero, c, &ldc);
}
inline void blas(const char* ta, const char* tb, int m, int n, int k, const double* a,
                 int lda, const double* b, int ldb, double* c, int ldc) {
  const double one = 1, zero = 0;
  dgemm_(ta, tb, &m, &n, &k, &one, a, &lda, b, &ldb, &zero, c, &ldc);
}

// C (M, N) = A (M, K) @ Wᵀ with W (N, K) when w_is_nk, else A @ W with W (K, N).
template <typename T>
void matmul(T* C, const T* A, const T* W, int64_t M, int64_t N, int64_t K, bool w_is_nk) {
  if (M == 0 || N == 0) return;
  if (K == 0) { std::fill(C, C + M * N, T(0)); return; }
  if (have_blas<T>() && std::max({M, N, K}) < INT_MAX) {
    // BLAS is column-major, where a row-major (r, c) matrix reads as its (c, r)
    // transpose: compute Cᵀ = op(W)ᵀ Aᵀ, which lays C out row-major.
    if (w_is_nk)
      blas("T", "N", int(N), int(M), int(K), W, int(K), A, int(K), C, int(N));
    else
      blas("N", "N", int(N), int(M), int(K), W, int(N), A, int(K), C, int(N));
    return;
  }
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  Tensor a = at::from_blob(const_cast<T*>(A), {M, K}, opts);
  Tensor w = w_is_nk ? at::from_blob(const_cast<T*>(W), {N, K}, opts).t()
                     : at::from_blob(const_cast<T*>(W), {K, N}, opts);
  Tensor c = at::from_blob(C, {M, N}, opts);
  at::mm_out(c, a, w);
}

// -- pointwise helpers ---------------------------------------------------------------

// tanh and σ. float32: a rational approximation (the odd/even polynomial pair that
// Eigen and XLA use; max error 3.4e-7 against the exact tanh, checked over [-12, 12]),
// a few FMAs and one division, cheaper than the 1-ulp Sleef functions behind
// Vectorized::tanh / exp: the pointwise pass should cost little next to the step's GEMM.
// σ(x) = (1 + tanh(x / 2)) / 2 reuses it with one more FMA. float64 keeps the exact
// Sleef functions: it is the precision the gradchecks run in.
inline Vec<float> tanh_(const Vec<float>& a) {
  using V = Vec<float>;
  const V x = at::vec::clamp(a, V(-7.90531110763549805f), V(7.90531110763549805f));
  const V x2 = x * x;
  V p = at::vec::fmadd(x2, V(-2.76076847742355e-16f), V(2.00018790482477e-13f));
  p = at::vec::fmadd(x2, p, V(-8.60467152213735e-11f));
  p = at::vec::fmadd(x2, p, V(5.12229709037114e-08f));
  p = at::vec::fmadd(x2, p, V(1.48572235717979e-05f));
  p = at::vec::fmadd(x2, p, V(6.37261928875436e-04f));
  p = at::vec::fmadd(x2, p, V(4.89352455891786e-03f));
  p = x * p;
  V q = at::vec::fmadd(x2, V(1.19825839466702e-06f), V(1.18534705686654e-04f));
  q = at::vec::fmadd(x2, q, V(2.26843463243900e-03f));
  q = at::vec::fmadd(x2, q, V(4.89352518554385e-03f));
  // near 0 tanh x = x to float precision, and p / q would lose its relative accuracy
  return V::blendv(p / q, a, a.abs() < V(0.0004f));
}
inline Vec<double> tanh_(const Vec<double>& x) { return x.tanh(); }

inline Vec<float> sigmoid(const Vec<float>& x) {
  const Vec<float> half(0.5f);
  return at::vec::fmadd(half, tanh_(half * x), half);
}
inline Vec<double> sigmoid(const Vec<double>& x) {
  const Vec<double> one(1.0);
  return one / (one + x.neg().exp());
}

// torch.lerp's two-sided form, exact at both ends: w = 0 gives s and w = 1 gives e bit
// for bit, so a state carried past a sample's length is copied unchanged.
template <typename T>
inline Vec<T> lerp(const Vec<T>& s, const Vec<T>& e, const Vec<T>& w) {
  const Vec<T> one(T(1));
  const Vec<T> d = e - s;
  return Vec<T>::blendv(e - d * (one - w), s + w * d, w.abs() < Vec<T>(T(0.5)));
}

// One (t, b) row of a carry: either one K for every unit (last dim 1, or stride 0 from
// an expand) or one K per unit.
template <typename T>
struct KRow {
  const T* p;
  bool per_unit;
  bool on() const { return p != nullptr; }
  Vec<T> load(int64_t u, int64_t n) const {
    return per_unit ? Vec<T>::loadu(p + u, n) : Vec<T>(*p);
  }
};

template <typename T>
struct Carry {
  Tensor k;  // keeps a contiguous copy alive when one was needed
  const T* data = nullptr;
  int64_t st = 0, sb = 0;
  bool per_unit = false;
  explicit Carry(const OptTensor& carry) {
    if (!carry || !carry->defined()) return;
    k = *carry;
    TORCH_CHECK(k.dim() == 3, "carry must be (T, B, H or 1), got ", k.sizes());
    per_unit = k.size(2) != 1 && k.stride(2) != 0;
    if (per_unit && k.stride(2) != 1) k = k.contiguous();
    data = k.data_ptr<T>();
    st = k.stride(0);
    sb = k.stride(1);
  }
  KRow<T> row(int64_t t, int64_t b) const {
    return {data ? data + t * st + b * sb : nullptr, per_unit};
  }
};

// Rows of a step are independent: split them over threads when a step has enough work
// to pay for waking them (an OpenMP region costs a few microseconds).
template <typename F>
void for_rows(int64_t B, int64_t work_per_row, const F& f) {
  constexpr int64_t kGrainWork = 16384;
  const int64_t grain = std::max<int64_t>(1, kGrainWork / std::max<int64_t>(1, work_per_row));
  at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) f(b);
  });
}

// -- layer norm over one row ------------------------------------------------------------
// As torch.nn.LayerNorm (biased variance, eps 1e-5 as rnnkit.cells.base.EPS); the mean
// and the variance in two passes, as exact as torch's own kernel at these widths.

constexpr double kEps = 1e-5;

// Σ_u f(u, n) over a row of N, f giving a vector of n valid lanes (the rest unused).
template <typename T, typename F>
T row_sum(int64_t N, const F& f) {
  using V = Vec<T>;
  V acc(T(0));
  int64_t u = 0;
  for (; u + V::size() <= N; u += V::size()) acc = acc + f(u, int64_t(V::size()));
  __at_align__ T lanes[V::size()];
  acc.store(lanes);
  T total = 0;
  for (int k = 0; k < V::size(); ++k) total += lanes[k];
  if (u < N) {
    f(u, N - u).store(lanes);
    for (int64_t k = 0; k < N - u; ++k) total += lanes[k];
  }
  return total;
}

// The layer norm, in one place for every cell: the statistics of a row, the normalised
// row, and the two means its derivative needs.

// (mean, 1 / sigma) of x (N).
template <typename T>
std::pair<T, T> row_stats(int64_t N, const T* x) {
  using V = Vec<T>;
  const T mean = row_sum<T>(N, [&](int64_t u, int64_t n) { return V::loadu(x + u, n); }) / T(N);
  const V vm(mean);
  const T var = row_sum<T>(N, [&](int64_t u, int64_t n) {
    const V d = V::loadu(x + u, n) - vm;
    return d * d;
  }) / T(N);
  return {mean, T(1) / std::sqrt(var + T(kEps))};
}

// x (N) <- LN(x) * w + b in place; writes x^ = (x - mean) / sigma into xhat when given.
// Returns 1 / sigma.
template <typename T>
T ln_forward_row(int64_t N, T* x, const T* w, const T* b, T* xhat) {
  using V = Vec<T>;
  const auto [mean, rstd] = row_stats<T>(N, x);
  const V vm(mean), vr(rstd);
  for (int64_t u = 0; u < N; u += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), N - u);
    const V xh = (V::loadu(x + u, n) - vm) * vr;
    if (xhat) xh.store(xhat + u, n);
    at::vec::fmadd(xh, V::loadu(w + u, n), V::loadu(b + u, n)).store(x + u, n);
  }
  return rstd;
}

// The means of y = x^ * w + b's derivative, mean(a) and mean(a x^) with a = dy * w:
// dx = (a - mean(a) - x^ mean(a x^)) / sigma.
template <typename T>
std::pair<T, T> ln_grad_means(int64_t N, const T* dy, const T* w, const T* xhat) {
  using V = Vec<T>;
  const T m1 = row_sum<T>(N, [&](int64_t u, int64_t n) {
    return V::loadu(dy + u, n) * V::loadu(w + u, n);
  }) / T(N);
  const T m2 = row_sum<T>(N, [&](int64_t u, int64_t n) {
    return V::loadu(dy + u, n) * V::loadu(w + u, n) * V::loadu(xhat + u, n);
  }) / T(N);
  return {m1, m2};
}

// dx of y = x^ * w + b (see ln_grad_means); adds dy x^ and dy into sums (2N: the
// gradients of w and b) when given.
template <typename T>
void ln_backward_row(int64_t N, const T* dy, const T* xhat, T rstd, const T* w, T* dx,
                     T* sums) {
  using V = Vec<T>;
  if (sums) {
    for (int64_t u = 0; u < N; u += V::size()) {
      const int64_t n = std::min<int64_t>(V::size(), N - u);
      const V d = V::loadu(dy + u, n);
      at::vec::fmadd(d, V::loadu(xhat + u, n), V::loadu(sums + u, n)).store(sums + u, n);
      (d + V::loadu(sums + N + u, n)).store(sums + N + u, n);
    }
  }
  const auto [m1, m2] = ln_grad_means<T>(N, dy, w, xhat);
  const V v1(m1), v2(m2), vr(rstd);
  for (int64_t u = 0; u < N; u += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), N - u);
    const V a = V::loadu(dy + u, n) * V::loadu(w + u, n);
    ((a - v1 - V::loadu(xhat + u, n) * v2) * vr).store(dx + u, n);
  }
}

// Sums over every (t, b) row of a parameter gradient, without a (T, B, N) buffer: each
// thread adds its rows of a step into its own slice (threads never share one), and after
// each step the slices are added into totals kept in double, so that float32 sums over
// thousands of rows lose nothing to rounding.
template <typename T>
struct RowSums {
  int64_t n = 0;
  std::vector<T> part;         // (threads, n)
  std::vector<double> total;   // (n)
  RowSums(int64_t n_, bool on) : n(on ? n_ : 0),
      part(on ? size_t(std::max(at::get_num_threads(), 1) * n_) : 0, T(0)),
      total(on ? size_t(n_) : 0, 0.0) {}
  bool on() const { return n > 0; }
  T* mine() {  // this thread's slice
    const int64_t tid = at::get_thread_num();
    TORCH_CHECK(tid >= 0 && (tid + 1) * n <= int64_t(part.size()),
                "rnnkit compiled engine: thread id ", tid, " out of range");
    return part.data() + tid * n;
  }
  void fold() {
    if (!on()) return;
    for (size_t j = 0; j < part.size(); ++j) {
      total[j % n] += part[j];
      part[j] = T(0);
    }
  }
  // the totals [from, from + len) as a tensor
  Tensor get(int64_t from, int64_t len, const at::TensorOptions& opts) const {
    Tensor out = at::empty({len}, opts.dtype(at::kDouble));
    std::copy(total.begin() + from, total.begin() + from + len, out.data_ptr<double>());
    return out.to(opts.dtype());
  }
};

// -- forward rows ---------------------------------------------------------------------
// Each writes h_t (and c_t), the saved factors when s != nullptr, and h_t * mask into
// hin_next when a mask is on (the next step's GEMM input).

// The RNN's activation act(P), and act'(P) written with the output a = act(P), as the
// Python cell does: the forward saves it where a carry comes between, the backward reads
// it off h_t where none did.
template <typename T, int ACT>
inline Vec<T> rnn_act(const Vec<T>& p) {
  if constexpr (ACT == RNN_TANH) return tanh_(p);
  else if constexpr (ACT == RNN_RELU) return at::vec::maximum(p, Vec<T>(T(0)));
  else return sigmoid(p);
}

template <typename T, int ACT>
inline Vec<T> rnn_act_grad(const Vec<T>& a) {
  const Vec<T> one(T(1)), zero(T(0));
  if constexpr (ACT == RNN_TANH) return one - a * a;
  else if constexpr (ACT == RNN_RELU) return Vec<T>::blendv(zero, one, a > zero);
  else return a * (one - a);
}

template <typename T, int ACT>
void rnn_forward_row(int64_t H, const T* gx, const T* gh, const T* hp, KRow<T> K,
                     const T* m, T* h, T* hin_next, T* s) {
  using V = Vec<T>;
  for (int64_t u = 0; u < H; u += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), H - u);
    V a = rnn_act<T, ACT>(V::loadu(gx + u, n) + V::loadu(gh + u, n));  // P = gx + W_hh h_in
    if (s) rnn_act_grad<T, ACT>(a).store(s + u, n);
    if (K.on()) a = lerp(a, V::loadu(hp + u, n), K.load(u, n));
    a.store(h + u, n);
    if (hin_next) (a * V::loadu(m + u, n)).store(hin_next + u, n);
  }
}

// LSTM, every option set: writes c_t, and h~_t = o * tanh(c_out) into `h` (before its
// carry when there is a projection: the projection GEMM comes first, then finish_h_row).
// PEEP: the gates i, f see c_{t-1} and o sees c~ through the peepholes w_ch. LNC: c_out =
// LN(c~) (else c~ itself), whose row statistics need a first pass over the whole row;
// without it one pass does everything. Returns 1/sigma of LN(c~) (1 without LNC).
template <typename T, bool LNC, bool PEEP>
T lstm_forward_row(int64_t H, const T* gx, const T* gh, const T* hp, const T* cp,
                   KRow<T> Kh, KRow<T> Kc, const T* m, const T* w_ch, const T* ln_w,
                   const T* ln_b, T* h, T* c, T* hin_next, T* s, int64_t c_own_at,
                   int64_t chat_at, bool proj) {
  using V = Vec<T>;
  // i, f, g and the cell's own c~ = f c_{t-1} + i g of P = gx + W_hh h_in (blocks i, f,
  // g, o): saved, and returned
  auto first = [&](int64_t u, int64_t n) {
    const V c_prev = V::loadu(cp + u, n);
    V p_i = V::loadu(gx + u, n) + V::loadu(gh + u, n);
    V p_f = V::loadu(gx + H + u, n) + V::loadu(gh + H + u, n);
    if constexpr (PEEP) {
      p_i = at::vec::fmadd(V::loadu(w_ch + u, n), c_prev, p_i);
      p_f = at::vec::fmadd(V::loadu(w_ch + H + u, n), c_prev, p_f);
    }
    const V i = sigmoid(p_i), f = sigmoid(p_f);
    const V g = tanh_(V::loadu(gx + 2 * H + u, n) + V::loadu(gh + 2 * H + u, n));
    const V c_new = f * c_prev + i * g;
    if (s) {
      i.store(s + u, n);
      f.store(s + H + u, n);
      g.store(s + 2 * H + u, n);
      if constexpr (PEEP) c_new.store(s + c_own_at + u, n);
    }
    return c_new;
  };
  // o, tanh(c_out), h~ (which sees the cell's own c~, not the carried one), the carries
  auto second = [&](int64_t u, int64_t n, V c_new, const V& c_out) {
    V p_o = V::loadu(gx + 3 * H + u, n) + V::loadu(gh + 3 * H + u, n);
    if constexpr (PEEP) p_o = at::vec::fmadd(V::loadu(w_ch + 2 * H + u, n), c_new, p_o);
    const V o = sigmoid(p_o);
    const V tc = tanh_(c_out);
    V h_new = o * tc;
    if (s) {
      o.store(s + 3 * H + u, n);
      tc.store(s + 4 * H + u, n);
    }
    if (Kc.on()) c_new = lerp(c_new, V::loadu(cp + u, n), Kc.load(u, n));
    c_new.store(c + u, n);
    if (!proj) {
      if (Kh.on()) h_new = lerp(h_new, V::loadu(hp + u, n), Kh.load(u, n));
      h_new.store(h + u, n);
      if (hin_next) (h_new * V::loadu(m + u, n)).store(hin_next + u, n);
    } else {
      h_new.store(h + u, n);  // u_t, the projection's input
    }
  };
  if constexpr (!LNC) {
    for (int64_t u = 0; u < H; u += V::size()) {
      const int64_t n = std::min<int64_t>(V::size(), H - u);
      const V c_new = first(u, n);
      second(u, n, c_new, c_new);
    }
    return T(1);
  } else {
    for (int64_t u = 0; u < H; u += V::size()) {  // c~, kept in c for the statistics
      const int64_t n = std::min<int64_t>(V::size(), H - u);
      first(u, n).store(c + u, n);
    }
    const auto [mean, rstd] = row_stats<T>(H, c);
    for (int64_t u = 0; u < H; u += V::size()) {
      const int64_t n = std::min<int64_t>(V::size(), H - u);
      const V c_new = V::loadu(c + u, n);
      const V chat = (c_new - V(mean)) * V(rstd);
      if (s) chat.store(s + chat_at + u, n);
      second(u, n, c_new, at::vec::fmadd(chat, V::loadu(ln_w + u, n), V::loadu(ln_b + u, n)));
    }
    return rstd;
  }
}

// After the LSTM projection: h_t = lerp(W_hr u_t, h_{t-1}, K) in place, and the mask.
template <typename T>
void finish_h_row(int64_t N, T* h, const T* hp, KRow<T> K, const T* m, T* hin_next) {
  using V = Vec<T>;
  for (int64_t u = 0; u < N; u += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), N - u);
    V h_new = V::loadu(h + u, n);
    if (K.on()) {
      h_new = lerp(h_new, V::loadu(hp + u, n), K.load(u, n));
      h_new.store(h + u, n);
    }
    if (hin_next) (h_new * V::loadu(m + u, n)).store(hin_next + u, n);
  }
}

template <typename T>
void gru_forward_row(int64_t H, const T* gx, const T* gh, const T* b_hh, const T* hp,
                     KRow<T> K, const T* m, T* h, T* hin_next, T* s) {
  using V = Vec<T>;
  for (int64_t u = 0; u < H; u += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), H - u);
    // gh = W_hh h_in + b_hh, blocks r, z, n
    V ghr = V::loadu(gh + u, n), ghz = V::loadu(gh + H + u, n),
      ghn = V::loadu(gh + 2 * H + u, n);
    if (b_hh) {
      ghr = ghr + V::loadu(b_hh + u, n);
      ghz = ghz + V::loadu(b_hh + H + u, n);
      ghn = ghn + V::loadu(b_hh + 2 * H + u, n);
    }
    const V r = sigmoid(V::loadu(gx + u, n) + ghr);
    const V z = sigmoid(V::loadu(gx + H + u, n) + ghz);
    const V nn = tanh_(V::loadu(gx + 2 * H + u, n) + r * ghn);
    const V h_prev = V::loadu(hp + u, n);
    V h_new = nn + z * (h_prev - nn);  // (1 - z) n + z h_prev
    if (s) {
      r.store(s + u, n);
      z.store(s + H + u, n);
      nn.store(s + 2 * H + u, n);
      ghn.store(s + 3 * H + u, n);
    }
    if (K.on()) h_new = lerp(h_new, h_prev, K.load(u, n));
    h_new.store(h + u, n);
    if (hin_next) (h_new * V::loadu(m + u, n)).store(hin_next + u, n);
  }
}

// -- backward rows --------------------------------------------------------------------

// The gradient reaching h_t: dh = dHs[t] + (dP_{t+1} W_hh) * mask + side, where `side`
// holds the paths that skip the GEMM (the carried share, GRU's z * h_prev). Splits it by
// the carry: dhc = (1 - K) dh goes into the cell, side = K dh skips to h_{t-1}.
template <typename T>
void split_dh_row(int64_t N, const T* dHs, const T* dhr, const T* m, T* side, bool has_side,
                  KRow<T> K, T* dhc) {
  using V = Vec<T>;
  const V one(T(1)), zero(T(0));
  for (int64_t u = 0; u < N; u += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), N - u);
    V dh = V::loadu(dHs + u, n);
    dh = dh + (m ? V::loadu(dhr + u, n) * V::loadu(m + u, n) : V::loadu(dhr + u, n));
    if (has_side) dh = dh + V::loadu(side + u, n);
    if (K.on()) {
      const V k = K.load(u, n);
      (dh * (one - k)).store(dhc + u, n);  // through the cell's h~
      (dh * k).store(side + u, n);         // straight to h_{t-1}
    } else {
      dh.store(dhc + u, n);
      if (has_side) zero.store(side + u, n);
    }
  }
}

// Through the activation: act'(P) saved in s, or, where no carry came between (s null),
// read off h_t = act(P) itself.
template <typename T, int ACT>
void rnn_backward_row(int64_t H, const T* dhc, const T* s, const T* h, T* dg) {
  using V = Vec<T>;
  for (int64_t u = 0; u < H; u += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), H - u);
    const V da = s ? V::loadu(s + u, n) : rnn_act_grad<T, ACT>(V::loadu(h + u, n));
    (V::loadu(dhc + u, n) * da).store(dg + u, n);
  }
}

// The derivative of lstm_forward_row. du: the gradient of u = o * tanh(c_out) (dhc
// itself without a projection); dc_next: in, the gradient reaching c_t from step t+1;
// out, the gradient reaching c_{t-1}. With LNC: dco (H) is scratch for the gradient of
// c_out, and the gradients of the layer norm's gain and bias are added into sums (2H).
template <typename T, bool LNC, bool PEEP>
void lstm_backward_row(int64_t H, const T* du_row, const T* dCs, T* dc_next, const T* cp,
                       KRow<T> Kc, const T* s, int64_t chat_at, T rstd_c, const T* w_ch,
                       const T* ln_w, T* dg, T* dco, T* sums) {
  using V = Vec<T>;
  const V one(T(1));
  T m1 = 0, m2 = 0;  // the means of the layer norm's derivative
  if constexpr (LNC) {
    for (int64_t u = 0; u < H; u += V::size()) {  // u = o tanh(c_out), through the tanh
      const int64_t n = std::min<int64_t>(V::size(), H - u);
      const V o = V::loadu(s + 3 * H + u, n), tc = V::loadu(s + 4 * H + u, n);
      const V d = V::loadu(du_row + u, n) * o * (one - tc * tc);
      d.store(dco + u, n);
      at::vec::fmadd(d, V::loadu(s + chat_at + u, n), V::loadu(sums + u, n)).store(sums + u, n);
      (d + V::loadu(sums + H + u, n)).store(sums + H + u, n);
    }
    std::tie(m1, m2) = ln_grad_means<T>(H, dco, ln_w, s + chat_at);
  }
  for (int64_t u = 0; u < H; u += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), H - u);
    const V i = V::loadu(s + u, n), f = V::loadu(s + H + u, n), g = V::loadu(s + 2 * H + u, n),
            o = V::loadu(s + 3 * H + u, n), tc = V::loadu(s + 4 * H + u, n);
    const V du = V::loadu(du_row + u, n), c_prev = V::loadu(cp + u, n);
    V dc = V::loadu(dCs + u, n) + V::loadu(dc_next + u, n);
    V dc_skip(T(0));
    if (Kc.on()) {  // the carried share of c_t skips the cell
      const V k = Kc.load(u, n);
      dc_skip = dc * k;
      dc = dc * (one - k);
    }
    const V dpo = du * tc * o * (one - o);  // u = o tanh(c_out), o = σ(P_o)
    if constexpr (LNC) {  // c_out = LN(c~)
      const V a = V::loadu(dco + u, n) * V::loadu(ln_w + u, n);
      dc = dc + (a - V(m1) - V::loadu(s + chat_at + u, n) * V(m2)) * V(rstd_c);
    } else {
      dc = dc + du * o * (one - tc * tc);  // through h~ = o tanh(c~)
    }
    if constexpr (PEEP) dc = at::vec::fmadd(dpo, V::loadu(w_ch + 2 * H + u, n), dc);  // P_o
    const V dpi = dc * g * i * (one - i), dpf = dc * c_prev * f * (one - f);
    dpi.store(dg + u, n);                               // c~ = ... + i g, i = σ(P_i)
    dpf.store(dg + H + u, n);                           // f c_prev, f = σ(P_f)
    (dc * i * (one - g * g)).store(dg + 2 * H + u, n);  // i g, g = tanh(P_g)
    dpo.store(dg + 3 * H + u, n);
    V dcp = dc * f + dc_skip;  // through f c_prev (and the peepholes of i and f)
    if constexpr (PEEP)
      dcp = at::vec::fmadd(dpf, V::loadu(w_ch + H + u, n),
                           at::vec::fmadd(dpi, V::loadu(w_ch + u, n), dcp));
    dcp.store(dc_next + u, n);
  }
}

// dg: gradient of gx (B, 3H); dgh: of gh = W_hh h_in + b_hh as the gates see it;
// side += dhc z, the path through z * h_prev that skips the GEMM.
template <typename T>
void gru_backward_row(int64_t H, const T* dhc_row, const T* hp, const T* s, T* side, T* dg,
                      T* dgh) {
  using V = Vec<T>;
  const V one(T(1));
  for (int64_t u = 0; u < H; u += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), H - u);
    const V r = V::loadu(s + u, n), z = V::loadu(s + H + u, n), nn = V::loadu(s + 2 * H + u, n),
            ghn = V::loadu(s + 3 * H + u, n);
    const V dhc = V::loadu(dhc_row + u, n);
    const V dpn = dhc * (one - z) * (one - nn * nn);               // (1 - z) n, tanh
    const V dpz = dhc * (V::loadu(hp + u, n) - nn) * z * (one - z);  // z (h_prev - n), σ
    const V dpr = dpn * ghn * r * (one - r);                        // r ghn, σ
    dpr.store(dg + u, n);
    dpz.store(dg + H + u, n);
    dpn.store(dg + 2 * H + u, n);
    dpr.store(dgh + u, n);
    dpz.store(dgh + H + u, n);
    (dpn * r).store(dgh + 2 * H + u, n);  // ghn enters n multiplied by r
    (V::loadu(side + u, n) + dhc * z).store(side + u, n);
  }
}

// -- drivers --------------------------------------------------------------------------

int64_t num_gates(int64_t cell) { return cell == LSTM ? 4 : cell == GRU ? 3 : 1; }

template <typename T>
const T* ptr_or_null(const OptTensor& t) {
  return t && t->defined() ? t->data_ptr<T>() : nullptr;
}

bool given(const OptTensor& t) { return t && t->defined(); }

// The options of one call, and where each saved factor sits in a row of S.
struct Config {
  int64_t cell, H, GH;
  bool carry_h, peephole, ln_c, ln_hh;
  int64_t c_own_at = -1, chat_at = -1, xhat_at = -1, row = 0;  // offsets and row length

  Config(int64_t cell_, int64_t H_, bool carry_h_, bool peephole_, bool ln_c_, bool ln_hh_)
      : cell(cell_), H(H_), GH(num_gates(cell_) * H_), carry_h(carry_h_), peephole(peephole_),
        ln_c(ln_c_), ln_hh(ln_hh_) {
    if (cell == LSTM) {
      row = 5 * H;
      if (peephole) c_own_at = row, row += H;
      if (ln_c) chat_at = row, row += H;
    } else if (cell == GRU) {
      row = 4 * H;
    } else {
      row = carry_h ? H : 0;
    }
    if (ln_hh) xhat_at = row, row += GH;
  }
  bool stats() const { return ln_hh || ln_c; }
};

// The row functions of a call, chosen once from its options.
template <typename T>
using LstmForward = T (*)(int64_t, const T*, const T*, const T*, const T*, KRow<T>, KRow<T>,
                          const T*, const T*, const T*, const T*, T*, T*, T*, T*, int64_t,
                          int64_t, bool);
template <typename T>
LstmForward<T> lstm_forward(const Config& cf) {
  if (cf.ln_c) return cf.peephole ? &lstm_forward_row<T, true, true>
                                  : &lstm_forward_row<T, true, false>;
  return cf.peephole ? &lstm_forward_row<T, false, true> : &lstm_forward_row<T, false, false>;
}

template <typename T>
using LstmBackward = void (*)(int64_t, const T*, const T*, T*, const T*, KRow<T>, const T*,
                              int64_t, T, const T*, const T*, T*, T*, T*);
template <typename T>
LstmBackward<T> lstm_backward(const Config& cf) {
  if (cf.ln_c) return cf.peephole ? &lstm_backward_row<T, true, true>
                                  : &lstm_backward_row<T, true, false>;
  return cf.peephole ? &lstm_backward_row<T, false, true> : &lstm_backward_row<T, false, false>;
}

template <typename T>
using RnnForward = void (*)(int64_t, const T*, const T*, const T*, KRow<T>, const T*, T*, T*,
                            T*);
template <typename T>
RnnForward<T> rnn_forward(int64_t cell) {
  return cell == RNN_TANH ? &rnn_forward_row<T, RNN_TANH>
       : cell == RNN_RELU ? &rnn_forward_row<T, RNN_RELU> : &rnn_forward_row<T, RNN_SIGMOID>;
}

template <typename T>
using RnnBackward = void (*)(int64_t, const T*, const T*, const T*, T*);
template <typename T>
RnnBackward<T> rnn_backward(int64_t cell) {
  return cell == RNN_TANH ? &rnn_backward_row<T, RNN_TANH>
       : cell == RNN_RELU ? &rnn_backward_row<T, RNN_RELU> : &rnn_backward_row<T, RNN_SIGMOID>;
}

template <typename T>
std::vector<Tensor> forward_impl(int64_t cell, const Tensor& gx, const Tensor& h0,
                                 const OptTensor& c0, const Tensor& w_hh,
                                 const OptTensor& b_hh, const OptTensor& w_hr,
                                 const OptTensor& h_mask, const OptTensor& carry_h,
                                 const OptTensor& carry_c, const OptTensor& ln_hh_weight,
                                 const OptTensor& ln_hh_bias, const OptTensor& ln_c_weight,
                                 const OptTensor& ln_c_bias, const OptTensor& w_ch, bool keep) {
  const int64_t T_ = gx.size(0), B = gx.size(1), GH = gx.size(2);
  const int64_t H = GH / num_gates(cell), H_out = h0.size(1);
  const Config cf(cell, H, given(carry_h), given(w_ch), given(ln_c_weight),
                  given(ln_hh_weight));
  const bool proj = given(w_hr);
  const bool masked = given(h_mask);
  const auto opts = gx.options();

  Tensor Hs = at::empty({T_, B, H_out}, opts);
  Tensor Cs = cell == LSTM ? at::empty({T_, B, H}, opts) : Tensor();
  Tensor S = keep ? at::empty({T_, B, cf.row}, opts) : Tensor();
  // zeros: a cell fills only the columns of its own layer norms (rstd of LN(W_hh h), of
  // LN(c~)), and a result must not hold uninitialised memory
  Tensor St = keep && cf.stats() ? at::zeros({T_, B, 2}, opts) : Tensor();
  // the GEMM input h_{t-1} * mask: every step's kept for dW_hh in training, else one.
  // MKL's GEMM rounds differently for inputs at different addresses modulo 64 bytes, so
  // inference places step t's input at the offset it has in training's (T, B, H_out)
  // buffer, modulo 64 bytes, and the two give the same bits.
  const int64_t align = 64 / int64_t(sizeof(T));
  Tensor Hin = masked ? (keep ? at::empty({T_, B, H_out}, opts)
                              : at::empty({B * H_out + align}, opts))
                      : Tensor();
  Tensor gh = at::empty({B, GH}, opts);            // W_hh h_in of this step
  Tensor U = proj ? at::empty({B, H}, opts) : Tensor();  // o * tanh(c_out) before W_hr

  const T* gx_p = gx.data_ptr<T>();
  const T* h0_p = h0.data_ptr<T>();
  const T* c0_p = ptr_or_null<T>(c0);
  const T* w_p = w_hh.data_ptr<T>();
  const T* b_p = ptr_or_null<T>(b_hh);
  const T* wr_p = ptr_or_null<T>(w_hr);
  const T* m_p = ptr_or_null<T>(h_mask);
  const T* lnh_w = ptr_or_null<T>(ln_hh_weight);
  const T* lnh_b = ptr_or_null<T>(ln_hh_bias);
  const T* lnc_w = ptr_or_null<T>(ln_c_weight);
  const T* lnc_b = ptr_or_null<T>(ln_c_bias);
  const T* wch_p = ptr_or_null<T>(w_ch);
  T* Hs_p = Hs.data_ptr<T>();
  T* Cs_p = Cs.defined() ? Cs.data_ptr<T>() : nullptr;
  T* S_p = keep ? S.data_ptr<T>() : nullptr;
  T* St_p = St.defined() ? St.data_ptr<T>() : nullptr;
  T* Hin_p = masked ? Hin.data_ptr<T>() : nullptr;
  T* gh_p = gh.data_ptr<T>();
  T* U_p = proj ? U.data_ptr<T>() : nullptr;
  const Carry<T> Kh(carry_h), Kc(carry_c);
  const int64_t SR = cf.row, BH_out = B * H_out;
  // where step t's GEMM input lies in Hin (see above)
  const auto step_offset = [&](int64_t t) { return keep ? t * BH_out : t * BH_out % align; };
  const auto lstm_row = lstm_forward<T>(cf);
  const auto rnn_row = rnn_forward<T>(cell);

  if (masked) {  // step 0's GEMM input
    for (int64_t j = 0; j < BH_out; ++j) Hin_p[j] = h0_p[j] * m_p[j];
  }
  for (int64_t t = 0; t < T_; ++t) {
    const T* hp = t ? Hs_p + (t - 1) * BH_out : h0_p;
    const T* cp = cell == LSTM ? (t ? Cs_p + (t - 1) * B * H : c0_p) : nullptr;
    T* hin = masked ? Hin_p + step_offset(t) : nullptr;
    T* hin_next = masked && t + 1 < T_ ? Hin_p + step_offset(t + 1) : nullptr;
    matmul<T>(gh_p, masked ? hin : hp, w_p, B, GH, H_out, /*w_is_nk=*/true);  // W_hh h_in
    const T* gx_t = gx_p + t * B * GH;
    T* h_t = Hs_p + t * BH_out;
    T* s_t = keep ? S_p + t * B * SR : nullptr;
    T* st_t = St_p ? St_p + t * B * 2 : nullptr;
    for_rows(B, GH, [&](int64_t b) {
      const T* gxr = gx_t + b * GH;
      T* ghr = gh_p + b * GH;
      const T* hpr = hp + b * H_out;
      const T* mr = m_p ? m_p + b * H_out : nullptr;
      T* hinr = hin_next ? hin_next + b * H_out : nullptr;
      T* sr = s_t ? s_t + b * SR : nullptr;
      if (cf.ln_hh) {  // gh <- LN(W_hh h_in), before the cell adds anything to it
        const T rstd = ln_forward_row<T>(GH, ghr, lnh_w, lnh_b, sr ? sr + cf.xhat_at : nullptr);
        if (st_t) st_t[b * 2] = rstd;
      }
      T* s_rnn = cf.carry_h ? sr : nullptr;  // act' is saved only where h_t cannot give it
      if (cell == LSTM) {
        const T rstd = lstm_row(H, gxr, ghr, hpr, cp + b * H, Kh.row(t, b), Kc.row(t, b), mr,
                                wch_p, lnc_w, lnc_b, proj ? U_p + b * H : h_t + b * H_out,
                                Cs_p + t * B * H + b * H, hinr, sr, cf.c_own_at, cf.chat_at,
                                proj);
        if (st_t && cf.ln_c) st_t[b * 2 + 1] = rstd;
      } else if (cell == GRU) {
        gru_forward_row<T>(H, gxr, ghr, b_p, hpr, Kh.row(t, b), mr, h_t + b * H_out, hinr, sr);
      } else {
        rnn_row(H, gxr, ghr, hpr, Kh.row(t, b), mr, h_t + b * H_out, hinr, s_rnn);
      }
    });
    if (proj) {  // h~ = W_hr u, then its carry and mask
      matmul<T>(h_t, U_p, wr_p, B, H_out, H, /*w_is_nk=*/true);
      if (Kh.data || hin_next) {
        for_rows(B, H_out, [&](int64_t b) {
          finish_h_row<T>(H_out, h_t + b * H_out, hp + b * H_out, Kh.row(t, b),
                          m_p ? m_p + b * H_out : nullptr,
                          hin_next ? hin_next + b * H_out : nullptr);
        });
      }
    }
  }
  return {Hs, Cs, S, keep ? Hin : Tensor(), St};
}

// Σ over time and batch of a (T, B, N) tensor.
Tensor sum_steps(const Tensor& x) { return x.sum(at::IntArrayRef{0, 1}); }

// The gradients of the recurrent side, in the order of rnnkit.cells.Recurrent's fields:
// w_hh, b_hh, w_hr, h_mask (never), ln_hh_weight, ln_hh_bias, ln_c_weight, ln_c_bias, w_ch.
template <typename T>
std::vector<Tensor> backward_impl(int64_t cell, const Tensor& dHs, const OptTensor& dCs,
                                  const Tensor& Hs, const OptTensor& Cs, const Tensor& h0,
                                  const OptTensor& c0, const Tensor& S, const OptTensor& Hin,
                                  const OptTensor& St, const Tensor& w_hh,
                                  const OptTensor& b_hh, const OptTensor& w_hr,
                                  const OptTensor& h_mask, const OptTensor& carry_h,
                                  const OptTensor& carry_c, const OptTensor& ln_hh_weight,
                                  const OptTensor& ln_c_weight, const OptTensor& w_ch,
                                  const std::vector<bool>& need) {
  const int64_t T_ = Hs.size(0), B = Hs.size(1), H_out = Hs.size(2), GH = w_hh.size(0);
  const int64_t H = GH / num_gates(cell), BH_out = B * H_out;
  const Config cf(cell, H, given(carry_h), given(w_ch), given(ln_c_weight),
                  given(ln_hh_weight));
  const int64_t SR = cf.row;
  const bool proj = given(w_hr);
  const bool gru = cell == GRU, lstm = cell == LSTM;
  const Carry<T> Kh(carry_h), Kc(carry_c);
  const bool has_side = Kh.data != nullptr || gru;  // paths from h_t that skip the GEMM
  const auto opts = Hs.options();

  Tensor dG = at::empty({T_, B, GH}, opts);  // gradient of gx
  // of gh as the gates see it: the GRU's differs from dG; with a layer norm only the
  // current step's is needed (its sums are kept in sums_hh)
  Tensor dGH = !gru ? dG : at::empty({cf.ln_hh ? 1 : T_, B, GH}, opts);
  Tensor dGHraw = cf.ln_hh ? at::empty({T_, B, GH}, opts) : dGH;  // of W_hh h_in
  // Σ dgh x^ and Σ dgh (the gain and bias of LN(W_hh h_in), and the GRU's b_hh), and
  // Σ dc_out c^ and Σ dc_out (those of LN(c~))
  RowSums<T> sums_hh(2 * GH, cf.ln_hh), sums_c(2 * H, cf.ln_c);
  Tensor dco = cf.ln_c ? at::empty({std::max(at::get_num_threads(), 1), H}, opts) : Tensor();
  Tensor dhr = at::zeros({B, H_out}, opts);                      // dP_{t+1} W_hh
  Tensor side = at::zeros({B, H_out}, opts);
  Tensor dc_next = lstm ? at::zeros({B, H}, opts) : Tensor();
  // the gradient into the cell's h~: every step's with a projection (for dW_hr)
  Tensor dHc = at::empty({proj ? T_ : 1, B, H_out}, opts);
  Tensor dU = proj ? at::empty({B, H}, opts) : Tensor();

  const T* dHs_p = dHs.data_ptr<T>();
  const T* dCs_p = lstm ? dCs->data_ptr<T>() : nullptr;
  const T* Hs_p = Hs.data_ptr<T>();
  const T* Cs_p = lstm ? Cs->data_ptr<T>() : nullptr;
  const T* h0_p = h0.data_ptr<T>();
  const T* c0_p = ptr_or_null<T>(c0);
  const T* S_p = S.data_ptr<T>();
  const T* St_p = ptr_or_null<T>(St);
  const T* w_p = w_hh.data_ptr<T>();
  const T* wr_p = ptr_or_null<T>(w_hr);
  const T* m_p = ptr_or_null<T>(h_mask);
  const T* lnh_w = ptr_or_null<T>(ln_hh_weight);
  const T* lnc_w = ptr_or_null<T>(ln_c_weight);
  const T* wch_p = ptr_or_null<T>(w_ch);
  T* dG_p = dG.data_ptr<T>();
  T* dGH_p = dGH.data_ptr<T>();
  T* dGHraw_p = dGHraw.data_ptr<T>();
  T* dco_p = cf.ln_c ? dco.data_ptr<T>() : nullptr;
  T* dhr_p = dhr.data_ptr<T>();
  T* side_p = side.data_ptr<T>();
  T* dcn_p = lstm ? dc_next.data_ptr<T>() : nullptr;
  T* dHc_p = dHc.data_ptr<T>();
  T* dU_p = proj ? dU.data_ptr<T>() : nullptr;
  const auto lstm_row = lstm_backward<T>(cf);
  const auto rnn_row = rnn_backward<T>(cell);

  for (int64_t t = T_ - 1; t >= 0; --t) {
    const T* hp = t ? Hs_p + (t - 1) * BH_out : h0_p;
    const T* cp = lstm ? (t ? Cs_p + (t - 1) * B * H : c0_p) : nullptr;
    const T* dHs_t = dHs_p + t * BH_out;
    const T* s_t = S_p + t * B * SR;
    const T* st_t = St_p ? St_p + t * B * 2 : nullptr;
    T* dhc_t = dHc_p + (proj ? t * BH_out : 0);
    T* dg_t = dG_p + t * B * GH;
    T* dgh_t = dGH_p + (dGH.size(0) == 1 ? 0 : t * B * GH);
    T* dghraw_t = dGHraw_p + t * B * GH;
    auto split = [&](int64_t b) {
      split_dh_row<T>(H_out, dHs_t + b * H_out, dhr_p + b * H_out,
                      m_p ? m_p + b * H_out : nullptr, side_p + b * H_out, has_side,
                      Kh.row(t, b), dhc_t + b * H_out);
    };
    auto cell_rows = [&](int64_t b) {
      const T* sr = s_t + b * SR;
      const T* s_rnn = cf.carry_h ? sr : nullptr;
      const T* h_row = Hs_p + t * BH_out + b * H_out;
      if (cell == LSTM) {
        lstm_row(H, proj ? dU_p + b * H : dhc_t + b * H_out, dCs_p + t * B * H + b * H,
                 dcn_p + b * H, cp + b * H, Kc.row(t, b), sr, cf.chat_at,
                 st_t && cf.ln_c ? st_t[b * 2 + 1] : T(1), wch_p, lnc_w, dg_t + b * GH,
                 dco_p ? dco_p + at::get_thread_num() * H : nullptr,
                 sums_c.on() ? sums_c.mine() : nullptr);
      } else if (cell == GRU) {
        gru_backward_row<T>(H, dhc_t + b * H_out, hp + b * H_out, sr, side_p + b * H_out,
                            dg_t + b * GH, dgh_t + b * GH);
      } else {
        rnn_row(H, dhc_t + b * H_out, s_rnn, h_row, dg_t + b * GH);
      }
      if (cf.ln_hh)  // back through gh = LN(W_hh h_in)
        ln_backward_row<T>(GH, dgh_t + b * GH, sr + cf.xhat_at, st_t[b * 2], lnh_w,
                           dghraw_t + b * GH, sums_hh.mine());
    };
    if (proj) {  // dU = dh~ W_hr sits between the split and the cell
      for_rows(B, H_out, split);
      matmul<T>(dU_p, dhc_t, wr_p, B, H, H_out, /*w_is_nk=*/false);
      for_rows(B, GH, cell_rows);
    } else {
      for_rows(B, GH + H_out, [&](int64_t b) {
        split(b);
        cell_rows(b);
      });
    }
    matmul<T>(dhr_p, dghraw_t, w_p, B, H_out, GH, /*w_is_nk=*/false);  // dP_t W_hh
    sums_hh.fold();
    sums_c.fold();
  }

  // what reaches h0: through the GEMM (times the mask) and around it
  Tensor dh0 = given(h_mask) ? dhr.mul_(*h_mask) : dhr;
  if (has_side) dh0.add_(side);
  Tensor dc0 = lstm ? dc_next : Tensor();

  // parameter gradients: single GEMMs and reductions over all T*B rows
  std::vector<Tensor> grads(9);
  if (need[0]) {  // dW_hh = Σ_t dGH_rawᵀ h_in
    if (given(Hin)) {
      grads[0] = dGHraw.view({T_ * B, GH}).t().mm(Hin->view({T_ * B, H_out}));
    } else {  // h_in = [h0, Hs[:-1]], without concatenating them
      grads[0] = dGHraw[0].t().mm(h0);
      if (T_ > 1)
        grads[0].addmm_(dGHraw.narrow(0, 1, T_ - 1).reshape({(T_ - 1) * B, GH}).t(),
                        Hs.narrow(0, 0, T_ - 1).reshape({(T_ - 1) * B, H_out}));
    }
  }
  if (need[1] && given(b_hh))  // b_hh adds to LN(W_hh h_in) as its bias does
    grads[1] = cf.ln_hh ? sums_hh.get(GH, GH, opts) : sum_steps(dGH);
  const Tensor S2 = S.view({T_ * B, SR});
  if (need[2] && proj) {  // dW_hr = Σ_t dh~_tᵀ u_t, u = o * tanh(c_out)
    const Tensor U = S2.narrow(1, 3 * H, H) * S2.narrow(1, 4 * H, H);
    grads[2] = dHc.view({T_ * B, H_out}).t().mm(U);
  }
  if (cf.ln_hh) {
    if (need[4]) grads[4] = sums_hh.get(0, GH, opts);
    if (need[5]) grads[5] = sums_hh.get(GH, GH, opts);
  }
  if (cf.ln_c) {
    if (need[6]) grads[6] = sums_c.get(0, H, opts);
    if (need[7]) grads[7] = sums_c.get(H, H, opts);
  }
  if (cf.peephole && need[8]) {  // P_i and P_f saw c_{t-1}, P_o the cell's own c~
    Tensor C_prev = at::cat({c0->unsqueeze(0), Cs->narrow(0, 0, T_ - 1)});
    Tensor dG3 = dG.view({T_, B, 4, H});
    grads[8] = at::cat({sum_steps(dG3.select(2, 0) * C_prev),
                        sum_steps(dG3.select(2, 1) * C_prev),
                        (dG3.select(2, 3).reshape({T_ * B, H}) * S2.narrow(1, cf.c_own_at, H))
                            .sum(0)});
  }
  std::vector<Tensor> out = {dG, dh0, dc0};
  out.insert(out.end(), grads.begin(), grads.end());
  return out;
}

void check_cell(int64_t cell) {
  TORCH_CHECK(cell >= RNN_TANH && cell <= GRU, "rnnkit compiled engine: unknown cell code ",
              cell);
}

std::vector<Tensor> forward(int64_t cell, const Tensor& gx, const Tensor& h0,
                            const OptTensor& c0, const Tensor& w_hh, const OptTensor& b_hh,
                            const OptTensor& w_hr, const OptTensor& h_mask,
                            const OptTensor& carry_h, const OptTensor& carry_c,
                            const OptTensor& ln_hh_weight, const OptTensor& ln_hh_bias,
                            const OptTensor& ln_c_weight, const OptTensor& ln_c_bias,
                            const OptTensor& w_ch, bool keep) {
  check_cell(cell);
  TORCH_CHECK(!given(w_ch) || cell == LSTM, "peepholes are an LSTM option");
  TORCH_CHECK(!given(ln_c_weight) || (cell == LSTM && given(ln_c_bias)),
              "the layer norm of c needs an LSTM, its weight and its bias");
  TORCH_CHECK(given(ln_hh_weight) == given(ln_hh_bias),
              "the layer norm of W_hh h needs both its weight and its bias");
  std::vector<Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(gx.scalar_type(), "rnnkit_fused_forward", [&] {
    out = forward_impl<scalar_t>(cell, gx, h0, c0, w_hh, b_hh, w_hr, h_mask, carry_h,
                                 carry_c, ln_hh_weight, ln_hh_bias, ln_c_weight, ln_c_bias,
                                 w_ch, keep);
  });
  return out;
}

std::vector<Tensor> backward(int64_t cell, const Tensor& dHs, const OptTensor& dCs,
                             const Tensor& Hs, const OptTensor& Cs, const Tensor& h0,
                             const OptTensor& c0, const Tensor& S, const OptTensor& Hin,
                             const OptTensor& St, const Tensor& w_hh, const OptTensor& b_hh,
                             const OptTensor& w_hr, const OptTensor& h_mask,
                             const OptTensor& carry_h, const OptTensor& carry_c,
                             const OptTensor& ln_hh_weight, const OptTensor& ln_c_weight,
                             const OptTensor& w_ch, const std::vector<bool>& need) {
  check_cell(cell);
  TORCH_CHECK(need.size() == 9, "need: one flag per field of Recurrent, got ", need.size());
  std::vector<Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(Hs.scalar_type(), "rnnkit_fused_backward", [&] {
    out = backward_impl<scalar_t>(cell, dHs, dCs, Hs, Cs, h0, c0, S, Hin, St, w_hh, b_hh, w_hr,
                                  h_mask, carry_h, carry_c, ln_hh_weight, ln_c_weight, w_ch,
                                  need);
  });
  return out;
}

bool direct_blas() { return have_blas<float>() && have_blas<double>(); }

}  // namespace

// Called by name from Python (rnnkit/engines/compiled.py, ops.py): the fields of the
// Python record Recurrent keep their names here, so no two files must agree on an order.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.def("forward", &forward, "fused recurrence, forward", py::kw_only(), py::arg("cell"),
        py::arg("gx"), py::arg("h0"), py::arg("c0"), py::arg("w_hh"), py::arg("b_hh"),
        py::arg("w_hr"), py::arg("h_mask"), py::arg("carry_h"), py::arg("carry_c"),
        py::arg("ln_hh_weight"), py::arg("ln_hh_bias"), py::arg("ln_c_weight"),
        py::arg("ln_c_bias"), py::arg("w_ch"), py::arg("keep"));
  m.def("backward", &backward, "fused recurrence, backward", py::kw_only(), py::arg("cell"),
        py::arg("dHs"), py::arg("dCs"), py::arg("Hs"), py::arg("Cs"), py::arg("h0"),
        py::arg("c0"), py::arg("S"), py::arg("Hin"), py::arg("St"), py::arg("w_hh"),
        py::arg("b_hh"), py::arg("w_hr"), py::arg("h_mask"), py::arg("carry_h"),
        py::arg("carry_c"), py::arg("ln_hh_weight"), py::arg("ln_c_weight"), py::arg("w_ch"),
        py::arg("need"));
  m.def("direct_blas", &direct_blas, "whether per-step GEMMs call MKL directly");
}
