#pragma once
// The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian u64 header length N,
// N bytes of UTF-8 JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}}
// then the raw little-endian tensor bytes; offsets are relative to the first byte after the header.
//
// SafetensorsReader(path), SafetensorsReader::from_bytes(bytes, name)
//   Reads the whole file (or takes its bytes) and validates everything before any tensor is read; every failure
//   is a diffusion::Error whose message starts with "safetensors file '<path>': " and says what is wrong: file
//   shorter than 8 bytes; header length beyond the file or above 100,000,000 bytes (the official implementation's
//   limit); header not valid JSON (nlohmann also rejects ill-formed UTF-8), not an object, or nested deeper than 32
//   levels; duplicate keys in any object; an entry that is not an object, lacks dtype/shape/data_offsets or has
//   them with the wrong JSON types; unknown dtype; shape entries that are negative, not integers, or whose
//   product (times the element size) overflows 64 bits, or whose non-zero entries multiply past 2^63 - 1 (even in
//   an empty tensor: Shape would overflow); data_offsets not [begin <= end] inside the data section; byte size !=
//   numel * element size; two non-empty tensors whose byte ranges overlap; __metadata__ not an object of strings.
//   Unknown extra fields in an entry are ignored, and (unlike the official Rust reader) unused gaps between
//   tensors are accepted. No input makes the reader crash, hang or read out of bounds: the header is bounded,
//   every offset is checked against the buffer before use, data is copied out with memcpy (no aligned loads
//   from the file buffer).
//   read<T> / read_into<T> convert any stored dtype to floating T (F16 and BF16 exactly, integers by
//   static_cast); to integral T only integer/BOOL data converts, and each value must fit T exactly.
//
// SafetensorsWriter
//   Collects copies of tensors and metadata; write(path) emits names in sorted order with the data contiguous
//   (no gaps, as the official reader requires), the header padded with spaces so that the data section starts at
//   an 8-byte aligned offset, through write_file_atomically.
//
// Only little-endian hosts are supported (static_assert below).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/core/enum_names.hpp"
#include "diffusion/core/error.hpp"
#include "diffusion/core/shape.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/io/atomic_file.hpp"
#include "diffusion/io/half.hpp"

namespace diffusion::io {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors.hpp copies little-endian file data straight into memory: little-endian hosts only");

enum class DType { F16, BF16, F32, F64, I8, I16, I32, I64, U8, BOOL };

namespace detail {
inline constexpr diffusion::detail::NameEntry<DType> kDTypeNames[] = {
    {DType::F16, "F16"}, {DType::BF16, "BF16"}, {DType::F32, "F32"}, {DType::F64, "F64"}, {DType::I8, "I8"},
    {DType::I16, "I16"}, {DType::I32, "I32"},   {DType::I64, "I64"}, {DType::U8, "U8"},   {DType::BOOL, "BOOL"}};
}  // namespace detail

inline const char* dtype_name(DType d) { return diffusion::detail::enum_name(detail::kDTypeNames, d); }

// Bytes per element.
inline std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::I8:
    case DType::U8:
    case DType::BOOL: return 1;
    case DType::F16:
    case DType::BF16:
    case DType::I16: return 2;
    case DType::F32:
    case DType::I32: return 4;
    case DType::F64:
    case DType::I64: return 8;
  }
  return 0;
}

// Parses a dtype name ("F32", ...); false when it is not one this library supports.
inline bool parse_dtype(const std::string& name, DType* out) {
  return diffusion::detail::find_enum(detail::kDTypeNames, name, out);
}

// The dtype a C++ scalar is stored as.
template <class T>
struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::F32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::F64; };
template <> struct DTypeOf<std::int8_t> { static constexpr DType value = DType::I8; };
template <> struct DTypeOf<std::int16_t> { static constexpr DType value = DType::I16; };
template <> struct DTypeOf<std::int32_t> { static constexpr DType value = DType::I32; };
template <> struct DTypeOf<std::int64_t> { static constexpr DType value = DType::I64; };
template <> struct DTypeOf<std::uint8_t> { static constexpr DType value = DType::U8; };
template <> struct DTypeOf<bool> { static constexpr DType value = DType::BOOL; };

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::size_t begin, end;  // byte range in the data section (relative to the first byte after the header)
};

