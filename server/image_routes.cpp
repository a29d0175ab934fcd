// /v1/images/generations: one image request computes at a time, the others wait their turn (at most --max-queue
// of them); the same --timeout and client-disconnect cancel as text hold while waiting and between denoising steps.
#include <random>

#include "aigc/backend.h"
#include "aigc/error.h"
#include "aigc/image_io.h"
#include "server_impl.h"

namespace aigc::serve {

namespace {

// Thrown from the sampler's step callback to stop a generation nobody will receive.
struct Abandoned {
  bool timed_out;
};

constexpr auto kProbe = std::chrono::milliseconds(250);

}  // namespace

void Server::Impl::generate_images(const std::string& body, httplib::Response& res) {
  InFlight busy(in_flight);
  if (engine->draining()) throw ApiError(503, "the server is shutting down", "", "", "server_error");
  const json b = parse_body(body);
  if (!b.is_object()) throw ApiError(400, "the request body must be a JSON object");
  if (!image)
    throw ApiError(404, "this server has no image model (start it with --image-ckpt)", "model", "model_not_found");
  if (b.contains("model") && !b["model"].is_null() && b["model"] != opt.image_model_name)
    throw ApiError(
        404,
        "the image model " + json_text(b["model"]) + " does not exist; this server has '" + opt.image_model_name + "'",
        "model", "model_not_found");
  std::string prompt;
  if (b.contains("prompt") && !b["prompt"].is_null()) {
    if (!b["prompt"].is_string()) throw ApiError(400, "'prompt' must be a string (a class name)", "prompt");
    prompt = b["prompt"].get<std::string>();
  }
  int32_t cls = -1;
  if (!prompt.empty()) {
    if (image->n_classes == 0) throw ApiError(400, "this image model is unconditional: leave 'prompt' empty", "prompt");
    try {
      cls = class_index(prompt, image->class_names, image->n_classes);
    } catch (const Error&) {
      std::string names;
      for (const std::string& c : image->class_names) names += (names.empty() ? "" : ", ") + c;
      throw ApiError(400,
                     "'prompt' must be one of this model's classes (" + names + ") or a class number from 0 to " +
                         std::to_string(image->n_classes - 1) + "; got " + json_text(prompt),
                     "prompt");
    }
  }
  const json n_field = b.value("n", json(1));
  if (!n_field.is_number_integer() || n_field.get<int64_t>() < 1 || n_field.get<int64_t>() > 64)
    throw ApiError(400, "'n' must be an integer between 1 and 64", "n");
  const int64_t n = n_field.get<int64_t>();
  const std::string want = std::to_string(image->image_size) + "x" + std::to_string(image->image_size);
  if (b.contains("size") && !b["size"].is_null() && b["size"] != want)
    throw ApiError(400, "'size' must be \"" + want + "\" for this model (or left out)", "size");
  if (b.contains("response_format") && !b["response_format"].is_null() && b["response_format"] != "b64_json")
    throw ApiError(400, "'response_format' must be \"b64_json\": this server keeps no files to link to ('url')",
                   "response_format", "unsupported_value");
  uint64_t seed = std::random_device{}();
  if (b.contains("seed") && !b["seed"].is_null()) {
    if (!b["seed"].is_number_integer()) throw ApiError(400, "'seed' must be an integer", "seed");
    seed = b["seed"].get<uint64_t>();
  }
  SamplerOptions so;  // diffusion: DDIM, 50 steps
  if (b.contains("steps") && !b["steps"].is_null()) {
    const int64_t most = image->diffusion_steps() > 0 ? image->diffusion_steps() : 1000;  // T of the schedule
    if (!b["steps"].is_number_integer() || b["steps"].get<int64_t>() < 1 || b["steps"].get<int64_t>() > most)
      throw ApiError(400, "'steps' must be an integer between 1 and " + std::to_string(most) + " for this model",
                     "steps");
    so.steps = b["steps"].get<int64_t>();
  }

  const auto queued = Clock::now(), deadline = queued + std::chrono::milliseconds(int64_t(opt.timeout_s * 1000));
  auto timeout = [&] {
    return ApiError(
        504, "the images did not finish within the server's timeout of " + std::to_string(int(opt.timeout_s)) + " s",
        "", "", "server_error");
  };
  auto gone = [this] {
    image_requests_abandoned++;
    return ApiError(499, "the client closed the connection", "", "client_closed", "client_closed");
  };
  {  // Wait for our turn.
    std::unique_lock<std::mutex> lk(image_mu);
    // Refused now rather than answered 504 later: a full queue, or one whose expected wait (the requests ahead at
    // the mean time a request has taken) would outlast the timeout.
    const double ahead_s = (image_waiting + 1) * image_mean_s;
    if (image_running && (image_waiting >= opt.max_queue || ahead_s > opt.timeout_s)) {
      image_requests_refused++;
      lk.unlock();
      queue_full(res, ahead_s,
                 std::to_string(image_waiting) + " image requests are waiting (--max-queue " +
                     std::to_string(opt.max_queue) + ", about " + std::to_string(int(ahead_s)) + " s of work)");
    }
    image_waiting++;
    while (image_running) {
      image_cv.wait_for(lk, kProbe);
      if (image_running && (Clock::now() > deadline || HttpCore::client_gone())) {
        image_waiting--;
        throw Clock::now() > deadline ? timeout() : gone();
      }
    }
    image_waiting--, image_running = true;
  }
  const double waited = std::chrono::duration<double>(Clock::now() - queued).count();
  for (double w = image_max_wait_s; waited > w && !image_max_wait_s.compare_exchange_weak(w, waited);) {}
  struct Turn {  // gives the turn to the next request however this one ends
    Impl& m;
    ~Turn() {
      std::lock_guard<std::mutex> lk(m.image_mu);
      m.image_running = false;
      m.image_cv.notify_all();
    }
  } turn{*this};

  Tensor images;
  try {
    std::lock_guard<std::mutex> compute(engine->compute_mutex());  // the backend's threads are shared
    set_num_threads(engine->threads());
    auto last_probe = Clock::now();
    ImageModel::Options io{.cls = cls, .sampler = so, .on_step = {}, .interpolate = false};
    io.on_step = [&](int64_t, int64_t, const Tensor&) {
      const auto now = Clock::now();
      if (now > deadline) throw Abandoned{true};
      if (now - last_probe >= kProbe) {
        last_probe = now;
        if (HttpCore::client_gone()) throw Abandoned{false};
      }
    };
    images = image->generate(n, seed, io);
  } catch (const Abandoned& a) {
    throw a.timed_out ? timeout() : gone();
  }
  images_generated += uint64_t(n);
  {
    const double took = std::chrono::duration<double>(Clock::now() - queued).count() - waited;
    std::lock_guard<std::mutex> lk(image_mu);
    image_mean_s = image_mean_s == 0 ? took : 0.8 * image_mean_s + 0.2 * took;  // recent requests weigh more
  }
  json data = json::array();
  for (int64_t i = 0; i < n; i++) data.push_back({{"b64_json", base64(encode_png_grid(images.narrow0(i, 1), 1, 0))}});
  send_json(res, 200, {{"created", unix_now()}, {"data", data}});
}

}  // namespace aigc::serve
