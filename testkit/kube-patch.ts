/**
 * The three patch types kube-apiserver accepts, for the test server:
 * - JSON merge patch (RFC 7386): maps merge, `null` deletes, lists are replaced;
 * - strategic merge patch: the same, except lists with a patch merge key (a Node's `status.conditions`
 *   and `status.addresses` by `type`) merge element by element, and the `$patch` directives
 *   (`replace`, `delete`) and `$setElementOrder/…`, `$retainKeys` keys are understood (order is kept as is);
 * - JSON patch (RFC 6902), by fast-json-patch.
 */
import fastJsonPatch from "fast-json-patch";

export const PATCH_TYPES = {
  "application/merge-patch+json": "merge",
  "application/strategic-merge-patch+json": "strategic",
  "application/json-patch+json": "json",
} as const;

export type PatchType = (typeof PATCH_TYPES)[keyof typeof PATCH_TYPES];

/** A patch the server must refuse (422 Invalid, or 400 for a body that is not a patch). */
export class PatchError extends Error {}

type Json = unknown;
const isMap = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value);
const clone = <T>(value: T): T => structuredClone(value);
/**
 * A copy of one level: merges build the result level by level, copying only the maps and lists on the
 * patch's paths and sharing the rest with the target, which nothing changes in place (the server stores
 * a deep copy of the result). A deep copy of the whole object at every level of the patch was most of
 * this server's CPU under the controller benchmark's 1,000 condition patches.
 */
const copyMap = (value: Record<string, unknown>): Record<string, unknown> => ({ ...value });

/** Applies a patch to a copy of `target` (which it does not change; the result may share its unpatched parts). `mergeKeys` maps a dotted path (`status.conditions`) to its merge key. */
export function applyPatch(type: PatchType, target: Json, patch: Json, mergeKeys: Record<string, string> = {}): Json {
  switch (type) {
    case "merge":
      if (!isMap(patch)) throw new PatchError("a merge patch must be a JSON object");
      return mergePatch(target, patch);
    case "strategic":
      if (!isMap(patch)) throw new PatchError("a strategic merge patch must be a JSON object");
      return strategicMerge(target, patch, "", mergeKeys);
    case "json": {
      if (!Array.isArray(patch)) throw new PatchError("a JSON patch must be a list of operations");
      try {
        return fastJsonPatch.applyPatch(clone(target), patch as fastJsonPatch.Operation[], true, false).newDocument;
      } catch (error) {
        throw new PatchError(`the JSON patch cannot be applied: ${(error as Error).message.split("\n")[0]}`);
      }
    }
  }
}

function mergePatch(target: Json, patch: Json): Json {
  if (!isMap(patch)) return clone(patch);
  const result: Record<string, unknown> = isMap(target) ? copyMap(target) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value);
  }
  return result;
}

function strategicMerge(target: Json, patch: Record<string, unknown>, path: string, mergeKeys: Record<string, string>): Json {
  if (patch.$patch === "replace") {
    const { $patch: _, ...rest } = patch;
    return clone(rest);
  }
  if (patch.$patch === "delete") return undefined;
  const result: Record<string, unknown> = isMap(target) ? copyMap(target) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (key === "$patch" || key === "$retainKeys" || key.startsWith("$setElementOrder/") || key.startsWith("$deleteFromPrimitiveList/")) continue;
    const at = path ? `${path}.${key}` : key;
    if (value === null) delete result[key];
    else if (Array.isArray(value) && mergeKeys[at]) result[key] = mergeList(Array.isArray(result[key]) ? (result[key] as unknown[]) : [], value, at, mergeKeys);
    else if (isMap(value)) {
      const merged = strategicMerge(result[key], value, at, mergeKeys);
      if (merged === undefined) delete result[key];
      else result[key] = merged;
    } else result[key] = clone(value);
  }
  return result;
}

function mergeList(current: unknown[], patch: unknown[], path: string, mergeKeys: Record<string, string>): unknown[] {
  const key = mergeKeys[path]!;
  if (patch.some((item) => isMap(item) && item.$patch === "replace")) return clone(patch.filter((item) => !(isMap(item) && item.$patch === "replace")));
  const result = [...current];
  for (const item of patch) {
    if (!isMap(item) || item[key] === undefined) throw new PatchError(`${path}: every element needs its merge key ${key}`);
    const index = result.findIndex((existing) => isMap(existing) && existing[key] === item[key]);
    if (item.$patch === "delete") {
      if (index >= 0) result.splice(index, 1);
    } else if (index >= 0) result[index] = strategicMerge(result[index], item, path, mergeKeys);
    else result.push(strategicMerge({}, item, path, mergeKeys));
  }
  return result;
}
