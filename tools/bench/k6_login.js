// k6 script of the login scenario, driven by tools/bench/measure.py (see
// plan_login() in plans.py for the arithmetic).
//
// Logs in as many accounts from many source addresses, as production traffic
// does, without reaching the auth service's rate limits (20 logins/min per
// client address, 5/min per account):
//   * k6 gives each VU one source address of --local-ips (VU n the n-th), so
//     addresses are spread by VU. BENCH_GROUPS groups of BENCH_ACTIVE VUs take
//     turns, BENCH_SLOT_MS each: BENCH_ACTIVE logins are in flight at any
//     moment (the row's connections), and each address logs in during a few
//     slots only.
//   * each login takes the next account (iterationInTest counts iterations
//     over all VUs), so the run's accounts are used evenly.
//   * no VU sends more than BENCH_ADDRESS_BUDGET logins and no account gets
//     more than BENCH_ACCOUNT_BUDGET: a login that would exceed them is not
//     sent but counted in bench_login_skipped, and measure.py then refuses the
//     run (the stack was faster than the plan assumed).
// 429 replies, which the plan should rule out, count in bench_rate_limited.
//
// Variables (k6 -e):
//   BENCH_URL             the login URL
//   BENCH_VUS             BENCH_ACTIVE * BENCH_GROUPS
//   BENCH_DURATION        run length, e.g. "10s"
//   BENCH_SUMMARY         path of the JSON summary measure.py reads back
//   BENCH_ACCOUNTS_FILE   JSON list of {"username", "password"}
//   BENCH_ACCOUNT_FIRST   first account of the list this run uses
//   BENCH_ACCOUNT_COUNT   how many it uses
//   BENCH_ACCOUNT_BUDGET  most logins per account
//   BENCH_ADDRESS_BUDGET  most logins per VU, so per source address
//   BENCH_ACTIVE          VUs logging in at once
//   BENCH_GROUPS          groups of VUs taking turns
//   BENCH_SLOT_MS         length of a turn
import { check, sleep } from "k6";
import { SharedArray } from "k6/data";
import exec from "k6/execution";
import http from "k6/http";
import { constantVus } from "./k6_common.js";
import { Counter } from "k6/metrics";

const first = Number(__ENV.BENCH_ACCOUNT_FIRST);
const count = Number(__ENV.BENCH_ACCOUNT_COUNT);
// Parsed once, shared by all VUs.
const accounts = new SharedArray("accounts", () =>
  JSON.parse(open(__ENV.BENCH_ACCOUNTS_FILE)).slice(first, first + count),
);

const url = __ENV.BENCH_URL;
const durationMs = parseInt(__ENV.BENCH_DURATION, 10) * 1000;
const accountBudget = Number(__ENV.BENCH_ACCOUNT_BUDGET);
const addressBudget = Number(__ENV.BENCH_ADDRESS_BUDGET);
const active = Number(__ENV.BENCH_ACTIVE);
const groups = Number(__ENV.BENCH_GROUPS);
const slotMs = Number(__ENV.BENCH_SLOT_MS);
const params = { headers: { "Content-Type": "application/json" } };

const skipped = new Counter("bench_login_skipped");
const rateLimited = new Counter("bench_rate_limited");

// Per VU (each VU runs its own copy of this module).
const group = Math.floor((__VU - 1) / active);
let logins = 0;

// Only the status is checked; dropping bodies keeps k6's own CPU cost down.
export const options = constantVus({ discardResponseBodies: true });

function elapsedMs() {
  return Date.now() - exec.scenario.startTime;
}

// Milliseconds from `elapsed` to this VU's group's next turn; 0 during one.
function untilTurn(elapsed) {
  const slot = Math.floor(elapsed / slotMs);
  const next = slot + ((group - (slot % groups) + groups) % groups);
  return next === slot ? 0 : next * slotMs - elapsed;
}

// Wait out the run (at least a little: no busy loop right at its end).
function idleToEnd(elapsed) {
  sleep(Math.max(durationMs - elapsed, 10) / 1000);
}

export default function () {
  const elapsed = elapsedMs();
  const wait = untilTurn(elapsed);
  if (elapsed + wait >= durationMs) {
    idleToEnd(elapsed);
    return;
  }
  if (wait > 0) {
    sleep(wait / 1000);
  }
  const iteration = exec.scenario.iterationInTest;
  if (logins >= addressBudget || iteration >= count * accountBudget) {
    skipped.add(1);
    idleToEnd(elapsedMs());
    return;
  }
  logins += 1;
  const account = accounts[iteration % count];
  const res = http.post(
    url,
    JSON.stringify({ username: account.username, password: account.password }),
    params,
  );
  if (res.status === 429) {
    rateLimited.add(1);
  }
  check(res, { "status is 200": (r) => r.status === 200 });
}

export { handleSummary } from "./k6_common.js";
