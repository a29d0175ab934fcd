// GPT training as a TrainTask: teacher-forced next-token loss over shuffled windows of the corpus, validation on
// the tail of every file, text samples. The loop itself (schedule, clipping, checkpoints, resume) is train_loop.
#include "aigc/trainer.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "aigc/autograd.h"
#include "aigc/checkpoint.h"
#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/generate.h"
#include "aigc/text_data.h"
#include "aigc/tokenizer.h"
#include "aigc/train_loop.h"

namespace fs = std::filesystem;

namespace aigc {

namespace {

class GptTask : public TrainTask {
 public:
  explicit GptTask(const TrainOptions& opt) : opt_(opt) {
    const std::vector<std::string> files = resolve_corpus(opt.data_files);
    std::vector<std::string> texts;  // one per file: each contributes its tail to validation
    std::string text;
    for (const std::string& f : files) text += texts.emplace_back(read_text_corpus({f}));

    // Model + tokenizer: fresh, or restored from the run's checkpoint.
    const std::string ckpt = RunDir(opt.out_dir).checkpoint();
    if (opt.resume) {
      AIGC_CHECK(fs::exists(ckpt), "--resume: no checkpoint at '" + ckpt + "'");
      LoadedModel lm = load_model(ckpt);
      model_ = std::move(lm.model);
      tok_ = std::move(lm.tokenizer);
      AIGC_CHECK(!lm.train_state.empty(), "'" + ckpt + "' holds no training state to resume from");
      state_ = nlohmann::json::parse(lm.train_state);
    } else {
      tok_ = load_tokenizer_spec(opt.tokenizer, text);
      GPTConfig cfg = opt.model;
      cfg.vocab_size = tok_->vocab_size();
      model_ = std::make_unique<GPT>(cfg);
      model_->init_weights(opt.seed);
      state_ = {{"step", 0}, {"data_position", 0}, {"seed", opt.seed}, {"tokens_seen", 0}};
    }
    const GPTConfig& cfg = model_->config();
    B_ = opt.batch_size, T_ = cfg.block_size;

    // Validation is the last val_fraction of every file, so it follows the training mix of the files rather
    // than being whichever file happens to come last.
    std::vector<int32_t> trn;
    for (const std::string& t : texts) {
      std::vector<int> ids = tok_->encode(t);
      auto cut = ids.end() - int64_t(double(ids.size()) * opt.val_fraction);
      trn.insert(trn.end(), ids.begin(), cut);
      val_.insert(val_.end(), cut, ids.end());
    }
    if (int64_t(val_.size()) < T_ + 1) {  // tiny corpora: move enough of the training tail over to fill one window
      int64_t need = std::min<int64_t>(int64_t(trn.size()) / 2, T_ + 1 - int64_t(val_.size()));
      val_.insert(val_.begin(), trn.end() - need, trn.end());
      trn.resize(trn.size() - size_t(need));
    }
    n_train_ = int64_t(trn.size());
    loader_ = std::make_unique<TokenLoader>(std::move(trn), B_, T_, state_["seed"].get<uint64_t>(), opt.rank, opt.world,
                                            opt.grad_accum);
    loader_->set_position(state_["data_position"].get<int64_t>());
    optim_ = std::make_unique<Optimizer>(model_->params(), opt.optim);
    if (opt.resume) load_optimizer_state(ckpt, *model_, *optim_);
    tokens_seen_ = state_["tokens_seen"].get<int64_t>();
    x_ = Tensor::empty({B_, T_}, DType::I32), y_ = Tensor::empty({B_, T_}, DType::I32);
  }

  std::string describe() const {
    const GPTConfig& c = model_->config();
    return "model: " + std::to_string(model_->num_params()) + " parameters (" + std::to_string(c.n_layer) +
           " layers, " + std::to_string(c.n_head) + " heads, " + std::to_string(c.n_embd) + " wide, context " +
           std::to_string(T_) + ", vocab " + std::to_string(c.vocab_size) + ", " + c.norm + "-LN " + c.activation +
           ")\ndata: " + std::to_string(n_train_) + " train / " + std::to_string(val_.size()) + " val tokens (" +
           tok_->kind() + " tokenizer); " + std::to_string(B_) + "x" + std::to_string(T_) + "x" +
           std::to_string(opt_.grad_accum) + " tokens per step" +
           (opt_.world > 1 ? " on each of " + std::to_string(opt_.world) + " ranks" : "");
  }

