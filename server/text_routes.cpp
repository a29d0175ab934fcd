// /v1/completions and /v1/chat/completions: one engine job per (prompt, choice), answered whole or as
// Server-Sent Events.
#include <deque>
#include <optional>

#include "server_impl.h"

namespace aigc::serve {

namespace {

// What the engine sends back to one request's HTTP thread: text pieces per choice, then each choice's end.
struct Exchange {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<int, std::string>> pieces;  // (choice, text)
  std::deque<std::pair<int, JobResult>> ends;      // (choice, result)
  std::vector<std::shared_ptr<TextJob>> jobs;
  void cancel() {
    for (auto& j : jobs) j->cancelled = true;
  }
};

// How often a waiting request checks that its client is still there.
constexpr auto kProbe = std::chrono::milliseconds(250);

void stream(Server::Impl& m, httplib::Response& res, std::shared_ptr<Exchange> ex, const TextRequest& r,
            const std::string& id, int64_t created);

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
      job->prompt = prompt, job->opt = r.gen, job->deadline = deadline;
      job->opt.sampling.seed += uint64_t(k);
      std::weak_ptr<Exchange> w = ex;
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
  if (r.stream) return stream(*this, res, ex, r, id, created);

  // Not streamed: wait for every choice (the engine ends each job by its deadline at the latest); a client that
  // hangs up meanwhile has its jobs cancelled.
  std::vector<Choice> choices(ex->jobs.size());
  int completion_tokens = 0;
  std::unique_lock<std::mutex> lk(ex->mu);
  size_t ended = 0;
  std::optional<ApiError> failure;
  auto last_probe = Clock::now();
  while (ended < ex->jobs.size()) {
    ex->cv.wait_for(lk, kProbe, [&] { return !ex->pieces.empty() || !ex->ends.empty(); });
    if (Clock::now() - last_probe >= kProbe) {
      last_probe = Clock::now();
      if (HttpCore::client_gone()) ex->cancel();
    }
    for (auto& [i, t] : ex->pieces) choices[size_t(i)].text += t;
    ex->pieces.clear();
    for (auto& [i, jr] : ex->ends) {
      ended++;
      completion_tokens += jr.n_generated;
      choices[size_t(i)].finish_reason = openai_finish_reason(jr.finish_reason);
      if (auto f = failure_of(jr)) failure = f;
    }
    ex->ends.clear();
  }
  if (failure) throw *failure;
  send_json(res, 200, completion_answer(r, id, created, opt.model_name, choices, prompt_tokens, completion_tokens));
}

namespace {

// Server-Sent Events: one `data: {chunk}` per piece of text as it comes, each choice's end, then `data: [DONE]`.
void stream(Server::Impl& m, httplib::Response& res, std::shared_ptr<Exchange> ex, const TextRequest& r,
            const std::string& id, int64_t created) {
  res.set_header("Cache-Control", "no-cache");
  m.in_flight++;  // until the releaser: the stream outlives the handler
  auto ended = std::make_shared<size_t>(0);
  auto started = std::make_shared<bool>(false);
  const std::string model = m.opt.model_name;
  res.set_chunked_content_provider(
      "text/event-stream",
      [&m, ex, r, id, created, ended, started, model](size_t, httplib::DataSink& sink) {
        auto send = [&](const json& j) {
          const std::string s = "data: " + json_text(j) + "\n\n";
          return sink.write(s.data(), s.size());
        };
        if (!*started) {
          *started = true;
          if (r.chat)
            for (int i = 0; i < int(ex->jobs.size()); i++)
              if (!send(completion_chunk(r, id, created, model, i, "", "", true))) return false;
        }
        std::deque<std::pair<int, std::string>> pieces;
        std::deque<std::pair<int, JobResult>> ends;
        {
          std::unique_lock<std::mutex> lk(ex->mu);
          // Wake at least every 250 ms to probe the client with an SSE comment: a client that went away while
          // its request waits is noticed and its job cancelled.
          if (!ex->cv.wait_for(lk, kProbe, [&] { return !ex->pieces.empty() || !ex->ends.empty(); })) {
            lk.unlock();
            return sink.write(":\n\n", 3);  // false -> the releaser cancels the jobs
          }
          pieces.swap(ex->pieces), ends.swap(ex->ends);
        }
        for (auto& [i, t] : pieces)
          if (!send(completion_chunk(r, id, created, model, i, t, ""))) return false;
        for (auto& [i, jr] : ends) {
          (*ended)++;
          if (auto f = m.failure_of(jr)) {
            if (!send(error_body(*f))) return false;
          } else if (!send(completion_chunk(r, id, created, model, i, "", openai_finish_reason(jr.finish_reason)))) {
            return false;
          }
        }
        if (*ended == ex->jobs.size()) {
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
