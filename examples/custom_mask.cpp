// examples/custom_mask.cpp — defining attention masks of your own and fusing them into the
// tiled softmax kernel (polyattn/softmax/fusion.hpp), for every ISA.
//
// A mask is any type that satisfies polyattn::softmax::FusionMask: a MaskPolicy
//   TileClass classify(RowRange rows, KeyRange keys) const   Skip / Full / Partial for a tile of
//                                                            query rows × keys (CausalPartial
//                                                            when it is exactly j ≤ p there)
//   bool visible(index_t r, index_t p, index_t j) const      query row r (key position p) sees j
// or a type whose bind(const HeadContext&) returns one, for a mask that depends on the batch
// row, the head or the packed offsets of varlen. softmax::with_mask(m) makes it a fusion, and
//   softmax::flash_attention(in, opt, with_mask(m), o[, lse], exec)
// computes attention where key j is visible to query i when opt's masks (causal, window, sink
// tokens, block mask) AND m allow it; skipped tiles cost nothing, full tiles no per-element mask.
// (A score modifier — softmax::with_modifier(s), or fuse(m, s) — works the same way.)
//
// Two masks that are not built in:
//   TreeMask      speculative decoding, verification of a draft *tree*: P prefix tokens are in
//                 the cache, the N draft tokens are the queries (query i at key position P + i);
//                 draft token i sees the whole prefix and its ancestors in the tree (parent
//                 pointers), itself included. One tree per batch row: the mask binds to b.
//   DocumentMask  several documents packed in one sequence, told apart by segment ids: a token
//                 sees only keys of its own document (with opt.causal: causal per document).
// Both are checked against a naive double-precision softmax with the same dense mask, written
// below; the program exits non-zero on a mismatch.
//
// Per-ISA units. A fusion of yours runs in a kernel type of its own,
// softmax::FlashKernelFor<Fusion<...>>. Named in a kernel list of yours,
//   #define MY_KERNELS(X)
//   X(::polyattn::softmax::FlashKernelFor<::polyattn::softmax::Fusion<::TreeMask>>) ...
//   MY_KERNELS(POLYATTN_KERNEL_EXTERN)         next to your types (a header of yours)
//   MY_KERNELS(POLYATTN_KERNEL_INSTANTIATE)    in a unit source of yours, compiled per ISA by
//     polyattn_add_arch_units(my_app ISAS avx512 avx2 sse42 scalar SOURCES my_masks_units.cpp)
// it is compiled once per ISA and flash_attention runs the best one the CPU has, also in a binary
// built for generic x86-64. (Without a list, the kernel is compiled in the calling file, for the
// ISAs its own flags enable: plain scalar code on generic x86-64.) To keep this example one file,
// the file is both: examples/CMakeLists.txt passes it to polyattn_add_arch_units too, and the
// part guarded by POLYATTN_UNIT_ARCH (defined only in those per-ISA compilations) is the unit
// source. In a project of yours, put the types and the list in a header and the instantiation
// in its own .cpp.
// Hooks are templates on the Arch tag with a default (`template <simd::SimdArch A =
// simd::scalar_arch>`): the kernel then instantiates them per ISA, so no copy compiled with
// AVX-512 can be picked by the linker for the SSE4.2 kernel (core/simd/dispatch.hpp).
//
//   usage: polyattn-example-custom-mask
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <polyattn/softmax/flash.hpp>

namespace pa = polyattn;
namespace sm = polyattn::softmax;
using pa::index_t;

// ---- the masks ---------------------------------------------------------------------------------

// Draft trees of N tokens after a prefix of P tokens, one tree per batch row.
struct TreeMask {
  index_t P = 0, N = 0;
  // sees[(b·N + i)·N + a] = 1 when draft token a is i or an ancestor of i (from parent pointers).
  const std::vector<std::uint8_t>* sees = nullptr;

  struct Bound {
    index_t P, N;
    const std::uint8_t* tree;  // this batch row's [N][N]
    template <pa::simd::SimdArch A = pa::simd::scalar_arch>
    bool visible(index_t r, index_t, index_t j) const {
      return j < P || tree[r * N + (j - P)] != 0;
    }
    template <pa::simd::SimdArch A = pa::simd::scalar_arch>
    sm::TileClass classify(sm::RowRange rows, sm::KeyRange keys) const {
      if (keys.j1 <= P) return sm::TileClass::Full;  // prefix keys: every draft token sees them
      bool any = keys.j0 < P, all = true;
      for (index_t r = rows.r0; r < rows.r1; ++r)
        for (index_t j = std::max(keys.j0, P); j < keys.j1; ++j) {
          const bool v = tree[r * N + (j - P)] != 0;
          any = any || v;
          all = all && v;
        }
      return !any ? sm::TileClass::Skip : (all ? sm::TileClass::Full : sm::TileClass::Partial);
    }
  };
  template <pa::simd::SimdArch A = pa::simd::scalar_arch>
  Bound bind(const sm::HeadContext& c) const {
    return {P, N, sees->data() + c.batch * N * N};
  }
  // Called by flash_attention before anything is written.
  void check(const pa::SoftmaxDims& d) const {
    if (d.T != N || d.S != P + N)
      throw pa::Error("tree", "built for " + std::to_string(N) + " draft tokens after " +
                                  std::to_string(P) + " prefix tokens; the call has T = " +
                                  std::to_string(d.T) + ", S = " + std::to_string(d.S));
  }
};
static_assert(sm::FusionMask<TreeMask>);

