// polyattn/softmax/kv_cache.hpp — the key/value cache that softmax decode attends to.
//
// KVCache holds, for each of `batch` sequences, the keys [len, HKV, D] and values [len, HKV, Dv]
// appended so far (and, for forgetting attention, the running cumsum G of the log forget gate of
// each of `gate_heads` query heads, kept in double). Storage is a list of pages of `page_size`
// tokens per sequence, laid out [HKV][page_size][row] so that one kv head's keys are contiguous
// within a page; rows are padded with zeros to a multiple of simd::kMaxBatchFloats (16)
// elements, so that every ISA reads them in whole batches.
//   contiguous (page_size = 0): one page of `capacity` tokens per sequence, allocated up front;
//   paged (page_size > 0):      pages allocated as sequences grow, up to `capacity` tokens per
//                               sequence (0 = no limit); a per-sequence block table maps them.
//                               drop_before(b, j) returns the pages that only hold tokens < j to
//                               a free list (positions stay absolute), so a sliding-window
//                               decoder (hybrid models) keeps O(window + page) memory.
// Element type (KVCacheOptions::dtype): fp32, bf16 or fp16 rows (appended values rounded to
// nearest even), or int8: each appended row of one token and kv head is quantised on its own,
//   scale = max_e |x_e| / 127,  q_e = round_half_even(x_e / scale) ∈ [−127, 127]
// (an all-zero row has scale 0; a row holding NaN or ±Inf gets scale NaN, so it reads back as
// NaN), the fp32 scale kept beside the row; decode dequantises in registers and folds the key
// scale into the score and the value scale into the weight. Per-token rather than KIVI's
// per-channel keys: an append never revisits earlier rows, a paged cache needs no residual
// window, and decode pays one multiply per key (docs/conventions.md §9.7). Rows are padded to a
// multiple of kRowPad elements of the cache's type.
// append() validates everything (shapes, capacity) and allocates the pages it needs before
// changing anything. Sizes are overflow-checked (core/extent.hpp); an allocation that fails is a
// polyattn::Error naming capacity / page_size, not std::bad_alloc. Every accessor taking a
// sequence, head or position checks it (polyattn::Error); the kernels use the unchecked_*
// forms after validating their call.
// Thread safety: a KVCache is a plain value with no internal locking. Any number of threads may
// read it at once (flash_decode, the const accessors); append, append_to, clear and drop_before
// modify it and must not run concurrently with anything else on the same cache (including a
// flash_decode reading it): the caller serialises them, e.g. append, then decode.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/element_view.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/extent.hpp"
#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"

namespace polyattn::softmax {

struct KVCacheOptions {
  index_t capacity = 0;      // max tokens per sequence (required when page_size == 0)
  index_t page_size = 0;     // 0 = one contiguous page per sequence
  index_t gate_heads = 0;    // > 0: store G = cumsum(g) for that many query heads
  Dtype dtype = Dtype::f32;  // element type of the stored keys and values (f32, bf16, f16, i8)
};

/// Keys and values of B sequences for decode (contiguous or paged; see the header comment).
class KVCache {
 public:
  static constexpr index_t kRowPad = simd::kMaxBatchFloats;

