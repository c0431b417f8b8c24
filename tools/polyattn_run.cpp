// tools/polyattn_run.cpp — the parity tool `polyattn-run` (docs/conventions.md §11).
//
// Runs one attention preset on float32 .npy inputs from a directory and writes float32 .npy
// outputs, so a port can be checked against PyTorch (flash-linear-attention / transformers).
// The linear family runs the fp32 operators of polyattn/linear (presets.hpp) with the chosen
// algorithm (--algo chunked|recurrent|parallel, --chunk, --threads); --algo reference runs the
// naive double-precision oracle (polyattn/reference/*.hpp) instead. softmax and forgetting_attn
// run the tiled flash kernel (polyattn/softmax/flash.hpp; --threads) or, with --algo reference,
// the oracle. based always runs the reference (the fast preset presets::make_based is not wired
// into the tool). --dtype bf16|fp16 rounds q, k, v and runs the operators on those types (o.npy
// holds their output widened); --kv-dtype answers softmax rows from a KV cache of that type.
// Every failure is one line on stderr, exit status 2, and no output file is written (outputs
// are computed in memory, written under temporary names and renamed into place at the end).
#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <limits>
#include <map>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "polyattn/args/linear.hpp"
#include "polyattn/args/softmax.hpp"
#include "polyattn/conv/short_conv.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/io/npy.hpp"
#include "polyattn/linear/chunked.hpp"
#include "polyattn/linear/mamba2.hpp"
#include "polyattn/linear/presets.hpp"
#include "polyattn/policies/fused_gates.hpp"
#include "polyattn/reference/based.hpp"
#include "polyattn/reference/conv.hpp"
#include "polyattn/reference/linear.hpp"
#include "polyattn/reference/mamba2.hpp"
#include "polyattn/reference/softmax.hpp"
#include "polyattn/softmax/decode.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/kv_cache.hpp"
#include "run_args.hpp"

namespace {

namespace fs = std::filesystem;
using polyattn::index_t;
using polyattn::io::NpyArray;
using namespace polyattn::tool;  // the command line (run_args.hpp)

// ---- inputs ---------------------------------------------------------------------------------

// The input files this tool knows about (base names without ".npy").
constexpr std::string_view kKnownInputs[] = {
    "q", "k",    "v",         "g",       "beta", "h0", "sink", "cu_seqlens",  // attention
    "a", "b",    "A_log",     "dt_bias", "graw",       // raw gates (GDN, KDA)
    "x", "dt",   "A",         "Bm",      "Cm",   "D",  // mamba2
    "w", "bias", "conv_state"};                        // short_conv

struct Inputs {
  fs::path dir;
  std::map<std::string, NpyArray, std::less<>> arrays;

  std::string file(std::string_view name) const {
    return (dir / (std::string(name) + ".npy")).string();
  }
  bool has(std::string_view name) const { return arrays.find(name) != arrays.end(); }
  const NpyArray& get(std::string_view name) const { return arrays.find(name)->second; }
};

// Loads the OP's inputs; rejects missing required ones and present-but-unused known ones.
Inputs load_inputs(const fs::path& dir, const std::string& op_name,
                   const std::set<std::string, std::less<>>& required,
                   const std::set<std::string, std::less<>>& optional) {
  Inputs in;
  in.dir = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw RunError("--in " + dir.string() +
                   (fs::exists(dir, ec) ? ": not a directory" : ": no such directory"));
  for (std::string_view name : kKnownInputs) {
    const fs::path p = dir / (std::string(name) + ".npy");
    const bool present = fs::exists(p, ec);
    const bool needed = required.count(name) > 0;
    const bool allowed = needed || optional.count(name) > 0;
    if (!present) {
      if (needed) throw RunError(p.string() + ": missing (required by " + op_name + ")");
      continue;
    }
    if (!allowed)
      throw RunError(p.string() + ": not used by " + op_name + " (remove it or choose another OP)");
    in.arrays.emplace(std::string(name), polyattn::io::read_npy(p));
  }
  return in;
}

// A float32 input of the given rank; `layout` describes the expected shape for messages.
const NpyArray& float_input(const Inputs& in, std::string_view name, std::size_t rank,
                            std::string_view layout) {
  const NpyArray& a = in.get(name);
  if (a.kind != 'f')
    throw RunError(in.file(name) + ": expected float32 ('<f4'), got " + a.dtype_name());
  if (a.rank() != rank)
    throw RunError(in.file(name) + ": expected a " + std::to_string(rank) + "-d array " +
                   std::string(layout) + ", got shape " + polyattn::shape_string(a.shape));
  return a;
}

// Data pointer of an input; never null (empty arrays point at a dummy so views are "present").
const float* data_of(const NpyArray& a) {
  static const float dummy = 0.0f;
  return a.f32.empty() ? &dummy : a.f32.data();
}

polyattn::View4<const float> view4(const NpyArray& a) {
  return polyattn::View4<const float>::contiguous(data_of(a),
                                                  {a.shape[0], a.shape[1], a.shape[2], a.shape[3]});
}
polyattn::View3<const float> view3(const NpyArray& a) {
  return polyattn::View3<const float>::contiguous(data_of(a), {a.shape[0], a.shape[1], a.shape[2]});
}
polyattn::View1<const float> view1(const NpyArray& a) {
  return polyattn::View1<const float>::contiguous(data_of(a), {a.shape[0]});
}

// --dtype: an input rounded to bf16 / fp16 (nearest even), kept for the call.
struct Rounded {
  std::vector<polyattn::bf16> b;
  std::vector<polyattn::f16> h;
  polyattn::ElementView<4> view(const NpyArray& a, Dtype t) {
    const auto shape = std::array<index_t, 4>{a.shape[0], a.shape[1], a.shape[2], a.shape[3]};
    if (t == Dtype::bf16) {
      b.resize(a.f32.size());
      for (std::size_t i = 0; i < b.size(); ++i) b[i] = polyattn::bf16_from(a.f32[i]);
      static const polyattn::bf16 none{};
      return polyattn::View4<const polyattn::bf16>::contiguous(b.empty() ? &none : b.data(), shape);
    }
    if (t == Dtype::f16) {
      h.resize(a.f32.size());
      for (std::size_t i = 0; i < h.size(); ++i) h[i] = polyattn::f16_from(a.f32[i]);
      static const polyattn::f16 none{};
      return polyattn::View4<const polyattn::f16>::contiguous(h.empty() ? &none : h.data(), shape);
    }
    return polyattn::View4<const float>::contiguous(data_of(a), shape);
  }
};

std::span<const std::int64_t> cu_seqlens_input(const Inputs& in) {
  if (!in.has("cu_seqlens")) return {};
  const NpyArray& a = in.get("cu_seqlens");
  if (a.kind != 'i')
    throw RunError(in.file("cu_seqlens") + ": expected int64 ('<i8'), got " + a.dtype_name());
  if (a.rank() != 1 || a.shape[0] < 2)
    throw RunError(in.file("cu_seqlens") + ": expected a 1-d array [N+1] with N >= 1, got shape " +
                   polyattn::shape_string(a.shape));
  return a.i64;
}

// ---- outputs --------------------------------------------------------------------------------

struct Output {
  std::string name;  // "o.npy"
  std::vector<std::int64_t> shape;
  std::vector<float> data;
  float dummy = 0.0f;

