-- wrk script of the dsb_mix scenario (DeathStarBench's social-network mix),
-- driven by tools/bench/measure.py (the dataset and the pools: dataset.py).
--
-- Each request is, at random:
--   60%  GET /api/v1/feed                      home timeline of a reader
--   30%  GET /api/v1/users/{username}/posts    an author's posts, as a reader
--   10%  POST /api/v1/posts                    a compose, by a writer
-- Readers and authors are drawn Zipf-distributed (s = 1.0) over the
-- dataset's users by rank: a binary search of math.random() in the CDF
-- that dataset.py wrote beside each user.
--
-- Composes must respect the services' limits: each needs a media its writer
-- uploaded and never attached, and no writer may post more than 10 within
-- the posts limit's window (10/min, burst 10). Every wrk thread has its own
-- Lua state, so BENCH_MIX_FILE gives each thread writers of its own
-- ("w <thread> <token> <media id>..." lines, at most 10 ids each): the
-- thread's compose k goes to its writer k mod W with that writer's media
-- k div W (round-robin), so no id is sent twice and no writer posts more than
-- its ids. A thread that has used them all sends a home timeline read in
-- place of the compose and counts it (compose_skipped): measure.py then
-- refuses the run, as its mix was not the one asked for (the stack was
-- faster than BENCH_MIX_MAX_RPS planned for).
--
-- Non-2xx replies count as errors: wrk counts every status above 399 in
-- summary.errors.status (no response() here: it would make wrk hand every
-- reply to Lua, at a cost). measure.py reads the posts service's metrics for
-- which route failed how.
--
-- done() comes from wrk_scenario.lua; bench_extra() adds the per-type counts
-- summed over threads.

dofile(os.getenv("BENCH_WRK_LUA"))

local threads = {}

-- Runs in wrk's main Lua state, once per thread, before the thread's init().
function setup(thread)
   thread:set("thread_id", #threads)
   table.insert(threads, thread)
end

local users = {}     -- by rank: {cdf, name, auth}
local writers = {}   -- this thread's: {auth, ids}
local home_requests = {}
-- Global: bench_extra() reads it with thread:get().
counts = {home = 0, user = 0, compose = 0, compose_skipped = 0}
local composes = 0

function init(args)
   local path = os.getenv("BENCH_MIX_FILE")
   local file = assert(io.open(path, "r"))
   for line in file:lines() do
      local fields = {}
      for word in line:gmatch("%S+") do
         table.insert(fields, word)
      end
      if fields[1] == "u" then
         table.insert(users, {
            cdf = tonumber(fields[2]),
            name = fields[3],
            auth = "Bearer " .. fields[4],
         })
      elseif fields[1] == "w" and tonumber(fields[2]) == thread_id then
         local ids = {}
         for i = 4, #fields do
            table.insert(ids, fields[i])
         end
         table.insert(writers, {auth = "Bearer " .. fields[3], ids = ids})
      end
   end
   file:close()
   for i, user in ipairs(users) do
      home_requests[i] = wrk.format("GET", "/api/v1/feed", {Authorization = user.auth})
   end
   math.randomseed(os.time() + 7919 * (thread_id + 1))
end

-- A rank drawn Zipf-distributed: the first whose CDF reaches a uniform number.
local function draw()
   local r = math.random()
   local lo, hi = 1, #users
   while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if users[mid].cdf < r then
         lo = mid + 1
      else
         hi = mid
      end
   end
   return lo
end

local function compose()
   local count = #writers
   if count == 0 then
      return nil
   end
   local writer = writers[composes % count + 1]
   local id = writer.ids[math.floor(composes / count) + 1]
   if id == nil then
      return nil
   end
   composes = composes + 1
   local body = '{"caption":"bench mix post","media_ids":["' .. id .. '"]}'
   return wrk.format("POST", "/api/v1/posts", {
      Authorization = writer.auth,
      ["Content-Type"] = "application/json",
   }, body)
end

function request()
   local r = math.random()
   if r >= 0.9 then
      local req = compose()
      if req ~= nil then
         counts.compose = counts.compose + 1
         return req
      end
      counts.compose_skipped = counts.compose_skipped + 1
   elseif r >= 0.6 then
      counts.user = counts.user + 1
      local reader = users[draw()]
      local author = users[draw()]
      return wrk.format("GET", "/api/v1/users/" .. author.name .. "/posts", {
         Authorization = reader.auth,
      })
   end
   counts.home = counts.home + 1
   return home_requests[draw()]
end

-- Called from done(), in the main state: the counts of every thread.
function bench_extra()
   local total = {home = 0, user = 0, compose = 0, compose_skipped = 0}
   for _, thread in ipairs(threads) do
      local c = thread:get("counts")
      for name, _ in pairs(total) do
         total[name] = total[name] + c[name]
      end
   end
   return string.format(
      '{"home":%d,"user":%d,"compose":%d,"compose_skipped":%d}',
      total.home, total.user, total.compose, total.compose_skipped
   )
end
