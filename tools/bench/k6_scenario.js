// k6 script driven by tools/bench/bench.py.
//
// Everything comes from environment variables (k6 -e) so that one script serves
// every simple scenario:
//   BENCH_URL       full URL to request
//   BENCH_METHOD    HTTP method (default GET)
//   BENCH_HEADERS   newline-separated "Name: value" lines (may be empty)
//   BENCH_BODY      request body (may be empty)
//   BENCH_VUS       constant number of virtual users (= wrk's connections)
//   BENCH_DURATION  run length, e.g. "10s"
//   BENCH_SUMMARY   path of the JSON summary bench.py reads back
//
// A scenario that needs logic (WebSocket, ramps, login first) can ship its own
// script; it must keep the same `options.summaryTrendStats` and handleSummary()
// so that bench.py can read it.
import http from "k6/http";

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

export const options = {
  // Bodies are not checked; dropping them keeps k6's own CPU cost down.
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
  http.request(method, url, body, params);
}

export function handleSummary(data) {
  // Only the file: bench.py prints its own table.
  return { [__ENV.BENCH_SUMMARY]: JSON.stringify(data) };
}
