// Data-parallel training: when backward declares gradient buckets final (GradWatch), and, under `mpirun -np 2`,
// that each family trains as one process accumulating the same micro-batches does, that a run resumes on another
// number of ranks, and that a rank killed mid-run stops the other with a report while the checkpoint stays good.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "aigc/autograd.h"
#include "aigc/diffusion.h"
#include "aigc/models/gpt.h"
#include "aigc/models/unet.h"
#include "aigc/safetensors.h"
#include "test_util.h"

using namespace aigc;
namespace fs = std::filesystem;

namespace {

// Buckets of every parameter on its own; on_final snapshots the bucket. After backward, every snapshot must equal
// the final gradient (nothing was added after the bucket was declared final), every bucket must have fired once,
// and the parameters backward reaches first must have fired before those it reaches last.
void expect_watch_is_exact(ParamStore& params, const std::function<Tensor()>& loss_fn) {
  params.zero_grad();
  GradWatch w;
  w.base = params.grad();
  for (const Param& p : params.params()) w.bounds.push_back(p.offset);
  w.bounds.push_back(params.numel());
  const size_t nb = w.bounds.size() - 1;
  std::vector<std::vector<float>> snap(nb);
  std::vector<int> order(nb, -1);
  int fired = 0;
  w.on_final = [&](size_t b) {
    ASSERT_EQ(order[b], -1) << "bucket " << b << " declared final twice";
    order[b] = fired++;
    snap[b].assign(w.base + w.bounds[b], w.base + w.bounds[b + 1]);
  };
  Tensor loss = loss_fn();
  set_grad_watch(&w);
  backward(loss);
  set_grad_watch(nullptr);
  ASSERT_EQ(fired, int(nb));
  for (size_t b = 0; b < nb; b++) {
    std::vector<float> now(w.base + w.bounds[b], w.base + w.bounds[b + 1]);
    EXPECT_EQ(snap[b], now) << params.params()[b].name << " changed after it was declared final";
  }
  // Parameters of the last layers are final before those of the first layers.
  EXPECT_LT(order[nb - 1], order[1]) << params.params()[nb - 1].name << " vs " << params.params()[1].name;
}

struct Cmd {
  int rc = -1;
  std::string out;
};

Cmd run(const std::string& cmd) {
  Cmd r;
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return r;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;) r.out.append(buf, n);
  const int st = pclose(f);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

std::string mpi_missing() {
  return run("mpirun --version").rc == 0 ? "" : "mpirun is missing (Debian packages openmpi-bin, libopenmpi-dev)";
}

const std::string kAigc = std::string(AIGC_BINARY_DIR) + "/aigc";
// Two ranks on this machine (more ranks than cores is allowed); root may run them in CI containers.
const std::string kMpirun =
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 mpirun -np 2 ";

std::string write_corpus(const fs::path& dir) {
  std::string text;
  const char* lines[] = {"the cat sat on the mat.\n", "a dog ran in the park.\n", "the sun is warm today.\n"};
  for (int i = 0; i < 400; i++) text += lines[(i * 7 + i / 5) % 3];
  std::ofstream(dir / "corpus.txt") << text;
  return (dir / "corpus.txt").string();
}

std::vector<nlohmann::json> metrics_of(const fs::path& run) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

// Every float tensor of a checkpoint: weights, optimizer moments, EMA, BatchNorm statistics.
std::map<std::string, std::vector<float>> tensors_of(const fs::path& ckpt) {
  SafeTensorsReader r(ckpt.string());
  std::map<std::string, std::vector<float>> all;
  for (const StTensorInfo& t : r.tensors())
    if (t.dtype == StDType::F32) all[t.name] = r.read_f32(t.name);
  return all;
}

// Per tensor, max |a - b| <= tol x max |a| (the infinity-norm relative error). The two runs sum each gradient in
// another order, so they differ in the last bits of fp32; Adam's first steps (about lr x sign(g)) pass such
// differences on. Worst where a gradient is rounding noise: the attention's key bias has an exactly zero gradient
// (softmax ignores a shift shared by all keys), so Adam steps it by its noise and the two runs' values differ at
// 2e-4 of that tensor's largest entry (the query and value biases).
void expect_close(const std::map<std::string, std::vector<float>>& a,
                  const std::map<std::string, std::vector<float>>& b, double tol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, va] : a) {
    auto it = b.find(name);
    ASSERT_NE(it, b.end()) << what << ": " << name;
    ASSERT_EQ(va.size(), it->second.size()) << name;
    double diff = 0, scale = 0;
    for (size_t i = 0; i < va.size(); i++)
      diff = std::max(diff, double(std::abs(va[i] - it->second[i]))), scale = std::max(scale, double(std::abs(va[i])));
    const double rel = scale > 0 ? diff / scale : diff;
    if (!(rel <= worst)) worst = rel, worst_name = name;
  }
  EXPECT_LE(worst, tol) << what << ": worst in " << worst_name;
  std::printf("%s: worst relative difference %.3g (%s)\n", what.c_str(), worst, worst_name.c_str());
}

