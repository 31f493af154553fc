#!/bin/sh
# Re-records the traces in this folder with the tool's recorder (src/NativeHeap.Cli/native).
#   sh native-tests/traces/recorded/record.sh
# Needs gcc, perl, /usr/bin/python3, sort, mawk or any awk, and setarch (util-linux).
# setarch -R turns address randomisation off and the hash seeds are pinned, so
# that two runs on the same machine give the same traces (with ASLR on, cc1's
# pointer-keyed hash tables make its allocation sequence differ run to run).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
make -s -C "$root/src/NativeHeap.Cli/native"
make -s -C "$root/native-tests"
lib=$root/src/NativeHeap.Cli/native/build/librecorder.so
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$root"

# Prints the file in $1/ whose header names a command matching $2.
pick() {
    for f in "$1"/*; do
        if head -n 1 "$f" | grep -q -- "$2"; then echo "$f"; return 0; fi
    done
    echo "no trace of $2 in $1" >&2
    return 1
}

# Plain text without stacks: these traces are the replayers' test data (a stack's addresses
# differ each run), and save() appends a line to them.
export NH_TRACE_COMPRESS=0 NH_TRACE_STACK_DEPTH=0

# Copies a recorded trace here with a final "k end" checkpoint.
save() {
    { cat "$1"; echo "k end"; } > "$here/$2"
    echo "$2: $(wc -l < "$here/$2") lines, $(wc -c < "$here/$2") bytes"
}

# 1. The C compiler proper (cc1) compiling replay.c. The driver and the
#    assembler write traces of their own; only cc1's is kept.
mkdir "$tmp/gcc"
NH_TRACE="$tmp/gcc/gcc-%p.trace" LD_PRELOAD="$lib" \
    setarch -R gcc -O2 -c src/NativeHeap.Cli/native/replay.c -o "$tmp/replay.o"
save "$(pick "$tmp/gcc" '/cc1 ')" gcc-cc1-replay.trace

# 2a. Python with PYTHONMALLOC=malloc (every object through malloc): a JSON
#     round trip of a generated structure, regex search and substitution,
#     string splitting and sorting. -P keeps the current directory off
#     sys.path and -s the user's site-packages: the import system lists every
#     directory on sys.path, so their contents would change the trace.
py='import json, re
data = [{"id": i, "name": "item%d" % i, "tags": ["t%d" % (i % 7), "u%d" % (i % 13)],
         "score": i * 0.5, "child": {"n": i % 10, "s": "x" * (i % 50)}} for i in range(300)]
text = json.dumps(data)
back = json.loads(text)
assert back == data
words = re.findall(r"item(\d+)", text)
total = sum(int(w) for w in words)
rep = re.sub(r"u(\d+)", lambda m: "U" + m.group(1)[::-1], text)
parts = sorted(set(rep.split(",")), key=len)
print(len(text), total, len(parts), rep.count("U"))'
mkdir "$tmp/py"
NH_TRACE="$tmp/py/python3-%p.trace" LD_PRELOAD="$lib" \
    PYTHONMALLOC=malloc PYTHONHASHSEED=0 setarch -R /usr/bin/python3 -s -P -c "$py"
save "$(pick "$tmp/py" python3)" python3-json.trace

# 2b. Perl: hash inserts with string appends, a sort by value length, a
#     hash slice delete, join/map/uc, and a character count through split.
pl='my %h; for my $i (1..3000) { my $k = "key" . ($i * 7919 % 1009); $h{$k} .= chr(97 + $i % 26) x ($i % 17); }
my @k = sort { length($h{$a}) <=> length($h{$b}) || $a cmp $b } keys %h;
delete @h{@k[0..99]};
my $s = join ",", map { "$_=" . uc($h{$_}) } grep { exists $h{$_} } @k;
my %c; $c{$_}++ for split //, $s;
print scalar(keys %h), " ", length($s), " ", join("", map { "$_$c{$_}" } (sort keys %c)[0..4]), "\n";'
mkdir "$tmp/perl"
NH_TRACE="$tmp/perl/perl-%p.trace" LD_PRELOAD="$lib" \
    PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0 setarch -R perl -e "$pl"
save "$(pick "$tmp/perl" perl)" perl-hash.trace

# 3. sort of a generated 2 MiB text file (Park-Miller generator: exact in any
#    awk's doubles, so the file is the same everywhere), single-threaded.
#    Once with sort's default buffer (sized from the input and the machine's
#    memory: one big block) and once with -S 256K (runs in temp files, then
#    a merge: many 256 KiB buffers, around the mmap threshold).
awk 'BEGIN { x = 42; n = 0
    while (n < 2097152) {
        x = (x * 16807) % 2147483647; k = x % 12 + 1; l = ""
        for (i = 0; i < k; i++) { x = (x * 16807) % 2147483647; l = l (i ? " " : "") sprintf("%x", x % 1000000) }
        print l; n += length(l) + 1 } }' > "$tmp/input.txt"
mkdir "$tmp/sort" "$tmp/sortS"
NH_TRACE="$tmp/sort/sort-%p.trace" LD_PRELOAD="$lib" LC_ALL=C.UTF-8 \
    setarch -R sort --parallel=1 "$tmp/input.txt" -o "$tmp/sorted.txt"
save "$(pick "$tmp/sort" sort)" sort.trace
NH_TRACE="$tmp/sortS/sort-%p.trace" LD_PRELOAD="$lib" LC_ALL=C.UTF-8 \
    setarch -R sort --parallel=1 -S 256K -T "$tmp" "$tmp/input.txt" -o "$tmp/sorted2.txt"
cmp "$tmp/sorted.txt" "$tmp/sorted2.txt"
save "$(pick "$tmp/sortS" sort)" sort-S256K.trace

# 4. Threads (T and x lines). build/threads: a deterministic program whose
#    workers run one after another (arenas 1..3, one taken over after an x).
#    Python: four threads doing JSON round trips at once behind a barrier, so
#    their calls interleave as the scheduler ran them (a new recording
#    interleaves differently; the committed one is what the tests replay).
mkdir "$tmp/threads" "$tmp/pythreads"
NH_TRACE="$tmp/threads/threads-%p.trace" LD_PRELOAD="$lib" setarch -R native-tests/build/threads
save "$(pick "$tmp/threads" threads)" threads.trace
pyt='import threading, json
barrier = threading.Barrier(4)
keep = []
def work(n):
    barrier.wait()
    data = [{"k%d" % i: "v" * (i % 40), "n": list(range(i % 20))} for i in range(200 + n * 50)]
    back = json.loads(json.dumps(data))
    keep.append(back[-1])
    return len(" ".join(str(x) for x in range(2000)).split())
ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in ts: t.start()
for t in ts: t.join()'
NH_TRACE="$tmp/pythreads/python3-%p.trace" LD_PRELOAD="$lib" \
    PYTHONMALLOC=malloc PYTHONHASHSEED=0 setarch -R /usr/bin/python3 -s -P -c "$pyt"
save "$(pick "$tmp/pythreads" python3)" python3-threads.trace

# Every trace must replay, with and without the tcache.
for t in "$here"/*.trace; do
    for tun in "" glibc.malloc.tcache_count=0; do
        if ! GLIBC_TUNABLES=$tun "$root/native-tests/build/replay" "$t" > "$tmp/out" \
            || [ "$(tail -n 1 "$tmp/out")" != end ]; then
            echo "replay failed: $t $tun" >&2
            exit 1
        fi
    done
done
echo "all traces replay"