  Output(std::string n, std::vector<std::int64_t> s) : name(std::move(n)), shape(std::move(s)) {
    std::int64_t count = 1;
    for (auto d : shape) {
      if (d != 0 && count > std::numeric_limits<std::int64_t>::max() / d)
        throw RunError(name + ": output shape " + polyattn::shape_string(shape) + " is too large");
      count *= d;
    }
    data.assign(static_cast<std::size_t>(count), 0.0f);
  }
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;

  polyattn::View4<float> view4() {
    return polyattn::View4<float>::contiguous(data.empty() ? &dummy : data.data(),
                                              {shape[0], shape[1], shape[2], shape[3]});
  }
};

// --dtype: the operator's bf16 / fp16 output, widened into an Output once it has run.
struct TypedOutput {
  Output& out;
  Dtype type;
  std::vector<polyattn::bf16> b;
  std::vector<polyattn::f16> h;
  polyattn::bf16 bdummy{};
  polyattn::f16 hdummy{};
  TypedOutput(Output& o, Dtype t) : out(o), type(t) {
    if (t == Dtype::bf16) b.resize(o.data.size());
    if (t == Dtype::f16) h.resize(o.data.size());
  }
  polyattn::MutEView4 view() {
    const std::array<index_t, 4> s{out.shape[0], out.shape[1], out.shape[2], out.shape[3]};
    if (type == Dtype::bf16)
      return polyattn::View4<polyattn::bf16>::contiguous(b.empty() ? &bdummy : b.data(), s);
    if (type == Dtype::f16)
      return polyattn::View4<polyattn::f16>::contiguous(h.empty() ? &hdummy : h.data(), s);
    return out.view4();
  }
  void widen() {
    for (std::size_t i = 0; i < b.size(); ++i) out.data[i] = polyattn::to_float(b[i]);
    for (std::size_t i = 0; i < h.size(); ++i) out.data[i] = polyattn::to_float(h[i]);
  }
};

// --dtype with --algo reference: the oracle's fp32 output rounded once to the type, as the
// operators' typed output is.
void round_output(Output& o, Dtype t) {
  if (t == Dtype::bf16)
    for (float& x : o.data) x = polyattn::round_to<polyattn::bf16>(x);
  else if (t == Dtype::f16)
    for (float& x : o.data) x = polyattn::round_to<polyattn::f16>(x);
}

// Writes every output under a temporary name in `dir`, then renames them all into place.
// On any failure the temporaries are removed and nothing named o.npy/ht.npy is left behind.
void write_outputs(const fs::path& dir, std::vector<Output*> outputs) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw RunError("--out " + dir.string() + ": exists and is not a directory");
  fs::create_directories(dir, ec);
  if (ec)
    throw RunError("--out " + dir.string() + ": cannot create directory (" + ec.message() + ")");

