#pragma once
// ImageFolder: a folder of images as a training set, held in memory as bytes.
//
//   ImageFolder data(root, options)
//     requires: root is a folder; options.decode as in image_decode.hpp (channels 1 or 3, crop H x W, background,
//               upscale, max_pixels, max_file_bytes).
//     ensures:  every file under root (recursively, not following links to folders; entries whose name starts
//               with '.' skipped) whose name ends in
//               .png .jpg .jpeg .bmp .tga .gif (any case) is an image; images() holds them, decoded by
//               decode_example (image_decode.hpp), as (N, C, H, W) bytes in the order of their paths relative to
//               root, sorted as byte strings ('/' separators); files()[i] is image i's relative path. Other files
//               are counted in ignored(), never read.
//               With options.labels, each first-level subfolder of root is a class (classes() sorted by name, as
//               torchvision's ImageFolder) and labels()[i] the index of image i's class; an image directly in root,
//               or a class folder without images, is an Error.
//               Files are decoded in parallel (parallel_for over chunks of options.chunk files; options.progress,
//               if set, is called on the calling thread after each chunk with (files done, files in all)); the
//               result does not depend on the thread count.
//     Errors (diffusion::Error), all before any training: root missing or not a folder, no images, an image
//     directly in root or a class folder with no images (labels), more bytes than options.max_bytes in all, and
//     per file: unreadable or undecodable (file and stb's reason; skipped with options.skip_bad_files), more than
//     max_pixels (refused before decoding; counted as undecodable), smaller than the crop without upscale
//     (ImageTooSmall; skipped with options.skip_small_images). Skipped files are listed in skipped() with the reason.
//     Without skipping, the error is the first failing file in path order.
//
// DatasetInfo: what a model trained on the folder depends on (channels, H, W, class names), as JSON for a
// checkpoint's metadata (key kDatasetInfoKey = "diffusion.dataset"); dataset_differences(stored, current) lists
// what differs, check_dataset_matches throws with that list.
//
// Memory: N C H W bytes (60,000 RGB 64x64 images: 737,280,000 bytes, 703 MiB; floats would take 2.75 GiB); batches
// are converted to [-1, 1] one at a time by BatchSampler (train/dataset.hpp).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffusion/core/error.hpp"
#include "diffusion/core/parallel.hpp"
#include "diffusion/core/tensor.hpp"
#include "diffusion/io/image_decode.hpp"

namespace diffusion::io {

inline constexpr const char* kDatasetInfoKey = "diffusion.dataset";

struct DatasetInfo {
  int channels = 3;
  int height = 0, width = 0;
  std::vector<std::string> classes;  // empty: no labels

  nlohmann::json to_json() const {
    return nlohmann::json{{"channels", channels}, {"height", height}, {"width", width}, {"classes", classes}};
  }

