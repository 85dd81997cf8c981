// Data-parallel training (options.gradient_shards, Trainer::use_communicator): R ranks give exactly the weights of
// one process, for every R dividing the shard count, also across a resume with another R; the shard gradients are
// added in shard order; ranks whose replicas differ are named. The ranks are threads here (support/thread_ranks.hpp);
// tests/integration/mpi runs the same under mpirun.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "diffusion/distributed/communicator.hpp"
#include "diffusion/distributed/gradient_sum.hpp"
#include "diffusion/train/checkpoint.hpp"
#include "diffusion/train/dataset.hpp"
#include "diffusion/train/trainer.hpp"
#include "support/thread_ranks.hpp"
#include "support/tiny_unet.hpp"

using namespace diffusion;
using diffusion::testing::ThreadRanks;

namespace {

Tensor<float> dp_squares(Index n) { return diffusion::testing::bright_squares(n, 7); }

UnetConfig dp_tiny(Index num_classes = 0) {
  UnetConfig c = diffusion::testing::tiny_unet_config(1);
  c.num_classes = num_classes;
  return c;
}

TrainerOptions dp_sharded(Index shards, Index accumulate = 1) {
  TrainerOptions o;
  o.seed = 5;
  o.gradient_shards = shards;
  o.accumulate = accumulate;
  o.replica_check_every = 1;  // every step compares the replicas too
  return o;
}

// The whole state a step changes, as bytes: weights, Adam moments, EMA.
std::vector<float> dp_state_of(const Trainer<float>& trainer) {
  const ParameterStore<float>& p = trainer.model().params();
  std::vector<float> s(p.values(), p.values() + p.size());
  s.insert(s.end(), trainer.optimizer().exp_avg(), trainer.optimizer().exp_avg() + p.size());
  s.insert(s.end(), trainer.optimizer().exp_avg_sq(), trainer.optimizer().exp_avg_sq() + p.size());
  s.insert(s.end(), trainer.ema()->shadow(), trainer.ema()->shadow() + p.size());
  return s;
}

// Byte for byte, and finite (two runs that both went to NaN are not "the same").
bool dp_same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  for (float v : a)
    if (!std::isfinite(v)) return false;
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct DpRun {
  std::vector<float> state;
  std::vector<double> losses;
};

// `steps` steps of batch 8 on the squares, on `ranks` ranks (0: one process without a communicator); every rank's
// state must be the same, and is returned.
DpRun dp_train(int ranks, Index shards, std::int64_t steps, Index num_classes = 0, Index accumulate = 1) {
  const Tensor<float> images = dp_squares(16);
  std::vector<std::int64_t> labels(16);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int64_t>(i % 3);
  BatchOptions bo;
  bo.batch_size = 8;
  bo.seed = 11;
  auto one_rank = [&](Communicator* comm, DpRun& out) {
    Unet<float> net(dp_tiny(num_classes), 3);
    TrainerOptions o = dp_sharded(shards, accumulate);
    o.cond_drop_prob = 0.5;
    Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 50), o);
    if (comm) trainer.use_communicator(*comm);
    BatchSampler<float> sampler(images, bo, num_classes > 0 ? &labels : nullptr);
    for (std::int64_t s = 0; s < steps; ++s) out.losses.push_back(trainer.step(sampler).loss);
    out.state = dp_state_of(trainer);
  };
  if (ranks == 0) {
    DpRun run;
    one_rank(nullptr, run);
    return run;
  }
  std::vector<DpRun> runs(static_cast<std::size_t>(ranks));
  ThreadRanks all(ranks);
  all.run([&](int r, Communicator& comm) { one_rank(&comm, runs[static_cast<std::size_t>(r)]); });
  for (int r = 1; r < ranks; ++r) {
    INFO("rank " << r << " of " << ranks);
    REQUIRE(dp_same_bits(runs[static_cast<std::size_t>(r)].state, runs[0].state));
    REQUIRE(runs[static_cast<std::size_t>(r)].losses == runs[0].losses);
  }
  return runs[0];
}

}  // namespace

