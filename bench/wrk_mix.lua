-- wrk script for bench/http_wrk.py: the benchmark's request mix, or one of its requests alone.
-- wrk -s bench/wrk_mix.lua URL -- TOKEN IDS_FILE MODE
--   IDS_FILE: lines "read <conversation id>" and "append <conversation id>"
--   MODE: mix (60% last-50 read, 30% append of a 1.5 KB message, 10% list page 1),
--         read, append, list or live (GET /health/live, the empty round trip)
-- Prints one line "WRK_JSON {...}": requests, duration, latency percentiles (microseconds),
-- socket errors and the count of each response status.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  mode = args[3] or "mix"
  reads, appends, statuses = {}, {}, {}
  for line in io.lines(args[2]) do
    local kind, cid = line:match("^(%a+) (.+)$")
    if kind == "read" then table.insert(reads, cid) else table.insert(appends, cid) end
  end
  math.randomseed(os.time() + thread_id * 7919)
  headers = { ["Authorization"] = "Bearer " .. args[1], ["Content-Type"] = "application/json" }
  -- 1,500 bytes of content: an assistant's typical answer in the benchmark's data
  body = '{"role":"assistant","content":"' .. string.rep("lorem ipsum dolor sit amet, ", 53) .. 'lorem ipsum."}'
end

function request()
  local op = mode
  if op == "mix" then
    local r = math.random(100)
    if r <= 60 then op = "read" elseif r <= 90 then op = "append" else op = "list" end
  end
  if op == "read" then
    return wrk.format("GET", "/conversations/" .. reads[math.random(#reads)] .. "?messages_limit=50", headers)
  elseif op == "append" then
    return wrk.format("POST", "/conversations/" .. appends[math.random(#appends)] .. "/messages", headers, body)
  elseif op == "list" then
    return wrk.format("GET", "/conversations?limit=20", headers)
  end
  return wrk.format("GET", "/health/live", headers)
end

function response(status, hdrs, b)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do table.insert(parts, string.format('"%d": %d', status, n)) end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d,'
    .. ' "socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, "statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.timeout, table.concat(parts, ", ")))
end