  std::random_device rd;
  const std::string tag =
      std::to_string(rd()) + "-" +
      std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  std::vector<fs::path> temps;
  auto cleanup = [&] {
    std::error_code ignore;
    for (const auto& t : temps) fs::remove(t, ignore);
  };
  for (Output* o : outputs) {
    temps.push_back(dir / ("." + o->name + ".tmp-" + tag));
    try {
      polyattn::io::write_npy(temps.back(), o->data.data(),
                              std::span<const std::int64_t>(o->shape));
    } catch (const polyattn::io::NpyError&) {
      cleanup();
      throw RunError((dir / o->name).string() + ": cannot write (is --out writable?)");
    }
  }
  std::vector<fs::path> done;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const fs::path final_path = dir / outputs[i]->name;
    fs::rename(temps[i], final_path, ec);
    if (ec) {
      cleanup();
      std::error_code ignore;
      for (const auto& d : done) fs::remove(d, ignore);
      throw RunError(final_path.string() + ": cannot write (" + ec.message() + ")");
    }
    done.push_back(final_path);
  }
}

// ---- the operators --------------------------------------------------------------------------

// --threads N: polyattn::ThreadPool(N), or Serial for N == 1 (one type, so every operator and
// algorithm is instantiated once rather than once per executor).
class ToolExecutor {
 public:
  explicit ToolExecutor(index_t threads) {
    if (threads > 1) pool_.emplace(static_cast<int>(threads));
  }
  template <class F>
  void parallel_for(std::int64_t n, F&& fn) const {
    if (pool_)
      pool_->parallel_for(n, std::forward<F>(fn));
    else
      polyattn::Serial{}.parallel_for(n, std::forward<F>(fn));
  }
  int concurrency() const noexcept { return pool_ ? pool_->concurrency() : 1; }

 private:
  std::optional<polyattn::ThreadPool> pool_;
};
static_assert(polyattn::Executor<ToolExecutor>);

// One fast linear operator, run with the algorithm of the command line.
template <class LinearOp>
void forward_fast(const LinearOp& op, const Args& a, const polyattn::LinearInputs& li,
                  const polyattn::LinearOutputs<float>& out) {
  const polyattn::LinearRunOptions run{.scale = a.scale};
  const ToolExecutor exec(a.threads);
  switch (a.algo) {
    case Algo::Recurrent:
      op.template forward<polyattn::Recurrent>(li, out, run, exec);
      return;
    case Algo::Chunked:
      switch (a.chunk) {
        case 16:
          op.template forward<polyattn::Chunked<16>>(li, out, run, exec);
          return;
        case 32:
          op.template forward<polyattn::Chunked<32>>(li, out, run, exec);
          return;
        case 64:
          op.template forward<polyattn::Chunked<64>>(li, out, run, exec);
          return;
        case 128:
          op.template forward<polyattn::Chunked<128>>(li, out, run, exec);
          return;
        default:
          break;
      }
      break;
    case Algo::Parallel:
      op.template forward<polyattn::Parallel>(li, out, run, exec);
      return;
    default:
      break;
  }
  throw RunError("internal error: no fast operator for this --algo/--chunk");  // unreachable
}

// The preset of each linear OP (docs/conventions.md §4; include/polyattn/linear/presets.hpp).
// --qk-l2norm also applies to the additive presets: their AdditiveUpdate carries the same flag.
void run_linear_fast(const Args& a, const polyattn::LinearInputs& li, index_t HV,
                     const polyattn::LinearOutputs<float>& out) {
  namespace pr = polyattn::presets;
  using polyattn::AdditiveUpdate;
  using polyattn::ConstantDecay;
  using polyattn::Identity;
  using polyattn::NoDecay;
  using polyattn::NoNormalizer;
  const bool l2 = a.qk_l2norm;
  switch (a.op) {
    case Op::LinearAttn:
      if (a.normalize)  // make_linear_attn_normalized(): SumNormalizer{1e-10}, fla's normalize
        forward_fast(pr::linear_attn_normalized{Identity{}, NoDecay{}, AdditiveUpdate{l2},
                                                polyattn::SumNormalizer{1e-10}},
                     a, li, out);
      else
        forward_fast(pr::linear_attn{Identity{}, NoDecay{}, AdditiveUpdate{l2}, NoNormalizer{}}, a,
                     li, out);
      return;
    case Op::Retention:
      forward_fast(pr::retention{Identity{}, ConstantDecay::retention(HV), AdditiveUpdate{l2},
                                 NoNormalizer{}},
                   a, li, out);
      return;
    case Op::Lightning:
      forward_fast(
          pr::lightning_attn{
              Identity{}, ConstantDecay::lightning(HV, a.layer.value_or(0), a.layers.value_or(1)),
              AdditiveUpdate{l2}, NoNormalizer{}},
          a, li, out);
      return;
    case Op::SimpleGla:
      forward_fast(
          pr::simple_gla{Identity{}, polyattn::ScalarDecay{}, AdditiveUpdate{l2}, NoNormalizer{}},
          a, li, out);
      return;
    case Op::Gla:
      forward_fast(pr::gla{Identity{}, polyattn::VectorDecay{}, AdditiveUpdate{l2}, NoNormalizer{}},
                   a, li, out);
      return;
    case Op::DeltaRule:
      forward_fast(pr::make_delta_rule(l2), a, li, out);
      return;
    case Op::GatedDeltaRule:
      forward_fast(pr::make_gated_delta_rule(l2), a, li, out);
      return;
    case Op::Kda:
      forward_fast(pr::make_kda(l2), a, li, out);
      return;
    default:
      break;
  }
  throw RunError("internal error: " + a.op_name + " has no fast operator");  // unreachable
}

