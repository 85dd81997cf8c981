#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#ifdef __F16C__
#include <immintrin.h>
#endif

#include "diffusion/core/random.hpp"
#include "diffusion/io/safetensors.hpp"
#include "io/io_test_util.hpp"

using diffusion::Error;
using diffusion::Index;
using diffusion::Shape;
using diffusion::Tensor;
using namespace diffusion::io;

namespace {

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Same value, or both NaN (NaN payloads are compared separately where they matter).
bool same_float(float a, float b) { return (std::isnan(a) && std::isnan(b)) || bits_of(a) == bits_of(b); }

// A safetensors file from a header string and a data section, with the length prefix computed (or forced).
std::vector<std::uint8_t> make_file(const std::string& header, std::size_t data_bytes = 0,
                                    std::uint64_t forced_length = std::numeric_limits<std::uint64_t>::max()) {
  const std::uint64_t n = forced_length != std::numeric_limits<std::uint64_t>::max() ? forced_length : header.size();
  // Sized up front (vector::insert here trips a GCC 12 -Warray-bounds false positive).
  std::vector<std::uint8_t> out(8 + header.size() + data_bytes);
  std::memcpy(out.data(), &n, 8);
  if (!header.empty()) std::memcpy(out.data() + 8, header.data(), header.size());
  for (std::size_t i = 0; i < data_bytes; ++i) out[8 + header.size() + i] = static_cast<std::uint8_t>(i * 7 + 1);
  return out;
}

}  // namespace

TEST_CASE("F16 and BF16 known bit patterns decode and encode exactly") {
  struct Case {
    std::uint16_t bits;
    float value;
  };
  const Case f16[] = {
      {0x0000, 0.0f},          {0x8000, -0.0f},           {0x3c00, 1.0f},          {0xc000, -2.0f},
      {0x3555, 0.333251953125f}, {0x7bff, 65504.0f},      {0x0400, 6.103515625e-05f},  // smallest normal 2^-14
      {0x0001, 5.9604644775390625e-08f},                                            // smallest subnormal 2^-24
      {0x03ff, 6.097555160522461e-05f},                                             // largest subnormal
      {0x8001, -5.9604644775390625e-08f}, {0x0200, 3.0517578125e-05f},              // 2^-15
      {0x7c00, std::numeric_limits<float>::infinity()},   {0xfc00, -std::numeric_limits<float>::infinity()},
  };
  for (const Case& c : f16) {
    CAPTURE(c.bits, c.value);
    REQUIRE(bits_of(f16_bits_to_float(c.bits)) == bits_of(c.value));
    REQUIRE(float_to_f16_bits(c.value) == c.bits);
  }
  // NaN: sign and payload kept through decoding, quiet on encoding.
  REQUIRE(bits_of(f16_bits_to_float(0x7e00)) == 0x7fc00000u);
  REQUIRE(bits_of(f16_bits_to_float(0xfd01)) == (0xff800000u | (0x101u << 13)));
  REQUIRE(float_to_f16_bits(std::numeric_limits<float>::quiet_NaN()) == 0x7e00);
  REQUIRE((float_to_f16_bits(-std::numeric_limits<float>::quiet_NaN()) & 0xfe00u) == 0xfe00u);
  // Rounding: ties to even, overflow threshold 65520, underflow threshold 2^-25.
  REQUIRE(float_to_f16_bits(1.00048828125f) == 0x3c00);     // 1 + 2^-11: tie, to even (down)
  REQUIRE(float_to_f16_bits(1.00146484375f) == 0x3c02);     // 1 + 3*2^-11: tie, to even (up)
  REQUIRE(float_to_f16_bits(65519.996f) == 0x7bff);
  REQUIRE(float_to_f16_bits(65520.0f) == 0x7c00);
  REQUIRE(float_to_f16_bits(2.98023223876953125e-08f) == 0x0000);  // 2^-25: tie, to even zero
  REQUIRE(float_to_f16_bits(2.9802326e-08f) == 0x0001);            // just above 2^-25
  REQUIRE(float_to_f16_bits(8.940696716308594e-08f) == 0x0002);    // 1.5 * 2^-24: tie, to even (up)
  REQUIRE(float_to_f16_bits(6.100535e-05f) == 0x03ff);
  REQUIRE(float_to_f16_bits(6.1035156e-05f - 1e-12f) == 0x0400);   // rounds up into the smallest normal

  const Case bf16[] = {
      {0x0000, 0.0f},    {0x8000, -0.0f},          {0x3f80, 1.0f},   {0xc040, -3.0f}, {0x3eab, 0.333984375f},
      {0x0001, 9.183549615799121e-41f},  // smallest bf16 subnormal
      {0x7f7f, 3.3895313892515355e+38f}, {0x7f80, std::numeric_limits<float>::infinity()},
  };
  for (const Case& c : bf16) {
    CAPTURE(c.bits, c.value);
    REQUIRE(bits_of(bf16_bits_to_float(c.bits)) == bits_of(c.value));
    REQUIRE(float_to_bf16_bits(c.value) == c.bits);
  }
  REQUIRE(float_to_bf16_bits(1.00390625f) == 0x3f80);  // 1 + 2^-8: tie, to even (down)
  REQUIRE(float_to_bf16_bits(1.01171875f) == 0x3f82);  // 1 + 3*2^-8: tie, to even (up)
  REQUIRE(float_to_bf16_bits(3.4e38f) == 0x7f80);      // above the largest bf16 + half ulp: infinity
  REQUIRE(float_to_bf16_bits(std::numeric_limits<float>::quiet_NaN()) == 0x7fc0);
  REQUIRE(float_to_bf16_bits(bf16_bits_to_float(0x7f81)) == 0x7fc1);  // signalling NaN stays NaN (quieted)
}

