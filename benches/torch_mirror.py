#!/usr/bin/env python3
"""PyTorch mirror of disback's training work, for side-by-side timing.

The same networks as src/model/nets.rs and src/model/unet.rs:
  --net mlp:   the ResNet-MLP on 2-D points (input layer on [x, emb];
               blocks h += W2 silu(W1 silu(h) + E emb); zero-initialised
               output layer);
  --net unet:  the U-Net (conv_in, GroupNorm + SiLU residual blocks with the
               noise embedding as per-channel scale and shift, stride-2 conv
               down, nearest-neighbour up + conv, skip concatenation,
               zero-initialised last convs);
  --net diffusers --model DIR:  a diffusers UNet2DModel folder (a pipeline's
               or its unet/), diffusers' own network, with the EDM
               preconditioning of a VP model as src/model/edm.rs wraps one
               (input scaled by 1/√(1+σ²), the timestep of the nearest
               training σ, the output read by the scheduler's prediction
               type);
the same EDM preconditioning, and the same two workloads that
`disback bench` times:

  teacher step:   one denoising-score-matching update (Adam) at the
                  teacher batch;
  distill iter:   one DisBack/Diff-Instruct generator update (G(z) =
                  D(σ_g z; σ_g), target and fake score evaluated without
                  gradient, DMD-normalised surrogate loss, Adam) followed by
                  `fake_steps` DSM updates of the fake score on fresh
                  generator samples, and the moving average of the
                  generator's weights.

`disback bench --against-torch` runs it beside disback over a grid of
sizes; by hand, beside `disback bench --config configs/digits.toml`:

    python3 benches/torch_mirror.py --net unet --threads 1 --device cpu

and beside a pretrained teacher (`disback bench --worker --plain --config
C` with `teacher.pretrained = DIR`, whose teacher step the bench times on
procedural shapes of the teacher's image size):

    python3 benches/torch_mirror.py --net diffusers --model DIR --threads 2 \
        --teacher-batch 8 --distill-batch 4 --fake-steps 2

Prints one JSON line. Not needed by the build or tests.
"""

import argparse
import json
import math
import os
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--net", choices=["mlp", "unet", "diffusers"], default="mlp")
    p.add_argument("--model", default=None, help="--net diffusers: the model folder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--width", type=int, default=128, help="MLP hidden width")
    p.add_argument("--dim", type=int, default=2, help="MLP: the points' dimension (data.dim)")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--multipliers", default="1,2")
    p.add_argument("--blocks", type=int, default=None, help="default: 3 (MLP), 1 (U-Net)")
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--emb-dim", type=int, default=None, help="default: 16 (MLP), 32 (U-Net)")
    p.add_argument("--image", default="1,8,8")
    p.add_argument("--teacher-batch", type=int, default=128)
    p.add_argument("--distill-batch", type=int, default=64)
    p.add_argument("--fake-steps", type=int, default=1)
    p.add_argument("--ema", type=float, default=0.99)
    p.add_argument("--sigma-g", type=float, default=None, help="default: 0.5 (MLP), 2.5 (U-Net)")
    a = p.parse_args()
    mlp = a.net == "mlp"
    a.blocks = a.blocks if a.blocks is not None else (3 if mlp else 1)
    a.emb_dim = a.emb_dim if a.emb_dim is not None else (16 if mlp else 32)
    if mlp:
        a.image = str(a.dim)
    if a.net == "diffusers":
        if a.model is None:
            p.error("--net diffusers needs --model DIR")
        config = Diffusers.folders(a.model)[0]
        with open(os.path.join(config, "config.json")) as f:
            c = json.load(f)
        a.image = f"{c['in_channels']},{c['sample_size']},{c['sample_size']}"
    return a


class ResMLP(nn.Module):
    def __init__(self, a):
        super().__init__()
        w, e = a.width, a.emb_dim
        self.emb_dim = e
        self.input = nn.Linear(a.dim + e, w)
        self.blocks = nn.ModuleList(
            nn.ModuleList([nn.Linear(w, w), nn.Linear(e, w), nn.Linear(w, w)]) for _ in range(a.blocks)
        )
        self.output = nn.Linear(w, a.dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, x, emb):
        h = self.input(torch.cat([x, emb], 1))
        for fc1, proj, fc2 in self.blocks:
            h = h + fc2(F.silu(fc1(F.silu(h)) + proj(emb)))
        return self.output(F.silu(h))


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = h * (1 + scale) + shift
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.skip(x) if self.skip is not None else x
        return (skip + h) / math.sqrt(2)


