// polyattn/softmax/fusion.hpp — fusion policies: what the tiled softmax kernel (flash.hpp) fuses
// into each score tile between S = scale·Q·Kᵀ and the online softmax, passed to the kernel as a
// type (as CUTLASS FMHA passes its mask / fusion policies to the mainloop):
//
//   s_ij ← modify(s_ij)                  score modifiers, in order
//   s_ij ← −inf  where ¬visible(i, j)    masks: visible(i, j) = ∧ over the composed masks
//
// A fusion is bound once per (sequence, query head, query tile) — bind(HeadContext) — to an
// object with the hooks the kernel calls (BoundFusion):
//   classify(rows, keys)        tile class: Skip / Full / Partial / CausalPartial (mask.hpp);
//                               Skip tiles are not computed, Full ones need no per-element mask,
//                               CausalPartial ones take the vectorised causal-prefix path
//   visible(r, p, j)            per element, in Partial tiles only (r: query row of the
//                               sequence, p = r + S − T its key position, j the key)
//   modifies()                  whether apply_keys / apply do anything
//   apply_keys<A>(s, KeyContext)   one key's scores of consecutive queries (prefill: the
//                                  kernel holds the tile transposed, queries along the lanes)
//   apply<A>(s, RowContext)        one query's scores of consecutive keys (decode form)
//
// Pieces (each satisfies the concept named in brackets):
//   OptionsFusion      the runtime set of SoftmaxOptions / SoftmaxInputs: causal, window, sink
//                      tokens, block mask; softcap, ALiBi, forgetting bias [SoftmaxFusion].
//                      The default: the per-ISA units instantiate the kernel for it.
//   Fusion<M, S>       a user's mask M [FusionMask] and / or score modifier S [FusionModifier]
//                      [SoftmaxFusion]. M is a MaskPolicy, or has bind(HeadContext) returning
//                      one (a mask that depends on the batch row, head or varlen offsets);
//                      likewise S and ScoreModifier. NoMask / NoModifier fill the other slot.
//   Composed<F1, F2>   visible = visible_1 ∧ visible_2, classify = compose(class_1, class_2),
//                      modifiers of F1 then F2 [SoftmaxFusion].
// flash_attention(in, opt, fusion, ...) runs Composed<OptionsFusion, F>; FlashKernelFor<F> is
// that kernel's type, for a user's own kernel list (see flash.hpp and examples/custom_mask.cpp).
//
// A policy's optional check(const SoftmaxDims&) is called by flash_attention before anything is
// written (its own argument checks; throw polyattn::Error).
//
// Per-ISA code. The hooks run inside the kernel, which the per-ISA units compile once per ISA.
// The kernel calls them through hook_bind / hook_classify / hook_visible / hook_modifies<A>,
// which use a hook's Arch-templated form when it has one (`template <simd::SimdArch A =
// simd::scalar_arch> TileClass classify(...) const`, callable with and without <A>): its
// symbols then name the ISA, so no copy compiled for one ISA can stand in for another's at link
// time (core/simd/dispatch.hpp). Every library hook is written so; a user's plain member
// functions work too, relying on being inlined into the kernel.
#pragma once

#include <algorithm>
#include <concepts>
#include <limits>
#include <type_traits>
#include <utility>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/softmax/mask.hpp"
#include "polyattn/softmax/modifiers.hpp"

