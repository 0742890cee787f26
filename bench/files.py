#!/usr/bin/env python3
"""Files for the benchmark cases, made the same way every time.

  files.py text PATH MIB             log-like text (compresses about 4-6x with zstd)
  files.py overwrite PATH BYTES SEED  new random bytes over BYTES in the middle of PATH
  files.py tree PATH N                N random 4 KiB files in 50 folders (5 x 10), two deep
"""
import os, random, sys


def text(path, mib):
    rnd = random.Random(3)
    hosts = ["web%02d" % i for i in range(40)]
    paths = ["/api/v1/items/%d" % i for i in range(500)]
    n, size = int(mib) << 20, 0
    with open(path, "w") as out:
        while size < n:
            line = "2026-11-%02dT%02d:%02d:%02d.%03dZ %s GET %s %d %dms ua=Mozilla/5.0 req=%016x\n" % (
                rnd.randint(1, 30), rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59),
                rnd.randint(0, 999), rnd.choice(hosts), rnd.choice(paths),
                rnd.choice([200, 200, 200, 304, 404, 500]), rnd.randint(1, 900), rnd.getrandbits(64))
            out.write(line)
            size += len(line)


def overwrite(path, nbytes, seed):
    size = os.path.getsize(path)
    rnd = random.Random(int(seed))
    with open(path, "r+b") as f:
        f.seek(max(0, size // 2 - int(nbytes) // 2))
        f.write(rnd.randbytes(int(nbytes)))


def touchall(path, seed):
    rnd = random.Random(int(seed))
    for name in sorted(os.listdir(path)):
        p = os.path.join(path, name)
        with open(p, "r+b") as f:
            f.seek(rnd.randrange(os.path.getsize(p)))
            f.write(rnd.randbytes(1))


def tree(path, n):
    rnd = random.Random(5)
    for i in range(int(n)):
        d = os.path.join(path, "d%d" % (i % 5), "e%d" % ((i // 5) % 10))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "f%05d.bin" % i), "wb") as f:
            f.write(rnd.randbytes(4096))


if __name__ == "__main__":
    cmds = {"text": text, "overwrite": overwrite, "touchall": touchall, "tree": tree}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
