#!/usr/bin/env node
// Runs GPT-2's reference BPE encoder (the npm package gpt-3-encoder) on text cases, for the tokenizer parity test.
//
//   node tests/tools/gpt2_encode.js [--package DIR] [CASES.json]
//
// CASES.json (or stdin): a JSON array of strings. Prints {"ids": [[...], ...], "chunks": [[...], ...]}: the
// reference's token ids for each case, and its pre-tokenization (the package's own regex, read from its source).
// An id the reference cannot map comes out as null, which never equals a real id.
'use strict';
const fs = require('fs');
const path = require('path');

let pkg = path.join(__dirname, '..', '..', 'third_party', 'gpt-3-encoder', 'package');
let input = null;
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--package') pkg = args[++i];
  else input = args[i];
}

// The package's main file is Encoder.js (capital E); require the directory so its index.js picks it.
const encoder = require(path.resolve(pkg));
const source = fs.readFileSync(path.join(pkg, fs.existsSync(path.join(pkg, 'Encoder.js')) ? 'Encoder.js' : 'encoder.js'),
                               'utf-8');
const m = source.match(/const pat = \/(.*)\/(\w*)\s*\n/);
if (!m) {
  process.stderr.write('gpt2_encode.js: cannot find the pre-tokenizer pattern in the package source\n');
  process.exit(2);
}
const pat = new RegExp(m[1], m[2]);

const cases = JSON.parse(fs.readFileSync(input === null ? 0 : input, 'utf-8'));
if (!Array.isArray(cases) || !cases.every(s => typeof s === 'string')) {
  process.stderr.write('gpt2_encode.js: input must be a JSON array of strings\n');
  process.exit(2);
}
const out = {ids: [], chunks: [], unicode: process.versions.unicode || ''};
for (const text of cases) {
  out.ids.push(encoder.encode(text));
  out.chunks.push(Array.from(text.matchAll(pat), x => x[0]));
}
process.stdout.write(JSON.stringify(out) + '\n');
