-- wrk script: POST the body in $WRK_BODY with Content-Type $WRK_CONTENT_TYPE on every request,
-- and print one line "BENCH_JSON {...}" with the totals serving.py reads.
-- Latencies are in microseconds; "status" counts answers with HTTP status > 399.

wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY") or ""
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/x-www-form-urlencoded"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(99.0)))
end
