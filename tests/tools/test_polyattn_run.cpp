// tests/tools/test_polyattn_run.cpp — end-to-end tests of the polyattn-run parity tool: write
// .npy inputs to a temp dir, run the binary, compare o.npy / ht.npy with the references called
// directly, and check that every error path exits 2 with one stderr line and writes nothing.
// The linear family runs the fp32 operators (--algo recurrent, and chunked / parallel when
// polyattn/linear/chunked.hpp is in the tree, which is what the tool itself checks); --algo
// reference runs the double-precision oracle.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/args/linear.hpp"
#include "polyattn/args/softmax.hpp"
#include "polyattn/io/npy.hpp"
#include "polyattn/reference/based.hpp"
#include "polyattn/reference/conv.hpp"
#include "polyattn/reference/linear.hpp"
#include "polyattn/reference/mamba2.hpp"
#include "polyattn/reference/softmax.hpp"
#include "tools/tool_test_util.hpp"

#ifndef POLYATTN_RUN_PATH
#error "POLYATTN_RUN_PATH (path of the polyattn-run binary) must be defined by the build"
#endif

namespace {

namespace fs = std::filesystem;
using polyattn::index_t;
using polyattn::test::rel_rmse;
using polyattn::test::TempDir;

// --algo reference (and based / softmax): float32 roundings of the same double computation the
// test runs.
constexpr double kBound = 1e-6;
// The fp32 operators of the linear family: the docs/conventions.md §9 bound.
constexpr double kFastBound = polyattn::test::kRelRmseBound;

// The fast algorithms of this build, as polyattn-run flags.
std::vector<std::string> fast_algos() {
  std::vector<std::string> a{"--algo recurrent"};
  a.push_back("--algo chunked --chunk 16");
  a.push_back("--algo chunked --chunk 64");
  a.push_back("--algo parallel");
  return a;
}

struct Result {
  int code = -1;
  std::string out, err;
};

std::size_t line_count(const std::string& s) {
  std::size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

class Tool : public ::testing::Test {
 protected:
  TempDir root{"polyattn-run"};
  fs::path in = root / "in";
  fs::path out = root / "out";

  void SetUp() override { fs::create_directories(in); }

  // Environment assignments (e.g. "POLYATTN_ISA=scalar") for the next runs.
  std::string env;

  // Runs `polyattn-run <args>` capturing stdout and stderr.
  Result run_raw(const std::string& args) {
    const fs::path so = root / "stdout.txt", se = root / "stderr.txt";
    const std::string cmd = env + (env.empty() ? "" : " ") + "'" + POLYATTN_RUN_PATH + "' " + args +
                            " >'" + so.string() + "' 2>'" + se.string() + "'";
    const int rc = std::system(cmd.c_str());
    Result r;
    r.code = (rc != -1 && WIFEXITED(rc)) ? WEXITSTATUS(rc) : -1;
    r.out = polyattn::test::read_bytes(so);
    r.err = polyattn::test::read_bytes(se);
    return r;
  }
  // Runs OP on the fixture's in/out dirs with extra flags.
  Result run(const std::string& op, const std::string& flags = "") {
    return run_raw(op + " --in '" + in.string() + "' --out '" + out.string() + "' " + flags);
  }
  void run_ok(const std::string& op, const std::string& flags = "") {
    const Result r = run(op, flags);
    ASSERT_EQ(r.code, 0) << op << " " << flags << ": " << r.err;
    EXPECT_EQ(r.err, "");
  }
  // An error: exit 2, one line on stderr containing `fragment`, no output written.
  void expect_error(const std::string& op, const std::string& flags, const std::string& fragment) {
    const Result r = run(op, flags);
    EXPECT_EQ(r.code, 2) << op << " " << flags << ": " << r.err;
    EXPECT_EQ(line_count(r.err), 1u) << r.err;
    EXPECT_EQ(r.err.rfind("polyattn-run: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(fragment), std::string::npos)
        << "wanted '" << fragment << "' in: " << r.err;
    EXPECT_FALSE(fs::exists(out / "o.npy")) << r.err;
    EXPECT_FALSE(fs::exists(out / "ht.npy")) << r.err;
  }

  // Writes deterministic uniform data in [lo, hi) as in/<name>.npy and returns it.
  std::vector<float> put(const std::string& name, std::vector<std::int64_t> shape,
                         std::uint64_t seed, float lo = -1.f, float hi = 1.f) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    auto x = polyattn::test::random_vector(static_cast<std::size_t>(n), seed, lo, hi);
    polyattn::io::write_npy(in / (name + ".npy"), x.data(), std::span<const std::int64_t>(shape));
    return x;
  }
  // Reads out/<name> and checks its shape.
  std::vector<float> get(const std::string& name, const std::vector<std::int64_t>& shape) {
    const auto a = polyattn::io::read_npy(out / name);
    EXPECT_EQ(a.kind, 'f');
    EXPECT_EQ(a.shape, shape) << name;
    return a.f32;
  }
};

// ---- linear family ----------------------------------------------------------------------

struct LinearCase {
  index_t B = 2, T = 5, H = 2, HV = 4, K = 3, V = 2;
  bool h0 = false;
  std::vector<std::int64_t> cu;  // varlen when non-empty (B must be 1)
  float qk_lo = -1.f;            // positive q/k for the Sum normaliser
};

// A shape that exercises the fast algorithms: several chunks of 16 and a partial second chunk
// of 64, GVA (2 value heads per q/k head), K and V that are not multiples of the SIMD widths,
// four (sequence, value head) tasks for the threads. Small, as the tests run unoptimised too.
LinearCase fast_case() {
  LinearCase c;
  c.B = 2;
  c.T = 70;
  c.H = 1;
  c.HV = 2;
  c.K = 6;
  c.V = 18;
  c.h0 = true;
  return c;
}

enum class Gate { None, Scalar, Vector };

class LinearTool : public Tool {
 protected:
  // Writes the inputs of `c`, runs `op flags`, and compares with linear_recurrence.
  // `bound`: kFastBound for the fp32 operators (the default algorithm), kBound for reference.
  void check(const std::string& op, const std::string& flags, const LinearCase& c,
             polyattn::LinearOptions opt, Gate gate, bool beta,
             const std::vector<float>& g_gamma = {}, double bound = kFastBound) {
    const index_t N = c.cu.empty() ? c.B : static_cast<index_t>(c.cu.size()) - 1;
    fs::remove_all(in);  // no inputs left over from an earlier check (unused inputs are errors)
    fs::create_directories(in);
    const auto q = put("q", {c.B, c.T, c.H, c.K}, 1, c.qk_lo);
    const auto k = put("k", {c.B, c.T, c.H, c.K}, 2, c.qk_lo);
    const auto v = put("v", {c.B, c.T, c.HV, c.V}, 3);
    std::vector<float> g, bt, h0;
    if (gate == Gate::Scalar) g = put("g", {c.B, c.T, c.HV}, 4, -1.f, -0.01f);
    if (gate == Gate::Vector) g = put("g", {c.B, c.T, c.HV, c.K}, 4, -1.f, -0.01f);
    if (beta) bt = put("beta", {c.B, c.T, c.HV}, 5, 0.05f, 0.95f);
    if (c.h0) h0 = put("h0", {N, c.HV, c.K, c.V}, 6);
    if (!c.cu.empty()) {
      const std::vector<std::int64_t> shape{static_cast<std::int64_t>(c.cu.size())};
      polyattn::io::write_npy(in / "cu_seqlens.npy", c.cu.data(),
                              std::span<const std::int64_t>(shape));
    }
    ASSERT_NO_FATAL_FAILURE(run_ok(op, flags));

    polyattn::LinearInputs li;
    li.q = polyattn::bthd(q.data(), c.B, c.T, c.H, c.K);
    li.k = polyattn::bthd(k.data(), c.B, c.T, c.H, c.K);
    li.v = polyattn::bthd(v.data(), c.B, c.T, c.HV, c.V);
    if (gate == Gate::Scalar) li.g = polyattn::bth(g.data(), c.B, c.T, c.HV);
    if (gate == Gate::Vector) li.gk = polyattn::bthd(g.data(), c.B, c.T, c.HV, c.K);
    if (!g_gamma.empty())
      li.g_gamma = polyattn::View1<const float>::contiguous(g_gamma.data(), {c.HV});
    if (beta) li.beta = polyattn::bth(bt.data(), c.B, c.T, c.HV);
    if (c.h0) li.initial_state = polyattn::bhkv(h0.data(), N, c.HV, c.K, c.V);
    li.cu_seqlens = c.cu;
    polyattn::test::Tensor<double, 4> o({c.B, c.T, c.HV, c.V}), ht({N, c.HV, c.K, c.V});
    polyattn::LinearOutputs<double> lo{o.view(), ht.view(), {}};
    polyattn::reference::linear_recurrence<double>(li, opt, lo);

    const auto got_o = get("o.npy", {c.B, c.T, c.HV, c.V});
    const auto got_ht = get("ht.npy", {N, c.HV, c.K, c.V});
    EXPECT_LT(rel_rmse(got_o, o.data), bound) << op << " " << flags << " (o)";
    EXPECT_LT(rel_rmse(got_ht, ht.data), bound) << op << " " << flags << " (ht)";
    // Nothing but the outputs (no leftover temporaries).
    std::size_t files = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(out)) ++files;
    EXPECT_EQ(files, 2u);
  }
};

polyattn::LinearOptions opts(polyattn::Decay d, polyattn::Update u = polyattn::Update::Additive) {
  polyattn::LinearOptions o;
  o.decay = d;
  o.update = u;
  return o;
}

std::vector<float> retention_gates(index_t HV) {
  std::vector<float> g;
  for (index_t h = 0; h < HV; ++h)
    g.push_back(static_cast<float>(polyattn::retention_log_decay(h)));
  return g;
}
std::vector<float> lightning_gates(index_t HV, index_t layer, index_t layers) {
  std::vector<float> g;
  for (index_t h = 0; h < HV; ++h)
    g.push_back(static_cast<float>(polyattn::lightning_log_decay(h, HV, layer, layers)));
  return g;
}

using polyattn::Decay;
using polyattn::Update;

TEST_F(LinearTool, LinearAttnWithInitialState) {
  LinearCase c;
  c.h0 = true;
  check("linear_attn", "", c, opts(Decay::None), Gate::None, false);
}

TEST_F(LinearTool, LinearAttnNormalize) {
  LinearCase c;
  c.qk_lo = 0.1f;
  auto o = opts(Decay::None);
  o.normalizer = polyattn::Normalizer::Sum;
  o.eps = 1e-10;
  check("linear_attn", "--normalize --algo reference", c, o, Gate::None, false, {}, kBound);
}

TEST_F(LinearTool, RetentionWithScale) {
  LinearCase c;
  c.h0 = true;
  auto o = opts(Decay::ConstantPerHead);
  o.scale = 0.5;
  check("retention", "--scale 0.5", c, o, Gate::None, false, retention_gates(c.HV));
}

TEST_F(LinearTool, LightningDefaultLayer) {
  LinearCase c;
  check("lightning_attn", "", c, opts(Decay::ConstantPerHead), Gate::None, false,
        lightning_gates(c.HV, 0, 1));
}

TEST_F(LinearTool, LightningLayerOfLayers) {
  LinearCase c;
  c.h0 = true;
  check("lightning_attn", "--layer 1 --layers=4 --algo=reference", c, opts(Decay::ConstantPerHead),
        Gate::None, false, lightning_gates(c.HV, 1, 4), kBound);
}

TEST_F(LinearTool, SimpleGla) {
  LinearCase c;
  c.h0 = true;
  check("simple_gla", "", c, opts(Decay::ScalarPerToken), Gate::Scalar, false);
}

TEST_F(LinearTool, SimpleGlaReferenceIgnoresChunkAndThreads) {
  LinearCase c;
  c.h0 = true;
  check("simple_gla", "--algo reference --chunk 16 --threads 2", c, opts(Decay::ScalarPerToken),
        Gate::Scalar, false, {}, kBound);
}

TEST_F(LinearTool, Gla) {
  LinearCase c;
  check("gla", "--algo reference", c, opts(Decay::VectorPerToken), Gate::Vector, false, {}, kBound);
}

TEST_F(LinearTool, DeltaRuleL2NormInitialState) {
  LinearCase c;
  c.h0 = true;
  auto o = opts(Decay::None, Update::Delta);
  o.qk_l2norm = true;
  check("delta_rule", "--qk-l2norm", c, o, Gate::None, true);
}

TEST_F(LinearTool, GatedDeltaRule) {
  LinearCase c;
  auto o = opts(Decay::ScalarPerToken, Update::Delta);
  o.qk_l2norm = true;
  check("gated_delta_rule", "--qk-l2norm", c, o, Gate::Scalar, true);
}

TEST_F(LinearTool, GatedDeltaRuleVarlen) {
  LinearCase c;
  c.B = 1;
  c.T = 7;
  c.cu = {0, 3, 3, 7};
  c.h0 = true;
  check("gated_delta_rule", "--algo reference", c, opts(Decay::ScalarPerToken, Update::Delta),
        Gate::Scalar, true, {}, kBound);
}

TEST_F(LinearTool, KdaL2NormInitialState) {
  LinearCase c;
  c.h0 = true;
  auto o = opts(Decay::VectorPerToken, Update::Delta);
  o.qk_l2norm = true;
  check("kda", "--qk-l2norm --algo reference", c, o, Gate::Vector, true, {}, kBound);
}

TEST_F(LinearTool, OverwritesPreviousOutputs) {
  LinearCase c;
  fs::create_directories(out);
  polyattn::test::write_bytes(out / "o.npy", "stale");
  check("linear_attn", "", c, opts(Decay::None), Gate::None, false);
}

// ---- the fast operators: every linear OP, every algorithm --------------------------------

// One linear OP as the tool runs it: its flags and the reference options it must match.
struct LinearSpec {
  std::string op, flags;
  polyattn::LinearOptions opt;
  Gate gate = Gate::None;
  bool beta = false;
  enum class Gamma { None, Retention, Lightning_1_4 } gamma = Gamma::None;
  bool positive_qk = false;
};

std::string spec_name(const LinearSpec& s) {
  return s.op + (s.flags.empty() ? "" : " " + s.flags);
}

polyattn::LinearOptions l2(polyattn::LinearOptions o) {
  o.qk_l2norm = true;
  return o;
}

// The 8 linear OPs, plus linear_attn --normalize (another operator type): run with every
// algorithm.
std::vector<LinearSpec> linear_ops() {
  using G = LinearSpec::Gamma;
  auto normalized = opts(Decay::None);
  normalized.normalizer = polyattn::Normalizer::Sum;
  normalized.eps = 1e-10;
  return {
      {"linear_attn", "", opts(Decay::None)},
      {"linear_attn", "--normalize", normalized, Gate::None, false, G::None, true},
      {"retention", "", opts(Decay::ConstantPerHead), Gate::None, false, G::Retention},
      {"lightning_attn", "--layer 1 --layers 4", opts(Decay::ConstantPerHead), Gate::None, false,
       G::Lightning_1_4},
      {"simple_gla", "", opts(Decay::ScalarPerToken), Gate::Scalar},
      {"gla", "", opts(Decay::VectorPerToken), Gate::Vector},
      {"delta_rule", "--qk-l2norm", l2(opts(Decay::None, Update::Delta)), Gate::None, true},
      {"gated_delta_rule", "--qk-l2norm", l2(opts(Decay::ScalarPerToken, Update::Delta)),
       Gate::Scalar, true},
      {"kda", "--qk-l2norm", l2(opts(Decay::VectorPerToken, Update::Delta)), Gate::Vector, true},
  };
}

// Flag variants: --qk-l2norm on additive OPs (AdditiveUpdate{true}), no --qk-l2norm on a delta
// OP, --scale.
std::vector<LinearSpec> linear_variants() {
  auto scaled = opts(Decay::ConstantPerHead);
  scaled.scale = 0.5;
  return {
      {"linear_attn", "--qk-l2norm", l2(opts(Decay::None))},
      {"gla", "--qk-l2norm", l2(opts(Decay::VectorPerToken)), Gate::Vector},
      {"retention", "--scale 0.5", scaled, Gate::None, false, LinearSpec::Gamma::Retention},
      {"gated_delta_rule", "", opts(Decay::ScalarPerToken, Update::Delta), Gate::Scalar, true},
  };
}

class FastTool : public LinearTool {
 protected:
  void check_spec(const LinearSpec& s, const std::string& algo, LinearCase c,
                  double bound = kFastBound) {
    if (s.positive_qk) c.qk_lo = 0.1f;
    std::vector<float> gamma;
    if (s.gamma == LinearSpec::Gamma::Retention) gamma = retention_gates(c.HV);
    if (s.gamma == LinearSpec::Gamma::Lightning_1_4) gamma = lightning_gates(c.HV, 1, 4);
    check(s.op, s.flags + " " + algo, c, s.opt, s.gate, s.beta, gamma, bound);
  }
  // The bytes of out/o.npy + out/ht.npy.
  std::string output_bytes() {
    return polyattn::test::read_bytes(out / "o.npy") + polyattn::test::read_bytes(out / "ht.npy");
  }
  // Runs `op flags` on the inputs in place and returns output_bytes().
  std::string output_bytes(const std::string& op, const std::string& flags) {
    const Result r = run(op, flags);
    EXPECT_EQ(r.code, 0) << op << " " << flags << ": " << r.err;
    return output_bytes();
  }
};

TEST_F(FastTool, EveryOpEveryAlgorithmMatchesTheReference) {
  for (const LinearSpec& s : linear_ops())
    for (const std::string& algo : fast_algos()) {
      SCOPED_TRACE(spec_name(s) + " " + algo);
      ASSERT_NO_FATAL_FAILURE(check_spec(s, algo, fast_case()));
    }
  const auto algos = fast_algos();
  const auto variants = linear_variants();
  for (std::size_t i = 0; i < variants.size(); ++i) {  // one algorithm each, in turn
    const std::string& algo = algos[i % algos.size()];
    SCOPED_TRACE(spec_name(variants[i]) + " " + algo);
    ASSERT_NO_FATAL_FAILURE(check_spec(variants[i], algo, fast_case()));
  }
}

TEST_F(FastTool, DefaultAlgorithmIsFast) {
  // No --algo: chunked (--chunk 64).
  const std::string default_algo = "--algo chunked --chunk 64";
  const auto ops = linear_ops();
  for (std::size_t i : {1u, 5u, 8u}) {  // linear_attn --normalize, gla, kda
    const LinearSpec& s = ops[i];
    SCOPED_TRACE(spec_name(s));
    ASSERT_NO_FATAL_FAILURE(check_spec(s, "", fast_case()));
    const std::string implicit = output_bytes();
    EXPECT_EQ(implicit, output_bytes(s.op, s.flags + " " + default_algo));
    if (i == 8) {
      EXPECT_NE(implicit, output_bytes(s.op, s.flags + " --algo reference"))
          << "the default ran the reference";
    }
  }
}

TEST_F(FastTool, VarlenWithEmptySequence) {
  LinearCase c = fast_case();
  c.B = 1;
  c.T = 75;
  c.cu = {0, 17, 17, 75};
  const auto algos = fast_algos();
  for (const LinearSpec& s : linear_ops()) {
    if (s.op != "gla" && s.op != "gated_delta_rule" && s.op != "kda") continue;
    for (std::size_t i = 0; i < algos.size(); ++i) {
      // gla: recurrent and chunked 16; gated_delta_rule: chunked 64 and parallel; kda: all.
      if (s.op == "gla" && i >= 2) continue;
      if (s.op == "gated_delta_rule" && i < 2) continue;
      SCOPED_TRACE(spec_name(s) + " " + algos[i]);
      ASSERT_NO_FATAL_FAILURE(check_spec(s, algos[i], c));
    }
  }
}

TEST_F(FastTool, EveryIsaOfTheBinary) {
  // The tool carries the per-ISA kernel units; POLYATTN_ISA caps the dispatcher (the best ISA
  // of the CPU runs in every other test).
  const auto algos = fast_algos();
  for (const std::string isa : {"scalar", "sse42"}) {
    env = "POLYATTN_ISA=" + isa;
    for (std::size_t i = 0; i < algos.size(); ++i) {
      if (isa == "sse42" && i >= 2) continue;  // recurrent and chunked 16
      const std::string& algo = algos[i];
      SCOPED_TRACE(env + " " + algo);
      ASSERT_NO_FATAL_FAILURE(check_spec(linear_ops().back(), algo, fast_case()));  // kda
    }
  }
}

TEST_F(FastTool, AnyThreadCountGivesTheSameBytes) {
  std::vector<std::string> algos = fast_algos();
  algos.push_back("--algo chunked --chunk 32");
  algos.push_back("--algo chunked --chunk 128");
  // Every OP and every algorithm at least once (OP i with algorithm i mod #algorithms).
  const auto ops = linear_ops();
  for (std::size_t i = 0; i < std::max(ops.size(), algos.size()); ++i) {
    const LinearSpec& s = ops[i % ops.size()];
    const std::string& algo = algos[i % algos.size()];
    SCOPED_TRACE(spec_name(s) + " " + algo);
    ASSERT_NO_FATAL_FAILURE(check_spec(s, algo + " --threads 2", fast_case()));
    const std::string two = output_bytes();
    ASSERT_FALSE(two.empty());
    EXPECT_EQ(two, output_bytes(s.op, s.flags + " " + algo + " --threads 1"));
    if (i == 0) {
      EXPECT_EQ(two, output_bytes(s.op, s.flags + " " + algo + " --threads 3"));
    }
  }
}

TEST_F(FastTool, FewerTasksThanThreads) {
  // One (sequence, value head) task: the operators may split the chunks of the additive OPs over
  // the threads instead; still the same bytes as one thread.
  LinearCase c = fast_case();
  c.B = 1;
  c.H = 1;
  c.HV = 1;
  c.T = 100;
  const auto ops = linear_ops();
  for (std::size_t i : {0u, 2u, 5u}) {  // linear_attn, retention, gla
    const LinearSpec& s = ops[i];
    const std::string algo = i == 2 ? "--algo chunked --chunk 64" : "--algo chunked --chunk 16";
    SCOPED_TRACE(spec_name(s) + " " + algo);
    ASSERT_NO_FATAL_FAILURE(check_spec(s, algo + " --threads 2", c));
    const std::string two = output_bytes();
    EXPECT_EQ(two, output_bytes(s.op, s.flags + " " + algo + " --threads 1"));
    if (i == 0) {
      EXPECT_EQ(two, output_bytes(s.op, s.flags + " " + algo + " --threads 3"));
    }
  }
}

// ---- based and softmax ------------------------------------------------------------------

TEST_F(Tool, Based) {
  const index_t B = 2, T = 6, H = 2, K = 3, V = 4;
  const auto q = put("q", {B, T, H, K}, 11), k = put("k", {B, T, H, K}, 12),
             v = put("v", {B, T, H, V}, 13);
  // No fast operator yet: every --algo runs the reference.
  ASSERT_NO_FATAL_FAILURE(run_ok("based", "--scale 0.7 --algo recurrent"));
  polyattn::reference::BasedInputs bi;
  bi.q = polyattn::bthd(q.data(), B, T, H, K);
  bi.k = polyattn::bthd(k.data(), B, T, H, K);
  bi.v = polyattn::bthd(v.data(), B, T, H, V);
  polyattn::reference::BasedOptions opt;
  opt.scale = 0.7;
  polyattn::test::Tensor<double, 4> o({B, T, H, V});
  polyattn::reference::based_attention<double>(bi, opt, o.view());
  EXPECT_LT(rel_rmse(get("o.npy", {B, T, H, V}), o.data), kBound);
  EXPECT_FALSE(fs::exists(out / "ht.npy"));
}

struct SoftmaxCase {
  index_t B = 2, T = 5, S = 7, HQ = 4, HKV = 2, D = 3, Dv = 2;
};

class SoftmaxTool : public Tool {
 protected:
  // The default (flash kernel, fp32) must meet the docs/conventions.md §9 bound; --algo reference
  // is the double oracle rounded to fp32.
  void check(const std::string& op, const std::string& flags, const SoftmaxCase& c,
             polyattn::SoftmaxOptions opt, bool gate, bool sink) {
    const double bound = flags.find("--algo reference") != std::string::npos ? kBound : kFastBound;
    const auto q = put("q", {c.B, c.T, c.HQ, c.D}, 21), k = put("k", {c.B, c.S, c.HKV, c.D}, 22),
               v = put("v", {c.B, c.S, c.HKV, c.Dv}, 23);
    std::vector<float> g, sk;
    if (gate) g = put("g", {c.B, c.S, c.HQ}, 24, -1.f, -0.01f);
    if (sink) sk = put("sink", {c.HQ}, 25);
    ASSERT_NO_FATAL_FAILURE(run_ok(op, flags));
    polyattn::SoftmaxInputs si;
    si.q = polyattn::bthd(q.data(), c.B, c.T, c.HQ, c.D);
    si.k = polyattn::bthd(k.data(), c.B, c.S, c.HKV, c.D);
    si.v = polyattn::bthd(v.data(), c.B, c.S, c.HKV, c.Dv);
    if (gate) si.g = polyattn::bth(g.data(), c.B, c.S, c.HQ);
    if (sink) si.sink = polyattn::View1<const float>::contiguous(sk.data(), {c.HQ});
    polyattn::test::Tensor<double, 4> o({c.B, c.T, c.HQ, c.Dv});
    polyattn::reference::softmax_attention<double>(si, opt, o.view());
    EXPECT_LT(rel_rmse(get("o.npy", {c.B, c.T, c.HQ, c.Dv}), o.data), bound) << op << " " << flags;
    EXPECT_FALSE(fs::exists(out / "ht.npy"));
  }
};

TEST_F(SoftmaxTool, CausalGqaDefault) {
  polyattn::SoftmaxOptions o;
  o.causal = true;
  check("softmax", "", SoftmaxCase{}, o, false, false);
  check("softmax", "--algo reference", SoftmaxCase{}, o, false, false);
}

TEST_F(SoftmaxTool, FlashKernelSeveralTilesAndThreads) {
  SoftmaxCase c;
  c.T = c.S = 70;  // two query and key tiles of the flash kernel
  c.D = 20;
  c.Dv = 18;
  polyattn::SoftmaxOptions o;
  o.causal = true;
  check("softmax", "--threads 3", c, o, false, true);
}

TEST_F(SoftmaxTool, NonCausalScale) {
  polyattn::SoftmaxOptions o;
  o.causal = false;
  o.scale = 0.3;
  check("softmax", "--no-causal --scale 0.3", SoftmaxCase{}, o, false, false);
}

TEST_F(SoftmaxTool, WindowSinksAndSinkLogits) {
  SoftmaxCase c;
  c.T = c.S = 9;
  polyattn::SoftmaxOptions o;
  o.causal = true;
  o.window = 3;
  o.sink_tokens = 1;
  check("softmax", "--causal --window 3 --sinks 1", c, o, false, true);
}

TEST_F(SoftmaxTool, ForgettingAttn) {
  SoftmaxCase c;
  c.T = c.S = 6;
  polyattn::SoftmaxOptions o;
  o.causal = true;
  check("forgetting_attn", "", c, o, true, false);
  check("forgetting_attn", "--threads 2", c, o, true, false);
  check("forgetting_attn", "--algo reference", c, o, true, false);
}

// ---- element types (--dtype, --kv-dtype) --------------------------------------------------

std::vector<float> rounded(const std::vector<float>& x, polyattn::Dtype t) {
  std::vector<float> r(x);
  for (float& v : r)
    v = t == polyattn::Dtype::bf16 ? polyattn::round_to<polyattn::bf16>(v)
                                   : polyattn::round_to<polyattn::f16>(v);
  return r;
}

// --dtype bf16 / fp16: o.npy holds the operator's T output (values exactly representable in T),
// within SPEC §8's bound of the double reference on the rounded inputs; the final state (fp32)
// within the fp32 bound.
TEST_F(Tool, DtypeRunsTheTypedOperators) {
  const index_t B = 1, T = 70, H = 2, K = 16, V = 8;
  for (const auto& [flag, t, bound] : {std::tuple{"bf16", polyattn::Dtype::bf16, 8e-3},
                                       std::tuple{"fp16", polyattn::Dtype::f16, 2e-3}}) {
    SCOPED_TRACE(flag);
    // Softmax, causal GQA.
    {
      const auto q = put("q", {B, T, 4, K}, 31), k = put("k", {B, T, H, K}, 32),
                 v = put("v", {B, T, H, V}, 33);
      ASSERT_NO_FATAL_FAILURE(run_ok("softmax", std::string("--dtype ") + flag));
      const auto qr = rounded(q, t), kr = rounded(k, t), vr = rounded(v, t);
      polyattn::SoftmaxInputs si;
      si.q = polyattn::bthd(qr.data(), B, T, 4, K);
      si.k = polyattn::bthd(kr.data(), B, T, H, K);
      si.v = polyattn::bthd(vr.data(), B, T, H, V);
      polyattn::SoftmaxOptions opt;
      opt.causal = true;
      polyattn::test::Tensor<double, 4> o({B, T, 4, V});
      polyattn::reference::softmax_attention<double>(si, opt, o.view());
      const auto got = get("o.npy", {B, T, 4, V});
      EXPECT_LT(rel_rmse(got, o.data), bound);
      EXPECT_EQ(got, rounded(got, t));  // T values, widened
    }
    // Gated DeltaNet, chunked (and the reference on the same rounded inputs).
    for (const std::string algo : {"", "--algo reference", "--algo recurrent"}) {
      fs::remove_all(in);
      fs::create_directories(in);
      const auto q = put("q", {B, T, H, K}, 41), k = put("k", {B, T, H, K}, 42),
                 v = put("v", {B, T, H, V}, 43), g = put("g", {B, T, H}, 44, -0.5f, -0.01f),
                 beta = put("beta", {B, T, H}, 45, 0.f, 1.f);
      ASSERT_NO_FATAL_FAILURE(
          run_ok("gated_delta_rule", std::string("--qk-l2norm --dtype ") + flag + " " + algo));
      const auto qr = rounded(q, t), kr = rounded(k, t), vr = rounded(v, t);
      polyattn::LinearInputs li;
      li.q = polyattn::bthd(qr.data(), B, T, H, K);
      li.k = polyattn::bthd(kr.data(), B, T, H, K);
      li.v = polyattn::bthd(vr.data(), B, T, H, V);
      li.g = polyattn::bth(g.data(), B, T, H);
      li.beta = polyattn::bth(beta.data(), B, T, H);
      polyattn::LinearOptions opt;
      opt.decay = polyattn::Decay::ScalarPerToken;
      opt.update = polyattn::Update::Delta;
      opt.qk_l2norm = true;
      polyattn::test::Tensor<double, 4> o({B, T, H, V}), ht({B, H, K, V});
      polyattn::LinearOutputs<double> out;
      out.o = o.view();
      out.final_state = ht.view();
      polyattn::reference::linear_recurrence<double>(li, opt, out);
      const auto got = get("o.npy", {B, T, H, V});
      EXPECT_LT(rel_rmse(got, o.data), bound) << algo;
      EXPECT_EQ(got, rounded(got, t)) << algo;
      EXPECT_LT(rel_rmse(get("ht.npy", {B, H, K, V}), ht.data), kFastBound) << algo;
    }
    fs::remove_all(in);
    fs::create_directories(in);
  }
}

// --kv-dtype: every row answered by the decode kernel from a cache of that type. fp32 matches
// the flash kernel's result within the fp32 bound (causal, window, sink tokens, sink logits,
// forgetting gates, non-causal); bf16 / fp16 / int8 caches within SPEC §8's bounds.
TEST_F(Tool, KvDtypeAnswersEveryRowFromTheCache) {
  const index_t B = 2, T = 9, S = 12, HQ = 4, HKV = 2, D = 8, Dv = 6;
  const auto q = put("q", {B, T, HQ, D}, 51), k = put("k", {B, S, HKV, D}, 52),
             v = put("v", {B, S, HKV, Dv}, 53), sk = put("sink", {HQ}, 54);
  for (const std::string mask : {"--causal", "--no-causal", "--window 3 --sinks 1"}) {
    ASSERT_NO_FATAL_FAILURE(run_ok("softmax", mask));
    const auto flash = get("o.npy", {B, T, HQ, Dv});
    for (const auto& [kv, bound] : {std::pair{"fp32", kFastBound}, std::pair{"bf16", 8e-3},
                                    std::pair{"fp16", 2e-3}, std::pair{"int8", 3e-2}}) {
      ASSERT_NO_FATAL_FAILURE(run_ok("softmax", mask + " --kv-dtype " + kv + " --threads 2"));
      EXPECT_LT(rel_rmse(get("o.npy", {B, T, HQ, Dv}), flash), bound) << mask << " " << kv;
    }
  }
  fs::remove_all(in);
  fs::create_directories(in);
  put("q", {B, S, HQ, D}, 56);
  put("k", {B, S, HKV, D}, 57);
  put("v", {B, S, HKV, Dv}, 58);
  put("g", {B, S, HQ}, 59, -0.5f, -0.01f);
  ASSERT_NO_FATAL_FAILURE(run_ok("forgetting_attn"));
  const auto flash = get("o.npy", {B, S, HQ, Dv});
  ASSERT_NO_FATAL_FAILURE(run_ok("forgetting_attn", "--kv-dtype fp32"));
  EXPECT_LT(rel_rmse(get("o.npy", {B, S, HQ, Dv}), flash), kFastBound);
}

// ---- command line and errors --------------------------------------------------------------

TEST_F(Tool, Help) {
  const Result r = run_raw("--help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("usage: polyattn-run OP"), std::string::npos);
  EXPECT_NE(r.out.find("chunked    chunks of C tokens + state passing (default)"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.err, "");
}

// ---- raw gate inputs, mamba2, short_conv (SPEC §6) ------------------------------------------

// gated_delta_rule / kda from raw projections: the fused operators (and --algo reference)
// against the double oracle fed gates formed in double from the same raw inputs.
TEST_F(Tool, RawGatesGatedDeltaRuleAndKda) {
  const index_t B = 1, T = 40, H = 1, HV = 2, K = 6, V = 5;
  for (bool kda : {false, true}) {
    fs::remove_all(in);
    fs::create_directories(in);
    const auto q = put("q", {B, T, H, K}, 1), k = put("k", {B, T, H, K}, 2);
    const auto v = put("v", {B, T, HV, V}, 3);
    const auto raw =
        kda ? put("graw", {B, T, HV, K}, 4, -3.f, 3.f) : put("a", {B, T, HV}, 4, -3.f, 3.f);
    const auto b = put("b", {B, T, HV}, 5, -3.f, 3.f);
    const auto A_log = put("A_log", {HV}, 6, -1.f, 0.5f);
    const auto bias = put("dt_bias", {kda ? HV * K : HV}, 7);
    std::vector<float> g, beta;
    const auto sp = [](double x) { return x > 20 ? x : std::log1p(std::exp(x)); };
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < HV; ++h) {
        const auto i = static_cast<std::size_t>(t * HV + h);
        const double A = std::exp(double{A_log[static_cast<std::size_t>(h)]});
        beta.push_back(static_cast<float>(1.0 / (1.0 + std::exp(-double{b[i]}))));
        if (kda)
          for (index_t c = 0; c < K; ++c)
            g.push_back(static_cast<float>(
                -A * sp(double{raw[i * static_cast<std::size_t>(K) + static_cast<std::size_t>(c)]} +
                        bias[static_cast<std::size_t>(h * K + c)])));
        else
          g.push_back(
              static_cast<float>(-A * sp(double{raw[i]} + bias[static_cast<std::size_t>(h)])));
      }
    polyattn::LinearInputs li;
    li.q = polyattn::bthd(q.data(), B, T, H, K);
    li.k = polyattn::bthd(k.data(), B, T, H, K);
    li.v = polyattn::bthd(v.data(), B, T, HV, V);
    if (kda)
      li.gk = polyattn::bthd(g.data(), B, T, HV, K);
    else
      li.g = polyattn::bth(g.data(), B, T, HV);
    li.beta = polyattn::bth(beta.data(), B, T, HV);
    polyattn::LinearOptions opt;
    opt.decay = kda ? polyattn::Decay::VectorPerToken : polyattn::Decay::ScalarPerToken;
    opt.update = polyattn::Update::Delta;
    opt.qk_l2norm = true;
    polyattn::test::Tensor<double, 4> o({B, T, HV, V}), ht({B, HV, K, V});
    polyattn::reference::linear_recurrence<double>(li, opt, {o.view(), ht.view(), {}});
    const std::string op = kda ? "kda" : "gated_delta_rule";
    for (const std::string flags :
         {"--qk-l2norm", "--qk-l2norm --algo recurrent", "--qk-l2norm --algo reference"}) {
      ASSERT_NO_FATAL_FAILURE(run_ok(op, flags));
      EXPECT_LT(rel_rmse(get("o.npy", {B, T, HV, V}), o.data), kFastBound) << op << " " << flags;
      EXPECT_LT(rel_rmse(get("ht.npy", {B, HV, K, V}), ht.data), kFastBound) << op << " " << flags;
    }
    fs::remove_all(out);
    put("g", kda ? std::vector<std::int64_t>{B, T, HV, K} : std::vector<std::int64_t>{B, T, HV}, 8);
    expect_error(op, "", "give one form");
    fs::remove(in / "g.npy");
    fs::remove(in / "A_log.npy");
    expect_error(op, "", "A_log.npy: missing");
  }
}

TEST_F(Tool, Mamba2MatchesItsOracle) {
  const index_t B = 2, T = 37, H = 4, P = 5, G = 2, N = 6;
  const auto x = put("x", {B, T, H, P}, 1), dt = put("dt", {B, T, H}, 2, -3.f, 1.f);
  const auto A = put("A", {H}, 3, -2.f, -0.2f), Bm = put("Bm", {B, T, G, N}, 4);
  const auto Cm = put("Cm", {B, T, G, N}, 5), D = put("D", {H}, 6);
  const auto bias = put("dt_bias", {H}, 7), h0 = put("h0", {B, H, P, N}, 8, -0.5f, 0.5f);
  const polyattn::reference::Mamba2Ref r{
      .x = polyattn::bthd(x.data(), B, T, H, P),
      .Bm = polyattn::bthd(Bm.data(), B, T, G, N),
      .Cm = polyattn::bthd(Cm.data(), B, T, G, N),
      .initial_state = polyattn::bhkv(h0.data(), B, H, P, N),
      .dt = polyattn::bth(dt.data(), B, T, H),
      .A = polyattn::View1<const float>::contiguous(A.data(), {H}),
      .D = polyattn::View1<const float>::contiguous(D.data(), {H}),
      .dt_bias = polyattn::View1<const float>::contiguous(bias.data(), {H}),
      .dt_softplus = true};
  polyattn::test::Tensor<double, 4> y({B, T, H, P}), ht({B, H, P, N});
  polyattn::reference::mamba2(r, y.view(), ht.view());
  for (const std::string flags : {"--dt-softplus", "--dt-softplus --algo recurrent --threads 3",
                                  "--dt-softplus --chunk 16", "--dt-softplus --algo reference"}) {
    ASSERT_NO_FATAL_FAILURE(run_ok("mamba2", flags));
    EXPECT_LT(rel_rmse(get("y.npy", {B, T, H, P}), y.data), kFastBound) << flags;
    EXPECT_LT(rel_rmse(get("ht.npy", {B, H, P, N}), ht.data), kFastBound) << flags;
  }
  fs::remove_all(out);
  put("A", {H - 1}, 3);
  const Result e = run("mamba2", "--dt-softplus");
  EXPECT_EQ(e.code, 2);
  EXPECT_NE(e.err.find("A.npy: expected shape [4]"), std::string::npos) << e.err;
  EXPECT_FALSE(fs::exists(out / "y.npy"));
  put("A", {H}, 3);
  expect_error("mamba2", "--scale 2", "--scale is not used by mamba2");
  expect_error("linear_attn", "--dt-softplus", "--dt-softplus is not used");
}

// kda with fla's bounded gate (--lower-bound L): g = L·sigmoid(exp(A_log)·(graw + dt_bias)),
// the fused operator and --algo reference against the double oracle on those gates.
TEST_F(Tool, KdaLowerBoundMatchesItsOracle) {
  const index_t B = 1, T = 33, H = 1, HV = 2, K = 6, V = 5;
  const double L = -3.0;
  const auto q = put("q", {B, T, H, K}, 1), k = put("k", {B, T, H, K}, 2);
  const auto v = put("v", {B, T, HV, V}, 3);
  const auto graw = put("graw", {B, T, HV, K}, 4, -3.f, 3.f);
  const auto b = put("b", {B, T, HV}, 5, -3.f, 3.f);
  const auto A_log = put("A_log", {HV}, 6, -1.f, 0.5f);
  const auto bias = put("dt_bias", {HV * K}, 7);
  std::vector<float> g, beta;
  for (index_t t = 0; t < T; ++t)
    for (index_t h = 0; h < HV; ++h) {
      const auto i = static_cast<std::size_t>(t * HV + h);
      const double eA = std::exp(double{A_log[static_cast<std::size_t>(h)]});
      beta.push_back(static_cast<float>(1.0 / (1.0 + std::exp(-double{b[i]}))));
      for (index_t c = 0; c < K; ++c) {
        const auto j = i * static_cast<std::size_t>(K) + static_cast<std::size_t>(c);
        const double x = eA * (double{graw[j]} + bias[static_cast<std::size_t>(h * K + c)]);
        g.push_back(static_cast<float>(L / (1.0 + std::exp(-x))));
      }
    }
  polyattn::LinearInputs li;
  li.q = polyattn::bthd(q.data(), B, T, H, K);
  li.k = polyattn::bthd(k.data(), B, T, H, K);
  li.v = polyattn::bthd(v.data(), B, T, HV, V);
  li.gk = polyattn::bthd(g.data(), B, T, HV, K);
  li.beta = polyattn::bth(beta.data(), B, T, HV);
  polyattn::LinearOptions opt;
  opt.decay = polyattn::Decay::VectorPerToken;
  opt.update = polyattn::Update::Delta;
  opt.qk_l2norm = true;
  polyattn::test::Tensor<double, 4> o({B, T, HV, V}), ht({B, HV, K, V});
  polyattn::reference::linear_recurrence<double>(li, opt, {o.view(), ht.view(), {}});
  for (const std::string flags : {"--qk-l2norm --lower-bound -3",
                                  "--qk-l2norm --lower-bound=-3.0 "
                                  "--algo recurrent --threads 2",
                                  "--qk-l2norm --lower-bound -3 --algo reference"}) {
    ASSERT_NO_FATAL_FAILURE(run_ok("kda", flags));
    EXPECT_LT(rel_rmse(get("o.npy", {B, T, HV, V}), o.data), kFastBound) << flags;
    EXPECT_LT(rel_rmse(get("ht.npy", {B, HV, K, V}), ht.data), kFastBound) << flags;
  }
  // Without the flag the unbounded gate runs: another state.
  ASSERT_NO_FATAL_FAILURE(run_ok("kda", "--qk-l2norm"));
  EXPECT_GT(rel_rmse(get("ht.npy", {B, HV, K, V}), ht.data), 1e-3);
  fs::remove_all(out);
  expect_error("kda", "--lower-bound 0", "--lower-bound must be a negative float, got '0'");
  expect_error("kda", "--lower-bound -1e300", "--lower-bound must be a negative float");
  expect_error("kda", "--lower-bound x", "--lower-bound expects a finite number, got 'x'");
  expect_error("kda", "--lower-bound", "--lower-bound needs a value");
  expect_error("gated_delta_rule", "--lower-bound -5", "--lower-bound is not used by");
  expect_error("mamba2", "--lower-bound -5", "--lower-bound is not used by mamba2");
  // With gates already formed (g.npy, beta.npy) there is nothing to bound.
  for (const char* raw : {"graw", "b", "A_log", "dt_bias"})
    fs::remove(in / (std::string(raw) + ".npy"));
  put("g", {B, T, HV, K}, 8, -0.2f, -0.01f);
  put("beta", {B, T, HV}, 9, 0.1f, 0.9f);
  expect_error("kda", "--lower-bound -5", "--lower-bound needs the raw KDA gates");
}

// mamba2 --dt-limit MIN,MAX: Δ clamped to [MIN, MAX] after bias and softplus, as the oracle's
// dt_min / dt_max (mamba_ssm's dt_limit).
TEST_F(Tool, Mamba2DtLimitMatchesItsOracle) {
  const index_t B = 1, T = 29, H = 2, P = 4, G = 1, N = 5;
  const auto x = put("x", {B, T, H, P}, 11), dt = put("dt", {B, T, H}, 12, -4.f, 2.f);
  const auto A = put("A", {H}, 13, -2.f, -0.2f), Bm = put("Bm", {B, T, G, N}, 14);
  const auto Cm = put("Cm", {B, T, G, N}, 15);
  auto oracle = [&](double lo, double hi) {
    const polyattn::reference::Mamba2Ref r{
        .x = polyattn::bthd(x.data(), B, T, H, P),
        .Bm = polyattn::bthd(Bm.data(), B, T, G, N),
        .Cm = polyattn::bthd(Cm.data(), B, T, G, N),
        .dt = polyattn::bth(dt.data(), B, T, H),
        .A = polyattn::View1<const float>::contiguous(A.data(), {H}),
        .dt_softplus = true,
        .dt_min = lo,
        .dt_max = hi};
    polyattn::test::Tensor<double, 4> y({B, T, H, P}), ht({B, H, P, N});
    polyattn::reference::mamba2(r, y.view(), ht.view());
    return std::pair{y.data, ht.data};
  };
  const auto [y, ht] = oracle(0.25, 1.5);
  for (const std::string flags :
       {"--dt-softplus --dt-limit 0.25,1.5", "--dt-softplus --dt-limit=0.25,1.5 --algo recurrent",
        "--dt-softplus --dt-limit 0.25,1.5 --chunk 16 --threads 2",
        "--dt-softplus --dt-limit 0.25,1.5 --algo reference"}) {
    ASSERT_NO_FATAL_FAILURE(run_ok("mamba2", flags));
    EXPECT_LT(rel_rmse(get("y.npy", {B, T, H, P}), y), kFastBound) << flags;
    EXPECT_LT(rel_rmse(get("ht.npy", {B, H, P, N}), ht), kFastBound) << flags;
  }
  // 0,inf is no clamp; the clamp above changes the result.
  const auto [y0, ht0] = oracle(0.0, std::numeric_limits<double>::infinity());
  ASSERT_NO_FATAL_FAILURE(run_ok("mamba2", "--dt-softplus --dt-limit 0,inf"));
  EXPECT_LT(rel_rmse(get("y.npy", {B, T, H, P}), y0), kFastBound);
  EXPECT_GT(rel_rmse(get("y.npy", {B, T, H, P}), y), 1e-3);
  fs::remove_all(out);
  expect_error("mamba2", "--dt-limit 0.1", "--dt-limit expects MIN,MAX");
  expect_error("mamba2", "--dt-limit -1,2", "--dt-limit MIN must be >= 0, got -1");
  expect_error("mamba2", "--dt-limit 2,1", "--dt-limit MAX must be >= MIN, got '2,1'");
  expect_error("mamba2", "--dt-limit 0,nan", "--dt-limit MAX expects a finite number, got 'nan'");
  expect_error("mamba2", "--dt-limit inf,inf", "--dt-limit MIN expects a finite number");
  expect_error("mamba2", "--dt-limit 0,1e300", "--dt-limit: values must fit a float");
  expect_error("mamba2", "--dt-limit 0,1 --dt-limit 0,2", "--dt-limit given more than once");
  expect_error("linear_attn", "--dt-limit 0,1", "--dt-limit is not used by linear_attn");
}

TEST_F(Tool, ShortConvMatchesItsOracle) {
  const index_t B = 1, T = 29, D = 300, W = 4;
  const auto x = put("x", {B, T, D}, 1), w = put("w", {D, W}, 2), bias = put("bias", {D}, 3);
  const std::vector<std::int64_t> cu{0, 11, 11, 29};
  polyattn::io::write_npy(in / "cu_seqlens.npy", cu.data(),
                          std::span<const std::int64_t>(std::vector<std::int64_t>{4}));
  const auto st = put("conv_state", {3, D, W - 1}, 4);
  const polyattn::conv::ShortConvInputs ci{
      .x = polyattn::View3<const float>::contiguous(x.data(), {B, T, D}),
      .weight = polyattn::TensorView<const float, 2>::contiguous(w.data(), {D, W}),
      .bias = polyattn::View1<const float>::contiguous(bias.data(), {D}),
      .initial_state = polyattn::View3<const float>::contiguous(st.data(), {3, D, W - 1}),
      .cu_seqlens = cu};
  for (const bool silu : {false, true}) {
    polyattn::test::Tensor<double, 3> y({B, T, D}), s({3, D, W - 1});
    polyattn::reference::short_conv<double>(
        ci,
        {.activation = silu ? polyattn::conv::Activation::SiLU : polyattn::conv::Activation::None},
        y.view(), s.view());
    for (const std::string algo : {"", " --algo reference", " --threads 2"}) {
      const std::string flags =
          std::string(silu ? "--activation silu" : "--activation=none") + algo;
      ASSERT_NO_FATAL_FAILURE(run_ok("short_conv", flags));
      EXPECT_LT(rel_rmse(get("y.npy", {B, T, D}), y.data), kBound) << flags;
      EXPECT_LT(rel_rmse(get("conv_state.npy", {3, D, W - 1}), s.data), kBound) << flags;
    }
  }
  fs::remove_all(out);
  expect_error("short_conv", "--activation relu", "unknown --activation 'relu'");
  expect_error("short_conv", "--algo chunked", "short_conv runs its own kernel");
  put("conv_state", {3, D, W}, 4);
  expect_error("short_conv", "", "conv_state.npy");
  EXPECT_FALSE(fs::exists(out / "y.npy"));
}

class ToolErrors : public Tool {
 protected:
  // A valid linear_attn / simple_gla input set (B2 T5 H2 HV4 K3 V2).
  void SetUp() override {
    Tool::SetUp();
    put("q", {2, 5, 2, 3}, 1);
    put("k", {2, 5, 2, 3}, 2);
    put("v", {2, 5, 4, 2}, 3);
  }
};

TEST_F(ToolErrors, MissingInput) {
  fs::remove(in / "q.npy");
  expect_error("linear_attn", "", "q.npy: missing");
}

TEST_F(ToolErrors, MissingGate) {
  expect_error("simple_gla", "", "g.npy: missing (required by simple_gla)");
}

TEST_F(ToolErrors, GateWithWrongShape) {
  put("g", {2, 5, 2}, 4, -1.f, -0.1f);  // H instead of HV heads
  expect_error("simple_gla", "", "g.npy: expected shape [2,5,4]");
}

TEST_F(ToolErrors, GateWithWrongRank) {
  put("g", {2, 5, 4}, 4, -1.f, -0.1f);
  expect_error("gla", "", "g.npy: expected a 4-d array [B,T,HV,K]");
}

TEST_F(ToolErrors, KeyShapeMismatch) {
  put("k", {2, 5, 2, 4}, 2);
  expect_error("linear_attn", "", "k.npy: expected shape [2,5,2,3]");
}

TEST_F(ToolErrors, InitialStateShape) {
  put("h0", {2, 2, 3, 2}, 6);
  expect_error("linear_attn", "", "h0.npy: expected shape [2,4,3,2]");
}

TEST_F(ToolErrors, DoublePrecisionFile) {
  std::string bytes("\x93NUMPY\x01\x00\x76\x00", 10);
  bytes += "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 5, 2, 3), }";
  bytes.resize(128 - 1, ' ');
  bytes += '\n';
  bytes += std::string(8 * 60, '\0');
  polyattn::test::write_bytes(in / "k.npy", bytes);
  expect_error("linear_attn", "", "unsupported dtype '<f8'");
}

TEST_F(ToolErrors, TruncatedFile) {
  const std::string full = polyattn::test::read_bytes(in / "v.npy");
  polyattn::test::write_bytes(in / "v.npy", full.substr(0, full.size() - 3));
  expect_error("linear_attn", "", "v.npy: truncated data");
}

TEST_F(ToolErrors, Int64WhereFloatExpected) {
  const std::vector<std::int64_t> x(2 * 5 * 4 * 2, 1);
  polyattn::io::write_npy(in / "v.npy", x.data(), {2, 5, 4, 2});
  expect_error("linear_attn", "", "v.npy: expected float32");
}

TEST_F(ToolErrors, BadCuSeqlens) {
  const std::vector<float> cu{0, 5};
  polyattn::io::write_npy(in / "cu_seqlens.npy", cu.data(), {2});
  expect_error("linear_attn", "", "cu_seqlens.npy: expected int64");
  const std::vector<std::int64_t> cu2{0, 5};
  polyattn::io::write_npy(in / "cu_seqlens.npy", cu2.data(), {2});
  expect_error("linear_attn", "", "cu_seqlens.npy: requires batch size 1");
}

TEST_F(ToolErrors, UnusedInput) {
  put("beta", {2, 5, 4}, 5, 0.1f, 0.9f);
  expect_error("linear_attn", "", "beta.npy: not used by linear_attn");
}

TEST_F(ToolErrors, CommandLine) {
  expect_error("linear_attn", "--frobnicate", "unknown option '--frobnicate'");
  expect_error("linear_attn", "--algo fast", "unknown --algo 'fast'");
  expect_error("linear_attn", "--algo", "--algo needs a value");
  expect_error("linear_atn", "", "unknown OP 'linear_atn'");
  expect_error("linear_attn", "--threads x", "--threads expects an integer");
  expect_error("linear_attn", "--threads 0", "--threads must be a positive integer");
  expect_error("linear_attn", "--threads 1025", "--threads must be <= 1024, got 1025");
  expect_error("linear_attn", "--scale nan", "--scale expects a finite number");
  expect_error("linear_attn", "--scale", "--scale needs a value");
  expect_error("linear_attn", "--window 4", "--window is not used by linear_attn");
  expect_error("retention", "--normalize", "--normalize is not used by retention");
  expect_error("linear_attn", "--layer 1", "--layer/--layers is not used by linear_attn");
  expect_error("lightning_attn", "--layer 3 --layers 2", "--layer 3 must be <= --layers 2");
  expect_error("softmax", "--causal --no-causal", "mutually exclusive");
  expect_error("forgetting_attn", "--no-causal", "always causal");
  expect_error("softmax", "--qk-l2norm", "--qk-l2norm is not used by softmax");
  expect_error("linear_attn", "--scale 1 --scale 2", "--scale given more than once");
  const Result r = run_raw("");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(line_count(r.err), 1u);
  const Result r2 = run_raw("linear_attn --out '" + out.string() + "'");
  EXPECT_EQ(r2.code, 2);
  EXPECT_NE(r2.err.find("missing --in"), std::string::npos);
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(ToolErrors, BadChunk) {
  // Checked whatever the algorithm (so a typo never goes unnoticed), for every OP.
  for (const char* algo : {"", "--algo recurrent ", "--algo reference "})
    expect_error("linear_attn", std::string(algo) + "--chunk 48",
                 "--chunk must be 16, 32, 64 or 128, got 48");
  expect_error("linear_attn", "--chunk 0", "--chunk must be 16, 32, 64 or 128, got 0");
  expect_error("linear_attn", "--chunk=-16", "--chunk must be 16, 32, 64 or 128, got -16");
  expect_error("linear_attn", "--chunk 1e3", "--chunk expects an integer, got '1e3'");
  expect_error("linear_attn", "--algo chunked --chunk 8", "--chunk must be 16, 32, 64 or 128");
  expect_error("softmax", "--chunk 100", "--chunk must be 16, 32, 64 or 128, got 100");
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(ToolErrors, SoftmaxRejectsLinearAlgorithms) {
  put("k", {2, 7, 1, 3}, 22);
  put("v", {2, 7, 1, 2}, 23);
  for (const char* op : {"softmax", "forgetting_attn"})
    for (const char* algo : {"recurrent", "chunked", "parallel"})
      expect_error(op, std::string("--algo ") + algo,
                   std::string(op) +
                       " runs the tiled flash kernel; --algo recurrent, chunked "
                       "and parallel belong to the linear family");
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(ToolErrors, FastOperatorErrorsNameTheFile) {
  // The shapes are checked before the operator runs, whatever the algorithm.
  const std::string last = fast_algos().back();
  put("h0", {2, 2, 3, 2}, 6);
  expect_error("linear_attn", "--algo recurrent", "h0.npy: expected shape [2,4,3,2]");
  expect_error("linear_attn", last, "h0.npy: expected shape [2,4,3,2]");
  fs::remove(in / "h0.npy");
  put("beta", {2, 5, 4}, 5, 0.1f, 0.9f);
  put("k", {2, 5, 2, 4}, 2);
  expect_error("delta_rule", "--threads 2", "k.npy: expected shape [2,5,2,3]");
  expect_error("delta_rule", last + " --threads 2", "k.npy: expected shape [2,5,2,3]");
}

TEST_F(ToolErrors, ParallelSequenceTooLong) {
  put("q", {1, 8194, 1, 2}, 1);
  put("k", {1, 8194, 1, 2}, 2);
  put("v", {1, 8194, 1, 2}, 3);
  expect_error("linear_attn", "--algo parallel",
               "--algo parallel materialises T x T per head; sequence length 8194 exceeds 8192; "
               "use --algo chunked");
  const std::vector<std::int64_t> cu{0, 1, 8194};  // packed: the longest sequence counts
  polyattn::io::write_npy(in / "cu_seqlens.npy", cu.data(), {3});
  expect_error("linear_attn", "--algo parallel --threads 2", "sequence length 8193 exceeds");
}

TEST_F(ToolErrors, SoftmaxShapes) {
  put("k", {2, 7, 3, 3}, 22);  // 3 kv heads do not divide 2 q heads
  put("v", {2, 7, 3, 2}, 23);
  expect_error("softmax", "", "k.npy: number of kv heads 3");
  put("k", {2, 7, 1, 3}, 22);
  put("v", {2, 7, 1, 2}, 23);
  put("sink", {3}, 25);
  expect_error("softmax", "", "sink.npy: expected shape [2]");
  fs::remove(in / "sink.npy");
  expect_error("forgetting_attn", "", "g.npy: missing");
  expect_error("softmax", "--scale -1", "--scale: must be a finite positive number");
}

TEST_F(ToolErrors, OutputDirNotWritable) {
  polyattn::test::write_bytes(root / "file", "x");
  out = root / "file";
  expect_error("linear_attn", "", "exists and is not a directory");
  out = root / "file" / "sub";
  expect_error("linear_attn", "", "cannot create directory");
}

TEST_F(ToolErrors, NoOutputDirectoryCreatedOnError) {
  fs::remove(in / "q.npy");
  expect_error("linear_attn", "", "missing");
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(ToolErrors, ElementTypeFlags) {
  put("q", {1, 4, 1, 4}, 1);
  put("k", {1, 4, 1, 4}, 2);
  put("v", {1, 4, 1, 4}, 3);
  expect_error("softmax", "--dtype int8", "unknown --dtype 'int8'");
  expect_error("softmax", "--kv-dtype fp8", "unknown --kv-dtype 'fp8'");
  expect_error("linear_attn", "--kv-dtype bf16", "--kv-dtype is not used by linear_attn");
  expect_error("based", "--dtype bf16", "--dtype is not used by based");
  expect_error("softmax", "--kv-dtype int8 --algo reference", "not with --algo reference");
  const std::vector<std::int64_t> cu{0, 2, 4};
  polyattn::io::write_npy(in / "cu_seqlens.npy", cu.data(), {3});
  expect_error("softmax", "--kv-dtype int8", "cu_seqlens is not supported");
}

}  // namespace
