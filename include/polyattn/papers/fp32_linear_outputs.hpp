// polyattn/papers/fp32_linear_outputs.hpp — the outputs of a papers operator that runs a
// linear-family operator and then changes its o (adds a convolution, rescales rows, mixes in a
// mean): o is formed in fp32 and rounded once into a bf16 / fp16 o (core/fp32_output.hpp).
//
//   Fp32LinearOutputs o32(in, out);   checks o (required, well formed, not overlapping the
//                                     caller's q, k, v: the kernels may only see a scratch o or
//                                     scratch copies of q, k, v)
//   o32.outputs()                     out with o replaced by the fp32 view (out.o itself when fp32)
//   o32.o()                           that fp32 view, for the operator's own pass
//   o32.finish()                      rounds it into out.o once (nothing to do when fp32)
#pragma once

#include "polyattn/args/linear.hpp"
#include "polyattn/core/fp32_output.hpp"
#include "polyattn/core/overlap.hpp"
#include "polyattn/core/validate.hpp"

namespace polyattn::papers {

class Fp32LinearOutputs {
 public:
  Fp32LinearOutputs(const LinearInputs& in, const LinearOutputs<float>& out)
      : o_(checked(in, out.o)), out_(out) {
    out_.o = o_.view();
  }

  const LinearOutputs<float>& outputs() const noexcept { return out_; }
  const View4<float>& o() const noexcept { return o_.view(); }
  void finish() const { o_.finish(); }

 private:
  static const MutEView4& checked(const LinearInputs& in, const MutEView4& o) {
    check::required("o", o);
    check::writes_disjoint(
        {memory::region("o", o)},
        {memory::region("q", in.q), memory::region("k", in.k), memory::region("v", in.v)});
    return o;
  }

  Fp32Output o_;
  LinearOutputs<float> out_;
};

}  // namespace polyattn::papers