#ifdef __F16C__
TEST_CASE("F16 conversions agree with the F16C hardware instructions") {
  // Decoding: all 65536 patterns.
  std::uint32_t decode_mismatches = 0, first_bad = 0;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float ours = f16_bits_to_float(static_cast<std::uint16_t>(h));
    const float hw = _cvtsh_ss(static_cast<unsigned short>(h));
    if (bits_of(ours) != bits_of(hw) && !(std::isnan(ours) && std::isnan(hw))) {
      if (decode_mismatches++ == 0) first_bad = h;
    }
  }
  CAPTURE(first_bad);
  REQUIRE(decode_mismatches == 0);
  // Encoding: every float whose low 9 mantissa bits are one of a few patterns (ties, just above/below) over
  // all exponents and signs, i.e. 2^23 * 6 inputs covering every rounding regime; NaNs compared as NaN.
  std::uint64_t encode_mismatches = 0;
  std::uint32_t first_input = 0;
  const std::uint32_t lows[] = {0x000, 0x001, 0x0ff, 0x100, 0x101, 0x1ff};
  for (std::uint32_t hi = 0; hi < (1u << 23); ++hi) {
    for (std::uint32_t low : lows) {
      const std::uint32_t u = (hi << 9) | low;
      float f;
      std::memcpy(&f, &u, 4);
      const std::uint16_t ours = float_to_f16_bits(f);
      const std::uint16_t hw = static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
      const bool both_nan = std::isnan(f) && (ours & 0x7c00u) == 0x7c00u && (ours & 0x3ffu) != 0;
      if (ours != hw && !both_nan) {
        if (encode_mismatches++ == 0) first_input = u;
      }
    }
  }
  CAPTURE(first_input);
  REQUIRE(encode_mismatches == 0);
}
#endif

