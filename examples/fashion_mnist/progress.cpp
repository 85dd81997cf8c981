#include "progress.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "diffusion/core/error.hpp"

namespace fashion_mnist {

EvalLog::EvalLog(std::string path) : path_(std::move(path)) {
  std::error_code ec;
  const bool fresh = !std::filesystem::exists(path_, ec) || std::filesystem::file_size(path_, ec) == 0;
  if (!fresh) return;
  std::FILE* f = std::fopen(path_.c_str(), "a");
  DIFFUSION_CHECK(f != nullptr, "cannot write the evaluation log '" << path_ << "': " << std::strerror(errno));
  std::fprintf(f, "step,epoch,n,fid,kid_mean,kid_std,precision,recall,eval_s\n");
  DIFFUSION_CHECK(std::fclose(f) == 0, "cannot write the evaluation log '" << path_ << "': " << std::strerror(errno));
}

void EvalLog::add(std::int64_t step, double epoch, const diffusion::metrics::SampleReport& r, double seconds) const {
  std::FILE* f = std::fopen(path_.c_str(), "a");
  DIFFUSION_CHECK(f != nullptr, "cannot write the evaluation log '" << path_ << "': " << std::strerror(errno));
  std::fprintf(f, "%lld,%.3f,%lld,%.6f,%.6f,%.6f,%.6f,%.6f,%.1f\n", static_cast<long long>(step), epoch,
               static_cast<long long>(r.count), r.fid.distance, r.kid.mean, r.kid.std, r.pr.precision, r.pr.recall,
               seconds);
  DIFFUSION_CHECK(std::fclose(f) == 0, "cannot write the evaluation log '" << path_ << "': " << std::strerror(errno));
}

}  // namespace fashion_mnist