void expect_same_losses(const fs::path& a, const fs::path& b, double tol) {
  const auto ra = metrics_of(a), rb = metrics_of(b);
  ASSERT_EQ(ra.size(), rb.size());
  ASSERT_FALSE(ra.empty());
  for (size_t i = 0; i < ra.size(); i++) {
    EXPECT_EQ(ra[i]["step"], rb[i]["step"]);
    for (const char* k : {"loss", "loss_d", "loss_g", "d_x", "d_g_z", "val_loss"}) {
      if (!ra[i].contains(k)) continue;
      ASSERT_TRUE(rb[i].contains(k)) << k;
      const double x = ra[i][k].get<double>(), y = rb[i][k].get<double>();
      EXPECT_LE(std::abs(x - y), tol * std::max(1.0, std::abs(x))) << k << " at step " << ra[i]["step"];
    }
  }
}

// `mpirun -np 2 aigc train ... --batch B` against one process with `--batch B --grad-accum 2`.
void expect_two_ranks_match_accumulation(const std::string& name, const std::string& args) {
  fs::path d = aigc::testing::fresh_temp_dir("dist_" + name);
  const std::string data =
      name == "gpt" ? write_corpus(d) : (aigc::testing::write_tiny_idx(d / "img"), (d / "img").string());
  const std::string common = kAigc + " train " + name + " --data " + data + " " + args + " -t 1";
  Cmd one = run(common + " --grad-accum 2 --out " + (d / "one").string());
  ASSERT_EQ(one.rc, 0) << one.out;
  Cmd two = run(kMpirun + common + " --out " + (d / "two").string());
  ASSERT_EQ(two.rc, 0) << two.out;
  EXPECT_NE(two.out.find("data parallel: 2 ranks"), std::string::npos) << two.out;
  EXPECT_NE(two.out.find("(4x1x2)"), std::string::npos) << "the progress line names the global batch:\n" << two.out;
  EXPECT_EQ(two.out.find("[rank 1]"), std::string::npos) << "only rank 0 prints:\n" << two.out;
  expect_same_losses(d / "one", d / "two", 1e-5);
  expect_close(tensors_of(d / "one" / "ckpt.safetensors"), tensors_of(d / "two" / "ckpt.safetensors"), 1e-3,
               name + ", 2 ranks vs 1 process x 2 micro-batches");

  // Stopped on 2 ranks, resumed in one process accumulating 2 micro-batches: the same run.
  Cmd part = run(kMpirun + common + " --stop-after 2 --out " + (d / "mixed").string());
  ASSERT_EQ(part.rc, 0) << part.out;
  Cmd rest = run(common + " --grad-accum 2 --resume --out " + (d / "mixed").string());
  ASSERT_EQ(rest.rc, 0) << rest.out;
  expect_same_losses(d / "one", d / "mixed", 1e-5);
  expect_close(tensors_of(d / "one" / "ckpt.safetensors"), tensors_of(d / "mixed" / "ckpt.safetensors"), 1e-3,
               name + ", 2 ranks then resumed as 1 process");
  fs::remove_all(d);
}

// The pid of the process whose environment says it is MPI rank `rank` of a run writing into `out`.
int pid_of_rank(const std::string& out, int rank) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream cmd(e.path() / "cmdline"), env(e.path() / "environ");
    std::string c((std::istreambuf_iterator<char>(cmd)), {}), v((std::istreambuf_iterator<char>(env)), {});
    if (c.rfind(kAigc, 0) == 0 && c.find(out) != std::string::npos &&
        v.find(std::string("OMPI_COMM_WORLD_RANK=") + std::to_string(rank) + '\0') != std::string::npos)
      return std::stoi(pid);
  }
  return -1;
}