// Documents packed along T (T == S), segment ids [B, T], non-decreasing along each row.
struct DocumentMask {
  index_t T = 0;
  const std::vector<std::int32_t>* segment = nullptr;

  struct Bound {
    const std::int32_t* seg;  // this batch row's ids
    index_t q0, k0;           // packed offsets (varlen), 0 here
    template <pa::simd::SimdArch A = pa::simd::scalar_arch>
    bool visible(index_t r, index_t, index_t j) const {
      return seg[q0 + r] == seg[k0 + j];
    }
    template <pa::simd::SimdArch A = pa::simd::scalar_arch>
    sm::TileClass classify(sm::RowRange rows, sm::KeyRange keys) const {
      // Ids are non-decreasing: the tile is all one document iff its corners agree, and sees
      // nothing iff the id ranges of its rows and keys do not overlap.
      const std::int32_t q_lo = seg[q0 + rows.r0], q_hi = seg[q0 + rows.r1 - 1];
      const std::int32_t k_lo = seg[k0 + keys.j0], k_hi = seg[k0 + keys.j1 - 1];
      if (q_hi < k_lo || k_hi < q_lo) return sm::TileClass::Skip;
      if (q_lo == q_hi && k_lo == k_hi && q_lo == k_lo) return sm::TileClass::Full;
      return sm::TileClass::Partial;
    }
  };
  template <pa::simd::SimdArch A = pa::simd::scalar_arch>
  Bound bind(const sm::HeadContext& c) const {
    return {segment->data() + c.batch * T, c.q_offset, c.k_offset};
  }
};
static_assert(sm::FusionMask<DocumentMask>);

// ---- the kernel list (this example's own per-ISA units) ----------------------------------------

#define CUSTOM_MASK_KERNELS(X)                                                    \
  X(::polyattn::softmax::FlashKernelFor<::polyattn::softmax::Fusion<::TreeMask>>) \
  X(::polyattn::softmax::FlashKernelFor<::polyattn::softmax::Fusion<::DocumentMask>>)

#if defined(POLYATTN_UNIT_ARCH)
// This file compiled as one of its per-ISA units (see the header comment): the kernels' bodies.
CUSTOM_MASK_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
#else
CUSTOM_MASK_KERNELS(POLYATTN_KERNEL_EXTERN)

// ---- a naive double-precision check ------------------------------------------------------------

// o[b,i,h] = Σ_j e^{s_ij} v_j / Σ_j e^{s_ij} over the keys where visible(b, i, j), s = q·k/√D.
template <class Visible>
std::vector<double> naive_softmax(const std::vector<float>& q, const std::vector<float>& k,
                                  const std::vector<float>& v, index_t B, index_t T, index_t S,
                                  index_t HQ, index_t HKV, index_t D, Visible visible) {
  std::vector<double> o(static_cast<std::size_t>(B * T * HQ * D), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < HQ; ++h)
      for (index_t i = 0; i < T; ++i) {
        const index_t hk = h / (HQ / HKV);
        std::vector<double> s(static_cast<std::size_t>(S), -INFINITY);
        double m = -INFINITY;
        for (index_t j = 0; j < S; ++j) {
          if (!visible(b, i, j)) continue;
          double dot = 0.0;
          for (index_t e = 0; e < D; ++e)
            dot +=
                static_cast<double>(q[static_cast<std::size_t>(((b * T + i) * HQ + h) * D + e)]) *
                k[static_cast<std::size_t>(((b * S + j) * HKV + hk) * D + e)];
          s[static_cast<std::size_t>(j)] = scale * dot;
          m = std::max(m, scale * dot);
        }
        if (m == -INFINITY) continue;  // sees nothing: zeros
        double den = 0.0;
        double* out = &o[static_cast<std::size_t>(((b * T + i) * HQ + h) * D)];
        for (index_t j = 0; j < S; ++j) {
          if (s[static_cast<std::size_t>(j)] == -INFINITY) continue;
          const double p = std::exp(s[static_cast<std::size_t>(j)] - m);
          den += p;
          for (index_t e = 0; e < D; ++e)
            out[e] += p * v[static_cast<std::size_t>(((b * S + j) * HKV + hk) * D + e)];
        }
        for (index_t e = 0; e < D; ++e) out[e] /= den;
      }
  return o;
}