  // Parses to_json()'s output; Error naming `what` and the field for anything else.
  static DatasetInfo from_json(const nlohmann::json& j, const std::string& what) {
    DIFFUSION_CHECK(j.is_object(), what << ": the data set description is a JSON " << j.type_name() << ", not an object");
    DatasetInfo info;
    const auto integer = [&](const char* key, int lo, int hi) {
      const auto it = j.find(key);
      DIFFUSION_CHECK(it != j.end(), what << ": the data set description lacks '" << key << "'");
      DIFFUSION_CHECK(it->is_number_integer() && it->get<std::int64_t>() >= lo && it->get<std::int64_t>() <= hi,
                      what << ": data set field '" << key << "' must be an integer in [" << lo << ", " << hi
                           << "], got " << it->dump().substr(0, 40));
      return static_cast<int>(it->get<std::int64_t>());
    };
    info.channels = integer("channels", 1, 3);
    DIFFUSION_CHECK(info.channels != 2, what << ": data set field 'channels' must be 1 or 3, got 2");
    info.height = integer("height", 1, 65536);
    info.width = integer("width", 1, 65536);
    if (const auto it = j.find("classes"); it != j.end()) {
      DIFFUSION_CHECK(it->is_array(), what << ": data set field 'classes' must be an array of names");
      for (const auto& c : *it) {
        DIFFUSION_CHECK(c.is_string(), what << ": data set field 'classes' holds a " << c.type_name() << ", not a name");
        info.classes.push_back(c.get<std::string>());
      }
    }
    return info;
  }
};

// What differs between the data set a checkpoint was trained on (stored) and the current one: one sentence each,
// empty when they match.
inline std::vector<std::string> dataset_differences(const DatasetInfo& stored, const DatasetInfo& current) {
  std::vector<std::string> d;
  const auto say = [&](const std::string& s) { d.push_back(s); };
  if (stored.channels != current.channels)
    say("channels: " + std::to_string(stored.channels) + " in the checkpoint, " + std::to_string(current.channels) +
        " in the data set");
  if (stored.height != current.height || stored.width != current.width)
    say("image size (height x width): " + std::to_string(stored.height) + " x " + std::to_string(stored.width) +
        " in the checkpoint, " + std::to_string(current.height) + " x " + std::to_string(current.width) +
        " in the data set");
  if (stored.classes == current.classes) return d;
  if (stored.classes.empty() || current.classes.empty()) {
    say(stored.classes.empty() ? "classes: the checkpoint has none, the data set has " +
                                     std::to_string(current.classes.size())
                               : "classes: the checkpoint has " + std::to_string(stored.classes.size()) +
                                     ", the data set none");
    return d;
  }
  const std::size_t before = d.size();
  for (const auto& c : stored.classes)
    if (std::find(current.classes.begin(), current.classes.end(), c) == current.classes.end())
      say("class '" + c + "' is in the checkpoint, not in the data set");
  for (const auto& c : current.classes)
    if (std::find(stored.classes.begin(), stored.classes.end(), c) == stored.classes.end())
      say("class '" + c + "' is in the data set, not in the checkpoint");
  if (d.size() > before) return d;
  // The same names: in another order (a label would mean another class), or repeated.
  for (std::size_t i = 0; i < std::min(stored.classes.size(), current.classes.size()); ++i)
    if (stored.classes[i] != current.classes[i])
      say("class " + std::to_string(i) + ": '" + stored.classes[i] + "' in the checkpoint, '" + current.classes[i] +
          "' in the data set");
  if (d.size() == before)
    say("classes: " + std::to_string(stored.classes.size()) + " names in the checkpoint, " +
        std::to_string(current.classes.size()) + " in the data set");
  return d;
}

// Throws an Error naming `what` and listing every difference, unless there is none.
inline void check_dataset_matches(const DatasetInfo& stored, const DatasetInfo& current, const std::string& what) {
  const std::vector<std::string> d = dataset_differences(stored, current);
  if (d.empty()) return;
  std::string message = what + ": the data set differs from the one the checkpoint was trained on:";
  for (const auto& s : d) message += "\n  " + s;
  throw Error(message);
}

// The DatasetInfo in a checkpoint's metadata (kDatasetInfoKey), if there is one: returns false when absent; Error
// naming `path` when present but malformed.
inline bool dataset_info_from_metadata(const std::map<std::string, std::string>& metadata, const std::string& path,
                                       DatasetInfo& out) {
  const auto it = metadata.find(kDatasetInfoKey);
  if (it == metadata.end()) return false;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    throw Error("'" + path + "': metadata '" + kDatasetInfoKey + "' is not valid JSON (" + e.what() + ")");
  }
  out = DatasetInfo::from_json(j, "'" + path + "' metadata '" + kDatasetInfoKey + "'");
  return true;
}

// True for names ending in .png .jpg .jpeg .bmp .tga .gif, in any case.
inline bool has_image_extension(const std::string& name) {
  const std::size_t dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  for (char& c : ext) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return ext == "png" || ext == "jpg" || ext == "jpeg" || ext == "bmp" || ext == "tga" || ext == "gif";
}

// The image files under root (relative paths, '/' separators, sorted as byte strings) and, in *ignored, how many
// other files there are. Hidden entries (name starting with '.') are neither listed nor counted.
inline std::vector<std::string> list_image_files(const std::string& root, std::size_t* ignored = nullptr) {
  namespace fs = std::filesystem;
  std::error_code ec;
  DIFFUSION_CHECK(fs::is_directory(root, ec), "image folder '" << root << "': not a folder (or it does not exist)");
  std::vector<std::string> files;
  std::size_t others = 0;
  fs::recursive_directory_iterator it(root, fs::directory_options::none, ec), end;
  DIFFUSION_CHECK(!ec, "image folder '" << root << "': cannot list: " << ec.message());
  for (; it != end; it.increment(ec)) {
    DIFFUSION_CHECK(!ec, "image folder '" << root << "': cannot list: " << ec.message());
    const fs::path& p = it->path();
    const std::string name = p.filename().string();
    if (!name.empty() && name[0] == '.') {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec)) continue;
    if (!has_image_extension(name)) {
      ++others;
      continue;
    }
    files.push_back(p.lexically_relative(root).generic_string());
  }
  std::sort(files.begin(), files.end());
  if (ignored) *ignored = others;
  return files;
}