TEST_CASE("safetensors round trip of every dtype") {
  const std::string dir = io_test::scratch_dir("safetensors_roundtrip");
  const std::string path = dir + "/all.safetensors";
  diffusion::Rng rng(42);

  const auto f32 = Tensor<float>::normal(Shape{2, 3, 5, 7}, rng);  // (N, C, H, W), odd sizes: later ones unaligned
  const auto f64 = Tensor<double>::normal(Shape{3, 1}, rng);
  std::vector<std::int64_t> i64 = {std::numeric_limits<std::int64_t>::min(), -1, 0, 1,
                                   std::numeric_limits<std::int64_t>::max()};
  std::vector<std::int32_t> i32 = {std::numeric_limits<std::int32_t>::min(), -7, 123456789};
  std::vector<std::int16_t> i16 = {-32768, 5, 32767};
  std::vector<std::int8_t> i8 = {-128, 0, 127};
  std::vector<std::uint8_t> u8 = {0, 1, 200, 255};
  bool flags[3] = {true, false, true};
  const std::vector<float> halves = {1.0f, -2.5f, 49152.0f, 5.9604644775390625e-08f, -0.0f,
                                     std::numeric_limits<float>::infinity()};
  std::vector<std::uint16_t> f16_bits, bf16_bits;
  for (float h : halves) {
    f16_bits.push_back(float_to_f16_bits(h));
    bf16_bits.push_back(float_to_bf16_bits(h));
  }

  SafetensorsWriter w;
  w.add("f32", f32);
  w.add("f64", f64);
  w.add("i64", Shape{5}, i64.data());
  w.add("i32", Shape{3}, i32.data());
  w.add("i16", Shape{1, 3}, i16.data());
  w.add("i8", Shape{3}, i8.data());
  w.add("u8", Shape{2, 2}, u8.data());
  w.add("bool", Shape{3}, flags);
  w.add_raw("f16", DType::F16, {2, 3}, f16_bits.data(), f16_bits.size() * 2);
  w.add_raw("bf16", DType::BF16, {6}, bf16_bits.data(), bf16_bits.size() * 2);
  w.add_raw("rank5", DType::F32, {1, 1, 1, 1, 1}, f32.data(), 4);
  w.add("empty", Shape{0, 4}, static_cast<const float*>(nullptr));
  w.add("scalar", Shape{}, f64.data());
  w.add_metadata("epoch", "12");
  w.add_metadata("config", "{\"dim\": 28}");
  w.write(path);
  REQUIRE(io_test::folder_entries(dir) == std::vector<std::string>{"all.safetensors"});
  REQUIRE(io_test::slurp(path) == w.serialize());

  SafetensorsReader r(path);
  REQUIRE(r.path() == path);
  REQUIRE(r.names() == std::vector<std::string>{"bf16", "bool", "empty", "f16", "f32", "f64", "i16", "i32", "i64",
                                                 "i8", "rank5", "scalar", "u8"});
  REQUIRE(r.metadata() == std::map<std::string, std::string>{{"config", "{\"dim\": 28}"}, {"epoch", "12"}});

  // Data section 8-byte aligned, tensors contiguous in name order.
  const auto bytes = io_test::slurp(path);
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  REQUIRE((8 + header_len) % 8 == 0);
  std::size_t expect_begin = 0;
  for (const auto& name : r.names()) {
    CAPTURE(name);
    REQUIRE(r.info(name).begin == expect_begin);
    expect_begin = r.info(name).end;
  }
  REQUIRE(8 + header_len + expect_begin == bytes.size());

  const Tensor<float> f32_back = r.read<float>("f32");
  REQUIRE(f32_back.shape() == f32.shape());
  REQUIRE(std::memcmp(f32_back.data(), f32.data(), sizeof(float) * static_cast<std::size_t>(f32.numel())) == 0);
  REQUIRE(r.info("f32").dtype == DType::F32);
  const Tensor<double> f64_back = r.read<double>("f64");
  REQUIRE(std::memcmp(f64_back.data(), f64.data(), sizeof(double) * 3) == 0);
  REQUIRE(r.info("f64").dtype == DType::F64);

  const auto i64_back = r.read<std::int64_t>("i64");
  REQUIRE(std::vector<std::int64_t>(i64_back.begin(), i64_back.end()) == i64);
  const auto i32_back = r.read<std::int32_t>("i32");
  REQUIRE(std::vector<std::int32_t>(i32_back.begin(), i32_back.end()) == i32);
  const auto i16_back = r.read<std::int16_t>("i16");
  REQUIRE(i16_back.shape() == (Shape{1, 3}));
  REQUIRE(std::vector<std::int16_t>(i16_back.begin(), i16_back.end()) == i16);
  const auto i8_back = r.read<std::int8_t>("i8");
  REQUIRE(std::vector<std::int8_t>(i8_back.begin(), i8_back.end()) == i8);
  const auto u8_back = r.read<std::uint8_t>("u8");
  REQUIRE(std::vector<std::uint8_t>(u8_back.begin(), u8_back.end()) == u8);
  const auto bool_back = r.read<float>("bool");
  REQUIRE(std::vector<float>(bool_back.begin(), bool_back.end()) == std::vector<float>{1, 0, 1});
  REQUIRE(r.info("bool").dtype == DType::BOOL);

  // Integers into floating point, and I64 extremes into double (static_cast rounding).
  const auto i32_as_double = r.read<double>("i32");
  for (int i = 0; i < 3; ++i) REQUIRE(i32_as_double[i] == static_cast<double>(i32[static_cast<std::size_t>(i)]));
  const auto i64_as_float = r.read<float>("i64");
  REQUIRE(i64_as_float[0] == -9.223372036854775808e18f);

  // F16/BF16 into float and double: exact.
  for (const char* name : {"f16", "bf16"}) {
    CAPTURE(name);
    const auto as_float = r.read<float>(name);
    const auto as_double = r.read<double>(name);
    REQUIRE(as_float.numel() == 6);
    for (Index i = 0; i < 6; ++i) {
      CAPTURE(i);
      REQUIRE(bits_of(as_float[i]) == bits_of(halves[static_cast<std::size_t>(i)]));
      REQUIRE(as_double[i] == static_cast<double>(halves[static_cast<std::size_t>(i)]));
    }
  }
  REQUIRE(r.info("f16").dtype == DType::F16);
  REQUIRE(r.info("bf16").dtype == DType::BF16);

  // Rank 5 is listed but not a Shape; empty and scalar tensors work.
  REQUIRE(r.info("rank5").shape == std::vector<std::int64_t>{1, 1, 1, 1, 1});
  REQUIRE_THROWS_WITH(r.shape("rank5"), Catch::Contains(path) && Catch::Contains("rank5") && Catch::Contains("rank 5"));
  REQUIRE(r.read<float>("empty").shape() == (Shape{0, 4}));
  REQUIRE(r.read<double>("scalar").shape() == Shape{});
  REQUIRE(r.read<double>("scalar")[0] == f64[0]);

  // read_into checks the shape, and the error names file, tensor and both shapes.
  std::vector<float> into(210);
  r.read_into("f32", Shape{2, 3, 5, 7}, into.data());
  REQUIRE(std::memcmp(into.data(), f32.data(), 210 * sizeof(float)) == 0);
  REQUIRE_THROWS_WITH(r.read_into("f32", Shape{2, 3, 7, 5}, into.data()),
                      Catch::Contains(path) && Catch::Contains("'f32'") && Catch::Contains("(2, 3, 5, 7)") &&
                          Catch::Contains("(2, 3, 7, 5)"));
  REQUIRE_THROWS_WITH(r.info("missing"), Catch::Contains(path) && Catch::Contains("'missing'"));
  REQUIRE(r.contains("f32"));
  REQUIRE_FALSE(r.contains("missing"));

  // Conversions that would lose information are refused.
  REQUIRE_THROWS_WITH(r.read<std::int32_t>("f32"), Catch::Contains(path) && Catch::Contains("F32"));
  REQUIRE_THROWS_WITH(r.read<std::uint8_t>("i16"), Catch::Contains(path) && Catch::Contains("-32768"));
  REQUIRE_THROWS_WITH(r.read<std::int8_t>("u8"), Catch::Contains(path) && Catch::Contains("200"));
  REQUIRE(r.read<std::int64_t>("u8")[3] == 255);
}

