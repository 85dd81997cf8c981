// fashion_classifier: trains the feature extractor of the Fashion-MNIST metrics (model/fashion_classifier.hpp)
// and uses it. See README.md in this folder.
//   train     seeded, bit-reproducible training (same build, same CPU); writes the weights (safetensors)
//   test      test-set accuracy of a weights file
//   evaluate  FID / KID / precision / recall / class histogram of an IDX image file against the reference
//             statistics (cached), with the time taken
// Errors are one line on stderr and exit status 1; usage errors exit with 2.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <numeric>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "diffusion/core/parallel.hpp"
#include "diffusion/core/random.hpp"
#include "diffusion/io/idx.hpp"
#include "diffusion/metrics/fashion_mnist.hpp"
#include "diffusion/model/fashion_classifier.hpp"
#include "diffusion/nn/cross_entropy.hpp"
#include "diffusion/train/adam.hpp"

using namespace diffusion;

namespace {

struct TrainOptions {
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string out = "fashion_classifier.safetensors";
  int epochs = 4;
  Index batch_size = 128;
  double lr = 1e-3;
  std::string lr_schedule = "cosine";  // constant or cosine (lr * (1 + cos(pi step / steps)) / 2)
  std::int64_t max_steps = 0;          // stop after this many steps (0: all epochs); for quick reproducibility checks
  std::uint64_t seed = 0;
  bool flip = true;
  int threads = 0;
};

struct TestOptions {
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string weights = "examples/fashion_classifier/fashion_classifier.safetensors";
  int threads = 0;
};

struct EvaluateOptions {
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string weights = "examples/fashion_classifier/fashion_classifier.safetensors";
  std::string images;           // IDX images to evaluate
  Index n = 10000;              // the first n of them
  std::string reference = "t10k";  // t10k or train: the reference set in `data`
  std::string cache;            // reference statistics cache ("" : none)
  int threads = 0;
};

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double accuracy(FashionClassifier<float>& net, const Tensor<float>& images, const std::vector<std::int64_t>& labels) {
  const Index N = images.dim(0), per = images.numel() / N, B = 500;
  Tensor<float> batch, logits;
  Index correct = 0;
  for (Index b = 0; b < N; b += B) {
    const Index n = std::min(B, N - b);
    batch.resize(Shape{n, 1, images.dim(2), images.dim(3)});
    std::copy(images.data() + b * per, images.data() + (b + n) * per, batch.data());
    net.forward(batch, logits);
    const auto pred = metrics::FashionMnistExtractor::argmax_rows(logits);
    for (Index i = 0; i < n; ++i) correct += pred[static_cast<std::size_t>(i)] == labels[static_cast<std::size_t>(b + i)];
  }
  return static_cast<double>(correct) / static_cast<double>(N);
}

int run_train(const TrainOptions& o, const std::string& command_line) {
  if (o.threads > 0) set_num_threads(o.threads);
  const Tensor<float> images = io::load_idx_images<float>(o.data + "/train-images-idx3-ubyte.gz");
  const std::vector<std::int64_t> labels = metrics::load_idx_labels(o.data + "/train-labels-idx1-ubyte.gz");
  const Tensor<float> test_images = io::load_idx_images<float>(o.data + "/t10k-images-idx3-ubyte.gz");
  const std::vector<std::int64_t> test_labels = metrics::load_idx_labels(o.data + "/t10k-labels-idx1-ubyte.gz");
  DIFFUSION_CHECK(static_cast<Index>(labels.size()) == images.dim(0), "train: " << labels.size() << " labels for "
                                                                                << images.dim(0) << " images");
  DIFFUSION_CHECK(o.epochs > 0 && o.batch_size > 0, "train: epochs and batch size must be positive");
  const Index N = images.dim(0), H = images.dim(2), W = images.dim(3), B = o.batch_size;
  FashionClassifier<float> net(FashionClassifierConfig{}, o.seed);
  AdamOptions adam_options;
  adam_options.lr = o.lr;
  Adam<float> adam(adam_options);
  nn::CrossEntropyLoss<float> loss;
  Tensor<float> batch(Shape{B, 1, H, W}), logits, dlogits;
  std::vector<std::int64_t> batch_labels;
  DIFFUSION_CHECK(o.lr_schedule == "constant" || o.lr_schedule == "cosine",
                  "train: --lr-schedule must be constant or cosine, got '" << o.lr_schedule << "'");
  const std::int64_t total_steps = static_cast<std::int64_t>(o.epochs) * ((N + B - 1) / B);
  std::printf("training FashionClassifier (%zu parameters) on %lld images: %d epochs (%lld steps), batch %lld, Adam "
              "lr %g (%s), seed %llu, flips %s, %d threads\n",
              net.params().count(), static_cast<long long>(N), o.epochs, static_cast<long long>(total_steps),
              static_cast<long long>(B), o.lr, o.lr_schedule.c_str(), static_cast<unsigned long long>(o.seed),
              o.flip ? "on" : "off", max_threads());
  const auto start = std::chrono::steady_clock::now();
  std::int64_t step = 0;
  double test_acc = 0.0;
  for (int epoch = 0; epoch < o.epochs && (o.max_steps == 0 || step < o.max_steps); ++epoch) {
    // Epoch order: a Fisher-Yates shuffle from Rng(seed).fork(epoch + 1); flips from .fork(1000 + epoch).
    std::vector<Index> order(static_cast<std::size_t>(N));
    std::iota(order.begin(), order.end(), Index{0});
    Rng shuffle = Rng(o.seed).fork(static_cast<std::uint64_t>(epoch + 1));
    for (Index i = N - 1; i > 0; --i)
      std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(shuffle.uniform_int(i + 1))]);
    Rng flips = Rng(o.seed).fork(static_cast<std::uint64_t>(1000 + epoch));
    double running = 0.0;
    Index running_n = 0;
    for (Index b = 0; b < N && (o.max_steps == 0 || step < o.max_steps); b += B) {
      const Index n = std::min(B, N - b);
      batch.resize(Shape{n, 1, H, W});
      batch_labels.resize(static_cast<std::size_t>(n));
      for (Index i = 0; i < n; ++i) {
        const Index src = order[static_cast<std::size_t>(b + i)];
        const float* in = images.data() + src * H * W;
        float* out = batch.data() + i * H * W;
        const bool flip = o.flip && (flips.next_u32() & 1u);
        for (Index h = 0; h < H; ++h)
          for (Index w = 0; w < W; ++w) out[h * W + w] = in[h * W + (flip ? W - 1 - w : w)];
        batch_labels[static_cast<std::size_t>(i)] = labels[static_cast<std::size_t>(src)];
      }
      net.params().zero_grad();
      net.forward(batch, logits);
      running += loss.forward(logits, batch_labels);
      ++running_n;
      dlogits.resize(logits.shape());
      dlogits.zero();
      loss.backward(logits, batch_labels, dlogits);
      net.backward(dlogits);
      if (o.lr_schedule == "cosine")
        adam.set_lr(o.lr * 0.5 * (1.0 + std::cos(3.14159265358979323846 * static_cast<double>(step) /
                                                 static_cast<double>(total_steps))));
      adam.step(net.params());
      ++step;
      if (step % 100 == 0) {
        std::printf("epoch %d step %lld: loss %.4f (%.0f s)\n", epoch + 1, static_cast<long long>(step),
                    running / static_cast<double>(running_n), seconds_since(start));
        std::fflush(stdout);
        running = 0.0;
        running_n = 0;
      }
    }
    test_acc = accuracy(net, test_images, test_labels);
    std::printf("epoch %d done: test accuracy %.4f (%.0f s)\n", epoch + 1, test_acc, seconds_since(start));
    std::fflush(stdout);
  }
  char acc[32];
  std::snprintf(acc, sizeof(acc), "%.4f", test_acc);
  save_fashion_classifier(net, o.out,
                          {{"diffusion.fashion_classifier.training",
                            nlohmann::json{{"command", command_line},
                                           {"epochs", o.epochs},
                                           {"batch_size", o.batch_size},
                                           {"lr", o.lr},
                                           {"lr_schedule", o.lr_schedule},
                                           {"seed", o.seed},
                                           {"flip", o.flip},
                                           {"steps", step},
                                           {"test_accuracy", acc}}
                                .dump()}});
  std::printf("wrote %s (test accuracy %s, %.0f s)\n", o.out.c_str(), acc, seconds_since(start));
  return 0;
}