class UNet(nn.Module):
    def __init__(self, a):
        super().__init__()
        mult = [int(m) for m in a.multipliers.split(",")]
        c_img = int(a.image.split(",")[0])
        e = 4 * a.channels
        width = [a.channels * m for m in mult]
        self.emb_dim = a.emb_dim
        self.emb1 = nn.Linear(a.emb_dim, e)
        self.emb2 = nn.Linear(e, e)
        self.conv_in = nn.Conv2d(c_img, width[0], 3, padding=1)
        skips, cur = [width[0]], width[0]
        self.down = nn.ModuleList()
        for l, w in enumerate(mult):
            blocks = nn.ModuleList()
            for _ in range(a.blocks):
                blocks.append(ResBlock(cur, width[l], e, a.groups))
                cur = width[l]
                skips.append(cur)
            sample = None
            if l + 1 < len(mult):
                sample = nn.Conv2d(cur, cur, 3, stride=2, padding=1)
                skips.append(cur)
            self.down.append(nn.ModuleList([blocks, sample]) if sample else nn.ModuleList([blocks]))
        self.mid = nn.ModuleList([ResBlock(cur, cur, e, a.groups), ResBlock(cur, cur, e, a.groups)])
        self.up = nn.ModuleList()
        for l in reversed(range(len(mult))):
            blocks = nn.ModuleList()
            for _ in range(a.blocks + 1):
                blocks.append(ResBlock(cur + skips.pop(), width[l], e, a.groups))
                cur = width[l]
            sample = nn.Conv2d(cur, cur, 3, padding=1) if l > 0 else None
            self.up.append(nn.ModuleList([blocks, sample]) if sample else nn.ModuleList([blocks]))
        self.norm_out = nn.GroupNorm(a.groups, cur)
        self.conv_out = nn.Conv2d(cur, c_img, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x, emb):
        emb = F.silu(self.emb2(F.silu(self.emb1(emb))))
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for block in level[0]:
                h = block(h, emb)
                skips.append(h)
            if len(level) > 1:
                h = level[1](h)
                skips.append(h)
        h = self.mid[1](self.mid[0](h, emb), emb)
        for level in self.up:
            for block in level[0]:
                h = block(torch.cat([h, skips.pop()], 1), emb)
            if len(level) > 1:
                h = level[1](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class Diffusers(nn.Module):
    """A diffusers UNet2DModel as an EDM denoiser's network: `forward(x, σ)`
    takes the EDM input and gives D's raw output, as `VpTable` does."""

    def __init__(self, a):
        super().__init__()
        from diffusers import DDPMScheduler, UNet2DModel

        unet_dir, scheduler_dir = Diffusers.folders(a.model)
        self.unet = UNet2DModel.from_pretrained(unet_dir)
        scheduler = DDPMScheduler.from_pretrained(scheduler_dir)
        ac = scheduler.alphas_cumprod.double()
        self.register_buffer("table", ((1 - ac) / ac).sqrt().float(), persistent=False)
        self.prediction = scheduler.config.prediction_type

    @staticmethod
    def folders(model):
        """(the UNet's folder, the scheduler's) of a pipeline or unet/ folder."""
        unet = os.path.join(model, "unet")
        unet = unet if os.path.isdir(unet) else model
        scheduler = os.path.join(os.path.dirname(unet.rstrip("/")), "scheduler")
        return unet, scheduler

    def preconditioned(self, x, sigma):
        s = column(sigma, x)
        c_in = 1 / (1 + s**2).sqrt()
        t = (self.table[None, :] - sigma[:, None]).abs().argmin(1).float()
        out = self.unet(c_in * x, t).sample
        if self.prediction == "epsilon":
            return x - s * out
        if self.prediction == "v_prediction":
            return c_in**2 * x - s * c_in * out
        return out


SIGMA_DATA = 0.5


def column(v, like):
    """(B,) → (B, 1, …) of `like`'s rank."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def denoise(net, x, sigma):
    """EDM preconditioning, σ per sample, broadcast over a sample."""
    if isinstance(net, Diffusers):
        return net.preconditioned(x, sigma)
    s = column(sigma, x)
    c_skip = SIGMA_DATA**2 / (s**2 + SIGMA_DATA**2)
    c_out = s * SIGMA_DATA / (s**2 + SIGMA_DATA**2).sqrt()
    c_in = 1 / (s**2 + SIGMA_DATA**2).sqrt()
    c_noise = sigma.log() / 4
    half = net.emb_dim // 2
    freqs = 32 ** (torch.arange(half, device=x.device) / max(half - 1, 1))
    angle = c_noise[:, None] * freqs[None]
    emb = torch.cat([angle.sin(), angle.cos()], 1)
    return c_skip * x + c_out * net(c_in * x, emb)


def dsm_loss(net, x0):
    sigma = (torch.randn(x0.shape[0], device=x0.device) * 1.6 - 2.0).exp()
    s = column(sigma, x0)
    weight = (s**2 + SIGMA_DATA**2) / (s * SIGMA_DATA) ** 2
    d = denoise(net, x0 + s * torch.randn_like(x0), sigma)
    return (weight * (d - x0) ** 2).mean()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rate(step, seconds, device):
    for _ in range(3):
        step()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start, cpu, n = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    sync()
    return n / (time.perf_counter() - start), n / max(time.process_time() - cpu, 1e-9)


def main():
    a = parse()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = a.device
    shape = [int(v) for v in a.image.split(",")]

    Net = {"mlp": ResMLP, "unet": UNet, "diffusers": Diffusers}[a.net]
    teacher = Net(a).to(dev)
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-3)
    data = torch.rand(a.teacher_batch, *shape, device=dev) * 2 - 1

    def teacher_step():
        opt.zero_grad(set_to_none=True)
        dsm_loss(teacher, data).backward()
        opt.step()

    teacher_rate, teacher_cpu_rate = rate(teacher_step, a.seconds, dev)

    generator, fake, average = Net(a).to(dev), Net(a).to(dev), Net(a).to(dev)
    generator.load_state_dict(teacher.state_dict())
    fake.load_state_dict(teacher.state_dict())
    average.load_state_dict(teacher.state_dict())
    for p in list(teacher.parameters()) + list(average.parameters()):
        p.requires_grad_(False)
    g_params, a_params = list(generator.parameters()), list(average.parameters())
    g_opt = torch.optim.Adam(generator.parameters(), lr=5e-5)
    f_opt = torch.optim.Adam(fake.parameters(), lr=3e-4)
    sigma_g = a.sigma_g if a.sigma_g is not None else (0.5 if a.net == "mlp" else 2.5)
    b = a.distill_batch

    def generate():
        z = torch.randn(b, *shape, device=dev)
        return denoise(generator, sigma_g * z, torch.full((b,), sigma_g, device=dev))

    def distill_iteration():
        x0 = generate()
        sigma = (torch.rand(b, device=dev) * 4 - 2).exp()
        with torch.no_grad():
            xt = x0.detach() + column(sigma, x0) * torch.randn_like(x0)
            d_real = denoise(teacher, xt, sigma)
            d_fake = denoise(fake, xt, sigma)
            gaps.append((d_fake - d_real).flatten(1).norm(dim=1).mean())
            scale = (x0.detach() - d_real).abs().flatten(1).mean(1).clamp_min(1e-6)
            goal = x0.detach() - (d_fake - d_real) / column(scale, x0)
        g_opt.zero_grad(set_to_none=True)
        (0.5 * ((x0 - goal) ** 2).mean()).backward()
        g_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(a_params, g_params, 1 - a.ema)
        for _ in range(a.fake_steps):
            with torch.no_grad():
                x = generate()
            f_opt.zero_grad(set_to_none=True)
            dsm_loss(fake, x).backward()
            f_opt.step()

    gaps = []  # read as numbers once at the end, as a log interval would
    distill_rate, distill_cpu_rate = rate(distill_iteration, a.seconds, dev)
    float(torch.stack(gaps).mean())
    print(
        json.dumps(
            {
                "framework": f"torch {torch.__version__}",
                "device": dev,
                "threads": a.threads,
                "teacher_steps": teacher_rate,
                "distill_iterations": distill_rate,
                # per second of the process's CPU time (all threads): on a
                # shared machine this moves far less than the wall-time rates
                "teacher_steps_per_cpu_s": teacher_cpu_rate,
                "distill_iterations_per_cpu_s": distill_cpu_rate,
                "params": sum(p.numel() for p in teacher.parameters()),
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


if __name__ == "__main__":
    main()
