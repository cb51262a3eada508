// What every bench k6 script shares: the load shape measure.py asks for, and
// the summary file it reads back.

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
