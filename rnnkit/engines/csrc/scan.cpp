// The compiled scan: the linear recurrence of minGRU / minLSTM and its backward, as two
// time loops on raw memory (rnnkit/engines/scan.py, method "compiled").
//
//   forward   h_t = a_t * h_{t-1} + b_t                       t = 0 .. T-1, h_{-1} = h0
//   backward  g_t = dH_t + a_{t+1} * g_{t+1}                  t = T-1 .. 0, g_T = 0
//             da_t = g_t * h_{t-1},  db_t = g_t,  dh0 = a_0 * g_0
//
// (g_t is the whole gradient reaching h_t: from the output at t and through h_{t+1}.
// The backward of a linear recurrence is the same recurrence run backwards in time.)
//
// Why it exists: the recurrence is a few flops per unit and step, so a Python loop
// spends its time dispatching two tiny ops a step, and the parallel forms (log-space,
// chunked) do several times the memory traffic. Here each thread takes a contiguous
// range of the B*H units and walks it through all T steps: one pass over memory, the
// row it just wrote still in cache for the next step. Built without floating-point
// contraction, so a step rounds as torch's `a * h + b` does and this loop agrees bit
// for bit with the sequential reference given the same coefficients.
//
// Beside the scan, the coefficients of the two cells (rnnkit/cells/minrnn.py, the
// single source of their math, against which tests/test_minrnn.py checks these values
// and every gradient) in one vectorised pass each way, instead of the dozen ATen ops
// (each a pass over memory) that autograd would run:
//
//   a = σ(-d),  b = σ(d) g(k_h),   g(k) = k + 1/2 (k ≥ 0), σ(k) (k < 0)
//   minGRU   gx rows [k_z | k_h]:        d = k_z
//   minLSTM  gx rows [k_f | k_i | k_h]:  d = softplus(-k_f) - softplus(-k_i)
//
// A row r (one step of one sample) with valid[r] == 0 is padding: a = 1, b = 0 there,
// and no gradient reaches its gx.
//
// Layouts: a, b, H, dH, da, db (T, N) row-major with N = B*H units; h0, dh0 (N,);
// gx, dgx (R, G*H) with R = T*B rows; a, b, da, db also read as (R, H).

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <optional>
#include <vector>

namespace {

using at::Tensor;
template <typename T>
using Vec = at::vec::Vectorized<T>;

// units per parallel task: below this a thread's share is not worth waking it for
constexpr int64_t kGrain = 512;

template <typename T>
void scan_forward(const T* a, const T* b, const T* h0, T* H, int64_t steps, int64_t units) {
  at::parallel_for(0, units, kGrain, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    const T* h_prev = h0 + begin;
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t row = t * units + begin;
      const T* __restrict__ a_t = a + row;
      const T* __restrict__ b_t = b + row;
      const T* __restrict__ hp = h_prev;
      T* __restrict__ h_t = H + row;
      for (int64_t u = 0; u < n; ++u) h_t[u] = a_t[u] * hp[u] + b_t[u];
      h_prev = h_t;
    }
  });
}

template <typename T>
void scan_backward(const T* a, const T* H, const T* h0, const T* dH, T* da, T* db, T* dh0,
                   int64_t steps, int64_t units) {
  at::parallel_for(0, units, kGrain, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    for (int64_t t = steps - 1; t >= 0; --t) {
      const int64_t row = t * units + begin;
      const T* __restrict__ dH_t = dH + row;
      const T* __restrict__ h_prev = t > 0 ? H + row - units : h0 + begin;
      T* __restrict__ g_t = db + row;  // db_t = g_t: db holds g
      T* __restrict__ da_t = da + row;
      if (t == steps - 1) {
        for (int64_t u = 0; u < n; ++u) {
          g_t[u] = dH_t[u];
          da_t[u] = g_t[u] * h_prev[u];  // through a_t * h_{t-1}
        }
      } else {
        const T* __restrict__ a_next = a + row + units;
        const T* __restrict__ g_next = db + row + units;
        for (int64_t u = 0; u < n; ++u) {
          g_t[u] = dH_t[u] + a_next[u] * g_next[u];  // from the output, and through h_{t+1}
          da_t[u] = g_t[u] * h_prev[u];
        }
      }
    }
    const T* __restrict__ a_0 = a + begin;
    const T* __restrict__ g_0 = db + begin;
    for (int64_t u = 0; u < n; ++u) dh0[begin + u] = a_0[u] * g_0[u];  // through a_0 * h0
  });
}

