// tests/core/test_dispatch.cpp — runtime ISA dispatch: CPU detection, the POLYATTN_ISA cap,
// best_arch() and dispatch() with a functor whose per-ISA bodies live in arch units
// (dispatch_probe_unit.cpp). The env-cap tests re-run this executable in child processes,
// because the production path caches its decision at the first call.
#include <gtest/gtest.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "dispatch_probe.hpp"

extern char** environ;

namespace {

namespace simd = polyattn::simd;
using polyattn::test::Probe;
using simd::Isa;

static_assert(simd::SimdArch<simd::avx512> && simd::SimdArch<simd::avx2> &&
              simd::SimdArch<simd::sse42> && simd::SimdArch<simd::scalar_arch>);
static_assert(!simd::SimdArch<int> && !simd::SimdArch<xsimd::sse2> &&
              !simd::SimdArch<xsimd::avx512f>);
static_assert(simd::compiled<simd::scalar_arch>());
static_assert(simd::isa_of<simd::avx2> == Isa::avx2);
static_assert(simd::choose_isa(Isa::avx512, 0b1011u) == Isa::avx512);
static_assert(simd::choose_isa(Isa::avx512, 0b0011u) == Isa::sse42);
static_assert(simd::choose_isa(Isa::avx2, 0b1001u) == Isa::scalar);
static_assert(simd::parse_isa("avx2") == Isa::avx2 && !simd::parse_isa("AVX2") &&
              !simd::parse_isa(""));
static_assert(simd::capped_isa(Isa::avx2, "avx512") == Isa::avx2);
static_assert(simd::capped_isa(Isa::avx512, "sse42") == Isa::sse42);
static_assert(simd::capped_isa(Isa::avx512, "nonsense") == Isa::avx512);
static_assert(simd::capped_isa(Isa::sse42, nullptr) == Isa::sse42);
static_assert(simd::capped_isa(Isa::avx512bf16, "avx512") == Isa::avx512);
static_assert(simd::choose_isa(Isa::avx512bf16, 0b1111u) == Isa::avx512);  // no unit of its own
// AArch64's chain, scalar < neon, shares only scalar with x86's.
static_assert(simd::SimdArch<simd::neon> && simd::isa_of<simd::neon> == Isa::neon);
static_assert(simd::parse_isa("neon") == Isa::neon);
static_assert(simd::choose_isa(Isa::neon, 0b1001111u) == Isa::neon);
static_assert(simd::choose_isa(Isa::neon, 0b0001111u) == Isa::scalar);  // no x86 level on ARM
static_assert(simd::choose_isa(Isa::amx, 0b1000011u) == Isa::sse42);    // nor neon on x86
static_assert(simd::isa_at_least(Isa::neon, Isa::scalar) &&
              !simd::isa_at_least(Isa::neon, Isa::amx) &&
              !simd::isa_at_least(Isa::amx, Isa::neon) &&
              !simd::isa_at_least(Isa::scalar, Isa::neon));
static_assert(simd::isa_at_least(Isa::amx, Isa::avx2) && !simd::isa_at_least(Isa::avx2, Isa::amx));
static_assert(simd::capped_isa(Isa::neon, "scalar") == Isa::scalar);
static_assert(simd::capped_isa(Isa::neon, "avx2") == Isa::neon);      // other family: ignored
static_assert(simd::capped_isa(Isa::avx512, "neon") == Isa::avx512);  // other family: ignored
static_assert(simd::capped_isa(Isa::scalar, "neon") == Isa::scalar);  // never raised

// The CPU's level from /proc/cpuinfo, independent of the library's cpuid code. AArch64: neon
// where the Features line lists asimd (qemu-user shows the x86 host's file: no Features line,
// so the test skips).
std::optional<Isa> isa_from_proc_cpuinfo() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
#if defined(__aarch64__)
    if (line.rfind("Features", 0) != 0) continue;
    std::istringstream features(line.substr(line.find(':') + 1));
    for (std::string w; features >> w;)
      if (w == "asimd") return Isa::neon;
    return Isa::scalar;
#else
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::set<std::string> f;
    for (std::string w; words >> w;) f.insert(w);
    auto has = [&](std::initializer_list<const char*> names) {
      for (const char* n : names)
        if (!f.count(n)) return false;
      return true;
    };
    if (!has({"sse4_2"})) return Isa::scalar;
    if (!has({"avx2", "fma", "bmi2", "f16c"})) return Isa::sse42;
    if (!has({"avx512f", "avx512cd", "avx512dq", "avx512bw", "avx512vl"})) return Isa::avx2;
    if (!has({"avx512_bf16"})) return Isa::avx512;
    if (!has({"amx_tile", "amx_bf16"})) return Isa::avx512bf16;
    return Isa::amx;  // Linux grants the tile data state on request (5.16 and later)
#endif
  }
  return std::nullopt;
}

