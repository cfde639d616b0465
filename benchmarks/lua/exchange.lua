-- Token exchange: every request redeems a different code of the pool (BENCH_POOL_FILE, lines
-- "code<TAB>verifier"), never one twice. Thread k of n takes lines k, k+n, k+2n ...
-- A thread that runs out sends a code that cannot exist and counts it in `exhausted`,
-- so a pool too small shows in the result instead of turning into replays.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

setup = common.setup

local pool = {}
local next_index = 1
exhausted = 0
local prefix = nil

function init(args)
  pool = common.pairs_for(os.getenv("BENCH_POOL_FILE"), tid)
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
  common.extra = { exhausted = common.total("exhausted") }
  common.done(summary, latency, requests)
end