TEST_CASE("SafetensorsWriter rejects bad input and never leaves a half-written file") {
  SafetensorsWriter w;
  const float x[2] = {1, 2};
  w.add("a", Shape{2}, x);
  REQUIRE_THROWS_WITH(w.add("a", Shape{2}, x), Catch::Contains("'a'") && Catch::Contains("twice"));
  REQUIRE_THROWS_WITH(w.add("__metadata__", Shape{2}, x), Catch::Contains("reserved"));
  REQUIRE_THROWS_WITH(w.add_raw("b", DType::F16, {3}, x, 8), Catch::Contains("'b'"));
  REQUIRE_THROWS_WITH(w.add_raw("c", DType::F32, {-1}, x, 0), Catch::Contains("negative"));

  const std::string dir = io_test::scratch_dir("safetensors_writer");
  const std::string path = dir + "/m.safetensors";
  w.write(path);
  const auto good = io_test::slurp(path);
  SafetensorsWriter bad;
  bad.add(std::string("bad\xff", 4), Shape{2}, x);  // not UTF-8: JSON cannot hold it
  REQUIRE_THROWS_WITH(bad.write(path), Catch::Contains(path) && Catch::Contains("UTF-8"));
  REQUIRE(io_test::slurp(path) == good);
  REQUIRE(io_test::folder_entries(dir) == std::vector<std::string>{"m.safetensors"});
  REQUIRE_THROWS_WITH(w.write(dir + "/missing/m.safetensors"), Catch::Contains(dir + "/missing/m.safetensors"));
}