namespace detail {

inline constexpr std::uint64_t kMaxSafetensorsHeader = 100000000;  // as in the official implementation
inline constexpr int kMaxJsonDepth = 32;  // a valid header nests 3 deep; the cap bounds work on hostile input

// Builds a Shape of runtime rank (Shape has only an initializer-list constructor).
inline Shape make_shape(const std::vector<std::int64_t>& d) {
  switch (d.size()) {
    case 0: return Shape{};
    case 1: return Shape{d[0]};
    case 2: return Shape{d[0], d[1]};
    case 3: return Shape{d[0], d[1], d[2]};
    case 4: return Shape{d[0], d[1], d[2], d[3]};
    default: throw Error("make_shape: rank " + std::to_string(d.size()) + " exceeds the maximum of 4");
  }
}

inline std::string shape_text(const std::vector<std::int64_t>& d) {
  std::string s = "(";
  for (std::size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + ")";
}

// A short description of a JSON value for error messages: scalars printed, containers by type only.
inline std::string json_brief(const nlohmann::json& j) {
  if (j.is_primitive()) {
    std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (s.size() > 40) s = s.substr(0, 40) + "...";
    return s;
  }
  return std::string("a JSON ") + j.type_name();
}

// True when integer v is exactly representable in integral T (compared in 64-bit to avoid sign-compare traps).
template <class T, class S>
bool integer_fits(S v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v == S{0} || v == S{1};
  } else if constexpr (std::is_signed_v<S>) {
    const auto w = static_cast<std::int64_t>(v);
    if (w < 0) return std::is_signed_v<T> && w >= static_cast<std::int64_t>(std::numeric_limits<T>::lowest());
    return static_cast<std::uint64_t>(w) <= static_cast<std::uint64_t>(std::numeric_limits<T>::max());
  } else {
    return static_cast<std::uint64_t>(v) <= static_cast<std::uint64_t>(std::numeric_limits<T>::max());
  }
}

template <class T, class = void>
struct HasDType : std::false_type {};
template <class T>
struct HasDType<T, std::void_t<decltype(DTypeOf<T>::value)>> : std::true_type {};

}  // namespace detail