  KVCache(index_t batch, index_t kv_heads, index_t head_dim, index_t value_dim, KVCacheOptions opt)
      : B_(batch), HKV_(kv_heads), D_(head_dim), Dv_(value_dim), opt_(opt) {
    check::positive("batch", batch);
    check::positive("kv_heads", kv_heads);
    check::positive("head_dim", head_dim);
    check::positive("value_dim", value_dim);
    if (opt.page_size < 0)
      throw Error("page_size", "must be >= 0, got " + std::to_string(opt.page_size));
    if (opt.capacity < 0)
      throw Error("capacity", "must be >= 0, got " + std::to_string(opt.capacity));
    if (opt.gate_heads < 0)
      throw Error("gate_heads", "must be >= 0, got " + std::to_string(opt.gate_heads));
    if (opt.page_size == 0 && opt.capacity == 0)
      throw Error("capacity", "a contiguous cache (page_size 0) needs a positive capacity");
    if (opt.dtype != Dtype::f32 && opt.dtype != Dtype::bf16 && opt.dtype != Dtype::f16 &&
        opt.dtype != Dtype::i8)
      throw Error("dtype", "must be fp32, bf16, fp16 or int8");
    elem_ = element_size(opt.dtype);
    Dp_ = padded(head_dim, "head_dim");
    Dvp_ = padded(value_dim, "value_dim");
    page_ = opt.page_size > 0 ? opt.page_size : opt.capacity;
    // The sizes of one page, checked once here so that no later product can overflow.
    const char* page_arg = opt.page_size > 0 ? "page_size" : "capacity";
    const index_t rows = extent::mul(page_arg, HKV_, page_, "kv_heads x page rows");
    page_k_ =
        extent::bytes(page_arg, extent::mul(page_arg, rows, Dp_, "key elements per page"), elem_);
    page_v_ = extent::bytes(page_arg, extent::mul(page_arg, rows, Dvp_, "value elements per page"),
                            elem_);
    page_s_ = opt.dtype == Dtype::i8 ? static_cast<std::size_t>(rows) : 0;
    page_G_ =
        extent::bytes(page_arg, extent::mul(page_arg, page_, opt.gate_heads, "gates per page"),
                      sizeof(double)) /
        sizeof(double);
    const index_t gates = extent::mul("gate_heads", B_, opt.gate_heads, "batch x gate_heads");
    try {
      len_.assign(static_cast<std::size_t>(B_), 0);
      first_kept_.assign(static_cast<std::size_t>(B_), 0);
      last_G_.assign(extent::bytes("gate_heads", gates, sizeof(double)) / sizeof(double), 0.0);
      table_.resize(static_cast<std::size_t>(B_));
      row_buf_.resize(static_cast<std::size_t>(std::max(D_, Dv_)));
    } catch (const std::bad_alloc&) {
      throw Error("batch", "cannot allocate the tables of " + std::to_string(B_) + " sequences");
    }
    if (opt.page_size == 0)
      for (index_t b = 0; b < B_; ++b) add_page(b);
  }

  index_t batch() const noexcept { return B_; }
  index_t kv_heads() const noexcept { return HKV_; }
  index_t head_dim() const noexcept { return D_; }
  index_t value_dim() const noexcept { return Dv_; }
  index_t gate_heads() const noexcept { return opt_.gate_heads; }
  index_t capacity() const noexcept { return opt_.capacity; }
  index_t page_size() const noexcept { return page_; }
  index_t length(index_t b) const { return len_[sequence(b)]; }
  Dtype dtype() const noexcept { return opt_.dtype; }
  index_t key_stride() const noexcept { return Dp_; }  // elements between key rows of a page
  index_t value_stride() const noexcept { return Dvp_; }

  /// Appends n tokens to every sequence: k [B, n, HKV, D], v [B, n, HKV, Dv] (fp32, bf16 or
  /// fp16, converted to the cache's element type), and, when the cache keeps gates,
  /// g [B, n, gate_heads] (log space).
  /// @throws polyattn::Error (shape, capacity) before anything changes
  void append(ElementView<4> k, ElementView<4> v, View3<const float> g = {}) {
    check_append(k, v, g, B_);
    for (index_t b = 0; b < B_; ++b) reserve(b, k.size(1));
    for (index_t b = 0; b < B_; ++b) write(b, b, k, v, g);
  }

  // Appends n tokens to sequence b only: k [1, n, HKV, D], v [1, n, HKV, Dv], g [1, n, gate_heads].
  void append_to(index_t b, ElementView<4> k, ElementView<4> v, View3<const float> g = {}) {
    sequence(b);
    check_append(k, v, g, 1, b);
    reserve(b, k.size(1));
    write(b, 0, k, v, g);
  }

  // Forgets every token (pages stay allocated; dropped ones are taken again by the next append).
  void clear() noexcept {
    std::fill(len_.begin(), len_.end(), 0);
    std::fill(first_kept_.begin(), first_kept_.end(), 0);
  }

