#!/usr/bin/env python3
"""Makes random-weight `diffusers` UNet2DModel folders to measure with: the
shapes of teachers people have, without a download. Not needed by the
build or tests.

    python3 benches/make_diffusers_teacher.py [OUT]   # default target/diffusers-teachers

writes, in the diffusers pipeline layout (unet/, scheduler/):

  small-v/        a 3×16×16 U-Net of about 0.7 M parameters with attention
                  (two levels, attention at 8×8 and in the middle),
                  v-prediction on the cosine β schedule (squaredcos_cap_v2):
                  the teacher of docs/images.md's measuring-cost run;
  ddpm-cifar10/   google/ddpm-cifar10-32's U-Net (35.7 M parameters: channels
                  128, 256, 256, 256, two layers a block, attention at
                  16×16 and in the middle, ε-prediction, linear β), the
                  network of docs/speed.md's real-size rows.

The weights are random: these teachers make noise, which costs the same
to compute as pictures do.
"""
import os
import sys

import torch
from diffusers import DDPMScheduler, UNet2DModel

TEACHERS = {
    "small-v": dict(
        unet=dict(
            sample_size=16,
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            attention_head_dim=16,
        ),
        scheduler=dict(
            beta_schedule="squaredcos_cap_v2",
            prediction_type="v_prediction",
            num_train_timesteps=1000,
        ),
    ),
    # google/ddpm-cifar10-32's unet/config.json, but for attention_head_dim:
    # it writes null, which diffusers reads as one head over the block's
    # channels; the only attention here is at 256 channels, so 256 is the
    # same network, and says so to a reader that reads null otherwise.
    "ddpm-cifar10": dict(
        unet=dict(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(128, 256, 256, 256),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=256,
            downsample_padding=0,
            flip_sin_to_cos=False,
            freq_shift=1,
            mid_block_scale_factor=1,
            norm_eps=1e-6,
            norm_num_groups=32,
            time_embedding_type="positional",
        ),
        scheduler=dict(
            beta_schedule="linear",
            beta_start=0.0001,
            beta_end=0.02,
            prediction_type="epsilon",
            num_train_timesteps=1000,
        ),
    ),
}


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/diffusers-teachers"
    for i, (name, spec) in enumerate(TEACHERS.items()):
        torch.manual_seed(i)
        unet = UNet2DModel(**spec["unet"]).eval()
        folder = os.path.join(root, name)
        unet.save_pretrained(os.path.join(folder, "unet"), safe_serialization=True)
        DDPMScheduler(**spec["scheduler"]).save_pretrained(os.path.join(folder, "scheduler"))
        params = sum(p.numel() for p in unet.parameters())
        print(f"{folder}: {params:,} parameters")


if __name__ == "__main__":
    main()
