#!/bin/bash
# CPU per new TLS connection of two Rempart checkouts (the accept path: ClientHello peek, handshake,
# one request, close), in ABBA order as bench/ab-cpu.sh. Each run: a fresh Rempart with a TLS listener
# pinned to CPU 1 in front of a tiny Node origin on CPU 0; wrk (1 thread, 16 connections, every request
# `Connection: close`, so each is a new TLS connection) on CPU 0, 3 s of warm-up, then 10 s measured:
# utime+stime of the Rempart process from /proc per 1,000 connections.
# usage: bench/tls-accept.sh <checkout A> <checkout B> [pairs, default 3]   (loopback only; needs wrk, taskset, openssl)
set -euo pipefail
A=$(realpath "$1"); B=$(realpath "$2"); PAIRS=${3:-3}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
OP=$((20000 + RANDOM % 20000)); GP=$((OP + 1))
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat > "$TMP/origin.mjs" <<'JS'
import http from 'node:http';
const body = Buffer.alloc(100, 97);
http.createServer((req, res) => { res.writeHead(200, { 'content-length': 100 }); res.end(body); }).listen(Number(process.argv[2]), '127.0.0.1');
JS
cat > "$TMP/cfg.json" <<JSON
{"version":1,"listeners":[{"address":"127.0.0.1:$GP","tls":{"certFile":"$TMP/cert.pem","keyFile":"$TMP/key.pem"}}],
 "upstreams":[{"name":"origin","url":"http://127.0.0.1:$OP"}],
 "routes":[{"name":"default","path":"/*","upstream":"origin","class":"public"}],"admin":{"address":"off"},
 "logging":{"level":"warn","requests":false},
 "limits":{"maxConnectionsPerAddress":100000},
 "defense":{"rateLimit":{"mode":"off"},"bans":{"mode":"off"}}}
JSON
taskset -c 0 node "$TMP/origin.mjs" $OP & ORIGIN=$!
trap 'kill $ORIGIN 2>/dev/null; rm -rf "$TMP"' EXIT
one() { # checkout label
  (cd "$1" && exec taskset -c 1 node bin/rempart.js --config "$TMP/cfg.json" >"$TMP/$2.log" 2>&1) &
  local pid=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$GP) 2>/dev/null && break; sleep 0.1; done
  taskset -c 0 wrk -t1 -c16 -d3s -H 'Connection: close' "https://127.0.0.1:$GP/" >/dev/null
  local t0 r t1
  t0=$(awk '{print $14+$15}' /proc/$pid/stat)
  r=$(taskset -c 0 wrk -t1 -c16 -d10s -H 'Connection: close' "https://127.0.0.1:$GP/" | awk '/requests in/ {print $1}')
  t1=$(awk '{print $14+$15}' /proc/$pid/stat)
  kill -INT $pid; wait $pid 2>/dev/null || true
  python3 -c "print('$2', $r, 'connections', round(($t1-$t0)/$(getconf CLK_TCK)/$r*1000, 4), 'CPU s/1k')"
}
for i in $(seq "$PAIRS"); do
  if [ $((i % 2)) -eq 1 ]; then one "$A" A; one "$B" B; else one "$B" B; one "$A" A; fi
done
