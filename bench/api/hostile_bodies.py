#!/usr/bin/env python3
"""One hostile request against a running controller on 127.0.0.1; prints what it did to the
controller's RSS (VmRSS of --pid) and whether/when it answered. Bounded: at most --mib MiB
are sent, and at most 60 s.

  mode chunked   chunked body of 64 KiB chunks
  mode onechunk  chunked body announced as one chunk of --mib MiB
  mode longline  a request line that never ends (no CR/LF)
"""
import argparse, socket, threading, time

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--pid", type=int, required=True)
p.add_argument("--mode", choices=["chunked", "onechunk", "longline"], required=True)
p.add_argument("--mib", type=int, default=2048)
p.add_argument("--token")
a = p.parse_args()

def rss_mib():
    for line in open(f"/proc/{a.pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024

total = a.mib << 20
s = socket.create_connection(("127.0.0.1", a.port))
head = b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
if a.token:
    head += b"Authorization: Bearer " + a.token.encode() + b"\r\n"
head += b"Transfer-Encoding: chunked\r\n\r\n"
if a.mode == "chunked":
    first, piece = head, b"10000\r\n" + b"{" * 0x10000 + b"\r\n"
elif a.mode == "onechunk":
    first, piece = head + b"%x\r\n" % total, b"{" * (1 << 20)
else:
    first, piece = b"GET /", b"a" * (1 << 20)
answer = []
def read():
    try:
        answer.append((time.time(), s.recv(200)))
    except OSError as e:
        answer.append((time.time(), repr(e).encode()))
before = rss_mib()
peak = before
t0 = time.time()
s.sendall(first)
threading.Thread(target=read, daemon=True).start()
sent = 0
try:
    while sent < total and not answer and time.time() - t0 < 60:
        s.sendall(piece)
        sent += len(piece)
        if sent % (64 << 20) < len(piece):
            peak = max(peak, rss_mib())
except OSError as e:
    pass
time.sleep(0.5)
peak = max(peak, rss_mib())
status = answer[0][1].split(b"\r\n")[0].decode(errors="replace") if answer else "no answer"
when = f"{answer[0][0] - t0:.2f}s" if answer else "-"
print(f"{a.mode:9} token={'yes' if a.token else 'no ':3} sent={sent >> 20:5} MiB  answer={status!r} after {when}  "
      f"RSS {before} -> peak {peak} MiB, {rss_mib()} MiB after")
s.close()
