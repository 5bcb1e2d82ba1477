-- wrk script: device-code polls cycling through the codes in $CODES_FILE (one per line) for
-- client $CLIENT_ID, with $WRK_THREADS equal to wrk's -t. Each wrk thread takes every Nth code, so no code is polled by two threads.
-- Counts the response mix and prints one RESULT line.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  -- Each thread has its own Lua state: the thread count comes from the environment.
  local nthreads = tonumber(os.getenv("WRK_THREADS") or "2")
  codes = {}
  local i = 0
  for line in io.lines(os.getenv("CODES_FILE")) do
    if line ~= "" then
      if i % nthreads == id then table.insert(codes, line) end
      i = i + 1
    end
  end
  idx = 0
  pending, slow, other, failed = 0, 0, 0, 0
  prefix = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&client_id=" .. os.getenv("CLIENT_ID") .. "&device_code="
  headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
end

function request()
  idx = idx % #codes + 1
  return wrk.format("POST", os.getenv("POLL_PATH") or "/oauth/token", headers, prefix .. codes[idx])
end

function response(status, hdrs, body)
  if string.find(body, "authorization_pending", 1, true) then
    pending = pending + 1
  elseif string.find(body, "slow_down", 1, true) then
    slow = slow + 1
  elseif status >= 500 then
    failed = failed + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local p, s, o, f = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    p = p + t:get("pending"); s = s + t:get("slow"); o = o + t:get("other"); f = f + t:get("failed")
  end
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status
  io.write(string.format("RESULT requests=%d seconds=%.2f rps=%.0f p50_us=%d p99_us=%d p999_us=%d pending=%d slow_down=%d other=%d server_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), p, s, o, f,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
