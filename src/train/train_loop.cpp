// The training loop shared by every family (see train_loop.h for the policy it implements).
#include "aigc/train_loop.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "aigc/autograd.h"
#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/interrupt.h"
#include "aigc/optim.h"
#include "aigc/params.h"

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

void StepContext::backward(const Tensor& loss, ParamStore& params, int64_t micro, float sign) {
  const bool last = sync_ && micro + 1 == micro_batches;
  if (!last) return aigc::backward(loss, sign / float(micro_batches));
  struct Armed {  // ends the reduction's watch even when backward throws
    GradSync* s;
    ~Armed() { s->end_last_backward(); }
  };
  sync_->begin_last_backward(params);
  Armed armed{sync_};
  aigc::backward(loss, sign / float(micro_batches));
}

bool StepContext::apply(ParamStore& params, Optimizer& optim, double loss, const std::string& model) {
  if (sync_) {
    sync_->finish(params);
    // Every rank must take the same decision below: the loss is the ranks' mean, the norm is of equal gradients.
    sync_->all_reduce(&loss, 1, GradSync::Op::Sum);
    loss /= sync_->world();
  }
  const double norm = clip_grad_norm(params, opt_ ? opt_->grad_clip : 0.0);
  // A model updated several times in one step (a GAN's critic) reports its last update's norm.
  auto same = std::find_if(norms_.begin(), norms_.end(), [&](const auto& e) { return e.first == model; });
  if (same != norms_.end())
    same->second = norm;
  else
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

  GradSync* sync = opt.sync;
  int world = sync ? sync->world() : 1;

  void log(const std::string& s) const {
    if (opt.quiet) return;
    if (world > 1)
      std::fprintf(stderr, "[rank %d] %s\n", sync->rank(), s.c_str());
    else
      std::fprintf(stderr, "%s\n", s.c_str());
  }

  nlohmann::json loop_json() const {
    return {{"steps", opt.steps},
            {"stop_after", opt.stop_after},
            {"max_minutes", opt.max_minutes},
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
            {"ranks", world}};
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
    // The global batch: examples per micro-batch x micro-batches x ranks.
    if (world > 1 || opt.grad_accum > 1) {
      std::snprintf(buf, sizeof buf, " | batch %lld (%lldx%lldx%d)",
                    (long long)(task.batch_size() * opt.grad_accum * world), (long long)task.batch_size(),
                    (long long)opt.grad_accum, world);
      line += buf;
    }
    double eta = elapsed / double(done) * double(last - step);
    if (opt.max_minutes > 0) eta = std::max(0.0, std::min(eta, opt.max_minutes * 60 - elapsed));
    std::snprintf(buf, sizeof buf, " | %.0f %s/s | ETA %s", ups, task.unit() == "tokens" ? "tok" : "img",
                  format_duration(eta).c_str());
    log(line + buf);
  }

  LoopResult run_all() {
    AIGC_CHECK(opt.steps >= 1, "steps must be at least 1");
    AIGC_CHECK(opt.grad_accum >= 1, "grad-accum must be at least 1");
    AIGC_CHECK(opt.log_interval >= 1, "log-interval must be at least 1");
    AIGC_CHECK(opt.max_bad_steps >= 1, "max-bad-steps must be at least 1");
    AIGC_CHECK(opt.max_minutes >= 0, "max-minutes must not be negative");
    int64_t step = task.start_step();
    res.first_step = step;
    res.checkpoint = run.checkpoint();
    const int64_t last = opt.stop_after > 0 ? std::min(opt.stop_after, opt.steps) : opt.steps;
    const nlohmann::json config = {{"loop", loop_json()}, {"family", nlohmann::json::parse(task.config_json())}};
    if (sync) join_ranks(config, step);
    const bool writer = !sync || sync->rank() == 0;
    run.set_writer(writer);
    std::ofstream metrics;
    if (writer) {
      run.create();
      run.trim_metrics(opt.resume ? step : 0);
      metrics.open(run.metrics(), std::ios::app);
      AIGC_CHECK(metrics.good(), "cannot write the metrics log '" + run.metrics() + "'");
      run.write_config(config);
    }
    if (opt.resume) log("resuming at step " + std::to_string(step));

    auto every = [](int64_t s, int64_t n) { return n > 0 && s % n == 0; };
    SigintGuard interrupt;
    const auto t0 = std::chrono::steady_clock::now();
    int bad_in_a_row = 0;
    bool sampled_last = false, saved_last = false;
    // Ctrl-C, or the time limit passed; with ranks, on any of them (so all stop after the same update).
    bool stop = false, time_up = false;
    auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    while (step < last && !stop && !time_up) {
      StepContext ctx;
      ctx.opt_ = &opt;
      ctx.sync_ = sync;
      ctx.step = step;
      ctx.micro_batches = opt.grad_accum;
      ctx.lr = lr_at(opt.lr_schedule, step, opt.lr, opt.lr * opt.min_lr_ratio, opt.warmup, opt.steps);
      StepValues v = task.update(ctx);
      stop = interrupt.requested();
      time_up = opt.max_minutes > 0 && seconds() >= opt.max_minutes * 60;
      if (sync) mean_over_ranks(v, stop, time_up);
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
      const double elapsed = seconds();
      res.units_per_s = elapsed > 0 ? double(done * task.units_per_update() * world) / elapsed : 0;

      nlohmann::json m = {{"step", step}};
      for (const auto& [k, x] : v.items) m[k] = x;
      m["lr"] = ctx.lr;
      const auto& norms = ctx.grad_norms();
      for (const auto& [name, n] : norms) m[name.empty() ? "grad_norm" : "grad_norm_" + name] = n;
      m[task.unit() + "_per_s"] = res.units_per_s;
      m["elapsed_s"] = elapsed;  // since this invocation started
      if (sync) {  // the gradient all-reduce: time on the communication thread, and what backward did not hide
        const GradSync::Times t = sync->take_times();
        m["comm_reduce_s"] = t.reduce_s, m["comm_wait_s"] = t.wait_s;
      }
      res.history.push_back(v);

      if (every(step, opt.log_interval) || step == last || done == 1 || time_up)
        progress(step, last, v, ctx.lr, norms, res.units_per_s, elapsed, done);
      const bool evaluated_last = every(step, opt.eval_interval) || (opt.eval_interval > 0 && step == last);
      if (evaluated_last) {
        res.last_eval = task.evaluate();  // every rank: the same weights, so the same values
        std::string line = "step " + std::to_string(step);
        for (const auto& [k, x] : res.last_eval.items) m[k] = x, line += " | " + fmt_value(k, x);
        log(line);
      }
      if (writer) metrics << m.dump() << "\n", metrics.flush();
      sampled_last = every(step, opt.sample_interval);
      if (sampled_last) log("samples: " + task.sample(run, step));
      saved_last = every(step, opt.ckpt_interval) || evaluated_last;
      if (saved_last) save(step);
    }
    res.interrupted = stop;
    res.steps_done = step;
    if (step > res.first_step || res.interrupted) {
      if (time_up) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%g", opt.max_minutes);
        log("time limit: " + format_duration(seconds()) + " of training reached --max-minutes " + buf + " at step " +
            std::to_string(step));
      }
      if (!saved_last) save(step);
      if (opt.sample_interval > 0 && !sampled_last && step > res.first_step) log("samples: " + task.sample(run, step));
      log(std::string(res.interrupted ? "interrupted: " : "") + "saved '" + run.checkpoint() + "' at step " +
          std::to_string(step) + (step < opt.steps ? "; continue with --resume" : ""));
    }
    return res;
  }

  // Rank 0 writes the checkpoint; every rank then knows where a failure should send the user.
  void save(int64_t step) {
    if (run.writer()) task.save(run, step);
    if (sync)
      sync->set_recovery_note("the last complete checkpoint is '" + run.checkpoint() + "' (step " +
                              std::to_string(step) + "); continue with --resume");
  }

  // Ranks must run the same configuration from the same step (the data order and the updates depend on it),
  // and start from rank 0's weights, as PyTorch DDP does.
  void join_ranks(const nlohmann::json& config, int64_t step) {
    const uint64_t h = std::hash<std::string>{}(config.dump() + "@" + std::to_string(step));
    double lo[2] = {double(h >> 32), double(h & 0xffffffffu)}, hi[2] = {lo[0], lo[1]};
    sync->all_reduce(lo, 2, GradSync::Op::Min);
    sync->all_reduce(hi, 2, GradSync::Op::Max);
    AIGC_CHECK(lo[0] == hi[0] && lo[1] == hi[1],
               "the " + std::to_string(world) +
                   " ranks were not started alike: their options, data or resume step differ (every rank must run "
                   "the same command on the same files)");
    for (ParamStore* p : task.param_stores()) sync->broadcast(p->data(), p->numel());
    sync->set_recovery_note(opt.resume ? "the run resumed from '" + run.checkpoint() + "' (step " +
                                             std::to_string(step) + "); continue with --resume"
                                       : "no checkpoint was written yet");
  }

  // Each rank's values are of its own micro-batches; the update's are their mean. The same message carries
  // whether any rank was interrupted or out of time.
  void mean_over_ranks(StepValues& v, bool& stop, bool& time_up) const {
    std::vector<double> x;
    for (const auto& [k, val] : v.items) x.push_back(val);
    x.push_back(stop ? 1 : 0);
    x.push_back(time_up ? 1 : 0);
    sync->all_reduce(x.data(), int64_t(x.size()), GradSync::Op::Sum);
    for (size_t i = 0; i < v.items.size(); i++) v.items[i].second = x[i] / world;
    stop = x[x.size() - 2] > 0;
    time_up = x.back() > 0;
  }
};

LoopResult run_training(TrainTask& task, const LoopOptions& opt) {
  return LoopRunner{task, opt, RunDir(opt.out_dir), {}}.run_all();
}

}  // namespace aigc