TEST_CASE("SafetensorsReader rejects each malformed file with a message naming the file and the problem") {
  const std::string dir = io_test::scratch_dir("safetensors_malformed");
  struct Case {
    const char* label;
    std::vector<std::uint8_t> bytes;
    std::vector<std::string> expect;  // substrings of the message besides the path
  };
  const std::string ok_entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  std::string deep;
  for (int i = 0; i < 40; ++i) deep += "[";
  std::vector<Case> cases = {
      {"short_file", {1, 2, 3, 4, 5}, {"5 bytes", "shorter than the 8-byte header length"}},
      {"empty_file", {}, {"0 bytes", "shorter"}},
      {"absurd_header", make_file("{}", 0, 1ull << 40), {"header length 1099511627776", "absurd"}},
      {"header_past_end", make_file("{}", 10, 200), {"header length 200", "beyond the end of the file"}},
      {"not_json", make_file("{\"a\": nope}"), {"not valid JSON"}},
      {"truncated_json", make_file("{\"a\": {\"dtype\""), {"not valid JSON"}},
      {"bad_utf8", make_file("{\"a\xc3\x28\": {}}"), {"not valid JSON"}},
      {"not_object", make_file("[1, 2]"), {"JSON array", "not a JSON object"}},
      {"deep_nesting", make_file("{\"a\":" + deep), {"nests deeper than 32"}},
      {"entry_not_object", make_file(R"({"a": 5})"), {"tensor 'a'", "not an object"}},
      {"no_dtype", make_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8), {"tensor 'a'", "no \"dtype\""}},
      {"no_shape", make_file(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8), {"tensor 'a'", "no \"shape\""}},
      {"no_offsets", make_file(R"({"a":{"dtype":"F32","shape":[2]}})", 8), {"tensor 'a'", "no \"data_offsets\""}},
      {"dtype_not_string", make_file(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8),
       {"dtype is 4", "not a string"}},
      {"unknown_dtype", make_file(R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2),
       {"tensor 'a'", "unknown or unsupported dtype \"F8_E4M3\""}},
      {"shape_not_array", make_file(R"({"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", 8),
       {"shape is \"2\"", "not an array"}},
      {"negative_dim", make_file(R"({"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})", 8),
       {"tensor 'a'", "shape[1] is -1", "not a non-negative integer"}},
      {"fractional_dim", make_file(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}})", 8),
       {"shape[0] is 1.5"}},
      {"huge_dim", make_file(R"({"a":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]}})", 8),
       {"shape[0] = 18446744073709551615", "too large"}},
      {"numel_overflow",
       make_file(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,2],"data_offsets":[0,8]}})", 8),
       {"tensor 'a'", "number of elements", "overflows 64 bits"}},
      {"bytes_overflow", make_file(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8),
       {"tensor 'a'", "byte size", "overflows 64 bits"}},
      {"offsets_not_pair", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8),
       {"data_offsets is a JSON array", "not an array [begin, end]"}},
      {"offsets_negative", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 8),
       {"data_offsets[0] is -8"}},
      {"offsets_reversed", make_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8),
       {"tensor 'a'", "[8, 4]", "begin > end"}},
      {"offsets_past_end", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 8),
       {"tensor 'a'", "[4, 12]", "past the end of the data section (8 bytes)"}},
      {"size_mismatch", make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       {"tensor 'a'", "span 8 bytes", "F32 (3) needs 12"}},
      {"overlap", make_file("{" + ok_entry + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       {"'a' [0, 8]", "'b' [4, 12]", "overlap"}},
      {"duplicate_name", make_file("{" + ok_entry + "," + ok_entry + "}", 8), {"key 'a' twice"}},
      {"duplicate_field", make_file(R"({"a":{"dtype":"F32","dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8),
       {"key 'dtype' twice"}},
      {"metadata_not_object", make_file("{" + ok_entry + R"(,"__metadata__":["x"]})", 8),
       {"__metadata__ is a JSON array"}},
      {"metadata_not_string", make_file("{" + ok_entry + R"(,"__metadata__":{"epoch":12}})", 8),
       {"__metadata__ value for key 'epoch' is 12", "not a string"}},
  };
  for (const Case& c : cases) {
    const std::string path = dir + "/" + c.label + ".safetensors";
    io_test::spit(path, c.bytes);
    INFO("case " << c.label);
    std::string message;
    try {
      SafetensorsReader reader(path);
      FAIL("no error for " << c.label);
    } catch (const Error& e) {
      message = e.what();
    }
    CAPTURE(message);
    REQUIRE(message.find("safetensors file '" + path + "'") != std::string::npos);
    for (const std::string& part : c.expect) {
      CAPTURE(part);
      REQUIRE(message.find(part) != std::string::npos);
    }
  }

  // Accepted on purpose: empty tensors at any offset, unused gaps, unknown extra fields, padding spaces.
  const std::string lenient = dir + "/lenient.safetensors";
  io_test::spit(lenient, make_file(R"({"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                                   R"("a":{"dtype":"U8","shape":[2],"data_offsets":[2,4],"extra":{"k":[1]}}}   )",
                                   8));
  SafetensorsReader r(lenient);
  REQUIRE(r.names() == std::vector<std::string>{"a", "z"});
  REQUIRE(r.read<int>("a")[1] == static_cast<int>(3 * 7 + 1));
  REQUIRE(r.metadata().empty());

  const std::string missing = dir + "/does_not_exist.safetensors";
  REQUIRE_THROWS_WITH(SafetensorsReader(missing), Catch::Contains(missing) && Catch::Contains("does not exist"));
}

