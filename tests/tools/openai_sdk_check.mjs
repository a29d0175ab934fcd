// `aigc serve` as a user of OpenAI's official Node SDK sees it, strictly: models.retrieve, logprobs (completions
// and chat), usage in a stream, structured output with a JSON schema, unsupported tools refused, and raw bytes
// that are not HTTP or not UTF-8 answered with a 4xx while the server stays up. Trains a tiny model first.
//
//   node tests/tools/openai_sdk_check.mjs AIGC_BINARY
// Needs the `openai` npm package in third_party/openai/package (installed by scripts/setup.sh).
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const [aigc] = process.argv.slice(2);
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const sdkPath = join(root, "third_party", "openai", "package", "index.mjs");
const failures = [];
const check = (cond, what) => {
  console.log(`${cond ? "ok  " : "FAIL"} ${what}`);
  if (!cond) failures.push(what);
};
if (!aigc) throw new Error("usage: openai_sdk_check.mjs AIGC_BINARY");
if (!existsSync(sdkPath)) throw new Error(`the openai package is missing (${sdkPath}); run scripts/setup.sh`);
const { default: OpenAI } = await import(pathToFileURL(sdkPath).href);

const tmp = mkdtempSync(join(tmpdir(), "aigc-sdk-"));
const t = spawnSync(aigc, ["train", "--preset", "tiny", "--steps", "10", "--out", join(tmp, "tiny")], { encoding: "utf8" });
if (t.status !== 0) throw new Error(`training failed:\n${t.stderr}`);
const server = spawn(aigc, ["serve", "--ckpt", join(tmp, "tiny", "ckpt.safetensors"), "--port", "0", "--quiet",
                            "--api-key", "sk-local"]);
const port = await new Promise((resolve, reject) => {
  let log = "";
  server.stderr.on("data", (d) => {
    log += d;
    const m = log.match(/http:\/\/127\.0\.0\.1:(\d+)\//);
    if (m) resolve(Number(m[1]));
  });
  server.on("exit", (code) => reject(new Error(`the server exited (${code}):\n${log}`)));
});

try {
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "sk-local", maxRetries: 0 });
  const id = (await client.models.list()).data[0].id;
  const m = await client.models.retrieve(id);
  check(m.id === id && m.object === "model", `models.retrieve("${id}")`);
  try {
    await client.models.retrieve("no-such-model");
    check(false, "models.retrieve of an unknown id throws");
  } catch (e) {
    check(e.status === 404, `models.retrieve of an unknown id: ${e.status}`);
  }

  const c = await client.completions.create({ model: id, prompt: "The", max_tokens: 8, logprobs: 3, seed: 1 });
  const lp = c.choices[0].logprobs;
  check(lp && lp.tokens.length === c.usage.completion_tokens && lp.token_logprobs.every((x) => x <= 0) &&
          lp.top_logprobs.every((d) => Object.keys(d).length >= 1 && Object.keys(d).length <= 3),
        `completions.create logprobs: ${lp && lp.tokens.length} tokens`);

  const chat = await client.chat.completions.create({
    model: id, messages: [{ role: "user", content: "Hi" }], max_tokens: 6, logprobs: true, top_logprobs: 2, seed: 2 });
  const cl = chat.choices[0].logprobs?.content ?? [];
  check(cl.length === chat.usage.completion_tokens && cl.every((x) => x.top_logprobs.length === 2 && Array.isArray(x.bytes)),
        `chat.completions.create logprobs: ${cl.length} tokens`);

  const stream = await client.chat.completions.create({
    model: id, messages: [{ role: "user", content: "Hi" }], max_tokens: 6, stream: true,
    stream_options: { include_usage: true } });
  let usage = null;
  for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
  check(usage && usage.completion_tokens > 0 && usage.total_tokens === usage.prompt_tokens + usage.completion_tokens,
        `stream with include_usage: ${JSON.stringify(usage)}`);

  const schema = { type: "object", properties: { answer: { enum: ["yes", "no"] } }, required: ["answer"] };
  for (const seed of [1, 2, 3, 4]) {
    const j = await client.chat.completions.create({
      model: id, messages: [{ role: "user", content: "yes or no?" }], max_tokens: 48, seed,
      response_format: { type: "json_schema", json_schema: { name: "answer", schema } } });
    const ch = j.choices[0];
    let v = null;
    try {
      v = JSON.parse(ch.message.content);
    } catch {}
    check(ch.finish_reason === "length" || (v && ["yes", "no"].includes(v.answer) && Object.keys(v).length === 1),
          `json_schema, seed ${seed}: ${ch.finish_reason} ${JSON.stringify(ch.message.content)}`);
  }

  try {
    await client.chat.completions.create({ model: id, messages: [{ role: "user", content: "x" }],
      tools: [{ type: "function", function: { name: "f", parameters: {} } }] });
    check(false, "tools are refused");
  } catch (e) {
    check(e.status === 400 && e.param === "tools", `tools: ${e.status} (param ${e.param})`);
  }

  // Raw bytes over a socket that ends its side after sending (no key: the gate answers before auth matters).
  const raw = (bytes) => new Promise((resolve) => {
    let answer = "";
    const s = net.connect(port, "127.0.0.1", () => s.end(Buffer.from(bytes)));
    s.on("data", (d) => (answer += d.toString("latin1")));
    s.on("close", () => resolve(answer));
    s.on("error", () => resolve(answer));
  });
  const key = "Authorization: Bearer sk-local\r\n";
  const post = (body) =>
    Buffer.concat([Buffer.from(`POST /v1/completions HTTP/1.1\r\n${key}Content-Length: ${body.length}\r\n\r\n`), body]);
  for (const [what, bytes] of [
    ["two bytes that are not HTTP", Buffer.from([0xff, 0xfe, 0x0d, 0x0a, 0x0d, 0x0a])],
    ["a path of invalid UTF-8", Buffer.from(`GET /%ff HTTP/1.1\r\n${key}\r\n`)],
    ["a prompt of invalid UTF-8", post(Buffer.concat([Buffer.from('{"prompt":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]))],
  ]) {
    const answer = await raw(bytes);
    check(/^HTTP\/1\.1 4\d\d /.test(answer), `${what}: ${answer.split("\r\n")[0]}`);
  }
  const h = await fetch(`http://127.0.0.1:${port}/health`);
  check(h.status === 200, "the server is still up");
} finally {
  server.kill("SIGTERM");
  await new Promise((resolve) => server.on("exit", resolve));
  rmSync(tmp, { recursive: true, force: true });
}
if (failures.length) {
  console.error(`FAIL: ${failures.length} check(s) failed`);
  process.exit(1);
}
console.log("openai_sdk_check: all checks passed");
