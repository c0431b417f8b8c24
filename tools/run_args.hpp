// tools/run_args.hpp — the command line of polyattn-run (docs/conventions.md §11): the operator
// table, the options and parse_args, which turns argv into Args or throws RunError with a
// one-line message. A header of its own so that the argument fuzzer (tests/fuzz) drives exactly
// the parser the tool uses.
#pragma once

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "polyattn/core/element.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/policies/algorithm.hpp"

namespace polyattn::tool {

namespace fs = std::filesystem;
using polyattn::Dtype;
using polyattn::index_t;

// The linear family runs Chunked<64> by default.
inline constexpr long long kDefaultChunk = 64;
inline constexpr long long kMaxThreads = 1024;

inline std::string usage() {
  std::string u = R"(usage: polyattn-run OP --in DIR --out DIR [options]

Runs one attention preset on float32 .npy inputs and writes float32 .npy outputs
(conventions of flash-linear-attention / transformers, see docs/conventions.md).

OP (inputs read from --in DIR; [x] = optional; cu_seqlens.npy (int64 [N+1], B == 1) optional):
  linear_attn        q k v [h0]                         --normalize: o / (scale*q*cumsum(k) + 1e-10)
  retention          q k v [h0]                         g_gamma[h] = log(1 - 2^(-5-h))
  lightning_attn     q k v [h0]                         g_gamma[h] = -(8/HV)(1 - layer/layers) h
  simple_gla         q k v g[B,T,HV] [h0]
  gla                q k v g[B,T,HV,K] [h0]
  delta_rule         q k v beta[B,T,HV] [h0]
  gated_delta_rule   q k v g[B,T,HV] beta[B,T,HV] [h0]
                     or raw gates: q k v a[B,T,HV] b[B,T,HV] A_log[HV] dt_bias[HV] [h0]
                     (g = -exp(A_log) softplus(a + dt_bias), beta = sigmoid(b), in the kernel)
  kda                q k v g[B,T,HV,K] beta[B,T,HV] [h0]
                     or raw gates: q k v graw[B,T,HV,K] b A_log[HV] dt_bias[HV*K] [h0]
  mamba2             x[B,T,H,P] dt[B,T,H] A[H] Bm[B,T,G,N] Cm[B,T,G,N] [D[H]] [dt_bias[H]]
                     [h0[N,H,P,N]]   outputs y.npy [B,T,H,P] and ht.npy [N,H,P,N]
  short_conv         x[B,T,D] w[D,W] [bias[D]] [conv_state[N,D,W-1]]
                     outputs y.npy [B,T,D] and conv_state.npy [N,D,W-1]
  based              q k v                              (causal, Taylor-2, normalised, eps 1e-6)
  softmax            q[B,T,HQ,D] k v[B,S,HKV,*] [sink[HQ]]
  forgetting_attn    q k v g[B,S,HQ] [sink[HQ]]         (always causal)
  Shapes: q, k [B,T,H,K]; v [B,T,HV,V] (HV multiple of H); h0 [N,HV,K,V].
  Outputs in --out DIR: o.npy, plus ht.npy (final state [N,HV,K,V]) for the linear family.
  Input files of the list above that the OP does not use are an error.

options:
  --in DIR                directory with the input .npy files (required)
  --out DIR               output directory, created if missing (required)
  --scale S               override the default scale (K^-0.5, D^-0.5 for softmax)
  --qk-l2norm             L2-normalise q and k in the kernel (linear family)
  --normalize             sum normaliser (linear_attn; based is always normalised)
  --layer l --layers L    lightning_attn decay for layer l of L (default 0 of 1, 0 <= l <= L)
  --causal | --no-causal  softmax masking (default causal)
  --window W              softmax sliding window of W keys (W >= 1)
  --sinks N               softmax: the first N keys are always visible
  --algo A                algorithm of the linear family (fp32 operators):
                            chunked    chunks of C tokens + state passing (default)
                            recurrent  token by token
                            parallel   the masked T x T form)";
  u += ", sequences of <= " + std::to_string(polyattn::linear::kParallelMaxT) + " tokens";
  u += R"(
                            reference  the naive double-precision oracle, rounded to fp32
                          softmax and forgetting_attn run the tiled flash kernel, or the
                          oracle with --algo reference (other values are an error for them);
                          based always runs the reference
  --chunk C               chunk size of --algo chunked: 16, 32, 64 (default) or 128
                          (checked always, used only by --algo chunked)
  --threads N             threads of the fast operators, 1 to 1024 (default 1); the results are
                          bit-identical for any N (ignored by the reference)
  --dtype T               fp32 (default), bf16 or fp16: q, k, v are rounded to T (nearest even)
                          and the operator runs on T inputs with a T output; o.npy holds those
                          outputs widened to float32 (states, gates, beta stay fp32; based: fp32)
  --dt-softplus           mamba2: dt = softplus(dt + dt_bias) (mamba_ssm's dt_softplus)
  --dt-limit MIN,MAX      mamba2: clamp the time step to [MIN, MAX] (mamba_ssm's dt_limit;
                          0 <= MIN <= MAX, MAX may be inf; default 0,inf = no clamp)
  --lower-bound L         kda with raw gates: fla's bounded gate
                          g = L * sigmoid(exp(A_log) * (graw + dt_bias)), L finite and < 0
  --activation A          short_conv: none (default) or silu
  --kv-dtype T            softmax / forgetting_attn: K and V go through a KV cache of type fp32,
                          bf16, fp16 or int8 (per-token symmetric) and every query row is answered
                          from it by the decode kernel (no cu_seqlens; not with --algo reference)
  -h, --help              print this help and exit

Errors: one line on stderr, exit status 2, no output written.
)";
  return u;
}

