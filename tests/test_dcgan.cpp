// DCGAN: shapes for both image sizes (conditional or not), the concat op's gradient, and a short adversarial
// training run on Fashion-MNIST images whose losses stay finite and whose discriminator learns.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "aigc/autograd.h"
#include "aigc/gan_trainer.h"
#include "aigc/image_data.h"
#include "aigc/models/dcgan.h"
#include "aigc/ops.h"
#include "aigc/optim.h"
#include "aigc/rng.h"
#include "aigc/safetensors.h"
#include "layer_oracle.h"
#include "test_util.h"

using namespace aigc;

TEST(Dcgan, ShapesForBothSizesAndConditioning) {
  for (int64_t size : {28, 32})
    for (int64_t classes : {0, 10}) {
      DCGANConfig c;
      c.image_size = size, c.channels = size == 28 ? 1 : 3, c.nz = 16, c.ngf = 8, c.ndf = 8, c.n_classes = classes;
      Generator g(c);
      Discriminator d(c);
      Rng rng(1);
      Tensor z = randn({5, 16}, rng), labels = Tensor::from_ints({0, 3, 9, 1, 2}, {5});
      NoGradGuard ng;
      Tensor img = g.forward(z, labels, true);
      ASSERT_EQ(img.shape(), (Shape{5, c.channels, size, size}));
      for (float v : img.to_vector()) ASSERT_TRUE(v >= -1.0f && v <= 1.0f);
      ASSERT_EQ(d.forward(img, labels, true).shape(), (Shape{5}));
      EXPECT_EQ(DCGANConfig::from_json(c.to_json()).to_json(), c.to_json());
    }
}

TEST(GradCheck, ConcatChannels) {
  Rng rng(3);
  Tensor a = randn({2, 3, 2, 2}, rng), b = randn({2, 1, 2, 2}, rng);
  a.set_requires_grad(true), b.set_requires_grad(true);
  Tensor out = ops::concat_channels(a, b);
  ASSERT_EQ(out.shape(), (Shape{2, 4, 2, 2}));
  std::vector<float> index(static_cast<size_t>(out.numel()));
  for (size_t i = 0; i < index.size(); i++) index[i] = float(i);
  aigc::testing::backward_from(out, index);
  // Each input element's gradient is the index of the output element it was copied to.
  EXPECT_EQ(a.grad().f32()[0], 0.0f);
  EXPECT_EQ(b.grad().f32()[0], 12.0f);   // batch 0, channel 3
  EXPECT_EQ(a.grad().f32()[12], 16.0f);  // batch 1, channel 0
  EXPECT_EQ(b.grad().f32()[7], 31.0f);   // batch 1, channel 3, last pixel
}

TEST(Dcgan, ShortAdversarialRunStaysFiniteAndDLearns) {
  ImageSet data;
  if (std::filesystem::exists("/usr/share/datasets/fashion-mnist")) {
    data = load_image_dataset("fashion-mnist", "test");
  } else {  // a synthetic stand-in: bright squares on a dark background
    data.n = 256, data.channels = 1, data.height = 28, data.width = 28;
    for (int64_t i = 0; i < data.n; i++)
      for (int64_t p = 0; p < 784; p++) data.pixels.push_back((p / 28 % 14 < 7) == (p % 28 % 14 < 7) ? 230 : 20);
    data.labels.assign(size_t(data.n), 0);
  }
  DCGANConfig c;
  c.nz = 16, c.ngf = 16, c.ndf = 16, c.n_classes = 10;
  Generator g(c);
  Discriminator d(c);
  g.init_weights(1), d.init_weights(2);
  OptimConfig oc;
  oc.name = "adam", oc.lr = 2e-4f, oc.beta1 = 0.5f, oc.beta2 = 0.999f, oc.weight_decay = 0.0f;
  Optimizer og(g.params(), oc), od(d.params(), oc);
  ImageLoader loader(data, 32, 5);
  Rng rng(9);
  Tensor ones = Tensor::empty({32}), zeros = Tensor::zeros({32});
  init::constant(ones, 1.0f);
  float first_d = 0, last_d = 0;
  for (int step = 0; step < 40; step++) {
    Tensor real;
    std::vector<int32_t> lab;
    loader.next(real, lab);
    Tensor labels = Tensor::from_ints(lab, {32});
    Tensor fake;
    {
      NoGradGuard ng;
      fake = g.forward(randn({32, 16}, rng), labels, true);
    }
    d.params().zero_grad();
    Tensor loss_d = ops::add(ops::bce_with_logits(d.forward(real, labels, true), ones),
                             ops::bce_with_logits(d.forward(fake, labels, true), zeros));
    float ld = loss_d.item();
    backward(loss_d);
    od.step(oc.lr);
    g.params().zero_grad();
    Tensor loss_g = ops::bce_with_logits(d.forward(g.forward(randn({32, 16}, rng), labels, true), labels, true), ones);
    float lg = loss_g.item();
    backward(loss_g);
    og.step(oc.lr);
    ASSERT_TRUE(std::isfinite(ld) && std::isfinite(lg)) << "step " << step;
    if (step < 5) first_d += ld / 5;
    if (step >= 35) last_d += ld / 5;
  }
  EXPECT_LT(last_d, first_d) << "the discriminator did not learn to tell real from generated";
}