class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path) : path_(path) {
    bytes_ = read_file(path);
    parse();
  }
  // Parses a file already in memory (e.g. received over a network, or a fuzzer's input), with the same checks as
  // the path constructor; `name` stands for the path in error messages and path().
  static SafetensorsReader from_bytes(std::vector<std::uint8_t> bytes, std::string name) {
    return SafetensorsReader(std::move(bytes), std::move(name));
  }

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& kv : tensors_) out.push_back(kv.first);
    return out;  // std::map order: sorted
  }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }

  const TensorInfo& info(const std::string& name) const {
    const auto it = tensors_.find(name);
    DIFFUSION_CHECK(it != tensors_.end(), prefix() << "no tensor named '" << name << "' (the file holds "
                                                   << tensors_.size() << " tensors)");
    return it->second;
  }

  Shape shape(const std::string& name) const {
    const TensorInfo& ti = info(name);
    DIFFUSION_CHECK(ti.shape.size() <= static_cast<std::size_t>(Shape::kMaxRank),
                    prefix() << "tensor '" << name << "' has rank " << ti.shape.size() << " "
                             << detail::shape_text(ti.shape) << "; at most " << Shape::kMaxRank << " is supported");
    return detail::make_shape(ti.shape);
  }

  template <class T>
  Tensor<T> read(const std::string& name) const {
    Tensor<T> t;
    t.resize(shape(name));
    convert(info(name), t.data());
    return t;
  }

  template <class T>
  void read_into(const std::string& name, const Shape& expected, T* out) const {
    const Shape stored = shape(name);
    DIFFUSION_CHECK(stored == expected, prefix() << "tensor '" << name << "' has shape " << stored << " but "
                                                 << expected << " was expected");
    convert(info(name), out);
  }

 private:
  SafetensorsReader(std::vector<std::uint8_t> bytes, std::string name) : path_(std::move(name)), bytes_(std::move(bytes)) {
    parse();
  }

  std::string prefix() const { return "safetensors file '" + path_ + "': "; }

  template <class... Args>
  [[noreturn]] void fail(const Args&... parts) const {
    std::ostringstream s;
    s << prefix();
    (s << ... << parts);
    throw Error(s.str());
  }

  void parse() {
    DIFFUSION_CHECK(bytes_.size() >= 8, prefix() << "the file is " << bytes_.size()
                                                 << " bytes, shorter than the 8-byte header length");
    std::uint64_t header_len = 0;
    std::memcpy(&header_len, bytes_.data(), 8);
    DIFFUSION_CHECK(header_len <= detail::kMaxSafetensorsHeader,
                    prefix() << "header length " << header_len << " is absurd (more than "
                             << detail::kMaxSafetensorsHeader << " bytes)");
    DIFFUSION_CHECK(header_len <= bytes_.size() - 8, prefix() << "header length " << header_len
                                                              << " goes beyond the end of the file ("
                                                              << bytes_.size() - 8 << " bytes after the length)");
    data_offset_ = 8 + static_cast<std::size_t>(header_len);
    const std::size_t data_size = bytes_.size() - data_offset_;

    nlohmann::json header = parse_json(bytes_.data() + 8, bytes_.data() + data_offset_);
    if (!header.is_object()) fail("the header is ", detail::json_brief(header), ", not a JSON object");

    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        parse_metadata(it.value());
      } else {
        parse_entry(it.key(), it.value(), data_size);
      }
    }
    check_overlaps();
  }

  nlohmann::json parse_json(const std::uint8_t* first, const std::uint8_t* last) {
    // The callback tracks the keys of each open object (nlohmann silently keeps the last of duplicate keys)
    // and bounds the nesting depth.
    std::vector<std::set<std::string>> open_objects;
    std::string duplicate;
    const auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
      using E = nlohmann::json::parse_event_t;
      if (event == E::object_start || event == E::array_start) {
        if (depth >= detail::kMaxJsonDepth) fail("the header nests deeper than ", detail::kMaxJsonDepth, " levels");
        if (event == E::object_start) open_objects.emplace_back();
      } else if (event == E::object_end) {
        if (!open_objects.empty()) open_objects.pop_back();
      } else if (event == E::key && !open_objects.empty() && parsed.is_string()) {
        if (!open_objects.back().insert(parsed.get<std::string>()).second && duplicate.empty())
          duplicate = parsed.get<std::string>();
      }
      return true;
    };
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(first, last, callback);
    } catch (const nlohmann::json::exception& e) {
      fail("the header is not valid JSON: ", e.what());
    }
    if (!duplicate.empty()) fail("the header has the key '", duplicate, "' twice in one object");
    return header;
  }

  void parse_metadata(const nlohmann::json& m) {
    if (!m.is_object()) fail("__metadata__ is ", detail::json_brief(m), ", not an object of strings");
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (!it.value().is_string())
        fail("__metadata__ value for key '", it.key(), "' is ", detail::json_brief(it.value()), ", not a string");
      metadata_[it.key()] = it.value().get<std::string>();
    }
  }

  // Reads a JSON non-negative integer; `what` names it for the message.
  std::uint64_t unsigned_field(const nlohmann::json& j, const std::string& name, const std::string& what) const {
    if (!j.is_number_unsigned())
      fail("tensor '", name, "': ", what, " is ", detail::json_brief(j), ", not a non-negative integer");
    return j.get<std::uint64_t>();
  }

  void parse_entry(const std::string& name, const nlohmann::json& e, std::size_t data_size) {
    if (!e.is_object()) fail("tensor '", name, "': the entry is ", detail::json_brief(e), ", not an object");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!e.contains(field)) fail("tensor '", name, "': the entry has no \"", field, "\"");

    TensorInfo ti;
    ti.name = name;
    const nlohmann::json& jd = e["dtype"];
    if (!jd.is_string()) fail("tensor '", name, "': dtype is ", detail::json_brief(jd), ", not a string");
    if (!parse_dtype(jd.get<std::string>(), &ti.dtype))
      fail("tensor '", name, "': unknown or unsupported dtype ", detail::json_brief(jd),
           " (supported: F16 BF16 F32 F64 I8 I16 I32 I64 U8 BOOL)");

    const nlohmann::json& js = e["shape"];
    if (!js.is_array()) fail("tensor '", name, "': shape is ", detail::json_brief(js), ", not an array");
    // The product of the non-zero dimensions must fit a signed 64-bit integer even when another dimension is 0:
    // Shape::numel multiplies the dimensions in order, so (2^62, 2^62, 0) would overflow it although the tensor
    // is empty.
    std::uint64_t nonzero_product = 1;
    bool zero = false, overflow = false;
    for (std::size_t i = 0; i < js.size(); ++i) {
      const std::uint64_t d = unsigned_field(js[i], name, "shape[" + std::to_string(i) + "]");
      if (d > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail("tensor '", name, "': shape[", i, "] = ", d, " is too large");
      ti.shape.push_back(static_cast<std::int64_t>(d));
      zero = zero || d == 0;
      if (d != 0 && !overflow)
        overflow = __builtin_mul_overflow(nonzero_product, d, &nonzero_product) ||
                   nonzero_product > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    }
    if (overflow)
      fail("tensor '", name, "': the number of elements of shape ", detail::shape_text(ti.shape),
           " overflows 64 bits (the non-zero dimensions must multiply to less than 2^63, even in an empty tensor)");
    const std::uint64_t numel = zero ? 0 : nonzero_product;
    std::uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<std::uint64_t>(dtype_size(ti.dtype)), &nbytes))
      fail("tensor '", name, "': the byte size of shape ", detail::shape_text(ti.shape), " overflows 64 bits");

    const nlohmann::json& jo = e["data_offsets"];
    if (!jo.is_array() || jo.size() != 2)
      fail("tensor '", name, "': data_offsets is ", detail::json_brief(jo), ", not an array [begin, end]");
    const std::uint64_t begin = unsigned_field(jo[0], name, "data_offsets[0]");
    const std::uint64_t end = unsigned_field(jo[1], name, "data_offsets[1]");
    if (begin > end) fail("tensor '", name, "': data_offsets [", begin, ", ", end, "] has begin > end");
    if (end > data_size)
      fail("tensor '", name, "': data_offsets [", begin, ", ", end, "] run past the end of the data section (",
           data_size, " bytes)");
    if (end - begin != nbytes)
      fail("tensor '", name, "': data_offsets [", begin, ", ", end, "] span ", end - begin, " bytes but ",
           dtype_name(ti.dtype), " ", detail::shape_text(ti.shape), " needs ", nbytes);
    ti.begin = static_cast<std::size_t>(begin);
    ti.end = static_cast<std::size_t>(end);
    tensors_.emplace(name, std::move(ti));
  }

  void check_overlaps() const {
    std::vector<const TensorInfo*> sorted;
    for (const auto& kv : tensors_)
      if (kv.second.end > kv.second.begin) sorted.push_back(&kv.second);  // empty ranges overlap nothing
    std::sort(sorted.begin(), sorted.end(), [](const TensorInfo* a, const TensorInfo* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
    });
    for (std::size_t i = 1; i < sorted.size(); ++i) {
      const TensorInfo& a = *sorted[i - 1];
      const TensorInfo& b = *sorted[i];
      if (a.end > b.begin)
        fail("tensors '", a.name, "' [", a.begin, ", ", a.end, "] and '", b.name, "' [", b.begin, ", ", b.end,
             "] overlap");
    }
  }

  // Copies element i of the stored data (little-endian, possibly unaligned) as S.
  template <class S>
  static S load(const std::uint8_t* src, std::size_t i) {
    S v;
    std::memcpy(&v, src + i * sizeof(S), sizeof(S));
    return v;
  }

  template <class T, class S>
  void convert_integers(const TensorInfo& ti, const std::uint8_t* src, std::size_t n, T* out) const {
    for (std::size_t i = 0; i < n; ++i) {
      const S v = load<S>(src, i);
      if constexpr (std::is_floating_point_v<T>) {
        out[i] = static_cast<T>(v);
      } else {
        if (!detail::integer_fits<T>(v))
          fail("tensor '", ti.name, "': element ", i, " = ", +v, " does not fit the requested integer type");
        out[i] = static_cast<T>(v);
      }
    }
  }

  template <class T>
  void convert(const TensorInfo& ti, T* out) const {
    static_assert(std::is_arithmetic_v<T>, "SafetensorsReader::read: T must be an arithmetic type");
    const std::uint8_t* src = bytes_.data() + data_offset_ + ti.begin;  // in bounds: validated in parse()
    const std::size_t n = (ti.end - ti.begin) / dtype_size(ti.dtype);
    if (n == 0) return;
    const bool is_float = ti.dtype == DType::F16 || ti.dtype == DType::BF16 || ti.dtype == DType::F32 ||
                          ti.dtype == DType::F64;
    if constexpr (!std::is_floating_point_v<T>) {
      if (is_float) fail("tensor '", ti.name, "' holds ", dtype_name(ti.dtype), " data; it cannot be read as an integer type");
    }
    if constexpr (detail::HasDType<T>::value && !std::is_same_v<T, bool>) {
      if (ti.dtype == DTypeOf<T>::value) {  // same representation: one copy
        std::memcpy(out, src, n * sizeof(T));
        return;
      }
    }
    switch (ti.dtype) {
      case DType::F16:
        if constexpr (std::is_floating_point_v<T>)
          for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<T>(f16_bits_to_float(load<std::uint16_t>(src, i)));
        return;
      case DType::BF16:
        if constexpr (std::is_floating_point_v<T>)
          for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<T>(bf16_bits_to_float(load<std::uint16_t>(src, i)));
        return;
      case DType::F32:
        if constexpr (std::is_floating_point_v<T>)
          for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<T>(load<float>(src, i));
        return;
      case DType::F64:
        if constexpr (std::is_floating_point_v<T>)
          for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<T>(load<double>(src, i));
        return;
      case DType::I8: convert_integers<T, std::int8_t>(ti, src, n, out); return;
      case DType::I16: convert_integers<T, std::int16_t>(ti, src, n, out); return;
      case DType::I32: convert_integers<T, std::int32_t>(ti, src, n, out); return;
      case DType::I64: convert_integers<T, std::int64_t>(ti, src, n, out); return;
      case DType::U8: convert_integers<T, std::uint8_t>(ti, src, n, out); return;
      case DType::BOOL:
        for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<T>(src[i] != 0);
        return;
    }
  }

  std::string path_;
  std::vector<std::uint8_t> bytes_;  // the whole file
  std::size_t data_offset_ = 0;     // 8 + header length
  std::map<std::string, std::string> metadata_;
  std::map<std::string, TensorInfo> tensors_;
};

