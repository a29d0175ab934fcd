// llama.cpp on a GGUF file, through node-llama-cpp's prebuilt CPU binary: the oracle for aigc's GGUF writer,
// tokenizer and forward pass. Prints one JSON object:
//   tokens      llama.cpp's tokenization of the prompt (no BOS added)
//   positions   per prompt position, the next-token log-probabilities of the `top` most likely tokens
//               (temperature 0 leaves the logits untouched: these are log_softmax of the raw logits)
//   greedy      `n` tokens of greedy continuation
//   prompt_tok_s, decode_tok_s   llama.cpp's speed on this machine for the prompt (with the probabilities of every
//                                position) and the continuation
//   prefill_tok_s                the prompt alone, no probabilities read (best of 3): llama.cpp's prefill speed
//
//   node llama_cpp_check.mjs --package DIR --model M.gguf --prompt-file P.txt [--n 16] [--top 20] [--threads 1]
//                            [--kv f32|f16] [--ctx 256]
//   node llama_cpp_check.mjs --package DIR --model M.gguf --tokenize-file CASES.json
//                            (only tokenization: {"tokenized": [ids of each string in the JSON array]})
//   node llama_cpp_check.mjs --package DIR --model M.gguf --perplexity-file TEXT [--ctx 256] [--threads 1]
//                            (perplexity as `aigc eval` computes it: the text's tokens in non-overlapping input
//                            windows of ctx, each position predicting the token after it, every token but the first:
//                            {"tokens": n predicted, "nll": mean -log p, "perplexity": exp(nll)})
// DIR holds node_modules/node-llama-cpp (scripts/setup.sh installs it into third_party/llama_cpp).
import {readFileSync} from "node:fs";
import {pathToFileURL} from "node:url";

const args = {n: "16", top: "20", threads: "1", kv: "f16", ctx: "256"};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const only = args["tokenize-file"] || args["perplexity-file"];
for (const k of ["package", "model", ...(only ? [] : ["prompt-file"])])
  if (!args[k]) throw new Error(`--${k} is required`);
const {getLlama, LlamaLogLevel} =
    await import(pathToFileURL(`${args.package}/node_modules/node-llama-cpp/dist/index.js`).href);

const threads = Number(args.threads), n = Number(args.n), top = Number(args.top);
const llama = await getLlama({gpu: false, build: "never", skipDownload: true, maxThreads: threads,
                              logLevel: LlamaLogLevel.error});
const rssBeforeModel = process.memoryUsage().rss;  // node and the library alone
const model = await llama.loadModel({modelPath: args.model, gpuLayers: 0});
if (args["tokenize-file"]) {
  const cases = JSON.parse(readFileSync(args["tokenize-file"], "utf8"));
  console.log(JSON.stringify({tokenized: cases.map(s => [...model.tokenize(s)])}));
  await model.dispose();
  await llama.dispose();
  process.exit(0);
}
if (args["perplexity-file"]) {
  const ids = [...model.tokenize(readFileSync(args["perplexity-file"], "utf8"))], ctx = Number(args.ctx);
  const context = await model.createContext({contextSize: ctx, batchSize: ctx, threads, sequences: 1,
                                             flashAttention: false});
  const seq = context.getSequence();
  let nll = 0, count = 0;
  for (let s = 0; s + 1 < ids.length; s += ctx) {
    const win = ids.slice(s, Math.min(s + ctx, ids.length - 1));  // inputs; targets are one further
    await seq.clearHistory();
    const res = await seq.controlledEvaluate(win.map(t => [t, {generateNext: {probabilities: true}}]));
    for (let i = 0; i < win.length; i++) nll -= Math.log(res[i].next.probabilities.get(ids[s + i + 1]));
    count += win.length;
  }
  console.log(JSON.stringify({tokens: count, nll: nll / count, perplexity: Math.exp(nll / count)}));
  await context.dispose();
  await model.dispose();
  await llama.dispose();
  process.exit(0);
}
const prompt = readFileSync(args["prompt-file"], "utf8");
const tokens = [...model.tokenize(prompt)];
const kvType = args.kv.toUpperCase();
const context = await model.createContext({contextSize: Number(args.ctx), batchSize: Number(args.ctx), threads,
                                           sequences: 1, flashAttention: false,
                                           experimentalKvCacheKeyType: kvType, experimentalKvCacheValueType: kvType});
const seq = context.getSequence();

let t0 = performance.now();
const res = await seq.controlledEvaluate(tokens.map(t => [t, {generateNext: {probabilities: true}}]));
const promptMs = performance.now() - t0;
const positions = res.map(r => [...r.next.probabilities.entries()].slice(0, top).map(([t, p]) => [t, Math.log(p)]));

await seq.clearHistory();
const greedy = [];
let tFirst = 0;
t0 = performance.now();
for await (const t of seq.evaluate(tokens, {temperature: 0, yieldEogToken: true})) {
  if (greedy.length === 0) tFirst = performance.now();
  greedy.push(t);
  if (greedy.length >= n) break;
}
const tEnd = performance.now();
let prefillMs = Infinity;
for (let r = 0; r < 3; r++) {
  await seq.clearHistory();
  t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(tokens);
  prefillMs = Math.min(prefillMs, performance.now() - t0);
}
console.log(JSON.stringify({
  n_vocab: model.fileInsights?.vocabularySize ?? null,
  tokens, positions, greedy,
  prompt_tok_s: tokens.length / promptMs * 1000,
  decode_tok_s: greedy.length > 1 ? (greedy.length - 1) / (tEnd - tFirst) * 1000 : null,
  prefill_tok_s: tokens.length / prefillMs * 1000,
  rss_before_model_mb: rssBeforeModel / 2 ** 20,
  peak_rss_mb: process.resourceUsage().maxRSS / 1024,  // kilobytes
}));
await context.dispose();
await model.dispose();
await llama.dispose();