// 6 steps straight and 3 + resume + 3 give bitwise-equal networks, optimizer state and losses.
TEST(Dcgan, ResumeIsBitwiseExact) {
  auto dir = aigc::testing::fresh_temp_dir("gan_resume");
  aigc::testing::write_tiny_idx(dir);  // a tiny labeled dataset, so the test needs no installed data
  GanTrainOptions o;
  o.data = dir.string(), o.conditional = true, o.batch_size = 8, o.steps = 6, o.quiet = true;
  o.model.nz = 8, o.model.ngf = 4, o.model.ndf = 4, o.sample_interval = 100, o.ckpt_interval = 100;
  o.out_dir = (dir / "straight").string();
  GanTrainResult a = train_dcgan(o);
  o.out_dir = (dir / "split").string(), o.stop_after = 3;
  train_dcgan(o);
  o.stop_after = 0, o.resume = true;
  GanTrainResult b = train_dcgan(o);
  EXPECT_EQ(a.last_d_loss, b.last_d_loss);
  EXPECT_EQ(a.last_g_loss, b.last_g_loss);
  SafeTensorsReader x((dir / "straight" / "ckpt.safetensors").string()),
      y((dir / "split" / "ckpt.safetensors").string());
  ASSERT_EQ(x.tensors().size(), y.tensors().size());
  for (const StTensorInfo& t : x.tensors()) EXPECT_EQ(x.read_f32(t.name), y.read_f32(t.name)) << t.name;
  LoadedGenerator g = load_generator((dir / "split" / "ckpt.safetensors").string());
  EXPECT_EQ(g.class_names.size(), 10u);
}

