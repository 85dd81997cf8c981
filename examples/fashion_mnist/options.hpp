#pragma once
// The command-line options of `fashion_mnist train` and `fashion_mnist sample`, their defaults, and how they travel
// in a checkpoint's metadata (as JSON, keyed by flag name without the dashes) so that `sample` and `train --resume`
// know the configuration a model was trained with.

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/option_table.hpp"
#include "diffusion/model/unet_config.hpp"
#include "diffusion/model/unet_plan.hpp"

namespace fashion_mnist {

// The default training length: 2 epochs (1,876 steps of 64). With the default recipe below (batch 64, Adam lr 2e-3
// warmed up over 400 steps and decayed to 0 along a cosine, bf16 matmuls) two epochs reach the quality that the
// primer's recipe (batch 128, constant lr 1e-3, fp32) reaches after five, in about a third of its time (README.md,
// "Time to garments", has the measurements). The one place to change it.
inline constexpr int kDefaultEpochs = 2;

inline constexpr const char* kDefaultDataDir = "/usr/share/datasets/fashion-mnist";
inline constexpr const char* kTrainImagesFile = "train-images-idx3-ubyte.gz";
inline constexpr const char* kTrainLabelsFile = "train-labels-idx1-ubyte.gz";  // read by `train --conditional`
inline constexpr int kNumClasses = 10;  // Fashion-MNIST's classes: a conditional model's num_classes
inline constexpr const char* kOptionsKey = "fashion_mnist.options";  // checkpoint / weights metadata
inline constexpr const char* kRunKey = "fashion_mnist.run";          // checkpoint metadata: elapsed time

struct TrainOptions {
  // Configuration: fixes the model, the noise, the data order. A resumed run must keep it.
  std::string schedule = "linear";  // linear | cosine | quadratic | sigmoid
  int timesteps = 1000;             // T: 1000 as Ho et al.; see README (200 leaves 37% signal at t = T)
  std::string loss = "l2";          // L_simple (Ho et al.); the primer's loop shows "huber", also available
  std::string prediction = "eps";   // eps | x0 | v
  std::string block = "convnext";   // convnext | resnet
  int dim = 28;
  std::vector<int> dim_mults = {1, 2, 4};
  int batch = 64;  // twice the primer's updates per epoch (128), at the same speed per image
  double min_snr_gamma = 0.0;  // Min-SNR-gamma loss weighting (process/loss_weighting.hpp); 0: off
  std::uint64_t seed = 0;
  double ema_decay = 0.995;  // 0 disables the EMA
  // Class-conditional training (the labels of train-labels-idx1-ubyte.gz), each label replaced by "no class" with
  // probability cond_drop_prob so that one network learns both predictions classifier-free guidance combines.
  bool conditional = false;
  double cond_drop_prob = 0.1;
  // Data-parallel runs (mpirun -np R): the batch's parts whose gradients are added in a fixed order, so that any R
  // dividing it gives the same weights. 0: the number of ranks of a new run.
  int gradient_shards = 0;
  // Optimiser settings: a resumed run may change them (a note is printed), e.g. to get past a divergence.
  double lr = 2e-3;  // the peak of the schedule below (the primer: 1e-3, constant)
  // The learning-rate schedule (train/lr_schedule.hpp): warm-up steps, then none | cosine | linear decay to
  // lr_min x lr at the run's last step.
  // A new run no longer than the warm-up without --lr-warmup (a quick try) warms up for a tenth of its steps.
  std::int64_t lr_warmup = 400;
  std::string lr_decay = "cosine";
  double lr_min = 0.0;
  double grad_clip = 0.0;  // max global gradient norm; 0 disables clipping
  // Length: --steps wins over --epochs.
  int epochs = kDefaultEpochs;
  std::int64_t steps = 0;
  // Run settings: free to change on resume.
  std::string data = kDefaultDataDir;
  std::string out = "results/fashion_mnist";
  std::string resume;
  int threads = 0;  // 0: OpenMP's default
  // fp32 | bf16: the GEMMs of the training steps (kernels/precision.hpp). bf16 trains 1.1-1.3x faster at the same
  // FID (README.md, "Time to garments"); where the CPU lacks AVX512_BF16 it runs fp32 and the summary line says so.
  std::string precision = "bf16";
  std::int64_t sample_every = 0;
  std::int64_t checkpoint_every = 200;
  int final_samples = 64;
  std::string final_sampler = "ddpm";
  double final_guidance = 3.0;  // guidance scale w of a conditional run's final class grid, previews and evaluations
  // Measured quality while training (`eval`'s metrics against the test set in --data): every N steps, M samples.
  std::int64_t eval_every = 0;
  int eval_n = 1000;
};

struct SampleOptions {
  std::string checkpoint;
  std::string sampler = "ddim";  // any name of diffusion::parse_sampler: ddpm | ddim | euler | dpmpp_2m | ...
  int steps = 50;                // sampling steps (ddpm always takes all T)
  std::string spacing = "linspace";  // where they fall among the T timesteps: linspace | leading | trailing | karras
  double eta = 0.0;              // used when --eta is given; otherwise the sampler's default
  bool clip_x0 = true;  // clip the predicted x0 to [-1, 1] at every step
  std::string precision = "fp32";  // fp32 | bf16: the GEMMs of the model calls (kernels/precision.hpp)
  int n = 64;
  std::uint64_t seed = 0;
  std::string x_T;         // safetensors file with a tensor "x_T" (N, C, H, W)
  std::string out = "samples.png";
  std::string tensor_out;  // safetensors file, tensor "x_0" (N, C, H, W) F32
  std::string gif;
  int threads = 0;
  // Class-conditional models: every image of class_id (kNullClass = -1: no class, the unconditional prediction), or
  // when not given a class grid (sample) or the classes in turn (eval); guidance scale w and rescaled_phi.
  std::optional<int> class_id;
  double guidance = 0.0;
  double rescaled_phi = 0.0;
  // For a weights file without our metadata (e.g. a PyTorch state_dict exported to safetensors).
  std::string block = "convnext";
  int dim = 28;
  std::vector<int> dim_mults = {1, 2, 4};
  int channels = 1;
  int image_size = 28;
  std::string schedule = "linear";
  int timesteps = 200;
  std::string prediction = "eps";
};

// The classifier whose features `eval` measures in (examples/fashion_classifier; FASHION_MNIST_CLASSIFIER is set by
// examples/CMakeLists.txt to the committed weights in the source tree).
#ifdef FASHION_MNIST_CLASSIFIER
inline constexpr const char* kDefaultClassifier = FASHION_MNIST_CLASSIFIER;
#else
inline constexpr const char* kDefaultClassifier = "fashion_classifier.safetensors";
#endif

// `fashion_mnist eval`: sample n images and measure them against real ones (FID, KID, precision, recall and the
// class histogram in the classifier's feature space).
struct EvalOptions {
  SampleOptions sample;  // the model and the sampler (the output flags of `sample` are not used)
  int n = 10000;
  int batch = 250;
  std::string data = kDefaultDataDir;
  std::string reference = "test";  // test (t10k) | train
  std::string classifier = kDefaultClassifier;
  std::string cache;  // "" : reference_<reference>.safetensors in the checkpoint's folder
  std::string json;
};

// The helpers every option table uses (examples/common/option_table.hpp), under the names this program has always
// used for them.
using examples::given_flags;
using examples::in_range;
using examples::int_list_text;
using examples::json_brief;
using examples::NumberRange;
using examples::parse_int_list;
using examples::stored_integer;
using examples::stored_number;

// `train`'s options, one row each (flag, member, how a resumed run treats it, help, accepted values): the table
// behind add_train_flags, to_json, train_options_from_json and merge_resume_options.
const std::vector<examples::OptionRow<TrainOptions>>& train_option_rows();

// Registers the flags of each subcommand on `app`, bound to `o`.
void add_train_flags(CLI::App& app, TrainOptions& o);
void add_sample_flags(CLI::App& app, SampleOptions& o);
void add_eval_flags(CLI::App& app, EvalOptions& o);

// TrainOptions <-> JSON keyed by flag name. train_options_from_json reads options stored in a file (`source`,
// named in error messages) as strictly as the flags: every key present, integers as JSON integers, every value in its
// flag's range or set; otherwise a diffusion::Error naming the file, the metadata key and the option.
nlohmann::json to_json(const TrainOptions& o);
TrainOptions train_options_from_json(const nlohmann::json& j, const std::string& source);

// The options of a resumed run: flags given on the command line win; the rest come from the checkpoint's stored
// options. Throws diffusion::Error naming every configuration flag that differs from the checkpoint. `notes`
// receives a line for each optimiser setting that changes.
TrainOptions merge_resume_options(const TrainOptions& flags, const std::set<std::string>& given,
                                  const nlohmann::json& stored, const std::string& checkpoint,
                                  std::vector<std::string>& notes);

// The U-Net of a configuration (num_classes 0: unconditional).
diffusion::UnetConfig unet_config(const std::string& block, int dim, const std::vector<int>& dim_mults, int channels,
                                  int num_classes = 0);

// plan_unet(config) (the network's parameters, known before anything is allocated), its errors prefixed with
// "invalid model flags (--dim, --dim-mults, --block): ".
diffusion::UnetPlan plan_model(const diffusion::UnetConfig& config);

}  // namespace fashion_mnist
