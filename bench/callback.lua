-- wrk script for bench/run.sh: every request is a distinct DingTalk group text callback.
--
-- Arguments (after `--` on the wrk command line):
--   1 mode      "valid": timestamp + sign from the table (one line per request, never reused)
--               "forged": a fresh timestamp, a well-formed but wrong sign (expect 401)
--   2 table     file of fixed-length lines "<13-digit ms> <44-char sign>\n" (bench/signs.py)
--   3 start     first table line this wrk run may use
--   4 avail     number of lines it may use, split evenly between threads
--   5 text      message text after the stripped @-mention, e.g. "/info"
--   6 groups    conversationIds are cidGen{i}== for i in 0..groups-1, spread round-robin
--   7 hook      sessionWebhook URL
--   8 expires   sessionWebhookExpiredTime (ms)
--   9 nthreads  wrk -t value
--  10 now_ms    base timestamp for forged requests
--
-- done() prints one machine-readable line starting with "BENCH " for run.sh.

local LINE = 59
local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

function init(args)
   mode = args[1]
   local path = args[2]
   local start = tonumber(args[3])
   local avail = tonumber(args[4])
   text = args[5]
   groups = tonumber(args[6])
   hook = args[7]
   expires = args[8]
   local nthreads = tonumber(args[9])
   now_ms = tonumber(args[10])
   slice = math.floor(avail / nthreads)
   first = start + tid * slice
   used = 0
   exhausted = 0
   next_index = first
   if mode == "valid" then
      table_file = assert(io.open(path, "rb"))
      assert(table_file:seek("set", first * LINE))
   end
   headers = { ["Content-Type"] = "application/json" }
   -- base64 of 32 bytes that are not the MAC: right shape, fails only at the compare.
   forged_sign = "Zm9yZ2VkLXNpZ25hdHVyZS0wMTIzNDU2Nzg5YWJjZGU="
   last_ts, last_sign = nil, nil
end

local function body(idx, ts)
   local g = idx % groups
   return '{"conversationId":"cidGen' .. g .. '==",'
      .. '"atUsers":[{"dingtalkId":"$:LWCP_v1:$benchrobot"}],'
      .. '"chatbotCorpId":"dingbenchcorp","chatbotUserId":"$:LWCP_v1:$benchrobot",'
      .. '"msgId":"msgBench' .. mode .. idx .. '==",'
      .. '"senderNick":"张小明","isAdmin":false,"senderStaffId":"user123",'
      .. '"sessionWebhookExpiredTime":' .. expires .. ','
      .. '"createAt":' .. ts .. ','
      .. '"senderCorpId":"dingbenchcorp","conversationType":"2",'
      .. '"senderId":"$:LWCP_v1:$benchsender",'
      .. '"conversationTitle":"压测群' .. g .. '","isInAtList":true,'
      .. '"sessionWebhook":"' .. hook .. '",'
      .. '"text":{"content":" ' .. text .. '"},'
      .. '"robotCode":"dingdemoappkey","msgtype":"text"}'
end

function request()
   local idx = first + used
   local ts, sign
   if mode == "valid" then
      local line = nil
      if used < slice then
         line = table_file:read(LINE)
      end
      if line and #line == LINE then
         ts = string.sub(line, 1, 13)
         sign = string.sub(line, 15, 58)
         last_ts, last_sign = ts, sign
         used = used + 1
         next_index = first + used
      else
         -- Out of pre-computed signatures: resend the last pair (dingbot answers 403
         -- "replayed"), count it, and let run.sh flag the run.
         exhausted = exhausted + 1
         ts, sign = last_ts or "0000000000000", last_sign or forged_sign
      end
   else
      used = used + 1
      ts = string.format("%d", now_ms + used % 600000)
      sign = forged_sign
   end
   headers["timestamp"] = ts
   headers["sign"] = sign
   return wrk.format("POST", nil, headers, body(idx, ts))
end

function done(summary, latency, requests)
   local max_next, exh = 0, 0
   for _, t in ipairs(threads) do
      local n = t:get("next_index") or 0
      if n > max_next then max_next = n end
      exh = exh + (t:get("exhausted") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d timeouts=%d "
         .. "connect_err=%d read_err=%d write_err=%d next_index=%d exhausted=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.status, e.timeout, e.connect, e.read, e.write, max_next, exh))
end
