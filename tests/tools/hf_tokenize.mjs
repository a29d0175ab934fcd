// Hugging Face's own JavaScript tokenizers (@huggingface/transformers, offline) on a local tokenizer directory: the
// oracle for aigc's tokenizer.json loader (tests/test_hf_tokenizer.cpp). Prints one JSON object:
//   version        the @huggingface/transformers version
//   ids            per text, tokenizer.encode(text, {add_special_tokens: false})
//   ids_special    per text, tokenizer.encode(text) (the post-processor's special tokens added, e.g. BOS)
//   bos_token_id, eos_token_id
//   chats          per chat case, apply_chat_template(messages, {tokenize: false, add_generation_prompt})
//
//   node hf_tokenize.mjs --package DIR --tokenizer TOKENIZER_DIR --cases CASES.json
// CASES.json: a JSON array of texts, or {"texts": [...], "chats": [{"messages": [{"role", "content"}, ...],
// "add_generation_prompt": bool}, ...]}. TOKENIZER_DIR holds tokenizer.json and tokenizer_config.json.
// DIR holds node_modules/@huggingface/transformers (scripts/setup.sh installs it into third_party/hf_tokenizers).
import {readFileSync} from "node:fs";
import {resolve} from "node:path";
import {pathToFileURL} from "node:url";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
for (const k of ["package", "tokenizer", "cases"])
  if (!args[k]) throw new Error(`--${k} is required`);

const pkg = resolve(args.package, "node_modules/@huggingface/transformers");
const {env, AutoTokenizer} = await import(pathToFileURL(`${pkg}/dist/transformers.node.mjs`).href);
env.allowRemoteModels = false;  // a local directory only: nothing is fetched
env.allowLocalModels = true;
env.useFSCache = false;
env.useBrowserCache = false;

// An absolute path is not a hub model id, so it is read as it is (not under env.localModelPath).
const tok = await AutoTokenizer.from_pretrained(resolve(args.tokenizer), {local_files_only: true});
const cases = JSON.parse(readFileSync(args.cases, "utf8"));
const texts = Array.isArray(cases) ? cases : (cases.texts ?? []);
const chats = Array.isArray(cases) ? [] : (cases.chats ?? []);

const out = {
  version: env.version,
  ids: texts.map(t => tok.encode(t, {add_special_tokens: false})),
  ids_special: texts.map(t => tok.encode(t)),
  bos_token_id: tok.bos_token_id ?? null,
  eos_token_id: tok.eos_token_id ?? null,
  chats: chats.map(c => tok.apply_chat_template(c.messages, {tokenize: false,
                                                             add_generation_prompt: !!c.add_generation_prompt})),
};
process.stdout.write(JSON.stringify(out) + "\n");
