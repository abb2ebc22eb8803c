import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { duration } from "../options.js";
import { parseListen, serveHealth } from "./health.js";
import { createLogger, formatLine } from "./log.js";
import { Registry } from "./metrics.js";

describe("metrics exposition", () => {
  it("prints HELP, TYPE and samples in Prometheus' text format, labels sorted and escaped", () => {
    const registry = new Registry();
    const syncs = registry.counter("podroutes_syncs_total", "reconciles by result");
    const owned = registry.gauge("podroutes_owned_routes", "owned routes");
    const duration = registry.histogram("podroutes_sync_duration_seconds", "sync time", [0.01, 0.1]);
    registry.collected("podroutes_watch_restarts_total", "restarts", "counter", () => 4);
    syncs.inc({ result: "changed" });
    syncs.inc({ result: "changed" });
    syncs.inc({ result: 'odd"one\\' });
    owned.set(4999);
    duration.observe(0.005);
    duration.observe(0.05);
    duration.observe(3);
    assert.equal(
      registry.text(),
      [
        "# HELP podroutes_syncs_total reconciles by result",
        "# TYPE podroutes_syncs_total counter",
        'podroutes_syncs_total{result="changed"} 2',
        'podroutes_syncs_total{result="odd\\"one\\\\"} 1',
        "# HELP podroutes_owned_routes owned routes",
        "# TYPE podroutes_owned_routes gauge",
        "podroutes_owned_routes 4999",
        "# HELP podroutes_sync_duration_seconds sync time",
        "# TYPE podroutes_sync_duration_seconds histogram",
        'podroutes_sync_duration_seconds_bucket{le="0.01"} 1',
        'podroutes_sync_duration_seconds_bucket{le="0.1"} 2',
        'podroutes_sync_duration_seconds_bucket{le="+Inf"} 3',
        "podroutes_sync_duration_seconds_sum 3.055",
        "podroutes_sync_duration_seconds_count 3",
        "# HELP podroutes_watch_restarts_total restarts",
        "# TYPE podroutes_watch_restarts_total counter",
        "podroutes_watch_restarts_total 4",
        "",
      ].join("\n"),
    );
  });

  it("refuses a second family of one name, a bad name, and a counter going down", () => {
    const registry = new Registry();
    const counter = registry.counter("a_total", "a");
    assert.throws(() => registry.gauge("a_total", "again"), /registered twice/);
    assert.throws(() => registry.gauge("bad-name", "x"), /bad metric name/);
    assert.throws(() => counter.inc({}, -1), /cannot go down/);
  });
});

describe("logs", () => {
  const time = new Date("2026-11-23T10:00:00.000Z");
  it("json: one object per line with level, time, msg and the fields", () => {
    const line = formatLine("json", "warn", time, "node quarantined", { node: "worker-3", problems: ["overlaps"], error: new Error("boom") });
    assert.deepEqual(JSON.parse(line), { level: "warn", time: "2026-11-23T10:00:00.000Z", msg: "node quarantined", node: "worker-3", problems: ["overlaps"], error: "boom" });
    assert.doesNotMatch(line, /\n/);
  });
  it("text: time, level, message, key=value (quoted when needed)", () => {
    assert.equal(formatLine("text", "info", time, "reconciled", { node: "worker-0", create: 2, reasons: ["a b"] }), '2026-11-23T10:00:00.000Z INFO  reconciled node=worker-0 create=2 reasons="[\\"a b\\"]"');
  });
  it("drops lines below the level", () => {
    const lines: string[] = [];
    const log = createLogger({ format: "json", level: "info", write: (l) => lines.push(l) });
    log.debug("quiet");
    log.info("loud");
    assert.equal(lines.length, 1);
  });
});

describe("flags of the agent", () => {
  it("--listen HOST:PORT, [IPv6]:PORT", () => {
    assert.deepEqual(parseListen("0.0.0.0:9465"), { host: "0.0.0.0", port: 9465 });
    assert.deepEqual(parseListen("[::]:9465"), { host: "::", port: 9465 });
    assert.deepEqual(parseListen("localhost:0"), { host: "localhost", port: 0 });
    for (const bad of ["9465", ":9465", "0.0.0.0:", "0.0.0.0:70000", "::1:80", "a b:1"]) assert.throws(() => parseListen(bad), /HOST:PORT/, bad);
  });
  it("--resync durations as Go and Kubernetes spell them", () => {
    const resync = duration(1000, 86_400_000);
    assert.equal(resync("30s"), 30_000);
    assert.equal(resync("10m"), 600_000);
    assert.equal(resync("1h30m"), 5_400_000);
    assert.equal(resync("1.5s"), 1500);
    assert.throws(() => resync("500ms"), /from 1s to 24h/);
    assert.throws(() => resync("10"), /duration such as/);
    assert.throws(() => resync("-1s"), /duration such as/);
    assert.throws(() => resync("2d"), /duration such as/);
  });
});

describe("health endpoints", () => {
  it("answer 200 or 503 with the reason, and /metrics in the exposition format", async () => {
    let ready = false;
    const server = await serveHealth({ host: "127.0.0.1", port: 0 }, {
      live: () => ({ ok: true, detail: "idle" }),
      ready: () => (ready ? { ok: true, detail: "first full sync done" } : { ok: false, detail: "waiting for a complete list of Nodes" }),
      metrics: () => "# HELP x y\n# TYPE x gauge\nx 1\n",
    });
    const get = async (path: string) => {
      const response = await fetch(`http://127.0.0.1:${server.address.port}${path}`);
      return { status: response.status, type: response.headers.get("content-type"), body: await response.text() };
    };
    try {
      assert.deepEqual(await get("/readyz"), { status: 503, type: "text/plain", body: "not ok: waiting for a complete list of Nodes\n" });
      ready = true;
      assert.equal((await get("/readyz")).status, 200);
      assert.equal((await get("/livez")).body, "ok: idle\n");
      assert.equal((await get("/healthz")).status, 200);
      const metrics = await get("/metrics");
      assert.equal(metrics.type, "text/plain; version=0.0.4; charset=utf-8");
      assert.match(metrics.body, /^x 1$/m);
      assert.equal((await get("/nope")).status, 404);
    } finally {
      await server.close();
    }
  });
});
