import threading, json, ctypes, os
def anon_kib():
    size, res, shared = map(int, open("/proc/self/statm").read().split()[:3])
    return (res - shared) * os.sysconf("SC_PAGE_SIZE") // 1024
barrier = threading.Barrier(4)
keep = []
def work(n):
    barrier.wait()
    data = [{"k%d" % i: "v" * (i % 50), "n": list(range(i % 30))} for i in range(3000 + n * 500)]
    back = json.loads(json.dumps(data))
    keep.append(back[-1])          # one small survivor per thread
    words = " ".join(str(x) for x in range(20000)).split()
    return len(back) + len(words)
ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in ts: t.start()
for t in ts: t.join()
before = anon_kib()
ctypes.CDLL(None).malloc_trim(0)
after = anon_kib()
print(f"anon before malloc_trim(0): {before} KiB, after: {after} KiB, returned {before - after} KiB")
