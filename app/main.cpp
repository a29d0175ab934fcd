// aigc command line: train | generate | eval | sample | fid | serve | tokenize | tokenizer train.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <random>

#include "aigc/autograd.h"
#include "aigc/backend.h"
#include "aigc/checkpoint.h"
#include "aigc/diffusion_trainer.h"
#include "aigc/error.h"
#include "aigc/evaluate.h"
#include "aigc/fid.h"
#include "aigc/file_util.h"
#include "aigc/gan_trainer.h"
#include "aigc/generate.h"
#include "aigc/image_io.h"
#include "aigc/rng.h"
#include "aigc/text_data.h"
#include "aigc/tokenizer.h"
#include "aigc/trainer.h"
#include "image_commands.h"
#include "serve_command.h"

using namespace aigc;

namespace {

// Model shapes by name; individual --n-layer etc. flags override them.
GPTConfig preset(const std::string& name) {
  GPTConfig c = GPTConfig::gpt2_style();
  if (name == "tiny") {
    c.n_layer = 2, c.n_head = 2, c.n_embd = 64, c.block_size = 64;
  } else if (name == "small") {
    c.n_layer = 4, c.n_head = 4, c.n_embd = 128, c.block_size = 64;
  } else if (name == "shakespeare-char") {
    c.n_layer = 6, c.n_head = 6, c.n_embd = 384, c.block_size = 256;
  } else if (name == "gpt2-124m") {
    c.n_layer = 12, c.n_head = 12, c.n_embd = 768, c.block_size = 1024;
  } else if (name == "transformer") {
    c = GPTConfig::transformer_style();
    c.n_layer = 4, c.n_head = 4, c.n_embd = 128;
  } else {
    fail("unknown --preset \"" + name + "\" (tiny, small, shakespeare-char, gpt2-124m, transformer)");
  }
  return c;
}

void add_threads(CLI::App* cmd, int& threads) {
  cmd->add_option("--threads,-t", threads, "CPU threads (default: all cores)");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "aigc: train and run generative models on your own hardware: GPT language models (text), DCGAN and DDPM "
      "diffusion models (images)"};
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  aigc train --out runs/gpt                                   # a small GPT on the built-in fortunes corpus\n"
      "  aigc generate --ckpt runs/gpt/ckpt.safetensors -p \"The \" -n 200\n"
      "  aigc train --model ddpm --steps 4000 --out runs/ddpm        # diffusion on Fashion-MNIST\n"
      "  aigc sample --ckpt runs/ddpm/ckpt.safetensors --steps 50 --n 64 --out grid.png\n"
      "  aigc serve --ckpt runs/gpt/ckpt.safetensors --image-ckpt runs/ddpm/ckpt.safetensors\n"
      "Run `aigc SUBCOMMAND --help` for each command's options.");
  int threads = 0;

  // ---- train ----
  TrainOptions topt;
  std::string preset_name = "small", arch;
  GPTConfig over;  // -1 style sentinels: only flags given override the preset
  over.n_layer = over.n_head = over.n_embd = over.block_size = 0;
  over.dropout = -1;
  auto* train =
      app.add_subcommand("train", "Train a model: a GPT on text (default), or a DCGAN or DDPM diffusion model on "
                                  "images (--model dcgan | ddpm)");
  train->footer(
      "Examples:\n"
      "  aigc train --data poems --preset small --steps 2000 --out runs/poems   # a GPT on Tang/Song poems\n"
      "  aigc train --model dcgan --conditional --steps 3000 --out runs/dcgan    # a class-conditional GAN\n"
      "  aigc train --model ddpm --schedule cosine --steps 4000 --out runs/ddpm  # diffusion, cosine betas\n"
      "  aigc train --model ddpm --steps 8000 --out runs/ddpm --resume           # continue where it stopped\n"
      "Each run directory holds ckpt.safetensors (written atomically, enough to --resume exactly) and metrics.jsonl.");
  std::string model_kind = "gpt";
  train
      ->add_option("--model", model_kind,
                   "gpt (text), dcgan or ddpm (images; the GAN / diffusion options below apply) or classifier "
                   "(the FID feature net)")
      ->check(CLI::IsMember({"gpt", "dcgan", "ddpm", "classifier"}))
      ->capture_default_str();
  train->add_option(
      "--data", topt.data_files,
      "Text file(s), or a built-in corpus: fortunes (English, the default) or poems (Tang/Song, Chinese). "
      "Fortune files are cleaned of % lines and colour codes");
  train->add_option("--tokenizer", topt.tokenizer, "bytes | char | path to a BPE tokenizer (vocab.json+merges.txt)")
      ->capture_default_str();
  train->add_option("--preset", preset_name, "Model shape: tiny, small, shakespeare-char, gpt2-124m, transformer")
      ->capture_default_str();
  train->add_option("--arch", arch, "gpt2 (pre-LN, GELU, tied) or transformer (post-LN, ReLU, untied head)");
  train->add_option("--n-layer", over.n_layer, "Transformer blocks");
  train->add_option("--n-head", over.n_head, "Attention heads");
  train->add_option("--n-embd", over.n_embd, "Embedding width");
  train->add_option("--block-size", over.block_size, "Context length");
  train->add_option("--dropout", over.dropout, "Dropout probability");
  train->add_option("--steps", topt.steps, "Optimizer steps")->capture_default_str();
  train->add_option("--stop-after", topt.stop_after, "Stop (and save) after this step, e.g. to resume later");
  train->add_option("--batch", topt.batch_size, "Sequences per micro-batch")->capture_default_str();
  train->add_option("--grad-accum", topt.grad_accum, "Micro-batches per step")->capture_default_str();
  train->add_option("--optimizer", topt.optim.name, "adamw | adam | sgd")->capture_default_str();
  train->add_option("--lr", topt.optim.lr, "Peak learning rate")->capture_default_str();
  train->add_option("--min-lr-ratio", topt.min_lr_ratio, "Final LR as a fraction of --lr (cosine)")
      ->capture_default_str();
  train->add_option("--lr-schedule", topt.lr_schedule, "cosine | constant")->capture_default_str();
  train->add_option("--warmup", topt.warmup, "Linear warmup steps")->capture_default_str();
  train->add_option("--weight-decay", topt.optim.weight_decay, "Decoupled weight decay (matrices only)")
      ->capture_default_str();
  train->add_option("--beta2", topt.optim.beta2, "Adam beta2")->capture_default_str();
  train->add_option("--grad-clip", topt.grad_clip, "Clip gradients to this global norm (0: off)")
      ->capture_default_str();
  train->add_option("--eval-interval", topt.eval_interval, "Validate and checkpoint every N steps")
      ->capture_default_str();
  train->add_option("--log-interval", topt.log_interval, "Progress line every N steps")->capture_default_str();
  train->add_option("--val-fraction", topt.val_fraction, "Share of the text held out")->capture_default_str();
  train->add_option("--out", topt.out_dir, "Run directory: ckpt.safetensors, metrics.jsonl")->capture_default_str();
  train->add_option("--seed", topt.seed, "Random seed (init, data order, dropout)")->capture_default_str();
  train->add_flag("--resume", topt.resume, "Continue the run in --out exactly where it stopped");
  std::string precision = "fp32";
  train
      ->add_option("--precision", precision,
                   "fp32, or bf16: matrix products and convolutions on bfloat16 operands with fp32 accumulation "
                   "and fp32 master weights (fast where the CPU has AVX512_BF16)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  GanTrainOptions gopt_gan;
  train->add_flag("--conditional", gopt_gan.conditional,
                  "GAN, diffusion: class-conditional model (labels from the data)");
  train
      ->add_option("--gan-loss", gopt_gan.loss,
                   "GAN: nonsaturating (G maximizes log D(G(z)), the default) or "
                   "minimax (G minimizes log(1 - D(G(z))))")
      ->check(CLI::IsMember({"nonsaturating", "minimax"}));
  train->add_option("--nz", gopt_gan.model.nz, "GAN: latent size")->capture_default_str();
  train->add_option("--ngf", gopt_gan.model.ngf, "GAN: generator width")->capture_default_str();
  train->add_option("--ndf", gopt_gan.model.ndf, "GAN: discriminator width")->capture_default_str();
  train->add_option("--sample-interval", gopt_gan.sample_interval, "Write samples every N steps: an image grid (GAN, diffusion) or 200 tokens of text (GPT, off by default)")
      ->capture_default_str();
  train->add_flag("--hflip", gopt_gan.hflip, "GAN, diffusion: random horizontal flips of the training images");
  DiffusionTrainOptions dopt;
  std::vector<int64_t> ch_mult, attn_res;
  train->add_option("--schedule", dopt.schedule, "Diffusion: beta schedule, linear (1e-4 to 0.02) or cosine")
      ->check(CLI::IsMember({"linear", "cosine"}))
      ->capture_default_str();
  train->add_option("--timesteps", dopt.timesteps, "Diffusion: T, the number of noising steps")->capture_default_str();
  train->add_option("--ch", dopt.model.ch, "Diffusion: U-Net base channels")->capture_default_str();
  train->add_option("--ch-mult", ch_mult, "Diffusion: channel multiplier per level, e.g. 1,2,2")->delimiter(',');
  train->add_option("--res-blocks", dopt.model.num_res_blocks, "Diffusion: residual blocks per level")
      ->capture_default_str();
  train->add_option("--attn-res", attn_res, "Diffusion: feature-map sizes with self-attention, e.g. 7 or 14,7")
      ->delimiter(',');
  train->add_option("--ema-decay", dopt.ema_decay, "Diffusion: decay of the weights' moving average used to sample")
      ->capture_default_str();
  train
      ->add_option("--p-uncond", dopt.p_uncond,
                   "Diffusion, --conditional: share of labels dropped while training (enables --guidance)")
      ->capture_default_str();
  add_threads(train, threads);

  // ---- generate ----
  std::string ckpt, prompt;
  GenerateOptions gopt;
  int64_t seed = -1;
  auto* gen = app.add_subcommand("generate", "Generate text from a checkpoint (streams tokens as they come)");
  gen->add_option("--ckpt", ckpt, "aigc checkpoint file, or a Hugging Face GPT-2 directory")->required();
  gen->add_option("--prompt,-p", prompt, "Text to continue");
  gen->add_option("--max-tokens,-n", gopt.max_tokens, "Tokens to generate")->capture_default_str();
  gen->add_option("--temperature,--temp", gopt.sampling.temperature, "0 = greedy")->capture_default_str();
  gen->add_option("--top-k", gopt.sampling.top_k, "Keep the k most likely tokens (0: off)")->capture_default_str();
  gen->add_option("--top-p", gopt.sampling.top_p, "Nucleus sampling mass (1: off)")->capture_default_str();
  gen->add_option("--min-p", gopt.sampling.min_p, "Drop tokens below min-p x the top probability (0: off)")
      ->capture_default_str();
  gen->add_option("--repeat-penalty", gopt.sampling.repeat_penalty, "Penalize recent tokens (1: off)")
      ->capture_default_str();
  gen->add_option("--repeat-last-n", gopt.sampling.repeat_last_n, "Window for --repeat-penalty (-1: all, 0: off)")
      ->capture_default_str();
  gen->add_option("--seed,-s", seed, "Sampling seed (-1: random)")->capture_default_str();
  gen->add_option("--stop", gopt.stop, "Stop when this text is produced (repeatable)");
  std::string dtype = "f32";
  auto add_dtype = [&](CLI::App* cmd) {
    cmd->add_option("--dtype", dtype, "Weights for inference: f32, or bf16 (half the bytes per token)")
        ->check(CLI::IsMember({"f32", "bf16"}))
        ->capture_default_str();
  };
  add_dtype(gen);
  add_threads(gen, threads);

  // ---- eval ----
  std::string eval_data;
  auto* ev = app.add_subcommand("eval", "Mean next-token cross-entropy and perplexity of a checkpoint on a text file");
  ev->add_option("--ckpt", ckpt, "aigc checkpoint file, or a Hugging Face GPT-2 directory")->required();
  ev->add_option("--data", eval_data, "Text file (fortune files are cleaned as in training)")->required();
  add_dtype(ev);
  add_threads(ev, threads);

  // ---- sample (images) ----
  cli::SampleArgs sargs;
  auto* smp = app.add_subcommand("sample", "Generate images with a trained DCGAN or diffusion model into a PNG grid");
  smp->add_option("--ckpt", sargs.ckpt, "DCGAN or diffusion checkpoint (runs/.../ckpt.safetensors)")->required();
  smp->add_option("--n", sargs.n, "Number of images")->capture_default_str();
  smp->add_option("--out", sargs.out, "Output PNG")->capture_default_str();
  smp->add_option("--class", sargs.class_name, "Class name (or index) for a conditional model, e.g. sneaker");
  smp->add_option("--seed,-s", sargs.seed, "Noise seed (-1: random); the same seed gives the same images")
      ->capture_default_str();
  smp->add_flag("--interpolate", sargs.interpolate, "DCGAN: a strip walking the latent space between two points");
  // Diffusion sampler options, shared with `fid` (which samples the same way).
  auto add_sampler = [](CLI::App* cmd, SamplerOptions& so) {
    cmd->add_option("--sampler", so.sampler, "Diffusion: ddim (--steps steps) or ddpm (ancestral, all T steps)")
        ->check(CLI::IsMember({"ddim", "ddpm"}))
        ->capture_default_str();
    cmd->add_option("--steps", so.steps, "Diffusion, DDIM: denoising steps")->capture_default_str();
    cmd->add_option("--eta", so.eta, "Diffusion, DDIM: 0 deterministic, 1 as much noise as DDPM")
        ->capture_default_str();
    cmd->add_option("--variance", so.variance, "Diffusion, DDPM: sigma_t^2 = posterior variance or beta_t")
        ->check(CLI::IsMember({"posterior", "beta"}))
        ->capture_default_str();
    cmd->add_option("--guidance", so.guidance,
                    "Diffusion, conditional models: classifier-free guidance w, eps = (1 + w) eps(x, class) - "
                    "w eps(x); 0 = plain conditional sampling")
        ->capture_default_str();
  };
  add_sampler(smp, sargs.sampler);
  smp->footer(
      "Examples:\n"
      "  aigc sample --ckpt runs/ddpm/ckpt.safetensors --sampler ddim --steps 50 --n 64 --seed 1 --out grid.png\n"
      "  aigc sample --ckpt runs/ddpm/ckpt.safetensors --sampler ddpm --n 16 --save-trajectory traj/\n"
      "  aigc sample --ckpt runs/ddpm-cond/ckpt.safetensors --class bag --guidance 2 --out bags.png\n"
      "  aigc sample --ckpt runs/dcgan/ckpt.safetensors --interpolate --out walk.png");
  smp->add_option("--save-trajectory", sargs.trajectory,
                  "Diffusion: a directory for the denoising steps (one grid per step, up to 100, and strip.png: "
                  "the first image from noise to the end)");
  add_threads(smp, threads);

  // ---- fid ----
  cli::FidArgs fargs;
  auto* fid = app.add_subcommand("fid", "FID-FMNIST: Frechet distance of classifier features, real vs generated");
  fid->add_option("--real", fargs.real, "Dataset of real images (its test split)")->capture_default_str();
  fid->add_option("--fake", fargs.fake,
                  "A DCGAN or diffusion checkpoint to sample from, or a dataset directory (its test split)")
      ->required();
  fid->add_option("--classifier", fargs.classifier,
                  "Feature network: builtin (the pinned one FID-FMNIST is defined with, compiled in; scores from "
                  "any build compare) or a checkpoint of your own from aigc train --model classifier")
      ->capture_default_str();
  fid->add_option("--n", fargs.n, "Images per set")->capture_default_str();
  add_sampler(fid, fargs.sampler);
  add_threads(fid, threads);

  // ---- serve ----
  cli::ServeArgs serve_args;
  auto* srv = app.add_subcommand("serve", "HTTP server with OpenAI's API (completions, chat, images) and a playground");
  cli::add_serve_options(srv, serve_args);
  add_threads(srv, threads);

  // ---- tokenize / tokenizer train ----
  std::string tok_path, text_file;
  auto* tokz = app.add_subcommand("tokenize", "Print the token ids of a text file, space-separated, on one line");
  tokz->add_option("--tokenizer", tok_path, "bytes, or a BPE tokenizer directory / vocab file")->required();
  tokz->add_option("--text-file", text_file, "Input text")->required();
  std::vector<std::string> tok_data;
  int vocab_size = 4096;
  std::string tok_out;
  auto* tokenizer = app.add_subcommand("tokenizer", "Tokenizer tools");
  tokenizer->require_subcommand(1);
  auto* tok_train = tokenizer->add_subcommand("train", "Train a byte-level BPE tokenizer (GPT-2 format output)");
  tok_train->add_option("--data", tok_data, "Text file(s) (default: the built-in corpus)");
  tok_train->add_option("--vocab-size", vocab_size, "Vocabulary size (>= 256)")->capture_default_str();
  tok_train->add_option("--out", tok_out, "Output directory for vocab.json + merges.txt")->required();

  CLI11_PARSE(app, argc, argv);
  set_num_threads(threads);

  try {
    if (train->parsed() && precision == "bf16") {
      set_matmul_precision(MatmulPrecision::BF16);
      if (!bf16_is_native())
        std::fprintf(stderr,
                     "note: this CPU has no native bf16 instructions: matrix products are emulated (same "
                     "numbers, no speed-up) and convolutions stay fp32\n");
    }
    if (train->parsed() && model_kind == "dcgan") {
      // Flags shared with the GPT trainer, with the GAN's own defaults when not given.
      if (!topt.data_files.empty()) gopt_gan.data = topt.data_files.front();
      if (train->count("--steps")) gopt_gan.steps = topt.steps;
      if (train->count("--batch")) gopt_gan.batch_size = topt.batch_size;
      if (train->count("--lr")) gopt_gan.lr = topt.optim.lr;
      if (train->count("--out")) gopt_gan.out_dir = topt.out_dir;
      if (train->count("--log-interval")) gopt_gan.log_interval = topt.log_interval;
      if (train->count("--grad-clip")) gopt_gan.grad_clip = float(topt.grad_clip);
      gopt_gan.grad_accum = topt.grad_accum;
      gopt_gan.stop_after = topt.stop_after, gopt_gan.seed = topt.seed, gopt_gan.resume = topt.resume;
      GanTrainResult r = train_dcgan(gopt_gan);
      std::fprintf(stderr, "done: %lld steps, D loss %.4f, G loss %.4f, checkpoint %s\n", (long long)r.steps_done,
                   r.last_d_loss, r.last_g_loss, r.checkpoint.c_str());
    } else if (train->parsed() && model_kind == "ddpm") {
      if (!topt.data_files.empty()) dopt.data = topt.data_files.front();
      if (train->count("--steps")) dopt.steps = topt.steps;
      if (train->count("--batch")) dopt.batch_size = topt.batch_size;
      if (train->count("--lr")) dopt.lr = topt.optim.lr;
      if (train->count("--warmup")) dopt.warmup = topt.warmup;
      if (train->count("--grad-clip")) dopt.grad_clip = topt.grad_clip;
      if (train->count("--out")) dopt.out_dir = topt.out_dir;
      if (train->count("--log-interval")) dopt.log_interval = topt.log_interval;
      if (train->count("--sample-interval")) dopt.sample_interval = gopt_gan.sample_interval;
      if (train->count("--dropout")) dopt.model.dropout = over.dropout;
      dopt.grad_accum = topt.grad_accum;
      if (!ch_mult.empty()) dopt.model.ch_mult = ch_mult;
      if (train->count("--attn-res")) dopt.model.attn_resolutions = attn_res;
      dopt.conditional = gopt_gan.conditional, dopt.hflip = gopt_gan.hflip;
      dopt.stop_after = topt.stop_after, dopt.seed = topt.seed, dopt.resume = topt.resume;
      DiffusionTrainResult r = train_diffusion(dopt);
      std::fprintf(stderr, "done: %lld steps, loss %.4f -> %.4f, checkpoint %s\n", (long long)r.steps_done,
                   r.first_loss, r.last_loss, r.checkpoint.c_str());
    } else if (train->parsed() && model_kind == "classifier") {
      ClassifierTrainOptions co;
      if (!topt.data_files.empty()) co.data = topt.data_files.front();
      if (train->count("--steps")) co.epochs = topt.steps;  // for the classifier, --steps counts epochs
      if (train->count("--out")) co.out = topt.out_dir + "/ckpt.safetensors";
      co.seed = topt.seed;
      std::filesystem::create_directories(std::filesystem::path(co.out).parent_path());
      double acc = train_classifier(co);
      std::fprintf(stderr, "test accuracy %.4f; saved %s\n", acc, co.out.c_str());
    } else if (fid->parsed()) {
      cli::fid(fargs);
    } else if (srv->parsed()) {
      cli::serve(serve_args);
    } else if (smp->parsed()) {
      cli::sample_images(sargs);
    } else if (train->parsed()) {
      GPTConfig c = preset(preset_name);
      if (arch == "transformer") {
        GPTConfig t = GPTConfig::transformer_style();
        c.norm = t.norm, c.activation = t.activation, c.tie_embeddings = t.tie_embeddings,
        c.lm_head_bias = t.lm_head_bias;
      } else if (!arch.empty() && arch != "gpt2") {
        fail("--arch must be gpt2 or transformer");
      }
      if (over.n_layer) c.n_layer = over.n_layer;
      if (over.n_head) c.n_head = over.n_head;
      if (over.n_embd) c.n_embd = over.n_embd;
      if (over.block_size) c.block_size = over.block_size;
      if (over.dropout >= 0) c.dropout = over.dropout;
      topt.model = c;
      if (train->count("--sample-interval")) topt.sample_interval = gopt_gan.sample_interval;
      TrainResult r = train_gpt(topt);
      std::fprintf(stderr, "done: %lld steps, last val loss %.4f, checkpoint %s\n", (long long)r.steps_done,
                   r.last_val_loss, r.checkpoint.c_str());
    } else if (gen->parsed()) {
      LoadedModel lm = load_model(ckpt);
      if (dtype == "bf16") lm.model->set_inference_dtype(DType::BF16);
      gopt.sampling.seed = seed >= 0 ? uint64_t(seed) : std::random_device{}();
      std::cout << prompt << std::flush;
      GenerateResult r =
          generate(*lm.model, *lm.tokenizer, prompt, gopt, [](const std::string& s) { std::cout << s << std::flush; });
      std::cout << std::endl;
      std::fprintf(stderr, "[%d prompt tokens in %.2fs (%.1f tok/s), %d generated in %.2fs (%.1f tok/s), stop: %s]\n",
                   r.n_prompt, r.prefill_s, r.n_prompt / std::max(r.prefill_s, 1e-9), r.n_generated, r.decode_s,
                   r.n_generated / std::max(r.decode_s, 1e-9), r.stop_reason.c_str());
    } else if (ev->parsed()) {
      LoadedModel lm = load_model(ckpt);
      if (dtype == "bf16") lm.model->set_inference_dtype(DType::BF16);
      std::vector<int> ids = lm.tokenizer->encode(read_text_corpus(resolve_corpus({eval_data})));
      auto t0 = std::chrono::steady_clock::now();
      EvalResult r = evaluate_tokens(*lm.model, std::vector<int32_t>(ids.begin(), ids.end()));
      double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "%lld tokens in %.2fs (%.1f tok/s)\n", (long long)r.tokens, dt, double(r.tokens) / dt);
      std::printf("loss %.6f perplexity %.4f\n", r.loss, r.perplexity);
    } else if (tokz->parsed()) {
      std::string text = read_file(text_file);
      std::unique_ptr<Tokenizer> t = load_tokenizer_spec(tok_path, text);
      std::vector<int> ids = t->encode(text);
      std::string line;
      for (size_t i = 0; i < ids.size(); i++) line += (i ? " " : "") + std::to_string(ids[i]);
      std::printf("%s\n", line.c_str());
    } else if (tok_train->parsed()) {
      std::string text = read_text_corpus(resolve_corpus(tok_data));
      auto t0 = std::chrono::steady_clock::now();
      std::unique_ptr<Tokenizer> t = train_bpe_tokenizer(text, vocab_size, [](int done, int total) {
        if (done % 256 == 0 || done == total) std::fprintf(stderr, "\rmerges %d/%d", done, total);
      });
      save_bpe_tokenizer(*t, tok_out);
      double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "\ntrained %d-token BPE on %zu bytes in %.1fs; wrote %s/vocab.json, merges.txt\n",
                   t->vocab_size(), text.size(), dt, tok_out.c_str());
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
