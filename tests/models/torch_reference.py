"""ResNet and ViT written by hand in PyTorch with torchvision's / timm's
state-dict key names: the reference for pretrained import and the PyTorch side
of benchmarks/resnet_speed.py. Requires torch."""

import math

import torch
from torch import nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = None
    if stride != 1 or inplanes != planes:
      self.downsample = nn.Sequential(
          nn.Conv2d(inplanes, planes, 1, stride, bias=False),
          nn.BatchNorm2d(planes))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = None
    if stride != 1 or inplanes != planes * 4:
      self.downsample = nn.Sequential(
          nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
          nn.BatchNorm2d(planes * 4))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
  def __init__(self, stage_sizes, bottleneck, num_classes=1000, stem="imagenet",
               width=64):
    super().__init__()
    block = Bottleneck if bottleneck else BasicBlock
    self.stem = stem
    if stem == "imagenet":
      self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    else:
      self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    inplanes = width
    for stage, blocks in enumerate(stage_sizes):
      layers = []
      for index in range(blocks):
        planes = width * 2**stage
        layers.append(block(inplanes, planes,
                            2 if stage > 0 and index == 0 else 1))
        inplanes = planes * block.expansion
      setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
    self.fc = nn.Linear(inplanes, num_classes)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    if self.stem == "imagenet":
      x = F.max_pool2d(x, 3, 2, 1)
    for i in range(1, 5):
      x = getattr(self, f"layer{i}")(x)
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Mlp(nn.Module):
  def __init__(self, width, hidden):
    super().__init__()
    self.fc1 = nn.Linear(width, hidden)
    self.fc2 = nn.Linear(hidden, width)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
  def __init__(self, width, heads):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(width, 3 * width)
    self.proj = nn.Linear(width, width)

  def forward(self, x):
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads)
    out = attn.softmax(dim=-1) @ v
    return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
  def __init__(self, width, heads, hidden):
    super().__init__()
    self.norm1 = nn.LayerNorm(width, eps=1e-6)
    self.attn = Attention(width, heads)
    self.norm2 = nn.LayerNorm(width, eps=1e-6)
    self.mlp = Mlp(width, hidden)

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
  def __init__(self, patch, width):
    super().__init__()
    self.proj = nn.Conv2d(3, width, patch, patch)

  def forward(self, x):
    return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
  def __init__(self, image_size, patch, width, depth, heads, hidden,
               num_classes=1000):
    super().__init__()
    self.patch_embed = PatchEmbed(patch, width)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
    self.pos_embed = nn.Parameter(
        torch.zeros(1, (image_size // patch)**2 + 1, width))
    self.blocks = nn.Sequential(
        *[Block(width, heads, hidden) for _ in range(depth)])
    self.norm = nn.LayerNorm(width, eps=1e-6)
    self.head = nn.Linear(width, num_classes)

  def forward(self, x):
    x = self.patch_embed(x)
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = self.norm(self.blocks(x + self.pos_embed))
    return self.head(x[:, 0])


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights *and* BatchNorm statistics, so nothing matches by luck."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, tensor in model.state_dict().items():
      if tensor.dtype.is_floating_point:
        noise = torch.randn(tensor.shape, generator=generator)
        if name.endswith("running_var"):
          tensor.copy_(0.5 + noise.abs())
        elif name.endswith(("bn1.weight", "bn2.weight", "bn3.weight")):
          tensor.copy_(1.0 + 0.1 * noise)
        else:
          fan_in = max(1, tensor[0].numel() if tensor.ndim > 1 else 1)
          tensor.copy_(noise / math.sqrt(fan_in))
  return model
