"""Build a corpus of C source for a character language model from Debian's `linux-source` package.

The Linux kernel's *.c and *.h files, from the source tarball that Debian's linux-source-X.Y package
holds: a sample of whole files for training, and two other samples of whole files held out for dev and
test, so that no held-out line was seen in training. The corpus is built on the machine that uses it and
never committed (the kernel is GPL-2.0; see the package's copyright file).

    python pipelines/linux-c/build_corpus.py --out work/linux-c/corpus [--keep-downloads DIR]

Steps: find the package that the `linux-source` meta-package depends on (apt-cache), download it with
`apt-get download`, unpack it with `dpkg -x` into a temporary folder, read the source tarball member by
member (nothing else is unpacked), and give every C file a place from a hash of its path: test, dev,
train or left out. Files of more than --max-file-kb (generated register tables, firmware arrays) and
files that are not UTF-8 are left out and counted. Writes train.txt, dev.txt and test.txt (the files in
path order, each ending in a newline), then corpus.json (written last) with the files of each split.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

from mt.atomic import atomic_open, write_json

META_PACKAGE = "linux-source"
SUFFIXES = (".c", ".h")
SPLITS = ("train", "dev", "test")


class RecipeError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


def source_package():
    """The versioned package (linux-source-6.1) that the meta-package depends on, from apt-cache."""
    if not shutil.which("apt-cache"):
        raise RecipeError("this recipe needs Debian's apt-cache, apt-get and dpkg (apt-cache not found), or a "
                          "downloaded linux-source-*.deb in --keep-downloads")
    result = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True, text=True)
    found = re.findall(r"Depends:\s*(linux-source-[0-9][\w.+-]*)", result.stdout)
    if result.returncode != 0 or not found:
        raise RecipeError(f"apt-cache knows no package {META_PACKAGE} with a versioned dependency (see `apt-cache "
                          "search linux-source`); run 'apt-get update' as root and try again")
    return found[0]


def find_deb(folder):
    """The newest downloaded linux-source-*.deb in `folder`, or None."""
    if not folder or not os.path.isdir(folder):
        return None
    names = sorted(n for n in os.listdir(folder) if n.startswith("linux-source-") and n.endswith(".deb"))
    return os.path.join(folder, names[-1]) if names else None


def download(package, folder):
    os.makedirs(folder, exist_ok=True)
    for tool in ("apt-get", "dpkg"):
        if not shutil.which(tool):
            raise RecipeError(f"this recipe needs Debian's apt-get and dpkg ({tool} not found)")
    result = subprocess.run(["apt-get", "download", package], cwd=folder, capture_output=True, text=True)
    path = find_deb(folder)
    if result.returncode != 0 or path is None:
        errors = [line for line in result.stderr.splitlines() if line.startswith("E:")]
        reason = errors[0] if errors else f"apt-get exited with code {result.returncode}"
        raise RecipeError(f"could not download Debian package {package} ({reason}); run 'apt-get update' as root "
                          "and try again")
    return path


def unpack(deb, folder):
    """The source tarball inside the .deb, unpacked with `dpkg -x` into `folder`."""
    if not shutil.which("dpkg"):
        raise RecipeError("this recipe needs Debian's dpkg to unpack the package (not found)")
    result = subprocess.run(["dpkg", "-x", deb, folder], capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or [f"dpkg exited with code {result.returncode}"])[-1]
        raise RecipeError(f"could not unpack {os.path.basename(deb)}: {message}")
    src = os.path.join(folder, "usr", "src")
    tarballs = sorted(n for n in os.listdir(src) if n.startswith("linux-source-") and ".tar" in n) \
        if os.path.isdir(src) else []
    if not tarballs:
        raise RecipeError(f"{os.path.basename(deb)} holds no usr/src/linux-source-*.tar.*")
    return os.path.join(src, tarballs[-1])


def place(path, held_out, train):
    """The split of the file at `path` (inside the tree): a hash of the path, uniform in [0, 1), puts the
    first `held_out` of files in test, the next `held_out` in dev, the next `train` in train; None for
    the rest."""
    u = int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64
    if u < held_out:
        return "test"
    if u < 2 * held_out:
        return "dev"
    if u < 2 * held_out + train:
        return "train"
    return None


def read_tree(tarball, held_out, train, max_bytes):
    """{split: [(path, text)]} of the tarball's C files, and the counts of what was left out."""
    splits = {name: [] for name in SPLITS}
    left_out = {"too_large": 0, "not_utf8": 0, "not_sampled": 0}
    with tarfile.open(tarball, "r|*") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(SUFFIXES):
                continue
            path = member.name.split("/", 1)[1] if "/" in member.name else member.name
            split = place(path, held_out, train)
            if split is None:
                left_out["not_sampled"] += 1
                continue
            if member.size > max_bytes:
                left_out["too_large"] += 1
                continue
            data = tar.extractfile(member).read()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                left_out["not_utf8"] += 1
                continue
            splits[split].append((path, text))
    return splits, left_out


