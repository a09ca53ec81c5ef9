#!/bin/bash
# CPU per pass-through request of the lean engine (server.engine: lean) in two checkouts A and B, and nginx
# as a plain keep-alive reverse proxy, interleaved A B nginx / nginx B A per round: bench/ab-engine.sh's
# setup (proxy pinned to CPU 1, origin and wrk on CPU 0, 3 s warm-up, 10 s measured, utime+stime from
# /proc per 10,000 requests, and utime alone), for a before/after figure of one change.
# usage: bench/ab-lean.sh <checkout A> <checkout B> [rounds, default 3] [extra rempart config JSON]
#   e.g. git archive <rev> | tar -x -C /tmp/a && ln -s "$PWD/node_modules" /tmp/a/ && bench/ab-lean.sh /tmp/a . 4
set -euo pipefail
ROOTA=$(realpath "$1"); ROOTB=$(realpath "$2"); shift 2
ROUNDS=${1:-3}
EXTRA=${2:-'{}'}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
TMP=$(mktemp -d); chmod 755 "$TMP"
OP=$((20000 + RANDOM % 20000)); GP=$((OP + 1))
cat > "$TMP/origin.mjs" <<'JS'
import http from 'node:http';
const body = Buffer.alloc(100, 97);
http.createServer((req, res) => { res.writeHead(200, { 'content-length': 100 }); res.end(body); }).listen(Number(process.argv[2]), '127.0.0.1');
JS
for engine in lean; do
  python3 - "$engine" "$EXTRA" > "$TMP/$engine.json" <<PY
import json, sys
cfg = {"version":1,"listeners":[{"address":"127.0.0.1:$GP"}],"upstreams":[{"name":"origin","url":"http://127.0.0.1:$OP"}],
 "routes":[{"name":"default","path":"/*","upstream":"origin","class":"public"}],"admin":{"address":"off"},
 "logging":{"level":"warn","requests":False},"defense":{"rateLimit":{"mode":"off"},"bans":{"mode":"off"}},
 "server":{"engine":sys.argv[1]}}
cfg.update(json.loads(sys.argv[2]))
print(json.dumps(cfg))
PY
done
mkdir -p "$TMP/nginx"
cat > "$TMP/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/cb; proxy_temp_path $TMP/nginx/p; fastcgi_temp_path $TMP/nginx/f;
  uwsgi_temp_path $TMP/nginx/u; scgi_temp_path $TMP/nginx/s;
  keepalive_requests 1000000; keepalive_timeout 75s;
  upstream origin { server 127.0.0.1:$OP; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$GP backlog=4096;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
taskset -c 0 node "$TMP/origin.mjs" $OP & ORIGIN=$!
trap 'kill $ORIGIN 2>/dev/null; rm -rf "$TMP"' EXIT
cpu_of() { # pid and its children: utime+stime in ticks, then utime alone
  local total=0 user=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14+$15}' "/proc/$p/stat"))); user=$((user + $(awk '{print $14}' "/proc/$p/stat")))
  done
  echo "$total $user"
}
one() { # system
  local pid
  if [ "$1" = nginx ]; then
    taskset -c 1 "$NGINX" -p "$TMP/nginx" -e stderr -c "$TMP/nginx/nginx.conf" -g 'daemon off;' >"$TMP/nginx.log" 2>&1 &
    pid=$!
  else
    if [ "$1" = A ]; then R=$ROOTA; else R=$ROOTB; fi
    (cd "$R" && exec taskset -c 1 node bin/rempart.js --config "$TMP/lean.json" >"$TMP/$1.log" 2>&1) &
    pid=$!
  fi
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$GP) 2>/dev/null && break; sleep 0.1; done
  taskset -c 0 wrk -t1 -c64 -d3s "http://127.0.0.1:$GP/" >/dev/null
  local t0 r t1 u0 u1
  read -r t0 u0 < <(cpu_of $pid)
  r=$(taskset -c 0 wrk -t1 -c64 -d10s "http://127.0.0.1:$GP/" | awk '/requests in/ {print $1}')
  read -r t1 u1 < <(cpu_of $pid)
  if [ "$1" = nginx ]; then kill -QUIT $pid; else kill -INT $pid; fi
  wait $pid 2>/dev/null || true
  sleep 0.5
  python3 -c "print('$1', $r, round(($t1-$t0)/$(getconf CLK_TCK)/$r*10000, 4), round(($u1-$u0)/$(getconf CLK_TCK)/$r*10000, 4))" | tee -a "$TMP/runs.txt"
}
for i in $(seq "$ROUNDS"); do
  if [ $((i % 2)) -eq 1 ]; then order="A B nginx"; else order="nginx B A"; fi
  for s in $order; do one "$s"; done
done
python3 - "$TMP/runs.txt" <<'PY'
import sys, statistics as st
runs = [l.split() for l in open(sys.argv[1])]
by = {}
for name, reqs, cpu, user in runs: by.setdefault(name, []).append((int(reqs), float(cpu), float(user)))
print('system  CPU s/10k median [min–max]   req/s median (10 s runs)')
for name in ('nginx', 'A', 'B'):
    c = [x[1] for x in by.get(name, [])]; r = [x[0] / 10 for x in by.get(name, [])]
    if c: print(f'{name:6}  {st.median(c):.4f} [{min(c):.4f}–{max(c):.4f}]   {st.median(r):.0f}')
n = len(by.get('nginx', []))
for name in ('A', 'B'):
    ratios = [by[name][i][1] / by['nginx'][i][1] for i in range(min(n, len(by.get(name, []))))]
    if ratios: print(f'{name}/nginx CPU per request: median {st.median(ratios):.2f}x [{min(ratios):.2f}–{max(ratios):.2f}] over {len(ratios)} rounds')
if by.get('A') and by.get('B'):
    ratios = [by['B'][i][1] / by['A'][i][1] for i in range(min(len(by['A']), len(by['B'])))]
    print(f'B/A CPU per request: median {st.median(ratios):.2f}x [{min(ratios):.2f}–{max(ratios):.2f}]')
# User time alone (utime): what a change to the JavaScript moves; the kernel's share is the same syscalls.
print('user CPU s/10k median [min–max]:', ', '.join(
    f"{n} {st.median([x[2] for x in by[n]]):.4f} [{min(x[2] for x in by[n]):.4f}–{max(x[2] for x in by[n]):.4f}]"
    for n in ('nginx', 'A', 'B') if by.get(n)))
if by.get('A') and by.get('B'):
    ratios = [by['B'][i][2] / by['A'][i][2] for i in range(min(len(by['A']), len(by['B'])))]
    print(f'B/A user CPU per request: median {st.median(ratios):.2f}x [{min(ratios):.2f}–{max(ratios):.2f}]')
PY
