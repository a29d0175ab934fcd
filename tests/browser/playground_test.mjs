// The playground end to end in headless Chromium, driven by Playwright: trains a tiny text model and a tiny
// DCGAN, starts `aigc serve` on a free loopback port, then in the browser types a prompt and watches the text
// stream in (it must arrive in several pieces, and equal the same request made without streaming), chats, draws
// images and the training curves, takes a screenshot, and finally stops the server with SIGTERM (exit code 0).
//
//   node tests/browser/playground_test.mjs AIGC_BINARY SCREENSHOT.png   (also SCREENSHOT_images/_training.png)
// Needs Debian's chromium and the playwright-core npm package (both installed by scripts/setup.sh).
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const [aigc, screenshot] = process.argv.slice(2);
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const pwPath = join(root, "third_party", "playwright-core", "package", "index.mjs");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
function fail(msg) {
  console.error("FAIL: " + msg);
  process.exit(1);
}
if (!aigc || !screenshot) fail("usage: playground_test.mjs AIGC_BINARY SCREENSHOT.png");
if (process.env.AIGC_UPLOT === "missing")
  fail("uPlot was not compiled into the playground (third_party/uplot was missing when cmake ran): run " +
       "scripts/setup.sh, then cmake again");
if (!existsSync(pwPath)) fail(`playwright-core is missing (${pwPath}); run scripts/setup.sh`);
if (!existsSync(chromiumPath)) fail(`Chromium is missing (${chromiumPath}); run scripts/setup.sh`);
const { chromium } = await import(pathToFileURL(pwPath).href);

const tmp = mkdtempSync(join(tmpdir(), "aigc-playground-"));
const runs = join(tmp, "runs");
function run(args) {
  const r = spawnSync(aigc, args, { encoding: "utf8" });
  if (r.status !== 0) fail(`aigc ${args.join(" ")} failed:\n${r.stderr}`);
}
// Wide enough that 200 tokens take a visible fraction of a second: the page must show them arriving.
run(["train", "--preset", "tiny", "--n-layer", "4", "--n-embd", "256", "--block-size", "256", "--steps", "20",
     "--eval-interval", "10", "--log-interval", "2", "--out", join(runs, "text")]);
run(["train", "--model", "dcgan", "--conditional", "--steps", "4", "--out", join(runs, "gan")]);

const server = spawn(aigc, ["serve", "--ckpt", join(runs, "text", "ckpt.safetensors"), "--image-ckpt",
                            join(runs, "gan", "ckpt.safetensors"), "--port", "0", "--runs", runs, "--quiet"]);
let log = "";
const port = await new Promise((resolve) => {
  server.stderr.on("data", (d) => {
    log += d;
    const m = log.match(/http:\/\/127\.0\.0\.1:(\d+)\//);
    if (m) resolve(Number(m[1]));
  });
  server.on("exit", () => fail("the server exited early:\n" + log));
});
const base = `http://127.0.0.1:${port}`;

let browser;
try {
  browser = await chromium.launch({ executablePath: chromiumPath, args: ["--no-sandbox", "--disable-gpu"] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(base + "/");
  await page.waitForFunction(() => document.getElementById("model-name").textContent.length > 0);

  // Completion: note the moments the output grows while the request runs (a callback batches the changes made
  // in one task, so distinct moments mean the text arrived over time, not at once). A renderer starved of CPU (a
  // loaded machine) can still paint a stream in one go, so up to three tries: one streamed run is proof enough.
  await page.fill("#prompt", "The cat ");
  await page.fill("#max_tokens", "200");
  await page.fill("#temperature", "0");
  let growths = 0, tries = 0;
  while (growths < 3 && tries < 3) {
    tries++;
    await page.evaluate(() => {
      document.getElementById("completion-output").textContent = "";
      window.__moments = new Set();
      new MutationObserver(() => window.__moments.add(Math.round(performance.now())))
        .observe(document.getElementById("completion-output"), { childList: true, characterData: true, subtree: true });
    });
    await page.click("#generate");
    await page.waitForFunction(() => document.getElementById("completion-output").textContent.length > 0);
    await page.waitForFunction(() => !document.getElementById("generate").disabled, null, { timeout: 60000 });
    growths = await page.evaluate(() => window.__moments.size);
  }
  if (growths < 3) fail(`the text appeared at ${growths} moment(s) in each of ${tries} tries, not streamed`);
  const shown = await page.textContent("#completion-output");
  const res = await fetch(base + "/v1/completions", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: "The cat ", max_tokens: 200, temperature: 0, top_k: 40, top_p: 0.95, min_p: 0.05,
                           repeat_penalty: 1, presence_penalty: 0, frequency_penalty: 0 }),
  });
  const whole = (await res.json()).choices[0].text;
  if (shown !== whole) fail(`the page shows ${JSON.stringify(shown)}, the API answers ${JSON.stringify(whole)}`);
  console.log(`completion appeared at ${growths} moments (try ${tries}): ${JSON.stringify(shown.slice(0, 60))}...`);
  await page.screenshot({ path: screenshot });

  // Chat.
  await page.click("nav button[data-tab=chat]");
  await page.fill("#chat-input", "Hello there");
  await page.click("#chat-send");
  await page.waitForFunction(() => document.querySelectorAll("#chat-log .msg").length === 2 &&
                                   document.querySelectorAll("#chat-log .msg")[1].textContent.length > 11);

  // Images: 16 PNGs of one class.
  await page.click("nav button[data-tab=images]");
  await page.selectOption("#image-class", "sneaker");
  await page.click("#image-generate");
  await page.waitForFunction(() => document.querySelectorAll("#image-grid img").length === 16);
  const decoded = await page.evaluate(() => [...document.querySelectorAll("#image-grid img")]
                                              .every((i) => i.complete && i.naturalWidth === 28));
  if (!decoded) fail("the generated images did not decode as 28x28 PNGs");
  await page.screenshot({ path: screenshot.replace(/\.png$/, "_images.png") });

  // Training curves of both runs' metrics.
  await page.click("nav button[data-tab=training]");
  await page.waitForFunction(() => document.querySelectorAll("#charts .chart canvas").length >= 2);
  await page.screenshot({ path: screenshot.replace(/\.png$/, "_training.png") });
  if (errors.length) fail("JavaScript errors on the page: " + errors.join("; "));
  console.log("chat, images and training charts: ok; screenshot " + screenshot);
} finally {
  if (browser) await browser.close();
  server.removeAllListeners("exit");
  const code = await new Promise((resolve) => {
    server.on("exit", (c) => resolve(c));
    server.kill("SIGTERM");
  });
  rmSync(tmp, { recursive: true, force: true });
  if (code !== 0) fail(`the server exited with ${code} after SIGTERM`);
}
console.log("PASS");
