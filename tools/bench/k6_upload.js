// k6 script of the upload scenarios, driven by tools/bench/bench.py (see
// plan_upload() there for the arithmetic).
//
// Uploads one JPEG (made by make_photo()) as multipart/form-data, as the app
// does, from BENCH_VUS VUs at once. The media service allows each user 30
// uploads per 30 minutes, so uploads are spread over prepared accounts:
//   * upload n of the run (iterationInTest counts iterations over all VUs)
//     is sent with the access token of account n mod BENCH_ACCOUNT_COUNT;
//   * none is sent beyond BENCH_ACCOUNT_COUNT * BENCH_ACCOUNT_BUDGET, so no
//     account goes over its budget: such an iteration is counted in
//     bench_upload_skipped, and bench.py then refuses the run (the stack was
//     faster than the plan assumed).
// 429 (over the budget) and 503 (the processing pool is full: 2 workers and
// 4 waiting uploads in the dev stack), which the settings should rule out,
// count in bench_rate_limited and bench_busy.
//
// VUs (UPLOAD_VUS in bench.py): 2, one per worker process. On the 2-core dev
// box 3 or 4 uploads in flight gave no more uploads/s, only longer waits for
// a worker (p95 up by half), and more than the pool's 6 slots would answer
// 503: 2 is the busiest setting that does not queue.
//
// Variables (k6 -e):
//   BENCH_URL             the upload URL
//   BENCH_VUS             uploads in flight at once
//   BENCH_DURATION        run length, e.g. "10s"
//   BENCH_SUMMARY         path of the JSON summary bench.py reads back
//   BENCH_TOKENS_FILE     JSON list of access tokens, one per account
//   BENCH_ACCOUNT_FIRST   first token of the list this run uses
//   BENCH_ACCOUNT_COUNT   how many it uses
//   BENCH_ACCOUNT_BUDGET  most uploads per account
//   BENCH_PHOTO           path of the JPEG
import { check, sleep } from "k6";
import { SharedArray } from "k6/data";
import exec from "k6/execution";
import http from "k6/http";
import { Counter } from "k6/metrics";

const first = Number(__ENV.BENCH_ACCOUNT_FIRST);
const count = Number(__ENV.BENCH_ACCOUNT_COUNT);
// Parsed once, shared by all VUs.
const tokens = new SharedArray("tokens", () =>
  JSON.parse(open(__ENV.BENCH_TOKENS_FILE)).slice(first, first + count),
);
// Binary: read in the init context, one copy per VU.
const photo = open(__ENV.BENCH_PHOTO, "b");

const url = __ENV.BENCH_URL;
const durationMs = parseInt(__ENV.BENCH_DURATION, 10) * 1000;
const accountBudget = Number(__ENV.BENCH_ACCOUNT_BUDGET);

const skipped = new Counter("bench_upload_skipped");
const rateLimited = new Counter("bench_rate_limited");
const busy = new Counter("bench_busy");

export const options = {
  // Only the status is checked; dropping bodies keeps k6's own CPU cost down.
  discardResponseBodies: true,
  summaryTrendStats: ["avg", "min", "max", "p(50)", "p(95)", "p(99)"],
  scenarios: {
    load: {
      executor: "constant-vus",
      vus: Number(__ENV.BENCH_VUS || 1),
      duration: __ENV.BENCH_DURATION || "10s",
      gracefulStop: "5s",
    },
  },
};

export default function () {
  const iteration = exec.scenario.iterationInTest;
  if (iteration >= count * accountBudget) {
    skipped.add(1);
    // Wait out the run (at least a little: no busy loop right at its end).
    const elapsed = Date.now() - exec.scenario.startTime;
    sleep(Math.max(durationMs - elapsed, 10) / 1000);
    return;
  }
  const res = http.post(
    url,
    {
      file: http.file(photo, "photo.jpg", "image/jpeg"),
      description: "bench upload",
    },
    { headers: { Authorization: `Bearer ${tokens[iteration % count]}` } },
  );
  if (res.status === 429) {
    rateLimited.add(1);
  } else if (res.status === 503) {
    busy.add(1);
  }
  check(res, { "status is 201": (r) => r.status === 201 });
}

export function handleSummary(data) {
  // Only the file: bench.py prints its own table.
  return { [__ENV.BENCH_SUMMARY]: JSON.stringify(data) };
}
