"""bench/py_client.py - a Python asyncio client of the streaming benchmarks,
stdlib only: raw HTTP/1.1 over asyncio streams, chunked transfer decoding,
SSE split on blank lines, json.loads of every chunk.

    python3 bench/py_client.py BASE_URL STREAMS CHUNKS

Checks every stream like bench/client.lua (role chunk, "t0 ", "t1 ", ... in
order, finish_reason "stop", usage.completion_tokens == CHUNKS, CHUNKS+3
chunks, one [DONE]) and prints one RESULT line; exit status 1 on any failure.
cpu_s is resource.getrusage(RUSAGE_SELF) user+system across the streaming
phase; TTFT from the batch start to each first token.
"""
import asyncio
import json
import math
import resource
import sys
import time
from urllib.parse import urlsplit

BODY = (b'{"model":"bench","messages":[{"role":"user","content":"hi"}],'
        b'"stream":true,"stream_options":{"include_usage":true}}')


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def one(host, port, path, nchunks, i, t0, ttft):
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    writer.write((f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                  "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                  f"Authorization: Bearer x\r\nContent-Length: {len(BODY)}\r\n"
                  "Connection: close\r\n\r\n").encode() + BODY)
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"status line {status!r}")
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
            chunked = True
    n = tok = done = 0
    usage = finish = None
    buf = b""
    while True:
        if chunked:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            data = await reader.readexactly(size + 2)
            buf += data[:-2]
        else:
            data = await reader.read(65536)
            if not data:
                break
            buf += data
        while True:
            k = buf.find(b"\n\n")
            if k < 0:
                break
            event, buf = buf[:k], buf[k + 2:]
            payload = b"\n".join(l[5:].lstrip(b" ") if l.startswith(b"data:") else b""
                                 for l in event.split(b"\n") if l.startswith(b"data:"))
            if payload == b"[DONE]":
                done += 1
                continue
            chunk = json.loads(payload)
            n += 1
            ch = chunk["choices"]
            if ch:
                content = ch[0]["delta"].get("content")
                if content:
                    if content != f"t{tok} ":
                        raise RuntimeError(f"token {tok} is {content}")
                    if tok == 0:
                        ttft[i] = (time.perf_counter() - t0) * 1000
                    tok += 1
                if ch[0].get("finish_reason"):
                    finish = ch[0]["finish_reason"]
            if chunk.get("usage"):
                usage = chunk["usage"]
    writer.close()
    if tok != nchunks or n != nchunks + 3 or finish != "stop" or done != 1:
        raise RuntimeError(f"{tok} tokens, {n} chunks, finish {finish}, done {done}")
    if not usage or usage.get("completion_tokens") != nchunks:
        raise RuntimeError("no usage chunk")
    return n


def percentile(xs, p):
    if not xs:
        return 0.0
    i = math.ceil(p * len(xs))
    return xs[max(0, min(len(xs) - 1, i - 1))]


async def main():
    base, nstreams, nchunks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    u = urlsplit(base)
    path = u.path.rstrip("/") + "/chat/completions"
    ttft = [None] * nstreams
    c0 = cpu()
    t0 = time.perf_counter()
    res = await asyncio.gather(*(one(u.hostname, u.port, path, nchunks, i, t0, ttft)
                                 for i in range(nstreams)), return_exceptions=True)
    wall = time.perf_counter() - t0
    c = cpu() - c0
    errors = [r for r in res if isinstance(r, BaseException)]
    for e in errors[:5]:
        print(f"py: stream failed: {e!r}", file=sys.stderr)
    total = sum(r for r in res if not isinstance(r, BaseException))
    tt = sorted(x for x in ttft if x is not None)
    print(f'RESULT {{"client":"python-asyncio","ok":{"false" if errors else "true"},'
          f'"streams":{nstreams},"chunks":{total},"errors":{len(errors)},"cpu_s":{c:.6f},'
          f'"wall_s":{wall:.6f},"ttft_p50_ms":{percentile(tt, 0.5):.3f},'
          f'"ttft_p99_ms":{percentile(tt, 0.99):.3f}}}')
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
