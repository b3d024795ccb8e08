#!/usr/bin/env python3
"""torch_bench.py: the PyTorch eager baseline of the device check (run.sh).

Rebuilds the deploy-form network that dump (dump/main.go) wrote as
layers.json + .npy files, with torch.nn.functional ops, exactly as tiny's
Plan runs it: conv2d with bias and zero padding, ReLU / LeakyReLU(0.1),
max_pool2d with padding, nearest 2x upsampling, channel concat, and the
detect convs' raw outputs viewed (1, na, no, H, W) and permuted to
1 x na x H x W x no.

Then, on the GPU (torch.backends.cudnn.benchmark = True, NCHW):
  1. golden: the raw outputs on golden/input.npy against golden/relu_raw_p*.npy
     (max abs error), in FP32 without TF32, FP32 with TF32 (PyTorch's
     default for convolutions) and FP16 (.half());
  2. forward latency, batch 1, at each size, 20 warm-up and 200 timed
     iterations (torch.cuda.synchronize after each; median and p90 ms):
     "forward" = device tensors in and out; "forward_e2e" = a float32 host
     input copied in and every output copied back as float32 (what
     tiny.Plan.Forward does on our Device);
     precisions "fp32" (TF32 allowed, PyTorch's default), "fp32strict"
     (TF32 off) and "fp16";
  3. a training step: the deploy network (no BatchNorm, no aux head: a
     training-form model cannot be rebuilt from deploy weights) at batch 8,
     320x320, forward + backward of the sum of the outputs' means + an SGD
     step (momentum 0.937, nesterov, weight decay 5e-4), in FP32 (TF32
     allowed), FP32 strict and AMP (autocast FP16 + GradScaler). It is a
     lower bound for yolov7-tiny's real training step, labelled as such.

Output: "TORCH <what> <ms>" lines on stdout and --json FILE.

--numpy-selftest runs the same network-building code with a NumPy backend
on the CPU at 640 and compares with the golden outputs: a check of
layers.json's semantics on a machine without torch (a few seconds).
"""

import argparse
import json
import os
import statistics
import sys
import time


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------------------
# The network, independent of the backend.


class Net:
    """The deploy-form network of layers.json, on an ops backend."""

    def __init__(self, doc, params, ops):
        if doc.get("format") != 1:
            raise ValueError("layers.json: unknown format %r" % doc.get("format"))
        self.doc, self.p, self.ops = doc, params, ops
        self.slope = float(doc.get("leaky_slope", 0.1))
        self.layers = doc["layers"]
        for i, l in enumerate(self.layers):
            if l["index"] != i:
                raise ValueError("layers.json: layer %d has index %d" % (i, l["index"]))
            for f in l["from"]:
                if not -1 <= f < i:
                    raise ValueError("layers.json: layer %d reads %d" % (i, f))
        # The last use of every output, so that memory can be released early.
        self.last_use = {}
        for i, l in enumerate(self.layers):
            for f in l["from"]:
                self.last_use[f] = i

    def _act(self, y, act):
        if act == "relu":
            return self.ops.relu(y)
        if act == "leaky":
            return self.ops.leaky(y, self.slope)
        if act == "none":
            return y
        raise ValueError("unknown activation %r" % act)

    def _conv(self, x, c):
        y = self.ops.conv(x, self.p[c["weight"]], self.p[c["bias"]], c["s"], c["pad"])
        return self._act(y, c["act"])

    def __call__(self, x):
        outs = {-1: x}
        raw = None
        for i, l in enumerate(self.layers):
            xs = [outs[f] for f in l["from"]]
            kind = l["kind"]
            if kind == "Conv":
                y = self._conv(xs[0], l["conv"])
            elif kind == "MaxPool":
                y = self.ops.maxpool(xs[0], l["k"], l["s"], l.get("pad", 0))
            elif kind == "Concat":
                y = self.ops.cat(xs)
            elif kind == "Upsample":
                y = self.ops.up2(xs[0])
            elif kind == "IDetect":
                raw = [self.ops.head(self._conv(xi, c), l["na"], l["no"]) for xi, c in zip(xs, l["convs"])]
                y = None
            else:
                raise ValueError("layer %d: unknown kind %r" % (i, kind))
            outs[i] = y
            for f in l["from"]:
                if self.last_use.get(f) == i and f != -1:
                    del outs[f]
        if raw is None:
            raise ValueError("layers.json has no IDetect layer")
        return raw


def load_model_dir(d, load_npy):
    with open(os.path.join(d, "layers.json")) as f:
        doc = json.load(f)
    params = {}
    for name, shape in doc["params"].items():
        a = load_npy(os.path.join(d, name))
        if list(a.shape) != list(shape):
            raise ValueError("%s: shape %s, layers.json says %s" % (name, a.shape, shape))
        params[name] = a
    return doc, params


def golden_files(gdir):
    return os.path.join(gdir, "input.npy"), [os.path.join(gdir, "relu_raw_p%d.npy" % k) for k in (3, 4, 5)]


