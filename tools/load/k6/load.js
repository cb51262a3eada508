// The load-test suite's one k6 script (tools/load runs it): users who behave
// as people do, and watchers who hold WebSockets on posts. Every test is this
// script with its own load shape (tools/load/tests.py).
//
// THE USER MODEL (written here once; the README's "Load tests" and each
// report refer to it). A user VU opens the app: most resume the session
// the app kept (the account's access token, handed over fresh), SIGN_IN_SHARE
// (5%) sign in with their password (a real login: a password hash, a new
// session). Then it repeats one action and a think time of THINK_S (0.5 to
// 1.5 s, uniform):
//
//   action     share  requests
//   home        30%   GET /api/v1/feed                  (the home timeline)
//   global      20%   GET /api/v1/posts                 (the global feed)
//   profile     10%   GET /api/v1/users/{author}/posts  (an author drawn Zipf, s=1)
//   open        20%   GET /api/v1/posts/{id} and its newest messages
//   like        10%   POST /api/v1/posts/{id}/like
//   message      9%   POST /api/v1/posts/{id}/messages
//   post         1%   POST /api/v1/media (a 1024x768 JPEG), then POST /api/v1/posts
//
// A post opened or liked is one the user saw on the last page it read, drawn
// by position with weights 1/k (the top is the likeliest); a message goes
// there too, or, half the time, to the top of the last global feed page it
// read (what is new and talked about); before any read, the global feed's.
// Each user VU is its own account (VU n is account n mod the accounts), so
// per-user limits are a person's: 1% posts at ~1 action/s is ~0.6 posts and
// uploads a minute (limits: 10 posts, 1 upload after a burst of 30), 9%
// messages ~5.4 a minute (limit 60), 10% likes ~6 (limit 120). A session
// older than TOKEN_REFRESH_S is refreshed with its refresh token, or, for a
// resumed one (whose refresh token the harness keeps), signed in again.
//
// A watcher VU opens the app the same way, then, until its test ends: reads
// the global feed, picks a post from its top as a user would, subscribes to
// post:<id> and holds it WATCH_S, then lets what is in flight arrive for
// DRAIN_S before closing. A dropped socket is reopened (after 0.5 s, then
// doubling to 5 s) and subscribes again with `since` = the last event id it
// had (or its first subscription's `last`), so that it misses nothing. Each
// message carries the time it was sent: watchers measure delivery
// (load_ws_delivery_ms).
//
// WHAT THE CHECKER READS (k6's JSON output, every point with its tags):
//   load_acked{kind=post|message|like, id, post, user}   a write answered 2xx
//   load_ws_received{watch, message}                      an event a watcher got
//   load_ws_watch{watch, post, from, to}                  a watch: from its first
//       subscription's ack to the end of its hold (ms since the epoch), across
//       reconnects; every message created meanwhile must have arrived DRAIN_S later
//   load_ws_gap{watch}                                    the server no longer had
//       what a reconnect asked for (the client must refetch over REST)
//
// Variables (k6 -e), set by tools/load/run.py:
//   LOAD_BASE_URL, LOAD_WS_URL   the gateway
//   LOAD_USERS_FILE   JSON {"accounts": [{"u", "p", "t", "a"}], "authors": [{"u", "c"}]}
//                     (t: a fresh access token, a: when it was issued, ms;
//                     authors by rank with the Zipf CDF)
//   LOAD_PHOTO        the JPEG the post action uploads
//   LOAD_SCENARIOS    JSON: k6's scenarios (the test's shape)
//   LOAD_MIX          JSON {action: share} replacing the shares above, and
//   LOAD_POSTS        JSON [post id]: the posts every action and watch picks
//                     from instead (both for the checker's own test, which
//                     must write to what its watchers hold); empty for the model
//   LOAD_WATCH_S      how long a watcher holds a post
//   LOAD_SUMMARY      where the summary goes
import { SharedArray } from "k6/data";
import exec from "k6/execution";
import { WebSocket } from "k6/experimental/websockets";
import http from "k6/http";
import { Counter, Trend } from "k6/metrics";
import { setTimeout } from "k6/timers";
import { sleep } from "k6";
import { summaryTrendStats, zipfPick } from "../../bench/k6_common.js";

const MIX = {
  home: 30,
  global: 20,
  profile: 10,
  open: 20,
  like: 10,
  message: 9,
  post: 1,
};
const THINK_S = [0.5, 1.5];
const PAGE = 20;
const TOKEN_REFRESH_S = 600;
const SIGN_IN_SHARE = 0.05;
const LOGIN_TRIES = 10;
const RECONNECT_S = [0.5, 5];
const DRAIN_S = 10;

