"""The corpus at scale: tokenizer training, the token-file build and the cache hit on generated corpora.

    python bench/corpus_scale.py                          # 0.3, 1 and 3 GB of text, base preset (32768 tokens)
    python bench/corpus_scale.py --sizes 0.05,0.1         # a quick run

For each size, a corpus is written into a temporary folder from the embedded text (the Wikipedia
leads and IMDB reviews of `data.embedded`, 37 MB: their lines shuffled anew on every pass, so a
3 GB corpus repeats each line about 80 times). Three stages then run, each in a process of its own
so that its memory is its own:

* tokenizer -- tokenization.train_tokenizer with the preset's settings (tokenizer.sample_bytes,
  tokenizer.holdout_docs): a checking pass over the whole corpus, then the sample fed to the trainer;
* build     -- pretrain_data.prepare_token_file into an empty cache folder (data.workers processes);
* cache     -- prepare_token_file again from a new process: the token file found.

Each row gives the stage's wall time (measured inside its process, imports not counted) and the
process's (with them), tokens per second and per core (the corpus's tokens over the stage's time),
the CPU seconds of the stage's process and of its workers (which a loaded machine does not inflate,
so projections start from them: docs/pretraining.md),
the peak resident memory of the largest process of the stage (its VmHWM, sampled) and the peak
of the stage's processes together (the sum of their proportional set sizes, sampled every 0.2 s:
pages the forked workers share with their parent are counted once). The repeated text has far fewer
distinct words than a real corpus of the same size, which flatters the tokenizer stage's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

ROOT = common.ROOT


# --------------------------------------------------------------------------- the stages (run in a child process)


def run_stage(args) -> dict:
    """One stage, in this process: {"seconds": ..., the CPU seconds of this process and of its workers
    during the stage, and what it made}."""
    before = os.times()
    report = _stage(args)
    after = os.times()
    return report | {"own_hwm_bytes": hwm_bytes(os.getpid()),
                     "main_cpu_s": after.user + after.system - before.user - before.system,
                     "workers_cpu_s": after.children_user + after.children_system
                     - before.children_user - before.children_system}


def _stage(args) -> dict:
    from params import get_params

    p = get_params(args.preset, {"data.workers": str(args.workers)})
    if args.stage == "tokenizer":
        from tokenization import train_tokenizer

        t0 = time.perf_counter()
        tok = train_tokenizer([args.corpus], p.tokenizer.vocab_size, args.tokenizer, p.tokenizer.min_frequency,
                              holdout_docs=p.tokenizer.holdout_docs, sample_bytes=p.tokenizer.sample_bytes,
                              max_docs=p.tokenizer.max_train_lines, data=p.data)
        return {"seconds": time.perf_counter() - t0, "vocab": tok.get_vocab_size()}
    from pretrain_data import prepare_token_file, usable_cores

    t0 = time.perf_counter()
    path = prepare_token_file([args.corpus], args.tokenizer, args.cache, p.data, progress=args.stage == "build")
    seconds = time.perf_counter() - t0
    meta = json.loads(path.with_suffix(".tokens.json").read_text())
    return {"seconds": seconds, "tokens": meta["n_tokens"], "documents": meta["n_documents"], "path": str(path),
            "cores": usable_cores(), "mtime_ns": path.stat().st_mtime_ns}


# --------------------------------------------------------------------------- measuring a child process


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (read from /proc)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(proc.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def proc_bytes(pid: int, file: str, field: str) -> int:
    """A size in kB that /proc/<pid>/<file> gives on its line `<field>:`, in bytes; 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pss_bytes(pid: int) -> int:
    """A process's proportional set size: pages shared with other processes counted by their share."""
    return proc_bytes(pid, "smaps_rollup", "Pss")


def hwm_bytes(pid: int) -> int:
    """A process's own peak resident memory (VmHWM: its address space's high-water mark since exec)."""
    return proc_bytes(pid, "status", "VmHWM")


def measure(command: list[str]) -> dict:
    """Run `command`; its wall time, the stage's report (the line STAGE {...}), the peak RSS of its largest
    process and the peak of the summed PSS of its process tree, both sampled every 0.2 s. (The rusage
    that wait4 returns is no measure here: Linux carries the parent's resident size at the fork into the
    child's maxrss, so every stage would report at least this process's size.) The stage's own process
    also reports its VmHWM as it ends, which closes the last sampling interval."""
    peak = {"tree": 0, "process": 0}
    t0 = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample():
        while not done.wait(0.2):
            tree = descendants(child.pid)
            peak["tree"] = max(peak["tree"], sum(pss_bytes(p) for p in tree))
            peak["process"] = max([peak["process"], *(hwm_bytes(p) for p in tree)])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = child.stdout.read()
    _, status, _ = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"stage failed (exit {child.returncode}): {' '.join(command)}")
    report = json.loads(next(line for line in out.splitlines() if line.startswith("STAGE "))[6:])
    largest = max(peak["process"], report.pop("own_hwm_bytes", 0))
    return report | {"process_s": wall, "peak_rss_mb": largest / 2**20, "peak_tree_mb": peak["tree"] / 2**20}