void check(const Tensor& t, const Tensor& like, const char* name, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), "scan: ", name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "scan: ", name, " has dtype ",
              t.scalar_type(), ", expected ", like.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "scan: ", name, " must be contiguous");
  TORCH_CHECK(t.dim() == dim, "scan: ", name, " must be ", dim, "-D, got ", t.dim(), "-D");
}

// a, b (T, N); h0 (N,) -> H (T, N)
Tensor forward(const Tensor& a, const Tensor& b, const Tensor& h0) {
  check(a, a, "a", 2);
  check(b, a, "b", 2);
  check(h0, a, "h0", 1);
  TORCH_CHECK(b.sizes() == a.sizes() && h0.size(0) == a.size(1),
              "scan: a, b must be (T, N) and h0 (N,), got ", a.sizes(), ", ", b.sizes(),
              ", ", h0.sizes());
  Tensor H = at::empty_like(a);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "rnnkit_scan_forward", [&] {
    scan_forward<scalar_t>(a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
                           h0.data_ptr<scalar_t>(), H.data_ptr<scalar_t>(), a.size(0),
                           a.size(1));
  });
  return H;
}

// -> (da, db, dh0)
std::vector<Tensor> backward(const Tensor& a, const Tensor& H, const Tensor& h0,
                             const Tensor& dH) {
  check(a, a, "a", 2);
  check(H, a, "H", 2);
  check(h0, a, "h0", 1);
  check(dH, a, "dH", 2);
  Tensor da = at::empty_like(a), db = at::empty_like(a), dh0 = at::empty_like(h0);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "rnnkit_scan_backward", [&] {
    scan_backward<scalar_t>(a.data_ptr<scalar_t>(), H.data_ptr<scalar_t>(),
                            h0.data_ptr<scalar_t>(), dH.data_ptr<scalar_t>(),
                            da.data_ptr<scalar_t>(), db.data_ptr<scalar_t>(),
                            dh0.data_ptr<scalar_t>(), a.size(0), a.size(1));
  });
  return {da, db, dh0};
}

// -- the cells' coefficients --------------------------------------------------------

enum CellKind : int64_t { MIN_GRU = 0, MIN_LSTM = 1 };

// σ(x) and σ(-x) from one exp of -|x| (never overflows): σ(|x|) = 1 / (1 + e),
// σ(-|x|) = e / (1 + e).
template <typename T>
inline void sigmoid_pair(const Vec<T>& x, Vec<T>& s_pos, Vec<T>& s_neg) {
  const Vec<T> one(T(1));
  const Vec<T> e = x.abs().neg().exp();
  const Vec<T> r = one / (one + e);
  const Vec<T> q = e * r;
  const Vec<T> nonneg = x >= Vec<T>(T(0));
  s_pos = Vec<T>::blendv(q, r, nonneg);
  s_neg = Vec<T>::blendv(r, q, nonneg);
}

// For softplus(-k) = max(-k, 0) + log(1 + e), e = exp(-|k|) ∈ (0, 1]: the pieces
// max(-k, 0) and 1 + e, and the derivative's σ(-k) = -d softplus(-k) / dk
template <typename T>
inline void softplus_neg_parts(const Vec<T>& k, Vec<T>& lin, Vec<T>& one_e, Vec<T>& sig_neg) {
  const Vec<T> zero(T(0)), one(T(1));
  const Vec<T> e = k.abs().neg().exp();
  lin = at::vec::maximum(k.neg(), zero);
  one_e = one + e;
  const Vec<T> r = one / one_e;
  sig_neg = Vec<T>::blendv(r, e * r, k >= zero);
}