// One whole training step (D update(s), then G update, Adam, BatchNorm statistics) against the PyTorch reference of
// reference/torch/torch_dcgan_bench.py in float64, from the same weights, batches and noise, for every objective,
// the gradient penalties (through create_graph) and spectral normalization.
TEST(Parity, DcganTrainingStepMatchesPyTorch) {
  struct Case {
    std::string loss, d_norm = "batch";
    bool spectral = false;
    float r1 = 0;
    int64_t n_critic = 1;
  };
  const std::vector<Case> cases = {{"nonsaturating"},
                                   {"minimax"},
                                   {"hinge"},
                                   {"lsgan"},
                                   {"wgan-gp", "none", false, 0, 2},
                                   {"nonsaturating", "none", true, 1.0f},
                                   {"hinge", "none", true}};
  for (const Case& k : cases) {
    const std::string what = k.loss + ", D norm " + k.d_norm + (k.spectral ? ", spectral norm" : "") +
                             (k.r1 > 0 ? ", R1" : "") + ", n_critic " + std::to_string(k.n_critic);
    SCOPED_TRACE(what);
    DCGANConfig c;
    c.nz = 8, c.ngf = 8, c.ndf = 8, c.n_classes = 10, c.d_norm = k.d_norm, c.spectral_norm = k.spectral;
    Generator g(c);
    Discriminator d(c);
    g.init_weights(3), d.init_weights(4);
    Rng rng(5);
    const int64_t B = 6;
    // Everything G and D hold, under the checkpoint's names, before the step.
    auto tensors = [&](ConvNet& net, const std::string& prefix) {
      std::vector<std::pair<std::string, Tensor>> out;
      for (const Param& p : net.params().params()) out.push_back({prefix + p.name, p.value});
      for (auto& [name, t] : net.buffers()) out.push_back({prefix + name, t});
      return out;
    };
    std::vector<std::pair<std::string, Tensor>> all = tensors(g, "G."), dt = tensors(d, "D.");
    all.insert(all.end(), dt.begin(), dt.end());
    std::vector<GanBatch> batches;
    for (int64_t j = 0; j < k.n_critic; j++) {
      GanBatch b;
      b.real = Tensor::empty({B, 1, 28, 28});
      init::uniform(b.real, -1.0f, 1.0f, rng);
      const std::vector<int32_t> lab = {0, 3, 9, 1, 2, 7};
      b.labels = Tensor::from_ints(lab, {B});
      b.z_d = randn({B, c.nz}, rng), b.z_g = randn({B, c.nz}, rng);
      b.eps = Tensor::empty({B});
      init::uniform(b.eps, 0.0f, 1.0f, rng);
      const std::string sfx = k.n_critic == 1 ? "" : "." + std::to_string(j);
      for (auto& [n, t] :
           std::vector<std::pair<std::string, Tensor>>{{"real", b.real},
                                                       {"labels", Tensor::from_vector({0, 3, 9, 1, 2, 7}, {B})},
                                                       {"z_d", b.z_d},
                                                       {"z_g", b.z_g},
                                                       {"eps", b.eps}})
        all.push_back({n + sfx, t});
      batches.push_back(b);
    }
    auto dir = aigc::testing::fresh_temp_dir("dcgan_step");
    std::vector<StTensorOut> in;
    std::vector<std::vector<float>> copies;  // the weights change in place during the step: write copies now
    for (auto& [n, t] : all) copies.push_back(t.to_vector());
    for (size_t i = 0; i < all.size(); i++)
      in.push_back({all[i].first, StDType::F32, all[i].second.shape(), copies[i].data(), copies[i].size() * 4});
    write_safetensors((dir / "in.safetensors").string(), in,
                      {{"nz", "8"},
                       {"ngf", "8"},
                       {"ndf", "8"},
                       {"lr", "0.001"},
                       {"loss", k.loss},
                       {"d_norm", k.d_norm},
                       {"spectral_norm", k.spectral ? "1" : "0"},
                       {"r1", std::to_string(k.r1)},
                       {"n_critic", std::to_string(k.n_critic)}});

    OptimConfig oc;
    oc.name = "adam", oc.lr = 1e-3f, oc.beta1 = 0.5f, oc.beta2 = 0.999f, oc.weight_decay = 0.0f;
    Optimizer og(g.params(), oc), od(d.params(), oc);
    GanObjective obj;
    obj.loss = k.loss, obj.r1_gamma = k.r1, obj.n_critic = k.n_critic;
    GanStep st = gan_step(g, d, og, od, batches, obj, 1e-3f);

    const std::string cmd = "/usr/bin/python3 " + std::string(AIGC_SOURCE_DIR) +
                            "/reference/torch/torch_dcgan_oracle.py " + (dir / "in.safetensors").string() + " " +
                            (dir / "out.safetensors").string();
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    SafeTensorsReader ref((dir / "out.safetensors").string());
    EXPECT_NEAR(st.loss_d, ref.read_f32("loss_d")[0], 1e-5);
    EXPECT_NEAR(st.penalty, ref.read_f32("penalty")[0], 1e-5);
    EXPECT_NEAR(st.loss_g, ref.read_f32("loss_g")[0], 1e-5);
    double worst_w = 0, worst_g = 0;
    for (auto [net, opt, prefix] : {std::tuple<ConvNet*, Optimizer*, std::string>{&g, &og, "G."}, {&d, &od, "D."}}) {
      for (auto& [n, t] : tensors(*net, prefix))  // weights after Adam's steps, BatchNorm statistics, u and v
        worst_w = std::max(worst_w, aigc::testing::expect_close(ref, n, t, 1e-5));
      if (prefix == "D." && k.n_critic > 1) continue;  // the moment mixes two steps' gradients
      for (const Param& p : net->params().params()) {  // Adam's first moment after one step is (1 - beta1) grad
        std::vector<float> m(opt->m().f32() + p.offset, opt->m().f32() + p.offset + p.value.numel());
        for (float& v : m) v /= 0.5f;
        worst_g = std::max(worst_g, aigc::testing::expect_close(ref, "grad." + prefix + p.name,
                                                                Tensor::from_vector(m, p.value.shape()), 1e-4));
      }
    }
    std::printf("[ parity ] DCGAN step (%s): parameters and statistics %.2e, gradients %.2e\n", what.c_str(), worst_w,
                worst_g);
  }
}

