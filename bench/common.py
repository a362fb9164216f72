"""What the benchmark reports share: what they ran on (CPU, cores, memory, kernel, commit) and
how they write numbers."""
import argparse
import json
import os
import platform
import subprocess


def machine():
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    except OSError:
        mem = 0
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem / 2**20, 1), "kernel": platform.release()}


def git_commit():
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def fmt(v, digits=0):
    return "-" if v is None else f"{v:,.{digits}f}"


def ratio(a, b, digits=2):
    return "-" if a is None or b in (None, 0) else f"{a / b:.{digits}f}x"


def mib(x):
    return None if x is None else x / 2**20


def emit(lines, report, append_md=None, append_jsonl=None):
    """Prints the table; appends it to the Markdown history and the report to the JSON log."""
    table = "\n".join(lines) + "\n"
    print(table)
    if append_md:
        with open(append_md, "a") as f:
            f.write("\n" + table)
    if append_jsonl:
        with open(append_jsonl, "a") as f:
            f.write(json.dumps(report) + "\n")


def read_runs(add_arguments=None):
    """The command line every report takes (RESULTS_JSONL [--append-md F] [--append-jsonl F],
    and what `add_arguments(parser)` adds) and the result lines in that file."""
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("--append-md")
    p.add_argument("--append-jsonl")
    if add_arguments:
        add_arguments(p)
    args = p.parse_args()
    return args, [json.loads(line) for line in open(args.results) if line.strip().startswith("{")]
