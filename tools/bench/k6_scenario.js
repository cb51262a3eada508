// k6 script driven by tools/bench/measure.py.
//
// Everything comes from environment variables (k6 -e) so that one script serves
// every simple scenario:
//   BENCH_URL       full URL to request
//   BENCH_METHOD    HTTP method (default GET)
//   BENCH_HEADERS   newline-separated "Name: value" lines (may be empty)
//   BENCH_BODY      request body (may be empty)
//   BENCH_VUS       constant number of virtual users (= wrk's connections)
//   BENCH_DURATION  run length, e.g. "10s"
//   BENCH_SUMMARY   path of the JSON summary measure.py reads back
//
// A scenario that needs logic (WebSocket, ramps, login first) ships its own
// script, built like this one on k6_common.js so that measure.py can read it.
import http from "k6/http";
import { constantVus } from "./k6_common.js";

function parseHeaders(text) {
  const headers = {};
  for (const line of (text || "").split("\n")) {
    const at = line.indexOf(":");
    if (at > 0) {
      headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
  }
  return headers;
}

const url = __ENV.BENCH_URL;
const method = __ENV.BENCH_METHOD || "GET";
const params = { headers: parseHeaders(__ENV.BENCH_HEADERS) };
const body = __ENV.BENCH_BODY ? __ENV.BENCH_BODY : null;

// Bodies are not checked; dropping them keeps k6's own CPU cost down.
export const options = constantVus({ discardResponseBodies: true });

export default function () {
  http.request(method, url, body, params);
}

export { handleSummary } from "./k6_common.js";