int run_test(const TestOptions& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  const Tensor<float> images = io::load_idx_images<float>(o.data + "/t10k-images-idx3-ubyte.gz");
  const std::vector<std::int64_t> labels = metrics::load_idx_labels(o.data + "/t10k-labels-idx1-ubyte.gz");
  auto net = load_fashion_classifier<float>(o.weights);
  const auto t0 = std::chrono::steady_clock::now();
  const double acc = accuracy(*net, images, labels);
  std::printf("test accuracy %.4f (%lld images, %.2f s)\n", acc, static_cast<long long>(images.dim(0)),
              seconds_since(t0));
  return 0;
}

int run_evaluate(const EvaluateOptions& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  DIFFUSION_CHECK(o.reference == "t10k" || o.reference == "train",
                  "evaluate: --reference must be t10k or train, got '" << o.reference << "'");
  metrics::FashionMnistMetricsOptions mo;
  mo.classifier = o.weights;
  mo.reference_images = o.data + "/" + o.reference + "-images-idx3-ubyte.gz";
  mo.cache = o.cache;
  const auto t0 = std::chrono::steady_clock::now();
  metrics::FashionMnistMetrics fm(mo);
  std::printf("reference statistics: %s from %s (%lld images)%s%s (%.1f s)\n",
              metrics::cache_status_name(fm.reference_status()), o.cache.empty() ? "(no cache)" : o.cache.c_str(),
              static_cast<long long>(fm.reference().gaussian.count), fm.reference_reason().empty() ? "" : ": ",
              fm.reference_reason().c_str(), seconds_since(t0));
  Tensor<float> images = io::load_idx_images<float>(o.images);
  DIFFUSION_CHECK(o.n >= 2 && o.n <= images.dim(0), "evaluate: --n " << o.n << " outside [2, " << images.dim(0) << "]");
  Tensor<float> subset(Shape{o.n, images.dim(1), images.dim(2), images.dim(3)});
  std::copy(images.data(), images.data() + subset.numel(), subset.data());
  const metrics::SampleReport r = fm.evaluate(subset);
  std::printf("%s\n", r.summary().c_str());
  std::printf("time: features %.2f s, metrics %.2f s\n", r.extract_seconds, r.metric_seconds);
  std::printf("class histogram:");
  for (std::size_t c = 0; c < r.class_histogram.size(); ++c)
    std::printf(" %s %lld%s", metrics::kFashionMnistClasses[c], static_cast<long long>(r.class_histogram[c]),
                c + 1 < r.class_histogram.size() ? "," : "\n");
  std::printf("%s\n", r.to_json().dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train and use the Fashion-MNIST classifier behind the sample-quality metrics.", "fashion_classifier"};
  app.require_subcommand(1);
  app.option_defaults()->always_capture_default();

  TrainOptions train_options;
  CLI::App* train = app.add_subcommand("train", "train the classifier (seeded, reproducible)");
  train->add_option("--data", train_options.data, "folder with the Fashion-MNIST IDX files");
  train->add_option("--out", train_options.out, "weights file to write (safetensors)");
  train->add_option("--epochs", train_options.epochs, "passes over the 60,000 training images")->check(CLI::PositiveNumber);
  train->add_option("--batch-size", train_options.batch_size, "images per step")->check(CLI::PositiveNumber);
  train->add_option("--lr", train_options.lr, "Adam learning rate")->check(CLI::PositiveNumber);
  train->add_option("--lr-schedule", train_options.lr_schedule, "constant or cosine (decays to 0 over the run)");
  train->add_option("--steps", train_options.max_steps, "stop after this many steps (0: all epochs)")
      ->check(CLI::NonNegativeNumber);
  train->add_option("--seed", train_options.seed, "seed of the initial weights, data order and flips");
  train->add_flag("--flip,!--no-flip", train_options.flip, "random horizontal flips (p = 1/2)");
  train->add_option("--threads", train_options.threads, "OpenMP threads (0: OpenMP's default)");

  TestOptions test_options;
  CLI::App* test = app.add_subcommand("test", "test-set accuracy of a weights file");
  test->add_option("--data", test_options.data, "folder with the Fashion-MNIST IDX files");
  test->add_option("--weights", test_options.weights, "classifier weights (safetensors)");
  test->add_option("--threads", test_options.threads, "OpenMP threads (0: OpenMP's default)");

  EvaluateOptions eval_options;
  CLI::App* evaluate = app.add_subcommand("evaluate", "FID/KID/precision/recall of IDX images against a reference set");
  evaluate->add_option("--images", eval_options.images, "IDX image file to evaluate")->required();
  evaluate->add_option("--n", eval_options.n, "evaluate the first n images");
  evaluate->add_option("--data", eval_options.data, "folder with the Fashion-MNIST IDX files");
  evaluate->add_option("--reference", eval_options.reference, "reference set: t10k or train");
  evaluate->add_option("--weights", eval_options.weights, "classifier weights (safetensors)");
  evaluate->add_option("--cache", eval_options.cache, "reference statistics cache file (empty: no cache)");
  evaluate->add_option("--threads", eval_options.threads, "OpenMP threads (0: OpenMP's default)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::string command_line;
  for (int i = 1; i < argc; ++i) command_line += (i > 1 ? " " : "") + std::string(argv[i]);
  try {
    if (*train) return run_train(train_options, "fashion_classifier " + command_line);
    if (*test) return run_test(test_options);
    if (*evaluate) return run_evaluate(eval_options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fashion_classifier: error: %s\n", one_line(e.what()).c_str());
    return 1;
  }
  return 0;
}
