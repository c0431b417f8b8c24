// polyattn/core/error.hpp — the one exception type of the library.
//
// polyattn::Error derives from std::invalid_argument. Its message always names the offending
// argument and, where shapes are involved, the shapes that were seen, e.g.
//   polyattn: argument 'k': expected shape [2,64,4,128], got [2,63,4,128]
// Operators validate every argument before writing to any output, so a thrown Error leaves
// the caller's output buffers untouched.
#pragma once

#include <cstdint>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace polyattn {

class Error : public std::invalid_argument {
 public:
  Error(std::string_view argument, std::string_view message)
      : std::invalid_argument(format(argument, message)), argument_(argument) {}

  // Name of the argument the error is about ("q", "cu_seqlens", ...).
  const std::string& argument() const noexcept { return argument_; }

 private:
  static std::string format(std::string_view argument, std::string_view message) {
    std::string s = "polyattn: argument '";
    s.append(argument);
    s.append("': ");
    s.append(message);
    return s;
  }
  std::string argument_;
};

// "[2,63,4,128]" for a shape; used in every shape-related message.
inline std::string shape_string(std::span<const std::int64_t> shape) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? "," : "") << shape[i];
  os << ']';
  return os.str();
}

}  // namespace polyattn