const base = __ENV.LOAD_BASE_URL;
const data = () => JSON.parse(open(__ENV.LOAD_USERS_FILE));
const accounts = new SharedArray("accounts", () => data().accounts);
const authors = new SharedArray("authors", () => data().authors);
const photo = open(__ENV.LOAD_PHOTO, "b");
const watchS = Number(__ENV.LOAD_WATCH_S || 30);
const mix = cumulative(__ENV.LOAD_MIX ? JSON.parse(__ENV.LOAD_MIX) : MIX);
const fixedPosts = __ENV.LOAD_POSTS ? JSON.parse(__ENV.LOAD_POSTS) : null;

const acked = new Counter("load_acked");
const received = new Counter("load_ws_received");
const watched = new Counter("load_ws_watch");
const gaps = new Counter("load_ws_gap");
const delivery = new Trend("load_ws_delivery_ms", true);
const sockets = new Counter("load_ws_opened");
const socketErrors = new Counter("load_ws_errors");

export const options = {
  summaryTrendStats,
  // The tags the report groups by; the URL, with its ids, is not one.
  systemTags: ["status", "method", "name", "scenario", "error_code", "expected_response"],
  scenarios: JSON.parse(__ENV.LOAD_SCENARIOS),
};

function cumulative(shares) {
  const total = Object.values(shares).reduce((a, b) => a + b, 0);
  let sum = 0;
  return Object.entries(shares).map(([action, share]) => {
    sum += share / total;
    return [action, sum];
  });
}

// Position k of a page with weight 1/(k+1).
const pageCdf = (() => {
  const weights = Array.from({ length: PAGE }, (_, k) => 1 / (k + 1));
  const total = weights.reduce((a, b) => a + b, 0);
  let sum = 0;
  return weights.map((w) => (sum += w / total));
})();

// A position among the first `length` of `cdf`'s, by its weights.
function pick(cdf, length) {
  const n = Math.min(cdf.length, length);
  const r = Math.random() * cdf[n - 1];
  for (let k = 0; k < n; k++) {
    if (r <= cdf[k]) return k;
  }
  return n - 1;
}

// -- the session ----------------------------------------------------------

let session = null;
// The last page read, and the last global feed page read.
let seen = [];
let trending = [];

function json(res) {
  try {
    return res.json();
  } catch (_) {
    return null;
  }
}

function account() {
  return accounts[(exec.vu.idInTest - 1) % accounts.length];
}

function signIn() {
  const { u, p } = account();
  for (let attempt = 0; attempt < LOGIN_TRIES; attempt++) {
    const res = http.post(
      `${base}/api/v1/users/login`,
      JSON.stringify({ username: u, password: p }),
      { headers: { "Content-Type": "application/json" }, tags: { name: "login" } },
    );
    const body = json(res);
    if (res.status === 200 && body) {
      return { user: u, access: body.access_token, refresh: body.refresh_token, at: Date.now() };
    }
    // Over a login limit or the service away: wait as told, or a second.
    sleep(Number(res.headers["Retry-After"]) || 1);
  }
  return null;
}

function refreshed() {
  const res = http.post(
    `${base}/api/v1/users/token/refresh`,
    JSON.stringify({ refresh_token: session.refresh }),
    { headers: { "Content-Type": "application/json" }, tags: { name: "refresh" } },
  );
  const body = json(res);
  return res.status === 200 && body
    ? { ...session, access: body.access_token, refresh: body.refresh_token, at: Date.now() }
    : signIn();
}

function ensureSession() {
  if (session === null) {
    const { u, t, a } = account();
    session =
      Math.random() < SIGN_IN_SHARE ? signIn() : { user: u, access: t, refresh: null, at: a };
  } else if (Date.now() - session.at > TOKEN_REFRESH_S * 1000) {
    session = session.refresh ? refreshed() : signIn();
  }
  return session;
}

function params(name, extra = {}) {
  return {
    headers: { Authorization: `Bearer ${session.access}`, ...extra },
    tags: { name },
  };
}

function readPage(name, path) {
  const res = http.get(`${base}${path}?limit=${PAGE}`, params(name));
  const body = res.status === 200 ? json(res) : null;
  if (body && body.items.length > 0) {
    seen = body.items.map((post) => post.id);
    if (name === "global") trending = seen;
  }
}

function seenPost(page = seen) {
  if (fixedPosts) {
    return fixedPosts[Math.floor(Math.random() * fixedPosts.length)];
  }
  if (page.length === 0) {
    readPage("global", "/api/v1/posts");
    page = trending;
  }
  return page.length ? page[pick(pageCdf, page.length)] : null;
}

