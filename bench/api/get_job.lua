-- wrk script: GET one job with a bearer token.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
