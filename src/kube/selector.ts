/**
 * Kubernetes label selectors (`zone=a,role!=gpu,tier in (web,api),!spot`): parsed into requirements and
 * matched against labels, as apimachinery's `labels.Parse` does. `--selector` is checked with it before
 * any request is made (a typo is a usage error, not an API 400), and the test API server filters with it.
 * Pure: no I/O.
 */

export type SelectorOperator = "=" | "!=" | "in" | "notin" | "exists" | "!";

export interface Requirement {
  key: string;
  operator: SelectorOperator;
  values: string[];
}

export class SelectorError extends Error {
  constructor(
    readonly selector: string,
    reason: string,
  ) {
    super(`label selector ${JSON.stringify(selector)}: ${reason}`);
    this.name = "SelectorError";
  }
}

const KEY = /^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const VALUE = /^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$/;

/** Splits at commas outside parentheses: `a in (x,y),b` → [`a in (x,y)`, `b`]. */
function splitRequirements(text: string, selector: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let current = "";
  for (const char of text) {
    if (char === "(") depth++;
    if (char === ")") depth--;
    if (depth < 0 || depth > 1) throw new SelectorError(selector, "unbalanced parentheses");
    if (char === "," && depth === 0) {
      parts.push(current);
      current = "";
    } else current += char;
  }
  if (depth !== 0) throw new SelectorError(selector, "unbalanced parentheses");
  parts.push(current);
  return parts.map((p) => p.trim());
}

/** Parses a selector; the empty selector selects everything. Throws SelectorError naming the selector. */
export function parseSelector(selector: string): Requirement[] {
  if (selector.trim() === "") return [];
  return splitRequirements(selector, selector).map((part) => parseRequirement(part, selector));
}

function parseRequirement(part: string, selector: string): Requirement {
  const key = (text: string) => {
    if (!KEY.test(text)) throw new SelectorError(selector, `${JSON.stringify(text)} is not a valid label key`);
    return text;
  };
  const value = (text: string) => {
    if (!VALUE.test(text)) throw new SelectorError(selector, `${JSON.stringify(text)} is not a valid label value`);
    return text;
  };
  if (part === "") throw new SelectorError(selector, "empty requirement");
  const set = /^(\S+)\s+(in|notin)\s*\((.*)\)$/.exec(part);
  if (set) {
    const values = set[3]!.split(",").map((v) => value(v.trim()));
    return { key: key(set[1]!), operator: set[2] as "in" | "notin", values };
  }
  const compare = /^([^=!\s]+)\s*(==|=|!=)\s*(.*)$/.exec(part);
  if (compare) return { key: key(compare[1]!), operator: compare[2] === "!=" ? "!=" : "=", values: [value(compare[3]!.trim())] };
  if (part.startsWith("!")) return { key: key(part.slice(1).trim()), operator: "!", values: [] };
  if (/[<>()\s]/.test(part)) throw new SelectorError(selector, `cannot read ${JSON.stringify(part)} (use =, ==, !=, in, notin, key or !key)`);
  return { key: key(part), operator: "exists", values: [] };
}

/** True when labels satisfy every requirement. */
export function matchesSelector(requirements: readonly Requirement[], labels: Readonly<Record<string, string>> = {}): boolean {
  return requirements.every(({ key, operator, values }) => {
    const has = Object.hasOwn(labels, key);
    const value = labels[key];
    switch (operator) {
      case "=":
        return has && value === values[0];
      case "!=":
        return !has || value !== values[0];
      case "in":
        return has && values.includes(value!);
      case "notin":
        return !has || !values.includes(value!);
      case "exists":
        return has;
      case "!":
        return !has;
    }
  });
}
