// tests/tools/test_npy.cpp — polyattn/io/npy.hpp: round trips, the exact bytes of a known file,
// header variants NumPy may write, and rejection (NpyError) of every malformed file.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "polyattn/io/npy.hpp"
#include "tools/tool_test_util.hpp"

namespace {

using polyattn::io::NpyArray;
using polyattn::io::NpyError;
using polyattn::io::read_npy;
using polyattn::io::write_npy;
using polyattn::test::read_bytes;
using polyattn::test::TempDir;
using polyattn::test::write_bytes;

// Raw .npy bytes: magic, version, header length, `dict` padded to 64 with '\n', then `data`.
std::string make_npy(const std::string& dict, const std::string& data, int major = 1,
                     bool pad = true) {
  const std::size_t prefix = major == 1 ? 10 : 12;
  std::string h = dict;
  if (pad) {
    const std::size_t total = (prefix + h.size() + 1 + 63) / 64 * 64;
    h.append(total - prefix - h.size() - 1, ' ');
  }
  h += '\n';
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(major);
  out += '\0';
  const auto n = static_cast<std::uint32_t>(h.size());
  out += static_cast<char>(n & 0xff);
  out += static_cast<char>((n >> 8) & 0xff);
  if (major != 1) {
    out += static_cast<char>((n >> 16) & 0xff);
    out += static_cast<char>((n >> 24) & 0xff);
  }
  return out + h + data;
}

std::string f32_bytes(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  if (!v.empty()) std::memcpy(s.data(), v.data(), s.size());  // the test host is little-endian
  return s;
}

std::string dict_f4(const std::string& shape) {
  return "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
}

class Npy : public ::testing::Test {
 protected:
  TempDir dir{"polyattn-npy"};
  std::filesystem::path file(const std::string& name) { return dir / name; }

  // Writes `bytes` and expects read_npy to throw NpyError whose message names the file and
  // contains `fragment`.
  void expect_rejected(const std::string& name, const std::string& bytes,
                       const std::string& fragment) {
    const auto p = file(name);
    write_bytes(p, bytes);
    try {
      read_npy(p);
      ADD_FAILURE() << name << ": accepted a malformed file";
    } catch (const NpyError& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.rfind(p.string() + ": ", 0), 0u) << what;
      EXPECT_NE(what.find(fragment), std::string::npos) << name << ": " << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
  }
};

TEST_F(Npy, ExactBytesOfKnownFile) {
  const std::vector<float> x{1.0f, -2.0f, 0.5f, 3.0f, 0.0f, 1e-3f};
  write_npy(file("a.npy"), x.data(), {2, 3});
  // Header written by hand: 10 bytes of prefix + 118 bytes of dict, spaces and '\n' = 128.
  std::string expected("\x93NUMPY\x01\x00\x76\x00", 10);
  expected += "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  expected += std::string(58, ' ');
  expected += "\n";
  const unsigned char data[] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0,
                                0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x40, 0x40,
                                0x00, 0x00, 0x00, 0x00, 0x6f, 0x12, 0x83, 0x3a};
  expected.append(reinterpret_cast<const char*>(data), sizeof data);
  EXPECT_EQ(read_bytes(file("a.npy")), expected);
}

TEST_F(Npy, HeaderLiteralsAndAlignment) {
  const std::vector<std::int64_t> s0{}, s1{7}, s4{2, 3, 4, 5};
  EXPECT_NE(polyattn::io::npy_header("<f4", s0).find("'shape': (), }"), std::string::npos);
  EXPECT_NE(polyattn::io::npy_header("<f4", s1).find("'shape': (7,), }"), std::string::npos);
  EXPECT_NE(polyattn::io::npy_header("<i8", s4).find("'descr': '<i8'"), std::string::npos);
  for (std::size_t rank = 0; rank < 40; ++rank) {
    const std::vector<std::int64_t> shape(rank, 123456789);
    const std::string h = polyattn::io::npy_header("<f4", shape);
    EXPECT_EQ(h.size() % 64, 0u) << "rank " << rank;
    EXPECT_EQ(h.back(), '\n');
    const std::size_t len =
        static_cast<unsigned char>(h[8]) | (static_cast<unsigned char>(h[9]) << 8);
    EXPECT_EQ(len + 10, h.size());
  }
}

TEST_F(Npy, RoundTripFloatShapes) {
  const std::vector<std::vector<std::int64_t>> shapes{{},        {5}, {2, 3, 4, 5},
                                                      {3, 0, 2}, {0}, {1, 1}};
  int i = 0;
  for (const auto& shape : shapes) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<float> x(static_cast<std::size_t>(n));
    for (std::size_t j = 0; j < x.size(); ++j) x[j] = 0.25f * static_cast<float>(j) - 3.0f;
    const auto p = file("rt" + std::to_string(i++) + ".npy");
    write_npy(p, x.data(), std::span<const std::int64_t>(shape));
    const std::string bytes = read_bytes(p);
    ASSERT_GE(bytes.size(), 10u);
    EXPECT_EQ((bytes.size() - x.size() * 4) % 64, 0u);
    const NpyArray a = read_npy(p);
    EXPECT_EQ(a.kind, 'f');
    EXPECT_EQ(a.shape, shape);
    EXPECT_EQ(a.f32, x);
    EXPECT_TRUE(a.i64.empty());
    EXPECT_EQ(a.numel(), n);
  }
}

