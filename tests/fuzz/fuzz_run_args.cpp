// libFuzzer target: polyattn-run's command-line parser (tools/run_args.hpp). The input is split
// at '\n' into argv words. Every command line must either parse into Args that satisfy the
// parser's own promises, or throw RunError with a one-line message; anything else (another
// exception, a crash, UB under ASan/UBSan) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "run_args.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace tool = polyattn::tool;
  std::vector<std::string> words{"polyattn-run"};
  std::string cur;
  for (std::size_t i = 0; i < size; ++i) {
    const char c = static_cast<char>(data[i]);
    if (c == '\n') {
      words.push_back(cur);
      cur.clear();
    } else if (c != '\0') {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) words.push_back(cur);
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  try {
    const tool::Args a = tool::parse_args(static_cast<int>(words.size()), argv.data());
    check(!a.in.empty() && !a.out.empty());
    check(a.threads >= 1 && a.threads <= tool::kMaxThreads);
    check(a.chunk == 16 || a.chunk == 32 || a.chunk == 64 || a.chunk == 128);
    check(!a.window || *a.window >= 1);
    check(!a.sinks || *a.sinks >= 0);
    check(tool::op_table().count(a.op_name) == 1);
  } catch (const tool::RunError& e) {
    const std::string what = e.what();
    check(!what.empty() && what.find('\n') == std::string::npos);
  }
  return 0;
}
