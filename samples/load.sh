#!/usr/bin/env bash
# Loads the sample server (samples/NativeHeap.Samples.Server) on loopback with wrk, once with
# Kestrel's default pool and once with NativeHeap (AddNativeHeapMemoryPool) per round, the order
# alternating between rounds. Each run: a fresh server, SECONDS of load (POSTs alternating
# /echo of 16 KiB and /upload of 64 KiB), then 30 s idle. Prints per run and as medians:
# requests/s, p99 latency, the server's CPU time per request (user + system: on a shared machine
# steadier than requests/s), peak RSS (VmHWM) and RSS 30 s after the load stopped (VmRSS).
# After each run, the server's /memory line (NativeHeap's and the GC's figures) says where the RSS is.
#   usage: bash samples/load.sh [SECONDS=6] [ROUNDS=3] [CONNECTIONS=32]
# wrk (Debian's package) is installed when missing. 3 rounds take about 4 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-6}; rounds=${2:-3}; connections=${3:-32}; idle=30; port=${PORT:-5091}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
dotnet build samples/NativeHeap.Samples.Server -c Release -v q -nologo >/dev/null
dll=samples/NativeHeap.Samples.Server/bin/Release/net10.0/NativeHeap.Samples.Server.dll
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

cat > "$work/mix.lua" <<'LUA'
local echo, upload
local n = 0
-- In init, not at the top: wrk sets the Host header wrk.format copies only after loading the script.
init = function(args)
  echo = wrk.format("POST", "/echo", { ["Content-Type"] = "application/octet-stream" }, string.rep("e", 16 * 1024))
  upload = wrk.format("POST", "/upload", { ["Content-Type"] = "application/octet-stream" }, string.rep("u", 64 * 1024))
end
request = function()
  n = n + 1
  if n % 2 == 0 then return echo else return upload end
end
LUA

cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$server/stat"; } # user + system
kib() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$server/status"; }
to_ms() { awk '{ v = $1; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } printf "%.2f", v }'; }

run() { # POOL: one run, appends "pool rps p99ms hwm_kib after_kib cpu_us_per_request" to $work/runs
  local pool=$1
  dotnet "$dll" --pool "$pool" --urls "http://127.0.0.1:$port" > "$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  local start_kib cpu0 cpu1; start_kib=$(kib VmRSS); cpu0=$(cpu_ms)
  wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$work/mix.lua" "http://127.0.0.1:$port" > "$work/wrk.txt"
  cpu1=$(cpu_ms)
  sleep "$idle"
  local hwm after; hwm=$(kib VmHWM); after=$(kib VmRSS)
  local memory; memory=$(curl -s "http://127.0.0.1:$port/memory")
  kill "$server"; wait "$server" 2>/dev/null || true; server=
  local rps p99 errors requests cpu
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$work/wrk.txt")
  requests=$(awk '/ requests in / { print $1 }' "$work/wrk.txt")
  cpu=$(awk -v c=$((cpu1 - cpu0)) -v n="$requests" 'BEGIN { printf "%.1f", c * 1000 / n }')
  p99=$(awk '$1 == "99%" { print $2 }' "$work/wrk.txt" | to_ms)
  errors=$(awk '/Non-2xx|Socket errors/' "$work/wrk.txt")
  printf '%-10s %10s req/s  p99 %7s ms  server CPU %6s us/req  RSS at start %7d KiB  peak %7d KiB  30 s after %7d KiB %s\n' \
    "$pool" "$rps" "$p99" "$cpu" "$start_kib" "$hwm" "$after" "$errors"
  echo "           $memory"
  echo "$pool $rps $p99 $hwm $after $cpu" >> "$work/runs"
}

echo "wrk -t2 -c$connections -d${seconds}s, /echo 16 KiB and /upload 64 KiB alternating; RSS read ${idle} s after the load; $(nproc) cores"
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then run default; run nativeheap; else run nativeheap; run default; fi
done

median() { awk -v p="$1" -v c="$2" '$1 == p { print $c }' "$work/runs" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
printf '%-22s %12s %12s %8s\n' "median of $rounds" default nativeheap ratio
for col in "2 req/s" "3 p99_ms" "6 server_CPU_us/req" "4 peak_RSS_KiB" "5 RSS_30s_after_KiB"; do
  set -- $col
  d=$(median default "$1"); n=$(median nativeheap "$1")
  printf '%-22s %12s %12s %8.3f\n' "$2" "$d" "$n" "$(awk -v a="$n" -v b="$d" 'BEGIN { print a / b }')"
done
