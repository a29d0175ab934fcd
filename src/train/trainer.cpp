#include "aigc/trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "aigc/autograd.h"
#include "aigc/checkpoint.h"
#include "aigc/error.h"
#include "aigc/interrupt.h"
#include "aigc/text_data.h"
#include "aigc/tokenizer.h"

namespace fs = std::filesystem;

namespace aigc {

namespace {


std::string fmt_duration(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  return buf;
}

// Mean loss over the first n_batches batches of the validation stream (always the same windows).
float evaluate(GPT& model, const std::vector<int32_t>& val, int64_t B, int64_t T, int64_t n_batches) {
  NoGradGuard ng;
  TokenLoader loader(val, B, T, 0);
  n_batches = std::min(n_batches, std::max<int64_t>(1, loader.num_windows() / B));
  Tensor x = Tensor::empty({B, T}, DType::I32), y = Tensor::empty({B, T}, DType::I32);
  double sum = 0;
  for (int64_t i = 0; i < n_batches; i++) {
    loader.next(x, y);
    sum += model.loss(x, y).item();
  }
  return float(sum / double(n_batches));
}

}  // namespace

TrainResult train_gpt(const TrainOptions& opt) {
  const std::string ckpt_path = (fs::path(opt.out_dir) / "ckpt.safetensors").string();
  const std::string metrics_path = (fs::path(opt.out_dir) / "metrics.jsonl").string();
  auto log = [&](const std::string& s) {
    if (!opt.quiet) std::fprintf(stderr, "%s\n", s.c_str());
  };

  const std::vector<std::string> files = resolve_corpus(opt.data_files);
  std::vector<std::string> texts;  // one per file: each contributes its tail to validation
  std::string text;
  for (const std::string& f : files) text += texts.emplace_back(read_text_corpus({f}));

  // Model + tokenizer: fresh, or restored from the run's checkpoint.
  std::unique_ptr<GPT> model;
  std::unique_ptr<Tokenizer> tok;
  nlohmann::json state;
  if (opt.resume) {
    AIGC_CHECK(fs::exists(ckpt_path), "--resume: no checkpoint at '" + ckpt_path + "'");
    LoadedModel lm = load_model(ckpt_path);
    model = std::move(lm.model);
    tok = std::move(lm.tokenizer);
    AIGC_CHECK(!lm.train_state.empty(), "'" + ckpt_path + "' holds no training state to resume from");
    state = nlohmann::json::parse(lm.train_state);
  } else {
    tok = load_tokenizer_spec(opt.tokenizer, text);
    GPTConfig cfg = opt.model;
    cfg.vocab_size = tok->vocab_size();
    model = std::make_unique<GPT>(cfg);
    model->init_weights(opt.seed);
    state = {{"step", 0}, {"data_position", 0}, {"seed", opt.seed}, {"tokens_seen", 0}};
  }
  const GPTConfig& cfg = model->config();
  const int64_t B = opt.batch_size, T = cfg.block_size;

  // Validation is the last val_fraction of every file, so it follows the training mix of the files rather
  // than being whichever file happens to come last.
  std::vector<int32_t> trn, val;
  for (const std::string& t : texts) {
    std::vector<int> ids = tok->encode(t);
    auto cut = ids.end() - int64_t(double(ids.size()) * opt.val_fraction);
    trn.insert(trn.end(), ids.begin(), cut);
    val.insert(val.end(), cut, ids.end());
  }
  if (int64_t(val.size()) < T + 1) {  // tiny corpora: move enough of the training tail over to fill one window
    int64_t need = std::min<int64_t>(int64_t(trn.size()) / 2, T + 1 - int64_t(val.size()));
    val.insert(val.begin(), trn.end() - need, trn.end());
    trn.resize(trn.size() - size_t(need));
  }
  TokenLoader loader(trn, B, T, state["seed"].get<uint64_t>());
  loader.set_position(state["data_position"].get<int64_t>());

  Optimizer optim(model->params(), opt.optim);
  if (opt.resume) load_optimizer_state(ckpt_path, *model, optim);
  int64_t step = state["step"].get<int64_t>();
  int64_t tokens_seen = state["tokens_seen"].get<int64_t>();
  const int64_t last = opt.stop_after > 0 ? std::min(opt.stop_after, opt.steps) : opt.steps;

  log("model: " + std::to_string(model->num_params()) + " parameters (" + std::to_string(cfg.n_layer) + " layers, " +
      std::to_string(cfg.n_head) + " heads, " + std::to_string(cfg.n_embd) + " wide, context " + std::to_string(T) +
      ", vocab " + std::to_string(cfg.vocab_size) + ", " + cfg.norm + "-LN " + cfg.activation + ")");
  log("data: " + std::to_string(trn.size()) + " train / " + std::to_string(val.size()) + " val tokens (" +
      tok->kind() + " tokenizer); " + std::to_string(B) + "x" + std::to_string(T) + "x" +
      std::to_string(opt.grad_accum) + " tokens per step");
  if (opt.resume) log("resuming at step " + std::to_string(step));

  fs::create_directories(opt.out_dir);
  std::ofstream metrics(metrics_path, opt.resume ? std::ios::app : std::ios::trunc);
  AIGC_CHECK(metrics.good(), "cannot write metrics log '" + metrics_path + "'");

  auto save = [&] {
    state["step"] = step;
    state["data_position"] = loader.position();
    state["tokens_seen"] = tokens_seen;
    save_checkpoint(ckpt_path, *model, *tok, &optim, state.dump());
  };

  SigintGuard interrupt;
  TrainResult res;
  res.checkpoint = ckpt_path;
  Tensor x = Tensor::empty({B, T}, DType::I32), y = Tensor::empty({B, T}, DType::I32);
  int bad_in_a_row = 0;
  auto t_start = std::chrono::steady_clock::now();
  auto t_log = t_start;
  int64_t tokens_since_log = 0, steps_this_run = 0;
  const float max_lr = opt.optim.lr;

  {
    while (step < last && !interrupt.requested()) {
      float lr = lr_at(opt.lr_schedule, step, max_lr, max_lr * opt.min_lr_ratio, opt.warmup, opt.steps);
      model->params().zero_grad();
      double loss_sum = 0;
      for (int64_t micro = 0; micro < opt.grad_accum; micro++) {
        loader.next(x, y);
        Tensor loss = model->loss(x, y, cfg.dropout > 0, opt.seed * 7919 + uint64_t(step * opt.grad_accum + micro));
        loss_sum += loss.item();
        backward(loss, 1.0f / float(opt.grad_accum));
      }
      float loss = float(loss_sum / double(opt.grad_accum));
      double norm = clip_grad_norm(model->params(), opt.grad_clip);
      if (!std::isfinite(loss) || !std::isfinite(norm)) {
        bad_in_a_row++;
        log("warning: step " + std::to_string(step + 1) + ": non-finite " + (std::isfinite(loss) ? "gradient" : "loss") +
            "; update skipped (" + std::to_string(bad_in_a_row) + " in a row)");
        AIGC_CHECK(bad_in_a_row < opt.max_bad_steps,
                   "training diverged: " + std::to_string(bad_in_a_row) +
                       " consecutive steps had a non-finite loss or gradient. Try a lower --lr or stronger --grad-clip;"
                       " the last good checkpoint is '" + ckpt_path + "'");
      } else {
        bad_in_a_row = 0;
        optim.step(lr);
      }
      step++;
      steps_this_run++;
      tokens_seen += B * T * opt.grad_accum;
      tokens_since_log += B * T * opt.grad_accum;
      res.losses.push_back(loss);

      nlohmann::json m = {{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm}};
      bool do_eval = step % opt.eval_interval == 0 || step == last;
      if (step % opt.log_interval == 0 || do_eval || step == 1) {
        auto now = std::chrono::steady_clock::now();
        double dt = std::chrono::duration<double>(now - t_log).count();
        double elapsed = std::chrono::duration<double>(now - t_start).count();
        double tps = dt > 0 ? double(tokens_since_log) / dt : 0;
        double eta = elapsed / double(steps_this_run) * double(last - step);
        res.tokens_per_s = tps;
        m["tokens_per_s"] = tps;
        char line[256];
        std::snprintf(line, sizeof line, "step %6lld/%lld | loss %.4f | lr %.2e | norm %.2f | %.0f tok/s | ETA %s",
                      (long long)step, (long long)last, loss, lr, norm, tps, fmt_duration(eta).c_str());
        log(line);
        t_log = now;
        tokens_since_log = 0;
      }
      if (do_eval) {
        res.last_val_loss = evaluate(*model, val, B, T, opt.eval_batches);
        m["val_loss"] = res.last_val_loss;
        char line[128];
        std::snprintf(line, sizeof line, "step %6lld | val loss %.4f | saved %s", (long long)step, res.last_val_loss,
                      ckpt_path.c_str());
        save();
        log(line);
      }
      metrics << m.dump() << "\n";
      metrics.flush();
    }
    if (interrupt.requested()) {
      save();
      log("interrupted: state saved to '" + ckpt_path + "' at step " + std::to_string(step) +
          "; continue with --resume");
    }
  }
  res.steps_done = step;
  return res;
}

}  // namespace aigc
