// k6 script of the upload scenarios, driven by tools/bench/measure.py (see
// plan_upload() in plans.py for the arithmetic).
//
// Uploads one JPEG (made by make_photo() in prepare.py) as multipart/form-data, as the app
// does, from BENCH_VUS VUs at once. The media service allows each user 30
// uploads per 30 minutes, so uploads are spread over prepared accounts:
//   * upload n of the run (iterationInTest counts iterations over all VUs)
//     is sent with the access token of account n mod BENCH_ACCOUNT_COUNT;
//   * none is sent beyond BENCH_ACCOUNT_COUNT * BENCH_ACCOUNT_BUDGET, so no
//     account goes over its budget: such an iteration is counted in
//     bench_upload_skipped, and measure.py then refuses the run (the stack was
//     faster than the plan assumed).
// 429 (over the budget) and 503 (the processing pool is full: 2 workers and
// 4 waiting uploads in the dev stack; or the store is), which the settings
// should rule out, count in bench_rate_limited and bench_unavailable.
//
// Each upload is logged as "BENCH_MEDIA <token index> <media id>" (k6 runs
// with --log-format=raw): measure.py deletes them all once the run is over (see
// delete_uploads() in prepare.py), so that runs do not fill the dev stack's object store.
//
// VUs (UPLOAD_VUS in scenarios.py): 2, one per worker process. On the 2-core dev
// box, 3 runs each of 2, 3 and 4 VUs (10 s, no 503 with any) gave:
//   2 MP:  2 VUs 8.4-8.9 uploads/s, p95 245-280 ms; 3 VUs 7.7-9.4, p95
//          380-490 ms; 4 VUs 8.7-9.3, p95 455-540 ms
//   12 MP: 2 VUs 2.7-2.8 uploads/s, p95 735-890 ms; 3 VUs 2.3-2.8, p95
//          1.26-1.52 s; 4 VUs 2.6-2.8, p95 1.57-1.76 s
// Both cores are busy with 2 already: more VUs only wait in the pool's queue
// (their p95 is mostly that wait), for a few % more 2 MP uploads/s at best,
// within the noise; and past 6 in flight (2 workers + 4 waiting, counting
// those a warm-up leaves behind) the service answers 503.
//
// Variables (k6 -e):
//   BENCH_URL             the upload URL
//   BENCH_VUS             uploads in flight at once
//   BENCH_DURATION        run length, e.g. "10s"
//   BENCH_SUMMARY         path of the JSON summary measure.py reads back
//   BENCH_TOKENS_FILE     JSON list of access tokens, one per account
//   BENCH_ACCOUNT_FIRST   first token of the list this run uses
//   BENCH_ACCOUNT_COUNT   how many it uses
//   BENCH_ACCOUNT_BUDGET  most uploads per account
//   BENCH_PHOTO           path of the JPEG
import { check, sleep } from "k6";
import { SharedArray } from "k6/data";
import exec from "k6/execution";
import http from "k6/http";
import { constantVus } from "./k6_common.js";
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
const unavailable = new Counter("bench_unavailable");

// Bodies are kept: the upload's holds the id to log.
export const options = constantVus();

export default function () {
  const iteration = exec.scenario.iterationInTest;
  if (iteration >= count * accountBudget) {
    skipped.add(1);
    // Wait out the run (at least a little: no busy loop right at its end).
    const elapsed = Date.now() - exec.scenario.startTime;
    sleep(Math.max(durationMs - elapsed, 10) / 1000);
    return;
  }
  const account = iteration % count;
  const res = http.post(
    url,
    {
      file: http.file(photo, "photo.jpg", "image/jpeg"),
      description: "bench upload",
    },
    { headers: { Authorization: `Bearer ${tokens[account]}` } },
  );
  if (res.status === 201) {
    console.log(`BENCH_MEDIA ${first + account} ${res.json("id")}`);
  } else if (res.status === 429) {
    rateLimited.add(1);
  } else if (res.status === 503) {
    unavailable.add(1);
  }
  check(res, { "status is 201": (r) => r.status === 201 });
}

export { handleSummary } from "./k6_common.js";