TEST_F(Npy, RoundTripInt64AndSpecialFloats) {
  const std::vector<std::int64_t> cu{0, 3, 7, 1LL << 40, -5};
  write_npy(file("cu.npy"), cu.data(), {5});
  const NpyArray a = read_npy(file("cu.npy"));
  EXPECT_EQ(a.kind, 'i');
  EXPECT_EQ(a.shape, std::vector<std::int64_t>{5});
  EXPECT_EQ(a.i64, cu);
  EXPECT_EQ(a.dtype_name(), "int64 ('<i8')");

  const std::vector<float> x{INFINITY, -INFINITY, -0.0f, 1e-45f, 3.4e38f};
  write_npy(file("x.npy"), x.data(), {5});
  const NpyArray b = read_npy(file("x.npy"));
  ASSERT_EQ(b.f32.size(), x.size());
  EXPECT_EQ(std::memcmp(b.f32.data(), x.data(), 20), 0);
}

TEST_F(Npy, ReadsHandWrittenInt64File) {
  std::string data;
  for (std::int64_t v : {0LL, 4LL, 9LL}) data.append(reinterpret_cast<const char*>(&v), 8);
  write_bytes(file("cu.npy"),
              make_npy("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", data));
  const NpyArray a = read_npy(file("cu.npy"));
  EXPECT_EQ(a.kind, 'i');
  EXPECT_EQ(a.i64, (std::vector<std::int64_t>{0, 4, 9}));
}

TEST_F(Npy, AcceptsHeaderVariants) {
  const std::string data = f32_bytes({1, 2, 3, 4, 5, 6});
  const std::vector<std::string> dicts{
      "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}",  // key order, no comma
      "{ \"descr\" : \"<f4\" ,\n 'fortran_order':False,'shape':( 2 ,3 , ) , }",  // whitespace,
                                                                                 // quotes
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }",           // Python 2 longs
  };
  int i = 0;
  for (const auto& d : dicts) {
    const auto p = file("v" + std::to_string(i++) + ".npy");
    write_bytes(p, make_npy(d, data));
    const NpyArray a = read_npy(p);
    EXPECT_EQ(a.shape, (std::vector<std::int64_t>{2, 3})) << d;
    EXPECT_EQ(a.f32, (std::vector<float>{1, 2, 3, 4, 5, 6})) << d;
  }
  // Version 2.0 (uint32 header length) and an unpadded header (old NumPy used 16-byte padding).
  write_bytes(file("v2.npy"), make_npy(dict_f4("(2, 3)"), data, 2));
  EXPECT_EQ(read_npy(file("v2.npy")).shape, (std::vector<std::int64_t>{2, 3}));
  write_bytes(file("nopad.npy"), make_npy(dict_f4("(2, 3)"), data, 1, false));
  EXPECT_EQ(read_npy(file("nopad.npy")).f32.size(), 6u);
}

