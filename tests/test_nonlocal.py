"""NL-R50's non-local block against the embedded-Gaussian formula written out directly."""

from __future__ import annotations

import torch

from vcompile.zoo import create_model
from vcompile.zoo.nonlocal_net import NonLocalBlock


def test_nonlocal_block_matches_the_formula():
    torch.manual_seed(0)
    block = NonLocalBlock(channels=8, frames=3).eval()
    torch.nn.init.normal_(block.bn.weight)
    x = torch.randn(2 * 3, 8, 4, 6)  # (B*T, C, H, W)
    with torch.no_grad():
        got = block(x)
        for b in range(2):
            clip = x[b * 3:(b + 1) * 3]  # (T, C, H, W)
            theta = block.theta(clip).permute(0, 2, 3, 1).reshape(-1, 4)  # (T*H*W, C/2)
            phi = block.pool(block.phi(clip)).permute(0, 2, 3, 1).reshape(-1, 4)
            g = block.pool(block.g(clip)).permute(0, 2, 3, 1).reshape(-1, 4)
            y = torch.softmax(theta @ phi.T, dim=-1) @ g  # no 1/sqrt(d) scaling
            y = y.reshape(3, 4, 6, 4).permute(0, 3, 1, 2)
            want = clip + block.bn(block.out(y))
            torch.testing.assert_close(got[b * 3:(b + 1) * 3], want, atol=1e-5, rtol=1e-5)


def test_nonlocal_placement_follows_the_reference():
    model = create_model("nl-r50")
    assert sorted(model.nonlocal_blocks) == ["layer2_0", "layer2_2", "layer3_0", "layer3_2", "layer3_4"]
    widths = {k: b.theta.in_channels for k, b in model.nonlocal_blocks.items()}
    assert widths == {"layer2_0": 512, "layer2_2": 512, "layer3_0": 1024, "layer3_2": 1024, "layer3_4": 1024}
    def block_params(c: int) -> int:  # theta, phi, g: C -> C/2 with bias; out: C/2 -> C with bias; BN: 2C
        return 3 * (c * c // 2 + c // 2) + (c // 2 * c + c) + 2 * c

    assert sum(p.numel() for p in model.nonlocal_blocks.parameters()) == 2 * block_params(512) + 3 * block_params(1024)
