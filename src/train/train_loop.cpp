// The training loop shared by every family (see train_loop.h for the policy it implements).
#include "aigc/train_loop.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/interrupt.h"
#include "aigc/optim.h"

namespace fs = std::filesystem;

namespace aigc {

std::string format_duration(double s) {
  char buf[32];
  if (!std::isfinite(s) || s < 0) s = 0;
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else
    std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  return buf;
}

// ---- RunDir ----

std::string RunDir::checkpoint() const { return (fs::path(dir_) / "ckpt.safetensors").string(); }
std::string RunDir::metrics() const { return (fs::path(dir_) / "metrics.jsonl").string(); }
std::string RunDir::config() const { return (fs::path(dir_) / "config.json").string(); }
std::string RunDir::sample(int64_t step, const std::string& ext) const {
  return (fs::path(dir_) / "samples" / ("step_" + std::to_string(step) + "." + ext)).string();
}

void RunDir::create() const {
  std::error_code ec;
  fs::create_directories(fs::path(dir_) / "samples", ec);
  AIGC_CHECK(!ec, "cannot create the run directory '" + dir_ + "': " + ec.message());
}

void RunDir::write_config(const nlohmann::json& config) const {
  write_file_atomic(this->config(), config.dump(2) + "\n");
}

void RunDir::trim_metrics(int64_t step) const {
  std::string kept;
  if (step > 0) {
    std::ifstream in(metrics());
    std::string line;
    while (std::getline(in, line)) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      // A line cut short by a crash, or one past the checkpoint, goes.
      if (j.is_object() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() <= step)
        kept += line + "\n";
    }
  }
  write_file_atomic(metrics(), kept);
}

// ---- StepValues, StepContext ----

double StepValues::get(const std::string& name) const {
  for (const auto& [k, v] : items)
    if (k == name) return v;
  fail("no value named '" + name + "' in this step");
}

bool StepContext::apply(ParamStore& params, Optimizer& optim, double loss, const std::string& model) {
  if (opt_ && opt_->grad_hook) opt_->grad_hook(params);
  const double norm = clip_grad_norm(params, opt_ ? opt_->grad_clip : 0.0);
  norms_.emplace_back(model, norm);
  if (!std::isfinite(loss) || !std::isfinite(norm)) {
    skipped_ = true;
    return false;
  }
  optim.step(lr);
  return true;
}

// ---- the loop ----

struct LoopRunner {
  TrainTask& task;
  const LoopOptions& opt;
  RunDir run{opt.out_dir};
  LoopResult res;

  void log(const std::string& s) const {
    if (!opt.quiet) std::fprintf(stderr, "%s\n", s.c_str());
  }

  nlohmann::json loop_json() const {
    return {{"steps", opt.steps},
            {"stop_after", opt.stop_after},
            {"grad_accum", opt.grad_accum},
            {"lr", opt.lr},
            {"lr_schedule", opt.lr_schedule},
            {"min_lr_ratio", opt.min_lr_ratio},
            {"warmup", opt.warmup},
            {"grad_clip", opt.grad_clip},
            {"max_bad_steps", opt.max_bad_steps},
            {"log_interval", opt.log_interval},
            {"eval_interval", opt.eval_interval},
            {"ckpt_interval", opt.ckpt_interval},
            {"sample_interval", opt.sample_interval},
            {"resume", opt.resume},
            {"grad_hook", bool(opt.grad_hook)}};
  }

