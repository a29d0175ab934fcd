// /v1/completions and /v1/chat/completions: one engine job per (prompt, choice), answered whole or as
// Server-Sent Events.
#include <deque>
#include <map>
#include <optional>

#include "server_impl.h"

namespace aigc::serve {

namespace {

// What the engine sends back to one request's HTTP thread: text pieces per choice, then each choice's end.
struct Exchange {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<int, std::string>> pieces;   // (choice, text)
  std::deque<std::pair<int, TokenLogprob>> tokens;  // (choice, a token's log-probability), when asked for
  std::deque<std::pair<int, JobResult>> ends;       // (choice, result)
  std::vector<std::shared_ptr<TextJob>> jobs;
  void cancel() {
    for (auto& j : jobs) j->cancelled = true;
  }
};

// How often a waiting request checks that its client is still there.
constexpr auto kProbe = std::chrono::milliseconds(250);

void stream(Server::Impl& m, httplib::Response& res, std::shared_ptr<Exchange> ex, const TextRequest& r,
            const std::string& id, int64_t created, int prompt_tokens, std::vector<size_t> offsets);

}  // namespace

// A job that ended without its text (timed out, failed, cancelled) as the error the client gets.
std::optional<ApiError> Server::Impl::failure_of(const JobResult& jr) const {
  auto err = [](int status, const std::string& msg) { return ApiError(status, msg, "", "", error_type_for(status)); };
  if (jr.finish_reason == "timeout")
    return err(504,
               "generation did not finish within the server's timeout of " + std::to_string(int(opt.timeout_s)) + " s");
  if (jr.finish_reason == "error") return err(500, "generation failed: " + jr.error);
  if (jr.finish_reason == "cancelled") return err(503, "the request was cancelled (server shutting down)");
  return std::nullopt;
}

void Server::Impl::complete(const std::string& body, httplib::Response& res, bool chat) {
  InFlight busy(in_flight);
  if (engine->draining()) throw ApiError(503, "the server is shutting down", "", "", "server_error");
  const TextRequest r = parse_text_request(parse_body(body), chat, *text.tokenizer, limits);
  auto ex = std::make_shared<Exchange>();
  const auto deadline = Clock::now() + std::chrono::milliseconds(int64_t(opt.timeout_s * 1000));
  int prompt_tokens = 0;
  for (const auto& prompt : r.prompts) {
    prompt_tokens += int(prompt.size());
    for (int k = 0; k < r.n; k++) {
      auto job = std::make_shared<TextJob>();
      const int index = int(ex->jobs.size());
      job->prompt = prompt, job->opt = r.gen, job->deadline = deadline, job->top_logprobs = r.logprobs;
      job->json_schema = r.json_schema;
      job->opt.sampling.seed += uint64_t(k);
      std::weak_ptr<Exchange> w = ex;
      job->on_token = [w, index](const TokenLogprob& lp) {
        if (auto e = w.lock()) {
          std::lock_guard<std::mutex> lk(e->mu);
          e->tokens.emplace_back(index, lp);
        }
      };
      job->on_text = [w, index](const std::string& t) {
        if (auto e = w.lock()) {
          std::lock_guard<std::mutex> lk(e->mu);
          e->pieces.emplace_back(index, t);
          e->cv.notify_all();
        }
      };
      job->on_done = [w, index](const JobResult& jr) {
        if (auto e = w.lock()) {
          std::lock_guard<std::mutex> lk(e->mu);
          e->ends.emplace_back(index, jr);
          e->cv.notify_all();
        }
      };
      ex->jobs.push_back(job);
    }
  }
  switch (engine->submit(ex->jobs, size_t(opt.max_queue))) {
    case Submit::Accepted:
      break;
    case Submit::Draining:
      throw ApiError(503, "the server is shutting down", "", "", "server_error");
    case Submit::QueueFull: {
      // A guess at when a slot frees: the queue ahead, shared by the slots, at the mean time a job has taken.
      const EngineStats s = engine->stats();
      const double per_job = s.jobs_done ? s.job_seconds / double(s.jobs_done) : 1.0;
      queue_full(res, per_job * double(s.queued) / double(std::max(1, s.slots_total)),
                 std::to_string(s.queued) + " generations are waiting for a slot (--max-queue " +
                     std::to_string(opt.max_queue) + ")");
    }
  }
  const std::string id = random_id(chat ? "chatcmpl-" : "cmpl-");
  const int64_t created = unix_now();
  // Completions' text_offset counts from the start of the prompt, as OpenAI's does.
  std::vector<size_t> offsets;
  for (const auto& prompt : r.prompts)
    for (int k = 0; k < r.n; k++) offsets.push_back(r.logprobs >= 0 ? text.tokenizer->decode(prompt).size() : 0);
  if (r.stream) return stream(*this, res, ex, r, id, created, prompt_tokens, offsets);

  // Not streamed: wait for every choice (the engine ends each job by its deadline at the latest); a client that
  // hangs up meanwhile has its jobs cancelled.
  std::vector<Choice> choices(ex->jobs.size());
  for (size_t i = 0; i < choices.size(); i++) choices[i].text_offset = offsets[i];
  int completion_tokens = 0;
  std::unique_lock<std::mutex> lk(ex->mu);
  size_t ended = 0;
  std::optional<ApiError> failure;
  auto last_probe = Clock::now();
  bool client_left = false;
  while (ended < ex->jobs.size()) {
    ex->cv.wait_for(lk, kProbe, [&] { return !ex->pieces.empty() || !ex->ends.empty(); });
    if (Clock::now() - last_probe >= kProbe) {
      last_probe = Clock::now();
      if (!client_left && HttpCore::client_gone()) client_left = true, ex->cancel();
    }
    for (auto& [i, t] : ex->pieces) choices[size_t(i)].text += t;
    ex->pieces.clear();
    for (auto& [i, lp] : ex->tokens) choices[size_t(i)].logprobs.push_back(std::move(lp));
    ex->tokens.clear();
    for (auto& [i, jr] : ex->ends) {
      ended++;
      completion_tokens += jr.n_generated;
      choices[size_t(i)].finish_reason = openai_finish_reason(jr.finish_reason);
      if (auto f = failure_of(jr)) failure = f;
    }
    ex->ends.clear();
  }
  if (client_left) throw ApiError(499, "the client closed the connection", "", "client_closed", "client_closed");
  if (failure) throw *failure;
  send_json(res, 200,
            completion_answer(r, *text.tokenizer, id, created, opt.model_name, std::move(choices), prompt_tokens,
                              completion_tokens));
}

namespace {

// Server-Sent Events: one `data: {chunk}` per piece of text as it comes, each choice's end, then `data: [DONE]`.
void stream(Server::Impl& m, httplib::Response& res, std::shared_ptr<Exchange> ex, const TextRequest& r,
            const std::string& id, int64_t created, int prompt_tokens, std::vector<size_t> offsets) {
  res.set_header("Cache-Control", "no-cache");
  m.in_flight++;  // until the releaser: the stream outlives the handler
  struct State {
    size_t ended = 0;
    bool started = false;
    int completion_tokens = 0;
    std::vector<size_t> offsets;  // completions' text_offset, per choice
  };
  auto st = std::make_shared<State>();
  st->offsets = std::move(offsets);
  const std::string model = m.opt.model_name;
  const Tokenizer& tok = *m.text.tokenizer;
  res.set_chunked_content_provider(
      "text/event-stream",
      [&m, &tok, ex, r, id, created, st, model, prompt_tokens](size_t, httplib::DataSink& sink) {
        auto send = [&](const json& j) {
          const std::string s = "data: " + json_text(j) + "\n\n";
          return sink.write(s.data(), s.size());
        };
        if (!st->started) {
          st->started = true;
          if (r.chat)
            for (int i = 0; i < int(ex->jobs.size()); i++)
              if (!send(completion_chunk(r, id, created, model, i, "", "", true))) return false;
        }
        std::deque<std::pair<int, std::string>> pieces;
        std::deque<std::pair<int, TokenLogprob>> tokens;
        std::deque<std::pair<int, JobResult>> ends;
        {
          std::unique_lock<std::mutex> lk(ex->mu);
          // Wake at least every 250 ms to probe the client with an SSE comment: a client that went away while
          // its request waits is noticed and its job cancelled.
          if (!ex->cv.wait_for(lk, kProbe, [&] { return !ex->pieces.empty() || !ex->ends.empty(); })) {
            lk.unlock();
            return sink.write(":\n\n", 3);  // false -> the releaser cancels the jobs
          }
          pieces.swap(ex->pieces), tokens.swap(ex->tokens), ends.swap(ex->ends);
        }
        // One chunk per choice with news: its text so far and its tokens' log-probabilities.
        std::vector<int> order;
        std::map<int, std::pair<std::string, std::vector<TokenLogprob>>> news;
        for (auto& [i, lp] : tokens) {
          if (!news.count(i)) order.push_back(i);
          news[i].second.push_back(std::move(lp));
        }
        for (auto& [i, t] : pieces) {
          if (!news.count(i)) order.push_back(i);
          news[i].first += t;
        }
        for (int i : order) {
          auto& [t, lps] = news[i];
          const json lj = logprobs_json(r, tok, lps, st->offsets[size_t(i)]);
          if (!send(completion_chunk(r, id, created, model, i, t, "", false, lj))) return false;
        }
        for (auto& [i, jr] : ends) {
          st->ended++;
          st->completion_tokens += jr.n_generated;
          if (auto f = m.failure_of(jr)) {
            if (!send(error_body(*f))) return false;
          } else if (!send(completion_chunk(r, id, created, model, i, "", openai_finish_reason(jr.finish_reason)))) {
            return false;
          }
        }
        if (st->ended == ex->jobs.size()) {
          if (r.include_usage && !send(usage_chunk(r, id, created, model, prompt_tokens, st->completion_tokens)))
            return false;
          const std::string done = "data: [DONE]\n\n";
          if (!sink.write(done.data(), done.size())) return false;
          sink.done();
        }
        return true;
      },
      [&m, ex](bool success) {
        if (!success) ex->cancel();  // the client went away: free its slots at the next step
        m.in_flight--;
      });
}

}  // namespace

}  // namespace aigc::serve