// Waits (up to 2 minutes) until the run writing `out` has logged `step` updates; returns rank `rank`'s pid (or -1).
int rank_after_step(const std::string& out, int rank, size_t step) {
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120)) {
    if (fs::exists(fs::path(out) / "metrics.jsonl") && metrics_of(out).size() >= step)
      if (int pid = pid_of_rank(out, rank); pid > 0) return pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return -1;
}

}  // namespace

TEST(Dist, BackwardDeclaresGradientBucketsFinalExactlyWhenNothingMoreIsAdded) {
  GPTConfig c;
  c.vocab_size = 23, c.block_size = 8, c.n_layer = 2, c.n_head = 2, c.n_embd = 16, c.dropout = 0;
  GPT gpt(c);  // tied embeddings: wte is written first (lm_head) and last (the embedding)
  gpt.init_weights(3);
  Tensor x = Tensor::empty({2, 8}, DType::I32), y = Tensor::empty({2, 8}, DType::I32);
  for (int i = 0; i < 16; i++) x.i32()[i] = (i * 5) % 23, y.i32()[i] = (i * 7 + 1) % 23;
  expect_watch_is_exact(gpt.params(), [&] { return gpt.loss(x, y); });

  UNetConfig u;
  u.image_size = 8, u.channels = 1, u.ch = 8, u.ch_mult = {1, 2}, u.num_res_blocks = 1, u.attn_resolutions = {4};
  u.groups = 4;
  UNet net(u, 5);
  const NoiseSchedule s = NoiseSchedule::make("linear", 10);
  Rng rng(9);
  Tensor x0 = randn({2, 1, 8, 8}, rng);
  expect_watch_is_exact(net.params(), [&] { return diffusion_loss(net, s, x0, Tensor(), rng, 0.0f, 1); });
}

// Losses of every step agree to 1e-5 and every checkpoint tensor (weights, Adam's moments, EMA, BatchNorm's
// running statistics) to 1e-3 of its largest entry (see expect_close); the runs print their worst difference.
TEST(Dist, TwoRanksTrainGptAsOneProcessAccumulatingTheirMicroBatches) {
  AIGC_NEEDS("openmpi", mpi_missing());
  expect_two_ranks_match_accumulation(
      "gpt",
      "--tokenizer char --n-layer 1 --n-head 2 --n-embd 32 --block-size 16 --batch 4 --steps 6 --lr 3e-3 "
      "--warmup 2 --eval-interval 3 --dropout 0.1 --seed 7");
}

TEST(Dist, TwoRanksTrainDcganAsOneProcessAccumulatingTheirMicroBatches) {
  AIGC_NEEDS("openmpi", mpi_missing());
  expect_two_ranks_match_accumulation("dcgan",
                                      "--conditional --batch 4 --steps 5 --nz 8 --ngf 4 --ndf 4 "
                                      "--sample-interval 100 --seed 7");
}

TEST(Dist, TwoRanksTrainDdpmAsOneProcessAccumulatingTheirMicroBatches) {
  AIGC_NEEDS("openmpi", mpi_missing());
  expect_two_ranks_match_accumulation("ddpm",
                                      "--conditional --batch 4 --steps 5 --timesteps 20 --ch 8 --ch-mult 1,2 "
                                      "--res-blocks 1 --attn-res 7 --dropout 0.1 --sample-interval 100 --seed 7");
}

