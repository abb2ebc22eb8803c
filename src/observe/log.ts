/**
 * Structured logs of a long-running process: one JSON object per line (`level`, `time`, `msg`, then the
 * fields), which log collectors parse without rules, or the same as `time LEVEL msg key=value` text for
 * people. Writing goes to a sink (stderr in the agent), so tests read the lines they produce.
 */

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFormat = "json" | "text";
export const LOG_FORMATS = ["json", "text"] as const;

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** One log line (without its newline). */
export function formatLine(format: LogFormat, level: LogLevel, time: Date, msg: string, fields: LogFields = {}): string {
  if (format === "json") return JSON.stringify({ level, time: time.toISOString(), msg, ...fields }, errorsAsText);
  const pairs = Object.entries(fields).map(([key, value]) => `${key}=${textValue(value)}`);
  return [time.toISOString(), level.toUpperCase().padEnd(5), msg, ...pairs].join(" ");
}

function errorsAsText(_key: string, value: unknown): unknown {
  return value instanceof Error ? value.message : value;
}

function textValue(value: unknown): string {
  const text = value instanceof Error ? value.message : typeof value === "string" ? value : JSON.stringify(value);
  return /^[^\s"=]+$/.test(text ?? "") ? text! : JSON.stringify(text);
}

export function createLogger(options: { format: LogFormat; level?: LogLevel; write?: (line: string) => void; now?: () => Date }): Logger {
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const now = options.now ?? (() => new Date());
  const threshold = ORDER[options.level ?? "info"];
  const at =
    (level: LogLevel) =>
    (msg: string, fields?: LogFields): void => {
      if (ORDER[level] >= threshold) write(formatLine(options.format, level, now(), msg, fields));
    };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}
