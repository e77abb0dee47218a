#!/usr/bin/env python3
"""Draws images from a one-step generator that disback distilled from a
diffusers UNet2DModel, with PyTorch and diffusers only:

    python sample.py --latents z.safetensors --out grid.png
    python sample.py --latents check.safetensors --out images.safetensors

The latents file holds `z` (N, C, H, W), standard normal; `.png` writes a
grid, `.safetensors` the tensor `images` in the data's range [-1, 1].
check.safetensors beside this script holds latents `z` and the `images`
disback drew from them: the two must agree.

The generator is the teacher's U-Net (unet/, with its own weights now)
called once, at one noise level sigma_g (one_step.json):

    x = sigma_g * z                              z as a noisy image at sigma_g
    F = unet(c_in * x, timestep).sample          the VP model's input scale and
                                                 the timestep whose noise level
                                                 is nearest sigma_g
    image = c_skip * x + c_out * F               its prediction as a clean image

with c_in = 1 / sqrt(1 + sigma_g^2) and, per prediction type, (c_skip, c_out)
= (1, -sigma_g) for epsilon, (c_in^2, -sigma_g c_in) for v_prediction and
(0, 1) for sample (Karras et al. 2022, appendix C.3).
"""
import argparse
import json
import os
import struct
import zlib

import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))


@torch.no_grad()
def generate(unet, step, z, batch=64):
    """The generator's images for latents z, `batch` at a time."""
    timestep = torch.full((batch,), float(step["timestep"]), device=z.device)
    images = []
    for chunk in z.split(batch):
        x = step["sigma_g"] * chunk
        f = unet(step["c_in"] * x, timestep[: len(chunk)]).sample
        images.append(step["c_skip"] * x + step["c_out"] * f)
    return torch.cat(images)


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
    parser.add_argument("--latents", required=True, help="a safetensors file with `z` (N, C, H, W)")
    parser.add_argument("--out", required=True, help="a .png grid or a .safetensors file (`images`)")
    parser.add_argument("--device", default="cpu", help="cpu (default, as check.safetensors was made) or cuda")
    args = parser.parse_args()
    with open(os.path.join(HERE, "one_step.json")) as f:
        step = json.load(f)
    unet, loading = UNet2DModel.from_pretrained(os.path.join(HERE, "unet"), output_loading_info=True)
    if any(loading.values()):  # missing, unexpected or misshapen weights: not this generator
        raise SystemExit(f"unet/ does not load strictly: {loading}")
    unet = unet.to(args.device).eval()
    z = load_file(args.latents)["z"].to(args.device, torch.float32)
    if tuple(z.shape[1:]) != tuple(step["latent_shape"]):
        raise SystemExit(f"{args.latents}: z has shape {tuple(z.shape)}, the generator takes (N, {step['latent_shape']})")
    images = generate(unet, step, z).cpu()
    if args.out.endswith(".png"):
        write_png(args.out, images)
    else:
        save_file({"images": images.contiguous()}, args.out)
    print(f"wrote {len(images)} images to {args.out}")


if __name__ == "__main__":
    main()
