// bench/bench_headline.cpp — the README's headline comparison (polyattn-headline).
//
// Every preset at T = 512 … 65536 (doubling), B1 H1, head dim 128, fp32, on --threads threads
// (default 1): causal softmax (the flash kernel), sliding-window softmax (window 4096), every
// linear-family preset and the papers' systems (include/polyattn/papers/: LightNet, SLAB, InLine,
// MALA, NaLaFormer, Flowformer, Aaren, Titans, Mamba-1, MoM, RALA, SSE) with their Recurrent and
// Chunked<64> algorithms (Aaren's and Mamba-1's chunked form is a blocked parallel scan; Titans is
// recurrent only). For each (variant, T) it runs the operator up to --reps times (default 3; fewer
// when one run already took more than
// --budget seconds, default 2) and keeps the median time. It prints
//   * a table of ns per token for every variant and T (a flat row = cost linear in T),
//   * the crossover: the first T at which each linear variant is cheaper than causal softmax,
//   * chunked vs recurrent at the largest T,
// and writes headline.csv (variant, algorithm, T, seconds, ns per token, tokens/s) and
// headline.svg (log-log time per token vs T, one line per variant; recurrent dashed) into --out
// (default: a `headline` folder next to the binary). Progress goes to stderr while it runs.
// The per-family suites with GFLOP/s and fraction of peak are the polyattn-bench-* binaries.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "polyattn/core/executor.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/linear/chunked.hpp"
#include "polyattn/linear/presets.hpp"
#include "polyattn/papers/aaren.hpp"
#include "polyattn/papers/flowformer.hpp"
#include "polyattn/papers/inline_attention.hpp"
#include "polyattn/papers/lightnet.hpp"
#include "polyattn/papers/mamba1.hpp"
#include "polyattn/papers/mean_corrected.hpp"
#include "polyattn/papers/mom.hpp"
#include "polyattn/papers/nala.hpp"
#include "polyattn/papers/rala.hpp"
#include "polyattn/papers/slab.hpp"
#include "polyattn/papers/sse.hpp"
#include "polyattn/papers/titans.hpp"
#include "polyattn/softmax/flash.hpp"

