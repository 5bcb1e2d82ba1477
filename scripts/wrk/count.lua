-- wrk script: one fixed request from the environment, counting answers by status class.
--   METHOD (GET), REQ_PATH (/), BODY (none), CONTENT_TYPE, AUTHORIZATION, COOKIE
--   EXPECT: the status that counts as success (default 200)
-- Prints one RESULT line in the same shape as poll.lua (ok = expected status).
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, other, failed = 0, 0, 0
  expect = tonumber(os.getenv("EXPECT") or "200")
  local headers = {}
  if os.getenv("CONTENT_TYPE") then headers["Content-Type"] = os.getenv("CONTENT_TYPE") end
  if os.getenv("AUTHORIZATION") then headers["Authorization"] = os.getenv("AUTHORIZATION") end
  if os.getenv("COOKIE") then headers["Cookie"] = os.getenv("COOKIE") end
  req = wrk.format(os.getenv("METHOD") or "GET", os.getenv("REQ_PATH") or "/", headers, os.getenv("BODY"))
end

function request()
  return req
end

function response(status, hdrs, body)
  if status == expect then
    ok = ok + 1
  elseif status >= 500 then
    failed = failed + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local o, x, f = 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); x = x + t:get("other"); f = f + t:get("failed")
  end
  io.write(string.format("RESULT requests=%d seconds=%.2f rps=%.0f p50_us=%d p99_us=%d p999_us=%d pending=%d slow_down=0 other=%d server_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), o, x, f,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