double rel_rmse(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

std::vector<float> random_floats(std::size_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(n);
  for (float& e : x) e = nd(rng);
  return x;
}

int main() {
  std::mt19937 rng(7);
  bool ok = true;

  // Tree verification: B = 2 trees of N = 40 draft tokens after P = 300 prefix tokens, GQA.
  {
    const index_t B = 2, P = 300, N = 40, S = P + N, HQ = 8, HKV = 2, D = 64;
    std::vector<std::uint8_t> sees(static_cast<std::size_t>(B * N * N), 0);
    for (index_t b = 0; b < B; ++b) {
      std::vector<index_t> parent(static_cast<std::size_t>(N));
      for (index_t i = 0; i < N; ++i)  // a random tree: the parent precedes the child
        parent[static_cast<std::size_t>(i)] =
            i == 0 ? -1 : std::uniform_int_distribution<index_t>(-1, i - 1)(rng);
      for (index_t i = 0; i < N; ++i)
        for (index_t a = i; a >= 0; a = parent[static_cast<std::size_t>(a)])
          sees[static_cast<std::size_t>((b * N + i) * N + a)] = 1;
    }
    const auto q = random_floats(static_cast<std::size_t>(B * N * HQ * D), rng);
    const auto k = random_floats(static_cast<std::size_t>(B * S * HKV * D), rng);
    const auto v = random_floats(static_cast<std::size_t>(B * S * HKV * D), rng);
    std::vector<float> o(static_cast<std::size_t>(B * N * HQ * D));
    const pa::SoftmaxInputs in{.q = pa::bthd(q.data(), B, N, HQ, D),
                               .k = pa::bthd(k.data(), B, S, HKV, D),
                               .v = pa::bthd(v.data(), B, S, HKV, D)};
    pa::SoftmaxOptions opt;
    opt.causal = true;  // query i at key position P + i: ancestors come before it anyway
    sm::flash_attention(in, opt, sm::with_mask(TreeMask{P, N, &sees}),
                        pa::bthd(o.data(), B, N, HQ, D));
    const auto want =
        naive_softmax(q, k, v, B, N, S, HQ, HKV, D, [&](index_t b, index_t i, index_t j) {
          return j <= P + i && (j < P || sees[static_cast<std::size_t>((b * N + i) * N + (j - P))]);
        });
    const double err = rel_rmse(o, want);
    std::printf("tree mask: %ld draft tokens after %ld prefix tokens, %ld trees: rel. RMSE %.2e\n",
                static_cast<long>(N), static_cast<long>(P), static_cast<long>(B), err);
    ok = ok && err < 1e-5;

    // The policy's own check runs before anything is written.
    try {
      sm::flash_attention(in, opt, sm::with_mask(TreeMask{P + 1, N, &sees}),
                          pa::bthd(o.data(), B, N, HQ, D));
      ok = false;
    } catch (const pa::Error& e) {
      std::printf("a tree for the wrong length: %s\n", e.what());
    }
  }

  // Document masking: B = 2 rows of T = 500 tokens, each several documents, causal within each.
  {
    const index_t B = 2, T = 500, HQ = 4, HKV = 4, D = 32;
    std::vector<std::int32_t> seg(static_cast<std::size_t>(B * T));
    for (index_t b = 0; b < B; ++b) {
      std::int32_t id = 0;
      for (index_t t = 0; t < T; ++t) {
        if (t > 0 && std::uniform_int_distribution<int>(0, 99)(rng) < 2) ++id;  // ~10 documents
        seg[static_cast<std::size_t>(b * T + t)] = id;
      }
    }
    const auto q = random_floats(static_cast<std::size_t>(B * T * HQ * D), rng);
    const auto k = random_floats(static_cast<std::size_t>(B * T * HKV * D), rng);
    const auto v = random_floats(static_cast<std::size_t>(B * T * HKV * D), rng);
    std::vector<float> o(static_cast<std::size_t>(B * T * HQ * D));
    const pa::SoftmaxInputs in{.q = pa::bthd(q.data(), B, T, HQ, D),
                               .k = pa::bthd(k.data(), B, T, HKV, D),
                               .v = pa::bthd(v.data(), B, T, HKV, D)};
    pa::SoftmaxOptions opt;
    opt.causal = true;
    sm::flash_attention(in, opt, sm::with_mask(DocumentMask{T, &seg}),
                        pa::bthd(o.data(), B, T, HQ, D));
    const auto want =
        naive_softmax(q, k, v, B, T, T, HQ, HKV, D, [&](index_t b, index_t i, index_t j) {
          return j <= i && seg[static_cast<std::size_t>(b * T + i)] ==
                               seg[static_cast<std::size_t>(b * T + j)];
        });
    const double err = rel_rmse(o, want);
    std::printf("document mask: %ld tokens in %d + %d documents, causal: rel. RMSE %.2e\n",
                static_cast<long>(T), seg[static_cast<std::size_t>(T - 1)] + 1,
                seg[static_cast<std::size_t>(2 * T - 1)] + 1, err);
    ok = ok && err < 1e-5;
  }

  std::printf("%s\n", ok ? "ok" : "MISMATCH");
  return ok ? 0 : 1;
}
#endif
