#pragma once
// A program's training options as one table: each row names a flag, the member of the options struct it sets (its
// kind follows from the member's type), the values it accepts, its help, and how a resumed run treats it. The table
// drives the command-line flags (CLI11), the JSON the options travel in (checkpoint metadata, keyed by flag name),
// the strict reading of that JSON back, and the resume merge, so that adding an option is adding one row.
//
//   const std::vector<OptionRow<TrainOptions>> rows = {
//       {"dim", &TrainOptions::dim, OnResume::Fixed, "U-Net base channel count", NumberRange{4, 4096}},
//       {"lr", &TrainOptions::lr, OnResume::Optimizer, "Adam learning rate", NumberRange{0, kInf, true}},
//       ...};
//   add_flags(app, options, rows);  options_to_json(options, rows);  options_from_json(json, where, rows);

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "diffusion/core/error.hpp"
#include "diffusion/train/lr_schedule.hpp"

namespace examples {

// "3", "0.001", "inf": a bound as a person writes it (not DBL_MAX's 309 digits).
inline std::string number_text(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == std::floor(v) && std::fabs(v) < 9.0e15) return std::to_string(static_cast<std::int64_t>(v));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// The values a numeric option accepts: [min, max], or (min, max] when min_open. One definition per option, used by
// its flag's validator (in_range) and when a resumed run reads the option back from a checkpoint.
struct NumberRange {
  double min = 0.0;
  double max = std::numeric_limits<double>::infinity();
  bool min_open = false;
  bool contains(double v) const { return (min_open ? v > min : v >= min) && v <= max; }  // false for NaN
  // ">= 0", "> 0", "in [1, 100000]", "in (0, 1]"
  std::string text() const {
    if (std::isinf(max)) return (min_open ? "> " : ">= ") + number_text(min);
    return std::string("in ") + (min_open ? "(" : "[") + number_text(min) + ", " + number_text(max) + "]";
  }
};

// A CLI11 validator: the value must be a finite number in `range`; otherwise the flag's error says
// "must be <range.text()>, got <value>" (CLI11's own Range(0, DBL_MAX) would print DBL_MAX's 309 digits).
inline CLI::Validator in_range(const NumberRange& range) {
  return CLI::Validator(
      [range](std::string& input) {
        double v = 0.0;
        if (CLI::detail::lexical_cast(input, v) && std::isfinite(v) && range.contains(v)) return std::string();
        return "must be " + range.text() + ", got " + input;
      },
      range.text());
}

// A CLI11 validator accepting what the library's parser of a name accepts (e.g. diffusion::parse_spacing): the names
// stay spelled in the library's table only, and a wrong one gets the parser's "unknown ... (valid: ...)" message.
template <class Parse>
CLI::Validator parsed_by(Parse parse, const std::string& type_name) {
  return CLI::Validator(
      [parse](std::string& name) {
        try {
          (void)parse(name);
          return std::string();
        } catch (const diffusion::Error& e) {
          return std::string(e.what());
        }
      },
      type_name);
}

// "1,2,4" -> {1, 2, 4}; throws diffusion::Error naming `flag` when malformed.
inline std::vector<int> parse_int_list(const std::string& text, const std::string& flag) {
  std::vector<int> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    std::size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    while (used < item.size() && item[used] == ' ') ++used;
    DIFFUSION_CHECK(used == item.size() && !item.empty() && v > 0,
                    flag << " expects positive integers separated by commas (e.g. 1,2,4), got '" << text << "'");
    out.push_back(v);
  }
  DIFFUSION_CHECK(!out.empty(), flag << " expects positive integers separated by commas (e.g. 1,2,4), got '" << text << "'");
  return out;
}

