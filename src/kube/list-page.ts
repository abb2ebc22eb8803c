/**
 * A list answer's text parsed item by item, each item handed to `keep` (the reflector's transform) as
 * soon as it is parsed. Why: JSON.parse of a whole page of kubelet-sized Nodes builds every Node whole
 * (images, managedFields, ...) and holds them all until the page is transformed; a young-generation
 * collection that falls in that window copies them, and the next promotes them to the old generation,
 * which V8 grows and never gives back (issue 9: the agent's heap peak and its GC time in the first list).
 * Parsed one at a time, a Node's parts are garbage before the next is built.
 *
 * All parsing is JSON.parse's; this only chooses where to cut. An API server writes a list as
 * `{...,"items":[{"metadata":...},{"metadata":...}]}`: the text `},` followed by the first item's first
 * key (`{"metadata":`) begins the next item. That text cannot lie inside a string (its quote follows a
 * `{`, so it is not escaped, and a closing quote cannot be followed by a letter), but it can lie deeper
 * in an item (a list of objects whose first key is the same); a cut there leaves a piece that is not a
 * complete JSON value, which JSON.parse refuses. So either every piece parses, and each piece is one
 * item of the top-level list (and the whole text is valid JSON), or the answer is undefined and the
 * caller parses the text whole. Pure.
 */

export interface ListPage<T> {
  kind?: unknown;
  apiVersion?: unknown;
  metadata?: { resourceVersion?: string; continue?: string; remainingItemCount?: number };
  items?: T[];
}

/** The first key of the first item, as the text has it: `{"metadata":`. Plain keys only. */
const FIRST_KEY = /^\{"[A-Za-z0-9_$-]+":$/;

/**
 * Parses a list answer item by item (see the module comment); undefined when the text is not laid out
 * that way (pretty-printed, no items, items not last, a cut inside an item), to be parsed whole.
 */
export function parseListPage<T>(text: string, keep: (item: T) => T): ListPage<T> | undefined {
  const at = text.indexOf('"items":[');
  if (at < 1 || (text[at - 1] !== "," && text[at - 1] !== "{")) return undefined;
  const start = at + '"items":['.length;
  if (text[start] !== "{") return undefined;
  const firstKey = text.slice(start, text.indexOf('":', start) + 2);
  if (!FIRST_KEY.test(firstKey)) return undefined;
  const end = text.lastIndexOf("]");
  if (end < start || text.slice(end + 1).trim() !== "}") return undefined;
  let page: ListPage<T>;
  try {
    // The list without its items: its kind, apiVersion and metadata, checked by JSON.parse too.
    page = JSON.parse(`${text.slice(0, start)}${text.slice(end)}`) as ListPage<T>;
  } catch {
    return undefined;
  }
  const nextItem = `},${firstKey}`;
  const items: T[] = [];
  for (let from = start; ; ) {
    const cut = text.indexOf(nextItem, from);
    const pieceEnd = cut < 0 || cut > end ? end : cut + 1;
    let item: T;
    try {
      item = JSON.parse(text.slice(from, pieceEnd)) as T;
    } catch {
      return undefined;
    }
    items.push(keep(item));
    if (pieceEnd === end) break;
    from = pieceEnd + 1;
  }
  page.items = items;
  return page;
}
