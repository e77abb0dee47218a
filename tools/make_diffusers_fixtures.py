#!/usr/bin/env python3
"""Makes the small `diffusers` UNet2DModel fixtures that tests/pretrained.rs
loads: random weights, saved in the diffusers pipeline layout (unet/ and
scheduler/), with the network's outputs for fixed inputs.

Run once by hand (not by CI), with PyTorch and diffusers from PyPI:

    pip install torch diffusers safetensors
    python3 tools/make_diffusers_fixtures.py tests/fixtures/diffusers

Each fixture folder holds:
  unet/config.json, unet/diffusion_pytorch_model.safetensors
  scheduler/scheduler_config.json
  expected.safetensors: `sample` (B, C, H, W), `timestep` (B,) float and
      `output`, the UNet's raw prediction for them (eval mode, float32).
"""
import json
import os
import sys

import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import save_file

FIXTURES = {
    # Plain residual blocks, ε-prediction, linear β: the DDPM family.
    "plain-eps": dict(
        unet=dict(
            sample_size=8,
            in_channels=1,
            out_channels=1,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
            attention_head_dim=4,
        ),
        scheduler=dict(beta_schedule="linear", prediction_type="epsilon", num_train_timesteps=1000),
    ),
    # Attention down and up (and in the middle), scale-shift time
    # embedding, v-prediction on a scaled-linear schedule, colour images.
    "attention-v": dict(
        unet=dict(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
            attention_head_dim=4,
            resnet_time_scale_shift="scale_shift",
            flip_sin_to_cos=False,
            freq_shift=1,
            norm_eps=1e-6,
        ),
        scheduler=dict(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            prediction_type="v_prediction",
            num_train_timesteps=1000,
        ),
    ),
    # Three levels, two layers a block, no middle block, a cosine
    # schedule predicting the sample itself.
    "deep-sample": dict(
        unet=dict(
            sample_size=16,
            in_channels=1,
            out_channels=1,
            block_out_channels=(8, 8, 16),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
            attention_head_dim=8,
            mid_block_type=None,
            downsample_padding=0,
        ),
        scheduler=dict(beta_schedule="squaredcos_cap_v2", prediction_type="sample", num_train_timesteps=500),
    ),
}


def make(root, name, spec, seed):
    torch.manual_seed(seed)
    unet = UNet2DModel(**spec["unet"]).eval()
    # The default initialisation zeroes nothing, but scale the weights up a
    # little so every path carries signal a wrong port would change.
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = os.path.join(root, name)
    unet.save_pretrained(os.path.join(folder, "unet"), safe_serialization=True)
    DDPMScheduler(**spec["scheduler"]).save_pretrained(os.path.join(folder, "scheduler"))
    c, s = spec["unet"]["in_channels"], spec["unet"]["sample_size"]
    sample = torch.randn(3, c, s, s)
    steps = spec["scheduler"]["num_train_timesteps"]
    timestep = torch.tensor([0.0, steps * 0.37, steps - 1.0])
    with torch.no_grad():
        output = unet(sample, timestep).sample
    save_file(
        {"sample": sample.contiguous(), "timestep": timestep.contiguous(), "output": output.contiguous()},
        os.path.join(folder, "expected.safetensors"),
    )
    params = sum(p.numel() for p in unet.parameters())
    print(f"{name}: {params} parameters")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/diffusers"
    for i, (name, spec) in enumerate(FIXTURES.items()):
        make(root, name, spec, seed=i)


if __name__ == "__main__":
    main()