struct ImageFolderOptions {
  DecodeOptions decode;                   // channels, crop size, background, upscale, limits
  bool labels = false;                    // classes from the first level of subfolders
  bool skip_bad_files = false;            // skip undecodable files (listed in skipped()) instead of failing
  bool skip_small_images = false;         // skip images smaller than the crop (without upscale) instead of failing
  std::uint64_t max_bytes = std::uint64_t{1} << 33;  // N C H W bytes in all: 8 GiB
  std::size_t chunk = 256;                // files decoded between two progress calls
  std::function<void(std::size_t done, std::size_t total)> progress;  // optional; on the calling thread
};

struct SkippedFile {
  std::string path;    // relative to the root
  std::string reason;  // the Error's message
};

class ImageFolder {
 public:
  ImageFolder(const std::string& root, const ImageFolderOptions& options) : root_(root), options_(options) {
    check_decode_options(options.decode, "ImageFolder");
    DIFFUSION_CHECK(options.chunk >= 1, "ImageFolder: chunk must be >= 1");
    load();
    options_.progress = nullptr;  // used while loading only; what it captured need not outlive the constructor
  }

  Index size() const { return images_.dim(0); }
  int channels() const { return options_.decode.channels; }
  int height() const { return options_.decode.height; }
  int width() const { return options_.decode.width; }
  const std::string& root() const { return root_; }
  const Tensor<std::uint8_t>& images() const { return images_; }        // (N, C, H, W)
  const std::vector<std::int64_t>& labels() const { return labels_; }   // (N), empty without labels
  const std::vector<std::string>& classes() const { return classes_; }  // sorted, empty without labels
  const std::vector<std::string>& files() const { return files_; }      // (N), relative to root
  const std::vector<SkippedFile>& skipped() const { return skipped_; }
  std::size_t ignored() const { return ignored_; }  // files without an image extension

  DatasetInfo info() const { return DatasetInfo{channels(), height(), width(), classes_}; }

 private:
  enum class Status : std::uint8_t { Ok, Bad, Small };