// gated_delta_rule / kda from raw gate projections (SPEC §6, docs/conventions.md §2.5): the
// fused operators, or with --algo reference the oracle on gates formed by the same functions.
bool raw_gates_given(const Args& a) {
  std::error_code ec;
  for (const char* name : {"a", "b", "graw", "A_log", "dt_bias"})
    if (fs::exists(a.in / (std::string(name) + ".npy"), ec)) return true;
  return false;
}

void run_raw_gates(const Args& a) {
  const bool kda = a.op == Op::Kda;
  std::error_code ec;
  for (const char* name : {"g", "beta"})
    if (fs::exists(a.in / (std::string(name) + ".npy"), ec))
      throw RunError((a.in / (std::string(name) + ".npy")).string() +
                     ": given with raw gate inputs (a / graw, b, A_log, dt_bias); give one form");
  std::set<std::string, std::less<>> required{"q", "k", "v", "b", "A_log", "dt_bias"};
  required.insert(kda ? "graw" : "a");
  const Inputs in = load_inputs(a.in, a.op_name, required, {"h0", "cu_seqlens"});
  const NpyArray& q = float_input(in, "q", 4, "[B,T,H,K]");
  const NpyArray& k = float_input(in, "k", 4, "[B,T,H,K]");
  const NpyArray& v = float_input(in, "v", 4, "[B,T,HV,V]");
  polyattn::LinearInputs li;
  Rounded rq, rk, rv;
  li.q = rq.view(q, a.dtype);
  li.k = rk.view(k, a.dtype);
  li.v = rv.view(v, a.dtype);
  li.cu_seqlens = cu_seqlens_input(in);
  if (kda)
    li.graw = view4(float_input(in, "graw", 4, "[B,T,HV,K] (raw KDA gate)"));
  else
    li.a = view3(float_input(in, "a", 3, "[B,T,HV] (raw GDN gate)"));
  li.b = view3(float_input(in, "b", 3, "[B,T,HV] (beta logits)"));
  li.A_log = view1(float_input(in, "A_log", 1, "[HV]"));
  li.dt_bias = view1(float_input(in, "dt_bias", 1, kda ? "[HV*K]" : "[HV]"));
  if (in.has("h0")) li.initial_state = view4(float_input(in, "h0", 4, "[N,HV,K,V]"));
  const index_t N = li.cu_seqlens.empty()
                        ? q.shape[0]
                        : std::max<index_t>(0, static_cast<index_t>(li.cu_seqlens.size()) - 1);
  const index_t B = q.shape[0], T = q.shape[1], HV = v.shape[2], K = q.shape[3], V = v.shape[3];
  Output o("o.npy", {B, T, HV, V});
  Output ht("ht.npy", {N, HV, K, V});
  TypedOutput ot(o, a.dtype);
  polyattn::LinearOutputs<float> out;
  out.o = ot.view();
  out.final_state = ht.view4();
  if (a.algo == Algo::Reference) {
    // Validate the raw form as the operator would, then materialise with the same functions.
    const polyattn::LinearDims d = polyattn::validate_linear_tensors(li, out, false);
    if (kda)
      polyattn::KimiDeltaDecay{a.lower_bound.has_value(), a.lower_bound.value_or(-5.f)}.check(li,
                                                                                              d);
    else
      polyattn::GatedDeltaNetDecay{}.check(li, d);
    polyattn::SigmoidBetaUpdate{}.check(li, d);
    namespace gt = polyattn::gates;
    std::vector<float> g, beta;
    for (index_t bt = 0; bt < B * T; ++bt)
      for (index_t h = 0; h < HV; ++h) {
        const index_t b = bt / T, t = bt % T;
        beta.push_back(gt::sigmoid(li.b(b, t, h)));
        if (kda && a.lower_bound)
          for (index_t i = 0; i < K; ++i)
            g.push_back(gt::kda_bounded_log_decay(li.graw(b, t, h, i), std::exp(li.A_log(h)),
                                                  li.dt_bias(h * K + i), *a.lower_bound));
        else if (kda)
          for (index_t i = 0; i < K; ++i)
            g.push_back(gt::kda_log_decay(li.graw(b, t, h, i), gt::neg_exp(li.A_log(h)),
                                          li.dt_bias(h * K + i)));
        else
          g.push_back(gt::gdn_log_decay(li.a(b, t, h), gt::neg_exp(li.A_log(h)), li.dt_bias(h)));
      }
    polyattn::LinearInputs ri = li;
    ri.a = {};
    ri.graw = {};
    ri.b = {};
    ri.A_log = {};
    ri.dt_bias = {};
    static const float none = 0.0f;
    if (kda)
      ri.gk = polyattn::View4<const float>::contiguous(g.empty() ? &none : g.data(), {B, T, HV, K});
    else
      ri.g = polyattn::View3<const float>::contiguous(g.empty() ? &none : g.data(), {B, T, HV});
    ri.beta =
        polyattn::View3<const float>::contiguous(beta.empty() ? &none : beta.data(), {B, T, HV});
    polyattn::LinearOptions opt;
    opt.decay = kda ? polyattn::Decay::VectorPerToken : polyattn::Decay::ScalarPerToken;
    opt.update = polyattn::Update::Delta;
    opt.scale = a.scale;
    opt.qk_l2norm = a.qk_l2norm;
    polyattn::LinearOutputs<float> ref = out;
    ref.o = o.view4();
    polyattn::reference::linear_recurrence<float>(ri, opt, ref);
    round_output(o, a.dtype);
  } else if (kda) {
    forward_fast(polyattn::presets::make_kda_fused(a.qk_l2norm, a.lower_bound.has_value(),
                                                   a.lower_bound.value_or(-5.f)),
                 a, li, out);
    ot.widen();
  } else {
    forward_fast(polyattn::presets::make_gated_delta_rule_fused(a.qk_l2norm), a, li, out);
    ot.widen();
  }
  write_outputs(a.out, {&o, &ht});
}