// A user-facing failure: printed as "polyattn-run: <what>", exit status 2.
struct RunError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- operators ------------------------------------------------------------------------------

enum class Op {
  LinearAttn,
  Retention,
  Lightning,
  SimpleGla,
  Gla,
  DeltaRule,
  GatedDeltaRule,
  Kda,
  Based,
  Softmax,
  ForgettingAttn,
  Mamba2,
  ShortConv
};

inline const std::map<std::string, Op, std::less<>>& op_table() {
  static const std::map<std::string, Op, std::less<>> t{{"linear_attn", Op::LinearAttn},
                                                        {"retention", Op::Retention},
                                                        {"lightning_attn", Op::Lightning},
                                                        {"simple_gla", Op::SimpleGla},
                                                        {"gla", Op::Gla},
                                                        {"delta_rule", Op::DeltaRule},
                                                        {"gated_delta_rule", Op::GatedDeltaRule},
                                                        {"kda", Op::Kda},
                                                        {"based", Op::Based},
                                                        {"softmax", Op::Softmax},
                                                        {"forgetting_attn", Op::ForgettingAttn},
                                                        {"mamba2", Op::Mamba2},
                                                        {"short_conv", Op::ShortConv}};
  return t;
}

inline bool is_linear(Op op) {
  return op != Op::Based && op != Op::Softmax && op != Op::ForgettingAttn && op != Op::Mamba2 &&
         op != Op::ShortConv;
}
inline bool is_softmax(Op op) {
  return op == Op::Softmax || op == Op::ForgettingAttn;
}

enum class Algo { Reference, Recurrent, Chunked, Parallel, Flash };

// ---- command line ---------------------------------------------------------------------------

struct Args {
  Op op{};
  std::string op_name;
  fs::path in, out;
  std::optional<double> scale;
  bool qk_l2norm = false;
  bool normalize = false;
  std::optional<bool> causal;
  std::optional<index_t> window, sinks, layer, layers;
  index_t chunk = kDefaultChunk;
  index_t threads = 1;
  std::optional<Algo> algo_given;                   // --algo as given
  Algo algo = Algo::Reference;                      // what runs (resolved for the OP by parse_args)
  Dtype dtype = Dtype::f32;                         // --dtype: q, k, v and o
  std::optional<Dtype> kv_dtype;                    // --kv-dtype: the KV cache of the softmax OPs
  bool dt_softplus = false;                         // --dt-softplus (mamba2)
  std::optional<std::pair<float, float>> dt_limit;  // --dt-limit MIN,MAX (mamba2)
  std::optional<float> lower_bound;                 // --lower-bound L (kda, raw gates)
  std::optional<bool> silu;                         // --activation silu|none (short_conv)
};

// "fp32" | "bf16" | "fp16" (and "int8" where allowed) → Dtype, else RunError naming the flag.
inline Dtype parse_dtype(std::string_view flag, const std::string& s, bool allow_int8) {
  if (s == "fp32") return Dtype::f32;
  if (s == "bf16") return Dtype::bf16;
  if (s == "fp16") return Dtype::f16;
  if (s == "int8" && allow_int8) return Dtype::i8;
  throw RunError("unknown " + std::string(flag) + " '" + s + "' (expected fp32, bf16, fp16" +
                 (allow_int8 ? ", int8)" : ")"));
}

inline index_t parse_int(std::string_view flag, std::string_view s, index_t min,
                         index_t max = std::numeric_limits<index_t>::max()) {
  index_t v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || p != s.data() + s.size())
    throw RunError(std::string(flag) + " expects an integer, got '" + std::string(s) + "'");
  if (v > max)
    throw RunError(std::string(flag) + " must be <= " + std::to_string(max) + ", got " +
                   std::to_string(v));
  if (v < min)
    throw RunError(std::string(flag) + " must be " +
                   (min == 1 ? std::string("a positive integer") : ">= " + std::to_string(min)) +
                   ", got " + std::to_string(v));
  return v;
}

