// The shared training loop: data parallelism's place in it (GradSync), gradient accumulation, the non-finite policy for
// every family, the run folder (metrics trimmed on resume, config.json), data shards, and the layering rule that models
// do not reach into training.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "aigc/checkpoint.h"
#include "aigc/diffusion_trainer.h"
#include "aigc/error.h"
#include "aigc/gan_trainer.h"
#include "aigc/image_data.h"
#include "aigc/params.h"
#include "aigc/text_data.h"
#include "aigc/trainer.h"
#include "test_util.h"

using namespace aigc;
namespace fs = std::filesystem;

namespace {

std::string write_corpus(const fs::path& dir) {
  fs::create_directories(dir);
  std::string text;
  const char* lines[] = {"the cat sat on the mat.\n", "a dog ran in the park.\n", "the sun is warm today.\n"};
  for (int i = 0; i < 300; i++) text += lines[(i * 7 + i / 5) % 3];
  fs::path p = dir / "corpus.txt";
  std::ofstream(p) << text;
  return p.string();
}

TrainOptions gpt_run(const fs::path& dir) {
  TrainOptions o;
  o.data_files = {write_corpus(dir)};
  o.model.n_layer = 1, o.model.n_head = 2, o.model.n_embd = 16, o.model.block_size = 16, o.model.dropout = 0;
  o.batch_size = 8, o.steps = 8, o.warmup = 2, o.optim.lr = 3e-3f, o.eval_interval = 4, o.eval_batches = 1;
  o.out_dir = (dir / "run").string(), o.quiet = true;
  return o;
}

std::string write_images(const fs::path& dir) {
  aigc::testing::write_tiny_idx(dir);
  return dir.string();
}

GanTrainOptions gan_run(const fs::path& dir) {
  GanTrainOptions o;
  o.data = write_images(dir), o.batch_size = 8, o.steps = 4, o.quiet = true;
  o.model.nz = 8, o.model.ngf = 4, o.model.ndf = 4, o.sample_interval = 100, o.ckpt_interval = 100;
  o.out_dir = (dir / "run").string();
  return o;
}

DiffusionTrainOptions ddpm_run(const fs::path& dir) {
  DiffusionTrainOptions o;
  o.data = write_images(dir), o.batch_size = 4, o.steps = 4, o.timesteps = 20, o.quiet = true;
  o.model.ch = 8, o.model.ch_mult = {1, 2}, o.model.num_res_blocks = 1, o.model.attn_resolutions = {};
  o.model.groups = 4;
  o.sample_interval = 100, o.ckpt_interval = 100, o.out_dir = (dir / "run").string();
  return o;
}

std::vector<float> flat_weights(const std::string& ckpt) {
  LoadedModel lm = load_model(ckpt);
  return std::vector<float>(lm.model->params().data(), lm.model->params().data() + lm.model->params().numel());
}

std::vector<nlohmann::json> metrics_of(const fs::path& run) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

// A one-process stand-in for the ranks: finish() runs `on_finish` on a model's gradients, where the ranks would
// average them.
class StandInSync : public GradSync {
 public:
  explicit StandInSync(std::function<void(ParamStore&)> f) : on_finish(std::move(f)) {}
  int rank() const override { return 0; }
  int world() const override { return 1; }
  void begin_last_backward(ParamStore&) override { armed++; }
  void end_last_backward() override {}
  void finish(ParamStore& p) override {
    finished++;
    if (on_finish) on_finish(p);
  }
  void all_reduce(double*, int64_t, Op) override {}
  void all_reduce(float*, int64_t, Op) override {}
  void broadcast(float*, int64_t) override {}
  std::function<void(ParamStore&)> on_finish;
  int armed = 0, finished = 0;
};

// Every third reduction poisons the gradient; or every one with `always`.
StandInSync nan_sync(int* calls, bool always) {
  return StandInSync([calls, always](ParamStore& p) {
    if (always || ++*calls % 3 == 0) p.grad()[0] = std::nanf("");
  });
}

}  // namespace

