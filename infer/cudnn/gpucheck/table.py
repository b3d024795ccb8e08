#!/usr/bin/env python3
"""table.py OUT: the device check's summary, OUT/gpu-check.md, from the logs
run.sh left in OUT (standard library only):

  steps.tsv        one row per step: step, rc, seconds, timeout, log, note
  env.log          "ENV key=value" lines: GPU, driver, versions, library dirs
  conformance.log  conformance.cpp's build and output
  gotest.log       cudnn.test -test.v: "RESULT <name> max_<x>_err=<v> tol=<t>"
                   (the name may hold spaces)
                   lines and the --- PASS/FAIL/SKIP lines
  gobench.log      cudnn.test benchmarks (ns/op; several -test.count runs)
  torch.json       torch_bench.py's results

A missing or broken input becomes a FAIL row that says why; this script
itself never fails on bad input.
"""

import json
import math
import os
import re
import statistics
import sys

TESTS = ["TestOps", "TestConvFP16", "TestGoldenForward", "TestTrainStep", "TestBadCalls"]
SIZES = [640, 416, 320]
GOAL_RATIO = 0.5  # ours / PyTorch eager at 640 FP16


def read(path, limit=None):
    try:
        with open(path, errors="replace") as f:
            s = f.read()
    except OSError:
        return None
    return s if limit is None else s[-limit:]


def section(text, step):
    """The part of a shared log that run.sh wrote for one step."""
    if not text:
        return text
    lines = text.splitlines()
    start = None
    for i, l in enumerate(lines):
        if l.startswith("== %s (limit" % step) or l.startswith("== %s: SKIPPED" % step):
            start = i
    if start is None:
        return text
    end = len(lines)
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("== %s: " % step):
            end = i + 1
            break
    return "\n".join(lines[start:end])


def tail(text, n=8, width=200):
    if not text:
        return []
    lines = [l.rstrip() for l in text.splitlines() if l.strip()]
    return [l[:width] for l in lines[-n:]]


