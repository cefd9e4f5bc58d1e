-- The realistic mix of docs/benchmarks.md for wrk (one thread): 200 agents, 2,000 lock paths,
-- per 100 requests: chat read (limit 50) 14, lock check 14, checkpoint read 10, chat post 8,
-- agent list 8, work bundle 8, heartbeat 6, lock acquire 6, task list (todo) 6, checkpoint save 5,
-- agent state 5, health 4, task create 3, direct message 3.
--
--   wrk -t1 -c64 -d10s --latency -s bench/mix.lua http://127.0.0.1:PORT -- TAG [MAX_REQUESTS [OP]]
--
-- OP (one of the names of WEIGHTS, e.g. `work`) sends only that operation: its CPU per request
-- alone (docs/benchmarks.md).
-- TAG goes into the agent ids and lock paths (bench/gateway_bench.py registers the agents first).
-- Each thread stops by itself after MAX_REQUESTS answers (default 1,000,000). done() prints one
-- line `MIXJSON {...}`: requests, duration, latency percentiles and the answers counted by status.

local AGENTS = 200
local PATHS = 2000
local LOCK_TTL_MS = 5000

local WEIGHTS = {
  {"chat_read", 14}, {"lock_check", 14}, {"checkpoint_read", 10}, {"chat_post", 8},
  {"agent_list", 8}, {"work", 8}, {"heartbeat", 6}, {"lock_acquire", 6}, {"task_list", 6},
  {"checkpoint_save", 5}, {"agent_state", 5}, {"health", 4}, {"task_create", 3}, {"dm", 3},
}

local slots = {}
for _, w in ipairs(WEIGHTS) do
  for _ = 1, w[2] do slots[#slots + 1] = w[1] end
end
assert(#slots == 100, "the mix must add up to 100")

local tag = "run"
local max_requests = 1000000
local only = nil
local n = 0
local answers = 0
statuses = {}  -- a global: done() reads it from each thread with thread:get
local json_headers = {["Content-Type"] = "application/json"}
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  if args[1] then tag = args[1] end
  if args[2] then max_requests = tonumber(args[2]) end
  if args[3] then only = args[3] end
  math.randomseed(42)
end

local function agent(i)
  return "mix-" .. tag .. "-" .. i
end

local function lock_path(i)
  return "src%2Fmix-" .. tag .. "%2Ff" .. i .. ".ts"
end

local function post(path, body)
  return wrk.format("POST", path, json_headers, body)
end

function request()
  n = n + 1
  local op = only or slots[math.random(100)]
  local a = agent(math.random(AGENTS))
  if op == "chat_read" then
    return wrk.format("GET", "/coordinator/chat?limit=50")
  elseif op == "lock_check" then
    return wrk.format("GET", "/lock/" .. lock_path(math.random(PATHS)) .. "/check")
  elseif op == "checkpoint_read" then
    return wrk.format("GET", "/agent/" .. a .. "/checkpoint")
  elseif op == "chat_post" then
    return post("/coordinator/chat",
      '{"author":"' .. a .. '","message":"mix message ' .. n .. '","authorType":"agent"}')
  elseif op == "agent_list" then
    return wrk.format("GET", "/coordinator/agents")
  elseif op == "work" then
    return wrk.format("GET", "/coordinator/work?agentId=" .. a)
  elseif op == "heartbeat" then
    return post("/coordinator/agents",
      '{"agentId":"' .. a .. '","status":"active","currentTask":"mix ' .. n .. '"}')
  elseif op == "lock_acquire" then
    return post("/lock/" .. lock_path(math.random(PATHS)) .. "/lock",
      '{"agentId":"' .. a .. '","reason":"mix","ttlMs":' .. LOCK_TTL_MS .. '}')
  elseif op == "task_list" then
    return wrk.format("GET", "/coordinator/tasks?status=todo")
  elseif op == "checkpoint_save" then
    return post("/agent/" .. a .. "/checkpoint",
      '{"conversationSummary":"mix ' .. n .. '","currentTask":"Benchmarking","pendingWork":["more"]}')
  elseif op == "agent_state" then
    return wrk.format("GET", "/agent/" .. a .. "/state")
  elseif op == "health" then
    return wrk.format("GET", "/health")
  elseif op == "task_create" then
    return post("/coordinator/tasks",
      '{"title":"mix task ' .. n .. '","createdBy":"' .. a .. '","priority":"medium"}')
  end
  return post("/agent/" .. agent(math.random(AGENTS)) .. "/messages",
    '{"from":"' .. a .. '","message":"dm ' .. n .. '"}')
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  answers = answers + 1
  if answers >= max_requests then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local counts = {}
  for _, t in ipairs(threads) do
    local c = t:get("statuses")
    for k, v in pairs(c) do counts[k] = (counts[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(counts) do parts[#parts + 1] = string.format('"%d":%d', k, v) end
  local e = summary.errors
  io.write(string.format(
    'MIXJSON {"requests":%d,"duration_us":%d,"bytes":%d,"mean_us":%.1f,"p50_us":%d,"p90_us":%d,'
      .. '"p99_us":%d,"max_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,'
      .. '"timeout":%d},"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes, latency.mean, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, e.connect, e.read, e.write,
    e.status, e.timeout, table.concat(parts, ",")))
end