namespace {

using namespace polyattn;
namespace fs = std::filesystem;

constexpr index_t kD = 128;        // head dim of q, k, v (softmax and linear presets)
constexpr index_t kBasedDim = 16;  // Based's feature dim before the Taylor map (fla's default)

struct Args {
  index_t min_t = 512, max_t = 65536;
  int threads = 1, reps = 3;
  double budget = 2.0;
  fs::path out;
  std::string only;  // run only variants whose name contains this
};

struct Data {
  std::vector<float> q, k, v, g, gk, beta, o, qb, kb;
  std::vector<float> hh_w, hh_b;   // Hedgehog layer
  std::vector<float> conv, query;  // the papers' systems: a width-5 token conv, Aaren's query
  std::vector<float> ssm_a;        // Mamba-1's A [kD, 16]
  std::vector<float> mom_w;        // MoM's routing weights [T, 4]
  std::vector<float> sse_e;        // SSE's router logits [T, 4]
  index_t T = 0;
  void ensure(index_t T_) {
    if (T_ <= T) return;
    T = T_;
    const auto n = static_cast<std::size_t>(T);
    fill(q, n * kD, -1, 1, 1);
    fill(k, n * kD, -1, 1, 2);
    fill(v, n * kD, -1, 1, 3);
    fill(g, n, -0.1f, 0, 4);
    fill(gk, n * kD, -0.1f, 0, 5);
    fill(beta, n, 0, 1, 6);
    fill(qb, n * kBasedDim, -1, 1, 7);
    fill(kb, n * kBasedDim, -1, 1, 8);
    o.assign(n * kD, 0.f);
    if (hh_w.empty()) {
      fill(hh_w, static_cast<std::size_t>(kD * kD), -0.1f, 0.1f, 9);
      fill(hh_b, static_cast<std::size_t>(kD), -0.1f, 0.1f, 10);
      fill(conv, static_cast<std::size_t>(kD * 5), -0.2f, 0.2f, 11);
      fill(query, static_cast<std::size_t>(kD), -0.1f, 0.1f, 12);
      fill(ssm_a, static_cast<std::size_t>(kD * 16), -2.f, -0.05f, 13);
    }
  }
  static void fill(std::vector<float>& x, std::size_t n, float lo, float hi, unsigned seed) {
    x.resize(n);
    unsigned s = seed * 2654435761u;
    for (auto& e : x) {
      s = s * 1664525u + 1013904223u;
      e = lo + (hi - lo) * static_cast<float>(s >> 8) / static_cast<float>(1u << 24);
    }
  }
};

struct Variant {
  std::string name, algo;
  std::function<void(Data&, index_t, const ThreadPool*)> run;
};

template <class F>
void with_exec(const ThreadPool* pool, F&& f) {
  if (pool)
    f(*pool);
  else
    f(Serial{});
}

template <class Algo, class Op>
Variant linear_variant(const std::string& name, const std::string& algo, Op op, index_t K = kD) {
  return {name, algo, [op, K](Data& d, index_t T, const ThreadPool* pool) {
            const LinearOptions o = op.options();
            const bool based = K != kD;
            LinearInputs in{.q = bthd<const float>(based ? d.qb.data() : d.q.data(), 1, T, 1, K),
                            .k = bthd<const float>(based ? d.kb.data() : d.k.data(), 1, T, 1, K),
                            .v = bthd<const float>(d.v.data(), 1, T, 1, kD)};
            if (o.decay == Decay::ScalarPerToken) in.g = bth<const float>(d.g.data(), 1, T, 1);
            if (o.decay == Decay::VectorPerToken)
              in.gk = bthd<const float>(d.gk.data(), 1, T, 1, K);
            if (o.update == Update::Delta) in.beta = bth<const float>(d.beta.data(), 1, T, 1);
            const LinearOutputs<float> out{.o = bthd(d.o.data(), 1, T, 1, kD)};
            with_exec(pool, [&](const auto& ex) { op.template forward<Algo>(in, out, {}, ex); });
          }};
}

Variant softmax_variant(const std::string& name, index_t window) {
  return {name, "flash", [window](Data& d, index_t T, const ThreadPool* pool) {
            const SoftmaxInputs in{.q = bthd<const float>(d.q.data(), 1, T, 1, kD),
                                   .k = bthd<const float>(d.k.data(), 1, T, 1, kD),
                                   .v = bthd<const float>(d.v.data(), 1, T, 1, kD)};
            SoftmaxOptions opt;
            opt.causal = true;
            opt.window = window;
            with_exec(pool, [&](const auto& ex) {
              softmax::flash_attention(in, opt, bthd(d.o.data(), 1, T, 1, kD), ex);
            });
          }};
}

template <class Op>
void add_linear(std::vector<Variant>& v, const std::string& name, const Op& op, index_t K = kD) {
  v.push_back(linear_variant<Recurrent>(name, "recurrent", op, K));
  v.push_back(linear_variant<Chunked<64>>(name, "chunked64", op, K));
}

// The papers' systems (include/polyattn/papers/): f(data, T, inputs, o, executor) runs one with
// algorithm Algo on q, k, v of B1 T H1 d128.
template <class Algo, class F>
Variant paper_variant(const std::string& name, const std::string& algo, F f) {
  return {name, algo, [f](Data& d, index_t T, const ThreadPool* pool) {
            const LinearInputs in{.q = bthd<const float>(d.q.data(), 1, T, 1, kD),
                                  .k = bthd<const float>(d.k.data(), 1, T, 1, kD),
                                  .v = bthd<const float>(d.v.data(), 1, T, 1, kD)};
            const auto o = bthd(d.o.data(), 1, T, 1, kD);
            with_exec(pool, [&](const auto& ex) { f.template operator()<Algo>(d, T, in, o, ex); });
          }};
}

template <class F>
void add_paper(std::vector<Variant>& v, const std::string& name, F f) {
  v.push_back(paper_variant<Recurrent>(name, "recurrent", f));
  v.push_back(paper_variant<Chunked<64>>(name, "chunked64", f));
}

void add_papers(std::vector<Variant>& v) {
  using papers::TokenConv;
  auto conv = [](const Data& d) {
    return TokenConv{.weight = View4<const float>::contiguous(d.conv.data(), {1, 1, kD, 5})};
  };
  add_paper(v, "lightnet",
            []<class A>(Data&, index_t, const LinearInputs& in, View4<float> o, const auto& ex) {
              papers::presets::make_lightnet().forward<A>(in, {}, {.o = o}, {}, {}, ex);
            });
  add_paper(
      v, "slab",
      [conv]<class A>(Data& d, index_t, const LinearInputs& in, View4<float> o, const auto& ex) {
        papers::Slab().forward<A>(in, conv(d), {}, {.o = o}, {}, ex);
      });
  add_paper(
      v, "inline",
      [conv]<class A>(Data& d, index_t, const LinearInputs& in, View4<float> o, const auto& ex) {
        papers::InLine<>().forward<A>(in, {}, conv(d), {}, {.o = o}, {}, {}, ex);
      });
  add_paper(v, "mala",
            []<class A>(Data&, index_t, const LinearInputs& in, View4<float> o, const auto& ex) {
              papers::presets::make_mala().forward<A>(in, {}, {.o = o}, {}, {}, ex);
            });
  add_paper(v, "nala",
            []<class A>(Data&, index_t, const LinearInputs& in, View4<float> o, const auto& ex) {
              papers::presets::make_nala().forward<A>(in, {}, {.o = o}, {}, {}, ex);
            });
  add_paper(v, "flowformer",
            []<class A>(Data&, index_t, const LinearInputs& in, View4<float> o, const auto& ex) {
              papers::presets::make_flowformer().forward<A>(in, {}, {.o = o}, {}, ex);
            });
  add_paper(v, "aaren",
            []<class A>(Data& d, index_t, const LinearInputs& in, View4<float> o, const auto& ex) {
              papers::presets::make_aaren().forward<A>(
                  {.query = TensorView<const float, 2>::contiguous(d.query.data(), {1, kD}),
                   .k = in.k.as<float>(),
                   .v = in.v.as<float>()},
                  o, {}, {}, ex);
            });
  // Titans: recurrent only (its parallel training form is a different recurrence). The three
  // gates reuse beta's buffer (values in (0, 1)).
  v.push_back(paper_variant<Recurrent>(
      "titans", "recurrent",
      []<class A>(Data& d, index_t T, const LinearInputs& in, View4<float> o, const auto& ex) {
        const auto gate = bth<const float>(d.beta.data(), 1, T, 1);
        papers::presets::make_titans().forward({.q = in.q.as<float>(),
                                                .k = in.k.as<float>(),
                                                .v = in.v.as<float>(),
                                                .alpha = gate,
                                                .eta = gate,
                                                .theta = gate},
                                               {.o = o}, {}, ex);
      }));
  // MoM: 4 memories, top-2 (every token routed to memories t mod 4 and t+1 mod 4, weights ½),
  // the memories' k, v, g, β all read from the same buffers (the cost does not depend on them).
  add_paper(
      v, "mom",
      []<class A>(Data& d, index_t T, const LinearInputs& in, View4<float> o, const auto& ex) {
        constexpr index_t M = 4;
        if (d.mom_w.size() < static_cast<std::size_t>(T * M)) {
          d.mom_w.assign(static_cast<std::size_t>(T * M), 0.f);
          for (index_t t = 0; t < T; ++t)
            d.mom_w[t * M + t % M] = d.mom_w[t * M + (t + 1) % M] = 0.5f;
        }
        papers::presets::make_mom().forward<A>(
            {.q = in.q.as<float>(),
             .k = View4<const float>(d.k.data(), {M, T, 1, kD}, {0, kD, kD, 1}),
             .v = View4<const float>(d.v.data(), {M, T, 1, kD}, {0, kD, kD, 1}),
             .g = View3<const float>(d.g.data(), {M, T, 1}, {0, 1, 1}),
             .beta = View3<const float>(d.beta.data(), {M, T, 1}, {0, 1, 1}),
             .weights = View3<const float>::contiguous(d.mom_w.data(), {1, T, M})},
            o, {}, {}, ex);
      });
  // RALA: the global query q̄ read from Aaren's query buffer, LePE the width-5 token conv.
  add_paper(
      v, "rala",
      [conv]<class A>(Data& d, index_t, const LinearInputs& in, View4<float> o, const auto& ex) {
        papers::presets::make_rala().forward<A>(
            {.q = in.q.as<float>(),
             .k = in.k.as<float>(),
             .v = in.v.as<float>(),
             .q_mean = View3<const float>::contiguous(d.query.data(), {1, 1, kD})},
            conv(d), {}, {.o = o}, {}, {}, ex);
      });
  // SSE: 4 partitions, one writer and reader per token (router logits favour t mod 4), the shared
  // state and the partitions reading q, k, gk from the same buffers.
  add_paper(
      v, "sse",
      []<class A>(Data& d, index_t T, const LinearInputs& in, View4<float> o, const auto& ex) {
        constexpr index_t P = 4;
        if (d.sse_e.size() < static_cast<std::size_t>(T * P)) {
          d.sse_e.assign(static_cast<std::size_t>(T * P), 0.f);
          for (index_t t = 0; t < T; ++t) d.sse_e[t * P + t % P] = 1.f;
        }
        const auto gk = bthd<const float>(d.gk.data(), 1, T, 1, kD);
        papers::presets::make_sse().forward<A>(
            {.q1 = in.q.as<float>(),
             .k1 = in.k.as<float>(),
             .q2 = in.q.as<float>(),
             .k2 = in.k.as<float>(),
             .v = in.v.as<float>(),
             .g1 = gk,
             .g2 = gk,
             .e = View3<const float>::contiguous(d.sse_e.data(), {1, T, P})},
            o, {}, {}, {}, ex);
      });
  // Mamba-1: D = 128 channels, state 16, one group; x = v, dt = q, B and C read from the k and
  // gk buffers (the cost does not depend on the values).
  add_paper(v, "mamba1",
            []<class A>(Data& d, index_t T, const LinearInputs&, View4<float> o, const auto& ex) {
              papers::presets::make_mamba1().forward<A>(
                  {.x = View3<const float>::contiguous(d.v.data(), {1, T, kD}),
                   .dt = View3<const float>::contiguous(d.q.data(), {1, T, kD}),
                   .A = TensorView<const float, 2>::contiguous(d.ssm_a.data(), {kD, 16}),
                   .Bm = View4<const float>::contiguous(d.k.data(), {1, T, 1, 16}),
                   .Cm = View4<const float>::contiguous(d.gk.data(), {1, T, 1, 16})},
                  View3<float>::contiguous(o.data(), {1, T, kD}), {}, {}, ex);
            });
}

std::vector<Variant> variants(Data& d) {
  std::vector<Variant> v;
  v.push_back(softmax_variant("softmax", 0));
  v.push_back(softmax_variant("softmax-window4096", 4096));
  add_linear(v, "linear_attn", presets::linear_attn{});
  add_linear(v, "retention", presets::make_retention(1));
  add_linear(v, "lightning_attn", presets::make_lightning_attn(1, 0, 1));
  add_linear(v, "simple_gla", presets::simple_gla{});
  add_linear(v, "gla", presets::gla{});
  add_linear(v, "delta_rule", presets::make_delta_rule());
  add_linear(v, "gated_delta_rule", presets::make_gated_delta_rule());
  add_linear(v, "kda", presets::make_kda());
  add_linear(v, "based", presets::make_based(), kBasedDim);
  d.ensure(1);  // Hedgehog holds its weights by reference
  add_linear(v, "hedgehog", presets::make_hedgehog(Hedgehog::fla(d.hh_w, d.hh_b)));
  add_papers(v);  // the conv weights and Aaren's query live in d (filled by ensure above)
  return v;
}

struct Point {
  std::string name, algo;
  index_t T;
  double seconds;
};

double ns_per_token(const Point& p) {
  return p.seconds / static_cast<double>(p.T) * 1e9;
}

// ---- SVG: log-log time per token vs T ---------------------------------------------------------

void write_svg(const fs::path& file, const std::vector<Point>& pts, const Args& a) {
  std::map<std::string, std::vector<const Point*>> lines;  // "name algo" → points in T order
  std::vector<std::string> order;
  double ymin = 1e300, ymax = 0;
  for (const Point& p : pts) {
    const std::string key = p.name + " (" + p.algo + ")";
    if (!lines.count(key)) order.push_back(key);
    lines[key].push_back(&p);
    ymin = std::min(ymin, ns_per_token(p));
    ymax = std::max(ymax, ns_per_token(p));
  }
  if (pts.empty()) return;
  const double ly0 = std::floor(std::log10(ymin)), ly1 = std::ceil(std::log10(ymax));
  const double lx0 = std::log2(static_cast<double>(a.min_t)),
               lx1 = std::log2(static_cast<double>(a.max_t));
  const double L = 80, R = 640, Tp = 40, Bt = 500, W = 960, Hh = 560;
  const auto X = [&](double T) {
    return L + (std::log2(T) - lx0) / std::max(1.0, lx1 - lx0) * (R - L);
  };
  const auto Y = [&](double ns) {
    return Bt - (std::log10(ns) - ly0) / std::max(1.0, ly1 - ly0) * (Bt - Tp);
  };
  static const char* colors[] = {"#000000", "#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c",
                                 "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
                                 "#17becf", "#393b79", "#637939", "#8c6d31"};
  std::ofstream f(file);
  f << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << Hh
    << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' "
       "fill='white'/>\n";
  f << "<text x='" << L
    << "' y='22' font-size='15'>polyattn: time per token vs sequence "
       "length (fp32, B1 H1 d128, "
    << a.threads << " thread" << (a.threads > 1 ? "s" : "") << ")</text>\n";
  for (double e = ly0; e <= ly1; e += 1) {  // decades of ns per token
    const double y = Y(std::pow(10.0, e));
    f << "<line x1='" << L << "' y1='" << y << "' x2='" << R << "' y2='" << y
      << "' stroke='#ddd'/><text x='" << L - 8 << "' y='" << y + 4 << "' text-anchor='end'>"
      << std::pow(10.0, e) / 1000.0 << " µs</text>\n";
  }
  for (index_t T = a.min_t; T <= a.max_t; T *= 2) {
    const double x = X(static_cast<double>(T));
    f << "<line x1='" << x << "' y1='" << Tp << "' x2='" << x << "' y2='" << Bt
      << "' stroke='#eee'/><text x='" << x << "' y='" << Bt + 16 << "' text-anchor='middle'>" << T
      << "</text>\n";
  }
  f << "<rect x='" << L << "' y='" << Tp << "' width='" << R - L << "' height='" << Bt - Tp
    << "' fill='none' stroke='#333'/>\n<text x='" << (L + R) / 2 << "' y='" << Bt + 36
    << "' text-anchor='middle'>sequence length T (tokens, log scale)</text>\n<text x='18' y='"
    << (Tp + Bt) / 2 << "' transform='rotate(-90 18 " << (Tp + Bt) / 2
    << ")' text-anchor='middle'>time per token (log scale)</text>\n";
  std::map<std::string, std::size_t> color_of;
  double ly = Tp + 6;
  for (const std::string& key : order) {
    const std::string base = key.substr(0, key.find(' '));
    if (!color_of.count(base)) color_of.emplace(base, color_of.size());
    const char* c = colors[color_of[base] % (sizeof(colors) / sizeof(colors[0]))];
    const bool dashed = key.find("recurrent") != std::string::npos;
    f << "<polyline fill='none' stroke='" << c << "' stroke-width='2'"
      << (dashed ? " stroke-dasharray='6,4'" : "") << " points='";
    for (const Point* p : lines[key])
      f << X(static_cast<double>(p->T)) << "," << Y(ns_per_token(*p)) << " ";
    f << "'/>\n<line x1='" << R + 16 << "' y1='" << ly << "' x2='" << R + 46 << "' y2='" << ly
      << "' stroke='" << c << "' stroke-width='2'" << (dashed ? " stroke-dasharray='6,4'" : "")
      << "/><text x='" << R + 52 << "' y='" << ly + 4 << "'>" << key << "</text>\n";
    ly += 18;
  }
  f << "</svg>\n";
}

// ---- command line ------------------------------------------------------------------------------

std::optional<Args> parse(int argc, char** argv) {
  Args a;
  a.out = fs::path(argv[0]).parent_path() / "headline";
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    const auto value = [&](const char* flag) -> std::optional<std::string> {
      const std::string f = flag;
      if (s.rfind(f + "=", 0) == 0) return s.substr(f.size() + 1);
      if (s == f && i + 1 < argc) return std::string(argv[++i]);
      return std::nullopt;
    };
    if (auto x = value("--max-t"))
      a.max_t = std::atol(x->c_str());
    else if (auto x2 = value("--min-t"))
      a.min_t = std::atol(x2->c_str());
    else if (auto x3 = value("--threads"))
      a.threads = std::atoi(x3->c_str());
    else if (auto x4 = value("--reps"))
      a.reps = std::atoi(x4->c_str());
    else if (auto x5 = value("--budget"))
      a.budget = std::atof(x5->c_str());
    else if (auto x6 = value("--out"))
      a.out = *x6;
    else if (auto x7 = value("--only"))
      a.only = *x7;
    else {
      std::fprintf(stderr,
                   "usage: polyattn-headline [--min-t 512] [--max-t 65536] [--threads N] "
                   "[--reps 3] [--budget SECONDS] [--out DIR] [--only NAME]\n");
      return std::nullopt;
    }
  }
  if (a.min_t < 1 || a.max_t < a.min_t || a.threads < 1 || a.reps < 1 || !(a.budget > 0)) {
    std::fprintf(stderr, "polyattn-headline: bad option value (see --help)\n");
    return std::nullopt;
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<Args> args = parse(argc, argv);
  if (!args) return 2;
  const Args& a = *args;
  std::optional<ThreadPool> pool;
  if (a.threads > 1) pool.emplace(a.threads);

  Data data;
  std::vector<Variant> vars = variants(data);
  if (!a.only.empty())
    std::erase_if(vars, [&](const Variant& v) { return v.name.find(a.only) == std::string::npos; });
  std::vector<index_t> Ts;
  for (index_t T = a.min_t; T <= a.max_t; T *= 2) Ts.push_back(T);
  data.ensure(a.max_t);

  std::printf(
      "polyattn-headline: kernels %s, %d thread%s, B1 H1 head dim %ld (Based: %ld before "
      "its Taylor map), fp32; median of up to %d runs (fewer above %.1f s per run)\n",
      simd::isa_name(simd::best_arch()), a.threads, a.threads > 1 ? "s" : "", static_cast<long>(kD),
      static_cast<long>(kBasedDim), a.reps, a.budget);
  std::vector<Point> pts;
  const std::size_t total = vars.size() * Ts.size();
  std::size_t done = 0;
  const auto t_start = std::chrono::steady_clock::now();
  for (const Variant& v : vars)
    for (index_t T : Ts) {
      std::fprintf(
          stderr, "\r[%3zu/%zu] %-20s %-10s T=%-6ld (%.0f s elapsed)   ", ++done, total,
          v.name.c_str(), v.algo.c_str(), static_cast<long>(T),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
      std::fflush(stderr);
      std::vector<double> times;
      for (int r = 0; r < a.reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        v.run(data, T, pool ? &*pool : nullptr);
        times.push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        if (times.back() > a.budget) break;
      }
      std::sort(times.begin(), times.end());
      pts.push_back({v.name, v.algo, T, times[times.size() / 2]});
    }
  std::fprintf(stderr, "\r%80s\r", "");

  // Table: ns per token.
  std::printf("\nns per token (lower is better; a flat row = cost linear in T)\n%-20s %-10s",
              "variant", "algorithm");
  for (index_t T : Ts) std::printf(" %9ld", static_cast<long>(T));
  std::printf("\n");
  for (std::size_t i = 0; i < pts.size(); i += Ts.size()) {
    std::printf("%-20s %-10s", pts[i].name.c_str(), pts[i].algo.c_str());
    for (std::size_t j = 0; j < Ts.size(); ++j) std::printf(" %9.0f", ns_per_token(pts[i + j]));
    std::printf("\n");
  }

  // Crossover against causal softmax, and chunked vs recurrent at the largest T.
  const auto find = [&](const std::string& name, const std::string& algo,
                        index_t T) -> const Point* {
    for (const Point& p : pts)
      if (p.name == name && p.algo == algo && p.T == T) return &p;
    return nullptr;
  };
  std::printf(
      "\ncrossover: first T at which each variant costs less per token than causal softmax\n");
  for (std::size_t i = 0; i < pts.size(); i += Ts.size()) {
    if (pts[i].name.rfind("softmax", 0) == 0 && pts[i].name != "softmax-window4096") continue;
    if (!find("softmax", "flash", Ts.front())) break;
    std::string at = "not within the measured range";
    for (index_t T : Ts) {
      const Point* s = find("softmax", "flash", T);
      const Point* p = find(pts[i].name, pts[i].algo, T);
      if (s && p && p->seconds < s->seconds) {
        at = "T = " + std::to_string(T) + " (" +
             std::to_string(s->seconds / p->seconds).substr(0, 4) + "x cheaper there)";
        break;
      }
    }
    std::printf("  %-20s %-10s %s\n", pts[i].name.c_str(), pts[i].algo.c_str(), at.c_str());
  }
  std::printf("\nchunked64 vs recurrent at T = %ld (time ratio recurrent / chunked):\n",
              static_cast<long>(Ts.back()));
  for (const Point& p : pts)
    if (p.algo == "chunked64" && p.T == Ts.back())
      if (const Point* r = find(p.name, "recurrent", p.T))
        std::printf("  %-20s %.2fx\n", p.name.c_str(), r->seconds / p.seconds);

  std::error_code ec;
  fs::create_directories(a.out, ec);
  {
    std::ofstream csv(a.out / "headline.csv");
    csv << "variant,algorithm,T,seconds,ns_per_token,tokens_per_s\n";
    for (const Point& p : pts)
      csv << p.name << "," << p.algo << "," << p.T << "," << p.seconds << "," << ns_per_token(p)
          << "," << static_cast<double>(p.T) / p.seconds << "\n";
  }
  write_svg(a.out / "headline.svg", pts, a);
  std::printf("\nwrote %s and %s\n", (a.out / "headline.csv").string().c_str(),
              (a.out / "headline.svg").string().c_str());
  return 0;
}