// The loop hands each model's whole flat gradient to the sync once per update, after arming it for the last
// micro-batch's backward only; a reduction that does what an all-reduce over two ranks holding the same
// gradients does (sum, then divide by the world size) changes nothing, bit for bit.
TEST(TrainLoop, GradSyncSeesEachModelOnceAndAnIdentityReduceChangesNothing) {
  fs::path d = aigc::testing::fresh_temp_dir("loop_hook");
  TrainOptions plain = gpt_run(d / "a");
  plain.grad_accum = 2;
  TrainResult a = train_gpt(plain);
  TrainOptions hooked = plain;
  hooked.out_dir = (d / "b" / "run").string();
  StandInSync sync([&](ParamStore& p) {
    ASSERT_TRUE(p.has_grads());
    std::vector<float> other(p.grad(), p.grad() + p.numel());  // the other rank's copy
    for (int64_t i = 0; i < p.numel(); i++) p.grad()[i] = (p.grad()[i] + other[size_t(i)]) / 2.0f;
  });
  TrainResult b = train_gpt(hooked, &sync);
  EXPECT_EQ(sync.finished, 8);
  EXPECT_EQ(sync.armed, 8);  // the last of the two micro-batches of each update
  EXPECT_EQ(a.losses, b.losses);
  EXPECT_EQ(flat_weights(a.checkpoint), flat_weights(b.checkpoint));

  StandInSync gan_sync(nullptr);
  train_dcgan(gan_run(d / "gan"), &gan_sync);
  EXPECT_EQ(gan_sync.finished, 2 * 4);  // D and G each update
  fs::remove_all(d);
}

// Two micro-batches of 4 sequences make the same update as one batch of 8 (the loader hands out the same windows
// in the same order), up to the order of floating-point sums.
TEST(TrainLoop, GradientAccumulationMatchesTheBigBatch) {
  fs::path d = aigc::testing::fresh_temp_dir("loop_accum");
  TrainOptions big = gpt_run(d);
  TrainOptions micro = big;
  micro.batch_size = 4, micro.grad_accum = 2, micro.out_dir = (d / "micro").string();
  TrainResult a = train_gpt(big), b = train_gpt(micro);
  ASSERT_EQ(a.losses.size(), b.losses.size());
  for (size_t i = 0; i < a.losses.size(); i++) EXPECT_NEAR(a.losses[i], b.losses[i], 1e-4) << "step " << i + 1;
  std::vector<float> wa = flat_weights(a.checkpoint), wb = flat_weights(b.checkpoint);
  double worst = 0;
  for (size_t i = 0; i < wa.size(); i++) worst = std::max(worst, double(std::abs(wa[i] - wb[i])));
  EXPECT_LT(worst, 1e-4);

  // The image families accumulate too: each update takes grad_accum batches from the loader.
  GanTrainOptions g = gan_run(d / "gan");
  g.grad_accum = 2;
  EXPECT_EQ(train_dcgan(g).steps_done, 4);
  DiffusionTrainOptions f = ddpm_run(d / "ddpm");
  f.grad_accum = 3;
  DiffusionTrainResult r = train_diffusion(f);
  EXPECT_TRUE(std::isfinite(r.last_loss));
  const auto rows = metrics_of(d / "ddpm" / "run");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_GT(rows.back()["images_per_s"].get<double>(), 0);
  fs::remove_all(d);
}

// One policy for all families: a non-finite gradient skips that update and the run goes on; too many in a row
// stop it with an error naming the last good checkpoint.
TEST(TrainLoop, NonFiniteUpdatesAreSkippedThenStopTheRunInEveryFamily) {
  fs::path d = aigc::testing::fresh_temp_dir("loop_nan");
  int calls = 0;
  TrainOptions o = gpt_run(d);
  StandInSync every_third = nan_sync(&calls, false);
  TrainResult r = train_gpt(o, &every_third);
  EXPECT_EQ(r.steps_done, 8);
  for (float w : flat_weights(r.checkpoint)) ASSERT_TRUE(std::isfinite(w));
  const auto rows = metrics_of(d / "run");
  ASSERT_EQ(rows.size(), 8u);
  EXPECT_TRUE(rows[2]["grad_norm"].is_null());  // NaN is written as null
  EXPECT_TRUE(rows[3]["grad_norm"].is_number());

  auto expect_diverged = [](const std::function<void()>& run, const std::string& family) {
    try {
      run();
      ADD_FAILURE() << family << ": expected the run to stop";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("diverged"), std::string::npos) << family << ": " << msg;
      EXPECT_NE(msg.find("ckpt.safetensors"), std::string::npos) << family << ": " << msg;
    }
  };
  StandInSync always = nan_sync(&calls, true);
  expect_diverged([&] { train_gpt(gpt_run(d / "g2"), &always); }, "gpt");
  GanTrainOptions g = gan_run(d / "gan");
  DiffusionTrainOptions f = ddpm_run(d / "ddpm");
  g.steps = f.steps = 8;  // more than max_bad_steps (5)
  expect_diverged([&] { train_dcgan(g, &always); }, "dcgan");
  expect_diverged([&] { train_diffusion(f, &always); }, "ddpm");
  fs::remove_all(d);
}