# ---------------------------------------------------------------------------
# NumPy backend (self-test only).


class NumpyOps:
    def __init__(self, np):
        self.np = np

    def conv(self, x, w, b, s, pad):
        np = self.np
        n, c, h, wd = x.shape
        o, ci, k, _ = w.shape
        assert n == 1 and ci == c, (x.shape, w.shape)
        xp = np.pad(x[0], ((0, 0), (pad, pad), (pad, pad)))
        ho, wo = (h + 2 * pad - k) // s + 1, (wd + 2 * pad - k) // s + 1
        cols = np.empty((c, k, k, ho, wo), dtype=np.float32)
        for i in range(k):
            for j in range(k):
                cols[:, i, j] = xp[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s]
        y = w.reshape(o, -1) @ cols.reshape(c * k * k, ho * wo) + b[:, None]
        return y.reshape(1, o, ho, wo).astype(np.float32)

    def relu(self, y):
        return self.np.maximum(y, 0)

    def leaky(self, y, slope):
        return self.np.where(y >= 0, y, y * self.np.float32(slope))

    def maxpool(self, x, k, s, pad):
        np = self.np
        n, c, h, w = x.shape
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
        ho, wo = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
        y = np.full((n, c, ho, wo), -np.inf, dtype=np.float32)
        for i in range(k):
            for j in range(k):
                np.maximum(y, xp[:, :, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s], out=y)
        return y

    def up2(self, x):
        return x.repeat(2, axis=2).repeat(2, axis=3)

    def cat(self, xs):
        return self.np.concatenate(xs, axis=1)

    def head(self, y, na, no):
        n, c, h, w = y.shape
        return y.reshape(n, na, no, h, w).transpose(0, 1, 3, 4, 2)


def numpy_selftest(args):
    import numpy as np

    doc, params = load_model_dir(args.model_dir, lambda p: np.load(p).astype(np.float32))
    inp, refs = golden_files(args.golden_dir)
    x = np.load(inp).astype(np.float32)
    t0 = time.time()
    outs = Net(doc, params, NumpyOps(np))(x)
    ok = True
    for k, (o, r) in enumerate(zip(outs, refs)):
        ref = np.load(r)
        if o.shape != ref.shape:
            log("NUMPY golden/p%d shape %s, golden %s: FAIL" % (k + 3, o.shape, ref.shape))
            ok = False
            continue
        err = float(np.abs(o - ref).max())
        good = err <= 1e-3
        ok = ok and good
        log("NUMPY golden/p%d max_abs_err=%.3g tol=1e-3 %s" % (k + 3, err, "PASS" if good else "FAIL"))
    log("NUMPY forward 640 on the CPU: %.1f s" % (time.time() - t0))
    return 0 if ok else 1


# ---------------------------------------------------------------------------
# PyTorch backend.


def torch_ops():
    import torch
    import torch.nn.functional as F

    class TorchOps:
        def conv(self, x, w, b, s, pad):
            return F.conv2d(x, w, b, stride=s, padding=pad)

        def relu(self, y):
            return F.relu(y)

        def leaky(self, y, slope):
            return F.leaky_relu(y, slope)

        def maxpool(self, x, k, s, pad):
            return F.max_pool2d(x, k, s, pad)

        def up2(self, x):
            return F.interpolate(x, scale_factor=2, mode="nearest")

        def cat(self, xs):
            return torch.cat(xs, 1)

        def head(self, y, na, no):
            n, c, h, w = y.shape
            return y.view(n, na, no, h, w).permute(0, 1, 3, 4, 2).contiguous()

    return TorchOps()


def timed(fn, warmup, iters, sync):
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return {
        "median_ms": statistics.median(ts),
        "p90_ms": ts[min(len(ts) - 1, int(round(0.9 * (len(ts) - 1))))],
        "min_ms": ts[0],
        "iters": iters,
    }


def set_tf32(torch, on):
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on


