// fashion_mnist: trains the primer's DDPM on Fashion-MNIST (`train`), samples from a trained model (`sample`) and
// measures its samples (`eval`).
// See README.md in this folder. Errors are one line on stderr and exit status 1; usage errors exit with 2.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>

#include "common/ranks.hpp"
#include "evaluation.hpp"
#include "options.hpp"
#include "sampling.hpp"
#include "training.hpp"

namespace {

// Error messages stay on one line, whatever the library put in them.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && (s.back() == ' ' || s.back() == '.')) s.pop_back();
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    examples::Ranks::init(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fashion_mnist: %s.\n", one_line(e.what()).c_str());
    return 1;
  }
  CLI::App app{"Train a denoising diffusion model on Fashion-MNIST, and sample from it.", "fashion_mnist"};
  app.require_subcommand(1);
  app.option_defaults()->always_capture_default();

  fashion_mnist::TrainOptions train_options;
  CLI::App* train = app.add_subcommand("train", "train a U-Net (the primer's recipe by default)");
  fashion_mnist::add_train_flags(*train, train_options);

  fashion_mnist::SampleOptions sample_options;
  CLI::App* sample = app.add_subcommand("sample", "sample images from a checkpoint or a weights file");
  fashion_mnist::add_sample_flags(*sample, sample_options);

  fashion_mnist::EvalOptions eval_options;
  CLI::App* eval = app.add_subcommand("eval", "measure a model's samples: FID, KID, precision, recall, classes");
  fashion_mnist::add_eval_flags(*eval, eval_options);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    DIFFUSION_CHECK(*train || examples::Ranks::get().size() == 1,
                    "only `train` runs on several ranks; run `sample` and `eval` as one process");
    if (*train) return fashion_mnist::run_train(train_options, fashion_mnist::given_flags(*train));
    if (*eval) return fashion_mnist::run_eval(eval_options, fashion_mnist::given_flags(*eval));
    return fashion_mnist::run_sample(sample_options, fashion_mnist::given_flags(*sample));
  } catch (const std::exception& e) {
    if (examples::Ranks::get().size() > 1) examples::Ranks::get().fail("fashion_mnist", one_line(e.what()), 1);
    std::fflush(stdout);
    std::fprintf(stderr, "fashion_mnist: %s.\n", one_line(e.what()).c_str());
    return 1;
  }
}