  // Paged caches: releases every page of sequence b whose tokens all lie below position j
  // (j ≤ length(b)); later decodes must not need those keys (flash_decode checks). A
  // contiguous cache keeps its memory and only records the position.
  void drop_before(index_t b, index_t j) {
    sequence(b);
    if (j < 0 || j > len_[static_cast<std::size_t>(b)])
      throw Error("j", "must be in [0, length " +
                           std::to_string(len_[static_cast<std::size_t>(b)]) + "], got " +
                           std::to_string(j));
    index_t& first = first_kept_[static_cast<std::size_t>(b)];
    first = std::max(first, j);
    if (opt_.page_size == 0) return;
    auto& tab = table_[static_cast<std::size_t>(b)];
    for (index_t pi = 0; (pi + 1) * page_ <= first && pi < static_cast<index_t>(tab.size()); ++pi)
      if (tab[static_cast<std::size_t>(pi)] >= 0) {
        free_.push_back(tab[static_cast<std::size_t>(pi)]);
        tab[static_cast<std::size_t>(pi)] = -1;
      }
  }
  // First position of sequence b whose key is still held (0 unless drop_before was called).
  index_t first_kept(index_t b) const { return first_kept_[sequence(b)]; }
  // Pages currently allocated (in use or free), for memory accounting.
  index_t pages_allocated() const noexcept { return static_cast<index_t>(pages_.size()); }

  // Rows of kv head hk from token j of sequence b to the end of its page (count rows). The
  // returned pointers address row j, in the cache's element type (keys<T>() / values<T>());
  // rows follow at key_stride() / value_stride() elements. An int8 cache has one fp32 scale per
  // row (k_scale / v_scale, else null). The rows past length(b) of the last page are zeros.
  struct Run {
    const void* k;
    const void* v;
    const float* k_scale;  // [count] (int8 caches) or null
    const float* v_scale;
    const double* G;  // [count][gate_heads] or null
    index_t count;
    template <class T>
    const T* keys() const noexcept {
      return static_cast<const T*>(k);
    }
    template <class T>
    const T* values() const noexcept {
      return static_cast<const T*>(v);
    }
  };
  /// @throws polyattn::Error for b, hk out of range or j outside [first_kept(b), length(b)).
  Run run(index_t b, index_t hk, index_t j) const {
    check_position(b, j);
    if (hk < 0 || hk >= HKV_)
      throw Error("hk", "kv head " + std::to_string(hk) + " out of range [0, " +
                            std::to_string(HKV_) + ")");
    return unchecked_run(b, hk, j);
  }
  // G of sequence b, gate head h, at token j. @throws polyattn::Error as run(), or for a cache
  // without gates / h outside [0, gate_heads).
  double gate_cumsum(index_t b, index_t h, index_t j) const {
    check_position(b, j);
    if (h < 0 || h >= opt_.gate_heads)
      throw Error("h", "gate head " + std::to_string(h) + " out of range [0, " +
                           std::to_string(opt_.gate_heads) + ") (gate_heads of the cache)");
    return unchecked_gate_cumsum(b, h, j);
  }
  // The same without checks, for kernels that validated b, hk / h and j.
  Run unchecked_run(index_t b, index_t hk, index_t j) const noexcept {
    const Page& pg = *pages_[static_cast<std::size_t>(
        table_[static_cast<std::size_t>(b)][static_cast<std::size_t>(j / page_)])];
    const index_t o = j % page_, row = hk * page_ + o;
    const std::size_t e = elem_;
    return {pg.k.get() + static_cast<std::size_t>(row * Dp_) * e,
            pg.v.get() + static_cast<std::size_t>(row * Dvp_) * e,
            pg.ks ? pg.ks.get() + row : nullptr,
            pg.vs ? pg.vs.get() + row : nullptr,
            pg.G ? pg.G.get() + o * opt_.gate_heads : nullptr,
            page_ - o};
  }
  double unchecked_gate_cumsum(index_t b, index_t h, index_t j) const noexcept {
    return unchecked_run(b, 0, j).G[h];
  }
  index_t unchecked_length(index_t b) const noexcept { return len_[static_cast<std::size_t>(b)]; }

 private:
  struct Page {
    std::unique_ptr<std::byte[]> k, v;  // rows of the cache's element type
    std::unique_ptr<float[]> ks, vs;    // int8: one scale per row, [HKV][page]
    std::unique_ptr<double[]> G;
  };

