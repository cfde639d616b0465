-- Token exchange: every request redeems a different code of the pool (BENCH_POOL_FILE, lines
-- "code<TAB>verifier"), never one twice. Thread k of n takes lines k, k+n, k+2n ...
-- A thread that runs out sends a code that cannot exist and counts it in `exhausted`,
-- so a pool too small shows in the result instead of turning into replays.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

local pool = {}
local next_index = 1
exhausted = 0
local prefix = nil

function init(args)
  local nthreads = tonumber(os.getenv("BENCH_THREADS"))
  local line_no = 0
  for line in io.lines(os.getenv("BENCH_POOL_FILE")) do
    if line_no % nthreads == tid then
      local code, verifier = line:match("^([^\t]+)\t([^\t]+)$")
      table.insert(pool, { code, verifier })
    end
    line_no = line_no + 1
  end
  prefix = common.read_file(os.getenv("BENCH_BODY_FILE"))
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Authorization"] = os.getenv("BENCH_AUTHORIZATION")
end

function request()
  local entry = pool[next_index]
  local code, verifier
  if entry then
    next_index = next_index + 1
    code, verifier = entry[1], entry[2]
  else
    exhausted = exhausted + 1
    code, verifier = "pool-exhausted", string.rep("x", 43)
  end
  local body = prefix .. "&code=" .. code .. "&code_verifier=" .. verifier
  return wrk.format("POST", nil, nil, body)
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("exhausted")
  end
  common.extra = { exhausted = total }
  common.done(summary, latency, requests)
end