  static std::string fmt_value(const std::string& name, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, name.rfind("loss", 0) == 0 ? "%s %.4f" : "%s %.3f", name.c_str(), v);
    return buf;
  }

  void progress(int64_t step, int64_t last, const StepValues& v, float lr,
                const std::vector<std::pair<std::string, double>>& norms, double ups, double elapsed,
                int64_t done) const {
    std::string line = "step " + std::to_string(step) + "/" + std::to_string(last);
    for (const auto& [k, x] : v.items) line += " | " + fmt_value(k, x);
    char buf[96];
    std::snprintf(buf, sizeof buf, " | lr %.2e", lr);
    line += buf;
    for (const auto& [name, n] : norms) {
      std::snprintf(buf, sizeof buf, n < 100 ? " | norm%s %.2f" : " | norm%s %.3g",
                    name.empty() ? "" : (" " + name).c_str(), n);
      line += buf;
    }
    std::snprintf(buf, sizeof buf, " | %.0f %s/s | ETA %s", ups, task.unit() == "tokens" ? "tok" : "img",
                  format_duration(elapsed / double(done) * double(last - step)).c_str());
    log(line + buf);
  }

  LoopResult run_all() {
    AIGC_CHECK(opt.steps >= 1, "steps must be at least 1");
    AIGC_CHECK(opt.grad_accum >= 1, "grad-accum must be at least 1");
    AIGC_CHECK(opt.log_interval >= 1, "log-interval must be at least 1");
    AIGC_CHECK(opt.max_bad_steps >= 1, "max-bad-steps must be at least 1");
    int64_t step = task.start_step();
    res.first_step = step;
    res.checkpoint = run.checkpoint();
    const int64_t last = opt.stop_after > 0 ? std::min(opt.stop_after, opt.steps) : opt.steps;
    run.create();
    run.trim_metrics(opt.resume ? step : 0);
    std::ofstream metrics(run.metrics(), std::ios::app);
    AIGC_CHECK(metrics.good(), "cannot write the metrics log '" + run.metrics() + "'");
    if (opt.resume) log("resuming at step " + std::to_string(step));
    run.write_config({{"loop", loop_json()}, {"family", nlohmann::json::parse(task.config_json())}});

    auto every = [](int64_t s, int64_t n) { return n > 0 && s % n == 0; };
    SigintGuard interrupt;
    const auto t0 = std::chrono::steady_clock::now();
    int bad_in_a_row = 0;
    bool sampled_last = false, saved_last = false;
    while (step < last && !interrupt.requested()) {
      StepContext ctx;
      ctx.opt_ = &opt;
      ctx.step = step;
      ctx.micro_batches = opt.grad_accum;
      ctx.lr = lr_at(opt.lr_schedule, step, opt.lr, opt.lr * opt.min_lr_ratio, opt.warmup, opt.steps);
      StepValues v = task.update(ctx);
      step++;
      if (ctx.skipped()) {
        bad_in_a_row++;
        log("warning: step " + std::to_string(step) + ": non-finite loss or gradient; update skipped (" +
            std::to_string(bad_in_a_row) + " in a row)");
        AIGC_CHECK(bad_in_a_row < opt.max_bad_steps,
                   "training diverged: " + std::to_string(bad_in_a_row) +
                       " consecutive steps had a non-finite loss or gradient. Try a lower --lr or stronger "
                       "--grad-clip; the last good checkpoint is '" +
                       run.checkpoint() + "'");
      } else {
        bad_in_a_row = 0;
      }
      const int64_t done = step - res.first_step;
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      res.units_per_s = elapsed > 0 ? double(done * task.units_per_update()) / elapsed : 0;

      nlohmann::json m = {{"step", step}};
      for (const auto& [k, x] : v.items) m[k] = x;
      m["lr"] = ctx.lr;
      const auto& norms = ctx.grad_norms();
      for (const auto& [name, n] : norms) m[name.empty() ? "grad_norm" : "grad_norm_" + name] = n;
      m[task.unit() + "_per_s"] = res.units_per_s;
      m["elapsed_s"] = elapsed;  // since this invocation started
      res.history.push_back(v);

      if (every(step, opt.log_interval) || step == last || done == 1)
        progress(step, last, v, ctx.lr, norms, res.units_per_s, elapsed, done);
      const bool evaluated_last = every(step, opt.eval_interval) || (opt.eval_interval > 0 && step == last);
      if (evaluated_last) {
        res.last_eval = task.evaluate();
        std::string line = "step " + std::to_string(step);
        for (const auto& [k, x] : res.last_eval.items) m[k] = x, line += " | " + fmt_value(k, x);
        log(line);
      }
      metrics << m.dump() << "\n";
      metrics.flush();
      sampled_last = every(step, opt.sample_interval);
      if (sampled_last) log("samples: " + task.sample(run, step));
      saved_last = every(step, opt.ckpt_interval) || evaluated_last;
      if (saved_last) task.save(run, step);
    }
    res.interrupted = interrupt.requested();
    res.steps_done = step;
    if (step > res.first_step || res.interrupted) {
      if (!saved_last) task.save(run, step);
      if (opt.sample_interval > 0 && !sampled_last && step > res.first_step) log("samples: " + task.sample(run, step));
      log(std::string(res.interrupted ? "interrupted: " : "") + "saved '" + run.checkpoint() + "' at step " +
          std::to_string(step) + (step < opt.steps ? "; continue with --resume" : ""));
    }
    return res;
  }
};

LoopResult run_training(TrainTask& task, const LoopOptions& opt) {
  return LoopRunner{task, opt, RunDir(opt.out_dir), {}}.run_all();
}

}  // namespace aigc
