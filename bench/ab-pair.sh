#!/bin/bash
# CPU per pass-through request of the lean engine in two checkouts A and B measured at the same time: both
# gateways pinned to CPU 1, each driven by its own wrk (64 connections) on CPU 0 with one shared origin, over
# windows of 10 s; utime+stime from /proc per 10,000 requests, and B/A per window. On a machine shared with
# other work both see the same interference in each window, where bench/ab-lean.sh's sequential rounds
# (10 s of A, then 10 s of B) see different moments of it: here the ratio holds within a few percent while
# a run's absolute figures swing by half. The slots are not quite equal (the A gateway starts first): run
# it both ways (A B, then B A) and take the geometric mean of B/A and 1/(A/B).
# usage: [ENGINE=node] bench/ab-pair.sh <checkout A> <checkout B> [windows, default 6]   (ENGINE: lean by default)
#   e.g. git archive <rev> | tar -x -C /tmp/a && ln -s "$PWD/node_modules" /tmp/a/ && bench/ab-pair.sh /tmp/a . 8
set -euo pipefail
ROOTA=$(realpath "$1"); ROOTB=$(realpath "$2")
N=${3:-6}
ENGINE=${ENGINE:-lean}
case $ENGINE in lean | node) ;; *) echo "ENGINE takes lean or node" >&2; exit 2 ;; esac
TMP=$(mktemp -d); chmod 755 "$TMP"
# Three free ports in a row (the origin, A, B).
while :; do
  OP=$((20000 + RANDOM % 20000)); PA=$((OP + 1)); PB=$((OP + 2))
  (exec 3<>/dev/tcp/127.0.0.1/$OP) 2>/dev/null || (exec 3<>/dev/tcp/127.0.0.1/$PA) 2>/dev/null ||
    (exec 3<>/dev/tcp/127.0.0.1/$PB) 2>/dev/null || break
done
cat > "$TMP/origin.mjs" <<'JS'
import http from 'node:http';
const body = Buffer.alloc(100, 97);
http.createServer((req, res) => { res.writeHead(200, { 'content-length': 100 }); res.end(body); }).listen(Number(process.argv[2]), '127.0.0.1');
JS
for p in $PA $PB; do
  cat > "$TMP/$p.json" <<JSON
{"version":1,"listeners":[{"address":"127.0.0.1:$p"}],"upstreams":[{"name":"origin","url":"http://127.0.0.1:$OP"}],
 "routes":[{"name":"default","path":"/*","upstream":"origin","class":"public"}],"admin":{"address":"off"},
 "logging":{"level":"warn","requests":false},"defense":{"rateLimit":{"mode":"off"},"bans":{"mode":"off"}},
 "server":{"engine":"$ENGINE"},"state":{"file":"off"}}
JSON
done
taskset -c 0 node "$TMP/origin.mjs" $OP & ORIGIN=$!
(cd "$ROOTA" && exec taskset -c 1 node bin/rempart.js --config "$TMP/$PA.json" >"$TMP/A.log" 2>&1) & GA=$!
(cd "$ROOTB" && exec taskset -c 1 node bin/rempart.js --config "$TMP/$PB.json" >"$TMP/B.log" 2>&1) & GB=$!
trap 'kill $ORIGIN $GA $GB 2>/dev/null; rm -rf "$TMP"' EXIT
for p in $PA $PB; do for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done; done
# A port taken between the check above and the listen (another run's), or a checkout that does not start.
for g in A B; do
  pid=$GA; [ $g = B ] && pid=$GB
  if ! kill -0 "$pid" 2>/dev/null; then echo "gateway $g did not start:" >&2; cat "$TMP/$g.log" >&2; exit 1; fi
done
cpu() { awk '{print $14+$15, $14}' "/proc/$1/stat"; }
taskset -c 0 wrk -t1 -c64 -d3s "http://127.0.0.1:$PA/" >/dev/null & W1=$!
taskset -c 0 wrk -t1 -c64 -d3s "http://127.0.0.1:$PB/" >/dev/null & W2=$!
wait $W1 $W2
HZ=$(getconf CLK_TCK)
for i in $(seq "$N"); do
  read -r ta0 ua0 < <(cpu $GA); read -r tb0 ub0 < <(cpu $GB)
  taskset -c 0 wrk -t1 -c64 -d10s "http://127.0.0.1:$PA/" > "$TMP/wa" & W1=$!
  taskset -c 0 wrk -t1 -c64 -d10s "http://127.0.0.1:$PB/" > "$TMP/wb" & W2=$!
  wait $W1 $W2
  read -r ta1 ua1 < <(cpu $GA); read -r tb1 ub1 < <(cpu $GB)
  ra=$(awk '/requests in/ {print $1}' "$TMP/wa"); rb=$(awk '/requests in/ {print $1}' "$TMP/wb")
  python3 -c "
a=($ta1-$ta0)/$HZ/$ra*1e4; b=($tb1-$tb0)/$HZ/$rb*1e4; ua=($ua1-$ua0)/$HZ/$ra*1e4; ub=($ub1-$ub0)/$HZ/$rb*1e4
print(f'window $i: A {$ra} req {a:.4f} CPU s/10k (user {ua:.4f})  B {$rb} req {b:.4f} (user {ub:.4f})  B/A {b/a:.3f} user {ub/ua:.3f}')" |
    tee -a "$TMP/runs.txt"
done
python3 - "$TMP/runs.txt" <<'PY'
import re, statistics as st, sys
rows = open(sys.argv[1]).read().splitlines()
t = [float(re.search(r'B/A ([0-9.]+)', r).group(1)) for r in rows]
u = [float(re.search(r'user ([0-9.]+)$', r).group(1)) for r in rows]
print(f'B/A CPU per request: median {st.median(t):.3f} [{min(t):.3f}-{max(t):.3f}], '
      f'user {st.median(u):.3f} [{min(u):.3f}-{max(u):.3f}] over {len(t)} windows')
PY
