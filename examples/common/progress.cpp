#include "progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "diffusion/core/error.hpp"

namespace examples {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

namespace {
constexpr double kRedrawSeconds = 0.25;       // terminal
constexpr double kLogLineSeconds = 30.0;      // not a terminal
constexpr std::size_t kLossWindow = 100;
}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

ProgressDisplay::ProgressDisplay(std::int64_t first_step, std::int64_t total_steps, std::int64_t steps_per_epoch,
                                 double elapsed_before, std::FILE* stream)
    : stream_(stream),
      interactive_(stream != nullptr && ::isatty(::fileno(stream)) != 0),
      first_step_(first_step),
      total_steps_(total_steps),
      steps_per_epoch_(std::max<std::int64_t>(1, steps_per_epoch)),
      step_(first_step),
      elapsed_before_(elapsed_before),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {
  window_.reserve(kLossWindow);
}

double ProgressDisplay::elapsed() const {
  return elapsed_before_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double ProgressDisplay::images_per_second() const {
  return train_seconds_ > 0 ? static_cast<double>(images_) / train_seconds_ : 0.0;
}

double ProgressDisplay::mean_loss() const {
  if (window_.empty()) return 0.0;
  return std::accumulate(window_.begin(), window_.end(), 0.0) / static_cast<double>(window_.size());
}

void ProgressDisplay::update(std::int64_t step, double loss, std::int64_t images, double step_seconds) {
  step_ = step;
  images_ += images;
  train_seconds_ += step_seconds;
  if (window_.size() < kLossWindow) {
    window_.push_back(loss);
  } else {
    window_[window_next_] = loss;
    window_next_ = (window_next_ + 1) % kLossWindow;
  }
  draw(step == total_steps_);
}

std::string ProgressDisplay::line() const {
  const std::int64_t done_here = step_ - first_step_;
  const double per_step = done_here > 0 ? train_seconds_ / static_cast<double>(done_here) : NAN;
  const std::int64_t epochs = (total_steps_ + steps_per_epoch_ - 1) / steps_per_epoch_;
  const std::int64_t epoch = std::min(epochs, std::max<std::int64_t>(step_ - 1, 0) / steps_per_epoch_ + 1);  // of the last step
  char buf[256];
  std::snprintf(buf, sizeof buf, "step %lld/%lld (%.1f%%) | epoch %lld/%lld | loss %.4f | %.1f img/s | elapsed %s | left %s",
                static_cast<long long>(step_), static_cast<long long>(total_steps_),
                total_steps_ > 0 ? 100.0 * static_cast<double>(step_) / static_cast<double>(total_steps_) : 100.0,
                static_cast<long long>(epoch), static_cast<long long>(epochs), mean_loss(), images_per_second(),
                format_duration(elapsed()).c_str(),
                format_duration(per_step * static_cast<double>(total_steps_ - step_)).c_str());
  return buf;
}

void ProgressDisplay::draw(bool force) {
  if (stream_ == nullptr) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (interactive_) {
    if (!force && drawn_ && since < kRedrawSeconds) return;
    std::fprintf(stream_, "\r%s\x1b[K", line().c_str());
    line_open_ = true;
  } else {
    if (!force && since < kLogLineSeconds) return;
    std::fprintf(stream_, "%s\n", line().c_str());
  }
  std::fflush(stream_);
  last_draw_ = now;
  drawn_ = true;
}

void ProgressDisplay::clear_line() {
  if (stream_ == nullptr) return;
  if (line_open_) {
    std::fprintf(stream_, "\r\x1b[K");
    line_open_ = false;
  }
}

void ProgressDisplay::note(const std::string& text) {
  if (stream_ == nullptr) return;
  clear_line();
  std::fprintf(stream_, "%s\n", text.c_str());
  std::fflush(stream_);
  if (interactive_ && drawn_) draw(true);
}

void ProgressDisplay::finish() {
  if (stream_ == nullptr) return;
  // Off a terminal the last step already printed its line (update forces it at the final step).
  if (line_open_) std::fprintf(stream_, "\n");
  line_open_ = false;
  std::fflush(stream_);
}

TrainLog::TrainLog(std::string path, bool create) : path_(std::move(path)) {
  if (!create) return;
  std::error_code ec;
  const bool fresh = !std::filesystem::exists(path_, ec) || std::filesystem::file_size(path_, ec) == 0;
  if (!fresh) return;
  std::FILE* f = std::fopen(path_.c_str(), "a");
  DIFFUSION_CHECK(f != nullptr, "cannot write the training log '" << path_ << "': " << std::strerror(errno));
  std::fprintf(f, "step,epoch,loss,images_per_s,elapsed_s\n");
  DIFFUSION_CHECK(std::fclose(f) == 0, "cannot write the training log '" << path_ << "': " << std::strerror(errno));
}

void TrainLog::add(std::int64_t step, double epoch, double loss, double images_per_s, double elapsed_s) const {
  std::FILE* f = std::fopen(path_.c_str(), "a");
  DIFFUSION_CHECK(f != nullptr, "cannot write the training log '" << path_ << "': " << std::strerror(errno));
  std::fprintf(f, "%lld,%.3f,%.6f,%.1f,%.1f\n", static_cast<long long>(step), epoch, loss, images_per_s, elapsed_s);
  DIFFUSION_CHECK(std::fclose(f) == 0, "cannot write the training log '" << path_ << "': " << std::strerror(errno));
}

}  // namespace examples