// A resumed run redoes the updates after its checkpoint: their old metrics lines (and a line torn by a crash) go,
// so every step appears once. config.json records the options.
TEST(TrainLoop, RunFolderKeepsOneMetricsLinePerStepAcrossResume) {
  fs::path d = aigc::testing::fresh_temp_dir("loop_rundir");
  DiffusionTrainOptions o = ddpm_run(d);
  o.steps = 6, o.stop_after = 2;
  train_diffusion(o);
  {
    std::ofstream m(d / "run" / "metrics.jsonl", std::ios::app);
    m << "{\"step\": 3, \"loss\": 9}\n{\"step\": 4, \"lo";  // steps past the checkpoint, and a torn line
  }
  o.stop_after = 0, o.resume = true;
  train_diffusion(o);
  const auto rows = metrics_of(d / "run");
  ASSERT_EQ(rows.size(), 6u);
  for (size_t i = 0; i < rows.size(); i++) EXPECT_EQ(rows[i]["step"].get<int64_t>(), int64_t(i + 1));
  EXPECT_NE(rows[2]["loss"].get<double>(), 9.0);
  std::ifstream c(d / "run" / "config.json");
  nlohmann::json cfg = nlohmann::json::parse(c);
  EXPECT_EQ(cfg["loop"]["steps"], 6);
  EXPECT_EQ(cfg["family"]["family"], "ddpm");
  EXPECT_TRUE(fs::exists(d / "run" / "samples" / "step_6.png"));
  fs::remove_all(d);
}

// --max-minutes: the run stops after the update that ends past the limit, saves, and --resume goes on from there.
TEST(TrainLoop, TimeLimitStopsAfterTheUpdatePastItAndSaves) {
  fs::path d = aigc::testing::fresh_temp_dir("loop_time");
  GanTrainOptions o = gan_run(d);
  o.steps = 100000, o.max_minutes = 1e-9;  // passed during the first update
  GanTrainResult r = train_dcgan(o);
  EXPECT_EQ(r.steps_done, 1);
  EXPECT_EQ(metrics_of(d / "run").size(), 1u);
  o.steps = 3, o.max_minutes = 0, o.resume = true;
  r = train_dcgan(o);
  EXPECT_EQ(r.steps_done, 3);
  EXPECT_EQ(metrics_of(d / "run").size(), 3u);
  o.max_minutes = -1, o.steps = 4;
  try {
    train_dcgan(o);
    ADD_FAILURE() << "a negative --max-minutes was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max-minutes"), std::string::npos) << e.what();
  }
  fs::remove_all(d);
}

// GPT runs can write text samples as they train.
TEST(TrainLoop, GptWritesTextSamples) {
  fs::path d = aigc::testing::fresh_temp_dir("loop_text");
  TrainOptions o = gpt_run(d);
  o.sample_interval = 4;
  train_gpt(o);
  for (const char* f : {"step_4.txt", "step_8.txt"}) {
    std::ifstream in(d / "run" / "samples" / f);
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_GT(s.size(), 20u) << f;
  }
  fs::remove_all(d);
}

