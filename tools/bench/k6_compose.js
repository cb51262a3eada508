// k6 script of the create_post scenario, driven by tools/bench/measure.py
// (see plan_compose() in plans.py and Social.pools_for() in dataset.py).
//
// POST /api/v1/posts {"caption", "media_ids": [one id]}. Every post needs a
// media its writer uploaded and never attached, and no writer may post more
// than 10 within the posts limit's window (10/min, burst 10), so:
//   * post n of the run (iterationInTest counts over all VUs) is sent by
//     writer n mod W (W writers in BENCH_POOLS_FILE, each with its own
//     BENCH_PER_WRITER <= 10 media), with that writer's media n div W;
//   * none is sent beyond W * BENCH_PER_WRITER: such an iteration is counted
//     in bench_compose_skipped, and measure.py then refuses the run (the stack
//     posted faster than BENCH_COMPOSE_MAX_RPS).
// 429 replies, which the plan rules out, count in bench_rate_limited.
// dataset.py deletes the posts (and the unused media) after the run.
//
// Variables (k6 -e):
//   BENCH_URL         the posts URL
//   BENCH_VUS         posts in flight at once
//   BENCH_DURATION    run length, e.g. "10s"
//   BENCH_SUMMARY     path of the JSON summary measure.py reads back
//   BENCH_POOLS_FILE  JSON {"writers": [{"t": token, "m": [media id, ...]}]}
//   BENCH_PER_WRITER  media per writer
import { check, sleep } from "k6";
import { SharedArray } from "k6/data";
import exec from "k6/execution";
import http from "k6/http";
import { constantVus } from "./k6_common.js";
import { Counter } from "k6/metrics";

const writers = new SharedArray("writers", () => JSON.parse(open(__ENV.BENCH_POOLS_FILE)).writers);
const perWriter = Number(__ENV.BENCH_PER_WRITER);
const url = __ENV.BENCH_URL;
const durationMs = parseInt(__ENV.BENCH_DURATION, 10) * 1000;

const skipped = new Counter("bench_compose_skipped");
const rateLimited = new Counter("bench_rate_limited");

export const options = constantVus({ discardResponseBodies: true });

export default function () {
  const n = exec.scenario.iterationInTest;
  if (n >= writers.length * perWriter) {
    skipped.add(1);
    // Wait out the run (at least a little: no busy loop right at its end).
    const elapsed = Date.now() - exec.scenario.startTime;
    sleep(Math.max(durationMs - elapsed, 10) / 1000);
    return;
  }
  const writer = writers[n % writers.length];
  const body = JSON.stringify({
    caption: `bench post ${n}`,
    media_ids: [writer.m[Math.floor(n / writers.length)]],
  });
  const res = http.post(url, body, {
    headers: { Authorization: `Bearer ${writer.t}`, "Content-Type": "application/json" },
  });
  if (res.status === 429) {
    rateLimited.add(1);
  }
  check(res, { "status is 201": (r) => r.status === 201 });
}

export { handleSummary } from "./k6_common.js";
