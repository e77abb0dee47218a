#!/usr/bin/env python3
"""Draws samples from a one-step generator disback trained, its network
rebuilt in plain PyTorch from generator.json and generator.safetensors:

    python sample.py --latents z.safetensors --out samples.safetensors
    python sample.py --latents check.safetensors --out grid.png    (images)
    python sample.py --n 1000 --seed 0 --out points.csv            (2-D points)

The latents file holds `z` (N, ...the latent's shape), standard normal.
`.safetensors` writes `images` (N, C, H, W) in [-1, 1] or `samples` (N, dim);
`.png` a grid of images, `.csv` points (header x,y; x0,x1,... when dim > 2). check.safetensors
beside this script holds latents `z` and what disback drew from them.

generator.json says which network it is:
- mlp-generator: G(z) = MLP(sigma_init z), SiLU between layers (the paper's
  2-D toy);
- mlp-denoiser, unet-denoiser: the teacher's network called once, at the
  noise level sigma_g, G(z) = D(sigma_g z; sigma_g), with EDM's
  preconditioning (Karras et al. 2022):
      D(x; s) = c_skip x + c_out F(c_in x, emb(ln(s) / 4))
      c_skip = d^2 / (s^2 + d^2), c_out = s d / sqrt(s^2 + d^2),
      c_in = 1 / sqrt(s^2 + d^2),  d = sigma_data.
Needs torch and safetensors only.
"""
import argparse
import json
import math
import os
import struct
import zlib

import torch
import torch.nn.functional as fn
from safetensors.torch import load_file, save_file
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


def fourier(c_noise, emb_dim):
    """sin and cos of c_noise at frequencies geometric from 1 to 32."""
    half = emb_dim // 2
    freqs = [1.0] if half == 1 else [32.0 ** (k / (half - 1)) for k in range(half)]
    return torch.tensor([math.sin(c_noise * f) for f in freqs] + [math.cos(c_noise * f) for f in freqs])


class MlpGenerator(nn.Module):
    def __init__(self, s):
        super().__init__()
        dims = [s["latent_dim"]] + [s["width"]] * s["depth"]
        self.layers = nn.ModuleList(nn.Linear(dims[i], s["width"]) for i in range(s["depth"]))
        self.output = nn.Linear(dims[-1], s.get("dim", 2))
        self.sigma_init = s["sigma_init"]

    def forward(self, z):
        layers = list(self.layers) + [self.output]
        h = layers[0](self.sigma_init * z)
        for layer in layers[1:]:
            h = layer(fn.silu(h))
        return h


class MlpBlock(nn.Module):
    """h + fc2(silu(fc1(silu(h)) + emb(e))): each block sees the noise again."""

    def __init__(self, width, emb_dim):
        super().__init__()
        self.fc1, self.emb, self.fc2 = nn.Linear(width, width), nn.Linear(emb_dim, width), nn.Linear(width, width)

    def forward(self, h, e):
        return h + self.fc2(fn.silu(self.fc1(fn.silu(h)) + self.emb(e)))


class MlpNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.emb_dim = c["emb_dim"]
        self.input = nn.Linear(c.get("dim", 2) + c["emb_dim"], c["width"])
        self.blocks = nn.ModuleList(MlpBlock(c["width"], c["emb_dim"]) for _ in range(c["blocks"]))
        self.output = nn.Linear(c["width"], c.get("dim", 2))

    def forward(self, x, e):
        h = self.input(torch.cat([x, e], 1))
        for block in self.blocks:
            h = block(h, e)
        return self.output(fn.silu(h))


class ResBlock(nn.Module):
    """(skip(x) + conv2(silu(norm2(conv1(silu(norm1 x)) (1 + scale) + shift)))) / sqrt 2."""

    def __init__(self, cin, cout, emb_width, groups):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_width, 2 * cout)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, e):
        h = self.conv1(fn.silu(self.norm1(x)))
        scale, shift = self.emb(e).reshape(len(h), 2, h.shape[1], 1, 1).unbind(1)
        h = self.conv2(fn.silu(self.norm2(h * (1 + scale) + shift)))
        return ((self.skip(x) if self.skip is not None else x) + h) / math.sqrt(2)


class Attention(nn.Module):
    """One head over the pixels, residual: (x + out(attention)) / sqrt 2."""

    def __init__(self, channels, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv, self.out = nn.Conv2d(channels, 3 * channels, 1), nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), -1)
        mixed = (v @ weights.transpose(1, 2)).reshape(b, c, h, w)
        return (x + self.out(mixed)) / math.sqrt(2)