TEST_CASE("ShardedGradientSum adds the shards in shard order on every number of ranks") {
  // In float 1e8 + 1 == 1e8, so the order of the additions shows in the result. Element j of shard s is
  // pattern[j % 2][s]: in shard order the first pattern sums to 2 (((1e8 - 1e8) + 1) + 1), backwards or pairwise
  // ((1e8 + 1) + (-1e8 + 1)) to 0; the second to 0 in shard order, but to 2 when each rank of two first adds its
  // own shards ((1 + 1) + (1e8 - 1e8)).
  const float pattern[2][4] = {{1e8f, -1e8f, 1.0f, 1.0f}, {1.0f, 1.0f, 1e8f, -1e8f}};
  const std::size_t P = 7;  // not a multiple of the ranks: the last slice is padded
  auto value = [&](Index shard, std::size_t j) { return pattern[j % 2][shard]; };
  std::vector<float> expected(P);
  for (std::size_t j = 0; j < P; ++j) {
    float acc = value(0, j);
    for (Index s = 1; s < 4; ++s) acc += value(s, j);
    expected[j] = acc;
  }
  REQUIRE(expected[0] == 2.0f);
  REQUIRE(expected[1] == 0.0f);
  for (int ranks : {1, 2, 4}) {
    INFO(ranks << " ranks");
    std::vector<std::vector<float>> results(static_cast<std::size_t>(ranks));
    ThreadRanks all(ranks);
    all.run([&](int r, Communicator& comm) {
      ShardedGradientSum<float> sum;
      sum.reset(comm, 4, P);
      const ShardRange mine = local_shards(4, r, ranks);
      for (Index i = 0; i < mine.count; ++i) {
        std::vector<float> g(P);
        for (std::size_t j = 0; j < P; ++j)
          g[j] = value(mine.first + i, j);
        sum.add(static_cast<std::size_t>(i), g.data());
      }
      std::vector<float> out(P);
      sum.finish(out.data());
      results[static_cast<std::size_t>(r)] = out;
    });
    for (const auto& out : results) REQUIRE(dp_same_bits(out, expected));
  }
}

TEST_CASE("local_shards spreads the shards over the ranks and refuses a number of ranks that does not divide them") {
  CHECK(local_shards(4, 0, 2).first == 0);
  CHECK(local_shards(4, 1, 2).first == 2);
  CHECK(local_shards(4, 1, 2).count == 2);
  CHECK(local_shards(4, 3, 4).first == 3);
  CHECK_THROWS_WITH(local_shards(3, 0, 2), Catch::Contains("must divide the number of shards"));
  ThreadRanks all(2);
  all.run([](int, Communicator& comm) {
    Unet<float> net(dp_tiny(), 3);
    Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 50), dp_sharded(3));
    CHECK_THROWS_WITH(trainer.use_communicator(comm), Catch::Contains("gradient_shards = 3 cannot be spread over 2"));
  });
}

TEST_CASE("data-parallel training on 1, 2 and 4 ranks gives the weights of one process bit for bit") {
  const DpRun one = dp_train(0, 4, 3);
  REQUIRE(one.losses.size() == 3);
  CHECK(dp_same_bits(dp_train(1, 4, 3).state, one.state));
  const DpRun two = dp_train(2, 4, 3);
  CHECK(dp_same_bits(two.state, one.state));
  CHECK(two.losses == one.losses);
  CHECK(dp_same_bits(dp_train(4, 4, 3).state, one.state));
  // The shard count is what fixes the numbers: one shard sums the gradient in another order (other bits, close).
  const DpRun unsharded = dp_train(0, 1, 3);
  CHECK(!dp_same_bits(unsharded.state, one.state));
  CHECK(unsharded.losses[0] == Approx(one.losses[0]).epsilon(1e-6));
}

TEST_CASE("data-parallel training of a class-conditional model with micro-batches equals one process") {
  const DpRun one = dp_train(0, 2, 2, 3, 2);
  const DpRun two = dp_train(2, 2, 2, 3, 2);
  CHECK(dp_same_bits(two.state, one.state));
  CHECK(two.losses == one.losses);
}