inline double parse_double(std::string_view flag, const std::string& s) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(v))
    throw RunError(std::string(flag) + " expects a finite number, got '" + s + "'");
  return v;
}

// --dt-limit MIN,MAX: 0 <= MIN <= MAX, MIN finite, MAX finite or "inf" (both as float).
inline std::pair<float, float> parse_dt_limit(const std::string& s) {
  const auto comma = s.find(',');
  if (comma == std::string::npos)
    throw RunError("--dt-limit expects MIN,MAX (e.g. 0.001,0.1 or 0,inf), got '" + s + "'");
  const std::string lo = s.substr(0, comma), hi = s.substr(comma + 1);
  const double mn = parse_double("--dt-limit MIN", lo);
  const double mx =
      hi == "inf" ? std::numeric_limits<double>::infinity() : parse_double("--dt-limit MAX", hi);
  if (mn < 0.0) throw RunError("--dt-limit MIN must be >= 0, got " + lo);
  if (mn > std::numeric_limits<float>::max() ||
      (std::isfinite(mx) && mx > std::numeric_limits<float>::max()))
    throw RunError("--dt-limit: values must fit a float, got '" + s + "'");
  if (mx < mn) throw RunError("--dt-limit MAX must be >= MIN, got '" + s + "'");
  return {static_cast<float>(mn), static_cast<float>(mx)};
}