#if defined(__aarch64__)
constexpr unsigned kAllUnits = 0b1000001u;  // neon, scalar
#else
constexpr unsigned kAllUnits = 0b1111u;
#endif

TEST(Dispatch, TheseTestsHaveEveryUnit) {
  EXPECT_EQ(POLYATTN_ISA_MASK, kAllUnits);
  // This TU is compiled for generic x86-64: only scalar is local (AArch64: neon and scalar).
  EXPECT_EQ(POLYATTN_LOCAL_ISA_MASK & 1u, 1u);
}

TEST(Dispatch, CpuIsaAgreesWithProcCpuinfo) {
  const auto expected = isa_from_proc_cpuinfo();
  if (!expected) GTEST_SKIP() << "no /proc/cpuinfo flags";
  EXPECT_EQ(simd::cpu_isa(), *expected) << "library: " << simd::isa_name(simd::cpu_isa())
                                        << ", /proc/cpuinfo: " << simd::isa_name(*expected);
  RecordProperty("cpu_isa", simd::isa_name(simd::cpu_isa()));
}

TEST(Dispatch, BestArchIsTheCpuBestWhenAllUnitsExist) {
  if (std::getenv("POLYATTN_ISA") != nullptr) GTEST_SKIP() << "POLYATTN_ISA is set";
  // With units for every ISA the only limit is the CPU: avx512 on an AVX-512 machine (also
  // when it reaches avx512bf16, an extension level that runs the avx512 units).
  const Isa tag = simd::isa_at_least(simd::cpu_isa(), Isa::avx512) ? Isa::avx512 : simd::cpu_isa();
  EXPECT_EQ(simd::best_arch(), tag);
  EXPECT_EQ(simd::runtime_isa(), simd::cpu_isa());
  std::printf("best_arch() = %s\n", simd::isa_name(simd::best_arch()));
}

TEST(Dispatch, BestArchRespectsTheCompiledSet) {
  // Without an avx512 unit an AVX-512 CPU falls back to avx2, and so on.
  EXPECT_EQ(simd::best_arch<0b0111u>(), simd::choose_isa(simd::runtime_isa(), 0b0111u));
  EXPECT_EQ(simd::best_arch<0b0001u>(), Isa::scalar);
  EXPECT_LE(static_cast<int>(simd::best_arch<0b0101u>()), static_cast<int>(Isa::avx2));
  EXPECT_NE(simd::best_arch<0b0101u>(), Isa::sse42);
}

TEST(Dispatch, CallsTheFunctorWithTheMatchingTag) {
  std::vector<float> x(37);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
  const polyattn::test::ProbeResult r = simd::dispatch(Probe{x.data(), 37});
  EXPECT_EQ(r.isa, simd::best_arch());
  const std::size_t widths[] = {1, 4, 8, 16, 0, 0, 4};  // by Isa: scalar … avx512, neon
  EXPECT_EQ(r.width, widths[static_cast<int>(r.isa)]);
  const char* names[] = {"scalar", "sse4.2", "fma3+avx2", "avx512bw", "", "", "arm64+neon"};
  EXPECT_STREQ(r.name, names[static_cast<int>(r.isa)]);
  EXPECT_EQ(r.sum, 666.f);
}