// g(k) and g'(k)
template <typename T>
inline void candidate(const Vec<T>& k, Vec<T>& g, Vec<T>& dg) {
  const Vec<T> zero(T(0)), one(T(1)), half(T(0.5));
  const Vec<T> e = at::vec::minimum(k, zero).exp();  // ≤ 1
  const Vec<T> s = e / (one + e);                      // σ(k) for k < 0
  const Vec<T> nonneg = k >= zero;
  g = Vec<T>::blendv(s, k + half, nonneg);
  dg = Vec<T>::blendv(s * (one - s), one, nonneg);
}

// d (the mix logit) of one vector of units, with what its backward needs
template <typename T>
inline Vec<T> mix_logit(int64_t kind, const T* row, int64_t H, int64_t u, int64_t n,
                        Vec<T>& sig_nf, Vec<T>& sig_ni) {
  if (kind == MIN_GRU) return Vec<T>::loadu(row + u, n);
  Vec<T> lin_f, one_e_f, lin_i, one_e_i;
  softplus_neg_parts(Vec<T>::loadu(row + u, n), lin_f, one_e_f, sig_nf);
  softplus_neg_parts(Vec<T>::loadu(row + H + u, n), lin_i, one_e_i, sig_ni);
  // the two logs as one: their quotient lies in [1/2, 2], where log is exact enough
  return (lin_f - lin_i) + (one_e_f / one_e_i).log();
}

template <typename T>
void coeff_forward_impl(int64_t kind, const T* gx, const uint8_t* valid, T* a, T* b,
                        int64_t R, int64_t H) {
  const int64_t G = kind == MIN_GRU ? 2 : 3, W = Vec<T>::size();
  at::parallel_for(0, R, std::max<int64_t>(1, 16384 / (G * H)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* a_r = a + r * H;
      T* b_r = b + r * H;
      if (valid && !valid[r]) {  // padding: the state is carried
        std::fill(a_r, a_r + H, T(1));
        std::fill(b_r, b_r + H, T(0));
        continue;
      }
      const T* row = gx + r * G * H;
      for (int64_t u = 0; u < H; u += W) {
        const int64_t n = std::min(W, H - u);
        Vec<T> unused_f, unused_i, s, s_neg, g, dg;
        const Vec<T> d = mix_logit(kind, row, H, u, n, unused_f, unused_i);
        sigmoid_pair(d, s, s_neg);
        candidate(Vec<T>::loadu(row + (G - 1) * H + u, n), g, dg);
        s_neg.store(a_r + u, n);
        (s * g).store(b_r + u, n);
      }
    }
  });
}

template <typename T>
void coeff_backward_impl(int64_t kind, const T* gx, const uint8_t* valid, const T* da,
                         const T* db, T* dgx, int64_t R, int64_t H) {
  const int64_t G = kind == MIN_GRU ? 2 : 3, W = Vec<T>::size();
  at::parallel_for(0, R, std::max<int64_t>(1, 16384 / (G * H)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* out = dgx + r * G * H;
      if (valid && !valid[r]) {
        std::fill(out, out + G * H, T(0));
        continue;
      }
      const T* row = gx + r * G * H;
      for (int64_t u = 0; u < H; u += W) {
        const int64_t n = std::min(W, H - u);
        Vec<T> sig_nf, sig_ni, s, s_neg, g, dg;
        const Vec<T> d = mix_logit(kind, row, H, u, n, sig_nf, sig_ni);
        sigmoid_pair(d, s, s_neg);
        candidate(Vec<T>::loadu(row + (G - 1) * H + u, n), g, dg);
        const Vec<T> da_u = Vec<T>::loadu(da + r * H + u, n);
        const Vec<T> db_u = Vec<T>::loadu(db + r * H + u, n);
        // a = σ(-d), b = σ(d) g: both through σ'(d) = σ(d) σ(-d)
        const Vec<T> dd = s * s_neg * (db_u * g - da_u);
        (db_u * s * dg).store(out + (G - 1) * H + u, n);  // through g(k_h)
        if (kind == MIN_GRU) {
          dd.store(out + u, n);
        } else {  // d = softplus(-k_f) - softplus(-k_i)
          (dd * sig_nf).neg().store(out + u, n);
          (dd * sig_ni).store(out + H + u, n);
        }
      }
    }
  });
}