  int64_t start_step() const override { return state_["step"].get<int64_t>(); }
  std::string unit() const override { return "tokens"; }
  int64_t units_per_update() const override { return B_ * T_ * opt_.grad_accum; }
  int64_t batch_size() const override { return B_; }
  std::vector<ParamStore*> param_stores() override { return {&model_->params()}; }

  StepValues update(StepContext& ctx) override {
    model_->params().zero_grad();
    double loss_sum = 0;
    const bool dropout = model_->config().dropout > 0;
    for (int64_t micro = 0; micro < ctx.micro_batches; micro++) {
      loader_->next(x_, y_);
      // Dropout masks are keyed by the global batch index, so they do not depend on how batches are split.
      Tensor loss = model_->loss(x_, y_, dropout, opt_.seed * 7919 + uint64_t(loader_->last_index()));
      loss_sum += loss.item();
      ctx.backward(loss, model_->params(), micro);
    }
    const double loss = loss_sum / double(ctx.micro_batches);
    ctx.apply(model_->params(), *optim_, loss);
    tokens_seen_ += units_per_update() * (ctx.sync() ? ctx.sync()->world() : 1);
    StepValues v;
    v.add("loss", float(loss));
    return v;
  }

  // Mean loss over the first eval_batches batches of the validation stream (always the same windows).
  StepValues evaluate() override {
    NoGradGuard ng;
    TokenLoader loader(val_, B_, T_, 0);
    const int64_t n = std::min(opt_.eval_batches, std::max<int64_t>(1, loader.num_windows() / B_));
    Tensor x = Tensor::empty({B_, T_}, DType::I32), y = Tensor::empty({B_, T_}, DType::I32);
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
      loader.next(x, y);
      sum += model_->loss(x, y).item();
    }
    StepValues v;
    v.add("val_loss", float(sum / double(n)));
    return v;
  }

  // A continuation of the validation text's first token, the same seed every time.
  std::string sample(const RunDir& run, int64_t step) override {
    GenerateOptions g;
    g.max_tokens = 200;
    g.sampling.temperature = 0.8f;
    g.sampling.seed = opt_.seed + 99;
    const std::string prompt = tok_->decode({val_.front()});
    const std::string path = run.sample(step, "txt"), text = prompt + generate(*model_, *tok_, prompt, g).text + "\n";
    if (run.writer()) write_file_atomic(path, text);
    return path;
  }

  void save(const RunDir& run, int64_t step) override {
    state_["step"] = step;
    state_["data_position"] = loader_->position();
    state_["tokens_seen"] = tokens_seen_;
    save_checkpoint(run.checkpoint(), *model_, *tok_, optim_.get(), state_.dump());
  }

 private:
  const TrainOptions& opt_;
  std::unique_ptr<GPT> model_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<Optimizer> optim_;
  std::unique_ptr<TokenLoader> loader_;
  nlohmann::json state_;
  std::vector<int32_t> val_;
  int64_t B_ = 0, T_ = 0, n_train_ = 0, tokens_seen_ = 0;
  Tensor x_, y_;
};

}  // namespace

LoopOptions TrainOptions::loop() const {
  LoopOptions l;
  l.steps = steps, l.stop_after = stop_after, l.max_minutes = max_minutes, l.grad_accum = grad_accum;
  l.lr = optim.lr, l.lr_schedule = lr_schedule, l.min_lr_ratio = min_lr_ratio, l.warmup = warmup;
  l.grad_clip = grad_clip, l.max_bad_steps = max_bad_steps;
  l.log_interval = log_interval, l.eval_interval = eval_interval, l.ckpt_interval = eval_interval;
  l.sample_interval = sample_interval;
  l.out_dir = out_dir, l.resume = resume, l.quiet = quiet;
  return l;
}

TrainResult train_gpt(const TrainOptions& opt, GradSync* sync) {
  GptTask task(opt);
  if (!opt.quiet) std::fprintf(stderr, "%s\n", task.describe().c_str());
  LoopOptions lo = opt.loop();
  lo.sync = sync;
  LoopResult r = run_training(task, lo);
  TrainResult res;
  res.steps_done = r.steps_done;
  for (const StepValues& v : r.history) res.losses.push_back(float(v.get("loss")));
  if (!r.last_eval.items.empty()) res.last_val_loss = float(r.last_eval.get("val_loss"));
  res.tokens_per_s = r.units_per_s;
  res.checkpoint = r.checkpoint;
  return res;
}

}  // namespace aigc