void run_linear(const Args& a) {
  const Op op = a.op;
  if ((op == Op::GatedDeltaRule || op == Op::Kda) && raw_gates_given(a)) return run_raw_gates(a);
  if (a.lower_bound)
    throw RunError(
        "--lower-bound needs the raw KDA gates (graw.npy, b.npy, A_log.npy, dt_bias.npy); g.npy "
        "holds gates already formed");
  const bool scalar_g = op == Op::SimpleGla || op == Op::GatedDeltaRule;
  const bool vector_g = op == Op::Gla || op == Op::Kda;
  const bool delta = op == Op::DeltaRule || op == Op::GatedDeltaRule || op == Op::Kda;
  std::set<std::string, std::less<>> required{"q", "k", "v"};
  if (scalar_g || vector_g) required.insert("g");
  if (delta) required.insert("beta");
  const Inputs in = load_inputs(a.in, a.op_name, required, {"h0", "cu_seqlens"});

  const NpyArray& q = float_input(in, "q", 4, "[B,T,H,K]");
  const NpyArray& k = float_input(in, "k", 4, "[B,T,H,K]");
  const NpyArray& v = float_input(in, "v", 4, "[B,T,HV,V]");

  polyattn::LinearInputs li;
  polyattn::LinearOptions opt;
  Rounded rq, rk, rv;
  li.q = rq.view(q, a.dtype);
  li.k = rk.view(k, a.dtype);
  li.v = rv.view(v, a.dtype);
  li.cu_seqlens = cu_seqlens_input(in);
  opt.scale = a.scale;
  opt.qk_l2norm = a.qk_l2norm;
  opt.update = delta ? polyattn::Update::Delta : polyattn::Update::Additive;
  if (a.normalize) {
    opt.normalizer = polyattn::Normalizer::Sum;
    opt.eps = 1e-10;  // fla normalize_output
  }

  const index_t HV = v.shape[2];
  std::vector<float> g_gamma;
  if (op == Op::Retention || op == Op::Lightning) {
    opt.decay = polyattn::Decay::ConstantPerHead;
    g_gamma.resize(static_cast<std::size_t>(HV));
    for (index_t h = 0; h < HV; ++h)
      g_gamma[static_cast<std::size_t>(h)] = static_cast<float>(
          op == Op::Retention
              ? polyattn::retention_log_decay(h)
              : polyattn::lightning_log_decay(h, HV, a.layer.value_or(0), a.layers.value_or(1)));
    static const float none = 0.0f;
    li.g_gamma =
        polyattn::View1<const float>::contiguous(g_gamma.empty() ? &none : g_gamma.data(), {HV});
  } else if (scalar_g) {
    opt.decay = polyattn::Decay::ScalarPerToken;
    li.g =
        view3(float_input(in, "g", 3, std::string("[B,T,HV] (scalar gate of ") + a.op_name + ")"));
  } else if (vector_g) {
    opt.decay = polyattn::Decay::VectorPerToken;
    li.gk = view4(
        float_input(in, "g", 4, std::string("[B,T,HV,K] (vector gate of ") + a.op_name + ")"));
  }
  if (delta) li.beta = view3(float_input(in, "beta", 3, "[B,T,HV]"));
  if (in.has("h0")) li.initial_state = view4(float_input(in, "h0", 4, "[N,HV,K,V]"));

  // Outputs sized from the inputs (each already in memory, so no larger than they are), then
  // everything validated before anything runs.
  const index_t N = li.cu_seqlens.empty()
                        ? q.shape[0]
                        : std::max<index_t>(0, static_cast<index_t>(li.cu_seqlens.size()) - 1);
  const polyattn::LinearDims d{q.shape[0], q.shape[1], q.shape[2], HV, q.shape[3], v.shape[3], N};
  Output o("o.npy", {d.B, d.T, d.HV, d.V});
  Output ht("ht.npy", {d.N, d.HV, d.K, d.V});
  TypedOutput ot(o, a.dtype);
  polyattn::LinearOutputs<float> out;
  out.o = ot.view();
  out.final_state = ht.view4();
  polyattn::validate_linear(li, opt, out);
  if (a.algo == Algo::Parallel) {  // the operator would say so too, naming q
    index_t longest = d.T;
    if (!li.cu_seqlens.empty()) {
      longest = 0;
      for (std::size_t i = 1; i < li.cu_seqlens.size(); ++i)
        longest = std::max<index_t>(longest, li.cu_seqlens[i] - li.cu_seqlens[i - 1]);
    }
    if (longest > polyattn::linear::kParallelMaxT)
      throw RunError("--algo parallel materialises T x T per head; sequence length " +
                     std::to_string(longest) + " exceeds " +
                     std::to_string(polyattn::linear::kParallelMaxT) + "; use --algo chunked");
  }
  if (a.algo == Algo::Reference) {
    // The oracle writes fp32; with --dtype its output is rounded once, as the operators' is.
    polyattn::LinearOutputs<float> ref = out;
    ref.o = o.view4();
    polyattn::reference::linear_recurrence<float>(li, opt, ref);
    round_output(o, a.dtype);
  } else {
    li.g_gamma = {};  // retention / lightning_attn: the preset's ConstantDecay carries the gates
    run_linear_fast(a, li, HV, out);
    ot.widen();
  }
  write_outputs(a.out, {&o, &ht});
}