// kill -9 of rank 1 mid-run: rank 0 stops within 60 s, non-zero, naming rank 1; the last checkpoint is whole,
// and --resume from it gives what an uninterrupted run gives.
TEST(Dist, AKilledRankStopsTheOtherAndTheRunResumesExactly) {
  AIGC_NEEDS("openmpi", mpi_missing());
  fs::path d = aigc::testing::fresh_temp_dir("dist_fault");
  const std::string common = kAigc + " train gpt --data " + write_corpus(d) +
                             " --tokenizer char --n-layer 2 --n-head 2 --n-embd 64 --block-size 32 --batch 8 "
                             "--steps 400 --lr 1e-3 --eval-interval 2 --seed 3 -t 1";
  const std::string out = (d / "faulty").string();
  Cmd ref = run(kMpirun + common + " --stop-after 60 --out " + (d / "ref").string());
  ASSERT_EQ(ref.rc, 0) << ref.out;

  Cmd faulty;
  std::thread launcher([&] { faulty = run(kMpirun + common + " --out " + out); });
  const int victim = rank_after_step(out, 1, 4);  // kill rank 1 once step 4's line is in metrics.jsonl
  ASSERT_GT(victim, 0) << "rank 1 never started or never reached step 4";
  const auto killed = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  launcher.join();
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_LT(took, 60.0);
  EXPECT_NE(faulty.rc, 0) << faulty.out;
  EXPECT_NE(faulty.out.find("[rank 0] error:"), std::string::npos) << faulty.out;
  EXPECT_NE(faulty.out.find("rank 1 (pid " + std::to_string(victim)), std::string::npos) << faulty.out;
  EXPECT_NE(faulty.out.find("continue with --resume"), std::string::npos) << faulty.out;
  std::printf("rank 0 stopped %.2f s after rank 1 was killed:\n%s\n", took, faulty.out.c_str());

  // The checkpoint is whole (it parses; its step is one of the even steps reached) and resumes exactly.
  SafeTensorsReader ck((fs::path(out) / "ckpt.safetensors").string());
  const nlohmann::json state = nlohmann::json::parse(ck.metadata().at("aigc.train_state"));
  const int64_t at = state["step"].get<int64_t>();
  EXPECT_GE(at, 2);
  EXPECT_LT(at, 60) << "the run went too far before the kill to test resuming";
  Cmd resumed = run(kMpirun + common + " --stop-after 60 --resume --out " + out);
  ASSERT_EQ(resumed.rc, 0) << resumed.out;
  EXPECT_EQ(tensors_of(d / "ref" / "ckpt.safetensors"), tensors_of(fs::path(out) / "ckpt.safetensors"));
  const auto a = metrics_of(d / "ref"), b = metrics_of(out);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); i++) EXPECT_EQ(a[i]["loss"], b[i]["loss"]) << "step " << i + 1;
  fs::remove_all(d);
}

// A rank that hangs (SIGSTOP) is not a death the launcher sees: rank 0's own deadline (--comm-timeout) ends it,
// non-zero, naming the stopped rank.
TEST(Dist, AHungRankIsFoundByTheCollectiveTimeout) {
  AIGC_NEEDS("openmpi", mpi_missing());
  fs::path d = aigc::testing::fresh_temp_dir("dist_hang");
  const std::string out = (d / "run").string();
  Cmd res;
  std::thread launcher([&] {
    res = run(kMpirun + kAigc + " train gpt --data " + write_corpus(d) +
              " --tokenizer char --n-layer 2 --n-head 2 --n-embd 64 --block-size 32 --batch 8 --steps 100000 "
              "--eval-interval 2 --comm-timeout 5 -t 1 --out " +
              out);
  });
  const int victim = rank_after_step(out, 1, 2);
  ASSERT_GT(victim, 0) << "rank 1 never started or never reached step 2";
  ASSERT_EQ(kill(victim, SIGSTOP), 0);
  const auto stopped = std::chrono::steady_clock::now();
  // Rank 0 reports by itself; the launcher then ends the stopped rank.
  std::thread rescue([&] {
    std::this_thread::sleep_for(std::chrono::seconds(30));
    kill(victim, SIGKILL);  // only if the run is still hung (the test then fails on the time)
  });
  launcher.join();
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  kill(victim, SIGKILL);
  rescue.detach();
  EXPECT_LT(took, 20.0);
  EXPECT_NE(res.rc, 0);
  EXPECT_NE(res.out.find("no answer for 5 s"), std::string::npos) << res.out;
  EXPECT_NE(res.out.find("rank 1 (pid " + std::to_string(victim) + " on host"), std::string::npos) << res.out;
  EXPECT_NE(res.out.find("is stopped"), std::string::npos) << res.out;
  std::printf("rank 0 stopped %.2f s after rank 1 hung:\n%s\n", took, res.out.c_str());
  fs::remove_all(d);
}
