// `aigc train FAMILY`: a GPT on text, a DCGAN or DDPM on images, or the FID feature classifier. The flags every
// training run shares are defined once (TrainArgs); each family adds its own and keeps its own defaults for the
// shared ones the user did not give.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>

#include "aigc/backend.h"
#include "aigc/diffusion_trainer.h"
#include "aigc/dist.h"
#include "aigc/error.h"
#include "aigc/fid.h"
#include "aigc/gan_trainer.h"
#include "aigc/trainer.h"
#include "command.h"
#include "presets.h"

namespace aigc::cli {

namespace {

struct TrainArgs {
  std::string family = "gpt", model_alias, precision = "fp32";
  TrainOptions gpt;  // the shared flags are read into these, then copied to the family's options
  std::string preset = "small", arch;
  GPTConfig over;  // only the shape flags given override the preset
  GanTrainOptions gan;
  DiffusionTrainOptions ddpm;
  DistOptions dist;
  double bucket_mb = 4;
  bool verbose = false;
  std::unique_ptr<GradSync> sync;  // when an MPI launcher started this process
  std::vector<int64_t> ch_mult, attn_res;
  CLI::App* cmd = nullptr;
  bool given(const char* flag) const { return cmd->count(flag) > 0; }
};

void add_shared(CLI::App* cmd, TrainArgs& a) {
  TrainOptions& t = a.gpt;
  cmd->add_option("--data", t.data_files,
                  "GPT: text file(s), or a built-in corpus: fortunes (English, the default) or poems (Tang/Song). "
                  "Images: a dataset directory (IDX, CIFAR-10 or image folders) or fashion-mnist (the default)");
  cmd->add_option("--steps", t.steps, "Optimizer updates (classifier: epochs); family default when not given");
  cmd->add_option("--stop-after", t.stop_after, "Stop (and save) after this update, e.g. to --resume later");
  cmd->add_option("--max-minutes", t.max_minutes,
                  "Stop (and save) after the update that ends past this many minutes of training (this invocation; "
                  "--resume to go on). With a cosine schedule, --steps still sets its length")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--batch", t.batch_size, "Examples per micro-batch; family default when not given");
  cmd->add_option("--grad-accum", t.grad_accum, "Micro-batches per update")->capture_default_str();
  cmd->add_option("--lr", t.optim.lr, "Peak learning rate; family default when not given");
  cmd->add_option("--warmup", t.warmup, "Linear warmup updates; family default when not given");
  cmd->add_option("--grad-clip", t.grad_clip,
                  "Clip gradients to this global norm (0: off); family default when not given");
  cmd->add_option("--log-interval", t.log_interval, "Progress line every N updates");
  cmd->add_option("--sample-interval", a.gan.sample_interval,
                  "Write samples every N updates: an image grid (GAN, diffusion) or 200 tokens of text (GPT, off by "
                  "default)");
  cmd->add_option("--out", t.out_dir, "Run directory: ckpt.safetensors, metrics.jsonl, config.json, samples/");
  cmd->add_option("--seed", t.seed, "Random seed (init, data order, noise, dropout)")->capture_default_str();
  cmd->add_flag("--resume", t.resume, "Continue the run in --out exactly where it stopped");
  cmd->add_option("--precision", a.precision,
                  "fp32, or bf16: matrix products and convolutions on bfloat16 operands with fp32 accumulation "
                  "and fp32 master weights (fast where the CPU has AVX512_BF16)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  add_threads(cmd);
  cmd->add_option("--comm-timeout", a.dist.comm_timeout_s,
                  "Under mpirun/srun: seconds a collective may wait before the run stops naming the lost rank")
      ->capture_default_str();
  cmd->add_option("--bucket-mb", a.bucket_mb, "Under mpirun/srun: MiB of gradients per all-reduce bucket")
      ->capture_default_str();
  cmd->add_flag("--verbose", a.verbose, "Under mpirun/srun: every rank prints its progress, not only rank 0");
}

void add_gpt(CLI::App* cmd, TrainArgs& a) {
  TrainOptions& t = a.gpt;
  cmd->add_option("--tokenizer", t.tokenizer, "GPT: bytes | char | path to a BPE tokenizer (vocab.json+merges.txt)")
      ->capture_default_str();
  cmd->add_option("--preset", a.preset, "GPT: model shape; DCGAN: a whole recipe (see the lists below)")
      ->capture_default_str();
  cmd->add_option("--arch", a.arch,
                  "GPT: gpt2 (pre-LN, GELU, tied), transformer (post-LN, ReLU, untied head) or llama (RMSNorm, "
                  "rotary, grouped-query, SwiGLU)");
  cmd->add_option("--n-layer", a.over.n_layer, "GPT: transformer blocks");
  cmd->add_option("--n-head", a.over.n_head, "GPT: attention heads");
  cmd->add_option("--n-embd", a.over.n_embd, "GPT: embedding width");
  cmd->add_option("--block-size", a.over.block_size, "GPT: context length");
  cmd->add_option("--dropout", a.over.dropout, "GPT, diffusion: dropout probability");
  cmd->add_option("--optimizer", t.optim.name, "GPT: adamw | adam | sgd")->capture_default_str();
  cmd->add_option("--min-lr-ratio", t.min_lr_ratio, "GPT: final LR as a fraction of --lr (cosine)")
      ->capture_default_str();
  cmd->add_option("--lr-schedule", t.lr_schedule, "GPT: cosine | constant")->capture_default_str();
  cmd->add_option("--weight-decay", t.optim.weight_decay, "GPT: decoupled weight decay (matrices only)")
      ->capture_default_str();
  cmd->add_option("--beta2", t.optim.beta2, "GPT, GAN: Adam beta2 (GAN default 0.999)")->capture_default_str();
  cmd->add_option("--eval-interval", t.eval_interval, "GPT: validate and checkpoint every N updates")
      ->capture_default_str();
  cmd->add_option("--val-fraction", t.val_fraction, "GPT: share of the text held out")->capture_default_str();
}

void add_images(CLI::App* cmd, TrainArgs& a) {
  cmd->add_flag("--conditional", a.gan.conditional, "GAN, diffusion: class-conditional model (labels from the data)");
  GanObjective& obj = a.gan.objective;
  cmd->add_option("--gan-loss", obj.loss,
                  "GAN: nonsaturating (G maximizes log D(G(z)), the default), minimax (G minimizes "
                  "log(1 - D(G(z)))), hinge (SAGAN/BigGAN), lsgan (least squares) or wgan-gp (Wasserstein critic "
                  "with a gradient penalty; its paper's Adam settings --lr 1e-4 --beta1 0 --beta2 0.9 are then the "
                  "defaults)")
      ->check(CLI::IsMember({"nonsaturating", "minimax", "hinge", "lsgan", "wgan-gp"}));
  cmd->add_option("--gp-lambda", obj.gp_lambda, "GAN, wgan-gp: weight of the gradient penalty")->capture_default_str();
  cmd->add_option("--r1", obj.r1_gamma,
                  "GAN: R1 penalty gamma, (gamma/2) E|grad D(x)|^2 on real images (0 = off; try 0.1 to 10)")
      ->capture_default_str();
  cmd->add_option("--n-critic", obj.n_critic,
                  "GAN: D updates per G update, each on new batches (0: 5 for wgan-gp, "
                  "else 1)")
      ->capture_default_str();
  cmd->add_option("--d-norm", a.gan.d_norm,
                  "GAN: normalization in D, batch or none (auto: none with a gradient penalty or --spectral-norm)")
      ->check(CLI::IsMember({"auto", "batch", "none"}))
      ->capture_default_str();
  cmd->add_flag("--spectral-norm", a.gan.model.spectral_norm,
                "GAN: divide each of D's convolution weights by its largest singular value (Miyato et al.)");
  cmd->add_option("--beta1", a.gan.beta1, "GAN: Adam beta1")->capture_default_str();
  cmd->add_option("--nz", a.gan.model.nz, "GAN: latent size")->capture_default_str();
  cmd->add_option("--ngf", a.gan.model.ngf, "GAN: generator width")->capture_default_str();
  cmd->add_option("--ndf", a.gan.model.ndf, "GAN: discriminator width")->capture_default_str();
  cmd->add_flag("--hflip", a.gan.hflip, "GAN, diffusion: random horizontal flips of the training images");
  DiffusionTrainOptions& d = a.ddpm;
  cmd->add_option("--schedule", d.schedule, "Diffusion: beta schedule, linear (1e-4 to 0.02) or cosine")
      ->check(CLI::IsMember({"linear", "cosine"}))
      ->capture_default_str();
  cmd->add_option("--timesteps", d.timesteps, "Diffusion: T, the number of noising steps")->capture_default_str();
  cmd->add_option("--ch", d.model.ch, "Diffusion: U-Net base channels")->capture_default_str();
  cmd->add_option("--ch-mult", a.ch_mult, "Diffusion: channel multiplier per level, e.g. 1,2,2")->delimiter(',');
  cmd->add_option("--res-blocks", d.model.num_res_blocks, "Diffusion: residual blocks per level")
      ->capture_default_str();
  cmd->add_option("--attn-res", a.attn_res, "Diffusion: feature-map sizes with self-attention, e.g. 7 or 14,7")
      ->delimiter(',');
  cmd->add_option("--prediction", d.model.prediction,
                  "Diffusion: what the U-Net learns to output: eps (the noise), v (sqrt(abar) eps - sqrt(1 - abar) "
                  "x0) or x0; every sampler works with each")
      ->check(CLI::IsMember({"eps", "v", "x0"}))
      ->capture_default_str();
  cmd->add_option("--ema-decay", d.ema_decay, "Diffusion: decay of the weights' moving average used to sample")
      ->capture_default_str();
  cmd->add_option("--p-uncond", d.p_uncond,
                  "Diffusion, --conditional: share of labels dropped while training (enables --guidance)")
      ->capture_default_str();
}

// gpt and llama: the same trainer, the blocks chosen by the preset (or --arch).
void train_gpt_family(TrainArgs& a) {
  const bool llama = a.family == "llama" || a.arch == "llama";
  if (llama && !a.given("--preset")) a.preset = "llama-small";
  GPTConfig c = preset_config(a.preset);
  AIGC_CHECK(
      c.is_llama() == llama || a.arch == "llama",
      "--preset " + a.preset +
          (llama
               ? " is not a Llama shape (llama-tiny, llama-small, smollm-135m, smollm-360m, llama-1024, tinyllama-1.1b)"
               : " is a Llama shape: use aigc train llama"));
  if (a.arch == "transformer") {
    GPTConfig t = GPTConfig::transformer_style();
    c.norm = t.norm, c.activation = t.activation, c.tie_embeddings = t.tie_embeddings, c.lm_head_bias = t.lm_head_bias;
  } else if (a.arch == "llama" && !c.is_llama()) {
    GPTConfig l = GPTConfig::llama_style();
    l.n_layer = c.n_layer, l.n_head = c.n_head, l.n_embd = c.n_embd, l.block_size = c.block_size;
    c = l;
  } else if (!a.arch.empty() && a.arch != "gpt2" && a.arch != "llama") {
    fail("--arch must be gpt2, transformer or llama");
  }
  if (a.over.n_layer) c.n_layer = a.over.n_layer;
  if (a.over.n_head) c.n_head = a.over.n_head;
  if (a.over.n_embd) c.n_embd = a.over.n_embd;
  if (a.over.block_size) c.block_size = a.over.block_size;
  if (a.over.dropout >= 0) c.dropout = a.over.dropout;
  a.gpt.model = c;
  if (a.given("--sample-interval")) a.gpt.sample_interval = a.gan.sample_interval;
  TrainResult r = train_gpt(a.gpt, a.sync.get());
  if (a.gpt.quiet) return;
  std::fprintf(stderr, "done: %lld steps, last val loss %.4f, checkpoint %s\n", (long long)r.steps_done,
               r.last_val_loss, r.checkpoint.c_str());
}

// The shared flags the user gave, onto an image family's options (their own defaults otherwise).
template <class Options>
void shared_to(const TrainArgs& a, Options& o) {
  const TrainOptions& t = a.gpt;
  if (!t.data_files.empty()) o.data = t.data_files.front();
  if (a.given("--steps")) o.steps = t.steps;
  if (a.given("--batch")) o.batch_size = t.batch_size;
  if (a.given("--lr")) o.lr = t.optim.lr;
  if (a.given("--grad-clip")) o.grad_clip = float(t.grad_clip);
  if (a.given("--out")) o.out_dir = t.out_dir;
  if (a.given("--log-interval")) o.log_interval = t.log_interval;
  if (a.given("--sample-interval")) o.sample_interval = a.gan.sample_interval;
  o.grad_accum = t.grad_accum, o.stop_after = t.stop_after;
  if (a.given("--max-minutes")) o.max_minutes = t.max_minutes;
  o.seed = t.seed, o.resume = t.resume;
  o.rank = t.rank, o.world = t.world, o.quiet = t.quiet;
}

void train_dcgan_family(TrainArgs& a) {
  GanTrainOptions o = a.gan;
  if (a.given("--preset")) {
    apply_gan_preset(a.preset, o);
    if (a.given("--conditional")) o.conditional = true;
  }
  if (o.objective.loss == "wgan-gp") {  // Gulrajani et al.'s Adam settings, unless given
    if (!a.given("--lr")) o.lr = 1e-4f;
    if (!a.given("--beta1")) o.beta1 = 0.0f;
    if (!a.given("--beta2")) o.beta2 = 0.9f;
  }
  if (a.given("--beta2")) o.beta2 = float(a.gpt.optim.beta2);
  shared_to(a, o);
  GanTrainResult r = train_dcgan(o, a.sync.get());
  if (o.quiet) return;
  std::fprintf(stderr, "done: %lld steps, D loss %.4f, G loss %.4f, checkpoint %s\n", (long long)r.steps_done,
               r.last_d_loss, r.last_g_loss, r.checkpoint.c_str());
}

void train_ddpm_family(TrainArgs& a) {
  AIGC_CHECK(!a.given("--preset"), "--preset names a GPT shape or a DCGAN recipe; DDPM has none");
  DiffusionTrainOptions o = a.ddpm;
  shared_to(a, o);
  if (a.given("--warmup")) o.warmup = a.gpt.warmup;
  if (a.given("--dropout")) o.model.dropout = a.over.dropout;
  if (!a.ch_mult.empty()) o.model.ch_mult = a.ch_mult;
  if (a.given("--attn-res")) o.model.attn_resolutions = a.attn_res;
  o.conditional = a.gan.conditional, o.hflip = a.gan.hflip;
  DiffusionTrainResult r = train_diffusion(o, a.sync.get());
  if (o.quiet) return;
  std::fprintf(stderr, "done: %lld steps, loss %.4f -> %.4f, checkpoint %s\n", (long long)r.steps_done, r.first_loss,
               r.last_loss, r.checkpoint.c_str());
}

void train_classifier_family(TrainArgs& a) {
  ClassifierTrainOptions co;
  if (!a.gpt.data_files.empty()) co.data = a.gpt.data_files.front();
  if (a.given("--steps")) co.epochs = a.gpt.steps;  // for the classifier, --steps counts epochs
  if (a.given("--out")) co.out = a.gpt.out_dir + "/ckpt.safetensors";
  co.seed = a.gpt.seed;
  std::filesystem::create_directories(std::filesystem::path(co.out).parent_path());
  double acc = train_classifier(co);
  std::fprintf(stderr, "test accuracy %.4f; saved %s\n", acc, co.out.c_str());
}

void run_ranks(TrainArgs& a);

void run(TrainArgs& a) {
  if (!a.model_alias.empty()) {
    AIGC_CHECK(!a.given("family") || a.model_alias == a.family,
               "train " + a.family + " --model " + a.model_alias + ": give the family once");
    a.family = a.model_alias;
  }
  if (a.precision == "bf16") {
    set_matmul_precision(MatmulPrecision::BF16);
    if (!bf16_is_native())
      std::fprintf(stderr,
                   "note: this CPU has no native bf16 instructions: matrix products are emulated (same numbers, no "
                   "speed-up) and convolutions stay fp32\n");
  }
  if (launched_by_mpi()) {
    AIGC_CHECK(a.family != "classifier", "the FID classifier trains in one process; run it without mpirun");
    return run_ranks(a);
  }
  if (a.family == "gpt" || a.family == "llama") return train_gpt_family(a);
  if (a.family == "dcgan") return train_dcgan_family(a);
  if (a.family == "ddpm") return train_ddpm_family(a);
  return train_classifier_family(a);
}

// Under mpirun or srun: join the ranks, split the cores among the ranks of this host unless -t says otherwise,
// and let only rank 0 speak (unless --verbose). A rank that fails exits at once without MPI's shutdown (which
// would wait for the others); the launcher then stops the rest, and each of them names the rank that is gone.
void run_ranks(TrainArgs& a) {
  AIGC_CHECK(a.bucket_mb > 0, "--bucket-mb must be positive");
  a.dist.bucket_bytes = int64_t(a.bucket_mb * double(1 << 20));
  a.sync = join_ranks(a.dist);
  const int rank = a.sync->rank(), world = a.sync->world();
  a.gpt.rank = rank, a.gpt.world = world;
  a.gpt.quiet = rank != 0 && !a.verbose;
  if (threads() == 0) {
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    if (!local) local = std::getenv("SLURM_NTASKS_PER_NODE");
    const int per_host = local ? std::max(1, std::atoi(local)) : 1;
    set_num_threads(std::max(1, int(std::thread::hardware_concurrency()) / per_host));
  }
  if (rank == 0)
    std::fprintf(stderr, "data parallel: %d ranks, %d threads each; rank 0 writes the run folder\n", world,
                 get_num_threads());
  try {
    if (a.family == "gpt" || a.family == "llama") return train_gpt_family(a);
    if (a.family == "dcgan") return train_dcgan_family(a);
    return train_ddpm_family(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] error: %s\n", rank, e.what());
    std::fflush(stderr);
    std::_Exit(1);
  }
}

}  // namespace

Command train_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  a->over.n_layer = a->over.n_head = a->over.n_embd = a->over.block_size = 0;
  a->over.dropout = -1;
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train a model: a GPT or Llama-family language model on text (gpt, the default; llama), a DCGAN or DDPM "
      "diffusion model on images, or the FID feature classifier");
  a->cmd = cmd;
  const auto families = CLI::IsMember({"gpt", "llama", "dcgan", "ddpm", "classifier"});
  cmd->add_option("family", a->family, "gpt | llama | dcgan | ddpm | classifier")
      ->check(families)
      ->capture_default_str();
  cmd->add_option("--model", a->model_alias, "The family, as a flag (same as the positional FAMILY)")->check(families);
  add_shared(cmd, *a);
  add_gpt(cmd, *a);
  add_images(cmd, *a);
  cmd->footer(
      "Examples:\n"
      "  aigc train gpt --data poems --preset small --steps 2000 --out runs/poems   # a GPT on Tang/Song poems\n"
      "  aigc train llama --data fortunes --steps 2000 --out runs/llama           # Llama blocks (llama-small)\n"
      "  aigc train dcgan --conditional --steps 3000 --out runs/dcgan             # a class-conditional GAN\n"
      "  aigc train ddpm --schedule cosine --steps 4000 --out runs/ddpm           # diffusion, cosine betas\n"
      "  aigc train ddpm --steps 8000 --out runs/ddpm --resume                    # continue where it stopped\n"
      "Each run directory holds ckpt.safetensors (written atomically, enough to --resume exactly), metrics.jsonl\n"
      "(one line per update), config.json and samples/. Ctrl-C saves and stops.\n"
      "GPT and Llama presets (--preset):\n" +
      presets_help() + "DCGAN presets (aigc train dcgan --preset NAME; flags given override them):\n" +
      gan_presets_help());
  return {cmd, [a] { run(*a); }};
}

}  // namespace aigc::cli
