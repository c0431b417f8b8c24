// polyattn/io/npy.hpp — a small reader/writer for NumPy .npy files (our own code, no deps).
//
// Holds: NpyArray (shape + float32 or int64 data), read_npy / parse_npy, write_npy, npy_header
// and the exception type NpyError. Used by the parity tool polyattn-run (docs/conventions.md §11)
// and tests.
//
// Format (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
//   "\x93NUMPY" major minor  header_len  header  data
//   header_len is a little-endian uint16 for version 1.0 and uint32 for version 2.0. The header
//   is an ASCII Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
//   padded with spaces and terminated by '\n' so that magic + len + header is a multiple of 64.
//   Data follows immediately, C order, exactly prod(shape) items.
// Written: version 1.0 (2.0 only if the header cannot fit 65535 bytes), '<f4' or '<i8', C order.
// Read: versions 1.0 and 2.0; dict keys in any order, any whitespace, trailing commas; descr
// '<f4' (float32) or '<i8' (int64) only, fortran_order False only, non-negative integer shape,
// data size exactly prod(shape)·itemsize. Anything else throws NpyError with a one-line message
// that starts with the file name: "<path>: <reason>".
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace polyattn::io {

// Any problem reading or writing a .npy file. what() is one line: "<path>: <reason>".
class NpyError : public std::runtime_error {
 public:
  NpyError(const std::string& file, const std::string& reason)
      : std::runtime_error(file + ": " + reason), file_(file) {}
  const std::string& file() const noexcept { return file_; }

 private:
  std::string file_;
};

// A decoded array. kind is 'f' (float32, data in f32) or 'i' (int64, data in i64).
struct NpyArray {
  std::vector<std::int64_t> shape;
  std::vector<float> f32;
  std::vector<std::int64_t> i64;
  char kind = 'f';

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  std::size_t rank() const { return shape.size(); }
  // "float32 ('<f4')" / "int64 ('<i8')", for messages.
  std::string dtype_name() const { return kind == 'i' ? "int64 ('<i8')" : "float32 ('<f4')"; }
};

namespace detail {

inline constexpr char kMagic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

// Multiplies non-negative a·b; false on overflow of int64.
inline bool mul_ok(std::int64_t a, std::int64_t b, std::int64_t& out) {
  if (a != 0 && b > std::numeric_limits<std::int64_t>::max() / a) return false;
  out = a * b;
  return true;
}

// Printable, single-line excerpt of untrusted header text for error messages.
inline std::string excerpt(std::string_view s, std::size_t max = 60) {
  std::string r;
  for (char c : s.substr(0, max)) {
    const auto u = static_cast<unsigned char>(c);
    r += (u >= 0x20 && u < 0x7f) ? c : '?';
  }
  if (s.size() > max) r += "...";
  return r;
}

template <class T>
T load_le(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) {
    auto* b = reinterpret_cast<unsigned char*>(&v);
    for (std::size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(b[i], b[sizeof(T) - 1 - i]);
  }
  return v;
}

template <class T>
void store_le(char* p, T v) {
  std::memcpy(p, &v, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) {
    auto* b = reinterpret_cast<unsigned char*>(p);
    for (std::size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(b[i], b[sizeof(T) - 1 - i]);
  }
}

// Recursive-descent parser of the header dict (a Python literal, restricted to what .npy uses).
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& file) : s_(text), file_(file) {}

  struct Result {
    std::string descr;
    bool fortran_order = false;
    std::vector<std::int64_t> shape;
  };

  Result parse() {
    Result r;
    bool have_descr = false, have_order = false, have_shape = false;
    ws();
    expect('{');
    ws();
    while (!at('}')) {
      const std::string key = string_literal();
      ws();
      expect(':');
      ws();
      if (key == "descr") {
        if (have_descr) fail("duplicate key 'descr' in header");
        r.descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        if (have_order) fail("duplicate key 'fortran_order' in header");
        r.fortran_order = boolean();
        have_order = true;
      } else if (key == "shape") {
        if (have_shape) fail("duplicate key 'shape' in header");
        r.shape = tuple();
        have_shape = true;
      } else {
        fail("unexpected key '" + excerpt(key) + "' in header");
      }
      ws();
      if (at(',')) {
        ++pos_;
        ws();
      } else if (!at('}')) {
        fail_here("malformed header: expected ',' or '}' in the dict");
      }
    }
    ++pos_;  // '}'
    ws();
    if (pos_ != s_.size()) fail_here("malformed header: unexpected text after the header dict");
    if (!have_descr) fail("header has no 'descr' key");
    if (!have_order) fail("header has no 'fortran_order' key");
    if (!have_shape) fail("header has no 'shape' key");
    return r;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const { throw NpyError(file_, why); }
  [[noreturn]] void fail_here(const std::string& why) const {
    if (pos_ >= s_.size()) fail(why + " (header ends early)");
    std::string_view rest = s_.substr(pos_);
    while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\n')) rest.remove_suffix(1);
    fail(why + " near '" + excerpt(rest, 20) + "'");
  }
  bool at(char c) const { return pos_ < s_.size() && s_[pos_] == c; }
  void ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c) {
    if (!at(c)) fail_here(std::string("malformed header: expected '") + c + "'");
    ++pos_;
  }
  std::string string_literal() {
    if (!at('\'') && !at('"')) fail_here("malformed header: expected a quoted string");
    const char quote = s_[pos_++];
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != quote) {
      if (s_[pos_] == '\\') fail_here("malformed header: escapes are not supported in strings");
      out += s_[pos_++];
    }
    if (pos_ >= s_.size()) fail("malformed header: unterminated string");
    ++pos_;
    return out;
  }
  bool boolean() {
    if (s_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (s_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    fail_here("malformed header: 'fortran_order' must be True or False");
  }
  std::int64_t integer() {
    if (at('-')) fail_here("shape has a negative entry");
    if (pos_ >= s_.size() || s_[pos_] < '0' || s_[pos_] > '9')
      fail_here("shape entries must be non-negative integers");
    std::int64_t v = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      const int digit = s_[pos_++] - '0';
      if (v > (std::numeric_limits<std::int64_t>::max() - digit) / 10)
        fail("shape entry does not fit in 64 bits");
      v = v * 10 + digit;
    }
    if (at('L')) ++pos_;  // Python 2 long literal, written by old NumPy
    if (at('.') || at('e') || at('E') || at('j') || at('_'))
      fail_here("shape entries must be non-negative integers");
    return v;
  }
  std::vector<std::int64_t> tuple() {
    std::vector<std::int64_t> dims;
    expect('(');
    ws();
    if (at(')')) {
      ++pos_;
      return dims;  // 0-d
    }
    for (;;) {
      dims.push_back(integer());
      ws();
      if (at(')')) {
        // "(n)" is just a parenthesised int in Python; NumPy writes "(n,)" for 1-d.
        if (dims.size() == 1) fail_here("malformed shape: a 1-d shape is written '(n,)'");
        ++pos_;
        return dims;
      }
      expect(',');
      ws();
      if (at(')')) {
        ++pos_;
        return dims;
      }
    }
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  const std::string& file_;
};

inline std::string shape_literal(std::span<const std::int64_t> shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  s += ")";
  return s;
}

inline std::int64_t checked_numel(std::span<const std::int64_t> shape, std::int64_t itemsize,
                                  const std::string& file) {
  std::int64_t n = 1;
  for (auto d : shape) {
    if (d < 0) throw NpyError(file, "shape has a negative entry");
    if (!mul_ok(n, d, n)) throw NpyError(file, "shape is too large (element count overflows)");
  }
  std::int64_t bytes = 0;
  if (!mul_ok(n, itemsize, bytes) ||
      static_cast<std::uint64_t>(bytes) > std::numeric_limits<std::size_t>::max())
    throw NpyError(file, "shape is too large (byte count overflows)");
  return n;
}

template <class T>
void write_impl(const std::filesystem::path& path, std::string_view descr, const T* data,
                std::span<const std::int64_t> shape);

}  // namespace detail

// The complete header (magic through the terminating '\n') that write_npy emits for this
// descr ("<f4" or "<i8") and shape. Its size is a multiple of 64.
inline std::string npy_header(std::string_view descr, std::span<const std::int64_t> shape) {
  std::string dict = "{'descr': '" + std::string(descr) +
                     "', 'fortran_order': False, 'shape': " + detail::shape_literal(shape) + ", }";
  const bool v2 = 10 + dict.size() + 1 > 65535;
  const std::size_t prefix = v2 ? 12 : 10;
  std::size_t total = prefix + dict.size() + 1;
  total = (total + 63) / 64 * 64;
  dict.append(total - prefix - dict.size() - 1, ' ');
  dict += '\n';
  std::string out(detail::kMagic, 6);
  out += static_cast<char>(v2 ? 2 : 1);
  out += static_cast<char>(0);
  if (v2) {
    char len[4];
    detail::store_le<std::uint32_t>(len, static_cast<std::uint32_t>(dict.size()));
    out.append(len, 4);
  } else {
    char len[2];
    detail::store_le<std::uint16_t>(len, static_cast<std::uint16_t>(dict.size()));
    out.append(len, 2);
  }
  return out + dict;
}

// Decodes the bytes of a whole .npy file; `file` names it in error messages.
inline NpyArray parse_npy(std::string_view bytes, const std::string& file) {
  if (bytes.size() < 8 || std::memcmp(bytes.data(), detail::kMagic, 6) != 0)
    throw NpyError(file, "not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(bytes[6]);
  const int minor = static_cast<unsigned char>(bytes[7]);
  if ((major != 1 && major != 2) || minor != 0)
    throw NpyError(file, "unsupported .npy version " + std::to_string(major) + "." +
                             std::to_string(minor) + " (1.0 and 2.0 are supported)");
  const std::size_t prefix = major == 1 ? 10 : 12;
  if (bytes.size() < prefix) throw NpyError(file, "truncated header");
  const std::uint64_t hlen = major == 1 ? detail::load_le<std::uint16_t>(bytes.data() + 8)
                                        : detail::load_le<std::uint32_t>(bytes.data() + 8);
  if (hlen > bytes.size() - prefix)
    throw NpyError(
        file, "truncated header (header length " + std::to_string(hlen) + " exceeds the file)");
  const std::string_view header = bytes.substr(prefix, static_cast<std::size_t>(hlen));
  for (char c : header)
    if (static_cast<unsigned char>(c) >= 0x80 || c == '\0')
      throw NpyError(file, "malformed header (non-ASCII byte)");

  const auto h = detail::HeaderParser(header, file).parse();
  NpyArray a;
  std::int64_t itemsize = 0;
  if (h.descr == "<f4") {
    a.kind = 'f';
    itemsize = 4;
  } else if (h.descr == "<i8") {
    a.kind = 'i';
    itemsize = 8;
  } else if (!h.descr.empty() && h.descr[0] == '>') {
    throw NpyError(file, "big-endian dtype '" + detail::excerpt(h.descr) +
                             "' is not supported (use '<f4' float32 or '<i8' int64)");
  } else {
    throw NpyError(file, "unsupported dtype '" + detail::excerpt(h.descr) +
                             "' (only '<f4' float32 and '<i8' int64 are supported)");
  }
  if (h.fortran_order)
    throw NpyError(file, "fortran_order True is not supported (save a C-contiguous array)");

  const std::int64_t n = detail::checked_numel(h.shape, itemsize, file);
  const std::size_t want = static_cast<std::size_t>(n) * static_cast<std::size_t>(itemsize);
  const std::size_t have = bytes.size() - prefix - static_cast<std::size_t>(hlen);
  if (have != want)
    throw NpyError(file, std::string(have < want ? "truncated data" : "trailing bytes after data") +
                             ": shape " + detail::shape_literal(h.shape) + " needs " +
                             std::to_string(want) + " bytes, file has " + std::to_string(have));
  a.shape = h.shape;
  const char* p = bytes.data() + prefix + hlen;
  if (a.kind == 'f') {
    a.f32.resize(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < a.f32.size(); ++i) a.f32[i] = detail::load_le<float>(p + 4 * i);
  } else {
    a.i64.resize(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < a.i64.size(); ++i)
      a.i64[i] = detail::load_le<std::int64_t>(p + 8 * i);
  }
  return a;
}

// Reads a .npy file ('<f4' or '<i8', C order). Throws NpyError naming the file.
inline NpyArray read_npy(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw NpyError(file, std::filesystem::exists(path, ec) ? "not a regular file" : "no such file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw NpyError(file, "cannot open for reading");
  std::string bytes;
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0)
    bytes.append(buf, static_cast<std::size_t>(in.gcount()));
  if (in.bad()) throw NpyError(file, "read error");
  return parse_npy(bytes, file);
}

// Writes `data` (prod(shape) items, C order) as a version 1.0 .npy file. Throws NpyError.
inline void write_npy(const std::filesystem::path& path, const float* data,
                      std::span<const std::int64_t> shape) {
  detail::write_impl(path, "<f4", data, shape);
}
inline void write_npy(const std::filesystem::path& path, const std::int64_t* data,
                      std::span<const std::int64_t> shape) {
  detail::write_impl(path, "<i8", data, shape);
}
// Convenience for literal shapes: write_npy(p, x.data(), {2, 3}).
inline void write_npy(const std::filesystem::path& path, const float* data,
                      std::initializer_list<std::int64_t> shape) {
  write_npy(path, data, std::span<const std::int64_t>(shape.begin(), shape.size()));
}
inline void write_npy(const std::filesystem::path& path, const std::int64_t* data,
                      std::initializer_list<std::int64_t> shape) {
  write_npy(path, data, std::span<const std::int64_t>(shape.begin(), shape.size()));
}
// Writes an NpyArray back with its own kind and shape.
inline void write_npy(const std::filesystem::path& path, const NpyArray& a) {
  if (a.kind == 'i')
    write_npy(path, a.i64.data(), std::span<const std::int64_t>(a.shape));
  else
    write_npy(path, a.f32.data(), std::span<const std::int64_t>(a.shape));
}

template <class T>
void detail::write_impl(const std::filesystem::path& path, std::string_view descr, const T* data,
                        std::span<const std::int64_t> shape) {
  const std::string file = path.string();
  const std::int64_t n = checked_numel(shape, static_cast<std::int64_t>(sizeof(T)), file);
  if (n > 0 && data == nullptr) throw NpyError(file, "data pointer is null");
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw NpyError(file, "cannot open for writing");
  const std::string header = npy_header(descr, shape);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  if constexpr (std::endian::native == std::endian::little) {
    if (n > 0)
      out.write(reinterpret_cast<const char*>(data),
                static_cast<std::streamsize>(static_cast<std::size_t>(n) * sizeof(T)));
  } else {
    char b[sizeof(T)];
    for (std::int64_t i = 0; i < n; ++i) {
      store_le<T>(b, data[i]);
      out.write(b, sizeof(T));
    }
  }
  out.close();
  if (!out) throw NpyError(file, "write error");
}

}  // namespace polyattn::io