class UNet(nn.Module):
    """disback's U-Net (src/model/unet.rs): levels of ResBlocks down with
    stride-2 convolutions, a middle, and back up with skip connections."""

    def __init__(self, c, image):
        super().__init__()
        ch, g, e, levels = c["channels"], c["groups"], 4 * c["channels"], len(c["multipliers"])
        self.emb_dim, self.levels, self.blocks = c["emb_dim"], levels, c["blocks"]
        width = [ch * m for m in c["multipliers"]]
        self.emb = nn.ModuleDict({"fc1": nn.Linear(c["emb_dim"], e), "fc2": nn.Linear(e, e)})
        self.conv_in = nn.Conv2d(image[0], width[0], 3, padding=1)
        skips, current = [width[0]], width[0]
        self.down = nn.ModuleDict()
        for level in range(levels):
            parts = nn.ModuleDict()
            for i in range(c["blocks"]):
                parts[str(i)] = ResBlock(current, width[level], e, g)
                current = width[level]
                skips.append(current)
            if level + 1 < levels:
                parts["down"] = nn.Conv2d(current, current, 3, stride=2, padding=1)
                skips.append(current)
            self.down[str(level)] = parts
        self.mid = nn.ModuleDict({"0": ResBlock(current, current, e, g), "1": ResBlock(current, current, e, g)})
        if c["attention"]:
            self.mid["attn"] = Attention(current, g)
        self.up = nn.ModuleDict()
        for level in reversed(range(levels)):
            parts = nn.ModuleDict()
            for i in range(c["blocks"] + 1):
                parts[str(i)] = ResBlock(current + skips.pop(), width[level], e, g)
                current = width[level]
            if level > 0:
                parts["up"] = nn.Conv2d(current, current, 3, padding=1)
            self.up[str(level)] = parts
        self.norm_out = nn.GroupNorm(g, current)
        self.conv_out = nn.Conv2d(current, image[0], 3, padding=1)

    def forward(self, x, e):
        e = fn.silu(self.emb["fc2"](fn.silu(self.emb["fc1"](e))))
        h = self.conv_in(x)
        skips = [h]
        for level in range(self.levels):
            parts = self.down[str(level)]
            for i in range(self.blocks):
                h = parts[str(i)](h, e)
                skips.append(h)
            if "down" in parts:
                h = parts["down"](h)
                skips.append(h)
        h = self.mid["0"](h, e)
        if "attn" in self.mid:
            h = self.mid["attn"](h)
        h = self.mid["1"](h, e)
        for level in reversed(range(self.levels)):
            parts = self.up[str(level)]
            for i in range(self.blocks + 1):
                h = parts[str(i)](torch.cat([h, skips.pop()], 1), e)
            if "up" in parts:
                h = parts["up"](fn.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(fn.silu(self.norm_out(h)))


class OneStep(nn.Module):
    """G(z) = D(sigma_g z; sigma_g): a denoiser called at one noise level."""

    def __init__(self, net, sigma_g, sigma_data):
        super().__init__()
        self.net = net
        s, d = sigma_g, sigma_data
        self.sigma_g, self.c_skip = s, d * d / (s * s + d * d)
        self.c_out, self.c_in = s * d / math.sqrt(s * s + d * d), 1 / math.sqrt(s * s + d * d)
        self.register_buffer("e", fourier(math.log(s) / 4, net.emb_dim), persistent=False)

    def forward(self, z):
        x = self.sigma_g * z
        e = self.e.expand(len(z), -1)
        return self.c_skip * x + self.c_out * self.net(self.c_in * x, e)


def build(arch):
    kind = arch["network"]
    if kind == "mlp-generator":
        return MlpGenerator(arch), [arch["latent_dim"]]
    if kind == "mlp-denoiser":
        return OneStep(MlpNet(arch["net"]), arch["sigma_g"], arch["sigma_data"]), [arch["net"].get("dim", 2)]
    if kind == "unet-denoiser":
        return OneStep(UNet(arch["net"], arch["image"]), arch["sigma_g"], arch["sigma_data"]), arch["image"]
    raise SystemExit(f"generator.json: unknown network {kind!r}")


def write_png(path, images, columns=8):
    """A grid of images in [-1, 1] as an RGB PNG (zlib and struct only)."""
    n, c, h, w = images.shape
    columns = min(columns, n)
    rows = (n + columns - 1) // columns
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if c == 1:
        pixels = pixels.expand(n, 3, h, w)
    grid = torch.zeros(3, rows * h, columns * w, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        grid[:, r * h:(r + 1) * h, col * w:(col + 1) * w] = pixels[i, :3]
    data = grid.permute(1, 2, 0).contiguous().numpy().tobytes()
    stride = 3 * columns * w
    raw = b"".join(b"\x00" + data[y * stride:(y + 1) * stride] for y in range(rows * h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", columns * w, rows * h, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latents", help="a safetensors file with `z`")
    parser.add_argument("--n", type=int, default=64, help="without --latents: this many fresh latents")
    parser.add_argument("--seed", type=int, default=0, help="without --latents: their seed")
    parser.add_argument("--out", required=True, help="a .safetensors, .png (images) or .csv (points) file")
    args = parser.parse_args()
    with open(os.path.join(HERE, "generator.json")) as f:
        model, latent = build(json.load(f))
    weights = load_file(os.path.join(HERE, "generator.safetensors"))
    # OneStep keeps the network as `net`; the file names the network's own.
    target = model.net if isinstance(model, OneStep) else model
    target.load_state_dict(weights, strict=True)
    model.eval()
    if args.latents:
        z = load_file(args.latents)["z"].float()
    else:
        z = torch.randn([args.n] + list(latent), generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        out = model(z)
    if args.out.endswith(".png"):
        write_png(args.out, out)
    elif args.out.endswith(".csv"):
        with open(args.out, "w") as f:
            dim = out.shape[1]
            header = "x,y" if dim == 2 else ",".join(f"x{d}" for d in range(dim))
            f.write(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in out.tolist()))
    else:
        save_file({"images" if out.dim() == 4 else "samples": out.contiguous()}, args.out)
    print(f"wrote {len(out)} samples to {args.out}")


if __name__ == "__main__":
    main()