  // b as an index, or Error("b").
  std::size_t sequence(index_t b) const {
    if (b < 0 || b >= B_)
      throw Error(
          "b", "sequence " + std::to_string(b) + " out of range [0, " + std::to_string(B_) + ")");
    return static_cast<std::size_t>(b);
  }
  void check_position(index_t b, index_t j) const {
    const std::size_t s = sequence(b);
    if (j < first_kept_[s] || j >= len_[s])
      throw Error("j", "position " + std::to_string(j) + " of sequence " + std::to_string(b) +
                           " is not held: the cache holds [" + std::to_string(first_kept_[s]) +
                           ", " + std::to_string(len_[s]) + ")");
  }
  static index_t padded(index_t n, const char* name) {
    return extent::mul(name, (n + kRowPad - 1) / kRowPad, kRowPad, "padded row length");
  }

  // A free page, or a new one (zero-filled, so row padding stays zero). An allocation that fails
  // is Error("capacity") for a contiguous cache, Error("page_size") for a paged one.
  index_t take_page() {
    if (!free_.empty()) {
      const index_t id = free_.back();
      free_.pop_back();
      return id;
    }
    try {
      auto pg = std::make_unique<Page>();
      pg->k = std::make_unique<std::byte[]>(page_k_);  // value-initialised: zeros
      pg->v = std::make_unique<std::byte[]>(page_v_);
      if (page_s_ > 0) {
        pg->ks = std::make_unique<float[]>(page_s_);
        pg->vs = std::make_unique<float[]>(page_s_);
      }
      if (opt_.gate_heads > 0) pg->G = std::make_unique<double[]>(page_G_);
      pages_.push_back(std::move(pg));
    } catch (const std::bad_alloc&) {
      const bool paged = opt_.page_size > 0;
      throw Error(paged ? "page_size" : "capacity",
                  "cannot allocate a cache page of " + std::to_string(page_) + " tokens (" +
                      std::to_string(page_k_ + page_v_ + 2 * page_s_ * sizeof(float) +
                                     page_G_ * sizeof(double)) +
                      " bytes)");
    }
    return static_cast<index_t>(pages_.size()) - 1;
  }
  void add_page(index_t b) { table_[static_cast<std::size_t>(b)].push_back(take_page()); }

  // Pages for n more tokens of sequence b, allocated before any token is written (a failure
  // leaves lengths and contents unchanged; pages already taken stay with the sequence, empty).
  void reserve(index_t b, index_t n) {
    auto& tab = table_[static_cast<std::size_t>(b)];
    const index_t first = len_[static_cast<std::size_t>(b)] / page_;
    const index_t need = BlockMask::blocks_for(len_[static_cast<std::size_t>(b)] + n, page_);
    for (index_t pi = first; pi < need && pi < static_cast<index_t>(tab.size()); ++pi)
      if (tab[static_cast<std::size_t>(pi)] < 0) tab[static_cast<std::size_t>(pi)] = take_page();
    while (static_cast<index_t>(tab.size()) < need) add_page(b);
  }

  void check_append(const ElementView<4>& k, const ElementView<4>& v, const View3<const float>& g,
                    index_t rows, index_t only = -1) const {
    check::required("k", k);
    const index_t n = k.size(1);
    check::shape_is("k", k, {rows, n, HKV_, D_}, "[B, n, kv_heads, head_dim] of the cache");
    check::required("v", v);
    check::shape_is("v", v, {rows, n, HKV_, Dv_},
                    "[B, n, kv_heads, value_dim] of the cache and n of k");
    if (opt_.gate_heads > 0) {
      check::required("g", g);
      check::shape_is("g", g, {rows, n, opt_.gate_heads}, "[B, n, gate_heads] of the cache");
    } else if (!g.absent()) {
      throw Error(
          "g", "this cache keeps no gates (gate_heads = 0), got shape " + shape_string(g.shape()));
    }
    for (index_t b = 0; b < B_; ++b) {
      if (only >= 0 && b != only) continue;
      extent::add("k", len_[static_cast<std::size_t>(b)], n, "sequence length after append");
    }
    if (opt_.capacity > 0)
      for (index_t b = 0; b < B_; ++b) {
        if (only >= 0 && b != only) continue;
        if (n > opt_.capacity - len_[static_cast<std::size_t>(b)])
          throw Error("k", "appending " + std::to_string(n) + " tokens to sequence " +
                               std::to_string(b) + " of length " +
                               std::to_string(len_[static_cast<std::size_t>(b)]) +
                               " exceeds the cache capacity " + std::to_string(opt_.capacity));
      }
  }