inline Args parse_args(int argc, char** argv) {
  Args a;
  bool have_op = false, have_in = false, have_out = false;
  std::set<std::string> seen;
  const std::set<std::string, std::less<>> with_value{
      "--in",     "--out",      "--scale",      "--algo",     "--chunk",
      "--window", "--sinks",    "--threads",    "--layer",    "--layers",
      "--dtype",  "--kv-dtype", "--activation", "--dt-limit", "--lower-bound"};
  const std::set<std::string, std::less<>> switches{"--qk-l2norm", "--normalize", "--causal",
                                                    "--no-causal", "--dt-softplus"};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      if (!arg.empty() && arg[0] == '-') throw RunError("unknown option '" + arg + "'");
      if (have_op)
        throw RunError("unexpected argument '" + arg + "' (OP already given as '" + a.op_name +
                       "')");
      const auto it = op_table().find(arg);
      if (it == op_table().end())
        throw RunError("unknown OP '" + arg +
                       "' (expected linear_attn, retention, lightning_attn, simple_gla, gla, "
                       "delta_rule, gated_delta_rule, kda, based, softmax, forgetting_attn, "
                       "mamba2 or short_conv)");
      a.op = it->second;
      a.op_name = arg;
      have_op = true;
      continue;
    }
    std::string value;
    bool has_inline_value = false;
    if (const auto eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_inline_value = true;
    }
    const bool takes_value = with_value.count(arg) > 0;
    if (!takes_value && switches.count(arg) == 0) throw RunError("unknown option '" + arg + "'");
    if (!seen.insert(arg).second) throw RunError(arg + " given more than once");
    if (takes_value) {
      if (!has_inline_value) {
        if (i + 1 >= argc) throw RunError(arg + " needs a value");
        value = argv[++i];
      }
    } else if (has_inline_value) {
      throw RunError(arg + " takes no value");
    }

    if (arg == "--in") {
      if (value.empty()) throw RunError("--in needs a directory");
      a.in = value;
      have_in = true;
    } else if (arg == "--out") {
      if (value.empty()) throw RunError("--out needs a directory");
      a.out = value;
      have_out = true;
    } else if (arg == "--scale") {
      a.scale = parse_double(arg, value);
    } else if (arg == "--algo") {
      if (value == "reference")
        a.algo_given = Algo::Reference;
      else if (value == "recurrent")
        a.algo_given = Algo::Recurrent;
      else if (value == "chunked")
        a.algo_given = Algo::Chunked;
      else if (value == "parallel")
        a.algo_given = Algo::Parallel;
      else
        throw RunError("unknown --algo '" + value +
                       "' (expected chunked, recurrent, parallel or reference)");
    } else if (arg == "--chunk") {
      a.chunk = parse_int(arg, value, std::numeric_limits<index_t>::min());
      if (a.chunk != 16 && a.chunk != 32 && a.chunk != 64 && a.chunk != 128)
        throw RunError("--chunk must be 16, 32, 64 or 128, got " + std::to_string(a.chunk));
    } else if (arg == "--threads") {
      a.threads = parse_int(arg, value, 1, kMaxThreads);
    } else if (arg == "--dtype") {
      a.dtype = parse_dtype(arg, value, false);
    } else if (arg == "--kv-dtype") {
      a.kv_dtype = parse_dtype(arg, value, true);
    } else if (arg == "--window") {
      a.window = parse_int(arg, value, 1);
    } else if (arg == "--sinks") {
      a.sinks = parse_int(arg, value, 0);
    } else if (arg == "--layer") {
      a.layer = parse_int(arg, value, 0);
    } else if (arg == "--layers") {
      a.layers = parse_int(arg, value, 1);
    } else if (arg == "--qk-l2norm") {
      a.qk_l2norm = true;
    } else if (arg == "--normalize") {
      a.normalize = true;
    } else if (arg == "--dt-softplus") {
      a.dt_softplus = true;
    } else if (arg == "--dt-limit") {
      a.dt_limit = parse_dt_limit(value);
    } else if (arg == "--lower-bound") {
      const double lb = parse_double(arg, value);
      if (!(lb < 0.0) || lb < -static_cast<double>(std::numeric_limits<float>::max()))
        throw RunError("--lower-bound must be a negative float, got '" + value + "'");
      a.lower_bound = static_cast<float>(lb);
    } else if (arg == "--activation") {
      if (value != "silu" && value != "none")
        throw RunError("unknown --activation '" + value + "' (expected silu or none)");
      a.silu = value == "silu";
    } else if (arg == "--causal" || arg == "--no-causal") {
      if (a.causal) throw RunError("--causal and --no-causal are mutually exclusive");
      a.causal = arg == "--causal";
    }
  }

  if (!have_op) throw RunError("missing OP (see --help)");
  // The algorithm that runs: the linear family runs the fp32 operators (default chunked).
  if (is_linear(a.op) || a.op == Op::Mamba2) {
    a.algo = a.algo_given.value_or(Algo::Chunked);
  } else if (a.op == Op::ShortConv) {
    if (a.algo_given.has_value() && *a.algo_given != Algo::Reference)
      throw RunError(
          "short_conv runs its own kernel; --algo recurrent, chunked and parallel "
          "belong to the linear family (--algo reference runs the oracle)");
    a.algo = a.algo_given.value_or(Algo::Flash);  // Flash: the op's fast kernel
  } else if (is_softmax(a.op)) {
    if (a.algo_given.has_value() && *a.algo_given != Algo::Reference)
      throw RunError(a.op_name +
                     " runs the tiled flash kernel; --algo recurrent, chunked and "
                     "parallel belong to the linear family (--algo reference runs the oracle)");
    a.algo = a.algo_given.value_or(Algo::Flash);
  } else {
    a.algo = Algo::Reference;  // based: no fast operator yet
  }
  if (!have_in) throw RunError("missing --in DIR");
  if (!have_out) throw RunError("missing --out DIR");

  // Options that have no meaning for the chosen OP are errors, not silently ignored.
  auto reject = [&](bool given, std::string_view flag) {
    if (given) throw RunError(std::string(flag) + " is not used by " + a.op_name);
  };
  const Op op = a.op;
  reject(a.qk_l2norm && !is_linear(op), "--qk-l2norm");
  reject(a.normalize && op != Op::LinearAttn && op != Op::Based, "--normalize");
  reject((a.layer || a.layers) && op != Op::Lightning, "--layer/--layers");
  reject(a.causal.has_value() && !is_softmax(op),
         a.causal.value_or(false) ? "--causal" : "--no-causal");
  reject(a.window.has_value() && !is_softmax(op), "--window");
  reject(a.sinks.has_value() && !is_softmax(op), "--sinks");
  reject(a.kv_dtype.has_value() && !is_softmax(op), "--kv-dtype");
  reject(a.dtype != Dtype::f32 && (op == Op::Based || op == Op::Mamba2 || op == Op::ShortConv),
         "--dtype");
  reject(a.scale.has_value() && (op == Op::Mamba2 || op == Op::ShortConv), "--scale");
  reject(a.dt_softplus && op != Op::Mamba2, "--dt-softplus");
  reject(a.dt_limit.has_value() && op != Op::Mamba2, "--dt-limit");
  reject(a.lower_bound.has_value() && op != Op::Kda, "--lower-bound");
  reject(a.silu.has_value() && op != Op::ShortConv, "--activation");
  if (a.kv_dtype && a.algo == Algo::Reference)
    throw RunError("--kv-dtype runs the decode kernel over a KV cache; not with --algo reference");
  if (op == Op::ForgettingAttn && a.causal == false)
    throw RunError("forgetting_attn is always causal; --no-causal is not allowed");
  if (op == Op::Lightning) {
    const index_t layers = a.layers.value_or(1), layer = a.layer.value_or(0);
    if (layer > layers)
      throw RunError("--layer " + std::to_string(layer) + " must be <= --layers " +
                     std::to_string(layers));
  }
  return a;
}

}  // namespace polyattn::tool
