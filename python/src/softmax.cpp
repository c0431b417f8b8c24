// python/src/softmax.cpp — the _polyattn bindings of the softmax family: tiled prefill (the
// kernel of flash_attn_func / flash_attn_varlen_func), the KV cache with split-KV decode, and
// sparse attention through the block selectors. See common.hpp for the private ABI.
#include <memory>
#include <string>

#include "common.hpp"
#include "polyattn/softmax/decode.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/kv_cache.hpp"
#include "polyattn/sparse/sparse.hpp"

namespace polyattn::py {
namespace {

SoftmaxOptions options(std::optional<double> scale, bool causal, index_t window,
                       index_t sink_tokens, double softcap) {
  SoftmaxOptions opt;
  opt.scale = scale;
  opt.causal = causal;
  opt.window = window;
  opt.sink_tokens = sink_tokens;
  opt.softcap = softcap;
  return opt;
}

void flash(const In& q, const In& k, const In& v, const OptIn& cu_seqlens,
           const OptIn& alibi_slopes, const OptIn& sink, const Out& o, const OptOut& lse,
           std::optional<double> scale, bool causal, index_t window, index_t sink_tokens,
           double softcap, int threads) {
  SoftmaxInputs in;
  in.q = element_in<4>(q, "q");
  in.k = element_in<4>(k, "k");
  in.v = element_in<4>(v, "v");
  in.cu_seqlens = i64_in(cu_seqlens, "cu_seqlens");
  in.alibi_slopes = f32_in<1>(alibi_slopes, "alibi_slopes");
  in.sink = f32_in<1>(sink, "sinks");
  const SoftmaxOptions opt = options(scale, causal, window, sink_tokens, softcap);
  const auto ov = element_out<4>(o, "out");
  const auto lv = f32_out<3>(lse, "softmax_lse");
  const ModuleExecutor exec(threads);
  nb::gil_scoped_release release;
  softmax::flash_attention(in, opt, ov, lv, exec);
}

Dtype cache_dtype(const std::string& name) {
  if (name == "float32") return Dtype::f32;
  if (name == "bfloat16") return Dtype::bf16;
  if (name == "float16") return Dtype::f16;
  if (name == "int8") return Dtype::i8;
  throw nb::value_error(
      arg_msg("dtype", "must be 'float32', 'bfloat16', 'float16' or 'int8', got '" + name + "'")
          .c_str());
}

// The cache behind polyattn.KVCache (std::vector<unique_ptr> members make KVCache look copyable
// to type traits; this holder is plainly move-only).
struct Cache {
  std::unique_ptr<softmax::KVCache> c;
};

void cache_decode(const Cache& holder, const In& q, const OptIn& alibi_slopes, const OptIn& sink,
                  const Out& o, const OptOut& lse, std::optional<double> scale, index_t window,
                  index_t sink_tokens, double softcap, int threads) {
  softmax::DecodeInputs in;
  in.q = element_in<4>(q, "q");
  in.alibi_slopes = f32_in<1>(alibi_slopes, "alibi_slopes");
  in.sink = f32_in<1>(sink, "sinks");
  const SoftmaxOptions opt = options(scale, true, window, sink_tokens, softcap);
  const auto ov = element_out<4>(o, "out");
  const auto lv = f32_out<3>(lse, "softmax_lse");
  const ModuleExecutor exec(threads);
  nb::gil_scoped_release release;
  softmax::flash_decode(in, *holder.c, opt, ov, lv, exec);
}

template <class S>
void run_sparse(const S& sel, const SoftmaxInputs& in, const SoftmaxOptions& opt, View4<float> o,
                int threads) {
  const ModuleExecutor exec(threads);
  nb::gil_scoped_release release;
  sparse::sparse_attention(sel, in, opt, o, exec);
}

void sparse_attn(const std::string& selector, const In& q, const In& k, const In& v,
                 const OptIn& cu_seqlens, const Out& o, std::optional<double> scale, bool causal,
                 index_t block_size, index_t top_k, double gamma, index_t max_distance,
                 bool diagonal, index_t sink_blocks, index_t local_blocks, int threads) {
  SoftmaxInputs in;
  in.q = element_in<4>(q, "q");
  in.k = element_in<4>(k, "k");
  in.v = element_in<4>(v, "v");
  require_f32(q, "q");
  require_f32(k, "k");
  require_f32(v, "v");
  in.cu_seqlens = i64_in(cu_seqlens, "cu_seqlens");
  const SoftmaxOptions opt = options(scale, causal, 0, 0, 0.0);
  const auto ov = f32_out<4>(OptOut(o), "out");
  const sparse::KeepOptions keep{
      .diagonal = diagonal, .sink_blocks = sink_blocks, .local_blocks = local_blocks};
  if (selector == "window_sink")
    run_sparse(sparse::WindowSinkSelector{.block = block_size, .keep = keep}, in, opt, ov, threads);
  else if (selector == "topk")
    run_sparse(sparse::TopKSelector{.block = block_size, .top_k = top_k, .keep = keep}, in, opt, ov,
               threads);
  else if (selector == "power")
    run_sparse(
        sparse::PowerSelector{.block = block_size, .max_distance = max_distance, .keep = keep}, in,
        opt, ov, threads);
  else if (selector == "mass")
    run_sparse(sparse::MassSelector{.block = block_size, .gamma = gamma, .keep = keep}, in, opt, ov,
               threads);
  else if (selector == "linear_topk")
    run_sparse(sparse::LinearTopKSelector{.block = block_size, .top_k = top_k, .keep = keep}, in,
               opt, ov, threads);
  else
    throw nb::value_error(
        arg_msg("selector",
                "must be 'window_sink', 'topk', 'power', 'mass' or 'linear_topk', got '" +
                    selector + "'")
            .c_str());
}

}  // namespace

void bind_softmax(nb::module_& m) {
  using nb::arg;
  using softmax::KVCache;
  m.def("flash", &flash, arg("q"), arg("k"), arg("v"), arg("cu_seqlens").none(),
        arg("alibi_slopes").none(), arg("sink").none(), arg("o"), arg("lse").none(),
        arg("scale").none(), arg("causal"), arg("window"), arg("sink_tokens"), arg("softcap"),
        arg("threads"));
  m.def("sparse_attention", &sparse_attn, arg("selector"), arg("q"), arg("k"), arg("v"),
        arg("cu_seqlens").none(), arg("o"), arg("scale").none(), arg("causal"), arg("block_size"),
        arg("top_k"), arg("gamma"), arg("max_distance"), arg("diagonal"), arg("sink_blocks"),
        arg("local_blocks"), arg("threads"));
  nb::class_<Cache>(m, "KVCacheCore")
      .def(
          "__init__",
          [](Cache* self, index_t batch, index_t kv_heads, index_t head_dim, index_t value_dim,
             index_t capacity, index_t page_size, const std::string& dtype) {
            new (self) Cache{std::make_unique<KVCache>(
                batch, kv_heads, head_dim, value_dim,
                softmax::KVCacheOptions{
                    .capacity = capacity, .page_size = page_size, .dtype = cache_dtype(dtype)})};
          },
          arg("batch"), arg("kv_heads"), arg("head_dim"), arg("value_dim"), arg("capacity"),
          arg("page_size"), arg("dtype"))
      .def(
          "append",
          [](Cache& c, const In& k, const In& v) {
            c.c->append(element_in<4>(k, "k"), element_in<4>(v, "v"));
          },
          arg("k"), arg("v"))
      .def("decode", &cache_decode, arg("q"), arg("alibi_slopes").none(), arg("sink").none(),
           arg("o"), arg("lse").none(), arg("scale").none(), arg("window"), arg("sink_tokens"),
           arg("softcap"), arg("threads"))
      .def(
          "length", [](const Cache& c, index_t b) { return c.c->length(b); }, arg("b"))
      .def("clear", [](Cache& c) { c.c->clear(); })
      .def(
          "drop_before", [](Cache& c, index_t b, index_t j) { c.c->drop_before(b, j); }, arg("b"),
          arg("j"))
      .def_prop_ro("batch", [](const Cache& c) { return c.c->batch(); })
      .def_prop_ro("kv_heads", [](const Cache& c) { return c.c->kv_heads(); })
      .def_prop_ro("head_dim", [](const Cache& c) { return c.c->head_dim(); })
      .def_prop_ro("value_dim", [](const Cache& c) { return c.c->value_dim(); });
}

}  // namespace polyattn::py