def fnum(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return float("nan")


def fmt_ms(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return "%.3f" % v


def cell(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------


def parse_steps(out):
    steps = []
    text = read(os.path.join(out, "steps.tsv")) or ""
    for line in text.splitlines()[1:]:
        f = line.split("\t")
        if len(f) < 6:
            continue
        name, rc, secs, limit, logf, note = f[:6]
        if rc == "skip":
            st = "SKIPPED"
        elif rc == "0":
            st = "PASS"
        elif rc in ("124", "137"):
            st = "TIMEOUT"
        else:
            st = "FAIL"
        steps.append({"name": name, "rc": rc, "secs": secs, "limit": limit, "log": logf, "note": note, "status": st})
    return steps


def parse_env(out):
    env = {}
    for line in (read(os.path.join(out, "env.log")) or "").splitlines():
        if line.startswith("ENV ") and "=" in line:
            k, v = line[4:].split("=", 1)
            env[k.strip()] = v.strip()
    return env


def parse_gotest(text):
    """Returns results [(test, name, metric, value, tol)], status {test: st},
    messages {test: [lines]}, panics [lines]."""
    results, status, msgs, panics = [], {}, {}, []
    cur = None
    lines = (text or "").splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^=== (?:RUN|CONT|NAME|PAUSE)\s+(\S+)", line)
        if m:
            cur = m.group(1)
            continue
        m = re.match(r"^\s*--- (PASS|FAIL|SKIP): (\S+) \(([\d.]+)s\)", line)
        if m:
            status[m.group(2)] = m.group(1)
            continue
        m = re.search(r"RESULT (.+?) (max_\w+?)=(\S+) tol=(\S+)", line)
        if m:
            results.append((cur or "?", m.group(1), m.group(2), fnum(m.group(3)), fnum(m.group(4))))
            continue
        if line.startswith("panic:") or line.startswith("fatal error:"):
            panics.extend(l.rstrip()[:200] for l in lines[i : i + 12])
            continue
        if cur and line.startswith("    ") and line.strip():
            msgs.setdefault(cur, []).append(line.strip()[:200])
    return results, status, msgs, panics


def gpu_line(text):
    """What infer/cudnn reported loading (testLib's "GPU: ..." log line)."""
    for line in (text or "").splitlines():
        m = re.search(r"\bGPU: (.*)", line)
        if m:
            return m.group(1).strip()[:300]
    return None


def parse_bench(text):
    bench = {}
    for line in (text or "").splitlines():
        m = re.match(r"^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+([\d.]+) ns/op", line)
        if m:
            bench.setdefault(m.group(1), []).append(float(m.group(3)) / 1e6)
    return bench


# ---------------------------------------------------------------------------


def main(out):
    md = []
    steps = parse_steps(out)
    env = parse_env(out)
    torch = {}
    tj = read(os.path.join(out, "torch.json"))
    torch_err = None
    if tj:
        try:
            torch = json.loads(tj)
        except ValueError as e:
            torch_err = "torch.json: %s" % e
    gotext = read(os.path.join(out, "gotest.log"))
    results, tstatus, tmsgs, panics = parse_gotest(gotext)
    bench = parse_bench(read(os.path.join(out, "gobench.log")))
    conf = read(os.path.join(out, "conformance.log")) or ""
    failures = []  # (what, why lines)

    md.append("# infer/cudnn device check")
    md.append("")
    tenv = torch.get("env", {})
    facts = [
        ("GPU", env.get("gpu") or tenv.get("gpu") or "?"),
        ("driver", env.get("driver", "?")),
        ("CUDA (driver)", env.get("cuda_driver", "?")),
        ("ours", gpu_line(gotext) or "?"),
        ("torch", "%s (CUDA %s, cuDNN %s)" % (tenv.get("torch", "?"), tenv.get("cuda", "?"), tenv.get("cudnn", "?"))),
        ("host", env.get("host", "?")),
        ("date", env.get("date", "?")),
    ]
    md.append("; ".join("%s: %s" % (k, cell(v)) for k, v in facts))
    md.append("")

    # -- steps
    md.append("## Steps")
    md.append("")
    md.append("| step | status | exit | seconds (limit) | log | note |")
    md.append("|---|---|---|---|---|---|")
    for s in steps:
        md.append(
            "| %s | %s | %s | %s (%s) | %s | %s |"
            % (s["name"], s["status"], s["rc"], s["secs"], s["limit"], s["log"], cell(s["note"]))
        )
        if s["status"] != "PASS":
            why = tail(section(read(os.path.join(out, s["log"])), s["name"]), 8) if s["log"] else []
            failures.append(("step %s: %s (exit %s) %s" % (s["name"], s["status"], s["rc"], s["note"]), why))
    if not steps:
        md.append("| (steps.tsv missing) | FAIL | - | - | - | run.sh did not record its steps |")
    md.append("")

    # -- conformance
    md.append("## ABI conformance (api.h vs the real headers)")
    md.append("")
    md.append("| check | result |")
    md.append("|---|---|")
    n = 0
    for line in conf.splitlines():
        if re.match(r"^(headers|mode|constants|layout|signatures|libraries|versions|include):", line):
            md.append("| %s | %s |" % tuple(cell(x.strip()) for x in line.split(":", 1)))
            n += 1
    verdict = "CONFORMANCE OK" in conf and "CONFORMANCE FAILED" not in conf
    errs = [l.strip()[:220] for l in conf.splitlines() if "error:" in l or l.strip().startswith("FAIL")]
    md.append("| **verdict** | %s |" % ("PASS (CONFORMANCE OK)" if verdict else "FAIL"))
    if not verdict:
        failures.append(("conformance", errs[:15] or tail(conf, 10)))
    md.append("")

    # -- correctness
    md.append("## Correctness (ours vs the CPU device, vs golden PyTorch outputs)")
    md.append("")
    md.append("| test | check | metric | value | tol | result |")
    md.append("|---|---|---|---|---|---|")
    bad_results = 0
    for test, name, metric, v, tol in results:
        ok = not math.isnan(v) and not math.isnan(tol) and v <= tol
        bad_results += not ok
        md.append("| %s | %s | %s | %.3g | %.3g | %s |" % (test, name, metric, v, tol, "PASS" if ok else "FAIL"))
    if not results:
        md.append("| - | (no RESULT lines) | - | - | - | FAIL |")
    for t in TESTS:
        st = tstatus.get(t, "NOT RUN")
        md.append("| %s | go test verdict | - | - | - | %s |" % (t, st))
        if st not in ("PASS",):
            lines = [l for l in tmsgs.get(t, []) if "RESULT" not in l]
            for sub, sst in tstatus.items():
                if sub.startswith(t + "/") and sst == "FAIL":
                    lines += ["%s: %s" % (sub, l) for l in tmsgs.get(sub, []) if "RESULT" not in l][:4]
            failures.append(("go test %s: %s" % (t, st), lines[:12]))
    for prec, g in sorted(torch.get("golden", {}).items()):
        for k in ("p3", "p4", "p5"):
            if k in g:
                ok = g[k] <= g.get("tol", 0)
                md.append(
                    "| torch eager (baseline) | golden/%s/%s | max_abs_err | %.3g | %.3g | %s |"
                    % (prec, k, g[k], g.get("tol", float("nan")), "PASS" if ok else "FAIL (baseline)")
                )
    if panics:
        failures.append(("go test panicked", panics))
    md.append("")

    # -- latency
    md.append("## Forward latency, batch 1 (ms)")
    md.append("")
    md.append(
        "Ours: `BenchmarkForward` ns/op, median of the -test.count runs (host input in, raw outputs back on the host). "
        "PyTorch eager: median (p90) of 200 iterations after 20 warm-ups; *e2e* = host float32 input in and outputs "
        "back as float32 on the host (what ours does), *device* = tensors already on the GPU. "
        "fp32 rows: PyTorch with TF32 allowed (its default for convolutions); *fp32strict*: TF32 off. "
        "Goal: ours/PyTorch <= %.1f at 640 fp16." % GOAL_RATIO
    )
    md.append("")
    md.append("| size | precision | ours ms (runs) | torch e2e ms (p90) | torch device ms | ours / torch e2e | ours / torch device | goal |")
    md.append("|---|---|---|---|---|---|---|---|")
    fe2e, fdev = torch.get("forward_e2e", {}), torch.get("forward", {})
    for size in SIZES:
        for prec in ("fp32", "fp32strict", "fp16"):
            ours_key = "BenchmarkForward/size=%d/%s" % (size, "fp32" if prec == "fp32strict" else prec)
            runs = bench.get(ours_key, [])
            ours = statistics.median(runs) if runs else None
            te, td = fe2e.get("%d/%s" % (size, prec)), fdev.get("%d/%s" % (size, prec))
            te_m = te["median_ms"] if te else None
            td_m = td["median_ms"] if td else None
            r_e = ours / te_m if ours and te_m else None
            r_d = ours / td_m if ours and td_m else None
            goal = ""
            if size == 640 and prec == "fp16":
                goal = "-" if r_e is None else ("MET" if r_e <= GOAL_RATIO else "NOT MET")
            md.append(
                "| %d | %s | %s | %s | %s | %s | %s | %s |"
                % (
                    size,
                    prec,
                    ("%s (%d)" % (fmt_ms(ours), len(runs))) if runs else "-",
                    ("%s (%s)" % (fmt_ms(te_m), fmt_ms(te["p90_ms"]))) if te else "-",
                    fmt_ms(td_m),
                    "-" if r_e is None else "%.2f" % r_e,
                    "-" if r_d is None else "%.2f" % r_d,
                    goal,
                )
            )
    md.append("")

    # -- training
    md.append("## Training step (ms)")
    md.append("")
    runs = bench.get("BenchmarkTrainStep", [])
    ours = statistics.median(runs) if runs else None
    md.append(
        "Ours: `BenchmarkTrainStep`, yolov7-tiny training form (BatchNorm on batch statistics, aux head), batch 8, "
        "320x320, forward + backward, FP32, median of the runs: **%s** (%d runs). PyTorch: the deploy-form network "
        "(no BatchNorm, no aux head) forward + backward + SGD step, batch 8, 320: a lower bound of a real step."
        % (fmt_ms(ours), len(runs))
    )
    md.append("")
    md.append("| PyTorch variant | torch ms (p90) | ours / torch |")
    md.append("|---|---|---|")
    for key, r in sorted(torch.get("train", {}).items()):
        ratio = "-" if not ours else "%.2f" % (ours / r["median_ms"])
        md.append("| %s | %s (%s) | %s |" % (key, fmt_ms(r["median_ms"]), fmt_ms(r["p90_ms"]), ratio))
    if not torch.get("train"):
        md.append("| (no PyTorch training timings) | - | - |")
    md.append("")

    for e in torch.get("errors", []):
        failures.append(("torch_bench: %s" % e, []))
    if torch_err:
        failures.append((torch_err, []))

    # -- verdict and failures
    ok = all(s["status"] == "PASS" for s in steps) and steps and verdict and not bad_results
    ok = ok and all(tstatus.get(t) == "PASS" for t in TESTS)
    md.insert(2, "**Overall: %s**" % ("PASS" if ok else "FAIL (see Failures)"))
    md.insert(3, "")
    if failures:
        md.append("## Failures")
        md.append("")
        for what, why in failures:
            md.append("- %s" % cell(what))
            if why:
                md.append("")
                md.append("  ```")
                md.extend("  " + l for l in why)
                md.append("  ```")
        md.append("")
    text = "\n".join(md) + "\n"
    with open(os.path.join(out, "gpu-check.md"), "w") as f:
        f.write(text)
    return text


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: table.py OUT", file=sys.stderr)
        sys.exit(2)
    try:
        sys.stdout.write(main(sys.argv[1]))
    except Exception as e:  # never lose the table entirely
        msg = "# infer/cudnn device check\n\n**table.py failed: %r**; the raw logs are beside this file.\n" % (e,)
        with open(os.path.join(sys.argv[1], "gpu-check.md"), "w") as f:
            f.write(msg)
        sys.stdout.write(msg)
        sys.exit(1)
