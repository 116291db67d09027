-- wrk script: POST /v1/echo with the benchmark's fixed JSON body (same request as the peer's).
wrk.method = "POST"
wrk.body = '{"message":"hello world","repeat":1}'
wrk.headers["Content-Type"] = "application/json"