namespace polyattn::softmax {

/// Where one (sequence, query head) of a call sits: what a fusion is bound to.
struct HeadContext {
  index_t batch;     // batch row b of q, k, v (0 with cu_seqlens)
  index_t sequence;  // b, or the index n of the packed sequence with cu_seqlens
  index_t head;      // query head h
  index_t kv_head;   // its kv head h / (HQ / HKV)
  index_t q_offset;  // packed row of the sequence's first query (cu_seqlens[n]; 0 without)
  index_t k_offset;  // packed row of its first key
  index_t queries;   // query rows of the sequence (T)
  index_t keys;      // keys of the sequence (S); query row r sits at key position r + S − T
};

/// A modifier that changes nothing.
struct NoModifier {
  template <simd::SimdArch A>
  void apply(float*, const RowContext&) const noexcept {}
  template <simd::SimdArch A>
  void apply_keys(float*, const KeyContext&) const noexcept {}
};
static_assert(ScoreModifier<NoModifier>);

// ---- concepts -------------------------------------------------------------------------------

/// A user mask: a MaskPolicy, or a type whose bind(HeadContext) returns one.
template <class M>
concept FusionMask =
    std::copy_constructible<M> && (MaskPolicy<M> || requires(const M& m, const HeadContext& c) {
      { m.bind(c) } -> MaskPolicy;
    });

/// A user score modifier: a ScoreModifier, or a type whose bind(HeadContext) returns one.
template <class S>
concept FusionModifier =
    std::copy_constructible<S> && (ScoreModifier<S> || requires(const S& s, const HeadContext& c) {
      { s.bind(c) } -> ScoreModifier;
    });

/// What the kernel calls per tile: a mask and a modifier in one, plus whether it modifies.
template <class B>
concept BoundFusion = MaskPolicy<B> && ScoreModifier<B> && requires(const B& b) {
  { b.modifies() } -> std::same_as<bool>;
};

/// A fusion policy of the tiled kernel: bind(HeadContext) gives its BoundFusion.
template <class F>
concept SoftmaxFusion = std::copy_constructible<F> && requires(const F& f, const HeadContext& c) {
  { f.bind(c) } -> BoundFusion;
};

/// Calls f.check(d) when f has one: a policy's own argument checks (e.g. that its tables cover
/// the call's T), run by flash_attention before anything is written; throw polyattn::Error.
template <class F>
void check_fusion(const F& f, const SoftmaxDims& d) {
  if constexpr (requires { f.check(d); }) f.check(d);
}

// ---- calling a policy's hooks from a kernel instantiated for Arch A --------------------------

/// p.bind<A>(c), or p.bind(c).
template <simd::SimdArch A, class P>
auto hook_bind(const P& p, const HeadContext& c) {
  if constexpr (requires { p.template bind<A>(c); })
    return p.template bind<A>(c);
  else
    return p.bind(c);
}
/// m.classify<A>(rows, keys), or m.classify(rows, keys).
template <simd::SimdArch A, class M>
TileClass hook_classify(const M& m, RowRange rows, KeyRange keys) {
  if constexpr (requires { m.template classify<A>(rows, keys); })
    return m.template classify<A>(rows, keys);
  else
    return m.classify(rows, keys);
}
/// m.visible<A>(r, p, j), or m.visible(r, p, j).
template <simd::SimdArch A, class M>
bool hook_visible(const M& m, index_t r, index_t p, index_t j) {
  if constexpr (requires { m.template visible<A>(r, p, j); })
    return m.template visible<A>(r, p, j);
  else
    return m.visible(r, p, j);
}
/// b.modifies<A>(), or b.modifies().
template <simd::SimdArch A, class B>
bool hook_modifies(const B& b) {
  if constexpr (requires { b.template modifies<A>(); })
    return b.template modifies<A>();
  else
    return b.modifies();
}
/// One key row of scores held transposed (key c.j, the c.n queries from key position c.p0 along
/// the lanes, as the flash kernels hold them): the bound fusion's modifiers when `modifies`, then
/// −inf where a partial tile's mask hides the key (CausalPartial: p0 + r < j; Partial:
/// visible() of query rows r0 + r, r < M).
template <simd::SimdArch A, class Bound>
void hook_key_row(const Bound& fz, bool modifies, TileClass cls, float* srow, const KeyContext& c,
                  index_t r0, index_t M) {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  if (modifies) fz.template apply_keys<A>(srow, c);
  if (cls == TileClass::CausalPartial) {
    std::fill(srow, srow + std::clamp<index_t>(c.j - c.p0, 0, c.n), ninf);
  } else if (cls == TileClass::Partial) {
    for (index_t r = 0; r < M; ++r)
      if (!hook_visible<A>(fz, r0 + r, c.p0 + r, c.j)) srow[r] = ninf;
  }
}

// ---- binding a user's mask / modifier ---------------------------------------------------------

/// Whether P has bind(HeadContext), plain or Arch-templated.
template <class P, class A>
concept BindableFor = requires(const P& p, const HeadContext& c) { p.bind(c); } ||
                      requires(const P& p, const HeadContext& c) { p.template bind<A>(c); };

/// A user's mask or modifier for one (sequence, head): p.bind(c) when p has one, else p itself.
template <simd::SimdArch A, class P>
auto bind_or_self(const P& p, const HeadContext& c) {
  if constexpr (BindableFor<P, A>)
    return hook_bind<A>(p, c);
  else
    return p;
}

// ---- Fusion<M, S>: a user's mask and modifier -------------------------------------------------

/// A bound mask and a bound modifier as one BoundFusion.
template <MaskPolicy BM, ScoreModifier BS>
struct FusionBound {
  BM mask;
  BS modifier;
  template <simd::SimdArch A = simd::scalar_arch>
  TileClass classify(RowRange rows, KeyRange keys) const {
    return hook_classify<A>(mask, rows, keys);
  }
  template <simd::SimdArch A = simd::scalar_arch>
  bool visible(index_t r, index_t p, index_t j) const {
    return hook_visible<A>(mask, r, p, j);
  }
  template <simd::SimdArch A = simd::scalar_arch>
  bool modifies() const noexcept {
    return !std::is_same_v<BS, NoModifier>;
  }
  template <simd::SimdArch A>
  void apply(float* s, const RowContext& c) const {
    modifier.template apply<A>(s, c);
  }
  template <simd::SimdArch A>
  void apply_keys(float* s, const KeyContext& c) const {
    modifier.template apply_keys<A>(s, c);
  }
};

/// A user's fusion: mask M and score modifier S (NoMask / NoModifier for none). Pass it to
/// flash_attention(in, opt, fusion, ...), which composes it with the options' masks and
/// modifiers: visible = options' ∧ M, scores modified by the options' modifiers, then by S.
template <FusionMask M = NoMask, FusionModifier S = NoModifier>
struct Fusion {
  M mask{};
  S modifier{};
  void check(const SoftmaxDims& d) const {
    check_fusion(mask, d);
    check_fusion(modifier, d);
  }
  template <simd::SimdArch A = simd::scalar_arch>
  auto bind(const HeadContext& c) const {
    using BM = decltype(bind_or_self<A>(mask, c));
    using BS = decltype(bind_or_self<A>(modifier, c));
    return FusionBound<BM, BS>{bind_or_self<A>(mask, c), bind_or_self<A>(modifier, c)};
  }
};

/// Fusion of a mask alone / a modifier alone / both.
template <FusionMask M>
Fusion<M, NoModifier> with_mask(M mask) {
  return {std::move(mask), {}};
}
template <FusionModifier S>
Fusion<NoMask, S> with_modifier(S modifier) {
  return {{}, std::move(modifier)};
}
template <FusionMask M, FusionModifier S>
Fusion<M, S> fuse(M mask, S modifier) {
  return {std::move(mask), std::move(modifier)};
}

static_assert(SoftmaxFusion<Fusion<>>);

// ---- Composed<F1, F2> -------------------------------------------------------------------------

/// Two bound fusions at once: both masks, F1's modifiers then F2's.
template <BoundFusion B1, BoundFusion B2>
struct ComposedBound {
  B1 first;
  B2 second;
  template <simd::SimdArch A = simd::scalar_arch>
  TileClass classify(RowRange rows, KeyRange keys) const {
    const TileClass a = hook_classify<A>(first, rows, keys);
    if (a == TileClass::Skip) return a;  // the second mask is not asked
    return compose(a, hook_classify<A>(second, rows, keys));
  }
  template <simd::SimdArch A = simd::scalar_arch>
  bool visible(index_t r, index_t p, index_t j) const {
    return hook_visible<A>(first, r, p, j) && hook_visible<A>(second, r, p, j);
  }
  template <simd::SimdArch A = simd::scalar_arch>
  bool modifies() const noexcept {
    return hook_modifies<A>(first) || hook_modifies<A>(second);
  }
  template <simd::SimdArch A>
  void apply(float* s, const RowContext& c) const {
    if (hook_modifies<A>(first)) first.template apply<A>(s, c);
    if (hook_modifies<A>(second)) second.template apply<A>(s, c);
  }
  template <simd::SimdArch A>
  void apply_keys(float* s, const KeyContext& c) const {
    if (hook_modifies<A>(first)) first.template apply_keys<A>(s, c);
    if (hook_modifies<A>(second)) second.template apply_keys<A>(s, c);
  }
};

/// visible = F1 ∧ F2; scores modified by F1, then F2.
template <SoftmaxFusion F1, SoftmaxFusion F2>
struct Composed {
  F1 first;
  F2 second;
  void check(const SoftmaxDims& d) const {
    check_fusion(first, d);
    check_fusion(second, d);
  }
  template <simd::SimdArch A = simd::scalar_arch>
  auto bind(const HeadContext& c) const {
    using B1 = decltype(hook_bind<A>(first, c));
    using B2 = decltype(hook_bind<A>(second, c));
    return ComposedBound<B1, B2>{hook_bind<A>(first, c), hook_bind<A>(second, c)};
  }
};

// ---- OptionsFusion: the runtime set of SoftmaxOptions -------------------------------------------

/// The masks and modifiers of SoftmaxOptions / SoftmaxInputs for one (sequence, head).
struct OptionsBound {
  MaskSet mask;
  bool masked = false;  // mask.masks_anything()
  ModifierSet mods;
  template <simd::SimdArch A = simd::scalar_arch>
  TileClass classify(RowRange rows, KeyRange keys) const noexcept {
    return masked ? mask.classify<A>(rows, keys) : TileClass::Full;
  }
  template <simd::SimdArch A = simd::scalar_arch>
  bool visible(index_t r, index_t p, index_t j) const noexcept {
    return mask.visible<A>(r, p, j);
  }
  template <simd::SimdArch A = simd::scalar_arch>
  bool modifies() const noexcept {
    return mods.softcap > 0.f || mods.alibi || mods.forget;  // mods.any()
  }
  template <simd::SimdArch A>
  void apply(float* s, const RowContext& c) const noexcept {
    mods.apply<A>(s, c);
  }
  template <simd::SimdArch A>
  void apply_keys(float* s, const KeyContext& c) const noexcept {
    mods.apply_keys<A>(s, c);
  }
};

/// The default fusion: causal, window, sink tokens, block mask; softcap, ALiBi (slopes of
/// `in`), forgetting bias (when `in` has a gate g). Holds pointers to the call's arguments.
struct OptionsFusion {
  const SoftmaxOptions* opt = nullptr;
  const SoftmaxInputs* in = nullptr;
  template <simd::SimdArch A = simd::scalar_arch>
  OptionsBound bind(const HeadContext& c) const {
    OptionsBound b;
    b.mask.causal = opt->causal;  // MaskSet::from, spelt out (per-ISA code; see above)
    b.mask.window = opt->window;
    b.mask.sink_tokens = opt->sink_tokens;
    b.mask.block = BlockSparse{opt->block_mask, c.batch, c.head, c.q_offset, c.k_offset};
    b.masked = opt->causal || opt->window > 0 || opt->block_mask != nullptr;
    b.mods.softcap = static_cast<float>(opt->softcap);
    b.mods.alibi = !in->alibi_slopes.absent();
    if (b.mods.alibi) b.mods.alibi_slope = in->alibi_slopes(c.head);
    b.mods.forget = !in->g.absent();
    return b;
  }
};

static_assert(BoundFusion<OptionsBound> && SoftmaxFusion<OptionsFusion>);

namespace detail {
template <class F>
struct fused_with_options {
  using type = Composed<OptionsFusion, F>;
};
template <>
struct fused_with_options<Fusion<NoMask, NoModifier>> {  // nothing to add: the default kernel
  using type = OptionsFusion;
};
}  // namespace detail

/// The fusion flash_attention(in, opt, f, ...) runs for a user's fusion F: the options' set
/// composed with F (just the options' set for an empty Fusion<>).
template <SoftmaxFusion F>
using with_options_t = typename detail::fused_with_options<F>::type;

/// Builds with_options_t<F> for one call.
template <SoftmaxFusion F>
with_options_t<F> with_options(const SoftmaxOptions& opt, const SoftmaxInputs& in, const F& f) {
  if constexpr (std::is_same_v<with_options_t<F>, OptionsFusion>)
    return OptionsFusion{&opt, &in};
  else
    return with_options_t<F>{OptionsFusion{&opt, &in}, f};
}

}  // namespace polyattn::softmax
