#pragma once
// Progress of a training run, shared by the example programs: a one-line display on stderr and a CSV log with a
// line per epoch.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>


namespace examples {

// "1:02:03" / "2:03".
std::string format_duration(double seconds);

// Wall seconds since `start`.
double seconds_since(std::chrono::steady_clock::time_point start);

// On a terminal: one line, redrawn at most 4 times a second:
//   step 120/469 (25.6%) | epoch 1/1 | loss 0.0712 | 85.3 img/s | elapsed 1:23 | left 4:10
// Elsewhere (a log file, a pipe): the same text as a full line every 30 seconds, so logs stay short.
class ProgressDisplay {
 public:
  // first_step: the step this process starts at (> 0 when resuming); elapsed_before: seconds of earlier sessions.
  // stream null: counts without printing (the ranks of a data-parallel run other than the leader).
  ProgressDisplay(std::int64_t first_step, std::int64_t total_steps, std::int64_t steps_per_epoch,
                  double elapsed_before, std::FILE* stream = stderr);

  // After each optimisation step: `step` steps are done in all, the last one had this loss on `images` images
  // and took `step_seconds` (data + forward + backward + update; sampling and checkpoints are not counted).
  void update(std::int64_t step, double loss, std::int64_t images, double step_seconds);
  // A message on its own line, the progress line redrawn after it.
  void note(const std::string& text);
  // Ends the display: closes the progress line on a terminal (before an error message or the summary).
  void finish();

  double elapsed() const;             // wall seconds, earlier sessions included
  double images_per_second() const;   // over this session's steps
  double mean_loss() const;           // over the last (up to) 100 steps

 private:
  std::string line() const;
  void draw(bool force);
  void clear_line();

  std::FILE* stream_;
  bool interactive_;
  std::int64_t first_step_, total_steps_, steps_per_epoch_, step_;
  double elapsed_before_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  double train_seconds_ = 0.0;
  std::int64_t images_ = 0;
  std::vector<double> window_;  // ring buffer of recent losses
  std::size_t window_next_ = 0;
  bool line_open_ = false;      // a progress line is on the terminal without its newline
  bool drawn_ = false;
};

// out/train_log.csv: "step,epoch,loss,images_per_s,elapsed_s", one line per epoch (and one at the end of a run
// that stops inside an epoch). Appends, so a resumed run continues the same file.
class TrainLog {
 public:
  // Creates the file with its header line unless it exists (a resumed run appends); create false: only names it.
  explicit TrainLog(std::string path, bool create = true);
  void add(std::int64_t step, double epoch, double loss, double images_per_s, double elapsed_s) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace examples
