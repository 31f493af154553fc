#!/usr/bin/env python3
"""Writes the scenario traces of `nativeheap scenarios` (one .trace per scenario, this folder).

Each trace starts with `# scenario:` lines (the description the command shows) and a
`k start` checkpoint, the baseline the others are compared with. Run it again after editing;
the traces are committed so that nothing needs Python to run them.
"""
import random
from pathlib import Path

HERE = Path(__file__).parent


def write(name, description, lines):
    text = "".join(f"# scenario: {d}\n" for d in description) + "\n".join(lines) + "\n"
    (HERE / f"{name}.trace").write_text(text)


def seed_002(trim):
    n = 4000
    lines = ["k start"]
    for i in range(n):
        lines += [f"m {2 * i + 1} 52722", f"w {2 * i + 1}", f"m {2 * i + 2} 1", f"w {2 * i + 2}"]
    lines.append("k after-mallocs")
    for i in reversed(range(n)):
        lines += [f"f {2 * i + 1}", f"f {2 * i + 2}"]
    lines += ["k after-frees", "m 9001 2000", "f 9001", "k after-malloc-2000-free"]
    if trim:
        lines += ["t 0", "k after-malloc-trim"]
    return lines


write("seed-002",
      ["seeds/002: 4000 x (malloc(52722) + malloc(1)), touched, freed in reverse, then malloc(2000) and free.",
       "With the tcache on, seven cached 32-byte chunks pin the top: nothing goes back. With it off,",
       "malloc(2000) consolidates the fastbins, everything merges into top and is trimmed."],
      seed_002(trim=False))
write("seed-002-trim",
      ["seeds/002 ending with malloc_trim(0): trim releases the free pages inside free chunks",
       "(MADV_DONTNEED) even when the top is pinned."],
      seed_002(trim=True))

lines = ["k start"]
for i in range(1, 2001):
    lines += [f"m {i} 20000", f"w {i}"]
lines += ["m 5000 2000", "w 5000", "k after-mallocs"]
lines += [f"f {i}" for i in range(1, 2001)]
lines += ["k after-frees-top-pinned", "f 5000", "k after-top-block-freed"]
write("pinned-top",
      ["seeds 000, 001, 004: 2000 blocks of 20000 bytes freed below one live block at the top of the heap.",
       "RSS stays, because only the top of the heap can go back to the kernel; free the top block and",
       "everything merges into top, which passes the trim threshold and goes back."],
      lines)

rng = random.Random(3)
lines = ["k start"]
next_id = 1
modules = []
for module in range(5):
    blocks = []
    for j in range(1200):
        if j % 100 == 0:
            lines.append(f"m {next_id} 64")       # a registry entry that outlives the module
            next_id += 1
        size = rng.choice([rng.randint(100, 2000), rng.randint(2000, 20000), rng.randint(20000, 60000)])
        lines += [f"m {next_id} {size}", f"w {next_id}"]
        blocks.append(next_id)
        next_id += 1
    modules.append(blocks)
lines += [f"m {next_id} 64", "k modules-loaded"]
for blocks in modules:
    lines += [f"f {b}" for b in blocks]
lines += ["k modules-unloaded", "t 0", "k after-malloc-trim"]
write("module-unload",
      ["seed 003: load five modules (mixed sizes, ~20 MiB each), unload them: RSS stays, because small",
       "registry entries that outlive them sit between and above the freed blocks. malloc_trim(0)",
       "releases the whole free pages inside the free chunks and RSS falls."],
      lines)

write("mmap-threshold",
      ["A 200,000-byte block is above the 128 KiB mmap threshold: mmapped, and unmapped at once when",
       "freed. That free raises the threshold to the block's size, so the same request then comes from",
       "the heap, and stays resident after its free (top is below the raised trim threshold)."],
      ["k start", "m 1 200000", "w 1", "k first-block-mmapped", "f 1", "k first-block-freed",
       "m 2 200000", "w 2", "k second-block-from-heap", "f 2", "k second-block-freed"])

write("lazy-pages",
      ["seed 004: malloc only reserves address space; a page becomes resident when it is first written.",
       "malloc itself writes only chunk headers: a 2048-byte block adds at most a page, a 100,000-byte",
       "heap block the two pages its header and the next one land on, a 48 MiB mmapped block nothing,",
       "until they are written."],
      ["m 1 1", "k start", "m 2 2048", "k after-malloc-2048", "w 2", "k after-write-2048",
       "m 3 100000", "k after-malloc-100000", "w 3", "k after-write-100000",
       "m 4 50000000", "k after-malloc-48mib", "w 4", "k after-write-48mib", "f 4", "k after-free-48mib"])