class SafetensorsWriter {
 public:
  // Stores a copy of data (numel(shape) elements of T) under `name`, in T's dtype (DTypeOf<T>).
  template <class T>
  void add(const std::string& name, const Shape& shape, const T* data) {
    std::vector<std::int64_t> dims;
    for (int i = 0; i < shape.rank(); ++i) dims.push_back(shape[i]);
    add_raw(name, DTypeOf<T>::value, dims, data, static_cast<std::size_t>(shape.numel()) * sizeof(T));
  }
  template <class T>
  void add(const std::string& name, TensorView<T> t) {
    add(name, t.shape(), t.data());
  }

  // Stores already-encoded little-endian bytes (e.g. F16/BF16 bits from half.hpp) with any shape rank.
  void add_raw(const std::string& name, DType dtype, const std::vector<std::int64_t>& shape, const void* bytes,
               std::size_t size) {
    DIFFUSION_CHECK(name != "__metadata__", "SafetensorsWriter: '__metadata__' is reserved and cannot name a tensor");
    DIFFUSION_CHECK(entries_.count(name) == 0, "SafetensorsWriter: tensor '" << name << "' added twice");
    std::uint64_t numel = 1;
    for (std::int64_t d : shape) {
      DIFFUSION_CHECK(d >= 0, "SafetensorsWriter: tensor '" << name << "' has a negative dimension " << d);
      DIFFUSION_CHECK(!__builtin_mul_overflow(numel, static_cast<std::uint64_t>(d), &numel),
                      "SafetensorsWriter: tensor '" << name << "' shape overflows");
    }
    std::uint64_t nbytes = 0;
    DIFFUSION_CHECK(!__builtin_mul_overflow(numel, static_cast<std::uint64_t>(dtype_size(dtype)), &nbytes) &&
                        nbytes == size,
                    "SafetensorsWriter: tensor '" << name << "' " << dtype_name(dtype) << " "
                                                  << detail::shape_text(shape) << " needs numel * "
                                                  << dtype_size(dtype) << " bytes, got " << size);
    Entry e{dtype, shape, std::vector<std::uint8_t>(size)};
    if (size > 0) std::memcpy(e.bytes.data(), bytes, size);
    entries_.emplace(name, std::move(e));
  }