const actions = {
  home: () => readPage("home", "/api/v1/feed"),
  global: () => readPage("global", "/api/v1/posts"),
  profile: () => readPage("profile", `/api/v1/users/${zipfPick(authors).u}/posts`),
  open: () => {
    const post = seenPost();
    if (post === null) return;
    http.get(`${base}/api/v1/posts/${post}`, params("open_post"));
    http.get(`${base}/api/v1/posts/${post}/messages?order=desc&limit=${PAGE}`, params("open_messages"));
  },
  like: () => {
    const post = seenPost();
    if (post === null) return;
    const res = http.post(`${base}/api/v1/posts/${post}/like`, null, params("like"));
    if (res.status === 200) {
      acked.add(1, { kind: "like", id: `${post}:${session.user}`, post, user: session.user });
    }
  },
  message: () => {
    const post = seenPost(Math.random() < 0.5 ? trending : seen);
    if (post === null) return;
    const res = http.post(
      `${base}/api/v1/posts/${post}/messages`,
      JSON.stringify({ message: `load ${Date.now()}` }),
      params("message", { "Content-Type": "application/json" }),
    );
    const body = res.status === 201 ? json(res) : null;
    if (body) {
      acked.add(1, { kind: "message", id: body.id, post, user: session.user });
    }
  },
  post: () => {
    const upload = http.post(
      `${base}/api/v1/media`,
      { file: http.file(photo, "photo.jpg", "image/jpeg") },
      params("upload"),
    );
    const media = upload.status === 201 ? json(upload) : null;
    if (!media) return;
    const res = http.post(
      `${base}/api/v1/posts`,
      JSON.stringify({ caption: "load test", media_ids: [media.id] }),
      params("create_post", { "Content-Type": "application/json" }),
    );
    const body = res.status === 201 ? json(res) : null;
    if (body) {
      acked.add(1, { kind: "post", id: body.id, post: body.id, user: session.user });
    }
  },
};

export function user() {
  if (ensureSession() === null) return;
  const r = Math.random();
  const [action] = mix.find(([, upTo]) => r <= upTo) || mix[mix.length - 1];
  actions[action]();
  sleep(THINK_S[0] + Math.random() * (THINK_S[1] - THINK_S[0]));
}

// -- the watcher ----------------------------------------------------------

export function watcher() {
  if (ensureSession() === null) return;
  readPage("global", "/api/v1/posts");
  const post = seenPost(trending);
  if (post === null) {
    sleep(1);
    return;
  }
  const watch = `${exec.vu.idInTest}-${exec.vu.iterationInScenario}`;
  const channel = `post:${post}`;
  const endAt = Date.now() + watchS * 1000;
  let from = 0;
  let heldUntil = 0;
  let last = null;
  let pause = RECONNECT_S[0];
  let current = null;
  const open = () => {
    sockets.add(1);
    const ws = new WebSocket(__ENV.LOAD_WS_URL, null, {
      headers: { Authorization: `Bearer ${session.access}` },
    });
    current = ws;
    let closing = false;
    const drain = () => {
      heldUntil = heldUntil || Date.now();
      setTimeout(() => {
        closing = true;
        ws.close();
      }, DRAIN_S * 1000);
    };
    ws.onopen = () => {
      ws.send(JSON.stringify({ op: "subscribe", channel, ...(last ? { since: last } : {}) }));
    };
    ws.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.op === "ack" && frame.for === "subscribe") {
        // Where a reconnect resumes before the watch has had an event.
        last = last || frame.last;
        pause = RECONNECT_S[0];
        from = from || Date.now();
        // The hold's end (or, reconnected after it, the drain at once).
        setTimeout(() => current === ws && drain(), Math.max(endAt - Date.now(), 0));
      } else if (frame.op === "event") {
        last = frame.id;
        if (frame.type === "message.created") {
          received.add(1, { watch, message: frame.data.message_id });
          const [word, sent] = frame.data.text.split(" ");
          if (word === "load") delivery.add(Date.now() - Number(sent));
        }
      } else if (frame.op === "error") {
        if (frame.code === "gap") gaps.add(1, { watch });
        socketErrors.add(1);
      }
    };
    ws.onerror = () => socketErrors.add(1);
    ws.onclose = () => {
      if (closing) {
        watched.add(1, { watch, post, from: String(from), to: String(heldUntil) });
      } else if (exec.scenario.progress < 1) {
        // Dropped: again, and resume.
        setTimeout(open, pause * 1000);
        pause = Math.min(pause * 2, RECONNECT_S[1]);
      }
    };
  };
  open();
}

export function handleSummary(summary) {
  return { [__ENV.LOAD_SUMMARY]: JSON.stringify(summary) };
}
