#!/usr/bin/env bash
# What recording costs, side by side in one run: each program plain, under heaptrack (Debian's,
# which records a stack for every call) and under `nativeheap record` as a user runs it (the
# packed tool, installed with `dotnet tool install`). Several rounds, interleaved so that a busy
# moment of the machine hits all three alike; the tables give medians of wall time and of CPU
# time (user + sys of the program and everything it waited for: heaptrack's interpreter, the
# tool's own reading of the trace), and each tool's output size (all files it wrote).
#
#   benchmarks/record-overhead.sh [ROUNDS]      (default 3; prints markdown on stdout)
#
# NATIVEHEAP=PATH uses that nativeheap instead of packing src/NativeHeap.Cli;
# MIMALLOC_BENCH=DIR names mimalloc-bench's sources (default: ../shared/mimalloc-bench);
# PYTHON=PATH the Python (default /usr/bin/python3: a real binary, not a pyenv shim that execs one).
set -euo pipefail

rounds=${1:-3}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [ROUNDS]   (ROUNDS a positive number, not '$rounds')" >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bench=${MIMALLOC_BENCH:-$repo/../shared/mimalloc-bench}
python=${PYTHON:-/usr/bin/python3}

need() { command -v "$1" >/dev/null || { echo "error: $1 is missing${2:+ ($2)}" >&2; exit 1; }; }
if ! command -v heaptrack >/dev/null; then
    if [[ $(id -u) == 0 ]]; then apt-get install -y -qq heaptrack >/dev/null || { apt-get update -qq && apt-get install -y -qq heaptrack >/dev/null; }
    else echo "error: heaptrack is missing: sudo apt-get install heaptrack" >&2; exit 1; fi
fi
need heaptrack; need gcc; need g++; need dotnet
[[ -x /usr/bin/time ]] || { echo "error: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
[[ -x $python ]] || { echo "error: no Python at $python (set PYTHON=)" >&2; exit 1; }
[[ -f $bench/mstress/mstress.c ]] || { echo "error: no mimalloc-bench sources in $bench (set MIMALLOC_BENCH=)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/record-overhead.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The tool as users get it.
if [[ -n ${NATIVEHEAP:-} ]]; then
    nativeheap=$NATIVEHEAP
else
    echo "packing and installing the tool ..." >&2
    dotnet pack "$repo/src/NativeHeap.Cli" -c Release -o "$work/package" --disable-build-servers >"$work/pack.log" 2>&1 \
        || { cat "$work/pack.log" >&2; exit 1; }
    # A package folder of our own: the global one may hold an older build of the same version.
    NUGET_PACKAGES=$work/nuget dotnet tool install --tool-path "$work/tool" --add-source "$work/package" NativeHeap.Cli \
        >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; exit 1; }
    nativeheap=$work/tool/nativeheap
fi
# The tool's launcher looks for the runtime where DOTNET_ROOT says.
export DOTNET_ROOT=${DOTNET_ROOT:-$(dirname "$(readlink -f "$(command -v dotnet)")")}

# The programs: a name, the environment it needs (exported, not `env NAME=V program`: heaptrack
# would record env itself), and the command.
echo "building the programs ..." >&2
mkdir -p "$work/bin"
gcc -O2 -o "$work/bin/mstress" "$bench/mstress/mstress.c" -lpthread
# `gcc -c` runs cc1 and as as child processes; heaptrack follows none of them (it recorded only
# the driver's ~150 calls), so the compiler proper is run directly, as gcc -c -O2 runs it.
native=$repo/src/NativeHeap.Cli/native
cc1=$(gcc -c -O2 -### "$native/replay.c" -o "$work/bin/replay.o" 2>&1 | grep '/cc1 ' | tr -d '"' | sed -E "s| -o [^ ]+\.s| -o $work/bin/replay.s|")
[[ $cc1 == */cc1\ * ]] || { echo "error: cannot find gcc's cc1 command line (gcc -###)" >&2; exit 1; }
names=("python3 json_roundtrip.py, PYTHONMALLOC=malloc" "mimalloc-bench mstress 2 50 25" "cc1 -O2 replay.c (gcc -c's compiler)")
envs=("PYTHONMALLOC=malloc" "" "")
cmds=("$python $repo/benchmarks/json_roundtrip.py" "$work/bin/mstress 2 50 25" "$cc1")

# run VARIANT PROGRAM: one run; appends "wall cpu bytes" to $work/VARIANT.PROGRAM.
run() {
    local variant=$1 i=$2 out=$work/out
    rm -rf "$out"; mkdir -p "$out"
    local -a cmd; read -r -a cmd <<<"${cmds[$i]}"
    local -a wrap=()
    case $variant in
        plain) ;;
        heaptrack) wrap=(heaptrack -o "$out/heaptrack") ;;
        nativeheap) wrap=("$nativeheap" record -o "$out/trace.%p" --) ;;
    esac
    if ! ( [[ -n ${envs[$i]} ]] && export "${envs[$i]?}"
           /usr/bin/time -f "%e %U %S" -o "$work/time" "${wrap[@]}" "${cmd[@]}" >"$work/run.log" 2>&1 ); then
        echo "error: $variant ${names[$i]} failed:" >&2; tail -20 "$work/run.log" >&2; exit 1
    fi
    local bytes; bytes=$(find "$out" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    awk -v b="$bytes" 'END { printf "%s %.2f %s\n", $1, $2 + $3, b }' "$work/time" >>"$work/$variant.$i"
}

variants=(plain heaptrack nativeheap)
for ((r = 1; r <= rounds; r++)); do
    for i in "${!names[@]}"; do
        for v in "${variants[@]}"; do
            echo "round $r/$rounds: $v ${names[$i]}" >&2
            run "$v" "$i"
        done
    done
done

# median FILE COLUMN
median() { awk -v c="$2" '{ print $c }' "$1" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
human() { awk -v b="$1" 'BEGIN { split("B KB MB GB", u); i = 1; while (b >= 1000 && i < 4) { b /= 1000; i++ } printf (i == 1 ? "%d %s" : "%.1f %s"), b, u[i] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else printf "-" }'; }

table() {
    local col=$1 what=$2
    echo
    echo "$what, median of $rounds rounds (s); files: median size of what each tool wrote."
    echo
    echo "| program | plain | heaptrack | heaptrack file | nativeheap record | nativeheap file | heaptrack / plain | nativeheap / plain | nativeheap / heaptrack: time | size |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for i in "${!names[@]}"; do
        local p h n hb nb
        p=$(median "$work/plain.$i" "$col"); h=$(median "$work/heaptrack.$i" "$col"); n=$(median "$work/nativeheap.$i" "$col")
        hb=$(median "$work/heaptrack.$i" 3); nb=$(median "$work/nativeheap.$i" 3)
        echo "| ${names[$i]} | $p | $h | $(human "$hb") | $n | $(human "$nb") | $(ratio "$h" "$p") | $(ratio "$n" "$p") | $(ratio "$n" "$h") | $(ratio "$nb" "$hb") |"
    done
}

echo "$(heaptrack --version 2>&1 | head -1); nativeheap: $nativeheap; $(nproc) cores, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
table 1 "Wall time"
table 2 "CPU time (user + sys)"
