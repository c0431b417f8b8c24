// polyattn/core/fp32_output.hpp — an output of any element type (fp32, bf16, fp16) that an
// operator forms in fp32 from several parts and rounds once:
//
//   Fp32Output out(o);   out.view(): o itself when o is fp32, else fp32 scratch of o's shape
//   ... write / accumulate the result in out.view() ...
//   out.finish();        o ← out.view() rounded to nearest even (nothing to do when o is fp32)
//
// so a bf16 / fp16 o holds exactly the fp32 result rounded once, whatever the parts (a sum of
// branches, a kernel's output plus a convolution). The element type is switched on once per call.
#pragma once

#include <cstddef>
#include <type_traits>
#include <vector>

#include "polyattn/core/element.hpp"
#include "polyattn/core/element_view.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn {

class Fp32Output {
 public:
  explicit Fp32Output(const MutElementView<4>& o) : o_(o) {
    if (o.is<float>()) {
      view_ = o.as<float>();
    } else {
      buf_.resize(static_cast<std::size_t>(o.numel()));
      view_ = TensorView<float, 4>::contiguous(buf_.data(), o.shape());
    }
  }
  Fp32Output(const Fp32Output&) = delete;
  Fp32Output& operator=(const Fp32Output&) = delete;

  /// Where to form the fp32 result.
  const TensorView<float, 4>& view() const noexcept { return view_; }

  /// Rounds the result into o (once; no-op for an fp32 o).
  void finish() const {
    if (o_.is<float>()) return;
    o_.visit([&](auto ov) {
      using T = std::remove_cvref_t<decltype(*ov.data())>;
      const auto& s = o_.shape();
      for (index_t b = 0; b < s[0]; ++b)
        for (index_t t = 0; t < s[1]; ++t)
          for (index_t h = 0; h < s[2]; ++h)
            for (index_t e = 0; e < s[3]; ++e) ov(b, t, h, e) = from_float<T>(view_(b, t, h, e));
    });
  }

 private:
  MutElementView<4> o_;
  TensorView<float, 4> view_;
  std::vector<float> buf_;
};

}  // namespace polyattn