# --------------------------------------------------------------------------- the corpora


def write_corpus(path: Path, size_bytes: int, seed: int = 0) -> int:
    """`size_bytes` of text (whole lines) from the embedded corpora, their lines shuffled on every pass."""
    from corpus import corpus_files

    lines = []
    for f in corpus_files([], ["wiki", "imdb"], ROOT / "data"):
        lines += [line for line in Path(f).read_text(encoding="utf-8").splitlines() if line.strip()]
    rng, written = random.Random(seed), 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < size_bytes:
            rng.shuffle(lines)
            for line in lines:
                data = line + "\n"
                fh.write(data)
                written += len(data.encode("utf-8"))
                if written >= size_bytes:
                    break
    return path.stat().st_size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0.3,1,3", help="corpus sizes in GB (10^9 bytes), comma-separated")
    ap.add_argument("--preset", default="base", choices=["tiny", "base"])
    ap.add_argument("--workers", type=int, default=0, help="data.workers for the build (0 = one per core)")
    ap.add_argument("--workdir", default="", help="where the corpora go (default: a temporary folder, removed)")
    ap.add_argument("--name", default="corpus_scale", help="bench/results/<name>.csv")
    # a stage, run by this script in a child process
    ap.add_argument("--stage", choices=["tokenizer", "build", "cache"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:
        print("STAGE " + json.dumps(run_stage(args)), flush=True)
        return 0

    import torch

    sizes = [float(s) for s in args.sizes.split(",") if s]
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="corpus-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, str(Path(__file__).resolve()), "--preset", args.preset, "--workers", str(args.workers)]
    rows = []
    try:
        for size in sizes:
            corpus, tokenizer, cache = work / f"corpus-{size:g}gb.txt", work / f"tokenizer-{size:g}gb.json", work / f"cache-{size:g}gb"
            print(f"\n=== {size:g} GB: writing {corpus}", flush=True)
            n_bytes = write_corpus(corpus, int(size * 1e9))
            shutil.rmtree(cache, ignore_errors=True)
            stage_args = ["--corpus", str(corpus), "--tokenizer", str(tokenizer), "--cache", str(cache)]
            results = {}
            for stage in ("tokenizer", "build", "cache"):
                print(f"--- {size:g} GB: {stage}", flush=True)
                results[stage] = measure([*me, "--stage", stage, *stage_args])
            build, hit = results["build"], results["cache"]
            if hit["path"] != build["path"] or hit["mtime_ns"] != build["mtime_ns"]:
                raise SystemExit("the cache stage built the token file again")
            tokens, cores = build["tokens"], build["cores"]
            for stage, r in results.items():
                rows.append({
                    "size_gb": size, "corpus_bytes": n_bytes, "stage": stage, "wall_s": r["seconds"],
                    "process_s": r["process_s"], "s_per_gb": r["seconds"] / (n_bytes / 1e9), "tokens": tokens,
                    "tokens_per_s": tokens / r["seconds"], "cores": cores,
                    "tokens_per_s_per_core": tokens / r["seconds"] / cores,
                    "peak_rss_mb": r["peak_rss_mb"], "peak_tree_mb": r["peak_tree_mb"],
                    "main_cpu_s": r["main_cpu_s"], "workers_cpu_s": r["workers_cpu_s"],
                    "tokens_per_cpu_s": tokens / max(r["main_cpu_s"] + r["workers_cpu_s"], 1e-9),
                })
            os.remove(corpus)
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    meta = common.machine_info(torch.device("cpu")) | {"preset": args.preset, "workers": args.workers,
                                                       "command": " ".join(sys.argv)}
    columns = ["size_gb", "stage", "wall_s", "s_per_gb", "tokens_per_s_per_core", "main_cpu_s", "workers_cpu_s",
               "peak_rss_mb", "peak_tree_mb"]
    common.report(args.name, rows, meta, columns)
    first = next(r for r in rows if r["stage"] == "build")
    for r in rows:
        tag = f"corpus_scale_{r['size_gb']:g}gb_{r['stage']}".replace(".", "p")
        print(common.result_line(f"{tag}_s", r["wall_s"]))
        print(common.result_line(f"{tag}_peak_mb", max(r["peak_rss_mb"], r["peak_tree_mb"])))
        if r["stage"] == "build":
            print(common.result_line(f"{tag}_tokens_per_s_per_core", r["tokens_per_s_per_core"]))
            print(common.result_line(f"{tag}_s_per_gb_vs_{first['size_gb']:g}gb".replace(".", "p"),
                                     r["s_per_gb"] / first["s_per_gb"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