  // Row n values of x (any element type) into dst of the cache's type, padded with zeros to
  // `padded` elements; int8 rows also get their scale.
  void store_row(const ElementView<4>& x, index_t row, index_t t, index_t hk, index_t n,
                 index_t padded, std::byte* dst, float* scale) {
    const std::span<float> f(row_buf_.data(), static_cast<std::size_t>(n));  // sized in the ctor
    for (index_t e = 0; e < n; ++e) f[static_cast<std::size_t>(e)] = x(row, t, hk, e);
    switch (opt_.dtype) {
      case Dtype::bf16: {
        auto* d = reinterpret_cast<bf16*>(dst);
        for (index_t e = 0; e < padded; ++e)
          d[e] = e < n ? bf16_from(f[static_cast<std::size_t>(e)]) : bf16{};
        break;
      }
      case Dtype::f16: {
        auto* d = reinterpret_cast<f16*>(dst);
        for (index_t e = 0; e < padded; ++e)
          d[e] = e < n ? f16_from(f[static_cast<std::size_t>(e)]) : f16{};
        break;
      }
      case Dtype::i8: {
        auto* d = reinterpret_cast<std::int8_t*>(dst);
        float amax = 0.f;
        bool finite = true;
        for (float v : f) {
          finite = finite && std::isfinite(v);
          amax = std::max(amax, std::fabs(v));
        }
        const float sc = !finite ? std::numeric_limits<float>::quiet_NaN() : amax / 127.f;
        *scale = sc;
        for (index_t e = 0; e < padded; ++e) {
          float qv = 0.f;
          if (e < n && finite && amax > 0.f)
            qv = std::clamp(std::nearbyint(f[static_cast<std::size_t>(e)] / sc), -127.f, 127.f);
          d[e] = static_cast<std::int8_t>(qv);
        }
        break;
      }
      default: {
        auto* d = reinterpret_cast<float*>(dst);
        for (index_t e = 0; e < padded; ++e) d[e] = e < n ? f[static_cast<std::size_t>(e)] : 0.f;
      }
    }
  }

  void write(index_t b, index_t row, const ElementView<4>& k, const ElementView<4>& v,
             const View3<const float>& g) {
    const index_t n = k.size(1);
    index_t& len = len_[static_cast<std::size_t>(b)];
    for (index_t t = 0; t < n; ++t, ++len) {
      if (len / page_ >= static_cast<index_t>(table_[static_cast<std::size_t>(b)].size()))
        add_page(b);
      Page& pg = *pages_[static_cast<std::size_t>(
          table_[static_cast<std::size_t>(b)][static_cast<std::size_t>(len / page_)])];
      const index_t o = len % page_;
      for (index_t hk = 0; hk < HKV_; ++hk) {
        const index_t r = hk * page_ + o;
        store_row(k, row, t, hk, D_, Dp_, pg.k.get() + static_cast<std::size_t>(r * Dp_) * elem_,
                  pg.ks ? pg.ks.get() + r : nullptr);
        store_row(v, row, t, hk, Dv_, Dvp_, pg.v.get() + static_cast<std::size_t>(r * Dvp_) * elem_,
                  pg.vs ? pg.vs.get() + r : nullptr);
      }
      for (index_t h = 0; h < opt_.gate_heads; ++h) {
        double& run = last_G_[static_cast<std::size_t>(b * opt_.gate_heads + h)];
        const double prev = len > 0 ? run : 0.0;  // the last token's page may be dropped
        run = prev + static_cast<double>(g(row, t, h));
        pg.G[static_cast<std::size_t>(o * opt_.gate_heads + h)] = run;
      }
    }
  }

  index_t B_, HKV_, D_, Dv_;
  KVCacheOptions opt_;
  index_t Dp_ = 0, Dvp_ = 0, page_ = 0;
  std::size_t elem_ = 4;                                           // bytes per stored element
  std::size_t page_k_ = 0, page_v_ = 0, page_s_ = 0, page_G_ = 0;  // bytes / scales / gates
  std::vector<float> row_buf_;                                     // one row being appended
  std::vector<index_t> len_, first_kept_;
  std::vector<double> last_G_;               // running gate cumsum per (sequence, gate head)
  std::vector<std::vector<index_t>> table_;  // page ids per sequence; −1 = dropped
  std::vector<index_t> free_;
  std::vector<std::unique_ptr<Page>> pages_;
};

}  // namespace polyattn::softmax
