-- wrk script: POST the JSON file named by WRK_BODY_FILE, with the 16-character task id
-- named by WRK_VARY replaced by a per-request counter (distinct keys spread the records
-- over the topic's partitions, as real traffic does; the body keeps its size). After wrk's
-- own report it prints one machine-readable line starting with WRK_JSON.
local file = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
local template = file:read("*a")
file:close()
local marker = os.getenv("WRK_VARY")
local first, last = string.find(template, marker, 1, true)
assert(first and #marker == 16, "WRK_VARY must be a 16-character substring of the body")
local head, tail = template:sub(1, first - 1), template:sub(last + 1)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = template

local thread_number = 0
local counter = (os.time() % 65536) * 65536 -- distinct ids from one run to the next

function setup(thread)
  thread_number = thread_number + 1
  thread:set("thread_number", thread_number)
end

function request()
  counter = counter + 1
  local body = head .. string.format("%08x%08x", thread_number, counter % 4294967296) .. tail
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "non_2xx": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "p999_us": %d, "max_us": %d, "mean_us": %f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
