-- POSTs one request per id in $BENCH_IDS (one integer per line), in order. The body of id k is
-- 512 floats made from k alone (the first is k), so a repeated id is a repeated input and
-- distinct ids are distinct inputs. The id file is longer
-- than the run (a stream, never replayed: replaying would inflate the repeat share); running
-- out is reported. Counts the X-Cache header of every answer.
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do ids[#ids + 1] = tonumber(line) end
local width = tonumber(os.getenv("BENCH_WIDTH") or "512")
-- "predict": {"inputs": [[...]]}; "v2": the Open Inference Protocol's {"inputs": [{"name": "x", ...}]}
local format = os.getenv("BENCH_FORMAT") or "predict"
local cache = {}
local i = 0
counts = {}  -- global: done() reads it with thread:get
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local function body(k)
  local b = cache[k]
  if b == nil then
    local parts = {}
    -- The first value is the id itself, so no two ids share a body (the hash below repeats
    -- every 10007 ids); the rest fill the vector.
    parts[1] = string.format("%d", k)
    for j = 2, width do
      parts[j] = string.format("%.4f", ((k * 2654435761 + j * 40503) % 10007) / 10007)
    end
    if format == "v2" then
      b = '{"inputs":[{"name":"x","shape":[1,' .. width .. '],"datatype":"FP32","data":[' ..
          table.concat(parts, ",") .. ']}]}'
    else
      b = '{"inputs":[[' .. table.concat(parts, ",") .. ']]}'
    end
    cache[k] = b
  end
  return b
end

request = function()
  i = i + 1
  if i > #ids then
    counts["stream-exhausted"] = 1
    i = 1
  end
  return wrk.format(nil, nil, nil, body(ids[i]))
end

response = function(status, headers, body)
  local c = headers["X-Cache"] or headers["x-cache"] or "none"
  counts[c] = (counts[c] or 0) + 1
end

local threads = {}
setup = function(thread) threads[#threads + 1] = thread end

done = function(summary, latency, requests)
  for _, thread in ipairs(threads) do
    local c = thread:get("counts")
    for k, v in pairs(c) do io.write(string.format("x-cache %s %d\n", k, v)) end
  end
end