void run_based(const Args& a) {
  const Inputs in = load_inputs(a.in, a.op_name, {"q", "k", "v"}, {"cu_seqlens"});
  polyattn::reference::BasedInputs bi;
  bi.q = view4(float_input(in, "q", 4, "[B,T,H,K]"));
  bi.k = view4(float_input(in, "k", 4, "[B,T,H,K]"));
  bi.v = view4(float_input(in, "v", 4, "[B,T,H,V]"));
  bi.cu_seqlens = cu_seqlens_input(in);
  polyattn::reference::BasedOptions opt;
  opt.scale = a.scale;
  opt.normalize = true;  // fla's parallel_based default; --normalize is accepted and redundant
  // based_attention validates before writing; this earlier call only keeps the output from
  // being sized from unchecked shapes.
  const auto d = polyattn::reference::validate_based(bi, opt);
  Output o("o.npy", {d.B, d.T, d.H, d.V});
  polyattn::reference::based_attention<float>(bi, opt, o.view4());
  write_outputs(a.out, {&o});
}

// --kv-dtype: K and V appended to a KV cache of that type in order; query row i (key position
// p = i + S − T) is answered by the decode kernel once keys 0 … p are in (the cache is the
// prefix, so causality and the window come from decode's own semantics; --no-causal: every row
// waits for all S keys).
template <class E>
void softmax_from_cache(const polyattn::SoftmaxInputs& si, const polyattn::SoftmaxOptions& opt,
                        const polyattn::SoftmaxDims& d, Dtype kv, polyattn::MutEView4 o,
                        const E& exec) {
  namespace sm = polyattn::softmax;
  if (!si.cu_seqlens.empty())
    throw RunError(
        "--kv-dtype answers rows from a KV cache per batch row; cu_seqlens is not "
        "supported with it");
  if (d.B == 0 || d.T == 0 || d.S == 0) return;
  const bool gated = !si.g.absent();
  sm::KVCache cache(
      d.B, d.HKV, d.D, d.Dv,
      sm::KVCacheOptions{.capacity = d.S, .gate_heads = gated ? d.HQ : 0, .dtype = kv});
  const auto rows = [](const polyattn::ElementView<4>& x, index_t j) {
    auto s = x.shape();
    s[1] = 1;
    return x.visit([&](auto t) {
      return polyattn::ElementView<4>(
          std::remove_cvref_t<decltype(t)>(t.ptr(0, j, 0, 0), s, t.strides()));
    });
  };
  polyattn::SoftmaxOptions dopt = opt;
  dopt.causal = false;  // decode's query sits at the last cached key
  for (index_t j = 0; j < d.S; ++j) {
    polyattn::View3<const float> g;
    if (gated) g = polyattn::View3<const float>(si.g.ptr(0, j, 0), {d.B, 1, d.HQ}, si.g.strides());
    cache.append(rows(si.k, j), rows(si.v, j), g);
    // Rows whose position is j (causal), or every row once all keys are in (non-causal).
    const index_t i = j - (d.S - d.T);
    std::vector<index_t> answer;
    if (opt.causal) {
      if (i >= 0 && i < d.T) answer.push_back(i);
    } else if (j == d.S - 1) {
      for (index_t r = 0; r < d.T; ++r) answer.push_back(r);
    }
    for (index_t r : answer) {
      sm::DecodeInputs din;
      din.q = rows(si.q, r);
      din.alibi_slopes = si.alibi_slopes;
      din.sink = si.sink;
      o.visit([&](auto ov) {
        auto s = ov.shape();
        s[1] = 1;
        const std::remove_cvref_t<decltype(ov)> orow(ov.ptr(0, r, 0, 0), s, ov.strides());
        sm::flash_decode(din, cache, dopt, polyattn::MutEView4(orow), exec);
      });
    }
  }
}