TEST_CASE("SafetensorsReader survives random corruption of a valid file") {
  // Every truncation and thousands of random byte edits of a valid file: each must load cleanly or throw
  // diffusion::Error; any other exception, crash or sanitizer report fails the test.
  const std::string dir = io_test::scratch_dir("safetensors_fuzz");
  SafetensorsWriter w;
  const float f[6] = {1, 2, 3, 4, 5, 6};
  const std::int64_t ii[3] = {7, 8, 9};
  w.add("weight", Shape{2, 3}, f);
  w.add("ids", Shape{3}, ii);
  w.add_raw("half", DType::F16, {2}, ii, 4);
  w.add_metadata("k", "v");
  const std::vector<std::uint8_t> valid = w.serialize();
  const std::string path = dir + "/fuzz.safetensors";

  int loaded = 0, rejected = 0;
  auto attempt = [&](const std::vector<std::uint8_t>& bytes) {
    io_test::spit(path, bytes);
    try {
      SafetensorsReader r(path);
      for (const auto& name : r.names()) {
        if (r.info(name).shape.size() <= 4) (void)r.read<double>(name);
      }
      ++loaded;
    } catch (const Error&) {
      ++rejected;
    }
  };
  for (std::size_t n = 0; n < valid.size(); ++n) attempt(std::vector<std::uint8_t>(valid.begin(), valid.begin() + static_cast<std::ptrdiff_t>(n)));
  diffusion::Rng rng(7);
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::uint8_t> bytes = valid;
    const int edits = 1 + static_cast<int>(rng.uniform_int(4));
    for (int e = 0; e < edits; ++e) {
      const auto at = static_cast<std::size_t>(rng.uniform_int(static_cast<std::int64_t>(bytes.size())));
      // Mostly printable JSON-ish characters so that edits reach the validation after parsing.
      const char* alphabet = "0123456789[]{},:\"-eE. FIU8BOL_";
      bytes[at] = rng.uniform_int(3) == 0 ? static_cast<std::uint8_t>(rng.uniform_int(256))
                                          : static_cast<std::uint8_t>(alphabet[rng.uniform_int(31)]);
    }
    attempt(bytes);
  }
  CAPTURE(loaded, rejected);
  REQUIRE(rejected > 0);
  REQUIRE(loaded > 0);  // some edits (inside tensor data) leave a valid file
}

