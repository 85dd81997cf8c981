#pragma once
// Enum names: one table per enum, the only place a name is spelled, for printing, parsing and the "valid: ..." list
// of the one error style:
//   inline constexpr detail::NameEntry<Color> kColorNames[] = {{Color::Red, "red"}, {Color::Green, "green"}};
//   enum_name(kColorNames, Color::Red) == "red"; parse_enum(kColorNames, "blue", "color") throws
//   "unknown color 'blue' (valid: red, green)".
// A value may have several rows (aliases): printing takes the first, parsing accepts every one.

#include <cstddef>
#include <string>

#include "diffusion/core/error.hpp"

namespace diffusion::detail {

// One row of an enum's name table.
template <class E>
struct NameEntry {
  E value;
  const char* name;
};

// The first name of `value` in the table ("?" for a value the table lacks).
template <class E, std::size_t N>
const char* enum_name(const NameEntry<E> (&table)[N], E value) {
  for (const NameEntry<E>& e : table)
    if (e.value == value) return e.name;
  return "?";
}

// "a, b, c": every name of the table, for error messages and help texts.
template <class E, std::size_t N>
std::string enum_names(const NameEntry<E> (&table)[N]) {
  std::string s;
  for (const NameEntry<E>& e : table) s += (s.empty() ? "" : ", ") + std::string(e.name);
  return s;
}

// Whether `name` is in the table; if so *out receives its value. For callers that report a miss themselves.
template <class E, std::size_t N>
bool find_enum(const NameEntry<E> (&table)[N], const std::string& name, E* out) {
  for (const NameEntry<E>& e : table)
    if (name == e.name) {
      *out = e.value;
      return true;
    }
  return false;
}

// The value named `name`; throws "unknown <what> '<name>' (valid: ...)" otherwise.
template <class E, std::size_t N>
E parse_enum(const NameEntry<E> (&table)[N], const std::string& name, const char* what) {
  E value = table[0].value;
  DIFFUSION_CHECK(find_enum(table, name, &value),
                  "unknown " << what << " '" << name << "' (valid: " << enum_names(table) << ")");
  return value;
}

}  // namespace diffusion::detail