// Ranks of a world take disjoint batches of the global stream, in the order one process accumulating their
// micro-batches takes them (2 ranks x 2 micro-batches: rank 0 takes batches 0, 1, rank 1 takes 2, 3 of each
// update's four); positions are global, so a checkpoint resumes on any number of ranks.
TEST(TrainLoop, LoadersShardBatchesByRank) {
  fs::path d = aigc::testing::fresh_temp_dir("loop_shards");
  write_images(d);
  ImageSet set = load_image_dataset(d.string(), "train");
  ImageLoader one(set, 4, 5, false, 0, 1, 4), r0(set, 4, 5, false, 0, 2, 2), r1(set, 4, 5, false, 1, 2, 2);
  for (int k = 0; k < 7; k++) {  // 28 batches of 4: crosses epoch boundaries (10 batches per epoch)
    Tensor a[4], b[2], c[2];
    std::vector<int32_t> la[4], lb[2], lc[2];
    for (int m = 0; m < 4; m++) one.next(a[m], la[m]);
    for (int m = 0; m < 2; m++) r0.next(b[m], lb[m]), r1.next(c[m], lc[m]);
    const Tensor* ranks[4] = {&b[0], &b[1], &c[0], &c[1]};
    for (int m = 0; m < 4; m++) EXPECT_EQ(a[m].to_vector(), ranks[m]->to_vector()) << "update " << k << " batch " << m;
    EXPECT_EQ(r0.position(), one.position());
    EXPECT_EQ(r1.last_index(), one.last_index());
  }
  ImageLoader later(set, 4, 5, false, 1, 2, 1);  // resumed on 2 ranks x 1 from the 4 x 1 run's position
  later.set_position(one.position());
  Tensor x, y;
  std::vector<int32_t> lx, ly;
  later.next(x, lx);
  one.next(y, ly), one.next(y, ly);
  EXPECT_EQ(x.to_vector(), y.to_vector());
  EXPECT_THROW(ImageLoader(set, 4, 5, false, 2, 2), Error);
  EXPECT_THROW(ImageLoader(set, 41, 5, false, 0, 2), Error);  // a batch larger than the 40 images

  std::vector<int32_t> toks(401);
  for (size_t i = 0; i < toks.size(); i++) toks[i] = int32_t(i % 97);
  TokenLoader tw(toks, 3, 10, 3, 0, 1, 2), t0(toks, 3, 10, 3, 0, 2), t1(toks, 3, 10, 3, 1, 2);
  for (int k = 0; k < 9; k++) {
    Tensor x0 = Tensor::empty({3, 10}, DType::I32), y0 = Tensor::empty({3, 10}, DType::I32);
    Tensor x1 = Tensor::empty({3, 10}, DType::I32), y1 = Tensor::empty({3, 10}, DType::I32);
    Tensor w0 = Tensor::empty({3, 10}, DType::I32), w1 = Tensor::empty({3, 10}, DType::I32);
    tw.next(w0, y0), tw.next(w1, y0), t0.next(x0, y0), t1.next(x1, y1);
    EXPECT_EQ(w0.to_ints(), x0.to_ints()) << "update " << k;
    EXPECT_EQ(w1.to_ints(), x1.to_ints()) << "update " << k;
  }
  EXPECT_THROW(TokenLoader(toks, 3, 10, 3, -1, 2), Error);
  fs::remove_all(d);
}

// Models do not reach into training: nothing under src/models includes a trainer's header.
TEST(Layout, ModelsDoNotIncludeTraining) {
  const std::regex train_header(R"(#include\s+"aigc/(trainer|gan_trainer|diffusion_trainer|train_loop|fid)\.h")");
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(fs::path(AIGC_SOURCE_DIR) / "src" / "models")) {
    if (!e.is_regular_file()) continue;
    files++;
    std::ifstream in(e.path());
    for (std::string line; std::getline(in, line);)
      EXPECT_FALSE(std::regex_search(line, train_header)) << e.path() << ": " << line;
  }
  EXPECT_GT(files, 5);
}

// Tests skip for a missing dependency only when AIGC_ALLOW_MISSING names it (or says "all").
TEST(Layout, MissingDependenciesSkipOnlyWhenAllowed) {
  const char* saved = std::getenv("AIGC_ALLOW_MISSING");
  const std::string keep = saved ? saved : "";
  unsetenv("AIGC_ALLOW_MISSING");
  EXPECT_FALSE(aigc::testing::allowed_missing("node"));
  setenv("AIGC_ALLOW_MISSING", "fashion-mnist,node", 1);
  EXPECT_TRUE(aigc::testing::allowed_missing("node"));
  EXPECT_TRUE(aigc::testing::allowed_missing("fashion-mnist"));
  EXPECT_FALSE(aigc::testing::allowed_missing("gpt-3-encoder"));
  EXPECT_FALSE(aigc::testing::allowed_missing("nod"));
  setenv("AIGC_ALLOW_MISSING", "all", 1);
  EXPECT_TRUE(aigc::testing::allowed_missing("gpt-3-encoder"));
  if (saved)
    setenv("AIGC_ALLOW_MISSING", keep.c_str(), 1);
  else
    unsetenv("AIGC_ALLOW_MISSING");
}
