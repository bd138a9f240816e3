-- wrk: the soak's mix, one request of each kind in turn (bench/soak.sh).
local body = string.rep("x", 16384)
local requests = {
  wrk.format("GET", "/"),
  wrk.format("GET", "/flask/"),
  wrk.format("POST", "/upload", { ["Content-Type"] = "application/octet-stream" }, body),
  wrk.format("GET", "/stream"),
}
local n = 0
request = function()
  n = n + 1
  return requests[(n % #requests) + 1]
end