TEST(Dispatch, DispatchToEachIsaTheCpuHas) {
  std::vector<float> x(5, 1.f);
  const Isa cpu = simd::cpu_isa();
  for (Isa want : {Isa::scalar, Isa::sse42, Isa::avx2, Isa::avx512, Isa::neon}) {
    const auto r = simd::dispatch_to(want, Probe{x.data(), 5});
    // Lowered to the CPU's level; a level of the other processor family runs scalar.
    const Isa expect = simd::isa_at_least(cpu, want)                     ? want
                       : simd::isa_is_arm(want) == simd::isa_is_arm(cpu) ? cpu
                                                                         : Isa::scalar;
    EXPECT_EQ(r.isa, expect) << "asked for " << simd::isa_name(want);
    EXPECT_EQ(r.sum, 5.f);
  }
}

TEST(Dispatch, LocalDispatchOnlyUsesThisTusFlags) {
  std::vector<float> x(9, 2.f);
  const Isa got = simd::dispatch_local([&](auto arch) {
    using A = decltype(arch);
    EXPECT_EQ(simd::sum<A>(x.data(), 9), 18.f);
    return simd::isa_of<A>;
  });
  EXPECT_EQ(got, simd::choose_isa(simd::runtime_isa(), POLYATTN_LOCAL_ISA_MASK));
}

// Runs in a child process started by EnvCapsTheChoice; skipped otherwise.
TEST(DispatchEnvChild, SeesTheCap) {
  const char* expect = std::getenv("POLYATTN_TEST_EXPECT_ISA");
  if (expect == nullptr) GTEST_SKIP() << "only meaningful as a child of EnvCapsTheChoice";
  const auto want = simd::parse_isa(expect);
  ASSERT_TRUE(want.has_value());
  EXPECT_EQ(simd::runtime_isa(), *want);
  // Extension levels (avx512bf16) run the avx512 units.
  const Isa tag = simd::choose_isa(*want, POLYATTN_ISA_MASK);
  EXPECT_EQ(simd::best_arch(), tag);
  std::vector<float> x(3, 1.f);
  EXPECT_EQ(simd::dispatch(Probe{x.data(), 3}).isa, tag);
}

int run_child(const std::string& cap, Isa expect) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string s = *e;
    if (s.rfind("POLYATTN_ISA=", 0) == 0 || s.rfind("POLYATTN_TEST_EXPECT_ISA=", 0) == 0 ||
        s.rfind("GTEST_", 0) == 0)
      continue;
    env_strings.push_back(s);
  }
  env_strings.push_back("POLYATTN_ISA=" + cap);
  env_strings.push_back(std::string("POLYATTN_TEST_EXPECT_ISA=") + simd::isa_name(expect));
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe", filter = "--gtest_filter=DispatchEnvChild.SeesTheCap";
  std::string brief = "--gtest_brief=1";
  char* argv[] = {exe.data(), filter.data(), brief.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, envp.data()) != 0) return -2;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(Dispatch, EnvCapsTheChoice) {
  if (access("/proc/self/exe", X_OK) != 0) GTEST_SKIP() << "no /proc/self/exe";
  const Isa cpu = simd::cpu_isa();
  // Under qemu-user the child (an AArch64 binary) cannot be exec'ed by the x86 host kernel.
  // (posix_spawn then fails, or its child exits with 127).
  if (const int rc = run_child("scalar", Isa::scalar); rc == -2 || rc == 127)
    GTEST_SKIP() << "cannot run /proc/self/exe in a child process (emulated?)";
  for (int i = 0; i <= static_cast<int>(Isa::neon); ++i) {
    const Isa cap = static_cast<Isa>(i);
    // The cap lowers the choice but never raises it above the CPU; a level of the other
    // processor family is ignored.
    const Isa expect = simd::isa_at_least(cpu, cap) ? cap : cpu;
    EXPECT_EQ(run_child(simd::isa_name(cap), expect), 0) << "POLYATTN_ISA=" << simd::isa_name(cap);
  }
  // An unknown value is ignored (with a message on stderr).
  EXPECT_EQ(run_child("avx9000", cpu), 0);
}

}  // namespace