void run_softmax(const Args& a) {
  const bool forgetting = a.op == Op::ForgettingAttn;
  std::set<std::string, std::less<>> required{"q", "k", "v"};
  if (forgetting) required.insert("g");
  const Inputs in = load_inputs(a.in, a.op_name, required, {"sink", "cu_seqlens"});
  polyattn::SoftmaxInputs si;
  Rounded rq, rk, rv;
  si.q = rq.view(float_input(in, "q", 4, "[B,T,HQ,D]"), a.dtype);
  si.k = rk.view(float_input(in, "k", 4, "[B,S,HKV,D]"), a.dtype);
  si.v = rv.view(float_input(in, "v", 4, "[B,S,HKV,Dv]"), a.dtype);
  if (forgetting) si.g = view3(float_input(in, "g", 3, "[B,S,HQ] (log forget gates)"));
  if (in.has("sink")) si.sink = view1(float_input(in, "sink", 1, "[HQ]"));
  si.cu_seqlens = cu_seqlens_input(in);
  polyattn::SoftmaxOptions opt;
  opt.scale = a.scale;
  opt.causal = forgetting ? true : a.causal.value_or(true);
  opt.window = a.window.value_or(0);
  opt.sink_tokens = a.sinks.value_or(0);
  const polyattn::SoftmaxDims d = polyattn::validate(si, opt);
  Output o("o.npy", {d.B, d.T, d.HQ, d.Dv});
  TypedOutput ot(o, a.dtype);
  if (a.kv_dtype) {
    softmax_from_cache(si, opt, d, *a.kv_dtype, ot.view(), ToolExecutor(a.threads));
    ot.widen();
  } else if (a.algo == Algo::Flash) {
    polyattn::softmax::flash_attention(si, opt, ot.view(), ToolExecutor(a.threads));
    ot.widen();
  } else {
    polyattn::reference::softmax_attention<float>(si, opt, o.view4());
    round_output(o, a.dtype);
  }
  write_outputs(a.out, {&o});
}

// mamba2 (SPEC §6, docs/conventions.md §4.6): the Mamba2 operator with the chosen algorithm, or
// the oracle in Mamba2's own layout with --algo reference.
void run_mamba2(const Args& a) {
  const Inputs in = load_inputs(a.in, a.op_name, {"x", "dt", "A", "Bm", "Cm"},
                                {"D", "dt_bias", "h0", "cu_seqlens"});
  polyattn::Mamba2Inputs mi;
  mi.x = view4(float_input(in, "x", 4, "[B,T,H,P]"));
  mi.dt = view3(float_input(in, "dt", 3, "[B,T,H]"));
  mi.A = view1(float_input(in, "A", 1, "[H]"));
  mi.Bm = view4(float_input(in, "Bm", 4, "[B,T,G,N]"));
  mi.Cm = view4(float_input(in, "Cm", 4, "[B,T,G,N]"));
  if (in.has("D")) mi.D = view1(float_input(in, "D", 1, "[H]"));
  if (in.has("dt_bias")) mi.dt_bias = view1(float_input(in, "dt_bias", 1, "[H]"));
  if (in.has("h0")) mi.initial_state = view4(float_input(in, "h0", 4, "[N,H,P,N]"));
  mi.cu_seqlens = cu_seqlens_input(in);
  const index_t B = mi.x.size(0), T = mi.x.size(1), H = mi.x.size(2), P = mi.x.size(3);
  const index_t Ns = mi.Bm.size(3);
  const index_t seqs = mi.cu_seqlens.empty()
                           ? B
                           : std::max<index_t>(0, static_cast<index_t>(mi.cu_seqlens.size()) - 1);
  Output y("y.npy", {B, T, H, P});
  Output ht("ht.npy", {seqs, H, P, Ns});
  polyattn::gates::TimeStep ts{.softplus = a.dt_softplus};
  if (a.dt_limit) {
    ts.min = a.dt_limit->first;
    ts.max = a.dt_limit->second;
  }
  const polyattn::Mamba2 op(ts);
  const polyattn::Mamba2Outputs out{y.view4(), ht.view4()};
  const ToolExecutor exec(a.threads);
  switch (a.algo) {
    case Algo::Reference: {
      polyattn::reference::Mamba2Ref r{.x = mi.x,
                                       .Bm = mi.Bm,
                                       .Cm = mi.Cm,
                                       .initial_state = mi.initial_state,
                                       .dt = mi.dt,
                                       .A = mi.A,
                                       .D = mi.D,
                                       .dt_bias = mi.dt_bias,
                                       .cu_seqlens = mi.cu_seqlens,
                                       .dt_softplus = a.dt_softplus,
                                       .dt_min = ts.min,
                                       .dt_max = ts.max};
      // The fast operator validates every argument (names as in Mamba2); run it on a scratch
      // output so the oracle sees only checked shapes.
      Output scratch_y("y.npy", {B, T, H, P});
      op.forward<polyattn::Recurrent>(mi, {scratch_y.view4(), {}}, exec);
      std::vector<double> yd(y.data.size()), hd(ht.data.size());
      polyattn::reference::mamba2(r, polyattn::View4<double>::contiguous(yd.data(), {B, T, H, P}),
                                  polyattn::View4<double>::contiguous(hd.data(), {seqs, H, P, Ns}));
      for (std::size_t i = 0; i < yd.size(); ++i) y.data[i] = static_cast<float>(yd[i]);
      for (std::size_t i = 0; i < hd.size(); ++i) ht.data[i] = static_cast<float>(hd[i]);
      break;
    }
    case Algo::Recurrent:
      op.forward<polyattn::Recurrent>(mi, out, exec);
      break;
    case Algo::Parallel:
      op.forward<polyattn::Parallel>(mi, out, exec);
      break;
    default:
      switch (a.chunk) {
        case 16:
          op.forward<polyattn::Chunked<16>>(mi, out, exec);
          break;
        case 32:
          op.forward<polyattn::Chunked<32>>(mi, out, exec);
          break;
        case 128:
          op.forward<polyattn::Chunked<128>>(mi, out, exec);
          break;
        default:
          op.forward<polyattn::Chunked<64>>(mi, out, exec);
          break;
      }
  }
  write_outputs(a.out, {&y, &ht});
}

