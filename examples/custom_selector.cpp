// examples/custom_selector.cpp — defining a sparse-attention selector of your own.
//
// A selector is any type that satisfies polyattn::sparse::BlockSelector
// (polyattn/sparse/selector.hpp):
//   index_t block_size() const
//   void select(const SoftmaxInputs& in, const SoftmaxOptions& opt, BlockMask& out) const
// It writes a BlockMask [B, HQ, ceil(T/block), ceil(S/block)]; sparse_attention() hands it to
// the block-sparse flash kernel, which skips every (query block, key block) tile left unset.
// The library's selectors are built from SelectionPlan + fill_mask(): fill_mask walks every
// (sequence, head, query block) "BlockRow", applies the shared KeepOptions (diagonal, sink
// blocks, local window) and calls the selector's rule to mark more key blocks; the candidate
// range [row.lo, row.hi] already respects causality and the sequence's own keys.
//
// The rule below keeps a dilated stripe: every `stride`-th key block counted back from the
// diagonal (a "strided" pattern, as in Sparse Transformers), plus the default keep options.
//
//   usage: polyattn-example-custom-selector
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <polyattn/testing.hpp>  // the library and its naive references

namespace pa = polyattn;
using pa::index_t;

struct StridedSelector {
  index_t block = 64;
  index_t stride = 4;
  pa::sparse::KeepOptions keep{};

  index_t block_size() const noexcept { return block; }

  template <pa::Executor E = pa::Serial>
  void select(const pa::SoftmaxInputs& in, const pa::SoftmaxOptions& opt, pa::BlockMask& out,
              const E& exec = E{}) const {
    if (stride < 1) throw pa::Error("stride", "must be >= 1, got " + std::to_string(stride));
    const pa::sparse::SelectionPlan plan(in, opt, block);  // validates in and opt
    const index_t s = stride;
    pa::sparse::fill_mask(
        plan, keep, out, exec,
        [s](const pa::sparse::BlockRow& r, index_t, std::uint8_t* marks, pa::sparse::RowScratch&) {
          if (!r.has_diagonal()) return;
          for (index_t kb = r.diag_lo - s; kb >= r.lo; kb -= s)
            pa::sparse::mark_range(marks, r, kb, kb);
        });
  }
};
static_assert(pa::sparse::BlockSelector<StridedSelector>);

int main() {
  const index_t B = 1, T = 1024, H = 4, D = 64;
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> q(B * T * H * D), k(q.size()), v(q.size()), o(q.size());
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = n(rng);
  const auto view = [&](const std::vector<float>& x) {
    return pa::bthd<const float>(x.data(), B, T, H, D);
  };
  const pa::SoftmaxInputs in{.q = view(q), .k = view(k), .v = view(v)};
  pa::SoftmaxOptions opt;
  opt.causal = true;

  // Run it, keeping the mask to count what it selected and to check against the reference.
  const StridedSelector sel;
  pa::BlockMask mask;
  pa::sparse::sparse_attention(sel, in, opt, pa::bthd(o.data(), B, T, H, D), mask);
  std::size_t kept = 0, causal = 0;
  for (index_t h = 0; h < H; ++h)
    for (index_t qb = 0; qb < mask.q_blocks(); ++qb)
      for (index_t kb = 0; kb <= qb; ++kb) {
        ++causal;
        kept += mask.visible(0, h, qb, kb) ? 1 : 0;
      }

  pa::SoftmaxOptions masked = opt;
  masked.block_mask = &mask;
  std::vector<double> ref(o.size());
  pa::reference::softmax_attention(in, masked, pa::bthd(ref.data(), B, T, H, D));
  double num = 0, den = 0;
  for (std::size_t i = 0; i < o.size(); ++i) {
    num += (o[i] - ref[i]) * (o[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  const double err = std::sqrt(num / den);
  std::printf(
      "strided selector (every %ld-th block + diagonal): kept %zu of %zu causal blocks "
      "(%.0f%%); sparse kernel vs reference with the same mask: %.2e\n",
      static_cast<long>(sel.stride), kept, causal, 100.0 * kept / causal, err);
  return err < 1e-5 ? 0 : 1;
}
