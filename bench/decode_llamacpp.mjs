// The decoding benchmark's llama.cpp peer: `replora bench --decode` in llama.cpp, through
// node-llama-cpp (pinned in bench/llamacpp/, installed by scripts/setup-llamacpp; its prebuilt
// CPU binary only: nothing is downloaded or built).
//
// usage: node bench/decode_llamacpp.mjs --gguf FILE [--batch 1] [--seq 128] [--new-tokens 32]
//                                       [--steps 3] [--threads 2]
//
// `--batch` prompts of `--seq` token ids uniform in [1000, vocab) (seeded, no padding) are the
// `--batch` sequences of one llama.cpp context, evaluated concurrently: node-llama-cpp queues
// each sequence's tokens and decodes what is queued in one llama_decode batch (all prompts in
// one batch, then, the sequences stepping in lockstep, one token of every sequence per step).
// Greedy (a temperature of 0 is llama.cpp's greedy sampler: argmax, no repetition penalty),
// exactly `--new-tokens` tokens (end-of-generation tokens do not stop it). One warm-up generation of 2
// tokens, then `--steps` timed ones, as replora times its own: time to first token is prompt
// processing + the first token of every sequence; decoding speed counts the tokens after the
// first: batch * (new_tokens - 1) / (total - first). Prints one JSON line with the keys
// replora's writes.
import { createRequire } from "node:module";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "llamacpp", "node_modules");
if (!existsSync(join(modules, "node-llama-cpp")))
  fail(`${modules}/node-llama-cpp is missing: run scripts/setup-llamacpp first`);
const require = createRequire(join(here, "llamacpp", "package.json"));
const { getLlama, LlamaLogLevel } = await import(require.resolve("node-llama-cpp"));
const nodeLlamaCppVersion = JSON.parse(readFileSync(join(modules, "node-llama-cpp", "package.json"), "utf8")).version;

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      gguf: { type: "string" },
      batch: { type: "string", default: "1" },
      seq: { type: "string", default: "128" },
      "new-tokens": { type: "string", default: "32" },
      steps: { type: "string", default: "3" },
      threads: { type: "string", default: "2" },
    },
  }));
} catch (err) {
  fail(`${err.message} (see the header of bench/decode_llamacpp.mjs)`);
}
const count = (name, min) => {
  const v = Number(opts[name]);
  if (!Number.isInteger(v) || v < min) fail(`--${name} must be an integer >= ${min}, not ${opts[name]}`);
  return v;
};
const [batch, seq, newTokens, steps, threads] = [count("batch", 1), count("seq", 1), count("new-tokens", 2), count("steps", 1), count("threads", 1)];
if (!opts.gguf) fail("--gguf FILE is required");
if (!existsSync(opts.gguf)) fail(`${opts.gguf}: no such file (the model directory needs its .gguf file)`);

function fail(message) {
  console.error(`decode_llamacpp: ${message}`);
  process.exit(2);
}

// maxThreads 0: the context's `threads` is then the number of threads used, not a hint.
const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true, maxThreads: 0, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: opts.gguf, gpuLayers: 0 });
const vocab = model.fileInfo.metadata.tokenizer.ggml.tokens.length;
if (seq + newTokens > model.trainContextSize)
  fail(`--seq ${seq} + --new-tokens ${newTokens} exceed the model's ${model.trainContextSize} positions`);
const context = await model.createContext({
  sequences: batch,
  contextSize: seq + newTokens, // per sequence (node-llama-cpp pads the whole context to a multiple of 256)
  batchSize: batch * seq, // the prompts of all sequences in one llama_decode
  threads,
});
const sequences = Array.from({ length: batch }, () => context.getSequence());

// mulberry32: a small seeded generator (not replora's; only the distribution is the same).
let state = 0;
function random() {
  state = (state + 0x6d2b79f5) | 0;
  let t = Math.imul(state ^ (state >>> 15), 1 | state);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const prompts = sequences.map(() => Array.from({ length: seq }, () => 1000 + Math.floor(random() * (vocab - 1000))));

// Greedy continuation of every prompt: [time to first token, total time] in s. The sequences
// step in lockstep: each step asks every sequence's generator for its next token in the same
// tick, so all of them are queued before node-llama-cpp dispatches, and it decodes them in one
// llama_decode (when sequences run free, one of them falls behind by a step and each batch
// holds batch - 1 of them).
async function generate(n) {
  await Promise.all(sequences.map((s) => s.clearHistory()));
  const started = performance.now();
  const generators = sequences.map((s, i) => s.evaluate(prompts[i], { temperature: 0, yieldEogToken: true }));
  let first = 0;
  for (let generated = 1; generated <= n; generated++) {
    await new Promise(setImmediate); // the previous dispatch has finished: the next one takes every sequence
    const next = await Promise.all(generators.map((g) => g.next()));
    if (next.some((r) => r.done)) throw new Error(`a sequence stopped after ${generated - 1} of ${n} tokens`);
    if (generated === 1) first = (performance.now() - started) / 1000;
  }
  const total = (performance.now() - started) / 1000;
  await Promise.all(generators.map((g) => g.return()));
  return [first, total];
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
await generate(2); // warm-up
const ttft = [], decode = [];
for (let round = 1; round <= steps; round++) {
  const [first, total] = await generate(newTokens);
  console.error(`llama.cpp decode round ${round}: first token ${first.toFixed(3)} s, total ${total.toFixed(3)} s`);
  ttft.push(first);
  decode.push((batch * (newTokens - 1)) / (total - first));
}

const vmHwm = readFileSync("/proc/self/status", "utf8").match(/^VmHWM:\s+(\d+) kB/m);
const first = median(ttft);
const release = llama.llamaCppRelease;
console.log(JSON.stringify({
  side: "llama.cpp",
  job: "decode",
  batch,
  prompt_tokens: seq,
  new_tokens: newTokens,
  threads,
  rounds: steps,
  time_to_first_token_s: first,
  prompt_tokens_per_s: (batch * seq) / first,
  decode_tokens_per_s: median(decode),
  peak_rss_bytes: vmHwm ? Number(vmHwm[1]) * 1024 : null,
  model: { name: opts.gguf, layers: model.fileInfo.metadata[model.fileInfo.metadata.general.architecture].block_count, hidden: model.embeddingVectorSize, vocab },
  versions: {
    node: process.versions.node,
    "node-llama-cpp": nodeLlamaCppVersion,
    "llama.cpp": `${release.repo}@${release.release}`,
    build: llama.buildType,
    flash_attention: context.flashAttention,
    system_info: llama.systemInfo,
  },
}));
await llama.dispose();