// short_conv (SPEC §6, docs/conventions.md §7.1): the convolution kernel, or the oracle.
void run_short_conv(const Args& a) {
  const Inputs in = load_inputs(a.in, a.op_name, {"x", "w"}, {"bias", "conv_state", "cu_seqlens"});
  polyattn::conv::ShortConvInputs ci;
  ci.x = view3(float_input(in, "x", 3, "[B,T,D]"));
  const NpyArray& w = float_input(in, "w", 2, "[D,W]");
  ci.weight =
      polyattn::TensorView<const float, 2>::contiguous(data_of(w), {w.shape[0], w.shape[1]});
  if (in.has("bias")) ci.bias = view1(float_input(in, "bias", 1, "[D]"));
  if (in.has("conv_state")) ci.initial_state = view3(float_input(in, "conv_state", 3, "[N,D,W-1]"));
  ci.cu_seqlens = cu_seqlens_input(in);
  const polyattn::conv::ShortConvDims d = polyattn::conv::validate_short_conv_inputs(ci);
  Output y("y.npy", {d.B, d.T, d.D});
  Output st("conv_state.npy", {d.N, d.D, d.W - 1});
  const auto y3 = polyattn::View3<float>::contiguous(y.data.empty() ? &y.dummy : y.data.data(),
                                                     {d.B, d.T, d.D});
  const auto s3 = polyattn::View3<float>::contiguous(st.data.empty() ? &st.dummy : st.data.data(),
                                                     {d.N, d.D, d.W - 1});
  const polyattn::conv::ShortConvOptions opt{.activation = a.silu.value_or(false)
                                                               ? polyattn::conv::Activation::SiLU
                                                               : polyattn::conv::Activation::None};
  if (a.algo == Algo::Reference)
    polyattn::reference::short_conv<float>(ci, opt, y3, s3);
  else
    polyattn::conv::short_conv(ci, opt, {y3, s3}, ToolExecutor(a.threads));
  write_outputs(a.out, {&y, &st});
}

// ---- error reporting ------------------------------------------------------------------------

// polyattn::Error names an argument of the C++ API; point the user at the file or flag instead.
std::string describe(const polyattn::Error& e, const Args& a) {
  static const std::map<std::string, std::string, std::less<>> to_input{
      {"q", "q"},
      {"k", "k"},
      {"v", "v"},
      {"g", "g"},
      {"gk", "g"},
      {"beta", "beta"},
      {"initial_state", "h0"},
      {"sink", "sink"},
      {"cu_seqlens", "cu_seqlens"},
      {"a", "a"},
      {"b", "b"},
      {"graw", "graw"},
      {"A_log", "A_log"},
      {"dt_bias", "dt_bias"},
      {"x", "x"},
      {"dt", "dt"},
      {"A", "A"},
      {"Bm", "Bm"},
      {"Cm", "Cm"},
      {"D", "D"},
      {"weight", "w"},
      {"bias", "bias"}};
  static const std::map<std::string, std::string, std::less<>> to_flag{
      {"scale", "--scale"},
      {"window", "--window"},
      {"sink_tokens", "--sinks"},
      {"dt_limit", "--dt-limit"},
      {"lower_bound", "--lower-bound"}};
  const std::string& arg = e.argument();
  std::string msg = e.what();
  if (a.op == Op::ShortConv && arg.rfind("initial_state", 0) == 0)
    return (a.in / "conv_state.npy").string() + ": " + msg.substr(msg.find("': ") + 3);
  const std::string prefix = "polyattn: argument '" + arg + "': ";
  if (msg.rfind(prefix, 0) == 0) msg = msg.substr(prefix.size());
  // Arguments such as "q (batch)": the file is the first word, the rest qualifies it.
  const std::string base = arg.substr(0, arg.find(' '));
  const std::string qualifier = arg.size() > base.size() ? arg.substr(base.size()) : "";
  if (const auto it = to_input.find(base); it != to_input.end())
    return (a.in / (it->second + ".npy")).string() + qualifier + ": " + msg;
  if (const auto it = to_flag.find(base); it != to_flag.end()) return it->second + ": " + msg;
  return "argument '" + arg + "': " + msg;
}

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view s = argv[i];
    if (s == "-h" || s == "--help") {
      std::cout << usage();
      return 0;
    }
  }
  Args args;
  try {
    args = parse_args(argc, argv);
    if (is_linear(args.op))
      run_linear(args);
    else if (args.op == Op::Mamba2)
      run_mamba2(args);
    else if (args.op == Op::ShortConv)
      run_short_conv(args);
    else if (args.op == Op::Based)
      run_based(args);
    else
      run_softmax(args);
    return 0;
  } catch (const polyattn::Error& e) {
    std::cerr << "polyattn-run: " << one_line(describe(e, args)) << '\n';
  } catch (const std::bad_alloc&) {
    std::cerr << "polyattn-run: out of memory (inputs too large?)\n";
  } catch (const std::exception& e) {
    std::cerr << "polyattn-run: " << one_line(e.what()) << '\n';
  }
  return 2;
}