inline std::string int_list_text(const std::vector<int>& v) {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

// Registers "--name LIST", a comma-separated list of positive integers bound to `target` ("1,2,4").
inline CLI::Option* add_int_list(CLI::App& app, const std::string& name, std::vector<int>& target,
                                 const std::string& help) {
  CLI::Option* opt = app.add_option_function<std::string>(
      name,
      [&target, name](const std::string& text) {
        try {
          target = parse_int_list(text, name);
        } catch (const diffusion::Error& e) {
          throw CLI::ValidationError(name, e.what());
        }
      },
      help);
  opt->type_name("LIST")->default_str(int_list_text(target));
  return opt;
}

// A stored JSON value for an error message: at most 40 characters.
inline std::string json_brief(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

// An option's value for a message ("linear", "1,2,4", "0.001"); a stored one may be anything: at most 40 characters.
inline std::string value_text(const nlohmann::json& v) {
  std::string s;
  if (v.is_string()) {
    s = v.get<std::string>();
  } else if (v.is_array()) {
    for (const auto& e : v)
      s += (s.empty() ? "" : ",") + e.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

// "linear, cosine, quadratic": the accepted values of a message.
inline std::string one_of_text(const std::vector<std::string>& allowed) {
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  return list;
}

// The value of `key` in a stored JSON object; `where` starts the error message (it names the file and the metadata
// key), e.g. "'run/checkpoint.safetensors': the stored 'fashion_mnist.options' ".
inline const nlohmann::json& stored_field(const nlohmann::json& object, const std::string& key,
                                          const std::string& where) {
  const auto it = object.find(key);
  DIFFUSION_CHECK(it != object.end(), where << "metadata has no key '" << key << "'");
  return *it;
}

// The integer / finite number `key` of a stored JSON object, within `range`.
inline std::int64_t stored_integer(const nlohmann::json& object, const std::string& key, const NumberRange& range,
                                   const std::string& where) {
  const nlohmann::json& v = stored_field(object, key, where);
  bool ok = false;
  std::int64_t x = 0;
  if (v.is_number_unsigned()) {
    const std::uint64_t u = v.get<std::uint64_t>();
    ok = u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    x = ok ? static_cast<std::int64_t>(u) : 0;
  } else if (v.is_number_integer()) {
    x = v.get<std::int64_t>();
    ok = true;
  }
  DIFFUSION_CHECK(ok && range.contains(static_cast<double>(x)),
                  where << "key '" << key << "' is " << json_brief(v) << ", expected an integer " << range.text());
  return x;
}

inline double stored_number(const nlohmann::json& object, const std::string& key, const NumberRange& range,
                            const std::string& where) {
  const nlohmann::json& v = stored_field(object, key, where);
  const double x = v.is_number() ? v.get<double>() : 0.0;
  DIFFUSION_CHECK(v.is_number() && std::isfinite(x) && range.contains(x),
                  where << "key '" << key << "' is " << json_brief(v) << ", expected a number " << range.text());
  return x;
}

// How a resumed run treats an option that the command line gives.
enum class OnResume {
  Fixed,      // the configuration (model, noise, data order): it must equal the stored value
  Optimizer,  // replaces the stored value, with a note (e.g. a lower --lr to get past a divergence)
  Run,        // replaces the stored value (where outputs go, threads, previews, ...)
  Length,     // the run's length (--steps, --epochs): the program's own rule
  NotStored,  // not part of the stored options (--resume itself)
};

// One option. range: a number's accepted values, or a list's length (its items are positive integers); choices: a
// string's accepted values (empty: any text). when_absent: the value of a key missing from a stored JSON (a file
// written before the option existed; none: the key is required). stored_range: a stored number's range where it is
// wider than the flag's (e.g. steps 0, "the length is --epochs", which the flag does not take).
template <class Options>
struct OptionRow {
  using Member = std::variant<int Options::*, std::int64_t Options::*, std::uint64_t Options::*, double Options::*,
                              bool Options::*, std::string Options::*, std::vector<int> Options::*>;
  std::string flag;  // without the dashes; also the JSON key
  Member member;
  OnResume on_resume = OnResume::Run;
  std::string help;
  NumberRange range{};
  std::vector<std::string> choices{};
  std::optional<nlohmann::json> when_absent{};
  std::optional<NumberRange> stored_range{};

  bool stored() const { return on_resume != OnResume::NotStored; }
};

// Registers a flag "--<flag>" per row on `app`, bound to the row's member of `o`, with its validator.
template <class Options>
void add_flags(CLI::App& app, Options& o, const std::vector<OptionRow<Options>>& rows) {
  for (const OptionRow<Options>& row : rows) {
    const std::string name = "--" + row.flag;
    std::visit(
        [&](auto member) {
          auto& target = o.*member;
          using V = std::decay_t<decltype(target)>;
          if constexpr (std::is_same_v<V, bool>) {
            app.add_flag(name, target, row.help);
          } else if constexpr (std::is_same_v<V, std::vector<int>>) {
            add_int_list(app, name, target, row.help);
          } else if constexpr (std::is_same_v<V, std::string>) {
            CLI::Option* opt = app.add_option(name, target, row.help);
            if (!row.choices.empty()) opt->check(CLI::IsMember(row.choices));
          } else if constexpr (std::is_same_v<V, std::uint64_t>) {
            app.add_option(name, target, row.help);  // CLI11 refuses what is not a 64-bit unsigned integer
          } else {
            app.add_option(name, target, row.help)->check(in_range(row.range));
          }
        },
        row.member);
  }
}

// The stored options as JSON, keyed by flag name.
template <class Options>
nlohmann::json options_to_json(const Options& o, const std::vector<OptionRow<Options>>& rows) {
  nlohmann::json j = nlohmann::json::object();
  for (const OptionRow<Options>& row : rows)
    if (row.stored()) std::visit([&](auto member) { j[row.flag] = o.*member; }, row.member);
  return j;
}

// Options read back from stored JSON as strictly as the flags read them: every key present (or when_absent), integers
// as JSON integers, every value in its row's range or choices; otherwise a diffusion::Error that starts with `where`
// (the file and the metadata key) and names the key, its value and what was expected. Members without a stored row
// keep their defaults.
template <class Options>
Options options_from_json(const nlohmann::json& j, const std::string& where,
                          const std::vector<OptionRow<Options>>& rows) {
  DIFFUSION_CHECK(j.is_object(), where << "metadata is " << json_brief(j) << ", not a JSON object");
  Options o;
  for (const OptionRow<Options>& row : rows) {
    if (!row.stored()) continue;
    const std::string& key = row.flag;
    std::visit(
        [&](auto member) {
          auto& target = o.*member;
          using V = std::decay_t<decltype(target)>;
          if (!j.contains(key) && row.when_absent) {
            target = row.when_absent->template get<V>();
            return;
          }
          const nlohmann::json& v = stored_field(j, key, where);
          const NumberRange& range = row.stored_range ? *row.stored_range : row.range;
          if constexpr (std::is_same_v<V, bool>) {
            DIFFUSION_CHECK(v.is_boolean(), where << "key '" << key << "' is " << json_brief(v)
                                                  << ", expected true or false");
            target = v.template get<bool>();
          } else if constexpr (std::is_same_v<V, std::string>) {
            DIFFUSION_CHECK(v.is_string(), where << "key '" << key << "' is " << json_brief(v)
                                                 << (row.choices.empty() ? ", expected a string" : ", expected one of ")
                                                 << (row.choices.empty() ? "" : one_of_text(row.choices)));
            target = v.template get<std::string>();
            DIFFUSION_CHECK(row.choices.empty() ||
                                std::find(row.choices.begin(), row.choices.end(), target) != row.choices.end(),
                            where << "key '" << key << "' is " << json_brief(v) << ", expected one of "
                                  << one_of_text(row.choices));
          } else if constexpr (std::is_same_v<V, std::vector<int>>) {
            bool ok = v.is_array() && range.contains(static_cast<double>(v.size()));
            for (std::size_t i = 0; ok && i < v.size(); ++i)
              ok = (v[i].is_number_unsigned() || v[i].is_number_integer()) && v[i].template get<std::int64_t>() >= 1 &&
                   v[i].template get<std::int64_t>() <= std::numeric_limits<int>::max();
            DIFFUSION_CHECK(ok, where << "key '" << key << "' is " << json_brief(v) << ", expected a list of "
                                      << number_text(std::max(range.min, 1.0)) << " to " << number_text(range.max)
                                      << " positive integers");
            target.clear();
            for (const auto& m : v) target.push_back(static_cast<int>(m.template get<std::int64_t>()));
          } else if constexpr (std::is_same_v<V, std::uint64_t>) {
            DIFFUSION_CHECK(v.is_number_unsigned() || (v.is_number_integer() && v.template get<std::int64_t>() >= 0),
                            where << "key '" << key << "' is " << json_brief(v) << ", expected an integer in [0, 2^64)");
            target = v.template get<std::uint64_t>();
          } else if constexpr (std::is_same_v<V, double>) {
            target = stored_number(j, key, range, where);
          } else {  // int, std::int64_t: the range keeps the value within the type
            target = static_cast<V>(stored_integer(j, key, range, where));
          }
        },
        row.member);
  }
  return o;
}

// The stored options of a resumed run merged with the flags given on its command line (`given`, names without
// dashes), by each row's on_resume: a Fixed flag that differs from the stored value is an error naming every such
// flag; Optimizer and Run flags replace the stored values (a note in `notes` for each Optimizer value that
// changes). Length rows are left to the caller. `checkpoint` names the file in the messages.
template <class Options>
nlohmann::json merge_resume_json(const Options& flags, const std::set<std::string>& given, const nlohmann::json& stored,
                                 const std::vector<OptionRow<Options>>& rows, const std::string& checkpoint,
                                 std::vector<std::string>& notes) {
  const nlohmann::json current = options_to_json(flags, rows);
  nlohmann::json merged = stored;
  std::string mismatches;
  for (const OptionRow<Options>& row : rows) {
    const std::string& key = row.flag;
    if (!given.count(key) || !row.stored()) continue;
    const bool same = stored.contains(key) && stored.at(key) == current.at(key);
    switch (row.on_resume) {
      case OnResume::Fixed:
        if (!same)
          mismatches += std::string(mismatches.empty() ? "" : ", ") + "--" + key + " " + value_text(current.at(key)) +
                        " (the checkpoint has " + (stored.contains(key) ? value_text(stored.at(key)) : "none") + ")";
        break;
      case OnResume::Optimizer:
        if (same) break;
        notes.push_back("--" + key + " changes from " + value_text(stored.value(key, nlohmann::json())) + " to " +
                        value_text(current.at(key)) + " for the rest of the run");
        merged[key] = current.at(key);
        break;
      case OnResume::Run:
        merged[key] = current.at(key);
        break;
      case OnResume::Length:
      case OnResume::NotStored:
        break;
    }
  }
  DIFFUSION_CHECK(mismatches.empty(),
                  "cannot resume from '" << checkpoint << "': its configuration differs from the command line: "
                                         << mismatches
                                         << ". Drop these flags to continue that run, or start a new run with --out DIR");
  return merged;
}

// The flags that give `o`'s values, "--dim 28 --dim-mults 1,2,4 --conditional ..." (a bool only when true), for
// the rows whose flag `include` accepts. Numbers are written exactly (%.17g).
template <class Options, class Include>
std::string command_line(const Options& o, const std::vector<OptionRow<Options>>& rows, Include include) {
  std::string line;
  for (const OptionRow<Options>& row : rows) {
    if (!include(row.flag)) continue;
    std::visit(
        [&](auto member) {
          const auto& value = o.*member;
          using V = std::decay_t<decltype(value)>;
          std::string text;
          if constexpr (std::is_same_v<V, bool>) {
            if (!value) return;
          } else if constexpr (std::is_same_v<V, std::vector<int>>) {
            text = int_list_text(value);
          } else if constexpr (std::is_same_v<V, std::string>) {
            text = value;
          } else if constexpr (std::is_same_v<V, double>) {
            char buf[40];
            std::snprintf(buf, sizeof buf, "%.17g", value);
            text = buf;
          } else {
            text = std::to_string(value);
          }
          line += (line.empty() ? "--" : " --") + row.flag + (text.empty() ? "" : " " + text);
        },
        row.member);
  }
  return line;
}

// The flags given on the command line of `app` (names without dashes, e.g. "dim-mults").
inline std::set<std::string> given_flags(const CLI::App& app) {
  std::set<std::string> out;
  for (const CLI::Option* opt : app.get_options())
    if (opt->count() > 0) out.insert(opt->get_single_name());
  return out;
}

// The learning-rate schedule of the flags --lr-warmup, --lr-decay (none, cosine, linear) and --lr-min for a run of
// total_steps steps; an Error names the flags when a decay has no steps left after the warm-up.
inline diffusion::LrSchedule lr_schedule_of_flags(std::int64_t warmup, const std::string& decay, double min_ratio,
                                                  std::int64_t total_steps) {
  diffusion::LrSchedule s;
  s.warmup_steps = warmup;
  s.decay = diffusion::parse_lr_decay(decay);
  s.total_steps = total_steps;
  s.min_ratio = min_ratio;
  DIFFUSION_CHECK(s.decay == diffusion::LrDecay::None || total_steps > warmup,
                  "--lr-decay " << decay << " decays the rate after the warm-up, but the run's " << total_steps
                                << " steps are not more than --lr-warmup " << warmup
                                << "; train longer or warm up for fewer steps");
  s.validate();
  return s;
}

}  // namespace examples
