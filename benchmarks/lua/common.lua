-- Shared by every script: the result of a run as one JSON object, written by `done` to the
-- file named in BENCH_RESULT (wrk's own text output has no p99.9).
local common = {}

function common.read_file(path)
  local handle = assert(io.open(path, "rb"))
  local text = handle:read("*a")
  handle:close()
  return text
end

function common.done(summary, latency, requests)
  local errors = summary.errors
  local parts = {
    string.format('"requests": %d', summary.requests),
    string.format('"duration_us": %d', summary.duration),
    string.format('"bytes": %d', summary.bytes),
    string.format('"errors_status": %d', errors.status),
    string.format('"errors_connect": %d', errors.connect),
    string.format('"errors_read": %d', errors.read),
    string.format('"errors_write": %d', errors.write),
    string.format('"errors_timeout": %d', errors.timeout),
  }
  for _, p in ipairs({ 50, 90, 99, 99.9 }) do
    table.insert(parts, string.format('"p%s_us": %d', tostring(p), latency:percentile(p)))
  end
  table.insert(parts, string.format('"max_us": %d', latency.max))
  local extra = common.extra or {}
  for name, value in pairs(extra) do
    table.insert(parts, string.format('"%s": %d', name, value))
  end
  local out = assert(io.open(os.getenv("BENCH_RESULT"), "w"))
  out:write("{" .. table.concat(parts, ", ") .. "}\n")
  out:close()
end

-- wrk calls `setup` once per thread, before `init`: threads get ids 0 .. n-1 as global `tid`.
common.threads = {}
function common.setup(thread)
  thread:set("tid", #common.threads)
  table.insert(common.threads, thread)
end

-- This thread's share of a file of "a<TAB>b" lines: lines tid, tid+n, tid+2n ... (n threads).
function common.pairs_for(path, tid)
  local nthreads = tonumber(os.getenv("BENCH_THREADS"))
  local mine, line_no = {}, 0
  for line in io.lines(path) do
    if line_no % nthreads == tid then
      local a, b = line:match("^([^\t]+)\t([^\t]+)$")
      table.insert(mine, { a, b })
    end
    line_no = line_no + 1
  end
  return mine
end

-- A counter every thread keeps as a global, summed over the threads (in `done`).
function common.total(name)
  local total = 0
  for _, thread in ipairs(common.threads) do
    total = total + thread:get(name)
  end
  return total
end

return common
