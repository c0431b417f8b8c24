// libFuzzer target: the .npy reader (polyattn/io/npy.hpp) on arbitrary bytes. Every input must
// either decode into an array whose data matches its shape, or throw NpyError; anything else
// (another exception, a crash, an out-of-bounds access under ASan/UBSan) is a bug. A decoded
// array is written back and parsed again: the round trip must give the same array.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "polyattn/io/npy.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace io = polyattn::io;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  io::NpyArray a;
  try {
    a = io::parse_npy(bytes, "fuzz.npy");
  } catch (const io::NpyError&) {
    return 0;
  }
  std::int64_t n = 1;
  for (std::int64_t d : a.shape) {
    check(d >= 0);
    n *= d;
  }
  check(a.kind == 'f' ? a.f32.size() == static_cast<std::size_t>(n)
                      : a.kind == 'i' && a.i64.size() == static_cast<std::size_t>(n));
  // Round trip through the writer's header.
  const std::string header = io::npy_header(a.kind == 'f' ? "<f4" : "<i8", a.shape);
  check(header.size() % 64 == 0);
  std::string again = header;
  if (a.kind == 'f')
    again.append(reinterpret_cast<const char*>(a.f32.data()), a.f32.size() * sizeof(float));
  else
    again.append(reinterpret_cast<const char*>(a.i64.data()), a.i64.size() * sizeof(std::int64_t));
  const io::NpyArray b = io::parse_npy(again, "again.npy");
  check(b.kind == a.kind && b.shape == a.shape && b.i64 == a.i64);
  check(b.f32.size() == a.f32.size());
  if (!a.f32.empty())  // bitwise: NaN payloads must survive too
    check(std::memcmp(b.f32.data(), a.f32.data(), a.f32.size() * sizeof(float)) == 0);
  return 0;
}