def write_split(path, files):
    """The files in path order, each ending in a newline, line ends as '\\n'."""
    with atomic_open(path) as f:
        for _, text in sorted(files):
            text = text.replace("\r\n", "\n")
            f.write(text if text.endswith("\n") else text + "\n")


def build(out, keep_downloads=None, held_out=0.001, train=0.02, max_file_kb=256):
    started = time.monotonic()
    deb = find_deb(keep_downloads)
    package = None
    with tempfile.TemporaryDirectory(prefix="linux-c-corpus-") as tmp:
        if deb is None:
            package = source_package()
            deb = download(package, keep_downloads or os.path.join(tmp, "debs"))
        downloaded = time.monotonic()
        tarball = unpack(deb, os.path.join(tmp, "root"))
        splits, left_out = read_tree(tarball, held_out, train, max_file_kb * 1024)
    if not splits["train"] or not splits["dev"] or not splits["test"]:
        raise RecipeError(f"{os.path.basename(deb)}: too few C files for every split (train {len(splits['train'])}, "
                          f"dev {len(splits['dev'])}, test {len(splits['test'])})")
    os.makedirs(out, exist_ok=True)
    for name in SPLITS:
        write_split(os.path.join(out, f"{name}.txt"), splits[name])
    info = {
        "source": {"deb": os.path.basename(deb), "package": package or os.path.basename(deb).split("_")[0],
                   "version": os.path.basename(deb).split("_")[1] if deb.count("_") >= 2 else "unknown",
                   "license": "GPL-2.0 (the Linux kernel; see /usr/share/doc/<package>/copyright)"},
        "sampling": {"held_out_fraction": held_out, "train_fraction": train, "max_file_kb": max_file_kb,
                     "by": "sha256 of the path inside the tree"},
        "left_out": left_out,
        "splits": {name: {"files": len(files), "characters": sum(len(t) for _, t in files),
                          "paths": sorted(p for p, _ in files)} for name, files in splits.items()},
    }
    write_json(os.path.join(out, "corpus.json"), info)
    return dict(info, seconds={"download": downloaded - started, "total": time.monotonic() - started})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write train.txt, dev.txt, test.txt and corpus.json")
    parser.add_argument("--keep-downloads", metavar="DIR", help="keep the .deb in DIR (and reuse it from there)")
    parser.add_argument("--held-out", type=float, default=0.001,
                        help="share of the C files held out for test, and as many again for dev (default 0.001)")
    parser.add_argument("--train", type=float, default=0.02, help="share of the C files for training (default 0.02)")
    parser.add_argument("--max-file-kb", type=int, default=256, help="leave out larger files (default 256)")
    args = parser.parse_args(argv)
    if not (0 < args.held_out and 0 < args.train and 2 * args.held_out + args.train <= 1):
        print("error: --held-out and --train must be positive, 2 x held-out + train at most 1", file=sys.stderr)
        return 1
    try:
        result = build(args.out, args.keep_downloads, args.held_out, args.train, args.max_file_kb)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"wrote {args.out} from {result['source']['deb']}")
    for name, split in result["splits"].items():
        print(f"  {name:<5} {split['files']:6,} files {split['characters']:12,} characters")
    print(f"  left out: {json.dumps(result['left_out'])}")
    print(f"  time: {result['seconds']['total']:.1f} s (download {result['seconds']['download']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