TEST_CASE("a safetensors file written by PyTorch reads back exactly") {
  const std::string path = std::string(DIFFUSION_GOLDEN_DIR) + "/io_python.safetensors";
  SafetensorsReader r(path);
  REQUIRE(r.metadata().at("format") == "pt");
  REQUIRE(r.metadata().at("producer") == "make_io_fixtures.py");
  REQUIRE(r.metadata().at("note") == "\xc3\xbc" "n" "\xc3\xaf" "code \xe2\x9c\x93");  // "ünïcode ✓"

  // Formula tensors (see make_io_fixtures.py).
  const auto f32 = r.read<float>("f32");
  REQUIRE(f32.shape() == (Shape{2, 3, 4, 5}));
  for (Index i = 0; i < 120; ++i) REQUIRE(f32[i] == static_cast<float>(i) / 8.0f - 7.0f);
  const auto f64 = r.read<double>("f64");
  REQUIRE(f64.shape() == (Shape{4, 6}));
  REQUIRE(r.info("f64").dtype == DType::F64);
  for (Index i = 0; i < 24; ++i) REQUIRE(f64[i] == static_cast<double>(i) / 3.0);
  const auto i64 = r.read<std::int64_t>("i64");
  REQUIRE(i64.shape() == (Shape{3, 4}));
  REQUIRE(i64[0] == std::numeric_limits<std::int64_t>::min());
  REQUIRE(i64[11] == std::numeric_limits<std::int64_t>::max());
  for (Index i = 1; i < 11; ++i) REQUIRE(i64[i] == i * 1234567890123 - 5000000000000);

  // PyTorch's F16/BF16 rounding of float32 sources equals ours, bit for bit, and the reader decodes them exactly.
  const auto source = r.read<float>("source");
  const auto f16 = r.read<float>("source_f16");
  const auto bf16 = r.read<double>("source_bf16");
  const auto f16_bits = r.read<std::int32_t>("source_f16_bits");
  const auto bf16_bits = r.read<std::int32_t>("source_bf16_bits");
  REQUIRE(r.info("source_f16").dtype == DType::F16);
  REQUIRE(r.info("source_bf16").dtype == DType::BF16);
  REQUIRE(source.numel() == 2021);
  int f16_mismatch = 0, bf16_mismatch = 0;
  Index first_f16 = -1, first_bf16 = -1;
  for (Index i = 0; i < source.numel(); ++i) {
    const auto torch_f16 = static_cast<std::uint16_t>(f16_bits[i]);
    const auto torch_bf16 = static_cast<std::uint16_t>(bf16_bits[i]);
    const bool nan = std::isnan(source[i]);
    const bool f16_ok = (nan ? (float_to_f16_bits(source[i]) & 0x7fffu) > 0x7c00u
                             : float_to_f16_bits(source[i]) == torch_f16) &&
                        same_float(f16[i], f16_bits_to_float(torch_f16));
    const bool bf16_ok = (nan ? (float_to_bf16_bits(source[i]) & 0x7fffu) > 0x7f80u
                              : float_to_bf16_bits(source[i]) == torch_bf16) &&
                         same_float(static_cast<float>(bf16[i]), bf16_bits_to_float(torch_bf16));
    if (!f16_ok && f16_mismatch++ == 0) first_f16 = i;
    if (!bf16_ok && bf16_mismatch++ == 0) first_bf16 = i;
  }
  CAPTURE(first_f16, first_bf16);
  REQUIRE(f16_mismatch == 0);
  REQUIRE(bf16_mismatch == 0);

  // Decoding of 16-bit patterns: our float equals PyTorch's float for F16 and BF16.
  const auto patterns = r.read<std::int32_t>("patterns");
  const auto p_f16 = r.read<float>("patterns_f16");
  const auto p_f16_torch = r.read<float>("patterns_f16_as_f32");
  const auto p_bf16 = r.read<float>("patterns_bf16");
  const auto p_bf16_torch = r.read<float>("patterns_bf16_as_f32");
  REQUIRE(patterns.numel() == 5843);
  int decode_mismatch = 0;
  Index first_decode = -1;
  for (Index i = 0; i < patterns.numel(); ++i) {
    const auto p = static_cast<std::uint16_t>(patterns[i]);
    const bool ok = same_float(p_f16[i], p_f16_torch[i]) && same_float(f16_bits_to_float(p), p_f16_torch[i]) &&
                    same_float(p_bf16[i], p_bf16_torch[i]) && same_float(bf16_bits_to_float(p), p_bf16_torch[i]);
    if (!ok && decode_mismatch++ == 0) first_decode = i;
  }
  CAPTURE(first_decode);
  REQUIRE(decode_mismatch == 0);
}
