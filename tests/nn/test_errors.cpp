// Wrong shapes raise diffusion::Error naming the layer and both shapes.
#include <catch2/catch.hpp>

#include "diffusion/nn/attention.hpp"
#include "diffusion/nn/conv2d.hpp"
#include "diffusion/nn/conv_transpose2d.hpp"
#include "diffusion/nn/group_norm.hpp"
#include "diffusion/nn/linear.hpp"
#include "diffusion/nn/tensor_ops.hpp"

using namespace diffusion;
using Catch::Contains;

TEST_CASE("layers reject channel counts not divisible by groups, naming the layer") {
  ParameterStore<float> s;
  REQUIRE_THROWS_WITH(nn::Conv2d<float>(s, "downs.0.0.ds_conv", 6, 6, 7, 1, 3, 4),
                      Contains("downs.0.0.ds_conv") && Contains("in_channels 6") && Contains("groups 4"));
  REQUIRE_THROWS_WITH(nn::Conv2d<float>(s, "c", 4, 6, 3, 1, 1, 4), Contains("out_channels 6"));
  REQUIRE_THROWS_WITH(nn::GroupNorm<float>(s, "block1.norm", 3, 8),
                      Contains("block1.norm") && Contains("channels 8") && Contains("groups 3"));
  REQUIRE_THROWS_WITH(nn::ConvTranspose2d<float>(s, "up", 6, 4, 4, 2, 1, 4), Contains("up"));
}

TEST_CASE("layers reject mismatched inputs, naming the layer and both shapes") {
  ParameterStore<float> s;
  nn::Conv2d<float> conv(s, "init_conv", 3, 8, 7, 1, 3);
  Tensor<float> y;
  REQUIRE_THROWS_WITH(conv.forward(Tensor<float>(Shape{2, 5, 7, 7}), y),
                      Contains("init_conv") && Contains("(2, 5, 7, 7)") && Contains("(8, 3, 7, 7)"));
  REQUIRE_THROWS_WITH(conv.forward(Tensor<float>(Shape{2, 3, 7}), y), Contains("(2, 3, 7)"));
  nn::ConvTranspose2d<float> up(s, "ups.0.3", 4, 4, 4, 2, 1);
  REQUIRE_THROWS_WITH(up.forward(Tensor<float>(Shape{1, 3, 5, 5}), y),
                      Contains("ups.0.3") && Contains("(1, 3, 5, 5)") && Contains("(4, 4, 4, 4)"));
  nn::Linear<float> lin(s, "time_mlp.1", 28, 112);
  REQUIRE_THROWS_WITH(lin.forward(Tensor<float>(Shape{4, 27}), y),
                      Contains("time_mlp.1") && Contains("(4, 27)") && Contains("(112, 28)"));
  nn::GroupNorm<float> norm(s, "net.0", 1, 8);
  REQUIRE_THROWS_WITH(norm.forward(Tensor<float>(Shape{2, 6, 3, 3}), y), Contains("net.0") && Contains("(2, 6, 3, 3)"));
  nn::Standalone<nn::Attention<float>> attn(s, "mid_attn.fn.fn", 8);
  REQUIRE_THROWS_WITH(attn.forward(Tensor<float>(Shape{2, 6, 3, 3}), y),
                      Contains("mid_attn.fn.fn.to_qkv") && Contains("(2, 6, 3, 3)"));
  Tensor<float> dx(Shape{2, 3, 7, 7});
  conv.forward(Tensor<float>(Shape{2, 3, 7, 7}), y);
  REQUIRE_THROWS_WITH(conv.backward(Tensor<float>(Shape{2, 3, 7, 7}), Tensor<float>(Shape{2, 8, 5, 5}), &dx),
                      Contains("init_conv") && Contains("(2, 8, 7, 7)") && Contains("(2, 8, 5, 5)"));
  Tensor<float> out;
  REQUIRE_THROWS_WITH(nn::concat_channels(Tensor<float>(Shape{2, 3, 7, 7}), Tensor<float>(Shape{2, 3, 14, 14}), out),
                      Contains("(2, 3, 7, 7)") && Contains("(2, 3, 14, 14)"));
}
