// k6 script of the home_timeline and user_timeline scenarios, driven by
// tools/bench/measure.py (the dataset: see dataset.py).
//
// Each iteration draws a reader Zipf-distributed over the dataset's users
// (s = 1.0, rank 1 most often) and reads as them, with their access token:
//   * home_timeline: GET /api/v1/feed (their home timeline, page 1);
//   * user_timeline: GET /api/v1/users/{username}/posts (page 1) of an
//     author drawn the same way, independently of the reader.
// A draw is a binary search of a uniform number in the CDF that dataset.py
// wrote beside each user.
//
// Variables (k6 -e):
//   BENCH_VUS          VUs reading at once
//   BENCH_DURATION     run length, e.g. "10s"
//   BENCH_SUMMARY      path of the JSON summary measure.py reads back
//   BENCH_SOCIAL_FILE  JSON {"users": [{"u": username, "t": token, "c": cdf}]}
//   BENCH_TIMELINE     home_timeline or user_timeline
//   BENCH_BASE_URL     the gateway
import { check } from "k6";
import { SharedArray } from "k6/data";
import http from "k6/http";
import { constantVus, zipfPick } from "./k6_common.js";

// Parsed once, shared by all VUs.
const users = new SharedArray("users", () => JSON.parse(open(__ENV.BENCH_SOCIAL_FILE)).users);
const home = __ENV.BENCH_TIMELINE === "home_timeline";
const base = __ENV.BENCH_BASE_URL;
// One metrics series for all authors' URLs.
const tags = { name: home ? "home_timeline" : "user_timeline" };

// Only the status is checked; dropping bodies keeps k6's own CPU cost down.
export const options = constantVus({ discardResponseBodies: true });

export default function () {
  const reader = zipfPick(users);
  const url = home ? `${base}/api/v1/feed` : `${base}/api/v1/users/${zipfPick(users).u}/posts`;
  const res = http.get(url, { headers: { Authorization: `Bearer ${reader.t}` }, tags });
  check(res, { "status is 200": (r) => r.status === 200 });
}

export { handleSummary } from "./k6_common.js";