def torch_main(args):
    res = {"env": {}, "golden": {}, "forward": {}, "forward_e2e": {}, "train": {}, "errors": []}

    def save():
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1, sort_keys=True)

    try:
        import numpy as np
        import torch
    except ImportError as e:
        res["errors"].append("import: %r" % (e,))
        save()
        log("TORCH error: %r" % (e,))
        return 1

    if not torch.cuda.is_available():
        res["errors"].append("torch.cuda.is_available() is False")
        save()
        log("TORCH error: no CUDA device visible to torch")
        return 1
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    res["env"] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "gpu": torch.cuda.get_device_name(0),
        "capability": "%d.%d" % torch.cuda.get_device_capability(0),
    }
    log("TORCH env %s" % json.dumps(res["env"], sort_keys=True))
    doc, params_np = load_model_dir(args.model_dir, lambda p: np.load(p).astype(np.float32))
    p32 = {k: torch.from_numpy(v).to(dev) for k, v in params_np.items()}
    p16 = {k: v.half() for k, v in p32.items()}
    ops = torch_ops()
    net32, net16 = Net(doc, p32, ops), Net(doc, p16, ops)
    status = 0

    # 1. golden
    try:
        inp, refs = golden_files(args.golden_dir)
        x = torch.from_numpy(np.load(inp).astype(np.float32)).to(dev)
        refs = [np.load(r) for r in refs]
        for prec, net, tf32, tol in (
            ("fp32strict", net32, False, 1e-3),
            ("fp32", net32, True, 1e-3),
            # FP16: the bound of infer/cudnn's TestGoldenForward (fp16RawTol):
            # rounding the weights alone to half moves the logits by ~0.25.
            ("fp16", net16, False, 1.0),
        ):
            set_tf32(torch, tf32)
            with torch.inference_mode():
                outs = net(x.half() if prec == "fp16" else x)
            g = {}
            for k, (o, r) in enumerate(zip(outs, refs)):
                o = o.float().cpu().numpy()
                if o.shape != r.shape:
                    raise ValueError("p%d: shape %s, golden %s" % (k + 3, o.shape, r.shape))
                err = float(np.abs(o - r).max())
                g["p%d" % (k + 3)] = err
                log("TORCH golden/%s/p%d max_abs_err=%.3g tol=%.3g" % (prec, k + 3, err, tol))
            g["tol"] = tol
            g["max"] = max(v for kk, v in g.items() if kk.startswith("p"))
            res["golden"][prec] = g
    except Exception as e:  # the timings are still worth having
        res["errors"].append("golden: %r" % (e,))
        log("TORCH error golden: %r" % (e,))
        status = 1
    save()

    sync = torch.cuda.synchronize

    # 2. forward latency
    for size in args.sizes:
        for prec in ("fp32", "fp32strict", "fp16"):
            try:
                set_tf32(torch, prec == "fp32")
                net = net16 if prec == "fp16" else net32
                xh = torch.rand(1, 3, size, size)  # host float32, pageable, as a Go slice
                xd = xh.to(dev)
                if prec == "fp16":
                    xd = xd.half()

                def fwd():
                    with torch.inference_mode():
                        net(xd)

                def e2e():
                    with torch.inference_mode():
                        xi = xh.to(dev)
                        if prec == "fp16":
                            xi = xi.half()
                        return [o.float().cpu() for o in net(xi)]

                key = "%d/%s" % (size, prec)
                r = timed(fwd, args.warmup, args.iters, sync)
                res["forward"][key] = r
                log("TORCH forward/%s %.4f p90=%.4f" % (key, r["median_ms"], r["p90_ms"]))
                r = timed(e2e, args.warmup, args.iters, sync)
                res["forward_e2e"][key] = r
                log("TORCH forward_e2e/%s %.4f p90=%.4f" % (key, r["median_ms"], r["p90_ms"]))
            except Exception as e:
                res["errors"].append("forward %d/%s: %r" % (size, prec, e))
                log("TORCH error forward %d/%s: %r" % (size, prec, e))
                status = 1
            save()

    # 3. training step of the deploy network (a lower bound; see the doc)
    for mode in ("fp32", "fp32strict", "amp"):
        try:
            set_tf32(torch, mode != "fp32strict")
            params = {k: v.clone().requires_grad_(True) for k, v in p32.items()}
            net = Net(doc, params, ops)
            opt = torch.optim.SGD(params.values(), lr=1e-9, momentum=0.937, nesterov=True, weight_decay=5e-4)
            scaler = torch.amp.GradScaler("cuda") if mode == "amp" else None
            xb = torch.rand(args.train_batch, 3, args.train_size, args.train_size, device=dev)

            def step():
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    with torch.autocast("cuda", dtype=torch.float16):
                        loss = sum(o.float().mean() for o in net(xb))
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss = sum(o.mean() for o in net(xb))
                    loss.backward()
                    opt.step()

            key = "deploy_b%d_%d/%s" % (args.train_batch, args.train_size, mode)
            r = timed(step, args.warmup, args.train_iters, sync)
            r["what"] = "deploy-form network (no BN, no aux head), fwd+bwd+SGD: a lower bound of a real train step"
            res["train"][key] = r
            log("TORCH train/%s %.4f p90=%.4f" % (key, r["median_ms"], r["p90_ms"]))
        except Exception as e:
            res["errors"].append("train %s: %r" % (mode, e))
            log("TORCH error train %s: %r" % (mode, e))
            status = 1
        save()
    return status


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True, help="dump's output: layers.json and the .npy files")
    ap.add_argument("--golden-dir", required=True, help="input.npy and relu_raw_p{3,4,5}.npy")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--sizes", type=int, nargs="+", default=[640, 416, 320])
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--train-iters", type=int, default=200)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-size", type=int, default=320)
    ap.add_argument("--numpy-selftest", action="store_true", help="check the network on the CPU with NumPy")
    args = ap.parse_args()
    if args.numpy_selftest:
        return numpy_selftest(args)
    return torch_main(args)


if __name__ == "__main__":
    sys.exit(main())
