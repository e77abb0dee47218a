"""PyTorch's side of `cargo bench --bench unet_ops -- cifar`: the same
DDPM-CIFAR-10 U-Net ops at batch 8 (convolutions, group norms with 32
groups, one-head attention as diffusers' `Attention` runs it), forward and
forward + backward with a fixed gradient arriving at the output, one line
per op in the same layout. Both sides record the graph in the forward and
start every backward with no gradients held.

    python3 benches/unet_ops.py --threads 2

The shapes are read from benches/unet_ops/cifar.rs so the two cannot drift.
"""

import argparse
import os
import re
import time

import torch
import torch.nn.functional as F

BATCH = 8
HERE = os.path.dirname(os.path.abspath(__file__))


def shapes(name):
    """A `const NAME: [...] = [(..), ..];` table of cifar.rs as tuples."""
    with open(os.path.join(HERE, "unet_ops", "cifar.rs")) as f:
        text = f.read()
    body = re.search(rf"const {name}: [^=]*= \[(.*?)\];", text, re.S).group(1)
    return [tuple(int(v) for v in t.split(",")) for t in re.findall(r"\(([\d, ]+)\)", body)]


def repeats(side):
    return {32: 3, 16: 6}.get(side, 20)


def timed(n, op, leaves):
    """Milliseconds per forward, and per forward + backward with a fixed
    gradient arriving at the output, each the best of three rounds;
    `leaves`, the op's tensors that take a gradient, start every backward
    with none held (as candle's fresh gradient store does)."""
    upstream = torch.randn(op().shape)

    def step():
        for t in leaves:
            t.grad = None
        op().backward(upstream)

    step()
    return best_of_three(n, op), best_of_three(n, step)


def best_of_three(n, run):
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            run()
        best = min(best, (time.perf_counter() - start) * 1e3 / n)
    return best


def var(*shape):
    return torch.randn(*shape, requires_grad=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"# PyTorch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}: "
          "ms forward, ms forward + backward")
    for cin, cout, side, k, s in shapes("CONVS"):
        x, w, b = var(BATCH, cin, side, side), var(cout, cin, k, k), var(cout)
        fwd, both = timed(repeats(side), lambda: F.conv2d(x, w, b, stride=s, padding=k // 2), [x, w, b])
        print(f"{f'conv {cin}->{cout} {side}x{side} k{k} s{s}':<32} {fwd:>9.2f} {both:>9.2f}")
    for c, side in shapes("NORMS"):
        x, w, b = var(BATCH, c, side, side), var(c), var(c)
        fwd, both = timed(repeats(side), lambda: F.group_norm(x, 32, w, b, 1e-6), [x, w, b])
        print(f"{f'group norm {c} {side}x{side}':<32} {fwd:>9.2f} {both:>9.2f}")
    for c, side in shapes("ATTENTIONS"):
        lin = [torch.nn.Linear(c, c) for _ in range(4)]
        x = var(BATCH * side * side, c)

        def block():
            # diffusers' AttnProcessor2_0 with one head: SDPA on (B, 1, P, C).
            q, k, v = (l(x).view(BATCH, 1, side * side, c) for l in lin[:3])
            mixed = F.scaled_dot_product_attention(q, k, v)
            return lin[3](mixed.reshape(BATCH * side * side, c))

        fwd, both = timed(repeats(side), block, [x, *(p for l in lin for p in l.parameters())])
        print(f"{f'attention {c} {side}x{side}':<32} {fwd:>9.2f} {both:>9.2f}")


if __name__ == "__main__":
    main()
