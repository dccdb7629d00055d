-- wrk script: POST /api/v1/jobs with a valid inline recipe.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.body = [[{"server":{"serial":"SN-BENCH"},"recipe":{"task_target":"provision-linux.target","target_disk":"/dev/vda","boot_mode":"bios","hostname":"bench","image":{"url":"http://127.0.0.1:1/rootfs.tar","digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},"partition_layout":[{"size":"rest","type_guid":"0fc63daf-8483-4772-8e79-3d69d8477de4","format":"ext4","label":"root"}]}}]]
