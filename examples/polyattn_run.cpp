// examples/polyattn_run.cpp — the parity tool `polyattn-run` (SPEC.md §6).
//
// Runs one attention preset on float32 .npy inputs from a directory and writes float32 .npy
// outputs, so a port can be checked against PyTorch (flash-linear-attention / transformers).
// This build runs the naive double-precision references (polyattn/reference/*.hpp); the fast
// algorithms are not wired yet. Every failure is one line on stderr, exit status 2, and no
// output file is written (outputs are computed in memory, written under temporary names and
// renamed into place at the end).
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
#include <vector>

#include "polyattn/args/linear.hpp"
#include "polyattn/args/softmax.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/io/npy.hpp"
#include "polyattn/reference/based.hpp"
#include "polyattn/reference/linear.hpp"
#include "polyattn/reference/softmax.hpp"

namespace {

namespace fs = std::filesystem;
using polyattn::index_t;
using polyattn::io::NpyArray;

constexpr std::string_view kUsage =
    R"(usage: polyattn-run OP --in DIR --out DIR [options]

Runs one attention preset on float32 .npy inputs and writes float32 .npy outputs
(conventions of flash-linear-attention / transformers, see SPEC.md).

OP (inputs read from --in DIR; [x] = optional; cu_seqlens.npy (int64 [N+1], B == 1) optional):
  linear_attn        q k v [h0]                         --normalize: o / (scale*q*cumsum(k) + 1e-10)
  retention          q k v [h0]                         g_gamma[h] = log(1 - 2^(-5-h))
  lightning_attn     q k v [h0]                         g_gamma[h] = -(8/HV)(1 - layer/layers) h
  simple_gla         q k v g[B,T,HV] [h0]
  gla                q k v g[B,T,HV,K] [h0]
  delta_rule         q k v beta[B,T,HV] [h0]
  gated_delta_rule   q k v g[B,T,HV] beta[B,T,HV] [h0]
  kda                q k v g[B,T,HV,K] beta[B,T,HV] [h0]
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
  --algo A                reference (default); recurrent|chunked|parallel not available yet
  --chunk C               chunk size of the chunked algorithm (positive)
  --threads N             worker threads of the fast algorithms (positive)
  -h, --help              print this help and exit

Errors: one line on stderr, exit status 2, no output written.
)";

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
  ForgettingAttn
};

const std::map<std::string, Op, std::less<>>& op_table() {
  static const std::map<std::string, Op, std::less<>> t{
      {"linear_attn", Op::LinearAttn},     {"retention", Op::Retention},
      {"lightning_attn", Op::Lightning},   {"simple_gla", Op::SimpleGla},
      {"gla", Op::Gla},                    {"delta_rule", Op::DeltaRule},
      {"gated_delta_rule", Op::GatedDeltaRule}, {"kda", Op::Kda},
      {"based", Op::Based},                {"softmax", Op::Softmax},
      {"forgetting_attn", Op::ForgettingAttn}};
  return t;
}

bool is_linear(Op op) { return op != Op::Based && op != Op::Softmax && op != Op::ForgettingAttn; }
bool is_softmax(Op op) { return op == Op::Softmax || op == Op::ForgettingAttn; }

// ---- command line ---------------------------------------------------------------------------

struct Args {
  Op op{};
  std::string op_name;
  fs::path in, out;
  std::optional<double> scale;
  bool qk_l2norm = false;
  bool normalize = false;
  std::optional<bool> causal;
  std::optional<index_t> window, sinks, chunk, threads, layer, layers;
  std::string algo = "reference";
};

index_t parse_int(std::string_view flag, std::string_view s, index_t min) {
  index_t v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || p != s.data() + s.size())
    throw RunError(std::string(flag) + " expects an integer, got '" + std::string(s) + "'");
  if (v < min)
    throw RunError(std::string(flag) + " must be " +
                   (min == 1 ? std::string("a positive integer")
                             : ">= " + std::to_string(min)) +
                   ", got " + std::to_string(v));
  return v;
}

double parse_double(std::string_view flag, const std::string& s) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(v))
    throw RunError(std::string(flag) + " expects a finite number, got '" + s + "'");
  return v;
}