  void add_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  // The complete file contents.
  std::vector<std::uint8_t> serialize() const {
    std::string header;
    std::size_t data_size = 0;
    make_header(&header, &data_size);
    std::vector<std::uint8_t> out(8 + header.size() + data_size);
    const std::uint64_t n = header.size();
    std::memcpy(out.data(), &n, 8);
    std::memcpy(out.data() + 8, header.data(), header.size());
    std::size_t at = 8 + header.size();
    for (const auto& kv : entries_) {
      if (!kv.second.bytes.empty()) std::memcpy(out.data() + at, kv.second.bytes.data(), kv.second.bytes.size());
      at += kv.second.bytes.size();
    }
    return out;
  }

  // Writes the file atomically: on failure the previous file at `path` is untouched.
  void write(const std::string& path) const {
    std::string header;
    std::size_t data_size = 0;
    try {
      make_header(&header, &data_size);
    } catch (const Error& e) {
      throw Error("cannot write safetensors file '" + path + "': " + e.what());
    }
    write_file_atomically(path, [&](std::ostream& out) {
      const std::uint64_t n = header.size();
      out.write(reinterpret_cast<const char*>(&n), 8);
      out.write(header.data(), static_cast<std::streamsize>(header.size()));
      for (const auto& kv : entries_)
        out.write(reinterpret_cast<const char*>(kv.second.bytes.data()),
                  static_cast<std::streamsize>(kv.second.bytes.size()));
    });
  }

 private:
  struct Entry {
    DType dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::uint8_t> bytes;
  };

  void make_header(std::string* header, std::size_t* data_size) const {
    nlohmann::json j = nlohmann::json::object();
    std::size_t offset = 0;
    for (const auto& kv : entries_) {  // std::map: names sorted, data in the same order
      const std::size_t end = offset + kv.second.bytes.size();
      j[kv.first] = {{"dtype", dtype_name(kv.second.dtype)},
                     {"shape", kv.second.shape},
                     {"data_offsets", nlohmann::json::array({offset, end})}};
      offset = end;
    }
    if (!metadata_.empty()) j["__metadata__"] = metadata_;
    try {
      *header = j.dump();
    } catch (const nlohmann::json::exception& e) {
      throw Error(std::string("a tensor name or metadata string is not valid UTF-8 (") + e.what() + ")");
    }
    header->append((8 - header->size() % 8) % 8, ' ');  // the data section starts 8-byte aligned
    *data_size = offset;
  }

  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace diffusion::io