TEST(Parity, DcganTwentyStepsTrackPyTorch) {
  // Twenty steps on real Fashion-MNIST batches from the same weights, batches and noise: over many steps, only
  // rounding may separate aigc from PyTorch (float64). A difference that one step hides (optimizer state,
  // running statistics, anything that accumulates) would show here.
  AIGC_NEEDS("fashion-mnist", aigc::testing::fashion_mnist_missing());
  const int K = 20;
  DCGANConfig c;
  c.nz = 16, c.ngf = 16, c.ndf = 16, c.n_classes = 10;
  Generator g(c);
  Discriminator d(c);
  g.init_weights(3), d.init_weights(4);
  auto tensors = [&](ConvNet& net, const std::string& prefix) {
    std::vector<std::pair<std::string, Tensor>> out;
    for (const Param& p : net.params().params()) out.push_back({prefix + p.name, p.value});
    for (auto& [name, t] : net.buffers()) out.push_back({prefix + name, t});
    return out;
  };
  std::vector<std::pair<std::string, std::vector<float>>> saved;
  std::vector<std::vector<int64_t>> shapes;
  auto keep = [&](const std::string& n, const Tensor& t) {
    saved.push_back({n, t.to_vector()});
    shapes.push_back(t.shape());
  };
  for (auto& [n, t] : tensors(g, "G.")) keep(n, t);
  for (auto& [n, t] : tensors(d, "D.")) keep(n, t);
  ImageSet data = load_image_dataset("fashion-mnist", "test");
  ImageLoader loader(data, 16, 11);
  Rng rng(12);
  OptimConfig oc;
  oc.name = "adam", oc.lr = 2e-4f, oc.beta1 = 0.5f, oc.beta2 = 0.999f, oc.weight_decay = 0.0f;
  Optimizer og(g.params(), oc), od(d.params(), oc);
  std::vector<GanStep> steps;
  for (int k = 0; k < K; k++) {
    Tensor real;
    std::vector<int32_t> lab;
    loader.next(real, lab);
    std::vector<float> lab_f(lab.begin(), lab.end());
    Tensor labels = Tensor::from_ints(lab, {16}), z_d = randn({16, c.nz}, rng), z_g = randn({16, c.nz}, rng);
    const std::string s = "." + std::to_string(k);
    keep("real" + s, real), keep("labels" + s, Tensor::from_vector(lab_f, {16})), keep("z_d" + s, z_d),
        keep("z_g" + s, z_g);
    steps.push_back(gan_step(g, d, og, od, {{real, labels, z_d, z_g}}, {}, 2e-4f));
  }
  auto dir = aigc::testing::fresh_temp_dir("dcgan_steps");
  std::vector<StTensorOut> in;
  for (size_t k = 0; k < saved.size(); k++)
    in.push_back({saved[k].first, StDType::F32, shapes[k], saved[k].second.data(), saved[k].second.size() * 4});
  write_safetensors((dir / "in.safetensors").string(), in,
                    {{"nz", "16"},
                     {"ngf", "16"},
                     {"ndf", "16"},
                     {"lr", "0.0002"},
                     {"loss", "nonsaturating"},
                     {"steps", std::to_string(K)}});
  const std::string cmd = "/usr/bin/python3 " + std::string(AIGC_SOURCE_DIR) +
                          "/reference/torch/torch_dcgan_oracle.py " + (dir / "in.safetensors").string() + " " +
                          (dir / "out.safetensors").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  SafeTensorsReader ref((dir / "out.safetensors").string());
  EXPECT_NEAR(steps.back().loss_d, ref.read_f32("loss_d")[0], 1e-4);
  EXPECT_NEAR(steps.back().loss_g, ref.read_f32("loss_g")[0], 1e-4);
  double worst = 0;
  for (auto [net, prefix] : {std::pair<ConvNet*, std::string>{&g, "G."}, {&d, "D."}})
    for (auto& [n, t] : tensors(*net, prefix)) {
      worst = std::max(worst, aigc::testing::expect_close(ref, n, t, 1e-4));
    }
  std::printf("[ parity ] DCGAN, %d steps: parameters and statistics %.2e (worst, relative)\n", K, worst);
}