const uint8_t* valid_ptr(const std::optional<Tensor>& valid, int64_t R) {
  if (!valid || !valid->defined()) return nullptr;
  TORCH_CHECK(valid->scalar_type() == at::kBool && valid->is_contiguous() &&
                  valid->numel() == R && valid->device().is_cpu(),
              "scan: valid must be a contiguous bool CPU tensor of ", R, " rows");
  return reinterpret_cast<const uint8_t*>(valid->data_ptr<bool>());
}

int64_t num_gates(int64_t kind) {
  TORCH_CHECK(kind == MIN_GRU || kind == MIN_LSTM, "scan: unknown cell kind ", kind);
  return kind == MIN_GRU ? 2 : 3;
}

// gx (R, G*H), valid (R,) bool or None -> (a, b), each (R, H)
std::vector<Tensor> coefficients(int64_t kind, const Tensor& gx,
                                 const std::optional<Tensor>& valid) {
  check(gx, gx, "gx", 2);
  const int64_t G = num_gates(kind), R = gx.size(0), H = gx.size(1) / G;
  TORCH_CHECK(gx.size(1) == G * H, "scan: gx must have ", G, "*H columns, got ", gx.size(1));
  Tensor a = at::empty({R, H}, gx.options()), b = at::empty({R, H}, gx.options());
  const uint8_t* v = valid_ptr(valid, R);
  AT_DISPATCH_FLOATING_TYPES(gx.scalar_type(), "rnnkit_scan_coefficients", [&] {
    coeff_forward_impl<scalar_t>(kind, gx.data_ptr<scalar_t>(), v, a.data_ptr<scalar_t>(),
                                 b.data_ptr<scalar_t>(), R, H);
  });
  return {a, b};
}

// -> dgx (R, G*H)
Tensor coefficients_backward(int64_t kind, const Tensor& gx, const std::optional<Tensor>& valid,
                             const Tensor& da, const Tensor& db) {
  check(gx, gx, "gx", 2);
  check(da, gx, "da", 2);
  check(db, gx, "db", 2);
  const int64_t G = num_gates(kind), R = gx.size(0), H = gx.size(1) / G;
  TORCH_CHECK(da.size(0) == R && da.size(1) == H && db.sizes() == da.sizes(),
              "scan: da, db must be (", R, ", ", H, "), got ", da.sizes(), ", ", db.sizes());
  Tensor dgx = at::empty_like(gx);
  const uint8_t* v = valid_ptr(valid, R);
  AT_DISPATCH_FLOATING_TYPES(gx.scalar_type(), "rnnkit_scan_coefficients_backward", [&] {
    coeff_backward_impl<scalar_t>(kind, gx.data_ptr<scalar_t>(), v, da.data_ptr<scalar_t>(),
                                  db.data_ptr<scalar_t>(), dgx.data_ptr<scalar_t>(), R, H);
  });
  return dgx;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "h_t = a_t * h_{t-1} + b_t over time");
  m.def("backward", &backward, "gradients of the scan: (da, db, dh0)");
  m.def("coefficients", &coefficients, "(a, b) of minGRU (0) / minLSTM (1) from gx");
  m.def("coefficients_backward", &coefficients_backward, "dgx from (da, db)");
}