Args parse_args(int argc, char** argv) {
  Args a;
  bool have_op = false, have_in = false, have_out = false, have_algo = false;
  std::set<std::string> seen;
  const std::set<std::string, std::less<>> with_value{"--in",     "--out",   "--scale", "--algo",
                                                      "--chunk",  "--window", "--sinks",
                                                      "--threads", "--layer", "--layers"};
  const std::set<std::string, std::less<>> switches{"--qk-l2norm", "--normalize", "--causal",
                                                    "--no-causal"};
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
                       "delta_rule, gated_delta_rule, kda, based, softmax or forgetting_attn)");
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
      a.algo = value;
      have_algo = true;
    } else if (arg == "--chunk") {
      a.chunk = parse_int(arg, value, 1);
    } else if (arg == "--threads") {
      a.threads = parse_int(arg, value, 1);
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
    } else if (arg == "--causal" || arg == "--no-causal") {
      if (a.causal) throw RunError("--causal and --no-causal are mutually exclusive");
      a.causal = arg == "--causal";
    }
  }

  if (!have_op) throw RunError("missing OP (see --help)");
  if (have_algo) {
    if (a.algo == "recurrent" || a.algo == "chunked" || a.algo == "parallel")
      throw RunError("--algo " + a.algo +
                     " is not available yet in this build; use --algo reference");
    if (a.algo != "reference")
      throw RunError("unknown --algo '" + a.algo +
                     "' (expected reference, recurrent, chunked or parallel)");
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
  reject(a.causal.has_value() && !is_softmax(op), a.causal.value_or(false) ? "--causal"
                                                                           : "--no-causal");
  reject(a.window.has_value() && !is_softmax(op), "--window");
  reject(a.sinks.has_value() && !is_softmax(op), "--sinks");
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

// ---- inputs ---------------------------------------------------------------------------------

// The input files this tool knows about (base names without ".npy").
constexpr std::string_view kKnownInputs[] = {"q", "k", "v", "g", "beta", "h0", "sink",
                                             "cu_seqlens"};

struct Inputs {
  fs::path dir;
  std::map<std::string, NpyArray, std::less<>> arrays;

  std::string file(std::string_view name) const { return (dir / (std::string(name) + ".npy")).string(); }
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
      throw RunError(p.string() + ": not used by " + op_name +
                     " (remove it or choose another OP)");
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

// Writes every output under a temporary name in `dir`, then renames them all into place.
// On any failure the temporaries are removed and nothing named o.npy/ht.npy is left behind.
void write_outputs(const fs::path& dir, std::vector<Output*> outputs) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw RunError("--out " + dir.string() + ": exists and is not a directory");
  fs::create_directories(dir, ec);
  if (ec) throw RunError("--out " + dir.string() + ": cannot create directory (" + ec.message() + ")");

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
      polyattn::io::write_npy(temps.back(), o->data.data(), std::span<const std::int64_t>(o->shape));
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

void run_linear(const Args& a) {
  const Op op = a.op;
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
  li.q = view4(q);
  li.k = view4(k);
  li.v = view4(v);
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
    li.g_gamma = polyattn::View1<const float>::contiguous(g_gamma.empty() ? &none : g_gamma.data(),
                                                          {HV});
  } else if (scalar_g) {
    opt.decay = polyattn::Decay::ScalarPerToken;
    li.g = view3(float_input(in, "g", 3, std::string("[B,T,HV] (scalar gate of ") + a.op_name + ")"));
  } else if (vector_g) {
    opt.decay = polyattn::Decay::VectorPerToken;
    li.gk = view4(float_input(in, "g", 4, std::string("[B,T,HV,K] (vector gate of ") + a.op_name + ")"));
  }
  if (delta) li.beta = view3(float_input(in, "beta", 3, "[B,T,HV]"));
  if (in.has("h0")) li.initial_state = view4(float_input(in, "h0", 4, "[N,HV,K,V]"));

  // Validate against probe output views first, so no output memory is sized from bad shapes.
  const index_t N = li.cu_seqlens.empty() ? q.shape[0]
                                          : static_cast<index_t>(li.cu_seqlens.size()) - 1;
  float probe = 0.0f;
  polyattn::LinearOutputs<float> check_out;
  check_out.o = polyattn::View4<float>::contiguous(&probe, {q.shape[0], q.shape[1], HV, v.shape[3]});
  check_out.final_state = polyattn::View4<float>::contiguous(&probe, {N, HV, q.shape[3], v.shape[3]});
  const polyattn::LinearDims d = polyattn::validate_linear(li, opt, check_out);

  Output o("o.npy", {d.B, d.T, d.HV, d.V});
  Output ht("ht.npy", {d.N, d.HV, d.K, d.V});
  polyattn::LinearOutputs<float> out;
  out.o = o.view4();
  out.final_state = ht.view4();
  polyattn::reference::linear_recurrence<float>(li, opt, out);
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

void run_softmax(const Args& a) {
  const bool forgetting = a.op == Op::ForgettingAttn;
  std::set<std::string, std::less<>> required{"q", "k", "v"};
  if (forgetting) required.insert("g");
  const Inputs in = load_inputs(a.in, a.op_name, required, {"sink", "cu_seqlens"});
  polyattn::SoftmaxInputs si;
  si.q = view4(float_input(in, "q", 4, "[B,T,HQ,D]"));
  si.k = view4(float_input(in, "k", 4, "[B,S,HKV,D]"));
  si.v = view4(float_input(in, "v", 4, "[B,S,HKV,Dv]"));
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
  polyattn::reference::softmax_attention<float>(si, opt, o.view4());
  write_outputs(a.out, {&o});
}

// ---- error reporting ------------------------------------------------------------------------

// polyattn::Error names an argument of the C++ API; point the user at the file or flag instead.
std::string describe(const polyattn::Error& e, const Args& a) {
  static const std::map<std::string, std::string, std::less<>> to_input{
      {"q", "q"},       {"k", "k"},       {"v", "v"},          {"g", "g"},
      {"gk", "g"},      {"beta", "beta"}, {"initial_state", "h0"}, {"sink", "sink"},
      {"cu_seqlens", "cu_seqlens"}};
  static const std::map<std::string, std::string, std::less<>> to_flag{
      {"scale", "--scale"}, {"window", "--window"}, {"sink_tokens", "--sinks"}};
  const std::string& arg = e.argument();
  std::string msg = e.what();
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
      std::cout << kUsage;
      return 0;
    }
  }
  Args args;
  try {
    args = parse_args(argc, argv);
    if (is_linear(args.op))
      run_linear(args);
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
