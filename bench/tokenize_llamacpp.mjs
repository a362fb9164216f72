// llama.cpp's tokenization of a fixed list of strings, the reference replora's GGUF tokenizers
// are checked against (tests/gemma3.rs reads what this writes). Through node-llama-cpp
// (pinned in bench/llamacpp/, installed by scripts/setup-llamacpp; its prebuilt CPU binary, the
// vocabulary alone loaded).
//
// usage: node bench/tokenize_llamacpp.mjs --gguf FILE --out tests/fixtures/gemma3-270m/tokens.json
//
// For each string: `special`, the ids with control tokens recognized in the text (llama.cpp's
// parse_special, what a Hugging Face tokenizer does with its special tokens); `plain`, the ids
// with them read as plain text; `decoded`, llama.cpp's detokenization of `special` without
// special tokens. No BOS is added (add_special false).
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import { createReadStream, existsSync, readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "llamacpp", "node_modules");
if (!existsSync(join(modules, "node-llama-cpp"))) fail(`${modules}/node-llama-cpp is missing: run scripts/setup-llamacpp first`);
const require = createRequire(join(here, "llamacpp", "package.json"));
const { getLlama, LlamaLogLevel } = await import(require.resolve("node-llama-cpp"));
const nodeLlamaCppVersion = JSON.parse(readFileSync(join(modules, "node-llama-cpp", "package.json"), "utf8")).version;

const { values: opts } = parseArgs({ options: { gguf: { type: "string" }, out: { type: "string" } } });
if (!opts.gguf || !opts.out) fail("--gguf FILE and --out FILE are required");
if (!existsSync(opts.gguf)) fail(`${opts.gguf}: no such file`);

function fail(message) {
  console.error(`tokenize_llamacpp: ${message}`);
  process.exit(2);
}

// Each kind of text a SentencePiece or byte-level tokenizer treats specially, once.
const TEXTS = [
  "",
  "Hello world",
  "The capital of France is",
  " leading space",
  "trailing space ",
  "multiple   spaces  between",
  " ",
  "    ",
  " ".repeat(40),
  "    indented by four",
  "line one\nline two\n\nline four\n",
  "\n\n\n",
  "\r\nWindows line\r\n",
  "tab\tseparated\t\tvalues\t",
  "digits 0123456789, 3.14159 and 1,000,000",
  "Punctuation!? (round) [square] {curly} \"double\" 'single' — dash; colon: ellipsis...",
  "Crème brûlée à la façon d'Éloïse, naïve señor, Ærø, straße",
  "日本語のテキストと中文字符，한국어",
  "Emoji: 😀👍🏽🎉 ❤️ 🧬",
  "rare: \u0f3a ꙮ 𓀀 \u{10FFFD}",
  "<start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\n",
  "<bos>text<eos>",
  "<b>bold</b> and <table><tr><td>x</td></tr></table>",
  "<0x41> looks like a byte token",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  "camelCaseIdentifier and snake_case_name and SCREAMING_CASE",
  "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n",
  "Question: What is 2+2?\nChoices: 3; 4; 5\nAnswer: 4",
  "https://example.org/path?query=1&x=y#frag",
  "I'm sure they'll say it's OK; WE'VE SEEN IT, you'd agree, DON'T you?",
  "x=(a+b)*c;// comment\n\t\treturn [1,22,333,4444];",
];

const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: opts.gguf, gpuLayers: 0, vocabOnly: true });
const cases = TEXTS.map((text) => {
  const special = Array.from(model.tokenize(text, true));
  return { text, special, plain: Array.from(model.tokenize(text, false)), decoded: model.detokenize(special, false) };
});

const sha256 = await new Promise((resolve, reject) => {
  const hash = createHash("sha256");
  createReadStream(opts.gguf).on("data", (d) => hash.update(d)).on("end", () => resolve(hash.digest("hex"))).on("error", reject);
});
const release = llama.llamaCppRelease;
const out = {
  made_by: "node bench/tokenize_llamacpp.mjs",
  gguf: { file: basename(opts.gguf), sha256 },
  versions: { "node-llama-cpp": nodeLlamaCppVersion, "llama.cpp": `${release.repo}@${release.release}` },
  cases,
};
// One case a line: the fixture stays readable and its diffs small.
const json = JSON.stringify({ ...out, cases: [] }, null, 1).replace('"cases": []', `"cases": [\n${cases.map((c) => "  " + JSON.stringify(c)).join(",\n")}\n ]`);
writeFileSync(opts.out, json + "\n");
console.error(`tokenize_llamacpp: ${cases.length} strings -> ${opts.out}`);
await model.dispose();
await llama.dispose();