TEST_F(Npy, RejectsMalformedFiles) {
  const std::string six = f32_bytes({1, 2, 3, 4, 5, 6});
  const std::string good = make_npy(dict_f4("(2, 3)"), six);

  expect_rejected("empty.npy", "", "bad magic");
  expect_rejected("magic.npy", "\x93NUMPX" + good.substr(6), "bad magic");
  expect_rejected("text.npy", "hello world, this is not numpy", "bad magic");
  {
    std::string v = good;
    v[6] = 3;
    expect_rejected("v3.npy", v, "unsupported .npy version 3.0");
    v[6] = 1;
    v[7] = 1;
    expect_rejected("v11.npy", v, "unsupported .npy version 1.1");
  }
  expect_rejected("short_prefix.npy", good.substr(0, 9), "truncated header");
  expect_rejected("short_header.npy", good.substr(0, 40), "truncated header");

  // Garbage and incomplete headers.
  expect_rejected("garbage.npy", make_npy("this is not a dict", six), "malformed header");
  expect_rejected("unclosed.npy", make_npy("{'descr': '<f4', 'fortran_order': False", six),
                  "header");
  expect_rejected("nokey.npy", make_npy("{'descr': '<f4', 'shape': (2, 3)}", six),
                  "no 'fortran_order' key");
  expect_rejected(
      "extra.npy",
      make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", six),
      "unexpected key 'x'");
  expect_rejected(
      "dup.npy",
      make_npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", six),
      "duplicate key 'descr'");
  expect_rejected("trail.npy", make_npy(dict_f4("(2, 3)") + " junk", six), "after the header dict");
  expect_rejected(
      "nonascii.npy",
      make_npy("{'descr': '<f4\xc3\xa9', 'fortran_order': False, 'shape': (2, 3)}", six),
      "non-ASCII");
  expect_rejected("order.npy",
                  make_npy("{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3)}", six),
                  "True or False");

  // Dtypes other than '<f4' / '<i8', Fortran order.
  expect_rejected("f8.npy",
                  make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", six),
                  "unsupported dtype '<f8'");
  expect_rejected("be.npy",
                  make_npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", six),
                  "big-endian");
  expect_rejected("i4.npy",
                  make_npy("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", six),
                  "unsupported dtype '<i4'");
  expect_rejected("u1.npy",
                  make_npy("{'descr': '|u1', 'fortran_order': False, 'shape': (24,), }", six),
                  "unsupported dtype '|u1'");
  expect_rejected("fortran.npy",
                  make_npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", six),
                  "fortran_order True");

  // Bad shapes.
  expect_rejected("neg.npy", make_npy(dict_f4("(-2, 3)"), six), "negative");
  expect_rejected("frac.npy", make_npy(dict_f4("(2.5, 3)"), six), "non-negative integers");
  expect_rejected("exp.npy", make_npy(dict_f4("(2e0, 3)"), six), "non-negative integers");
  expect_rejected("str.npy", make_npy(dict_f4("('2', 3)"), six), "non-negative integers");
  expect_rejected("paren.npy", make_npy(dict_f4("(6)"), six), "(n,)");
  expect_rejected("list.npy", make_npy(dict_f4("[2, 3]"), six), "expected '('");
  expect_rejected("big.npy", make_npy(dict_f4("(99999999999999999999,)"), six), "64 bits");
  expect_rejected("overflow.npy", make_npy(dict_f4("(4294967296, 4294967296)"), six), "too large");
  expect_rejected("overflow_bytes.npy", make_npy(dict_f4("(2305843009213693952,)"), six),
                  "too large");

  // Data size must match the shape exactly.
  expect_rejected("trunc.npy", good.substr(0, good.size() - 1), "truncated data");
  expect_rejected("nodata.npy", make_npy(dict_f4("(2, 3)"), ""), "truncated data");
  expect_rejected("trailing.npy", good + "x", "trailing bytes");
  expect_rejected(
      "i8short.npy",
      make_npy("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", six + "abc"),
      "needs 24 bytes, file has 27");
}

// Every truncation and many single-byte corruptions of a valid file either decode to an array
// consistent with its shape or throw NpyError (never crash; run under ASan in CI).
TEST(NpyParse, CorruptedBytesDecodeOrThrow) {
  const std::string good = make_npy(dict_f4("(2, 3)"), f32_bytes({1, 2, 3, 4, 5, 6}));
  auto probe = [](const std::string& bytes) {
    try {
      const NpyArray a = polyattn::io::parse_npy(bytes, "mem.npy");
      EXPECT_EQ(static_cast<std::int64_t>(a.f32.size() + a.i64.size()), a.numel());
    } catch (const NpyError&) {
    }
  };
  for (std::size_t n = 0; n < good.size(); ++n) {
    EXPECT_THROW(polyattn::io::parse_npy(good.substr(0, n), "mem.npy"), NpyError) << n;
  }
  const char subs[] = {'\0', ' ', ',', '(', ')',  '{',    '}',
                       '\'', '-', '9', 'L', '\n', '\x80', '\xff'};
  for (std::size_t i = 0; i < good.size(); ++i)
    for (char c : subs) {
      std::string b = good;
      b[i] = c;
      probe(b);
    }
}

TEST_F(Npy, MissingFileAndDirectory) {
  EXPECT_THROW(read_npy(file("does_not_exist.npy")), NpyError);
  EXPECT_THROW(read_npy(dir.path()), NpyError);
  try {
    read_npy(file("nope.npy"));
  } catch (const NpyError& e) {
    EXPECT_EQ(e.file(), file("nope.npy").string());
    EXPECT_NE(std::string(e.what()).find("no such file"), std::string::npos);
  }
}

TEST_F(Npy, WriteErrors) {
  const float x[2] = {1, 2};
  // Parent "directory" is a regular file: cannot open for writing.
  write_bytes(file("plain"), "x");
  EXPECT_THROW(write_npy(file("plain") / "a.npy", x, {2}), NpyError);
  EXPECT_THROW(write_npy(file("neg.npy"), x, {-1}), NpyError);
  EXPECT_THROW(write_npy(file("null.npy"), static_cast<const float*>(nullptr), {2}), NpyError);
  EXPECT_NO_THROW(write_npy(file("empty.npy"), static_cast<const float*>(nullptr), {0, 4}));
  EXPECT_EQ(read_npy(file("empty.npy")).shape, (std::vector<std::int64_t>{0, 4}));
}

}  // namespace
