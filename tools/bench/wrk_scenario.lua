-- wrk script driven by tools/bench/measure.py.
--
-- The request comes from environment variables so that one script serves every
-- simple scenario:
--   BENCH_METHOD   HTTP method (default GET)
--   BENCH_HEADERS  newline-separated "Name: value" lines (may be empty)
--   BENCH_BODY     request body (may be empty)
--
-- done() prints one line "BENCH_JSON {...}" that measure.py parses. It exists
-- because wrk's own --latency text has no p95.
--
-- A scenario with a mix of requests can ship its own script: it should start
-- with `dofile(os.getenv("BENCH_WRK_LUA"))` to get done() from this file, then
-- define its own request() (and response() if it must look at replies). If it
-- defines bench_extra(), a function returning a JSON object's text, done()
-- adds that object as "extra" (see wrk_dsb_mix.lua).

local method = os.getenv("BENCH_METHOD")
if method ~= nil and method ~= "" then
   wrk.method = method
end

local headers = os.getenv("BENCH_HEADERS")
if headers ~= nil then
   for line in headers:gmatch("[^\n]+") do
      local name, value = line:match("^([^:]+):%s*(.*)$")
      if name ~= nil then
         wrk.headers[name] = value
      end
   end
end

local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then
   wrk.body = body
end

-- No response() here on purpose: defining it makes wrk parse and keep every
-- header and body, which costs throughput. summary.errors.status already counts
-- replies with a status above 399.
function done(summary, latency, requests)
   local e = summary.errors
   local extra = ""
   if bench_extra ~= nil then
      extra = ',"extra":' .. bench_extra()
   end
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},'
         .. '"latency_us":{"p50":%d,"p95":%d,"p99":%d,"max":%d,"mean":%.1f}%s}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.timeout, e.status,
      latency:percentile(50), latency:percentile(95), latency:percentile(99),
      latency.max, latency.mean, extra
   ))
end
