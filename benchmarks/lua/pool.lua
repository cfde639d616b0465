-- Produces step-up codes through the real flow: a pushed request (POST /par), then the
-- browser's GET /authorize, which answers at once with a code because the user proved the
-- level moments ago (reuse within max_age). Lines of BENCH_CHALLENGES ("state<TAB>challenge")
-- are split across threads as in exchange.lua; each code is written to BENCH_OUT.<tid> as
-- "code<TAB>state", the state naming the PKCE verifier the harness keeps.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

setup = common.setup

local pending = {}   -- request_uris waiting for their GET /authorize
local challenges = {}
local next_index = 1
local out = nil
local par_prefix = nil
local authorize_prefix = nil
local auth = nil
codes = 0

function init(args)
  challenges = common.pairs_for(os.getenv("BENCH_CHALLENGES"), tid)
  out = assert(io.open(os.getenv("BENCH_OUT") .. "." .. tid, "w"))
  par_prefix = common.read_file(os.getenv("BENCH_BODY_FILE"))
  authorize_prefix = os.getenv("BENCH_AUTHORIZE_PATH")
  auth = os.getenv("BENCH_AUTHORIZATION")
end

function request()
  local uri = table.remove(pending)
  if uri then
    return wrk.format("GET", authorize_prefix .. uri, {}, nil)
  end
  local entry = challenges[next_index]
  if not entry then
    -- Every challenge is used: idle on a cheap endpoint until wrk's time is up.
    return wrk.format("GET", "/healthz", {}, nil)
  end
  next_index = next_index + 1
  local body = par_prefix .. "&state=" .. entry[1] .. "&code_challenge=" .. entry[2]
  return wrk.format("POST", "/par", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = auth,
  }, body)
end

function response(status, headers, body)
  if status == 201 then
    local uri = body:match('"request_uri":"([^"]+)"')
    if uri then
      table.insert(pending, uri)
    end
  elseif status == 303 then
    local location = headers["location"] or headers["Location"] or ""
    local code = location:match("[?&]code=([^&]+)")
    local state = location:match("[?&]state=([^&]+)")
    if code and state then
      out:write(code, "\t", state, "\n")
      out:flush()
      codes = codes + 1
    end
  end
end

function done(summary, latency, requests)
  common.extra = { codes = common.total("codes") }
  common.done(summary, latency, requests)
end
