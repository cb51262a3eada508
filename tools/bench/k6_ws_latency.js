// k6 script of the ws_latency scenario, driven by tools/bench/ws_bench.py:
// publish -> delivery latency of messages on posts, through the gateway.
//
// Two k6 scenarios run side by side:
//   * subscribers: one VU per post, holding BENCH_WS_SUBSCRIBERS sockets
//     subscribed to its channel (post:<id>), each as another dataset user,
//     until every message has had time to arrive;
//   * warmup, then measure: BENCH_WS_RATE messages/s (constant arrival
//     rate) from BENCH_CONNECT_S on, for BENCH_WARMUP_S then
//     BENCH_DURATION_S seconds: message n of a scenario is posted by user
//     n mod users on post n mod posts, and says when it was sent and
//     whether it belongs to the measured window. Every count is the
//     measured window's (k6's dropped_iterations through a threshold).
// A subscriber adds now - sent to bench_delivery_ms for every measured
// message it receives (the clocks are one: all runs on one machine).
//
// Variables (k6 -e):
//   BENCH_BASE_URL, BENCH_WS_URL   the gateway (http:// and ws:// .../ws)
//   BENCH_WS_FILE                  JSON {"tokens": [access token], "posts": [post id]}
//   BENCH_WS_SUBSCRIBERS           sockets per post
//   BENCH_WS_RATE                  messages per second
//   BENCH_CONNECT_S, BENCH_WARMUP_S, BENCH_DURATION_S, BENCH_DRAIN_S   phases (s)
//   BENCH_SUMMARY                  path of the JSON summary ws_bench.py reads back
import { SharedArray } from "k6/data";
import exec from "k6/execution";
import { WebSocket } from "k6/experimental/websockets";
import http from "k6/http";
import { Counter, Trend } from "k6/metrics";
import { summaryTrendStats } from "./k6_common.js";

const data = () => JSON.parse(open(__ENV.BENCH_WS_FILE));
const tokens = new SharedArray("tokens", () => data().tokens);
const posts = new SharedArray("posts", () => data().posts);
const subscribers = Number(__ENV.BENCH_WS_SUBSCRIBERS);
const rate = Number(__ENV.BENCH_WS_RATE);
const connectS = Number(__ENV.BENCH_CONNECT_S);
const warmupS = Number(__ENV.BENCH_WARMUP_S);
const durationS = Number(__ENV.BENCH_DURATION_S);
const drainS = Number(__ENV.BENCH_DRAIN_S);

const delivery = new Trend("bench_delivery_ms", true);
const sendMs = new Trend("bench_send_ms", true);
const delivered = new Counter("bench_delivered");
const sent = new Counter("bench_sent");
// Every message posted, warm-up included: what the fleet's CPU is divided by.
const posted = new Counter("bench_posted");
const sendFailed = new Counter("bench_send_failed");
const subscribed = new Counter("bench_subscribed");
const socketErrors = new Counter("bench_socket_errors");

function publishers(startS, forS) {
  return {
    executor: "constant-arrival-rate",
    exec: "publish",
    rate,
    timeUnit: "1s",
    startTime: `${startS}s`,
    duration: `${forS}s`,
    // Enough for a second of sends taking 0.2 s each, more if they slow.
    preAllocatedVUs: Math.ceil(rate / 5),
    maxVUs: rate,
  };
}

export const options = {
  summaryTrendStats,
  discardResponseBodies: true,
  // Only so that the summary has the measured window's count apart.
  thresholds: { "dropped_iterations{scenario:measure}": ["count>=0"] },
  scenarios: {
    subscribers: {
      executor: "per-vu-iterations",
      exec: "subscribe",
      vus: posts.length,
      iterations: 1,
      maxDuration: `${connectS + warmupS + durationS + drainS + 30}s`,
    },
    warmup: publishers(connectS, warmupS),
    measure: publishers(connectS + warmupS, durationS),
  },
};

export function subscribe() {
  const post = exec.scenario.iterationInTest;
  const channel = `post:${posts[post]}`;
  const sockets = [];
  for (let k = 0; k < subscribers; k++) {
    const token = tokens[(post * subscribers + k) % tokens.length];
    const ws = new WebSocket(__ENV.BENCH_WS_URL, null, {
      headers: { Authorization: `Bearer ${token}` },
    });
    ws.onopen = () => ws.send(JSON.stringify({ op: "subscribe", channel }));
    ws.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.op === "ack") {
        subscribed.add(1);
      } else if (frame.op === "event" && frame.type === "message.created") {
        const [, phase, at] = frame.data.text.split(" ");
        if (phase === "m") {
          delivery.add(Date.now() - Number(at));
          delivered.add(1);
        }
      } else if (frame.op === "error") {
        socketErrors.add(1);
      }
    };
    ws.onerror = () => socketErrors.add(1);
    sockets.push(ws);
  }
  // Open until the last measured message has had DRAIN_S to arrive.
  const closeAt = exec.scenario.startTime + (connectS + warmupS + durationS + drainS) * 1000;
  setTimeout(() => sockets.forEach((ws) => ws.close()), closeAt - Date.now());
}

export function publish() {
  const n = exec.scenario.iterationInTest;
  const measured = exec.scenario.name === "measure";
  const started = Date.now();
  const res = http.post(
    `${__ENV.BENCH_BASE_URL}/api/v1/posts/${posts[n % posts.length]}/messages`,
    JSON.stringify({ message: `bench ${measured ? "m" : "w"} ${started}` }),
    {
      headers: {
        Authorization: `Bearer ${tokens[n % tokens.length]}`,
        "Content-Type": "application/json",
      },
      tags: { name: "send_message" },
    },
  );
  if (res.status === 201) {
    posted.add(1);
  }
  if (!measured) {
    return;
  }
  if (res.status === 201) {
    sent.add(1);
    sendMs.add(res.timings.duration);
  } else {
    sendFailed.add(1);
  }
}

export { handleSummary } from "./k6_common.js";
