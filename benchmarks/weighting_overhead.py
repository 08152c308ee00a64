"""Step-time overhead of per-image loss weighting against the unweighted step.

Runs training steps (forward, backward, optimiser) of the same detector on the
same batches, alternating unweighted and weighted steps in one process so that
both see the same machine load, and prints the median step times and the
overhead in percent. Real images from ``data/demo`` when present, else random.

    python benchmarks/weighting_overhead.py --detector fcos_efficientnet_lite0 --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from training.detectors import build_detector
from training.losses import weight_image_losses

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


def _batches(n: int, batch_size: int, seed: int) -> list[tuple[list, list]]:
    gen = torch.Generator().manual_seed(seed)
    labels = {}
    if (DEMO / "labels.json").exists():
        labels = json.loads((DEMO / "labels.json").read_text())["labels"]
    names = sorted(labels)
    classes = {"person": 1, "car": 2, "truck": 3}
    batches = []
    for b in range(n):
        images, targets = [], []
        for i in range(batch_size):
            if names:
                name = names[(b * batch_size + i) % len(names)]
                with Image.open(DEMO / "data" / f"{name}.jpg") as img:
                    image = F.to_dtype(F.pil_to_tensor(img.convert("RGB")), scale=True)
                h, w = image.shape[-2:]
                dets = labels[name] or []
                boxes = torch.tensor([d["bounding_box"] for d in dets]).reshape(-1, 4)
                boxes = torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
                boxes = boxes * torch.tensor([w, h, w, h])
                cls = torch.tensor([classes[d["label"]] for d in dets], dtype=torch.int64)
            else:
                image = torch.rand(3, 288, 384, generator=gen)
                boxes = torch.tensor([[40.0, 40.0, 120.0, 200.0]])
                cls = torch.tensor([1])
            weight = torch.rand((), generator=gen) * 0.5 + 0.5
            images.append(image)
            targets.append({"boxes": boxes, "labels": cls, "weight": weight})
        batches.append((images, targets))
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="fcos_efficientnet_lite0")
    parser.add_argument("--steps", type=int, default=20, help="steps of each kind")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_detector(args.detector, 4, image_size=args.image_size).to(args.device)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batches = _batches(args.steps + args.warmup, args.batch_size, 0)
    head_cls = type(model.head)
    weighted_cls = type(weight_image_losses(model).head)
    loss_time = {"last": 0.0}
    compute_loss = model.compute_loss

    def timed_compute_loss(*a, **k):  # the loss's own forward time, for reference
        start = time.perf_counter()
        out = compute_loss(*a, **k)
        loss_time["last"] = time.perf_counter() - start
        return out

    model.compute_loss = timed_compute_loss

    def step(images, targets, weighted: bool) -> float:
        model.head.__class__ = weighted_cls if weighted else head_cls
        images = [i.to(args.device) for i in images]
        targets = [{k: v.to(args.device) for k, v in t.items()} for t in targets]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times: dict[bool, list[float]] = {False: [], True: []}
    loss_times: dict[bool, list[float]] = {False: [], True: []}
    for i, (images, targets) in enumerate(batches):
        order = (False, True) if i % 2 == 0 else (True, False)
        for weighted in order:
            elapsed = step(images, targets, weighted)
            if i >= args.warmup:
                times[weighted].append(elapsed)
                loss_times[weighted].append(loss_time["last"])
    base, weighted = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"detector {args.detector}, batch {args.batch_size}, image size {args.image_size}, "
        f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"unweighted step: median {base * 1000:.1f} ms over {len(times[False])} steps")
    print(f"weighted step:   median {weighted * 1000:.1f} ms over {len(times[True])} steps")
    print(f"overhead: {100 * (weighted - base) / base:+.2f} % of the step (median against median)")
    pairs = [w - u for u, w in zip(times[False], times[True], strict=True)]
    print(f"paired difference: median {statistics.median(pairs) * 1000:+.1f} ms per step")
    loss_base, loss_weighted = (statistics.median(loss_times[k]) for k in (False, True))
    print(
        f"loss forward alone: unweighted {loss_base * 1000:.2f} ms, weighted "
        f"{loss_weighted * 1000:.2f} ms: {100 * (loss_weighted - loss_base) / base:+.2f} % "
        "of the unweighted step"
    )


if __name__ == "__main__":
    main()