  void load() {
    namespace fs = std::filesystem;
    std::vector<std::string> candidates = list_image_files(root_, &ignored_);
    if (options_.labels) find_classes(candidates);
    DIFFUSION_CHECK(!candidates.empty(), "image folder '" << root_ << "': no images (.png .jpg .jpeg .bmp .tga .gif)"
                                                          << (ignored_ ? " among its " + std::to_string(ignored_) +
                                                                             " files"
                                                                       : std::string()));
    const DecodeOptions& d = options_.decode;
    const std::uint64_t per = static_cast<std::uint64_t>(d.channels) * static_cast<std::uint64_t>(d.height) *
                              static_cast<std::uint64_t>(d.width);
    DIFFUSION_CHECK(candidates.size() <= options_.max_bytes / per,
                    "image folder '" << root_ << "': " << candidates.size() << " images of " << per << " bytes need "
                                     << static_cast<double>(candidates.size()) * static_cast<double>(per) / 1073741824.0
                                     << " GiB, more than max_bytes = " << options_.max_bytes);
    const Index n = static_cast<Index>(candidates.size());
    const Index C = d.channels, H = d.height, W = d.width, P = H * W;
    images_.resize(Shape{n, C, H, W});
    std::vector<Status> status(candidates.size(), Status::Ok);
    std::vector<std::string> reasons(candidates.size());
    const std::size_t total = candidates.size();
    for (std::size_t begin = 0; begin < total; begin += options_.chunk) {
      const std::size_t end = std::min(total, begin + options_.chunk);
      // Each file writes its own slot of images_ and its own status: independent of the thread count. The body
      // must not throw (parallel_for): errors are caught and recorded per file.
      parallel_for(static_cast<Index>(begin), static_cast<Index>(end), 1e6, [&](Index i) {
        const std::size_t k = static_cast<std::size_t>(i);
        try {
          const std::string path = (fs::path(root_) / candidates[k]).string();
          const Image8 image = decode_example_file(path, d);
          std::uint8_t* dst = images_.data() + i * C * P;  // (C, H, W) from (H, W, C)
          for (Index p = 0; p < P; ++p)
            for (Index c = 0; c < C; ++c) dst[c * P + p] = image.pixels[static_cast<std::size_t>(p * C + c)];
        } catch (const ImageTooSmall& e) {
          status[k] = Status::Small;
          reasons[k] = e.what();
        } catch (const std::exception& e) {
          status[k] = Status::Bad;
          reasons[k] = e.what();
        } catch (...) {
          status[k] = Status::Bad;
          reasons[k] = "unknown error";
        }
      });
      for (std::size_t k = begin; k < end; ++k) {
        if (status[k] == Status::Ok) continue;
        const bool skip = status[k] == Status::Bad ? options_.skip_bad_files : options_.skip_small_images;
        if (!skip) {
          throw Error("image folder '" + root_ + "': " + reasons[k] +
                      (status[k] == Status::Bad ? " (skip_bad_files skips such files)"
                                                : " (skip_small_images skips such images)"));
        }
      }
      if (options_.progress) options_.progress(end, total);
    }
    // Keep the images that decoded, in order.
    Index kept = 0;
    for (std::size_t k = 0; k < total; ++k) {
      if (status[k] != Status::Ok) {
        skipped_.push_back({candidates[k], reasons[k]});
        continue;
      }
      if (kept != static_cast<Index>(k))
        std::memmove(images_.data() + kept * C * P, images_.data() + static_cast<Index>(k) * C * P,
                     static_cast<std::size_t>(C * P));
      files_.push_back(candidates[k]);
      if (options_.labels) labels_.push_back(class_of_candidate_[k]);
      ++kept;
    }
    DIFFUSION_CHECK(kept > 0, "image folder '" << root_ << "': none of its " << total
                                               << " image files could be used (" << skipped_.size() << " skipped; first: "
                                               << skipped_.front().reason << ")");
    images_.resize(Shape{kept, C, H, W});  // keeps the allocation: the skipped slots are not copied again
    if (options_.labels) {
      std::vector<Index> per_class(classes_.size(), 0);
      for (std::int64_t l : labels_) ++per_class[static_cast<std::size_t>(l)];
      for (std::size_t c = 0; c < classes_.size(); ++c)
        DIFFUSION_CHECK(per_class[c] > 0, "image folder '" << root_ << "': class folder '" << classes_[c]
                                                           << "' has no usable images left after skipping "
                                                           << skipped_.size() << " files");
    }
    class_of_candidate_.clear();
    class_of_candidate_.shrink_to_fit();
  }

  // Classes: the first-level subfolders (sorted); every candidate must sit in one of them.
  void find_classes(const std::vector<std::string>& candidates) {
    namespace fs = std::filesystem;
    std::error_code ec;
    for (fs::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (!name.empty() && name[0] != '.' && it->is_directory(ec)) classes_.push_back(name);
    }
    DIFFUSION_CHECK(!ec, "image folder '" << root_ << "': cannot list: " << ec.message());
    std::sort(classes_.begin(), classes_.end());
    DIFFUSION_CHECK(!classes_.empty(), "image folder '" << root_
                                                        << "': labels need one subfolder per class, found none");
    std::vector<Index> per_class(classes_.size(), 0);
    class_of_candidate_.reserve(candidates.size());
    for (const std::string& f : candidates) {
      const std::size_t slash = f.find('/');
      DIFFUSION_CHECK(slash != std::string::npos, "image folder '" << root_ << "': image '" << f
                                                                   << "' is not inside a class folder (labels)");
      const std::string cls = f.substr(0, slash);
      const auto pos = std::lower_bound(classes_.begin(), classes_.end(), cls);
      DIFFUSION_CHECK(pos != classes_.end() && *pos == cls,
                      "image folder '" << root_ << "': image '" << f << "' is in no class folder");
      const std::size_t c = static_cast<std::size_t>(pos - classes_.begin());
      class_of_candidate_.push_back(static_cast<std::int64_t>(c));
      ++per_class[c];
    }
    for (std::size_t c = 0; c < classes_.size(); ++c)
      DIFFUSION_CHECK(per_class[c] > 0, "image folder '" << root_ << "': class folder '" << classes_[c]
                                                         << "' has no images (.png .jpg .jpeg .bmp .tga .gif)");
  }

  std::string root_;
  ImageFolderOptions options_;
  Tensor<std::uint8_t> images_;  // (N, C, H, W)
  std::vector<std::int64_t> labels_;
  std::vector<std::string> classes_, files_;
  std::vector<SkippedFile> skipped_;
  std::vector<std::int64_t> class_of_candidate_;
  std::size_t ignored_ = 0;
};

}  // namespace diffusion::io
