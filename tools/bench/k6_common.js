// What every bench k6 script shares (and the load tests' load.js): the load
// shape measure.py asks for, the summary file it reads back, and the Zipf
// draw over the social dataset's users.

export const summaryTrendStats = ["avg", "min", "max", "p(50)", "p(95)", "p(99)"];

// Constant VUs for BENCH_DURATION; `extra` adds options such as
// discardResponseBodies.
export function constantVus(extra = {}) {
  return Object.assign(
    {
      summaryTrendStats,
      scenarios: {
        load: {
          executor: "constant-vus",
          vus: Number(__ENV.BENCH_VUS || 1),
          duration: __ENV.BENCH_DURATION || "10s",
          gracefulStop: "5s",
        },
      },
    },
    extra,
  );
}

// Only the file: report.py prints its own table.
export function handleSummary(data) {
  return { [__ENV.BENCH_SUMMARY]: JSON.stringify(data) };
}

// An item of `items` by rank, drawn with the cumulative weights each holds as
// `c` (the social dataset's Zipf CDF: dataset.py writes it).
export function zipfPick(items) {
  const r = Math.random();
  let lo = 0;
  let hi = items.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (items[mid].c < r) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return items[lo];
}