TEST_CASE("a run checkpointed on 2 ranks resumes on 1 and on 4 and continues bit for bit") {
  const std::string dir = (std::filesystem::temp_directory_path() / "diffusion_test_data_parallel").string();
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/checkpoint.safetensors";
  const Tensor<float> images = dp_squares(16);
  BatchOptions bo;
  bo.batch_size = 8;
  bo.seed = 11;
  auto make = [](Unet<float>& net) { return Trainer<float>(net, NoiseSchedule(BetaSchedule::Linear, 50), dp_sharded(4)); };
  ThreadRanks two(2);
  two.run([&](int r, Communicator& comm) {
    Unet<float> net(dp_tiny(), 3);
    Trainer<float> trainer = make(net);
    trainer.use_communicator(comm);
    BatchSampler<float> sampler(images, bo);
    for (int s = 0; s < 2; ++s) trainer.step(sampler);
    if (r == 0) save_checkpoint(path, trainer);
  });
  const DpRun straight = dp_train(0, 4, 4);
  for (int ranks : {1, 4}) {
    INFO("resumed on " << ranks << " ranks");
    std::vector<std::vector<float>> states(static_cast<std::size_t>(ranks));
    ThreadRanks all(ranks);
    all.run([&](int r, Communicator& comm) {
      Unet<float> net(dp_tiny(), 99);  // other initial weights: the checkpoint must replace them all
      Trainer<float> trainer = make(net);
      load_checkpoint(path, trainer);
      trainer.use_communicator(comm);
      BatchSampler<float> sampler(images, bo);
      for (int s = 0; s < 2; ++s) trainer.step(sampler);
      states[static_cast<std::size_t>(r)] = dp_state_of(trainer);
    });
    for (const auto& s : states) CHECK(dp_same_bits(s, straight.state));
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("ranks whose model replicas differ stop with an error naming them") {
  ThreadRanks all(3);
  std::vector<std::string> messages(3);
  all.run([&](int r, Communicator& comm) {
    Unet<float> net(dp_tiny(), 3);
    if (r == 2) net.params().values()[5] += 1.0f;
    Trainer<float> trainer(net, NoiseSchedule(BetaSchedule::Linear, 50), dp_sharded(3));
    try {
      trainer.use_communicator(comm);
    } catch (const Error& e) {
      messages[static_cast<std::size_t>(r)] = e.what();
    }
  });
  for (const auto& m : messages) {
    CHECK_THAT(m, Catch::Contains("disagree on the model replica at step 0") && Catch::Contains("rank 2 has") &&
                      !Catch::Contains("rank 1 has"));
  }
}

TEST_CASE("check_same_on_all_ranks shows the values around the first difference") {
  ThreadRanks all(2);
  all.run([](int r, Communicator& comm) {
    check_same_on_all_ranks(comm, "nothing", "same");
    CHECK_THROWS_WITH(check_same_on_all_ranks(comm, "the settings", r == 0 ? "{\"lr\":0.001}" : "{\"lr\":0.002}"),
                      Catch::Contains("disagree on the settings: rank 1 has '{\"lr\":0.002}' where rank 0 has "
                                      "'{\"lr\":0.001}'"));
    CHECK(comm.all_gather_strings(std::string(static_cast<std::size_t>(r) * 3, 'x')) ==
          std::vector<std::string>{"", "xxx"});
  });
}

TEST_CASE("BatchSampler::batch_part gives exactly the images and labels of the batch's slice") {
  const Tensor<float> images = dp_squares(16);
  std::vector<std::int64_t> labels(16);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int64_t>(i);
  BatchOptions bo;
  bo.batch_size = 6;  // 16 = 6 + 6 + 4: the last batch is smaller
  bo.seed = 3;
  BatchSampler<float> sampler(images, bo, &labels);
  for (std::int64_t step : {0, 2, 4}) {
    Tensor<float> whole, part;
    std::vector<std::int64_t> whole_labels, part_labels;
    sampler.batch(step, whole, whole_labels);
    const Index B = sampler.batch_size_of(step);
    REQUIRE(whole.dim(0) == B);
    for (Index begin : {Index(0), Index(1), B / 2}) {
      const Index end = std::min(B, begin + 3);
      sampler.batch_part(step, begin, end, part, part_labels);
      REQUIRE(part.dim(0) == end - begin);
      const Index per = 64;
      CHECK(std::memcmp(part.data(), whole.data() + begin * per, static_cast<std::size_t>((end - begin) * per) * sizeof(float)) == 0);
      CHECK(std::vector<std::int64_t>(whole_labels.begin() + begin, whole_labels.begin() + end) == part_labels);
    }
  }
  Tensor<float> out;
  CHECK_THROWS_WITH(sampler.batch_part(5, 2, 5, out), Catch::Contains("images [2, 5) of step 5's batch of 4"));
}
