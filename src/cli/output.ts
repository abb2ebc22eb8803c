/**
 * Where the CLI's words go. Results go to stdout, as text or as one JSON/YAML document (nothing else on
 * stdout then, so `-o json` pipes cleanly); warnings and errors go to stderr; progress is drawn on
 * stderr only when it is a terminal and the output is for people.
 */
import { yaml } from "../yaml.js";
import type { Progress } from "../targets/target.js";

export interface Output {
  readonly json: boolean;
  readonly interactive: boolean;
  /** The command's result: `value` for -o json|yaml, `text()` for people. */
  result(value: unknown, text: () => string, options?: { alwaysHuman?: boolean }): void;
  /** Narration for people; dropped with -o json|yaml. */
  human(text: string): void;
  warn(message: string): void;
  error(message: string): void;
  progress(label: string): Progress;
  endProgress(): void;
}

export function createOutput(format: "table" | "json" | "yaml"): Output {
  const machine = format !== "table";
  const interactive = !machine && process.stderr.isTTY === true;
  let drawn = false;
  return {
    json: machine,
    interactive,
    result(value, text) {
      if (format === "json") process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
      else if (format === "yaml") process.stdout.write(yaml().stringify(value));
      else {
        const body = text();
        if (body) process.stdout.write(`${body}\n`);
      }
    },
    human(text) {
      if (!machine && text) process.stdout.write(`${text}\n`);
    },
    warn(message) {
      this.endProgress();
      process.stderr.write(`Warning: ${message}\n`);
    },
    error(message) {
      this.endProgress();
      process.stderr.write(`Error: ${message}\n`);
    },
    progress(label) {
      if (!interactive) return () => {};
      return ({ table, done, total, message }) => {
        drawn = true;
        process.stderr.write(`\r\x1b[K[${label}] ${done}/${total} ${message ?? ""} ${table}`);
      };
    },
    endProgress() {
      if (drawn) process.stderr.write("\r\x1b[K");
      drawn = false;
    },
  };
}
