import sys, collections, subprocess
data = sys.argv[1]
out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,ip,sym,dso"], capture_output=True, text=True).stdout
samples = out.split("\n\n")
by = collections.Counter(); total = 0
for s in samples:
    lines = [l.strip() for l in s.strip().splitlines()]
    if not lines: continue
    total += 1
    frames = lines[1:] or ["? (?)"]
    kernel = [f for f in frames if "kernel.kallsyms" in f]
    if not kernel:
        by["user: " + ("python" if "libpython" in frames[0] else frames[0].split()[-1] if frames else "?")] += 1
        continue
    # first non-kernel frame after kernel frames: the user-level caller of the syscall
    user = next((f for f in frames if "kernel.kallsyms" not in f), "?")
    name = user.split(None, 1)[1].rsplit(" (", 1)[0] if " " in user else user
    by["kernel under " + name] += 1
for k, v in by.most_common(16):
    print("%5.1f%%  %s" % (100.0 * v / total, k))
print("samples", total)
